//! `torchwatch scale simulate`: replays a load trace through scale policies before they are
//! trusted. Each policy gets its own simulated deployment and its own built-in store; the
//! simulator writes the series a live deployment would expose, and the policy decides over them
//! with its own PromQL through [`ScalePolicy::decide`], the code `serve` runs.
//!
//! The deployment: each replica serves `capacity` req/s and is ready `startup` after the decision
//! that added it; removed replicas stop at once (starting ones are cancelled first). Load above
//! the ready capacity queues, and the backlog carries over.
//!
//! Latency model (for `torchwatch_request_duration_seconds`): each ready replica is an M/M/1
//! server with service rate `capacity`, so at utilisation ρ a request spends on average
//! `1 / (capacity × (1 − ρ))` (ρ capped at 0.99), plus the time the backlog needs to drain at
//! full capacity; response times are exponential around that mean.

use std::sync::Arc;

use serde::Serialize;

use super::{PolicyState, Replicas, ScalePolicy};
use crate::promql::Engine;
use crate::rules::LocalQuery;
use crate::storage::{Labels, Storage, StorageOptions, stale_nan};

/// A load trace: offered requests per second over time.
#[derive(Debug, Clone)]
pub struct Trace {
    /// Where it came from.
    pub name: String,
    /// `(unix ms, req/s)`, strictly increasing in time.
    pub points: Vec<(i64, f64)>,
}

/// Reads CSV `timestamp,value` with a header; timestamps as Unix seconds, RFC 3339 or
/// `YYYY-MM-DD HH:MM:SS` (UTC). `scale` multiplies every value.
pub fn parse_trace(text: &str, name: &str, scale: f64) -> Result<Trace, String> {
    let mut points: Vec<(i64, f64)> = Vec::new();
    for (i, line) in text.lines().enumerate().skip(1) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        let at = |m: String| format!("{name}:{}: {m}", i + 1);
        let (time, value) = line
            .split_once(',')
            .ok_or_else(|| at("expected `timestamp,value`".into()))?;
        let t = parse_time(time.trim()).ok_or_else(|| {
            at(format!(
                "{time:?} is not Unix seconds, RFC 3339 or YYYY-MM-DD HH:MM:SS"
            ))
        })?;
        let v: f64 = value
            .trim()
            .parse()
            .ok()
            .filter(|v: &f64| v.is_finite() && *v >= 0.0)
            .ok_or_else(|| at(format!("{value:?} is not a non-negative number")))?;
        if points.last().is_some_and(|(last, _)| *last >= t) {
            return Err(at("timestamps must increase".into()));
        }
        points.push((t, v * scale));
    }
    if points.len() < 2 {
        return Err(format!(
            "{name}: a trace needs a header and at least two rows"
        ));
    }
    Ok(Trace {
        name: name.to_string(),
        points,
    })
}

fn parse_time(text: &str) -> Option<i64> {
    if let Ok(seconds) = text.parse::<f64>() {
        return Some((seconds * 1000.0).round() as i64);
    }
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(text) {
        return Some(t.timestamp_millis());
    }
    chrono::NaiveDateTime::parse_from_str(text, "%Y-%m-%d %H:%M:%S")
        .ok()
        .map(|t| t.and_utc().timestamp_millis())
}

impl Trace {
    /// Offered load at `t`, interpolated linearly between rows.
    fn at(&self, t: i64) -> f64 {
        let i = self.points.partition_point(|(pt, _)| *pt <= t);
        match (i.checked_sub(1).map(|j| self.points[j]), self.points.get(i)) {
            (Some((t0, v0)), Some(&(t1, v1))) => {
                v0 + (v1 - v0) * (t - t0) as f64 / (t1 - t0) as f64
            }
            (Some((_, v)), None) => v,
            (None, Some(&(_, v))) => v,
            (None, None) => 0.0,
        }
    }
}

/// How to simulate.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Requests per second one replica serves.
    pub capacity: f64,
    /// From decision to ready, ms.
    pub startup_ms: i64,
    /// A minute violates the SLO when offered load exceeds this share of ready capacity.
    pub slo_utilization: f64,
    /// Cost of one replica for an hour, for policies that set no `price_per_replica_hour`.
    pub price_per_replica_hour: f64,
    /// How often the simulated deployment is scraped, ms.
    pub scrape_interval_ms: i64,
    /// Keep one timeline row per trace step.
    pub timeline: bool,
}

/// One policy's results.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Policy name.
    pub name: String,
    /// Minutes with offered load above `slo_utilization` × ready capacity, or a backlog.
    pub slo_violation_minutes: f64,
    /// Replicas (starting ones included: they are paid for) × hours.
    pub replica_hours: f64,
    /// `replica_hours` × the policy's `price_per_replica_hour` (else the plan's).
    pub cost: f64,
    /// Decisions that changed the count.
    pub scaling_actions: u64,
    /// Actions in the opposite direction of the previous one within 10 minutes (flapping).
    pub reversals: u64,
    /// Most replicas at once.
    pub peak_replicas: u32,
    /// `[unix_seconds, offered_rps, ready_replicas, desired_replicas]` per trace step.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<Vec<[f64; 4]>>,
}

const REVERSAL_WINDOW_MS: i64 = 600_000;
const LATENCY_BUCKETS: [f64; 11] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

/// The series of one simulated deployment, with labels built once.
struct Series {
    requests: Labels,
    queue_depth: Labels,
    buckets: Vec<(f64, Labels)>,
    latency_sum: Labels,
    latency_count: Labels,
    /// Per replica: `up` and `process_cpu_seconds_total`.
    replicas: Vec<(Labels, Labels)>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    Labels::from_pairs(pairs.iter().copied())
}

impl Series {
    fn new(model: &str) -> Series {
        let base = [
            ("job", "torchwatch"),
            ("instance", "simulated"),
            ("model", model),
        ];
        let with = |name: &str, extra: &[(&str, &str)]| {
            let mut pairs = vec![("__name__", name)];
            pairs.extend_from_slice(&base);
            pairs.extend_from_slice(extra);
            labels(&pairs)
        };
        Series {
            requests: with("torchwatch_requests_total", &[("code", "200")]),
            queue_depth: with("torchwatch_queue_depth", &[]),
            buckets: LATENCY_BUCKETS
                .iter()
                .copied()
                .chain([f64::INFINITY])
                .map(|le| {
                    let text = crate::gofmt::verb_v(le);
                    (
                        le,
                        with(
                            "torchwatch_request_duration_seconds_bucket",
                            &[("le", &text)],
                        ),
                    )
                })
                .collect(),
            latency_sum: with("torchwatch_request_duration_seconds_sum", &[]),
            latency_count: with("torchwatch_request_duration_seconds_count", &[]),
            replicas: Vec::new(),
        }
    }

    fn replica(&mut self, i: usize) -> &(Labels, Labels) {
        while self.replicas.len() <= i {
            let instance = format!("replica-{}", self.replicas.len());
            let pairs = |name| {
                labels(&[
                    ("__name__", name),
                    ("job", "torchwatch"),
                    ("instance", instance.as_str()),
                ])
            };
            self.replicas
                .push((pairs("up"), pairs("process_cpu_seconds_total")));
        }
        &self.replicas[i]
    }
}

/// Cumulative counters of the simulated deployment.
#[derive(Default)]
struct Counters {
    requests: f64,
    latency_sum: f64,
    buckets: Vec<f64>,
    cpu: Vec<f64>,
}

/// Runs one policy over the trace.
pub fn run(policy: &ScalePolicy, trace: &Trace, plan: &Plan) -> Outcome {
    let storage = Arc::new(Storage::new(StorageOptions {
        retention_ms: 3_600_000,
        max_series: 100_000,
    }));
    let query = LocalQuery {
        engine: Engine {
            lookback_ms: 300_000,
            default_subquery_step_ms: 60_000,
        },
        storage: storage.clone(),
    };
    let model = policy
        .actuator
        .model
        .clone()
        .unwrap_or_else(|| policy.name.clone());
    let mut series = Series::new(&model);
    let mut counters = Counters {
        buckets: vec![0.0; series.buckets.len()],
        ..Default::default()
    };
    let mut state = PolicyState::default();
    // Ready times of the replicas, oldest first. The deployment starts sized for the first
    // row's load, so the comparison is not about a cold start every policy shares.
    let initial = (trace.points[0].1 / plan.capacity).ceil() as u32;
    let mut replicas: Vec<i64> =
        vec![i64::MIN; initial.clamp(policy.min.max(1), policy.max) as usize];
    let mut backlog = 0.0;
    let mut out = Outcome {
        name: policy.name.clone(),
        slo_violation_minutes: 0.0,
        replica_hours: 0.0,
        cost: 0.0,
        scaling_actions: 0,
        reversals: 0,
        peak_replicas: replicas.len() as u32,
        timeline: plan.timeline.then(Vec::new),
    };
    let mut last_action: Option<(i64, bool)> = None;
    let mut desired = replicas.len() as u32;
    let dt = plan.scrape_interval_ms;
    let (start, end) = (trace.points[0].0, trace.points[trace.points.len() - 1].0);
    let mut next_row = 0;
    let mut next_decision = start + policy.interval_ms;
    let mut next_truncate = start;
    let mut t = start;
    while t <= end {
        let offered = trace.at(t);
        let ready = replicas.iter().filter(|r| **r <= t).count();
        let capacity = ready as f64 * plan.capacity;
        let seconds = dt as f64 / 1000.0;
        let work = backlog + offered * seconds;
        let served = work.min(capacity * seconds);
        backlog = work - served;
        // Each tick accounts for the interval it starts; the trace's last instant starts none.
        if t < end {
            if offered > plan.slo_utilization * capacity || backlog > 1e-9 {
                out.slo_violation_minutes += seconds / 60.0;
            }
            out.replica_hours += replicas.len() as f64 * seconds / 3600.0;
        }
        record(
            &storage,
            &mut series,
            &mut counters,
            t,
            served,
            seconds,
            ready,
            backlog,
            plan,
        );
        while next_row < trace.points.len() && trace.points[next_row].0 <= t {
            if let Some(rows) = &mut out.timeline {
                rows.push([
                    trace.points[next_row].0 as f64 / 1000.0,
                    trace.points[next_row].1,
                    ready as f64,
                    f64::from(desired),
                ]);
            }
            next_row += 1;
        }
        if t >= next_decision {
            next_decision += policy.interval_ms;
            let actual = Replicas {
                current: replicas.len() as u32,
                ready: ready as u32,
            };
            // The simulator knows the real count, as the model actuator does.
            let decision = policy.decide(&mut state, t, &query, actual);
            desired = decision.desired_replicas;
            let from = replicas.len() as u32;
            if desired != from {
                let up = desired > from;
                out.scaling_actions += 1;
                if let Some((when, was_up)) = last_action
                    && was_up != up
                    && t - when <= REVERSAL_WINDOW_MS
                {
                    out.reversals += 1;
                }
                last_action = Some((t, up));
                resize(&mut replicas, desired as usize, t, plan.startup_ms);
                for gone in desired as usize..from as usize {
                    let (up_series, cpu) = series.replica(gone).clone();
                    let mut appender = storage.appender();
                    let _ = appender.append(&up_series, t, stale_nan());
                    let _ = appender.append(&cpu, t, stale_nan());
                    counters.cpu.truncate(desired as usize);
                }
                out.peak_replicas = out.peak_replicas.max(desired);
            }
            policy.carried_out(&mut state, t, from, desired);
        }
        if t >= next_truncate {
            storage.truncate(t);
            next_truncate = t + 600_000;
        }
        t += dt;
    }
    out.cost = out.replica_hours
        * policy
            .price_per_replica_hour
            .unwrap_or(plan.price_per_replica_hour);
    out
}

/// Grows with replicas ready after `startup_ms`, or shrinks, cancelling starting ones first.
fn resize(replicas: &mut Vec<i64>, to: usize, now: i64, startup_ms: i64) {
    while replicas.len() < to {
        replicas.push(now + startup_ms);
    }
    // Ready times only grow along the vector, so the last ones are the youngest.
    replicas.truncate(to);
}

/// Writes one scrape of the simulated deployment at `t`.
#[allow(clippy::too_many_arguments)]
fn record(
    storage: &Storage,
    series: &mut Series,
    counters: &mut Counters,
    t: i64,
    served: f64,
    seconds: f64,
    ready: usize,
    backlog: f64,
    plan: &Plan,
) {
    let capacity = ready as f64 * plan.capacity;
    let rate = served / seconds;
    let utilisation = if capacity > 0.0 {
        (rate / capacity).min(0.99)
    } else {
        0.99
    };
    let mean = 1.0 / (plan.capacity * (1.0 - utilisation)) + backlog / capacity.max(plan.capacity);
    counters.requests += served;
    counters.latency_sum += served * mean;
    for ((le, _), count) in series.buckets.iter().zip(&mut counters.buckets) {
        *count += served * (1.0 - (-le / mean).exp());
    }
    if counters.cpu.len() < ready {
        counters.cpu.resize(ready, 0.0);
    }
    for cpu in counters.cpu.iter_mut().take(ready) {
        *cpu += utilisation * seconds;
    }
    for i in 0..ready {
        series.replica(i);
    }
    let mut appender = storage.appender();
    let _ = appender.append(&series.requests, t, counters.requests);
    let _ = appender.append(&series.queue_depth, t, backlog);
    for ((_, labels), count) in series.buckets.iter().zip(&counters.buckets) {
        let _ = appender.append(labels, t, *count);
    }
    let _ = appender.append(&series.latency_sum, t, counters.latency_sum);
    let _ = appender.append(&series.latency_count, t, counters.requests);
    for (i, cpu) in counters.cpu.iter().enumerate().take(ready) {
        let (up, cpu_series) = &series.replicas[i];
        let _ = appender.append(up, t, 1.0);
        let _ = appender.append(cpu_series, t, *cpu);
    }
}

/// Runs every policy (in parallel, one thread each, as many as there are cores).
pub fn run_all(policies: &[ScalePolicy], trace: &Trace, plan: &Plan) -> Vec<Outcome> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut outcomes: Vec<Option<Outcome>> = vec![None; policies.len()];
    for (chunk, slots) in policies.chunks(threads).zip(outcomes.chunks_mut(threads)) {
        std::thread::scope(|scope| {
            let handles: Vec<_> = chunk
                .iter()
                .map(|p| scope.spawn(move || run(p, trace, plan)))
                .collect();
            for (slot, handle) in slots.iter_mut().zip(handles) {
                match handle.join() {
                    Ok(outcome) => *slot = Some(outcome),
                    Err(panic) => std::panic::resume_unwind(panic),
                }
            }
        });
    }
    outcomes.into_iter().flatten().collect()
}

/// The table printed on stdout.
pub fn table(outcomes: &[Outcome]) -> String {
    let mut out = format!(
        "{:<20} {:>18} {:>14} {:>10} {:>8} {:>10} {:>6}\n",
        "policy", "SLO-violation min", "replica-hours", "cost", "actions", "reversals", "peak"
    );
    for o in outcomes {
        out.push_str(&format!(
            "{:<20} {:>18.1} {:>14.1} {:>10.2} {:>8} {:>10} {:>6}\n",
            o.name,
            o.slo_violation_minutes,
            o.replica_hours,
            o.cost,
            o.scaling_actions,
            o.reversals,
            o.peak_replicas
        ));
    }
    out
}

/// An SVG of the offered load and each policy's ready capacity over time (needs timelines);
/// `last_ms` limits it to the trace's end.
pub fn plot(
    path: &std::path::Path,
    trace: &Trace,
    outcomes: &[Outcome],
    capacity: f64,
    last_ms: Option<i64>,
) -> Result<(), String> {
    use plotters::prelude::*;
    let fail = |e: &dyn std::fmt::Display| format!("--plot {}: {e}", path.display());
    let end = trace.points[trace.points.len() - 1].0;
    let start = last_ms.map_or(trace.points[0].0, |w| (end - w).max(trace.points[0].0));
    let start_s = start as f64 / 1000.0;
    let hours = |t: f64| (t - start_s) / 3600.0;
    let last = hours(end as f64 / 1000.0);
    let shown = |rows: &'_ [[f64; 4]]| -> Vec<[f64; 4]> {
        rows.iter().filter(|r| r[0] >= start_s).copied().collect()
    };
    let top = outcomes
        .iter()
        .filter_map(|o| o.timeline.as_deref())
        .flat_map(shown)
        .map(|row| (row[2] * capacity).max(row[1]))
        .fold(1.0, f64::max);
    let root = SVGBackend::new(path, (1400, 600)).into_drawing_area();
    root.fill(&WHITE).map_err(|e| fail(&e))?;
    let mut chart = ChartBuilder::on(&root)
        .caption(
            format!("{}: offered load and ready capacity", trace.name),
            ("sans-serif", 20),
        )
        .margin(10)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(0.0..last.max(1e-9), 0.0..top * 1.05)
        .map_err(|e| fail(&e))?;
    chart
        .configure_mesh()
        .x_desc("hours since the plot's start")
        .y_desc("requests per second")
        .draw()
        .map_err(|e| fail(&e))?;
    let offered = trace
        .points
        .iter()
        .filter(|(t, _)| *t >= start)
        .map(|(t, v)| (hours(*t as f64 / 1000.0), *v));
    chart
        .draw_series(LineSeries::new(offered, BLACK.stroke_width(2)))
        .map_err(|e| fail(&e))?
        .label("offered load")
        .legend(|(x, y)| PathElement::new([(x, y), (x + 20, y)], BLACK));
    for (i, o) in outcomes.iter().enumerate() {
        let Some(rows) = &o.timeline else { continue };
        let color = Palette99::pick(i).to_rgba();
        let ready = shown(rows)
            .into_iter()
            .map(|r| (hours(r[0]), r[2] * capacity));
        chart
            .draw_series(LineSeries::new(ready, color.stroke_width(1)))
            .map_err(|e| fail(&e))?
            .label(format!("{}: ready capacity", o.name))
            .legend(move |(x, y)| PathElement::new([(x, y), (x + 20, y)], color));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .draw()
        .map_err(|e| fail(&e))?;
    root.present().map_err(|e| fail(&e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traces_take_three_time_formats_and_interpolate() {
        let text =
            "timestamp,value\n1700000000,10\n2023-11-14T22:18:20Z,20\n2023-11-14 22:23:20,40\n";
        let trace = parse_trace(text, "t.csv", 2.0).unwrap();
        assert_eq!(
            trace.points,
            [
                (1_700_000_000_000, 20.0),
                (1_700_000_300_000, 40.0),
                (1_700_000_600_000, 80.0)
            ]
        );
        assert_eq!(trace.at(1_700_000_150_000), 30.0);
        assert_eq!(trace.at(0), 20.0, "before the first row: the first value");
        assert_eq!(trace.at(i64::MAX), 80.0);
    }

    #[test]
    fn bad_rows_name_the_line() {
        let err = |text: &str| parse_trace(text, "t.csv", 1.0).unwrap_err();
        assert_eq!(
            err("timestamp,value\n1,1\nyesterday,2\n"),
            "t.csv:3: \"yesterday\" is not Unix seconds, RFC 3339 or YYYY-MM-DD HH:MM:SS"
        );
        assert_eq!(
            err("timestamp,value\n1,1\n2,-1\n"),
            "t.csv:3: \"-1\" is not a non-negative number"
        );
        assert_eq!(
            err("timestamp,value\n2,1\n1,1\n"),
            "t.csv:3: timestamps must increase"
        );
        assert!(err("timestamp,value\n1,1\n").contains("at least two rows"));
    }
}
