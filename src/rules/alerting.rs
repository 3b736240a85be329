//! Alerting rules with Prometheus' state machine: pending until `for` has
//! passed, firing, kept firing for `keep_firing_for`, resolved alerts kept
//! for 15 minutes so receivers learn they ended.

use super::RuleError;
use crate::promql::Sample;
use crate::storage::{Labels, METRIC_NAME};
use crate::template::{AlertData, expand_or_error};
use promql_parser::parser::Expr;
use std::collections::{BTreeMap, HashMap};

/// How long a resolved alert is kept (and re-sent), as in Prometheus.
pub const RESOLVED_RETENTION_MS: i64 = 15 * 60 * 1000;

/// The state of one alert.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AlertState {
    /// The condition no longer holds (kept while resolved notices are owed).
    Inactive,
    /// The condition holds, for less than `for`.
    Pending,
    /// The condition has held for `for` (or is kept firing).
    Firing,
}

impl AlertState {
    /// The `alertstate` label value and API string.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertState::Inactive => "inactive",
            AlertState::Pending => "pending",
            AlertState::Firing => "firing",
        }
    }
}

/// One alert instance (one label set of a rule's result).
#[derive(Clone, Debug)]
pub struct Alert {
    /// Labels: the result's labels without the metric name, the rule's labels, `alertname`.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// Current state.
    pub state: AlertState,
    /// When the condition started holding (ms).
    pub active_at: i64,
    /// When it started firing (ms).
    pub fired_at: Option<i64>,
    /// When it was resolved (ms).
    pub resolved_at: Option<i64>,
    /// Since when it is kept firing with the condition gone (ms).
    pub keep_firing_since: Option<i64>,
    /// The expression's value at the last evaluation.
    pub value: f64,
}

/// An alerting rule and its active alerts.
#[derive(Debug)]
pub struct AlertingRule {
    /// `alert:` name.
    pub name: String,
    /// `expr:` as written.
    pub expr_text: String,
    pub(super) expr: Expr,
    /// `for:` in ms.
    pub for_ms: i64,
    /// `keep_firing_for:` in ms.
    pub keep_firing_for_ms: i64,
    /// Label templates (group labels merged in).
    pub labels: BTreeMap<String, String>,
    /// Annotation templates.
    pub annotations: BTreeMap<String, String>,
    /// The short form's parts, when the rule was written that way.
    pub short_form: Option<ShortForm>,
    active: HashMap<Labels, Alert>,
}

/// One alert as saved across restarts.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct SavedAlert {
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    state: String,
    active_at: i64,
    fired_at: Option<i64>,
    resolved_at: Option<i64>,
    keep_firing_since: Option<i64>,
    value: f64,
}

/// `metric`, `condition` and `threshold` of a short-form rule.
#[derive(Debug, Clone, PartialEq)]
pub struct ShortForm {
    /// The metric or expression compared.
    pub metric: String,
    /// `greater_than`, `less_than`, ...
    pub condition: String,
    /// The number compared with.
    pub threshold: f64,
}

/// What a template needs besides the alert.
pub struct TemplateContext<'a> {
    /// `$externalLabels`.
    pub external_labels: &'a BTreeMap<String, String>,
    /// `$externalURL`.
    pub external_url: &'a str,
}

impl AlertingRule {
    pub(super) fn new(
        name: String,
        expr_text: String,
        expr: Expr,
        for_ms: i64,
        keep_firing_for_ms: i64,
        labels: BTreeMap<String, String>,
        annotations: BTreeMap<String, String>,
    ) -> Self {
        Self {
            name,
            expr_text,
            expr,
            for_ms,
            keep_firing_for_ms,
            labels,
            annotations,
            short_form: None,
            active: HashMap::new(),
        }
    }

    /// Takes over another rule's alerts (on reload).
    pub(super) fn adopt_alerts(&mut self, from: &mut AlertingRule) {
        self.active = std::mem::take(&mut from.active);
    }

    pub(super) fn saved_alerts(&self) -> Vec<SavedAlert> {
        self.active_alerts()
            .into_iter()
            .map(|a| SavedAlert {
                labels: a
                    .labels
                    .iter()
                    .map(|l| (l.name.clone(), l.value.clone()))
                    .collect(),
                annotations: a.annotations.clone(),
                state: a.state.as_str().to_string(),
                active_at: a.active_at,
                fired_at: a.fired_at,
                resolved_at: a.resolved_at,
                keep_firing_since: a.keep_firing_since,
                value: a.value,
            })
            .collect()
    }

    /// Brings back saved alerts after a restart: firing and resolved ones as
    /// they were; pending ones only when the outage (`down_ms`) was shorter
    /// than `tolerance_ms`, so their `for` clock is still meaningful.
    pub(super) fn restore_alerts(
        &mut self,
        saved: Vec<SavedAlert>,
        down_ms: i64,
        tolerance_ms: i64,
    ) {
        for a in saved {
            let state = match a.state.as_str() {
                "firing" => AlertState::Firing,
                "pending" if down_ms < tolerance_ms => AlertState::Pending,
                "inactive" => AlertState::Inactive,
                _ => continue,
            };
            let labels = Labels::from_pairs(a.labels);
            self.active.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations: a.annotations,
                    state,
                    active_at: a.active_at,
                    fired_at: a.fired_at,
                    resolved_at: a.resolved_at,
                    keep_firing_since: a.keep_firing_since,
                    value: a.value,
                },
            );
        }
    }

    /// Alerts that are pending, firing, or resolved but still retained, sorted by labels.
    pub fn active_alerts(&self) -> Vec<&Alert> {
        let mut alerts: Vec<&Alert> = self.active.values().collect();
        alerts.sort_by(|a, b| a.labels.cmp(&b.labels));
        alerts
    }

    /// Advances the state machine with the query result at `ts` and returns the
    /// `ALERTS` and `ALERTS_FOR_STATE` samples to write.
    pub(super) fn eval(
        &mut self,
        result: Vec<Sample>,
        ts: i64,
        limit: usize,
        ctx: &TemplateContext,
    ) -> Result<Vec<Sample>, RuleError> {
        let mut current: HashMap<Labels, Alert> = HashMap::with_capacity(result.len());
        for sample in result {
            let label_map: BTreeMap<String, String> = sample
                .labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect();
            let data = AlertData {
                labels: &label_map,
                external_labels: ctx.external_labels,
                external_url: ctx.external_url,
                value: sample.v,
            };
            let mut b = sample.labels.builder();
            b.delete(METRIC_NAME);
            for (name, template) in &self.labels {
                b.set(name, &expand_or_error(template, &data));
            }
            b.set("alertname", &self.name);
            let labels = b.build();
            let annotations = self
                .annotations
                .iter()
                .map(|(k, v)| (k.clone(), expand_or_error(v, &data)))
                .collect();
            if current.contains_key(&labels) {
                return Err(RuleError(
                    "vector contains metrics with the same labelset after applying alert labels"
                        .into(),
                ));
            }
            current.insert(
                labels.clone(),
                Alert {
                    labels,
                    annotations,
                    state: AlertState::Pending,
                    active_at: ts,
                    fired_at: None,
                    resolved_at: None,
                    keep_firing_since: None,
                    value: sample.v,
                },
            );
        }
        for (labels, alert) in current.iter() {
            match self.active.get_mut(labels) {
                Some(existing) if existing.state != AlertState::Inactive => {
                    existing.value = alert.value;
                    existing.annotations = alert.annotations.clone();
                }
                _ => {
                    self.active.insert(labels.clone(), alert.clone());
                }
            }
        }
        let mut out = Vec::new();
        let mut active_or_pending = 0usize;
        let mut remove = Vec::new();
        for (labels, alert) in self.active.iter_mut() {
            if !current.contains_key(labels) {
                let mut keep_firing = false;
                if alert.state == AlertState::Firing && self.keep_firing_for_ms > 0 {
                    let since = *alert.keep_firing_since.get_or_insert(ts);
                    keep_firing = ts - since < self.keep_firing_for_ms;
                }
                if alert.state == AlertState::Pending
                    || alert
                        .resolved_at
                        .is_some_and(|r| ts - r > RESOLVED_RETENTION_MS)
                {
                    remove.push(labels.clone());
                }
                if alert.state != AlertState::Inactive && !keep_firing {
                    alert.state = AlertState::Inactive;
                    alert.resolved_at = Some(ts);
                }
                if !keep_firing {
                    continue;
                }
            } else {
                alert.keep_firing_since = None;
            }
            active_or_pending += 1;
            if alert.state == AlertState::Pending && ts - alert.active_at >= self.for_ms {
                alert.state = AlertState::Firing;
                alert.fired_at = Some(ts);
            }
            let mut b = alert.labels.builder();
            b.set(METRIC_NAME, "ALERTS")
                .set("alertstate", alert.state.as_str());
            out.push(Sample {
                labels: b.build(),
                v: 1.0,
            });
            let mut b = alert.labels.builder();
            b.set(METRIC_NAME, "ALERTS_FOR_STATE");
            out.push(Sample {
                labels: b.build(),
                v: (alert.active_at / 1000) as f64,
            });
        }
        for labels in remove {
            self.active.remove(&labels);
        }
        if limit > 0 && active_or_pending > limit {
            self.active.clear();
            return Err(RuleError(format!(
                "exceeded limit of {limit} with {active_or_pending} alerts"
            )));
        }
        Ok(out)
    }
}
