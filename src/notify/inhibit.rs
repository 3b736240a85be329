//! Inhibition: alerts muted while others fire.

use super::Alert;
use super::matcher::{from_maps, matches_all, parse_matchers};
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

    /// Whether a firing alert among `firing` mutes `target`.
    pub(super) fn mutes<'a>(
        &self,
        target: &Alert,
        mut firing: impl Iterator<Item = &'a Alert>,
    ) -> bool {
        matches_all(&self.target, &target.labels)
            && firing.any(|source| {
                source.labels != target.labels
                    && matches_all(&self.source, &source.labels)
                    && self
                        .equal
                        .iter()
                        .all(|n| source.labels.get(n) == target.labels.get(n))
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyConfig;
    use crate::notify::Plan;
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
