//! The rule engine's self-metrics, named after Prometheus' `prometheus_rule_*`
//! families so the same dashboards and alerts carry over.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct GroupLabel {
    rule_group: String,
}

/// Rule-engine families; [`RuleMetrics::group`] resolves one group's handles.
#[derive(Clone)]
pub struct RuleMetrics {
    evaluation_duration: Histogram,
    failures: Family<GroupLabel, Counter>,
    evaluations: Family<GroupLabel, Counter>,
    missed: Family<GroupLabel, Counter>,
    iterations: Family<GroupLabel, Counter>,
    last_evaluation: Family<GroupLabel, Gauge<f64, AtomicU64>>,
    last_duration: Family<GroupLabel, Gauge<f64, AtomicU64>>,
}

/// One group's pre-resolved handles (atomics).
#[derive(Clone)]
pub struct GroupMetrics {
    /// Observes each rule evaluation's duration.
    pub evaluation_duration: Histogram,
    /// Rule evaluations that failed.
    pub failures: Counter,
    /// Rule evaluations run (the denominator of `failures`).
    pub evaluations: Counter,
    /// Evaluations skipped because the previous one overran the interval.
    pub missed: Counter,
    /// Evaluations run.
    pub iterations: Counter,
    /// Unix seconds of the last evaluation.
    pub last_evaluation: Gauge<f64, AtomicU64>,
    /// Duration of the last whole-group evaluation.
    pub last_duration: Gauge<f64, AtomicU64>,
}

impl RuleMetrics {
    pub(super) fn new() -> RuleMetrics {
        RuleMetrics {
            evaluation_duration: Histogram::new([
                0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0,
            ]),
            failures: Family::default(),
            evaluations: Family::default(),
            missed: Family::default(),
            iterations: Family::default(),
            last_evaluation: Family::default(),
            last_duration: Family::default(),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        let metrics = self;
        registry.register(
            "torchwatch_rule_evaluation_duration_seconds",
            "Duration of one rule evaluation (query and state update)",
            metrics.evaluation_duration.clone(),
        );
        registry.register(
            "torchwatch_rule_evaluation_failures",
            "Rule evaluations that failed, by group",
            metrics.failures.clone(),
        );
        registry.register(
            "torchwatch_rule_evaluations",
            "Rule evaluations, by group (each rule of each group evaluation)",
            metrics.evaluations.clone(),
        );
        registry.register(
            "torchwatch_rule_group_iterations_missed",
            "Group evaluations skipped because an evaluation overran the interval",
            metrics.missed.clone(),
        );
        registry.register(
            "torchwatch_rule_group_iterations",
            "Group evaluations run",
            metrics.iterations.clone(),
        );
        registry.register(
            "torchwatch_rule_group_last_evaluation_timestamp_seconds",
            "When the group was last evaluated, Unix seconds",
            metrics.last_evaluation.clone(),
        );
        registry.register(
            "torchwatch_rule_group_last_duration_seconds",
            "How long the group's last evaluation took",
            metrics.last_duration.clone(),
        );
    }

    /// Handles for the group Prometheus would call `file;name`.
    pub fn group(&self, rule_group: &str) -> GroupMetrics {
        let label = GroupLabel {
            rule_group: rule_group.to_string(),
        };
        GroupMetrics {
            evaluation_duration: self.evaluation_duration.clone(),
            failures: self.failures.get_or_create(&label).clone(),
            evaluations: self.evaluations.get_or_create(&label).clone(),
            missed: self.missed.get_or_create(&label).clone(),
            iterations: self.iterations.get_or_create(&label).clone(),
            last_evaluation: self.last_evaluation.get_or_create(&label).clone(),
            last_duration: self.last_duration.get_or_create(&label).clone(),
        }
    }
}
