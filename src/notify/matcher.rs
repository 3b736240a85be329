//! Alertmanager's label matchers, shared by routes, inhibition rules and silences.

use crate::storage::Labels;
use promql_parser::label::{MatchOp, Matcher};

/// One Alertmanager matcher (`name="value"`, `!=`, `=~`, `!~`; the value may be unquoted, as
/// Alertmanager allows). Parsed as a PromQL selector beside a placeholder, since PromQL
/// refuses a selector of only negative matchers (`{env!="prod"}`) that Alertmanager accepts.
pub(super) fn parse_matcher(text: &str) -> Result<Matcher, String> {
    // The first operator in the text (the longer one where two start at the same place).
    let operator = ["=~", "!~", "!=", "="]
        .iter()
        .filter_map(|op| text.find(op).map(|at| (at, *op)))
        .min_by_key(|(at, op)| (*at, std::cmp::Reverse(op.len())));
    let quoted = match operator {
        Some((at, op)) if !text[at + op.len()..].trim().starts_with('"') => {
            // PromQL's string escapes: only the backslash and the quote need one here.
            let value = text[at + op.len()..]
                .trim()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            format!("{}{op}\"{value}\"", text[..at].trim())
        }
        _ => text.to_string(),
    };
    let expr = crate::promql::parse(&format!("{{__placeholder__=\"x\", {quoted}}}"))
        .map_err(|e| format!("matcher {text:?}: {e}"))?;
    match expr {
        promql_parser::parser::Expr::VectorSelector(vs) if vs.matchers.matchers.len() == 2 => {
            Ok(vs.matchers.matchers[1].clone())
        }
        _ => Err(format!(
            "matcher {text:?}: write one matcher like severity=\"critical\""
        )),
    }
}

/// One entry of a `matchers:` list, which may hold several comma-separated matchers, in
/// braces or not (`{a="1", b=~"2|3"}`), as Alertmanager's `ParseMatchers` reads it.
pub(super) fn parse_matchers(text: &str) -> Result<Vec<Matcher>, String> {
    let inner = text.trim();
    let inner = inner
        .strip_prefix('{')
        .and_then(|s| s.strip_suffix('}'))
        .unwrap_or(inner);
    let mut matchers = Vec::new();
    let mut start = 0;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            ',' if !quoted => {
                matchers.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    matchers.push(&inner[start..]);
    matchers
        .into_iter()
        .filter(|m| !m.trim().is_empty())
        .map(parse_matcher)
        .collect()
}

/// Alertmanager's older `match` (equality) and `match_re` (anchored regex) maps as matchers.
pub(super) fn from_maps(
    equal: &std::collections::BTreeMap<String, String>,
    regex: &std::collections::BTreeMap<String, String>,
) -> Result<Vec<Matcher>, String> {
    let mut matchers: Vec<Matcher> = equal
        .iter()
        .map(|(name, value)| Matcher::new(MatchOp::Equal, name, value))
        .collect();
    for (name, value) in regex {
        let re = regex::Regex::new(&format!("^(?:{value})$"))
            .map_err(|e| format!("match_re {name}: {value:?} is not a regular expression: {e}"))?;
        matchers.push(Matcher::new(MatchOp::Re(re), name, value));
    }
    Ok(matchers)
}

/// Whether every matcher matches `labels`.
pub(super) fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.is_match(labels.get(&m.name)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    pub(super) fn matchers_are_alertmanagers() {
        for (text, name, value, matches, misses) in [
            ("env!=\"prod\"", "env", "prod", "dev", "prod"),
            (
                "severity=critical",
                "severity",
                "critical",
                "critical",
                "warning",
            ),
            (
                "service=~\"db|cache\"",
                "service",
                "db|cache",
                "cache",
                "web",
            ),
            ("team !~ ml.*", "team", "ml.*", "web", "ml-infra"),
            ("path=\"a=~b\"", "path", "a=~b", "a=~b", "a"),
            ("dir=C:\\tmp", "dir", "C:\\tmp", "C:\\tmp", "C:"),
        ] {
            let m = parse_matcher(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((m.name.as_str(), m.value.as_str()), (name, value), "{text}");
            assert!(m.is_match(matches) && !m.is_match(misses), "{text}");
        }
        assert!(parse_matcher("severity").is_err());
        assert!(parse_matcher("a=\"1\", b=\"2\"").is_err());
    }
}
