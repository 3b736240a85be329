//! Replay time of the built-in store's files under `state.dir` for 1 million samples (1,000
//! series of 1,000 points at a 15 s interval with a few ms of jitter; half counters, half
//! gauges), from the write-ahead log alone (a `kill -9` before any checkpoint) and from a
//! snapshot alone (after SIGTERM). The baseline, in the same run, appends the same samples
//! straight into an empty store, so the ratios hold on a busy machine. Also the bytes per
//! sample of both files. Run with `cargo bench --bench storage`.

use std::sync::Arc;
use std::time::Instant;
use torchwatch::storage::{Labels, Persistence, Storage, StorageOptions};

const SERIES: usize = 1000;
const POINTS: usize = 1000;

fn store() -> Arc<Storage> {
    Arc::new(Storage::new(StorageOptions {
        retention_ms: 1 << 40,
        max_series: 1_000_000,
    }))
}

fn fill(storage: &Storage) {
    let mut rng = fastrand::Rng::with_seed(7);
    let labels: Vec<Labels> = (0..SERIES)
        .map(|i| {
            Labels::from_pairs([
                ("__name__", format!("metric_{}", i % 50)),
                ("instance", format!("10.0.{}.{}:8080", i / 250, i % 250)),
                ("job", "bench".to_owned()),
            ])
        })
        .collect();
    let mut counters = vec![0.0f64; SERIES];
    let mut app = storage.appender();
    for step in 0..POINTS {
        for (i, l) in labels.iter().enumerate() {
            let t = 1_700_000_000_000 + step as i64 * 15_000 + rng.i64(0..5);
            let v = if i % 2 == 0 {
                counters[i] += rng.u32(0..100) as f64;
                counters[i]
            } else {
                rng.f64() * 100.0
            };
            app.append(l, t, v).expect("in order");
        }
    }
}

fn main() {
    let dir = std::env::temp_dir().join(format!("torchwatch-bench-storage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");

    let started = Instant::now();
    fill(&store());
    let append = started.elapsed().as_secs_f64();

    // Everything in the log: one flush, no checkpoint.
    let first = store();
    let (mut persistence, _) = Persistence::open(&dir, first.clone());
    fill(&first);
    persistence.flush().expect("flush");
    let wal_bytes = std::fs::metadata(dir.join("storage.wal"))
        .expect("wal")
        .len();
    drop(persistence);
    let second = store();
    // Opening replays the log, then checkpoints: the next open reads the snapshot only.
    let (persistence, from_wal) = Persistence::open(&dir, second.clone());
    drop(persistence);
    let snapshot_bytes = std::fs::metadata(dir.join("storage.snapshot"))
        .expect("snapshot")
        .len();
    let third = store();
    let (_persistence, from_snapshot) = Persistence::open(&dir, third.clone());
    assert_eq!(from_snapshot.samples, (SERIES * POINTS) as u64);
    assert_eq!(third.stats().samples, SERIES * POINTS);
    let _ = std::fs::remove_dir_all(&dir);

    let samples = (SERIES * POINTS) as f64;
    println!("storage: {SERIES} series x {POINTS} points = {samples} samples");
    println!(
        "  append into memory (baseline): {:>8.1} ms",
        append * 1000.0
    );
    for (what, seconds, bytes) in [
        ("replay from the log", from_wal.seconds, wal_bytes),
        (
            "replay from a snapshot",
            from_snapshot.seconds,
            snapshot_bytes,
        ),
    ] {
        println!(
            "  {what:<30} {:>8.1} ms  {:>5.2}x baseline  {:>6.2} bytes/sample ({:.1} MB)",
            seconds * 1000.0,
            seconds / append,
            bytes as f64 / samples,
            bytes as f64 / 1e6
        );
    }
}
