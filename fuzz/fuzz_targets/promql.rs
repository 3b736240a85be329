//! Parses arbitrary text as PromQL and evaluates it, instant and over a short range, on a small
//! fixed store (gauges, counters with a reset, a histogram, a stale marker). A 2 s deadline and a
//! sample limit bound each evaluation, so what runs longer than libFuzzer's timeout is a bug.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use torchwatch::promql::{Engine, Limits, parse};
use torchwatch::storage::{Labels, Storage, StorageOptions, stale_nan};

const STEP_MS: i64 = 15_000;
const POINTS: i64 = 40;

fn store() -> Storage {
    let storage = Storage::new(StorageOptions::default());
    let mut appender = storage.appender();
    let mut add = |pairs: &[(&str, &str)], value: &dyn Fn(i64) -> f64| {
        let labels = Labels::from_pairs(pairs.iter().copied());
        for i in 0..POINTS {
            appender
                .append(&labels, i * STEP_MS, value(i))
                .expect("the fixed store has room");
        }
    };
    for (instance, up) in [("a:9090", 1.0), ("b:9090", 0.0)] {
        add(
            &[("__name__", "up"), ("job", "node"), ("instance", instance)],
            &move |_| up,
        );
    }
    add(
        &[
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("code", "200"),
        ],
        &|i| (i * 10 % 250) as f64,
    );
    add(
        &[
            ("__name__", "http_requests_total"),
            ("job", "api"),
            ("code", "500"),
        ],
        &|i| i as f64 / 8.0,
    );
    for le in ["0.1", "0.5", "1", "+Inf"] {
        let bound: f64 = le.parse().unwrap_or(f64::INFINITY);
        add(
            &[
                ("__name__", "latency_seconds_bucket"),
                ("job", "api"),
                ("le", le),
            ],
            &move |i| (i as f64 * bound.min(2.0)).floor(),
        );
    }
    add(&[("__name__", "temperature"), ("room", "lab")], &|i| {
        if i == POINTS / 2 {
            stale_nan()
        } else {
            20.0 + (i % 7) as f64 / 4.0
        }
    });
    drop(appender);
    storage
}

fuzz_target!(|data: &[u8]| {
    static STORE: OnceLock<Storage> = OnceLock::new();
    let Ok(query) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(expr) = parse(query) else {
        return;
    };
    let db = STORE.get_or_init(store);
    let engine = Engine::default();
    let limits = || Limits {
        deadline: Some(Instant::now() + Duration::from_secs(2)),
        cancelled: None,
        max_samples: 1_000_000,
    };
    let end = POINTS * STEP_MS;
    let _ = engine.instant_limited(db, &expr, end, &limits());
    let _ = engine.range_limited(db, &expr, end - 20 * STEP_MS, end, STEP_MS, &limits());
});
