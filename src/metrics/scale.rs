//! Scale policies' gauges and counters, read from the policy manager at scrape time (the state
//! lives there; nothing is mirrored on the decision path).

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter, family, gauge};

/// One scale policy as the exporter shows it.
#[derive(Debug, Clone)]
pub struct ScaleSnapshot {
    /// Policy name.
    pub policy: String,
    /// Bounds.
    pub min: u32,
    /// Bounds.
    pub max: u32,
    /// Replicas wanted by the last decision.
    pub desired: Option<u32>,
    /// Replicas in effect.
    pub current: Option<u32>,
    /// Each metric's last value (absent when its query failed) and target.
    pub metrics: Vec<(Option<f64>, f64)>,
    /// The last forecast.
    pub forecast: Option<f64>,
    /// Replicas in effect × `price_per_replica_hour`.
    pub hourly_cost: Option<f64>,
    /// Unix seconds of the last decision.
    pub last_decision_s: Option<f64>,
    /// Decisions up, down, none.
    pub decisions: [u64; 3],
    /// Failed actuator attempts.
    pub actuator_failures: u64,
}

/// Something that can describe the scale policies at scrape time (the policy manager).
pub trait ScaleSource: Send + Sync + 'static {
    /// Every policy.
    fn snapshot(&self) -> Vec<ScaleSnapshot>;
}

/// Encodes `torchwatch_scale_*` from a [`ScaleSource`].
pub struct ScaleCollector(pub std::sync::Arc<dyn ScaleSource>);

impl std::fmt::Debug for ScaleCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ScaleCollector")
    }
}

/// Reads one optional gauge value off a snapshot.
type Read = fn(&ScaleSnapshot) -> Option<f64>;

impl Collector for ScaleCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let policies = self.0.snapshot();
        let optional: [(&str, &str, Read); 7] = [
            (
                "torchwatch_scale_desired_replicas",
                "Replicas the policy's last decision asked for",
                |s| s.desired.map(f64::from),
            ),
            (
                "torchwatch_scale_current_replicas",
                "Replicas in effect for the policy (carried out by its actuator, or recommended)",
                |s| s.current.map(f64::from),
            ),
            (
                "torchwatch_scale_min_replicas",
                "The policy's min_replicas",
                |s| Some(f64::from(s.min)),
            ),
            (
                "torchwatch_scale_max_replicas",
                "The policy's max_replicas",
                |s| Some(f64::from(s.max)),
            ),
            (
                "torchwatch_scale_forecast",
                "Predictive policies: the highest value of the first metric expected within the lead time",
                |s| s.forecast,
            ),
            (
                "torchwatch_scale_cost_hourly",
                "Replicas in effect times the policy's price_per_replica_hour",
                |s| s.hourly_cost,
            ),
            (
                "torchwatch_scale_last_decision_timestamp_seconds",
                "When the policy last decided, Unix seconds",
                |s| s.last_decision_s,
            ),
        ];
        for (name, help, read) in optional {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                policies.iter().filter_map(|s| Some((&s.policy, read(s)?))),
                |e, (policy, v)| gauge(e, &[("policy", policy)], v),
            )?;
        }
        let metrics = || {
            policies.iter().flat_map(|s| {
                s.metrics
                    .iter()
                    .enumerate()
                    .map(move |(i, m)| (&s.policy, i.to_string(), *m))
            })
        };
        family(
            &mut encoder,
            "torchwatch_scale_metric_value",
            "Each policy metric's value at the last decision (absent when its query failed)",
            MetricType::Gauge,
            metrics().filter_map(|(p, i, (v, _))| Some((p, i, v?))),
            |e, (policy, i, v)| gauge(e, &[("policy", policy), ("metric", &i)], v),
        )?;
        family(
            &mut encoder,
            "torchwatch_scale_metric_target",
            "Each policy metric's target (step policies: the scale-up threshold)",
            MetricType::Gauge,
            metrics(),
            |e, (policy, i, (_, t))| gauge(e, &[("policy", policy), ("metric", &i)], t),
        )?;
        family(
            &mut encoder,
            "torchwatch_scale_decisions",
            "Decisions taken, by direction (up, down, none)",
            MetricType::Counter,
            &policies,
            |e, s| {
                for (direction, n) in ["up", "down", "none"].iter().zip(s.decisions) {
                    counter(e, &[("policy", &s.policy), ("direction", direction)], n)?;
                }
                Ok(())
            },
        )?;
        family(
            &mut encoder,
            "torchwatch_scale_actuator_failures",
            "Actuator attempts that failed (each is retried; the next decision tries again)",
            MetricType::Counter,
            &policies,
            |e, s| counter(e, &[("policy", &s.policy)], s.actuator_failures),
        )
    }
}
