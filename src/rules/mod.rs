//! Prometheus-format rule files: loading and validation (`rules check`),
//! recording and alerting rules, and group evaluation with staleness markers.
//! `unittest` runs promtool's rule unit-test format (`rules test`).

mod alerting;
mod datasource;
mod manager;
mod unittest;

pub use alerting::{
    Alert, AlertState, AlertingRule, RESOLVED_RETENTION_MS, ShortForm, TemplateContext,
};
pub use datasource::{LocalQuery, QueryFn, RemoteQuery};
pub use manager::{GroupStatus, RuleContext, RuleManager, RuleStatus, load_all};
pub use unittest::run_test_files;

use crate::config::{self, RuleEntry, RuleFile};
use crate::promql::{self, Sample};
use crate::storage::{
    Labels, METRIC_NAME, Storage, is_valid_label_name, is_valid_metric_name, stale_nan,
};
use crate::template::Template;
use promql_parser::parser::Expr;
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

/// A rule evaluation error, reported per rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

/// A recording rule.
#[derive(Debug)]
pub struct RecordingRule {
    /// `record:` name.
    pub name: String,
    /// `expr:` as written.
    pub expr_text: String,
    expr: Expr,
    /// Labels set on every result (group labels merged in).
    pub labels: BTreeMap<String, String>,
}

/// Either kind of rule.
#[derive(Debug)]
pub enum RuleKind {
    /// Writes its result as new series.
    Recording(RecordingRule),
    /// Raises alerts.
    Alerting(AlertingRule),
}

/// A rule with its evaluation bookkeeping.
#[derive(Debug)]
pub struct Rule {
    /// The rule itself.
    pub kind: RuleKind,
    /// Error of the last evaluation.
    pub last_error: Option<String>,
    /// When it was last evaluated (ms).
    pub last_evaluation: Option<i64>,
    /// How long the last evaluation took.
    pub last_duration: std::time::Duration,
    /// Series written last time, to mark them stale when they disappear.
    previous_series: HashSet<Labels>,
}

impl Rule {
    /// The record or alert name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording(r) => &r.name,
            RuleKind::Alerting(a) => &a.name,
        }
    }

    fn same_kind_and_labels(&self, other: &Rule) -> bool {
        match (&self.kind, &other.kind) {
            (RuleKind::Recording(a), RuleKind::Recording(b)) => a.labels == b.labels,
            (RuleKind::Alerting(a), RuleKind::Alerting(b)) => a.labels == b.labels,
            _ => false,
        }
    }

    fn expr(&self) -> (&Expr, &str) {
        match &self.kind {
            RuleKind::Recording(r) => (&r.expr, &r.expr_text),
            RuleKind::Alerting(a) => (&a.expr, &a.expr_text),
        }
    }
}

/// A loaded rule group.
#[derive(Debug)]
pub struct Group {
    /// Group name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// Its own interval (ms), if set.
    pub interval_ms: Option<i64>,
    /// Per-rule series/alert limit; 0 = none.
    pub limit: usize,
    /// Evaluate this far in the past (ms).
    pub query_offset_ms: i64,
    /// Rules in order.
    pub rules: Vec<Rule>,
}

/// What one group evaluation produced.
#[derive(Debug, Default)]
pub struct GroupOutcome {
    /// `(rule name, error)` for each rule that failed.
    pub errors: Vec<(String, String)>,
}

/// A group's alerts as saved across restarts.
#[derive(serde::Serialize, serde::Deserialize)]
struct SavedGroup {
    saved_at: i64,
    rules: Vec<SavedRule>,
}

#[derive(serde::Serialize, serde::Deserialize)]
struct SavedRule {
    name: String,
    labels: BTreeMap<String, String>,
    alerts: Vec<alerting::SavedAlert>,
}

impl Group {
    fn state_file(&self, dir: &Path) -> PathBuf {
        crate::state::file_for(
            dir,
            "alerts",
            &format!("{};{}", self.file.display(), self.name),
        )
    }

    /// Saves every alerting rule's alerts (after each evaluation).
    pub(crate) fn save_state(&self, dir: &Path, now: i64) -> std::io::Result<()> {
        let rules = self
            .rules
            .iter()
            .filter_map(|r| match &r.kind {
                RuleKind::Alerting(a) => Some(SavedRule {
                    name: a.name.clone(),
                    labels: a.labels.clone(),
                    alerts: a.saved_alerts(),
                }),
                RuleKind::Recording(_) => None,
            })
            .collect();
        crate::state::save(
            &self.state_file(dir),
            &SavedGroup {
                saved_at: now,
                rules,
            },
        )
    }

    /// Restores alerts saved by an earlier run for rules with the same name and labels.
    pub(crate) fn restore_state(&mut self, dir: &Path, now: i64, pending_tolerance_ms: i64) {
        let Some(saved) = crate::state::load::<SavedGroup>(&self.state_file(dir), "alert state")
        else {
            return;
        };
        let down_ms = now - saved.saved_at;
        let mut saved_rules = saved.rules;
        for rule in &mut self.rules {
            let RuleKind::Alerting(a) = &mut rule.kind else {
                continue;
            };
            if let Some(i) = saved_rules
                .iter()
                .position(|s| s.name == a.name && s.labels == a.labels)
            {
                let s = saved_rules.swap_remove(i);
                a.restore_alerts(s.alerts, down_ms, pending_tolerance_ms);
            }
        }
    }

    /// Takes over `old`'s state for rules with the same kind, name and labels
    /// (Prometheus' `CopyState`): active alerts and the series written last, so
    /// a reload neither restarts `for` clocks nor loses staleness markers.
    pub(crate) fn copy_state_from(&mut self, old: &mut Group) {
        let mut taken = vec![false; old.rules.len()];
        for rule in &mut self.rules {
            let found = old.rules.iter().enumerate().position(|(i, o)| {
                !taken[i] && o.name() == rule.name() && o.same_kind_and_labels(rule)
            });
            let Some(i) = found else {
                continue;
            };
            taken[i] = true;
            let o = &mut old.rules[i];
            rule.previous_series = std::mem::take(&mut o.previous_series);
            if let (RuleKind::Alerting(new), RuleKind::Alerting(previous)) =
                (&mut rule.kind, &mut o.kind)
            {
                new.adopt_alerts(previous);
            }
        }
    }

    /// The alerts to notify about, as Prometheus sends them to Alertmanager:
    /// firing ones and resolved ones still retained, never pending ones.
    pub fn notifications(
        &self,
        external_url: &str,
        interval: std::time::Duration,
    ) -> Vec<crate::notify::Alert> {
        let mut out = Vec::new();
        for rule in &self.rules {
            let RuleKind::Alerting(a) = &rule.kind else {
                continue;
            };
            let generator_url = reqwest::Url::parse_with_params(
                &format!("{}/api/v1/query", external_url.trim_end_matches('/')),
                &[("query", a.expr_text.as_str())],
            )
            .map(String::from)
            .unwrap_or_default();
            for alert in a.active_alerts() {
                if alert.state == AlertState::Pending {
                    continue;
                }
                out.push(crate::notify::Alert {
                    labels: alert.labels.clone(),
                    annotations: alert.annotations.clone(),
                    starts_at: alert.fired_at.unwrap_or(alert.active_at),
                    ends_at: if alert.state == AlertState::Inactive {
                        alert.resolved_at
                    } else {
                        None
                    },
                    generator_url: generator_url.clone(),
                    value: alert.value,
                    group_interval_ms: interval.as_millis() as i64,
                    condition: match &a.short_form {
                        Some(f) => crate::notify::Condition {
                            metric: f.metric.clone(),
                            comparison: Some(f.condition.clone()),
                            threshold: Some(f.threshold),
                        },
                        None => crate::notify::Condition {
                            metric: a.expr_text.clone(),
                            comparison: None,
                            threshold: None,
                        },
                    },
                });
            }
        }
        out
    }

    /// Evaluates every rule in order at `ts` (ms), writing recording results,
    /// `ALERTS` series and staleness markers into `storage` rule by rule, so a
    /// later rule sees an earlier rule's output.
    pub fn eval(
        &mut self,
        ts: i64,
        query: &dyn QueryFn,
        storage: &Storage,
        ctx: &TemplateContext,
    ) -> GroupOutcome {
        let mut outcome = GroupOutcome::default();
        let eval_ts = ts - self.query_offset_ms;
        for rule in &mut self.rules {
            let started = std::time::Instant::now();
            let result = eval_rule(rule, eval_ts, ts, self.limit, query, ctx);
            rule.last_evaluation = Some(ts);
            rule.last_duration = started.elapsed();
            match result {
                Err(e) => {
                    outcome.errors.push((rule.name().to_string(), e.0.clone()));
                    rule.last_error = Some(e.0);
                }
                Ok(samples) => {
                    rule.last_error = None;
                    let mut current = HashSet::with_capacity(samples.len());
                    let mut appender = storage.appender();
                    for s in samples {
                        // Conflicts with existing data are not the rule's fault; Prometheus
                        // only counts them, so they are dropped here too.
                        let _ = appender.append(&s.labels, eval_ts, s.v);
                        current.insert(s.labels);
                    }
                    for gone in rule.previous_series.difference(&current) {
                        let _ = appender.append(gone, eval_ts, stale_nan());
                    }
                    rule.previous_series = current;
                }
            }
        }
        outcome
    }
}

fn eval_rule(
    rule: &mut Rule,
    eval_ts: i64,
    ts: i64,
    limit: usize,
    query: &dyn QueryFn,
    ctx: &TemplateContext,
) -> Result<Vec<Sample>, RuleError> {
    let (expr, text) = rule.expr();
    let result = query.query(expr, text, eval_ts)?;
    match &mut rule.kind {
        RuleKind::Recording(r) => {
            let mut out = Vec::with_capacity(result.len());
            let mut seen = HashSet::with_capacity(result.len());
            for s in result {
                let mut b = s.labels.builder();
                b.set(METRIC_NAME, &r.name);
                for (k, v) in &r.labels {
                    b.set(k, v);
                }
                let labels = b.build();
                if !seen.insert(labels.clone()) {
                    return Err(RuleError(
                        "vector contains metrics with the same labelset after applying rule labels"
                            .into(),
                    ));
                }
                out.push(Sample { labels, v: s.v });
            }
            if limit > 0 && out.len() > limit {
                return Err(RuleError(format!(
                    "exceeded limit of {limit} with {} series",
                    out.len()
                )));
            }
            Ok(out)
        }
        RuleKind::Alerting(a) => a.eval(result, ts, limit, ctx),
    }
}

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
    let origin = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|e| LoadErrors(vec![format!("{origin}: cannot read: {e}")]))?;
    let file: RuleFile = serde_saphyr::from_str(&text)
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

/// The loaded groups as plain Prometheus rules (what `rules export` writes).
pub fn export(groups: &[Group]) -> config::ExportedFile {
    use crate::config::{ExportedGroup, ExportedRule, PromDuration};
    let duration = |ms: i64| (ms > 0).then(|| PromDuration(ms).to_string());
    config::ExportedFile {
        groups: groups
            .iter()
            .map(|g| ExportedGroup {
                name: g.name.clone(),
                interval: g.interval_ms.and_then(duration),
                limit: (g.limit > 0).then_some(g.limit),
                query_offset: duration(g.query_offset_ms),
                rules: g
                    .rules
                    .iter()
                    .map(|r| match &r.kind {
                        RuleKind::Recording(rec) => ExportedRule {
                            record: Some(rec.name.clone()),
                            alert: None,
                            expr: rec.expr_text.clone(),
                            for_: None,
                            keep_firing_for: None,
                            labels: rec.labels.clone(),
                            annotations: BTreeMap::new(),
                        },
                        RuleKind::Alerting(a) => ExportedRule {
                            record: None,
                            alert: Some(a.name.clone()),
                            expr: a.expr_text.clone(),
                            for_: duration(a.for_ms),
                            keep_firing_for: duration(a.keep_firing_for_ms),
                            labels: a.labels.clone(),
                            annotations: a.annotations.clone(),
                        },
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// `rules export`: writes each file, compiled to plain Prometheus rules, under
/// `out_dir` with its own file name; false (after printing why) on any problem.
pub fn export_files(paths: &[PathBuf], out_dir: &Path) -> bool {
    let mut names = HashSet::new();
    let mut ok = true;
    for path in paths {
        let Some(name) = path.file_name() else {
            eprintln!("{}: not a file", path.display());
            ok = false;
            continue;
        };
        if !names.insert(name.to_owned()) {
            eprintln!(
                "{}: another input has the same file name; export them separately",
                path.display()
            );
            ok = false;
            continue;
        }
        let groups = match load_file(path) {
            Ok((groups, _)) => groups,
            Err(LoadErrors(errors)) => {
                for e in errors {
                    eprintln!("{e}");
                }
                ok = false;
                continue;
            }
        };
        let target = out_dir.join(name);
        let written = serde_saphyr::to_string(&export(&groups))
            .map_err(|e| e.to_string())
            .and_then(|yaml| std::fs::write(&target, yaml).map_err(|e| e.to_string()));
        match written {
            Ok(()) => println!("{} -> {}", path.display(), target.display()),
            Err(e) => {
                eprintln!("{}: cannot write: {e}", target.display());
                ok = false;
            }
        }
    }
    ok
}

/// `rules check`: prints promtool's report for each file; false when any file
/// has an error (duplicate rules are reported but, as in promtool, not fatal).
pub fn check_files(paths: &[PathBuf]) -> bool {
    let mut ok = true;
    for path in paths {
        println!("Checking {}", path.display());
        match load_file(path) {
            Ok((groups, duplicates)) if duplicates.is_empty() => {
                let count: usize = groups.iter().map(|g| g.rules.len()).sum();
                println!("  SUCCESS: {count} rules found");
            }
            Ok((_, duplicates)) => {
                // A lint finding, as in promtool: reported as FAILED, yet not fatal.
                eprintln!("  FAILED:");
                eprintln!("lint error {} duplicate rule(s) found.", duplicates.len());
                for d in &duplicates {
                    eprintln!("Metric: {}\nLabel(s):", d.name);
                    for (k, v) in &d.labels {
                        eprintln!("\t{k}: {v}");
                    }
                }
                eprintln!("Might cause inconsistency while recording expressions");
            }
            Err(LoadErrors(errors)) => {
                ok = false;
                eprintln!("  FAILED:");
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
        println!();
    }
    ok
}
