//! `torchwatch profile`: forward latency of a model on random inputs, per batch size, with exact
//! percentiles over every timed iteration.

use std::path::Path;
use std::time::{Duration, Instant};

use serde::Serialize;
use tch::{Device, Kind, Tensor};

use crate::model::{self, Model};

/// What to measure.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Dimensions of one sample, without the batch dimension.
    pub input_shape: Vec<i64>,
    /// Batch sizes to measure, in order.
    pub batch_sizes: Vec<i64>,
    /// Timed forward passes per batch size.
    pub iterations: usize,
    /// Untimed passes before timing, so allocator and kernel caches are warm.
    pub warmup: usize,
    /// LibTorch intra-op threads.
    pub threads: usize,
}

/// Latency statistics of one batch size, in seconds.
#[derive(Debug, Clone, Serialize)]
pub struct LatencyStats {
    /// Rows per forward pass.
    pub batch_size: i64,
    /// Timed passes.
    pub count: usize,
    /// Sum of all latencies.
    pub sum: f64,
    /// Mean latency.
    pub avg: f64,
    /// Fastest pass.
    pub min: f64,
    /// Slowest pass.
    pub max: f64,
    /// Median (nearest rank).
    pub p50: f64,
    /// 95th percentile (nearest rank).
    pub p95: f64,
    /// 99th percentile (nearest rank).
    pub p99: f64,
    /// Samples per second at the mean latency: `batch_size / avg`.
    pub throughput: f64,
}

/// Computes the statistics of `latencies` (any order); `None` when empty.
pub fn stats(batch_size: i64, latencies: &[Duration]) -> Option<LatencyStats> {
    if latencies.is_empty() {
        return None;
    }
    let mut seconds: Vec<f64> = latencies.iter().map(Duration::as_secs_f64).collect();
    seconds.sort_by(f64::total_cmp);
    let count = seconds.len();
    // Nearest rank: the smallest value with at least p% of the samples at or below it.
    let rank = |p: f64| seconds[((p / 100.0 * count as f64).ceil() as usize).clamp(1, count) - 1];
    let sum: f64 = seconds.iter().sum();
    let avg = sum / count as f64;
    Some(LatencyStats {
        batch_size,
        count,
        sum,
        avg,
        min: seconds[0],
        max: seconds[count - 1],
        p50: rank(50.0),
        p95: rank(95.0),
        p99: rank(99.0),
        throughput: batch_size as f64 / avg,
    })
}

/// Loads the model and measures every batch size of the plan.
pub fn run(path: &Path, device: Device, plan: &Plan) -> anyhow::Result<Vec<LatencyStats>> {
    model::set_threads(plan.threads);
    let model = Model::load(path, device)?;
    let mut results = Vec::new();
    for &batch_size in &plan.batch_sizes {
        let mut shape = vec![batch_size];
        shape.extend_from_slice(&plan.input_shape);
        let input = Tensor::f_randn(shape.as_slice(), (Kind::Float, model.device()))?;
        let inputs = [input];
        for _ in 0..plan.warmup {
            model.forward_tensors(&inputs)?;
        }
        model.synchronize();
        let mut latencies = Vec::with_capacity(plan.iterations);
        for _ in 0..plan.iterations {
            let started = Instant::now();
            model.forward_tensors(&inputs)?;
            model.synchronize();
            latencies.push(started.elapsed());
        }
        results.extend(stats(batch_size, &latencies));
    }
    Ok(results)
}

/// Formats results as an aligned table with milliseconds.
pub fn table(results: &[LatencyStats]) -> String {
    let mut out = format!(
        "{:>5} {:>6} {:>10} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>12}\n",
        "batch",
        "count",
        "sum_ms",
        "avg_ms",
        "min_ms",
        "max_ms",
        "p50_ms",
        "p95_ms",
        "p99_ms",
        "samples/s"
    );
    for r in results {
        let ms = |s: f64| s * 1e3;
        out.push_str(&format!(
            "{:>5} {:>6} {:>10.3} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>9.4} {:>12.1}\n",
            r.batch_size,
            r.count,
            ms(r.sum),
            ms(r.avg),
            ms(r.min),
            ms(r.max),
            ms(r.p50),
            ms(r.p95),
            ms(r.p99),
            r.throughput
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_exact_nearest_rank() {
        let latencies: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        let s = stats(8, &latencies).unwrap();
        assert_eq!(s.count, 100);
        assert_eq!(s.min, 0.001);
        assert_eq!(s.max, 0.1);
        assert_eq!(s.p50, 0.05);
        assert_eq!(s.p95, 0.095);
        assert_eq!(s.p99, 0.099);
        assert!((s.sum - 5.05).abs() < 1e-9);
        assert!((s.avg - 0.0505).abs() < 1e-12);
        assert!((s.throughput - 8.0 / 0.0505).abs() < 1e-6);
    }

    #[test]
    fn a_single_sample_is_every_percentile() {
        let s = stats(1, &[Duration::from_micros(250)]).unwrap();
        assert_eq!((s.p50, s.p95, s.p99), (0.00025, 0.00025, 0.00025));
        assert!(stats(1, &[]).is_none());
    }
}
