//! Relabelling exactly as Prometheus' `model/relabel/relabel.go` does it: target labels before a
//! scrape (`relabel_configs`) and each scraped series before it is stored
//! (`metric_relabel_configs`). Pure functions over a sorted label map.

use std::collections::BTreeMap;

use crate::config::{RelabelAction, RelabelConfig};
use crate::storage::is_valid_label_name;

/// A label set being relabelled; an empty value never stays in it (Prometheus' builder drops
/// labels set to "").
pub type LabelMap = BTreeMap<String, String>;

/// Applies `rules` in order; false when one of them drops the set.
pub fn process(labels: &mut LabelMap, rules: &[RelabelConfig]) -> bool {
    rules.iter().all(|rule| apply(rule, labels))
}

fn set(labels: &mut LabelMap, name: &str, value: String) {
    if value.is_empty() {
        labels.remove(name);
    } else {
        labels.insert(name.to_string(), value);
    }
}

fn get<'a>(labels: &'a LabelMap, name: &str) -> &'a str {
    labels.get(name).map_or("", String::as_str)
}

fn apply(rule: &RelabelConfig, labels: &mut LabelMap) -> bool {
    let value = rule
        .source_labels
        .iter()
        .map(|name| get(labels, name))
        .collect::<Vec<_>>()
        .join(&rule.separator);
    let regex = rule.regex.regex();
    match rule.action {
        RelabelAction::Drop => return !regex.is_match(&value),
        RelabelAction::Keep => return regex.is_match(&value),
        RelabelAction::DropEqual => return get(labels, &rule.target_label) != value,
        RelabelAction::KeepEqual => return get(labels, &rule.target_label) == value,
        RelabelAction::Replace => {
            let Some(captures) = regex.captures(&value) else {
                return true;
            };
            let target = expand(regex, &captures, &rule.target_label);
            if !is_valid_label_name(&target) {
                return true;
            }
            let replaced = expand(regex, &captures, &rule.replacement);
            set(labels, &target, replaced);
        }
        RelabelAction::Lowercase => set(labels, &rule.target_label, value.to_lowercase()),
        RelabelAction::Uppercase => set(labels, &rule.target_label, value.to_uppercase()),
        RelabelAction::HashMod => {
            let hash = md5(value.as_bytes());
            let tail = u64::from_be_bytes(hash[8..].try_into().expect("16-byte digest"));
            set(
                labels,
                &rule.target_label,
                (tail % rule.modulus).to_string(),
            );
        }
        RelabelAction::LabelMap => {
            // Prometheus ranges over a snapshot, so labels written here are not matched again.
            let snapshot: Vec<(String, String)> =
                labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
            for (name, value) in snapshot {
                if let Some(captures) = regex.captures(&name) {
                    let mapped = expand(regex, &captures, &rule.replacement);
                    set(labels, &mapped, value);
                }
            }
        }
        RelabelAction::LabelDrop => labels.retain(|name, _| !regex.is_match(name)),
        RelabelAction::LabelKeep => labels.retain(|name, _| regex.is_match(name)),
    }
    true
}

/// Go's `Regexp.ExpandString`: `$1`, `${1}`, `$name`, `${name}` and `$$`. A reference to a group
/// that does not exist or did not take part is empty; a malformed `$` stays as it is. Names are
/// the longest run of letters, digits and `_` (so `$1x` is the group named `1x`), and a number
/// with a leading zero is a name.
pub fn expand(regex: &regex::Regex, captures: &regex::Captures<'_>, template: &str) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        rest = &rest[at + 1..];
        if let Some(after) = rest.strip_prefix('$') {
            out.push('$');
            rest = after;
            continue;
        }
        let Some((name, after)) = extract(rest) else {
            out.push('$');
            continue;
        };
        rest = after;
        let group = match name.parse::<usize>() {
            Ok(n) if !(name.starts_with('0') && name.len() > 1) => captures.get(n),
            _ => regex
                .capture_names()
                .position(|n| n == Some(name))
                .and_then(|i| captures.get(i)),
        };
        if let Some(m) = group {
            out.push_str(m.as_str());
        }
    }
    out.push_str(rest);
    out
}

/// The group name after a `$` (braced or not) and what follows it.
fn extract(text: &str) -> Option<(&str, &str)> {
    let (braced, body) = match text.strip_prefix('{') {
        Some(body) => (true, body),
        None => (false, text),
    };
    let end = body
        .char_indices()
        .find(|(_, c)| !(c.is_alphanumeric() || *c == '_'))
        .map_or(body.len(), |(i, _)| i);
    if end == 0 {
        return None;
    }
    let name = &body[..end];
    if braced {
        let after = body[end..].strip_prefix('}')?;
        return Some((name, after));
    }
    Some((name, &body[end..]))
}

/// MD5 (RFC 1321), which `hashmod` needs to pick the same shard Prometheus picks.
pub fn md5(input: &[u8]) -> [u8; 16] {
    const S: [u32; 64] = [
        7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 5, 9, 14, 20, 5, 9, 14, 20, 5,
        9, 14, 20, 5, 9, 14, 20, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 6, 10,
        15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
    ];
    let k: [u32; 64] =
        std::array::from_fn(|i| ((i as f64 + 1.0).sin().abs() * 4_294_967_296.0) as u32);
    let mut state: [u32; 4] = [0x6745_2301, 0xefcd_ab89, 0x98ba_dcfe, 0x1032_5476];
    let mut message = input.to_vec();
    message.push(0x80);
    while message.len() % 64 != 56 {
        message.push(0);
    }
    message.extend_from_slice(&((input.len() as u64).wrapping_mul(8)).to_le_bytes());
    for block in message.chunks_exact(64) {
        let words: [u32; 16] = std::array::from_fn(|i| {
            u32::from_le_bytes(block[i * 4..i * 4 + 4].try_into().expect("4 bytes"))
        });
        let [mut a, mut b, mut c, mut d] = state;
        for i in 0..64 {
            let (f, g) = match i / 16 {
                0 => ((b & c) | (!b & d), i),
                1 => ((d & b) | (!d & c), (5 * i + 1) % 16),
                2 => (b ^ c ^ d, (3 * i + 5) % 16),
                _ => (c ^ (b | !d), (7 * i) % 16),
            };
            let rotated = a
                .wrapping_add(f)
                .wrapping_add(k[i])
                .wrapping_add(words[g])
                .rotate_left(S[i]);
            (a, d, c) = (d, c, b);
            b = b.wrapping_add(rotated);
        }
        for (s, v) in state.iter_mut().zip([a, b, c, d]) {
            *s = s.wrapping_add(v);
        }
    }
    let mut out = [0u8; 16];
    for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
        chunk.copy_from_slice(&word.to_le_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses relabel rules as they would appear in a config file.
    fn rules(yaml: &str) -> Vec<RelabelConfig> {
        serde_saphyr::from_str(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"))
    }

    fn labels(pairs: &[(&str, &str)]) -> LabelMap {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn run(input: &[(&str, &str)], yaml: &str) -> Option<LabelMap> {
        let mut set = labels(input);
        process(&mut set, &rules(yaml)).then_some(set)
    }

    #[test]
    fn md5_matches_rfc_1321() {
        let hex = |d: [u8; 16]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
        assert_eq!(hex(md5(b"")), "d41d8cd98f00b204e9800998ecf8427e");
        assert_eq!(hex(md5(b"abc")), "900150983cd24fb0d6963f7d28e17f72");
        assert_eq!(
            hex(md5(
                b"12345678901234567890123456789012345678901234567890123456789012345678901234567890"
            )),
            "57edf4a22be3c955ac49da2e2107b67a"
        );
    }

    // The cases of Prometheus' model/relabel/relabel_test.go TestRelabel, in YAML.
    #[test]
    fn prometheus_relabel_test_cases() {
        let abc = [("a", "foo"), ("b", "bar"), ("c", "baz")];
        assert_eq!(
            run(
                &abc,
                "- {source_labels: [a], regex: 'f(.*)', target_label: d, replacement: 'ch${1}-ch${1}'}"
            ),
            Some(labels(&[
                ("a", "foo"),
                ("b", "bar"),
                ("c", "baz"),
                ("d", "choo-choo")
            ]))
        );
        assert_eq!(
            run(
                &abc,
                "- {source_labels: [a, b], regex: 'f(.*);(.*)r', target_label: a, replacement: 'b${1}${2}m'}
- {source_labels: [c, a], regex: '(b).*b(.*)ba(.*)', target_label: d, replacement: '$1$2$2$3'}"
            ),
            Some(labels(&[
                ("a", "boobam"),
                ("b", "bar"),
                ("c", "baz"),
                ("d", "boooom")
            ]))
        );
        assert_eq!(
            run(
                &[("a", "foo")],
                "- {source_labels: [a], regex: '.*o.*', action: drop}
- {source_labels: [a], regex: 'f(.*)', target_label: d, replacement: 'ch$1-ch$1'}"
            ),
            None
        );
        assert_eq!(
            run(
                &[("a", "foo"), ("b", "bar")],
                "- {source_labels: [a], regex: '.*o.*', action: drop}"
            ),
            None
        );
        assert_eq!(
            run(
                &[("a", "abc")],
                "- {source_labels: [a], regex: '.*(b).*', target_label: d}"
            ),
            Some(labels(&[("a", "abc"), ("d", "b")]))
        );
        for (regex, action, kept) in [
            ("no-match", "drop", true),
            ("f|o", "drop", true),
            ("no-match", "keep", false),
            ("f.*", "keep", true),
        ] {
            let yaml = format!("- {{source_labels: [a], regex: '{regex}', action: {action}}}");
            assert_eq!(
                run(&[("a", "foo")], &yaml),
                kept.then(|| labels(&[("a", "foo")])),
                "{yaml}"
            );
        }
        // No replacement when there is no match.
        assert_eq!(
            run(
                &[("a", "boo")],
                "- {source_labels: [a], regex: f, target_label: b, replacement: bar}"
            ),
            Some(labels(&[("a", "boo")]))
        );
        assert_eq!(
            run(
                &abc,
                "- {source_labels: [c], target_label: d, action: hashmod, modulus: 1000}"
            ),
            Some(labels(&[
                ("a", "foo"),
                ("b", "bar"),
                ("c", "baz"),
                ("d", "976")
            ]))
        );
        assert_eq!(
            run(
                &[("a", "foo\nbar")],
                "- {source_labels: [a], target_label: b, action: hashmod, modulus: 1000}"
            ),
            Some(labels(&[("a", "foo\nbar"), ("b", "734")]))
        );
        assert_eq!(
            run(
                &[("a", "foo"), ("b1", "bar"), ("b2", "baz")],
                "- {regex: '(b.*)', replacement: 'bar_${1}', action: labelmap}"
            ),
            Some(labels(&[
                ("a", "foo"),
                ("b1", "bar"),
                ("b2", "baz"),
                ("bar_b1", "bar"),
                ("bar_b2", "baz")
            ]))
        );
        let meta = [
            ("a", "foo"),
            ("__meta_my_bar", "aaa"),
            ("__meta_my_baz", "bbb"),
            ("__meta_other", "ccc"),
        ];
        let mut mapped = labels(&meta);
        mapped.extend(labels(&[("my_bar", "aaa"), ("my_baz", "bbb")]));
        assert_eq!(
            run(
                &meta,
                "- {regex: '__meta_(my.*)', replacement: '${1}', action: labelmap}"
            ),
            Some(mapped)
        );
        let named = [("a", "some-name-value")];
        assert_eq!(
            run(
                &named,
                "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${2}', target_label: '${1}'}"
            ),
            Some(labels(&[("a", "some-name-value"), ("name", "value")]))
        );
        // An empty replacement writes nothing; an empty or invalid target name is skipped.
        assert_eq!(
            run(
                &named,
                "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${3}', target_label: '${1}'}"
            ),
            Some(labels(&named))
        );
        assert_eq!(
            run(
                &[("a", "some-name-0")],
                "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}
- {source_labels: [a], regex: 'some-([^-]+)(-[^,]+)', replacement: '${1}', target_label: '${3}'}"
            ),
            Some(labels(&[("a", "some-name-0")]))
        );
        assert_eq!(
            run(
                &[("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar")],
                "- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)path:(/[^,]+).*', replacement: '${1}', target_label: __metrics_path__}
- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)job:([^,]+).*', replacement: '${1}', target_label: job}
- {source_labels: [__meta_sd_tags], regex: '(?:.+,|^)label:([^=]+)=([^,]+).*', replacement: '${2}', target_label: '${1}'}"
            ),
            Some(labels(&[
                ("__meta_sd_tags", "path:/secret,job:some-job,label:foo=bar"),
                ("__metrics_path__", "/secret"),
                ("job", "some-job"),
                ("foo", "bar")
            ]))
        );
        assert_eq!(
            run(
                &[
                    ("__meta_kubernetes_pod_container_port_name", "foo"),
                    ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091")
                ],
                "- {regex: '^__meta_kubernetes_pod_container_port_name$', action: labeldrop}
- {source_labels: [__meta_kubernetes_pod_annotation_XXX_metrics_port], regex: '(.+)', replacement: metrics, target_label: __meta_kubernetes_pod_container_port_name}
- {source_labels: [__meta_kubernetes_pod_container_port_name], regex: '^metrics$', action: keep}"
            ),
            Some(labels(&[
                ("__meta_kubernetes_pod_annotation_XXX_metrics_port", "9091"),
                ("__meta_kubernetes_pod_container_port_name", "metrics")
            ]))
        );
        let b = [("a", "foo"), ("b1", "bar"), ("b2", "baz")];
        assert_eq!(
            run(&b, "- {regex: '(b.*)', action: labelkeep}"),
            Some(labels(&[("b1", "bar"), ("b2", "baz")]))
        );
        assert_eq!(
            run(&b, "- {regex: '(b.*)', action: labeldrop}"),
            Some(labels(&[("a", "foo")]))
        );
        assert_eq!(
            run(
                &[("foo", "bAr123Foo")],
                "- {source_labels: [foo], action: uppercase, target_label: foo_uppercase}
- {source_labels: [foo], action: lowercase, target_label: foo_lowercase}"
            ),
            Some(labels(&[
                ("foo", "bAr123Foo"),
                ("foo_lowercase", "bar123foo"),
                ("foo_uppercase", "BAR123FOO")
            ]))
        );
        let ports = [
            ("__tmp_port", "1234"),
            ("__port1", "1234"),
            ("__port2", "5678"),
        ];
        for (action, target, kept) in [
            ("keepequal", "__port1", true),
            ("dropequal", "__port1", false),
            ("dropequal", "__port2", true),
            ("keepequal", "__port2", false),
        ] {
            let yaml = format!(
                "- {{source_labels: [__tmp_port], action: {action}, target_label: {target}}}"
            );
            assert_eq!(run(&ports, &yaml), kept.then(|| labels(&ports)), "{yaml}");
        }
    }

    #[test]
    fn expansion_follows_go() {
        let regex = regex::Regex::new("^(?:(?P<host>[a-z]+):(\\d+))$").unwrap();
        let captures = regex.captures("web:80").unwrap();
        for (template, expected) in [
            ("$host-$2", "web-80"),
            ("${host}x", "webx"),
            // `$hostx` names the group `hostx`, which does not exist.
            ("$hostx", ""),
            ("$$1", "$1"),
            ("$", "$"),
            ("${1", "${1"),
            ("$01", ""),
            ("$9", ""),
            ("a$-b", "a$-b"),
        ] {
            assert_eq!(expand(&regex, &captures, template), expected, "{template}");
        }
    }

    // Prometheus' TestRelabelValidate and TestTargetLabelValidity.
    #[test]
    fn validation_gives_prometheus_messages() {
        let error = |yaml: &str| {
            serde_saphyr::from_str::<Vec<RelabelConfig>>(yaml)
                .unwrap_err()
                .to_string()
        };
        for (yaml, expected) in [
            ("- {action: ''}", "relabel action cannot be empty"),
            ("- {action: replace}", "requires 'target_label' value"),
            ("- {action: lowercase}", "requires 'target_label' value"),
            (
                "- {action: lowercase, target_label: '${3}'}",
                r#""${3}" is invalid 'target_label'"#,
            ),
            (
                "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '0${3}'}",
                r#""0${3}" is invalid 'target_label'"#,
            ),
            (
                "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '-${3}'}",
                r#""-${3}" is invalid 'target_label' for replace action"#,
            ),
            (
                "- {action: hashmod, source_labels: [a], target_label: b}",
                "relabel configuration for hashmod requires non-zero modulus",
            ),
            ("- {action: shuffle}", r#"unknown relabel action "shuffle""#),
            (
                "- {action: labeldrop, regex: a, source_labels: [a]}",
                "labeldrop action requires only 'regex', and no other fields",
            ),
            (
                "- {action: keepequal, source_labels: [a], target_label: b, regex: x}",
                "keepequal action requires only 'source_labels' and `target_label`",
            ),
            (
                "- {action: labelmap, replacement: '-x'}",
                "is invalid 'replacement'",
            ),
            ("- {regex: '(', target_label: x}", "error parsing regexp"),
        ] {
            let err = error(yaml);
            assert!(err.contains(expected), "{yaml}: {err}");
        }
        assert!(
            serde_saphyr::from_str::<Vec<RelabelConfig>>(
                "- {source_labels: [a], regex: 'some-([^-]+)-([^,]+)', replacement: '${1}', target_label: '${3}'}\n- {action: Keep}"
            )
            .is_ok()
        );
        for (text, valid) in [
            ("-label", false),
            ("label", true),
            ("label${1}", true),
            ("${1}label", true),
            ("${1}", true),
            ("${", false),
            ("$", false),
            ("${}", false),
            ("foo${", false),
            ("$1", true),
            ("asd$2asd", true),
            ("-foo${1}bar-", false),
            ("_${1}_", true),
            ("foo${bar}foo", true),
        ] {
            let yaml = format!("- {{regex: '(.*)', target_label: '{text}'}}");
            assert_eq!(
                serde_saphyr::from_str::<Vec<RelabelConfig>>(&yaml).is_ok(),
                valid,
                "{text}"
            );
        }
    }
}
