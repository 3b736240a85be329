//! Cost of the exporter: metrics work per request (ns) and `/metrics` encoding with 1 and 10
//! models. Run with `cargo bench --bench metrics`. Targets: ≤ 1 µs of metrics work per request,
//! a scrape ≤ 2 ms with 10 models. The baseline is one bare atomic counter increment, measured in
//! the same run, so figures from a busy machine can still be compared as ratios.

use std::hint::black_box;
use std::time::{Duration, Instant};

use prometheus_client::metrics::counter::Counter;
use torchwatch::config::BucketsConfig;
use torchwatch::metrics::{CacheSnapshot, Metrics, ModelCollector, ModelSnapshot, ModelSource};

#[derive(Debug)]
struct Models(Vec<ModelSnapshot>);

impl ModelSource for Models {
    fn snapshot(&self) -> Vec<ModelSnapshot> {
        self.0.clone()
    }
}

fn time_per_op(iterations: u32, mut op: impl FnMut(u32)) -> Duration {
    for i in 0..iterations / 10 {
        op(i);
    }
    let started = Instant::now();
    for i in 0..iterations {
        op(i);
    }
    started.elapsed() / iterations
}

fn scrape_setup(models: usize) -> Metrics {
    let mut metrics = Metrics::new(&BucketsConfig::default());
    let names: Vec<String> = (0..models).map(|i| format!("model-{i}")).collect();
    for name in &names {
        let recorder = metrics.for_model(name);
        // Fill every bucket and a few status codes, as a busy server would have.
        for (i, micros) in [30u64, 80, 200, 400, 900, 2000, 4000, 9000, 20_000, 60_000]
            .iter()
            .enumerate()
        {
            let took = Duration::from_micros(*micros);
            recorder.record_request(
                if i % 5 == 0 { 400 } else { 200 },
                took,
                "0b5f6a9e-2c0e-4a58-9d6f-3f2b1c7e8a90",
            );
            recorder.record_queue_wait(took);
            recorder.record_batch(1 + i, took);
        }
        recorder.record_rejection("queue_full");
    }
    let snapshots = names
        .iter()
        .map(|name| ModelSnapshot {
            model: name.clone(),
            device: Some("cpu".to_owned()),
            ready: true,
            load_seconds: Some(0.2),
            instances: 2,
            queue_depth: 3,
            queue_capacity: 1024,
            cache: Some(CacheSnapshot {
                hits: 10,
                misses: 5,
                evicted_size: 1,
                evicted_expired: 2,
                entries: 12,
                capacity: 100,
                hit_ratio_estimates: vec![(25, 0.4), (50, 0.5), (100, 0.6), (200, 0.7), (400, 0.8)],
                recommended_capacity: Some(800),
                estimator_sampling_rate: 0.01,
            }),
        })
        .collect();
    metrics.register_collector(Box::new(ModelCollector(Models(snapshots))));
    metrics
}

fn main() {
    let baseline_counter = Counter::<u64>::default();
    let baseline = time_per_op(10_000_000, |_| {
        black_box(&baseline_counter).inc();
    });

    let metrics = Metrics::new(&BucketsConfig::default());
    let recorder = metrics.for_model("mlp");
    let ids: Vec<String> = (0..1024)
        .map(|i| format!("{i:08x}-2c0e-4a58-9d6f-3f2b1c7e8a90"))
        .collect();
    let took = Duration::from_micros(850);
    // What one request costs: its duration (with exemplar) and status counter, its queue wait,
    // and a whole forward pass's recording (an upper bound: batching shares it between requests).
    let per_request = time_per_op(2_000_000, |i| {
        let id = &ids[i as usize % ids.len()];
        recorder.record_request(200, black_box(took), id);
        recorder.record_queue_wait(black_box(took));
        recorder.record_batch(1, black_box(took));
    });

    println!(
        "metrics work per request: {} ns (baseline atomic increment {} ns, ratio {:.1}); target <= 1000 ns",
        per_request.as_nanos(),
        baseline.as_nanos(),
        per_request.as_secs_f64() / baseline.as_secs_f64()
    );

    for models in [1, 10] {
        let metrics = scrape_setup(models);
        for (format, openmetrics) in [("Prometheus text", false), ("OpenMetrics", true)] {
            let mut bytes = 0;
            let per_scrape = time_per_op(500, |_| {
                bytes = black_box(metrics.encode(openmetrics)).len();
            });
            println!(
                "/metrics encoding, {models:>2} model(s), {format}: {:.3} ms, {bytes} bytes; target <= 2 ms with 10 models",
                per_scrape.as_secs_f64() * 1e3
            );
        }
    }
}
