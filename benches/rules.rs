//! Rule engine benchmark, in one run against Debian's `promtool` as baseline:
//!
//! 1. `torchwatch rules test` vs `promtool test rules` on the same generated
//!    unit-test file: 100 rules (50 recording, 50 alerting) over 10,000 series
//!    with an hour of 15 s samples, evaluated every minute; whole process, median
//!    of several alternating runs.
//! 2. Scrape-and-ingest throughput: a 10,000-series exposition over HTTP into the
//!    store, against parsing alone.
//! 3. Bytes per stored sample after an hour of 15 s scrapes.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use torchwatch::scrape::{self, Format, TargetState};
use torchwatch::storage::{Storage, StorageOptions};

const METRICS: usize = 20;
const SERVICES: usize = 10;
const INSTANCES: usize = 50; // METRICS * SERVICES * INSTANCES = 10,000 series
const STEPS: usize = 240; // one hour of 15 s samples
const RUNS: usize = 5;

fn write_unit_test(dir: &Path) {
    let mut rules = String::from("groups:\n  - name: recording\n    rules:\n");
    for j in 0..50 {
        let _ = write!(
            rules,
            "      - record: service:bench_{j}:rate5m\n        expr: sum by (service) (rate(bench_metric_{}_total[5m]))\n",
            j % METRICS
        );
    }
    rules.push_str("  - name: alerting\n    rules:\n");
    for j in 0..50 {
        let _ = write!(
            rules,
            "      - alert: BenchHigh{j}\n        expr: rate(bench_metric_{}_total{{service=\"s{}\"}}[5m]) > {}\n        for: 5m\n        labels:\n          severity: page\n        annotations:\n          summary: '{{{{ $labels.instance }}}} at {{{{ $value | humanize }}}}'\n",
            j % METRICS,
            j % SERVICES,
            (j % 7) as f64 * 0.05
        );
    }
    std::fs::write(dir.join("bench-rules.yml"), rules).unwrap();

    let mut test = String::from(
        "rule_files: [bench-rules.yml]\nevaluation_interval: 1m\ntests:\n  - interval: 15s\n    input_series:\n",
    );
    for m in 0..METRICS {
        for s in 0..SERVICES {
            for i in 0..INSTANCES {
                let step = (m + s + i) % 13 + 1;
                let _ = write!(
                    test,
                    "      - series: 'bench_metric_{m}_total{{service=\"s{s}\", instance=\"i{i}\"}}'\n        values: '0+{step}x{STEPS}'\n"
                );
            }
        }
    }
    // Every series' rate is step/15 per second; an alert fires where that beats
    // its threshold, for all of the last 5 minutes of the hour.
    let firing = (0..50)
        .flat_map(|j| (0..INSTANCES).map(move |i| (j, i)))
        .filter(|&(j, i)| {
            let step = ((j % METRICS) + (j % SERVICES) + i) % 13 + 1;
            step as f64 / 15.0 > (j % 7) as f64 * 0.05
        })
        .count();
    let _ = write!(
        test,
        "    promql_expr_test:\n      - expr: count(ALERTS{{alertstate=\"firing\"}})\n        eval_time: 1h\n        exp_samples:\n          - value: {firing}\n"
    );
    std::fs::write(dir.join("bench-test.yml"), test).unwrap();
}

fn time_command(program: &str, args: &[&str], dir: &Path) -> Duration {
    let started = Instant::now();
    let out = Command::new(program)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let elapsed = started.elapsed();
    assert!(
        out.status.success(),
        "{program} failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    elapsed
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn rules_test_vs_promtool() {
    let dir = std::env::temp_dir().join(format!("torchwatch-bench-rules-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    write_unit_test(&dir);
    let ours_bin = env!("CARGO_BIN_EXE_torchwatch");
    let promtool = Command::new("promtool").arg("--version").output().is_ok();
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    for _ in 0..RUNS {
        ours.push(time_command(
            ours_bin,
            &["rules", "test", "bench-test.yml"],
            &dir,
        ));
        if promtool {
            theirs.push(time_command(
                "promtool",
                &["test", "rules", "bench-test.yml"],
                &dir,
            ));
        }
    }
    let ours = median(ours);
    println!(
        "rules test, 100 rules x 10,000 series x 1 h of 15 s samples, 61 evaluations (median of {RUNS}):"
    );
    println!("  torchwatch rules test   {:>8.2} s", ours.as_secs_f64());
    if promtool {
        let theirs = median(theirs);
        println!(
            "  promtool test rules     {:>8.2} s  (baseline)",
            theirs.as_secs_f64()
        );
        println!(
            "  ratio torchwatch/promtool {:.2}  (target <= 1.00: {})",
            ours.as_secs_f64() / theirs.as_secs_f64(),
            if ours <= theirs { "met" } else { "NOT met" }
        );
    } else {
        println!("  promtool not installed: no baseline (make test-deps installs it)");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

fn exposition() -> String {
    let mut body = String::with_capacity(1 << 20);
    for m in 0..METRICS {
        let _ = writeln!(
            body,
            "# HELP bench_metric_{m}_total A benchmark counter.\n# TYPE bench_metric_{m}_total counter"
        );
        for s in 0..SERVICES {
            for i in 0..INSTANCES {
                let _ = writeln!(
                    body,
                    "bench_metric_{m}_total{{service=\"s{s}\",instance=\"i{i}\"}} {}",
                    (m * 7 + s * 3 + i) as f64 * 1.5
                );
            }
        }
    }
    body
}

async fn scrape_and_ingest() {
    let body = exposition();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let served = body.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let b = served.clone();
            async move { ([("content-type", "text/plain; version=0.0.4")], b) }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    // Baseline: parsing alone, in memory.
    let rounds = 20;
    let started = Instant::now();
    let mut parsed = 0;
    for _ in 0..rounds {
        parsed += scrape::parse(&body, Format::Text).unwrap().len();
    }
    let parse_rate = parsed as f64 / started.elapsed().as_secs_f64();

    torchwatch::install_tls_provider();
    let config = torchwatch::config::Config::parse(
        &format!(
            "scrape:\n  self: false\n  scrape_configs:\n    - job_name: bench\n      \
             static_configs: [{{targets: ['{address}']}}]\n"
        ),
        "bench",
    )
    .unwrap();
    let own = scrape::OwnMetrics {
        address,
        tls: false,
        in_process: None,
    };
    let target = scrape::plan(&config.scrape, &own).unwrap().targets()[0].clone();
    let storage = Arc::new(Storage::new(StorageOptions {
        retention_ms: 2 * 3600 * 1000,
        max_series: 1_000_000,
    }));
    let mut state = TargetState::default();
    let started = Instant::now();
    let mut samples = 0;
    for step in 0..STEPS {
        let report = scrape::scrape_once(&target, &storage, &mut state, step as i64 * 15_000).await;
        assert!(report.error.is_none(), "{report:?}");
        samples += report.samples;
    }
    let ingest_rate = samples as f64 / started.elapsed().as_secs_f64();
    let stats = storage.stats();
    println!("scrape and ingest, 10,000-series text exposition over HTTP, {STEPS} scrapes:");
    println!("  parse only (baseline)   {:>12.0} samples/s", parse_rate);
    println!(
        "  scrape + parse + store  {:>12.0} samples/s  ({:.2} of parse-only)",
        ingest_rate,
        ingest_rate / parse_rate
    );
    println!(
        "store after 1 h of 15 s scrapes: {} series, {} samples, {:.1} MB, {:.1} bytes/sample (16 of them the raw timestamp and value)",
        stats.series,
        stats.samples,
        stats.bytes as f64 / 1e6,
        stats.bytes as f64 / stats.samples as f64
    );
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing we need.
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    rules_test_vs_promtool();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(scrape_and_ingest());
}
