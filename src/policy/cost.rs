//! Cost policies: what serving costs per hour and per 1,000 inferences, and right-sizing advice.
//!
//! The cost arithmetic is OpenCost's (spec v0.1): each resource costs `max(allocated, used)` ×
//! its hourly price, idle is what is allocated but not used, and efficiency is used over
//! allocated, weighted by cost over the resources. Right-sizing takes KRR's simple strategy's
//! statistics (a CPU percentile and the memory peak) plus VPA's safety margin on both (KRR adds
//! its buffer to memory only), never below VPA's per-pod minimums of 25 millicores and 250 MiB,
//! with the tutorial's `ResourceOptimizer`
//! thresholds for its advice and its `calculate_cost_savings` for the saving.
//!
//! [`CostPolicy::evaluate`] is the one implementation; `serve` runs it on a timer from
//! [`CostManager`](super::CostManager).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::forecast::{History, Reduce};
use super::{BuildError, Query, parse_query, value_of};
use crate::config::{Amount, CostPolicyConfig, MemoryStatistic, PricesConfig};
use crate::rules::QueryFn;

const GIB: f64 = 1024.0 * 1024.0 * 1024.0;

/// A loaded, validated cost policy. Its mutable side is [`CostState`].
#[derive(Debug, Clone)]
pub struct CostPolicy {
    /// Unique name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// How often it is evaluated, ms.
    pub interval_ms: i64,
    /// Hourly prices.
    pub prices: Prices,
    allocated: Sources,
    used: Sources,
    inferences: Option<Source>,
    /// The right-sizing settings.
    pub right_sizing: RightSizing,
}

/// Prices per hour: per core, per GiB, per GPU.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct Prices {
    /// Per CPU core-hour.
    pub cpu_core_hour: f64,
    /// Per GiB-hour of memory.
    pub memory_gib_hour: f64,
    /// Per GPU-hour.
    pub gpu_hour: f64,
}

impl From<PricesConfig> for Prices {
    fn from(p: PricesConfig) -> Prices {
        Prices {
            cpu_core_hour: p.cpu_core_hour,
            memory_gib_hour: p.memory_gib_hour,
            gpu_hour: p.gpu_hour,
        }
    }
}

#[derive(Debug, Clone)]
enum Source {
    Number(f64),
    Query(Query),
}

impl Source {
    fn read(&self, query: &dyn QueryFn, now: i64) -> Result<f64, String> {
        match self {
            Source::Number(n) => Ok(*n),
            Source::Query(q) => {
                let v = value_of(query, q, now)?;
                // A negative or infinite amount would make idle exceed the allocation and
                // costs infinite: refuse it rather than export nonsense.
                if non_negative(v) {
                    Ok(v)
                } else {
                    Err(format!("the query returned {v}; need a finite number >= 0"))
                }
            }
        }
    }
}

#[derive(Debug, Clone)]
struct Sources {
    cpu_cores: Source,
    memory_bytes: Source,
    gpus: Option<Source>,
}

/// CPU cores, memory bytes and GPUs: allocated, used or recommended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Resources {
    /// CPU cores.
    pub cpu_cores: f64,
    /// Memory, bytes.
    pub memory_bytes: f64,
    /// GPUs.
    pub gpus: f64,
}

/// One figure per resource and their sum.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct PerResource {
    /// CPU.
    pub cpu: f64,
    /// Memory.
    pub memory: f64,
    /// GPU.
    pub gpu: f64,
    /// CPU + memory + GPU (for efficiency: cost-weighted).
    pub total: f64,
}

/// OpenCost's figures for one interval; money is per hour.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Costs {
    /// `max(allocated, used)` × price.
    pub hourly: PerResource,
    /// `max(allocated − used, 0)` × price.
    pub idle_hourly: PerResource,
    /// Idle over total cost, 0 when nothing costs anything.
    pub idle_share: f64,
    /// Used over allocated; `total` weighted by each resource's cost.
    pub efficiency: PerResource,
}

/// Computes OpenCost's figures from what is allocated and used.
pub fn opencost(allocated: Resources, used: Resources, prices: Prices) -> Costs {
    let triples = [
        (allocated.cpu_cores, used.cpu_cores, prices.cpu_core_hour),
        (
            allocated.memory_bytes / GIB,
            used.memory_bytes / GIB,
            prices.memory_gib_hour,
        ),
        (allocated.gpus, used.gpus, prices.gpu_hour),
    ];
    let cost = triples.map(|(a, u, p)| a.max(u) * p);
    let idle = triples.map(|(a, u, p)| (a - u).max(0.0) * p);
    // OpenCost: with nothing requested, any use is fully efficient.
    let efficiency = triples.map(|(a, u, _)| match (a > 0.0, u > 0.0) {
        (true, _) => u / a,
        (false, true) => 1.0,
        (false, false) => 0.0,
    });
    let total: f64 = cost.iter().sum();
    let idle_total: f64 = idle.iter().sum();
    let weighted = if total > 0.0 {
        cost.iter().zip(efficiency).map(|(c, e)| c * e).sum::<f64>() / total
    } else {
        0.0
    };
    Costs {
        hourly: PerResource {
            cpu: cost[0],
            memory: cost[1],
            gpu: cost[2],
            total,
        },
        idle_hourly: PerResource {
            cpu: idle[0],
            memory: idle[1],
            gpu: idle[2],
            total: idle_total,
        },
        idle_share: if total > 0.0 { idle_total / total } else { 0.0 },
        efficiency: PerResource {
            cpu: efficiency[0],
            memory: efficiency[1],
            gpu: efficiency[2],
            total: weighted,
        },
    }
}

/// What an allocation costs per hour (the tutorial's `_calculate_cost`, at the policy's prices).
pub fn allocation_cost(r: Resources, prices: Prices) -> f64 {
    r.cpu_cores * prices.cpu_core_hour
        + r.memory_bytes / GIB * prices.memory_gib_hour
        + r.gpus * prices.gpu_hour
}

/// The tutorial's `calculate_cost_savings`: hourly saving and its percent of today's cost.
pub fn savings(current: Resources, proposed: Resources, prices: Prices) -> (f64, f64) {
    let now = allocation_cost(current, prices);
    let saved = now - allocation_cost(proposed, prices);
    (saved, if now > 0.0 { saved / now * 100.0 } else { 0.0 })
}

/// Right-sizing settings, validated.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct RightSizing {
    /// How far back, ms.
    pub window_ms: i64,
    /// History step, ms.
    pub resolution_ms: i64,
    /// CPU percentile in (0, 1].
    pub cpu_percentile: f64,
    /// Memory: `None` for the peak, else a percentile.
    pub memory_percentile: Option<f64>,
    /// Margin on top, 0.15 = +15 %.
    pub margin: f64,
    /// Advise less below this mean utilisation.
    pub downscale_below: f64,
    /// Advise more above this mean utilisation.
    pub upscale_above: f64,
    /// Fewest history points before advising.
    pub min_points: usize,
    /// Least CPU recommended, cores.
    pub min_cpu_cores: f64,
    /// Least memory recommended, bytes.
    pub min_memory_bytes: f64,
}

/// The tutorial's advice for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Advice {
    /// Mean use below `downscale_below`.
    Downscale,
    /// Mean use above `upscale_above`.
    Upscale,
    /// In between.
    Keep,
}

impl Advice {
    /// The tutorial's thresholds applied to a mean utilisation.
    pub fn of(utilisation: f64, rs: &RightSizing) -> Advice {
        if utilisation < rs.downscale_below {
            Advice::Downscale
        } else if utilisation > rs.upscale_above {
            Advice::Upscale
        } else {
            Advice::Keep
        }
    }

    /// `downscale`, `upscale` or `keep`.
    pub fn as_str(self) -> &'static str {
        match self {
            Advice::Downscale => "downscale",
            Advice::Upscale => "upscale",
            Advice::Keep => "keep",
        }
    }
}

/// Right-sizing for one resource.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct ResourceAdvice {
    /// Mean of the history's steps over allocated (for memory the steps are peaks, so this is
    /// the mean peak).
    pub mean_utilisation: f64,
    /// The tutorial's advice at its thresholds.
    pub advice: Advice,
}

/// Right-sizing over the window.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Recommendation {
    /// History points it rests on.
    pub points: usize,
    /// What it recommends; GPUs stay as allocated (they come whole).
    pub recommended: Resources,
    /// CPU advice.
    pub cpu: ResourceAdvice,
    /// Memory advice.
    pub memory: ResourceAdvice,
    /// GPU advice, when GPUs are allocated.
    pub gpu: Option<ResourceAdvice>,
    /// Today's allocation cost per hour.
    pub current_hourly: f64,
    /// The recommended allocation's cost per hour.
    pub recommended_hourly: f64,
    /// `current − recommended` per hour (negative: more is needed).
    pub savings_hourly: f64,
    /// The saving in percent of today's cost.
    pub savings_percent: f64,
}

/// Linear interpolation between closest ranks, as numpy's default `percentile` (which KRR uses).
pub fn percentile(values: &[f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = q.clamp(0.0, 1.0) * (sorted.len() - 1) as f64;
    let (low, high) = (rank.floor() as usize, rank.ceil() as usize);
    Some(sorted[low] + (sorted[high] - sorted[low]) * (rank - low as f64))
}

fn mean(values: &[f64]) -> f64 {
    values.iter().sum::<f64>() / values.len() as f64
}

/// Recommends CPU (a percentile plus the margin) and memory (the peak or a percentile plus the
/// margin) from the histories, with the tutorial's advice and saving.
pub fn recommend(
    rs: &RightSizing,
    history: &UsageHistory,
    allocated: Resources,
    prices: Prices,
) -> Result<Recommendation, String> {
    let (cpu, memory) = (history.cpu.values(), history.memory.values());
    let points = cpu.len().min(memory.len());
    if points < rs.min_points {
        return Err(format!(
            "{points} of the {} history points it needs (right_sizing.min_points)",
            rs.min_points
        ));
    }
    let cpu_statistic = percentile(cpu, rs.cpu_percentile).unwrap_or_default();
    let memory_statistic = match rs.memory_percentile {
        Some(q) => percentile(memory, q).unwrap_or_default(),
        None => memory.iter().copied().fold(0.0, f64::max),
    };
    let recommended = Resources {
        cpu_cores: (cpu_statistic * (1.0 + rs.margin)).max(rs.min_cpu_cores),
        memory_bytes: (memory_statistic * (1.0 + rs.margin)).max(rs.min_memory_bytes),
        gpus: allocated.gpus,
    };
    let advice = |values: &[f64], allocated: f64| {
        let mean_utilisation = if allocated > 0.0 {
            mean(values) / allocated
        } else {
            0.0
        };
        ResourceAdvice {
            mean_utilisation,
            advice: Advice::of(mean_utilisation, rs),
        }
    };
    let gpu = (allocated.gpus > 0.0 && !history.gpu.is_empty())
        .then(|| advice(history.gpu.values(), allocated.gpus));
    let (savings_hourly, savings_percent) = savings(allocated, recommended, prices);
    Ok(Recommendation {
        points,
        recommended,
        cpu: advice(cpu, allocated.cpu_cores),
        memory: advice(memory, allocated.memory_bytes),
        gpu,
        current_hourly: allocation_cost(allocated, prices),
        recommended_hourly: allocation_cost(recommended, prices),
        savings_hourly,
        savings_percent,
    })
}

/// Used resources over the right-sizing window: CPU and GPU as means per step, memory as the
/// peak per step (a short peak is what an out-of-memory kill sees).
#[derive(Debug, Clone, PartialEq, serde::Deserialize, Serialize)]
pub struct UsageHistory {
    cpu: History,
    memory: History,
    gpu: History,
}

impl UsageHistory {
    fn new(rs: &RightSizing) -> UsageHistory {
        let series = |reduce| History::reducing(rs.resolution_ms, rs.window_ms, reduce);
        UsageHistory {
            cpu: series(Reduce::Mean),
            memory: series(Reduce::Max),
            gpu: series(Reduce::Mean),
        }
    }

    /// Adds what is used at `t`; true when a step closed.
    fn observe(&mut self, t: i64, used: Resources) -> bool {
        let closed = self.cpu.observe(t, used.cpu_cores);
        self.memory.observe(t, used.memory_bytes);
        self.gpu.observe(t, used.gpus);
        closed
    }

    fn fits(&self, rs: &RightSizing) -> bool {
        self.cpu.same_shape(&UsageHistory::new(rs).cpu)
    }
}

/// What a cost policy remembers: the usage history and the last evaluation.
#[derive(Debug, Clone, Default)]
pub struct CostState {
    history: Option<UsageHistory>,
    /// The last evaluation.
    pub last: Option<CostReport>,
}

/// One evaluation, as the API, the report, the status page and the metrics show it.
#[derive(Debug, Clone, Serialize)]
pub struct CostReport {
    /// When, ms.
    pub time_ms: i64,
    /// What is paid for.
    pub allocated: Resources,
    /// What is used.
    pub used: Resources,
    /// Inferences per second, when the policy has `inferences`.
    pub inferences_per_second: Option<f64>,
    /// OpenCost's figures.
    pub costs: Costs,
    /// Total hourly cost over the inferences of an hour, × 1,000; absent without inferences.
    pub cost_per_1k_inferences: Option<f64>,
    /// Right-sizing, once the history is long enough.
    pub right_sizing: Option<Recommendation>,
    /// Why there is no right-sizing yet.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub right_sizing_pending: Option<String>,
}

/// Why an evaluation produced no figures: the field whose query failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EvaluationError(pub String);

impl CostPolicy {
    /// Reads allocated and used resources at `now`, computes the costs and the advice, and
    /// records the usage into the history. A failed query fails the evaluation (figures from a
    /// partial read would be wrong, not approximate), except `inferences`, which only drops the
    /// cost per 1,000 inferences.
    pub fn evaluate(
        &self,
        state: &mut CostState,
        now: i64,
        query: &dyn QueryFn,
    ) -> Result<CostReport, EvaluationError> {
        let read = |sources: &Sources, side: &str| -> Result<Resources, EvaluationError> {
            let field = |s: &Source, name: &str| {
                s.read(query, now)
                    .map_err(|e| EvaluationError(format!("{side}.{name}: {e}")))
            };
            Ok(Resources {
                cpu_cores: field(&sources.cpu_cores, "cpu_cores")?,
                memory_bytes: field(&sources.memory_bytes, "memory_bytes")?,
                gpus: match &sources.gpus {
                    Some(s) => field(s, "gpus")?,
                    None => 0.0,
                },
            })
        };
        let allocated = read(&self.allocated, "allocated")?;
        let used = read(&self.used, "used")?;
        let inferences_per_second = match &self.inferences {
            None => None,
            Some(source) => match source.read(query, now) {
                Ok(v) => Some(v),
                Err(e) => {
                    tracing::debug!(policy = %self.name, error = %e, "inferences: no value");
                    None
                }
            },
        };
        let costs = opencost(allocated, used, self.prices);
        let cost_per_1k_inferences = inferences_per_second
            .filter(|r| *r > 0.0)
            .map(|r| costs.hourly.total / (r * 3600.0) * 1000.0);
        let history = state
            .history
            .get_or_insert_with(|| UsageHistory::new(&self.right_sizing));
        history.observe(now, used);
        let right_sizing = recommend(&self.right_sizing, history, allocated, self.prices);
        let report = CostReport {
            time_ms: now,
            allocated,
            used,
            inferences_per_second,
            costs,
            cost_per_1k_inferences,
            right_sizing_pending: right_sizing.as_ref().err().cloned(),
            right_sizing: right_sizing.ok(),
        };
        state.last = Some(report.clone());
        Ok(report)
    }

    /// The end of the history's last completed step (it moves when a step closes).
    pub fn history_end(state: &CostState) -> Option<i64> {
        state.history.as_ref().map(|h| h.cpu.end_ms())
    }

    fn history_file(&self, dir: &Path) -> PathBuf {
        crate::state::file_for(dir, "cost-history", &self.name)
    }

    /// Keeps `state`'s history only when it has this policy's resolution and window.
    pub fn adopt(&self, state: &mut CostState) {
        if state
            .history
            .as_ref()
            .is_some_and(|h| !h.fits(&self.right_sizing))
        {
            state.history = None;
        }
    }

    /// Loads a saved history, when it has this policy's resolution and window.
    pub fn restore_history(&self, state: &mut CostState, dir: &Path) {
        if let Some(saved) =
            crate::state::load::<UsageHistory>(&self.history_file(dir), "cost history")
        {
            state.history = Some(saved);
            self.adopt(state);
        }
    }

    /// Saves the history.
    pub fn save_history(&self, state: &CostState, dir: &Path) -> std::io::Result<()> {
        match &state.history {
            Some(history) => crate::state::save(&self.history_file(dir), history),
            None => Ok(()),
        }
    }
}

fn source(amount: &serde_saphyr::Spanned<Amount>, field: &str) -> Result<Source, BuildError> {
    let at = Some((amount.referenced.line(), amount.referenced.column()));
    match &amount.value {
        Amount::Number(n) if non_negative(*n) => Ok(Source::Number(*n)),
        Amount::Number(_) => Err((at, format!("{field}: must be a number >= 0 or PromQL"))),
        Amount::Query(text) => Ok(Source::Query(parse_query(text, at, field)?)),
    }
}

fn sources(r: &crate::config::ResourcesConfig, side: &str) -> Result<Sources, BuildError> {
    Ok(Sources {
        cpu_cores: source(&r.cpu_cores, &format!("{side}.cpu_cores"))?,
        memory_bytes: source(&r.memory_bytes, &format!("{side}.memory_bytes"))?,
        gpus: r
            .gpus
            .as_ref()
            .map(|g| source(g, &format!("{side}.gpus")))
            .transpose()?,
    })
}

fn non_negative(v: f64) -> bool {
    v.is_finite() && v >= 0.0
}

/// Validates one `cost_policies:` entry.
pub(super) fn build(c: &CostPolicyConfig, file: &Path) -> Result<CostPolicy, BuildError> {
    let plain = |m: String| (None, m);
    if c.name.is_empty() {
        return Err(plain("name: must be set".into()));
    }
    if c.interval.millis() <= 0 {
        return Err(plain("interval: must be longer than 0s".into()));
    }
    let p = c.prices;
    for (name, v) in [
        ("cpu_core_hour", p.cpu_core_hour),
        ("memory_gib_hour", p.memory_gib_hour),
        ("gpu_hour", p.gpu_hour),
    ] {
        if !non_negative(v) {
            return Err(plain(format!("prices.{name}: must be a number >= 0")));
        }
    }
    let r = &c.right_sizing;
    let (window, resolution) = (r.window.millis(), r.resolution.millis());
    if resolution <= 0 || window < resolution {
        return Err(plain("right_sizing: need 0 < resolution <= window".into()));
    }
    if window / resolution > 100_000 {
        return Err(plain(format!(
            "right_sizing: window / resolution is {} points; at most 100000 are kept, \
             raise resolution",
            window / resolution
        )));
    }
    if c.allocated.gpus.is_some() != c.used.gpus.is_some() {
        return Err(plain(
            "allocated.gpus and used.gpus: give both or neither (a GPU paid for with no use \
             given would count as all idle)"
                .into(),
        ));
    }
    let steps = (window / resolution) as usize;
    if r.min_points == 0 || r.min_points > steps {
        return Err(plain(format!(
            "right_sizing.min_points: must be between 1 and window / resolution ({steps})"
        )));
    }
    let in_unit = |v: f64| v > 0.0 && v <= 1.0;
    if !in_unit(r.cpu_percentile) {
        return Err(plain(
            "right_sizing.cpu_percentile: must be in (0, 1]".into(),
        ));
    }
    let memory_percentile = match r.memory {
        MemoryStatistic::Max => None,
        MemoryStatistic::Percentile(q) if in_unit(q) => Some(q),
        MemoryStatistic::Percentile(_) | MemoryStatistic::Unknown => {
            return Err(plain(
                "right_sizing.memory: must be max or a percentile in (0, 1]".into(),
            ));
        }
    };
    if !non_negative(r.margin) {
        return Err(plain("right_sizing.margin: must be a number >= 0".into()));
    }
    if !(non_negative(r.min_cpu_cores) && non_negative(r.min_memory_bytes)) {
        return Err(plain(
            "right_sizing: min_cpu_cores and min_memory_bytes must be numbers >= 0".into(),
        ));
    }
    if !(0.0 <= r.downscale_below && r.downscale_below < r.upscale_above) {
        return Err(plain(
            "right_sizing: need 0 <= downscale_below < upscale_above".into(),
        ));
    }
    Ok(CostPolicy {
        name: c.name.clone(),
        file: file.to_path_buf(),
        interval_ms: c.interval.millis(),
        prices: p.into(),
        allocated: sources(&c.allocated, "allocated")?,
        used: sources(&c.used, "used")?,
        inferences: c
            .inferences
            .as_ref()
            .map(|i| source(i, "inferences"))
            .transpose()?,
        right_sizing: RightSizing {
            window_ms: window,
            resolution_ms: resolution,
            cpu_percentile: r.cpu_percentile,
            memory_percentile,
            margin: r.margin,
            downscale_below: r.downscale_below,
            upscale_above: r.upscale_above,
            min_points: r.min_points,
            min_cpu_cores: r.min_cpu_cores,
            min_memory_bytes: r.min_memory_bytes,
        },
    })
}
