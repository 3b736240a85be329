//! Inhibition: alerts muted while others fire.

use super::matcher::{from_maps, matches_all, parse_matchers};
use super::{Alert, Plan};
use crate::config::InhibitRuleConfig;
use promql_parser::label::Matcher;

/// A compiled inhibition rule.
pub(super) struct Inhibition {
    pub(super) source: Vec<Matcher>,
    pub(super) target: Vec<Matcher>,
    pub(super) equal: Vec<String>,
}

impl Inhibition {
    /// Compiles one `inhibit_rules` entry: its matcher lists and the older match maps.
    pub(super) fn build(rule: &InhibitRuleConfig) -> Result<Inhibition, String> {
        let compile = |lists: &[String], equal, regex| -> Result<Vec<Matcher>, String> {
            let mut matchers = Vec::new();
            for text in lists {
                matchers.extend(parse_matchers(text)?);
            }
            matchers.extend(from_maps(equal, regex)?);
            Ok(matchers)
        };
        Ok(Inhibition {
            source: compile(
                &rule.source_matchers,
                &rule.source_match,
                &rule.source_match_re,
            )?,
            target: compile(
                &rule.target_matchers,
                &rule.target_match,
                &rule.target_match_re,
            )?,
            equal: rule.equal.clone(),
        })
    }

    /// The fingerprint of a firing alert among `firing` that mutes `target`, if any.
    pub(super) fn source_of<'a>(
        &self,
        target: &Alert,
        mut firing: impl Iterator<Item = &'a Alert>,
    ) -> Option<u64> {
        if !matches_all(&self.target, &target.labels) {
            return None;
        }
        firing
            .find(|source| {
                source.labels != target.labels
                    && matches_all(&self.source, &source.labels)
                    && self
                        .equal
                        .iter()
                        .all(|n| source.labels.get(n) == target.labels.get(n))
            })
            .map(|source| source.fingerprint())
    }
}

impl Plan {
    /// The firing alert that inhibits `alert` (the first rule's, as Alertmanager's
    /// `Inhibitor.Mutes` marks it), if any; resolved alerts are never inhibited.
    pub(super) fn inhibited_by<'a>(
        &self,
        alert: &Alert,
        firing: impl Iterator<Item = &'a Alert> + Clone,
    ) -> Option<u64> {
        if alert.resolved() {
            return None;
        }
        let firing = firing.filter(|a| !a.resolved());
        self.inhibitions
            .iter()
            .find_map(|rule| rule.source_of(alert, firing.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyConfig;
    use std::collections::HashMap;
    use tokio::time::Instant;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert::firing_for_test(pairs)
    }

    #[test]
    pub(super) fn inhibition_needs_a_firing_source_with_equal_labels() {
        let config: NotifyConfig = serde_saphyr::from_str(
            "inhibit_rules:\n  - source_matchers: ['severity=\"critical\"']\n    target_matchers: ['severity=\"warning\"']\n    equal: [instance]\n",
        )
        .unwrap();
        crate::install_tls_provider();
        let plan = Plan::build(&config, &reqwest::Client::new()).unwrap();
        let now = Instant::now();
        let critical = alert(&[
            ("alertname", "Down"),
            ("severity", "critical"),
            ("instance", "a"),
        ]);
        let warning_a = alert(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("instance", "a"),
        ]);
        let warning_b = alert(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("instance", "b"),
        ]);
        let mut current: HashMap<u64, (Alert, Instant)> = [&critical, &warning_a, &warning_b]
            .into_iter()
            .map(|a| (a.fingerprint(), (a.clone(), now)))
            .collect();
        assert!(plan.muted(&warning_a, &current));
        assert!(!plan.muted(&warning_b, &current), "equal: instance differs");
        assert!(!plan.muted(&critical, &current));
        let mut resolved = critical.clone();
        resolved.ends_at = Some(1);
        current.insert(critical.fingerprint(), (resolved, now));
        assert!(
            !plan.muted(&warning_a, &current),
            "a resolved source mutes nothing"
        );
    }
}
