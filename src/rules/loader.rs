//! Loading and validating rule files: every problem with its file, line and column, the
//! short rule form, and glob expansion.

use super::alerting::{AlertingRule, ShortForm};
use super::{Group, RecordingRule, Rule, RuleKind};
use crate::config::{self, RuleEntry, RuleFile};
use crate::promql;
use crate::storage::{METRIC_NAME, is_valid_label_name, is_valid_metric_name};
use crate::template::Template;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// Problems found in rule files: each line is `file: line:col: group "g", rule N, "name": message`.
#[derive(Debug, Default)]
pub struct LoadErrors(pub Vec<String>);

/// A duplicate rule (same name and labels in one file), reported as promtool does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    /// Record or alert name.
    pub name: String,
    /// The rule's labels.
    pub labels: BTreeMap<String, String>,
}

/// Loads and validates one rule file; returns its groups, or every problem found.
pub fn load_file(path: &Path) -> Result<(Vec<Group>, Vec<Duplicate>), LoadErrors> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadErrors(vec![format!("{}: cannot read: {e}", path.display())]))?;
    parse_file(&text, path)
}

/// [`load_file`] on text already read from `path`.
pub(crate) fn parse_file(
    text: &str,
    path: &Path,
) -> Result<(Vec<Group>, Vec<Duplicate>), LoadErrors> {
    let origin = path.display().to_string();
    let file: RuleFile = serde_saphyr::from_str(text)
        .map_err(|e| LoadErrors(vec![config::yaml_error(&origin, &e)]))?;
    let mut errors = Vec::new();
    let mut groups = Vec::new();
    let mut group_names = HashSet::new();
    let mut seen_rules: Vec<Duplicate> = Vec::new();
    let mut duplicates = Vec::new();
    for g in file.groups {
        let gname = g.name.value.clone();
        if gname.is_empty() {
            errors.push(format!(
                "{origin}: {}:{}: Groupname must not be empty",
                g.name.referenced.line(),
                g.name.referenced.column()
            ));
        } else if !group_names.insert(gname.clone()) {
            errors.push(format!(
                "{origin}: {}:{}: groupname: \"{gname}\" is repeated in the same file",
                g.name.referenced.line(),
                g.name.referenced.column()
            ));
        }
        for name in g.labels.keys() {
            if !is_valid_label_name(name) {
                errors.push(format!(
                    "{origin}: group \"{gname}\": invalid label name: {name}"
                ));
            }
        }
        let mut rules = Vec::new();
        for (i, entry) in g.rules.iter().enumerate() {
            let at = (entry.referenced.line(), entry.referenced.column());
            match build_rule(&entry.value, &g.labels) {
                Ok(rule) => {
                    let dup = Duplicate {
                        name: rule.name().to_string(),
                        labels: match &rule.kind {
                            RuleKind::Recording(r) => r.labels.clone(),
                            RuleKind::Alerting(a) => a.labels.clone(),
                        },
                    };
                    if seen_rules.contains(&dup) {
                        duplicates.push(dup);
                    } else {
                        seen_rules.push(dup);
                    }
                    rules.push(rule);
                }
                Err(problems) => {
                    let name = entry
                        .value
                        .record
                        .as_ref()
                        .or(entry.value.alert.as_ref())
                        .map(|n| n.value.clone())
                        .unwrap_or_default();
                    for (pos, message) in problems {
                        let (line, col) = pos.unwrap_or(at);
                        errors.push(format!(
                            "{origin}: {line}:{col}: group \"{gname}\", rule {}, \"{name}\": {message}",
                            i + 1
                        ));
                    }
                }
            }
        }
        groups.push(Group {
            name: gname,
            file: path.to_path_buf(),
            interval_ms: g.interval.map(|d| d.millis()).filter(|ms| *ms > 0),
            limit: g.limit,
            query_offset_ms: g.query_offset.map(|d| d.millis()).unwrap_or(0),
            rules,
        });
    }
    if errors.is_empty() {
        Ok((groups, duplicates))
    } else {
        Err(LoadErrors(errors))
    }
}

type Problems = Vec<(Option<(u64, u64)>, String)>;

fn build_rule(
    entry: &RuleEntry,
    group_labels: &BTreeMap<String, String>,
) -> Result<Rule, Problems> {
    let mut problems: Problems = Vec::new();
    let mut problem = |pos: Option<(u64, u64)>, m: String| problems.push((pos, m));
    match (&entry.record, &entry.alert) {
        (Some(_), Some(_)) => problem(None, "only one of 'record' and 'alert' must be set".into()),
        (None, None) => problem(None, "one of 'record' or 'alert' must be set".into()),
        _ => {}
    }
    let expr = match (&entry.expr, &entry.metric) {
        (Some(_), Some(m)) => {
            problem(
                Some((m.referenced.line(), m.referenced.column())),
                "set either 'expr' or the short form 'metric', 'condition', 'threshold', not both"
                    .into(),
            );
            None
        }
        (None, Some(metric)) => match short_form(entry) {
            Ok(text) => match promql::parse(&text) {
                Ok(expr) => Some((text, expr)),
                Err(err) => {
                    problem(
                        Some((metric.referenced.line(), metric.referenced.column())),
                        format!("could not parse expression {text:?}: {err}"),
                    );
                    None
                }
            },
            Err((pos, message)) => {
                problem(pos, message);
                None
            }
        },
        (None, None) => {
            problem(None, "field 'expr' must be set in rule".into());
            None
        }
        (Some(e), None) if e.value.0.trim().is_empty() => {
            problem(None, "field 'expr' must be set in rule".into());
            None
        }
        (Some(e), None) => match promql::parse(&e.value.0) {
            Ok(expr) => Some((e.value.0.clone(), expr)),
            Err(err) => {
                problem(
                    Some((e.referenced.line(), e.referenced.column())),
                    format!("could not parse expression: {err}"),
                );
                None
            }
        },
    };
    if entry.metric.is_none() && (entry.condition.is_some() || entry.threshold.is_some()) {
        problem(None, "'condition' and 'threshold' need 'metric'".into());
    }
    if entry.record.is_some() && entry.metric.is_some() {
        problem(
            None,
            "the short form ('metric', 'condition', 'threshold') is for alerts".into(),
        );
    }
    let mut labels = group_labels.clone();
    labels.extend(entry.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
    for name in entry.labels.keys() {
        if !is_valid_label_name(name) || name == METRIC_NAME {
            problem(None, format!("invalid label name: {name}"));
        }
    }
    if let Some(record) = &entry.record {
        if !is_valid_metric_name(&record.value) {
            problem(
                Some((record.referenced.line(), record.referenced.column())),
                format!("invalid recording rule name: {}", record.value),
            );
        }
        if !entry.annotations.is_empty() {
            problem(None, "invalid field 'annotations' in recording rule".into());
        }
        if entry.for_.is_some() {
            problem(None, "invalid field 'for' in recording rule".into());
        }
        if entry.keep_firing_for.is_some() {
            problem(
                None,
                "invalid field 'keep_firing_for' in recording rule".into(),
            );
        }
    }
    if entry.alert.is_some() {
        for name in entry.annotations.keys() {
            if !is_valid_label_name(name) {
                problem(None, format!("invalid annotation name: {name}"));
            }
        }
        for (kind, map) in [("label", &entry.labels), ("annotation", &entry.annotations)] {
            for (name, text) in map {
                if let Err(e) = Template::parse(text) {
                    problem(None, format!("{kind} {name:?}: {e}"));
                }
            }
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let Some((expr_text, expr)) = expr else {
        return Err(vec![(None, "field 'expr' must be set in rule".into())]);
    };
    let kind = match (&entry.record, &entry.alert) {
        (Some(record), _) => RuleKind::Recording(RecordingRule {
            name: record.value.clone(),
            expr_text,
            expr,
            labels,
        }),
        (_, Some(alert)) => {
            let mut rule = AlertingRule::new(
                alert.value.clone(),
                expr_text,
                expr,
                entry.for_.map(|d| d.millis()).unwrap_or(0),
                entry.keep_firing_for.map(|d| d.millis()).unwrap_or(0),
                labels,
                entry.annotations.clone(),
            );
            if let (Some(metric), Some(condition), Some(threshold)) =
                (&entry.metric, &entry.condition, entry.threshold)
            {
                rule.short_form = Some(ShortForm {
                    metric: metric.value.trim().to_string(),
                    condition: condition.value.clone(),
                    threshold,
                });
            }
            RuleKind::Alerting(rule)
        }
        (None, None) => unreachable!("validated above"),
    };
    Ok(Rule {
        kind,
        last_error: None,
        last_evaluation: None,
        last_duration: std::time::Duration::ZERO,
        previous_series: HashSet::new(),
    })
}

/// Loads several rule files; every problem of every file is collected.
pub fn load_files(files: &[PathBuf]) -> Result<Vec<Group>, Vec<String>> {
    let mut groups = Vec::new();
    let mut errors = Vec::new();
    for file in files {
        match load_file(file) {
            Ok((g, _)) => groups.extend(g),
            Err(LoadErrors(e)) => errors.extend(e),
        }
    }
    if errors.is_empty() {
        Ok(groups)
    } else {
        Err(errors)
    }
}

/// The comparisons of the short rule form and their PromQL operators.
const CONDITIONS: [(&str, &str); 6] = [
    ("greater_than", ">"),
    ("less_than", "<"),
    ("equals", "=="),
    ("not_equals", "!="),
    ("greater_than_or_equal", ">="),
    ("less_than_or_equal", "<="),
];

/// Compiles `metric` / `condition` / `threshold` to `metric > threshold`; a
/// metric that is an expression is parenthesised.
fn short_form(entry: &RuleEntry) -> Result<String, (Option<(u64, u64)>, String)> {
    let Some(metric) = &entry.metric else {
        return Err((None, "field 'metric' must be set".into()));
    };
    let at = |s: &serde_saphyr::Spanned<String>| Some((s.referenced.line(), s.referenced.column()));
    let Some(condition) = &entry.condition else {
        return Err((
            at(metric),
            "the short form needs 'condition' next to 'metric'".into(),
        ));
    };
    let Some(op) = CONDITIONS
        .iter()
        .find(|(name, _)| *name == condition.value)
        .map(|(_, op)| op)
    else {
        let names: Vec<&str> = CONDITIONS.iter().map(|(n, _)| *n).collect();
        return Err((
            at(condition),
            format!(
                "unknown condition {:?}: use one of {}",
                condition.value,
                names.join(", ")
            ),
        ));
    };
    let Some(threshold) = entry.threshold else {
        return Err((
            at(metric),
            "the short form needs 'threshold' next to 'metric'".into(),
        ));
    };
    if !threshold.is_finite() {
        return Err((at(metric), "'threshold' must be a finite number".into()));
    }
    let m = metric.value.trim();
    let simple =
        promql::parse(m).is_ok_and(|e| matches!(e, promql_parser::parser::Expr::VectorSelector(_)));
    let lhs = if simple {
        m.to_string()
    } else {
        format!("({m})")
    };
    Ok(format!("{lhs} {op} {}", crate::gofmt::plain(threshold)))
}

/// Expands glob patterns (`rules/*.yml`) in name order.
pub fn expand_globs(patterns: &[String]) -> Result<Vec<PathBuf>, String> {
    let mut out = Vec::new();
    for pattern in patterns {
        if !pattern.contains(['*', '?', '[']) {
            out.push(PathBuf::from(pattern));
            continue;
        }
        let path = Path::new(pattern);
        let dir = path
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let file_pattern = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let re = glob_regex(&file_pattern)?;
        let mut matched: Vec<PathBuf> = std::fs::read_dir(dir)
            .map_err(|e| format!("{pattern}: cannot list {}: {e}", dir.display()))?
            .filter_map(|e| e.ok())
            .filter(|e| re.is_match(&e.file_name().to_string_lossy()))
            .map(|e| e.path())
            .collect();
        matched.sort();
        out.extend(matched);
    }
    Ok(out)
}

fn glob_regex(pattern: &str) -> Result<regex::Regex, String> {
    let mut re = String::from("^");
    for c in pattern.chars() {
        match c {
            '*' => re.push_str("[^/]*"),
            '?' => re.push_str("[^/]"),
            '[' | ']' => re.push(c),
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    re.push('$');
    regex::Regex::new(&re).map_err(|e| format!("bad glob {pattern:?}: {e}"))
}
