//! Cost policies' gauges, read from the cost manager at scrape time. Money is per hour in the
//! currency of the policy's prices; a policy whose last evaluation failed exports no figures,
//! only its failure counter.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::metrics::MetricType;

use super::{counter, family, gauge};

/// One cost policy as the exporter shows it.
#[derive(Debug, Clone, Default)]
pub struct CostSnapshot {
    /// Policy name.
    pub policy: String,
    /// Allocated CPU cores, memory bytes, GPUs.
    pub allocated: Option<[f64; 3]>,
    /// Used CPU cores, memory bytes, GPUs.
    pub used: Option<[f64; 3]>,
    /// Hourly cost of CPU, memory, GPU and in total.
    pub hourly: Option<[f64; 4]>,
    /// Idle hourly cost of CPU, memory, GPU and in total.
    pub idle_hourly: Option<[f64; 4]>,
    /// Idle over total cost.
    pub idle_share: Option<f64>,
    /// Efficiency of CPU, memory, GPU and cost-weighted in total.
    pub efficiency: Option<[f64; 4]>,
    /// Total hourly cost per 1,000 inferences.
    pub per_1k_inferences: Option<f64>,
    /// Recommended CPU cores, memory bytes, GPUs.
    pub recommended: Option<[f64; 3]>,
    /// Hourly saving of the recommended allocation.
    pub savings_hourly: Option<f64>,
    /// Unix seconds of the last successful evaluation.
    pub last_evaluation_s: Option<f64>,
    /// Failed evaluations.
    pub failures: u64,
}

impl CostSnapshot {
    /// Whether a GPU is allocated or used.
    fn has_gpu(&self) -> bool {
        self.allocated.is_some_and(|a| a[2] > 0.0) || self.used.is_some_and(|u| u[2] > 0.0)
    }
}

/// Something that can describe the cost policies at scrape time (the cost manager).
pub trait CostSource: Send + Sync + 'static {
    /// Every policy.
    fn snapshot(&self) -> Vec<CostSnapshot>;
}

/// Encodes `torchwatch_cost_*` from a [`CostSource`].
pub struct CostCollector(pub std::sync::Arc<dyn CostSource>);

impl std::fmt::Debug for CostCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CostCollector")
    }
}

type Read = fn(&CostSnapshot) -> Option<f64>;

const RESOURCES: [&str; 3] = ["cpu", "memory", "gpu"];

impl Collector for CostCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let policies = self.0.snapshot();
        let single: [(&str, &str, Read); 14] = [
            (
                "torchwatch_cost_hourly",
                "Hourly cost: max(allocated, used) times the price, summed over CPU, memory and GPU (OpenCost)",
                |s| Some(s.hourly?[3]),
            ),
            (
                "torchwatch_cost_idle_ratio",
                "Share of the hourly cost that is allocated but not used",
                |s| s.idle_share,
            ),
            (
                "torchwatch_cost_total_efficiency_ratio",
                "Used over allocated, weighted by each resource's cost (OpenCost's total efficiency)",
                |s| Some(s.efficiency?[3]),
            ),
            (
                "torchwatch_cost_per_1k_inferences",
                "Hourly cost over the inferences of an hour, times 1000 (absent without inferences)",
                |s| s.per_1k_inferences,
            ),
            (
                "torchwatch_cost_allocated_cpu_cores",
                "CPU cores paid for",
                |s| Some(s.allocated?[0]),
            ),
            (
                "torchwatch_cost_allocated_memory_bytes",
                "Memory paid for, bytes",
                |s| Some(s.allocated?[1]),
            ),
            ("torchwatch_cost_allocated_gpus", "GPUs paid for", |s| {
                Some(s.allocated?[2])
            }),
            ("torchwatch_cost_used_cpu_cores", "CPU cores used", |s| {
                Some(s.used?[0])
            }),
            (
                "torchwatch_cost_used_memory_bytes",
                "Memory used, bytes",
                |s| Some(s.used?[1]),
            ),
            ("torchwatch_cost_used_gpus", "GPUs used", |s| {
                Some(s.used?[2])
            }),
            (
                "torchwatch_cost_recommended_cpu_cores",
                "Right-sizing: the CPU percentile over the window plus the margin",
                |s| Some(s.recommended?[0]),
            ),
            (
                "torchwatch_cost_recommended_memory_bytes",
                "Right-sizing: the memory peak (or percentile) over the window plus the margin",
                |s| Some(s.recommended?[1]),
            ),
            (
                "torchwatch_cost_savings_hourly",
                "Hourly cost of today's allocation minus the recommended one's",
                |s| s.savings_hourly,
            ),
            (
                "torchwatch_cost_last_evaluation_timestamp_seconds",
                "When the policy was last evaluated successfully, Unix seconds",
                |s| s.last_evaluation_s,
            ),
        ];
        for (name, help, read) in single {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                policies.iter().filter_map(|s| Some((&s.policy, read(s)?))),
                |e, (policy, v)| gauge(e, &[("policy", policy)], v),
            )?;
        }
        type PerResource = fn(&CostSnapshot) -> Option<[f64; 4]>;
        let per_resource: [(&str, &str, PerResource); 3] = [
            (
                "torchwatch_cost_resource_hourly",
                "Hourly cost of one resource: max(allocated, used) times its price",
                |s| s.hourly,
            ),
            (
                "torchwatch_cost_idle_hourly",
                "Hourly cost of what is allocated but not used, by resource",
                |s| s.idle_hourly,
            ),
            (
                "torchwatch_cost_efficiency_ratio",
                "Used over allocated, by resource",
                |s| s.efficiency,
            ),
        ];
        for (name, help, read) in per_resource {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                policies
                    .iter()
                    .filter_map(|s| Some((&s.policy, read(s)?, s.has_gpu()))),
                |e, (policy, values, gpu)| {
                    for (resource, v) in RESOURCES.iter().zip(values) {
                        // No GPU allocated or used: no GPU series, rather than a 0 that an
                        // efficiency alert would take for a wasted GPU.
                        if *resource == "gpu" && !gpu {
                            continue;
                        }
                        gauge(e, &[("policy", policy), ("resource", resource)], v)?;
                    }
                    Ok(())
                },
            )?;
        }
        family(
            &mut encoder,
            "torchwatch_cost_evaluation_failures",
            "Evaluations that failed (a query failed or returned nothing)",
            MetricType::Counter,
            &policies,
            |e, s| counter(e, &[("policy", &s.policy)], s.failures),
        )
    }
}
