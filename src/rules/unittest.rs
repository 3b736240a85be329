//! `rules test`: promtool's rule unit-test format, output and exit status
//! (Prometheus 2.42's `cmd/promtool/unittest.go`), with promtool's newer
//! float comparison (relative 1e-6, NaN equals NaN) instead of bit equality.

use super::{AlertState, Group, LocalQuery, QueryFn, RuleKind, TemplateContext};
use crate::config::{TestGroup, UnitTestFile};
use crate::gofmt;
use crate::promql::{self, Engine};
use crate::storage::{Labels, METRIC_NAME, Storage, StorageOptions, is_stale, quote, stale_nan};
use promql_parser::label::MatchOp;
use promql_parser::parser::Expr;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Runs every test file, printing as promtool does; true when all pass.
pub fn run_test_files(paths: &[PathBuf]) -> bool {
    let mut ok = true;
    for path in paths {
        println!("Unit Testing:  {}", path.display());
        let errors = run_file(path);
        if errors.is_empty() {
            println!("  SUCCESS");
        } else {
            ok = false;
            eprintln!("  FAILED:");
            for e in errors {
                eprintln!("{e}");
                println!();
            }
        }
        println!();
    }
    ok
}

fn run_file(path: &Path) -> Vec<String> {
    let origin = path.display().to_string();
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) => return vec![format!("{origin}: cannot read: {e}")],
    };
    let file: UnitTestFile = match serde_saphyr::from_str(&text) {
        Ok(f) => f,
        Err(e) => return vec![crate::config::yaml_error(&origin, &e)],
    };
    let eval_interval = file
        .evaluation_interval
        .map(|d| d.millis())
        .filter(|ms| *ms > 0)
        .unwrap_or(60_000);
    let base = path.parent().unwrap_or(Path::new(""));
    let patterns: Vec<String> = file
        .rule_files
        .iter()
        .map(|f| {
            if Path::new(f).is_relative() {
                base.join(f).to_string_lossy().into_owned()
            } else {
                f.clone()
            }
        })
        .collect();
    let rule_files = match super::expand_globs(&patterns) {
        Ok(files) => files,
        Err(e) => return vec![e],
    };
    let mut errors = Vec::new();
    for test in &file.tests {
        errors.extend(run_group(
            test,
            eval_interval,
            &rule_files,
            &file.group_eval_order,
            base,
        ));
    }
    errors
}

/// Loads the rule files afresh (alert state must not leak between test groups),
/// in `group_eval_order` when given.
fn load_groups(
    rule_files: &[PathBuf],
    order: &[String],
    base: &Path,
) -> Result<Vec<Group>, Vec<String>> {
    let mut groups = super::load_files(rule_files).map_err(|errors| {
        // promtool names rule files as the test file gave them, relative to it.
        let prefix = format!("{}/", base.display());
        errors
            .into_iter()
            .map(|e| match e.strip_prefix(&prefix) {
                Some(relative) if !base.as_os_str().is_empty() => relative.to_string(),
                _ => e,
            })
            .collect::<Vec<_>>()
    })?;
    if !order.is_empty() {
        let rank = |g: &Group| {
            order
                .iter()
                .position(|n| *n == g.name)
                .unwrap_or(usize::MAX)
        };
        groups.sort_by_key(rank);
    }
    Ok(groups)
}

struct LoadedSeries {
    labels: Labels,
    /// (timestamp ms, value), omitted values left out.
    points: Vec<(i64, f64)>,
}

fn run_group(
    test: &TestGroup,
    eval_interval: i64,
    rule_files: &[PathBuf],
    order: &[String],
    base: &Path,
) -> Vec<String> {
    let interval = test
        .interval
        .map(|d| d.millis())
        .filter(|ms| *ms > 0)
        .unwrap_or(eval_interval);
    let mut series = Vec::new();
    for input in &test.input_series {
        let labels = match parse_series_labels(&input.series) {
            Ok(l) => l,
            Err(e) => return vec![e],
        };
        let values = match parse_values(&input.values) {
            Ok(v) => v,
            Err(e) => return vec![format!("{}: {e}", input.series)],
        };
        let points = values
            .into_iter()
            .enumerate()
            .filter_map(|(i, v)| v.map(|v| (i as i64 * interval, v)))
            .collect();
        series.push(LoadedSeries { labels, points });
    }
    let mut groups = match load_groups(rule_files, order, base) {
        Ok(g) => g,
        Err(e) => return e,
    };
    let storage = Arc::new(Storage::new(StorageOptions {
        retention_ms: i64::MAX / 4,
        max_series: usize::MAX,
    }));
    let engine = Engine {
        lookback_ms: 5 * 60 * 1000,
        default_subquery_step_ms: eval_interval,
    };
    let query = LocalQuery {
        engine,
        storage: storage.clone(),
    };
    let ctx = TemplateContext {
        external_labels: &test.external_labels,
        external_url: &test.external_url,
    };
    let max_eval = test
        .alert_rule_test
        .iter()
        .map(|a| a.eval_time.millis())
        .chain(test.promql_expr_test.iter().map(|p| p.eval_time.millis()))
        .max()
        .unwrap_or(0);
    let mut alert_times: Vec<i64> = test
        .alert_rule_test
        .iter()
        .map(|a| a.eval_time.millis())
        .collect();
    alert_times.sort_unstable();
    alert_times.dedup();
    let mut next_alert = 0;
    let mut loaded = vec![0usize; series.len()];
    let mut errors = Vec::new();
    let mut ts = 0i64;
    while ts <= max_eval {
        load_until(&storage, &series, &mut loaded, ts);
        let mut eval_errors = Vec::new();
        for g in &mut groups {
            for (rule, err) in g.eval(ts, &query, &storage, &ctx).errors {
                eval_errors.push(format!(
                    "    rule: {rule}, time: {}, err: {err}",
                    go_duration(ts)
                ));
            }
        }
        if !eval_errors.is_empty() {
            errors.extend(eval_errors);
            return errors;
        }
        while next_alert < alert_times.len()
            && ts <= alert_times[next_alert]
            && alert_times[next_alert] < ts + eval_interval
        {
            let at = alert_times[next_alert];
            for case in test
                .alert_rule_test
                .iter()
                .filter(|a| a.eval_time.millis() == at)
            {
                let mut got: Vec<(Labels, Labels)> = groups
                    .iter()
                    .flat_map(|g| &g.rules)
                    .filter_map(|r| match &r.kind {
                        RuleKind::Alerting(a) if a.name == case.alertname => Some(a),
                        _ => None,
                    })
                    .flat_map(|a| a.active_alerts())
                    .filter(|a| a.state == AlertState::Firing)
                    .map(|a| (a.labels.clone(), Labels::from_pairs(a.annotations.clone())))
                    .collect();
                let mut expected: Vec<(Labels, Labels)> = case
                    .exp_alerts
                    .iter()
                    .map(|e| {
                        let mut labels: BTreeMap<String, String> = e.exp_labels.clone();
                        labels.insert("alertname".into(), case.alertname.clone());
                        (
                            Labels::from_pairs(labels),
                            Labels::from_pairs(e.exp_annotations.clone()),
                        )
                    })
                    .collect();
                got.sort();
                expected.sort();
                if got != expected {
                    let name = if test.name.is_empty() {
                        String::new()
                    } else {
                        format!("    name: {},\n", test.name)
                    };
                    errors.push(format!(
                        "{name}    alertname: {}, time: {}, \n        exp:{}, \n        got:{}",
                        case.alertname,
                        case.eval_time,
                        indent_lines(&alerts_string(&expected), "            "),
                        indent_lines(&alerts_string(&got), "            "),
                    ));
                }
            }
            next_alert += 1;
        }
        ts += eval_interval;
    }
    load_until(&storage, &series, &mut loaded, max_eval);
    for case in &test.promql_expr_test {
        let time = case.eval_time;
        let got = promql::parse(&case.expr)
            .map_err(|e| e.0)
            .and_then(|expr: Expr| {
                query
                    .query(&expr, &case.expr, time.millis())
                    .map_err(|e| e.0)
            });
        let got = match got {
            Ok(v) => v,
            Err(e) => {
                errors.push(format!(
                    "    expr: {}, time: {time}, err: {e}",
                    quote(&case.expr)
                ));
                continue;
            }
        };
        let mut expected = Vec::new();
        let mut bad_labels = None;
        for s in &case.exp_samples {
            match parse_series_labels(&s.labels) {
                Ok(l) => expected.push((l, s.value)),
                Err(e) => {
                    bad_labels = Some(format!(
                        "    expr: {}, time: {time}, err: labels {}: {e}",
                        quote(&case.expr),
                        quote(&s.labels)
                    ));
                    break;
                }
            }
        }
        if let Some(e) = bad_labels {
            errors.push(e);
            continue;
        }
        let mut got: Vec<(Labels, f64)> = got.into_iter().map(|s| (s.labels, s.v)).collect();
        expected.sort_by(|a, b| a.0.cmp(&b.0));
        got.sort_by(|a, b| a.0.cmp(&b.0));
        let same = expected.len() == got.len()
            && expected
                .iter()
                .zip(&got)
                .all(|(e, g)| e.0 == g.0 && almost_equal(e.1, g.1));
        if !same {
            errors.push(format!(
                "    expr: {}, time: {time},\n        exp: {}\n        got: {}",
                quote(&case.expr),
                samples_string(&expected),
                samples_string(&got)
            ));
        }
    }
    errors
}

fn load_until(storage: &Storage, series: &[LoadedSeries], loaded: &mut [usize], ts: i64) {
    let mut appender = storage.appender();
    for (s, next) in series.iter().zip(loaded.iter_mut()) {
        while *next < s.points.len() && s.points[*next].0 <= ts {
            let (t, v) = s.points[*next];
            // Input series are in time order by construction.
            let _ = appender.append(&s.labels, t, v);
            *next += 1;
        }
    }
}

/// promtool's comparison: equal within 1e-6 relative, NaN equal to NaN.
fn almost_equal(a: f64, b: f64) -> bool {
    if a.is_nan() || b.is_nan() {
        return a.is_nan() && b.is_nan() && is_stale(a) == is_stale(b);
    }
    if a == b {
        return true;
    }
    let diff = (a - b).abs();
    if a == 0.0 || b == 0.0 || diff < f64::MIN_POSITIVE {
        return diff < 1e-6 * f64::MIN_POSITIVE;
    }
    diff / (a.abs() + b.abs()) < 1e-6
}

/// Parses `name{a="b"}` / `{a="b"}` / `""` into labels (equality matchers only).
pub(crate) fn parse_series_labels(text: &str) -> Result<Labels, String> {
    if matches!(text.trim(), "" | "{}") {
        return Ok(Labels::default());
    }
    let expr = promql::parse(text).map_err(|e| e.0)?;
    let Expr::VectorSelector(vs) = expr else {
        return Err(format!("{text:?} is not a series"));
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    if let Some(name) = &vs.name {
        pairs.push((METRIC_NAME.into(), name.clone()));
    }
    for m in &vs.matchers.matchers {
        if !matches!(m.op, MatchOp::Equal) {
            return Err(format!("{text:?}: only = matchers describe a series"));
        }
        pairs.push((m.name.clone(), m.value.clone()));
    }
    Ok(Labels::from_pairs(pairs))
}

/// Expanding notation: `1 2 _ stale 1+2x3 1-2x3 1x3 _x3`; `None` = omitted.
pub(crate) fn parse_values(text: &str) -> Result<Vec<Option<f64>>, String> {
    let mut out = Vec::new();
    for item in text.split_whitespace() {
        let (base, times) = match item.rsplit_once('x') {
            Some((b, n))
                if !b.is_empty() && !n.is_empty() && n.bytes().all(|c| c.is_ascii_digit()) =>
            {
                let n: u64 = n
                    .parse()
                    .map_err(|_| format!("bad repetition in {item:?}"))?;
                (b, Some(n))
            }
            _ => (item, None),
        };
        if base == "_" {
            for _ in 0..times.unwrap_or(1) {
                out.push(None);
            }
            continue;
        }
        if base == "stale" {
            if times.is_some() {
                return Err(format!("{item:?}: stale cannot be repeated"));
            }
            out.push(Some(stale_nan()));
            continue;
        }
        // `a+b` / `a-b`: the operator is the first sign after the start that does
        // not belong to an exponent.
        let bytes = base.as_bytes();
        let split = (1..bytes.len()).find(|&i| {
            (bytes[i] == b'+' || bytes[i] == b'-') && !matches!(bytes[i - 1], b'e' | b'E')
        });
        match (split, times) {
            (Some(i), Some(n)) => {
                let mut v = parse_number(&base[..i])?;
                let step = parse_number(&base[i..])?;
                out.push(Some(v));
                for _ in 0..n {
                    v += step;
                    out.push(Some(v));
                }
            }
            (Some(_), None) => return Err(format!("{item:?}: expected NxM after a+b")),
            (None, Some(n)) => {
                let v = parse_number(base)?;
                for _ in 0..=n {
                    out.push(Some(v));
                }
            }
            (None, None) => out.push(Some(parse_number(base)?)),
        }
    }
    Ok(out)
}

fn parse_number(text: &str) -> Result<f64, String> {
    let lower = text.to_ascii_lowercase();
    let unsigned = lower.trim_start_matches(['+', '-']);
    let numeric = unsigned == "inf"
        || unsigned == "nan"
        || unsigned.starts_with(|c: char| c.is_ascii_digit() || c == '.');
    if numeric && let Ok(v) = lower.parse::<f64>() {
        return Ok(v);
    }
    Err(format!("invalid value {text:?} in series values"))
}

/// Go's `time.Duration.String()` for whole milliseconds.
fn go_duration(ms: i64) -> String {
    if ms == 0 {
        return "0s".into();
    }
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    if ms < 1000 {
        return format!("{sign}{ms}ms");
    }
    let (h, m) = (ms / 3_600_000, (ms / 60_000) % 60);
    let s = (ms % 60_000) as f64 / 1000.0;
    let seconds = format!("{s}");
    if h > 0 {
        format!("{sign}{h}h{m}m{seconds}s")
    } else if m > 0 {
        format!("{sign}{m}m{seconds}s")
    } else {
        format!("{sign}{seconds}s")
    }
}

fn samples_string(samples: &[(Labels, f64)]) -> String {
    if samples.is_empty() {
        return "nil".into();
    }
    samples
        .iter()
        .map(|(l, v)| format!("{l} {}", gofmt::exponent(*v, true)))
        .collect::<Vec<_>>()
        .join(", ")
}

fn alerts_string(alerts: &[(Labels, Labels)]) -> String {
    if alerts.is_empty() {
        return "[]".into();
    }
    let mut s = String::from("[");
    for (i, (labels, annotations)) in alerts.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        let body = format!("\nLabels:{labels}\nAnnotations:{annotations}");
        s.push_str(&format!("\n{i}:{}", indent_lines(&body, "  ")));
    }
    s.push_str("\n]");
    s
}

fn indent_lines(text: &str, indent: &str) -> String {
    text.split('\n')
        .enumerate()
        .map(|(i, line)| {
            if i == 0 {
                line.to_string()
            } else {
                format!("{indent}{line}")
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expanding_notation() {
        let v = parse_values("1 _ stale 1+2x2 5-1x1 3x1 _x2 -1 Inf").unwrap();
        let shown: Vec<String> = v
            .iter()
            .map(|x| match x {
                None => "_".into(),
                Some(f) if is_stale(*f) => "stale".into(),
                Some(f) => f.to_string(),
            })
            .collect();
        assert_eq!(shown.join(" "), "1 _ stale 1 3 5 5 4 3 3 _ _ -1 inf");
        assert!(parse_values("1+2").is_err());
        assert!(parse_values("abc").is_err());
    }

    #[test]
    fn go_formats() {
        assert_eq!(go_duration(0), "0s");
        assert_eq!(go_duration(60_000), "1m0s");
        assert_eq!(go_duration(3_725_500), "1h2m5.5s");
    }
}
