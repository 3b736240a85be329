//! What the rule engine hands over (an alert) and what a receiver is given (a message).

use crate::storage::Labels;
use serde_json::Value;
use std::collections::BTreeMap;

/// An alert as the rule engine hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Labels, `alertname` included.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (ms).
    pub starts_at: i64,
    /// When it resolved (ms); `None` while firing.
    pub ends_at: Option<i64>,
    /// Link to the expression that produced it.
    pub generator_url: String,
    /// The expression's value at the last evaluation.
    pub value: f64,
    /// What the rule compares, for receivers that show it (Slack's fields).
    pub condition: Condition,
    /// How often its rule group is evaluated, ms: forwarded to Alertmanager, a firing alert
    /// stays valid for 4 × max(this, the resend delay), as Prometheus' `ValidUntil`.
    pub group_interval_ms: i64,
}

/// What an alerting rule compares: its short form's parts, or its expression.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Condition {
    /// The metric (short form) or the whole expression.
    pub metric: String,
    /// `greater_than`, ... (short form only).
    pub comparison: Option<String>,
    /// The threshold (short form only).
    pub threshold: Option<f64>,
}

impl Alert {
    /// A firing alert with `labels` and nothing else, for tests of the stages.
    #[cfg(test)]
    pub(crate) fn firing_for_test(labels: &[(&str, &str)]) -> Alert {
        Alert {
            labels: Labels::from_pairs(labels.iter().copied()),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
            value: 1.0,
            condition: Condition::default(),
            group_interval_ms: 15_000,
        }
    }

    /// Alertmanager's fingerprint of the alert's labels.
    pub fn fingerprint(&self) -> u64 {
        self.labels.fingerprint()
    }

    pub(super) fn resolved(&self) -> bool {
        self.ends_at.is_some()
    }
}

/// What one notification carries.
#[derive(Clone, Debug)]
pub struct Message {
    /// Receiver name.
    pub receiver: String,
    /// `route-path:group-labels`, stable per group.
    pub group_key: String,
    /// The labels the group was formed by.
    pub group_labels: Labels,
    /// Alerts, firing first.
    pub alerts: Vec<Alert>,
    /// torchwatch's URL.
    pub external_url: String,
}

pub(super) fn label_map(labels: &Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

impl Message {
    /// `firing` when any alert fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.alerts.iter().any(|a| !a.resolved()) {
            "firing"
        } else {
            "resolved"
        }
    }

    /// Labels every alert shares with the same value.
    pub fn common_labels(&self) -> Labels {
        let Some(first) = self.alerts.first() else {
            return Labels::default();
        };
        Labels::from_pairs(
            first
                .labels
                .iter()
                .filter(|l| self.alerts.iter().all(|a| a.labels.get(&l.name) == l.value))
                .map(|l| (l.name.clone(), l.value.clone())),
        )
    }

    /// Annotations every alert shares with the same value.
    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        let Some(first) = self.alerts.first() else {
            return BTreeMap::new();
        };
        first
            .annotations
            .iter()
            .filter(|(k, v)| {
                self.alerts
                    .iter()
                    .all(|a| a.annotations.get(*k) == Some(*v))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What notification templates see (Alertmanager's data model).
    pub fn template_data(&self) -> crate::template::NotificationData<'_> {
        let map = |labels: &Labels| -> BTreeMap<String, String> {
            labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect()
        };
        crate::template::NotificationData {
            status: self.status(),
            receiver: &self.receiver,
            group_labels: map(&self.group_labels),
            common_labels: map(&self.common_labels()),
            common_annotations: self.common_annotations(),
            external_url: &self.external_url,
            alerts: self
                .alerts
                .iter()
                .map(|a| crate::template::NotificationAlert {
                    status: if a.resolved() { "resolved" } else { "firing" },
                    labels: map(&a.labels),
                    annotations: a.annotations.clone(),
                    starts_at_ms: a.starts_at,
                    ends_at_ms: a.ends_at,
                    generator_url: &a.generator_url,
                    fingerprint: format!("{:016x}", a.fingerprint()),
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert::firing_for_test(pairs)
    }

    #[test]
    pub(super) fn fingerprint_is_alertmanagers() {
        // Alertmanager: model.LabelSet{"alertname": "Test"}.Fingerprint() = 0x... (FNV-1a 64).
        let a = alert(&[("alertname", "Test")]);
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"alertname\xffTest\xff" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        assert_eq!(a.fingerprint(), h);
        assert_ne!(
            a.fingerprint(),
            alert(&[("alertname", "Other")]).fingerprint()
        );
    }
}
