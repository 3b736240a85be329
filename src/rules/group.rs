//! Rule groups: evaluation rule by rule with staleness markers, and the alert state kept
//! across restarts (Prometheus' group.go).

use super::alerting::{self, AlertState, TemplateContext};
use super::{QueryFn, Rule, RuleError, RuleKind};
use crate::promql::Sample;
use crate::storage::{Storage, stale_nan};
use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

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
        RuleKind::Recording(r) => r.eval(result, limit),
        RuleKind::Alerting(a) => a.eval(result, ts, limit, ctx),
    }
}
