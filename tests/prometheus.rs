//! A real Prometheus (Debian's `prometheus` binary, run by this test on a temporary config and
//! data directory) scrapes torchwatch every second while a load runs; the figures it computes
//! must match what the test did. `promtool check metrics` must accept the exposition.

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{ModelEntry, TempDir, infer_body, references};
use serde_json::Value;

/// A `prometheus` process scraping one target, killed on drop.
struct Prometheus {
    _process: common::PrometheusProcess,
    api: QueryClient,
    _dir: TempDir,
}

/// Prometheus' query API at `base`: Prometheus itself, or torchwatch's own.
struct QueryClient {
    base: String,
}

fn start_prometheus(target: &str) -> Prometheus {
    let dir = TempDir::new("prometheus");
    let config = format!(
        "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  \
         - job_name: torchwatch\n    static_configs:\n      - targets: ['{target}']\n"
    );
    let config_path = dir.path().join("prometheus.yml");
    std::fs::write(&config_path, config).unwrap();
    let process = common::PrometheusProcess::start(&config_path, dir.path());
    Prometheus {
        api: QueryClient {
            base: process.base.clone(),
        },
        _process: process,
        _dir: dir,
    }
}

impl std::ops::Deref for Prometheus {
    type Target = QueryClient;

    fn deref(&self) -> &QueryClient {
        &self.api
    }
}

impl Prometheus {
    async fn wait_ready(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = reqwest::get(format!("{}/-/ready", self.base)).await;
            if response.is_ok_and(|r| r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "prometheus not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl QueryClient {
    /// Every series of an instant query; the query must succeed.
    async fn query_all(&self, expr: &str) -> Vec<Value> {
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", self.base),
            &[("query", expr)],
        )
        .unwrap();
        let response: Value = reqwest::get(url).await.unwrap().json().await.unwrap();
        assert_eq!(response["status"], "success", "{expr}: {response}");
        response["data"]["result"].as_array().unwrap().clone()
    }

    /// The single value of an instant query, or None when the result is empty.
    async fn query(&self, expr: &str) -> Option<f64> {
        let result = self.query_all(expr).await;
        assert!(
            result.len() <= 1,
            "{expr}: more than one series: {result:?}"
        );
        result
            .first()
            .map(|series| series["value"][1].as_str().unwrap().parse().unwrap())
    }

    /// Polls `expr` until `accept` holds for its value.
    async fn wait_for(&self, expr: &str, accept: impl Fn(f64) -> bool) -> f64 {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(value) = self.query(expr).await.filter(|v| accept(*v)) {
                return value;
            }
            assert!(
                Instant::now() < deadline,
                "{expr} never reached the expected value"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[tokio::test]
async fn prometheus_scrapes_and_computes_what_the_test_did() {
    let mut model = ModelEntry::mlp("mlp");
    model.cache = "{enabled: true, capacity: 1000, ttl: 5m}";
    // torchwatch also scrapes itself every second, so its own query API has the same data, and
    // runs a cost policy so the dashboard's cost row has series.
    let policies_dir = common::TempDir::new("prometheus-policies");
    let policies = policies_dir.path().join("cost.yml");
    std::fs::write(
        &policies,
        "cost_policies:\n  - name: box\n    interval: 1s\n    allocated: {cpu_cores: 2, memory_bytes: 4e9}\n    used:\n      cpu_cores: rate(process_cpu_seconds_total{job=\"torchwatch\"}[5s])\n      memory_bytes: process_resident_memory_bytes{job=\"torchwatch\"}\n    inferences: sum(rate(torchwatch_inference_count_total{job=\"torchwatch\"}[5s]))\n    right_sizing: {window: 1m, resolution: 1s, min_points: 2}\n",
    )
    .unwrap();
    let server = common::start(
        "prometheus-target",
        &[model],
        &format!(
            "scrape:\n  interval: 1s\npolicies:\n  files: ['{}']\n",
            policies.display()
        ),
    );
    server.wait_ready().await;
    let prometheus = start_prometheus(server.base.trim_start_matches("http://"));
    prometheus.wait_ready().await;
    assert_eq!(
        prometheus
            .wait_for(r#"up{job="torchwatch"}"#, |v| v == 1.0)
            .await,
        1.0
    );

    // Load for a few scrape intervals: per round one new input (a cache miss) and three
    // repeats of a fixed one (hits after its first request).
    let client = common::client();
    let case = &references("mlp")[0];
    let fixed = infer_body(&case.shape, &case.input);
    let (mut hits, mut misses, mut sent) = (0u32, 0u32, 0u32);
    let mut latencies = Vec::new();
    let load_until = Instant::now() + Duration::from_secs(5);
    let mut round = 0;
    // One malformed request, early, so the dashboard's error panels have a series.
    let bad = client
        .post(server.url("/v2/models/mlp/infer"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    sent += 1;
    while Instant::now() < load_until {
        let mut unique = case.input.clone();
        unique[0] = 1000.0 + round as f32; // never equal to the fixed input
        let bodies = [
            infer_body(&case.shape, &unique),
            fixed.clone(),
            fixed.clone(),
            fixed.clone(),
        ];
        for body in &bodies {
            let started = Instant::now();
            let response = client
                .post(server.url("/v2/models/mlp/infer"))
                .json(body)
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), 200);
            response.bytes().await.unwrap();
            latencies.push(started.elapsed().as_secs_f64());
            sent += 1;
        }
        misses += 1 + u32::from(round == 0);
        hits += 3 - u32::from(round == 0);
        round += 1;
    }

    // Prometheus has seen every request once its counter reaches the number sent.
    let total = prometheus
        .wait_for(r#"sum(torchwatch_requests_total{job="torchwatch"})"#, |v| {
            v >= f64::from(sent)
        })
        .await;
    assert_eq!(total, f64::from(sent));
    let rate = prometheus
        .query(r#"sum(rate(torchwatch_requests_total{job="torchwatch"}[30s]))"#)
        .await
        .unwrap();
    assert!(rate > 0.0, "request rate {rate}");

    let p99 = prometheus
        .query("histogram_quantile(0.99, sum by (le) (rate(torchwatch_request_duration_seconds_bucket[30s])))")
        .await
        .unwrap();
    let slowest = latencies.iter().copied().fold(0.0, f64::max);
    // The estimate interpolates inside a bucket, so it may exceed the slowest request by up to
    // that bucket's upper bound; it can never exceed the bound.
    let bounds = torchwatch::config::BucketsConfig::default().request_duration_seconds;
    let ceiling = bounds.iter().copied().find(|&b| b >= slowest).unwrap();
    assert!(
        p99 > 0.0 && p99 <= ceiling,
        "p99 {p99}, slowest request {slowest}, bucket bound {ceiling}"
    );

    let hit_ratio = prometheus
        .query(r#"sum(torchwatch_cache_requests_total{result="hit"}) / sum(torchwatch_cache_requests_total)"#)
        .await
        .unwrap();
    let expected = f64::from(hits) / f64::from(hits + misses);
    assert!(
        (hit_ratio - expected).abs() < 1e-9,
        "hit ratio {hit_ratio}, the test made {expected}"
    );
    eprintln!("{sent} requests, p99 {p99:.6} s (slowest {slowest:.6} s), hit ratio {hit_ratio:.4}");

    check_dashboard(&prometheus).await;
    // Grafana can use torchwatch itself as its Prometheus datasource: the same panels work.
    check_dashboard(&QueryClient {
        base: server.base.clone(),
    })
    .await;

    // promtool's linter accepts the exposition as scraped.
    let text = reqwest::get(server.url("/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let output = promtool.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && report.trim().is_empty(),
        "promtool check metrics:\n{report}"
    );
}

/// Metric names a PromQL expression reads.
fn metric_names(expr: &str) -> Vec<&str> {
    expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|t| t.starts_with("torchwatch_") || t.starts_with("process_") || *t == "ALERTS")
        .collect()
}

/// A dashboard query with its variables as "All" selects them.
fn substitute(expr: &str) -> String {
    expr.replace("$__rate_interval", "30s")
        .replace("$model", ".*")
        .replace("$job", ".*")
        .replace("$instance", ".*")
}

/// Runs every panel query of the Grafana dashboard, with its variables substituted, against
/// `prometheus` (or torchwatch's own query API): none may fail, and every panel whose metrics
/// exist must return data.
async fn check_dashboard(prometheus: &QueryClient) {
    let path = common::root().join("grafana/dashboards/torchwatch.json");
    let dashboard: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let mut checked = 0;
    for panel in dashboard["panels"].as_array().unwrap() {
        let title = panel["title"].as_str().unwrap();
        // Rows hold no queries.
        for target in panel["targets"].as_array().into_iter().flatten() {
            let raw = target["expr"].as_str().unwrap();
            // Every selector follows the job and instance variables, or picking one in Grafana
            // would leave other processes' series in the panel.
            for name in metric_names(raw).into_iter().filter(|n| *n != "ALERTS") {
                let selector = raw
                    .split(name)
                    .skip(1)
                    .map(|rest| rest.split('}').next().unwrap_or(""));
                for matchers in selector {
                    assert!(
                        matchers.starts_with("{job=~\"$job\",instance=~\"$instance\""),
                        "panel '{title}': {name} ignores $job or $instance: {raw}"
                    );
                }
            }
            let expr = substitute(raw);
            let result = prometheus.query_all(&expr).await;
            let mut present = true;
            for name in metric_names(&expr) {
                // A misspelt metric would leave a panel empty forever: every name must be one the
                // README documents (or Prometheus's own ALERTS).
                let family = name.strip_suffix("_bucket").unwrap_or(name);
                assert!(
                    name == "ALERTS" || readme.contains(&format!("| `{family}` |")),
                    "panel '{title}' reads {name}, which torchwatch does not export"
                );
                let series = prometheus
                    .query_all(&format!("count({{__name__=\"{name}\"}})"))
                    .await;
                present &= !series.is_empty();
            }
            if present {
                assert!(
                    !result.is_empty(),
                    "panel '{title}': {expr} returned no data"
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 20, "only {checked} queries in the dashboard");
    // The variables' queries find the job and the model.
    for variable in dashboard["templating"]["list"].as_array().unwrap() {
        if let Some(definition) = variable["definition"].as_str() {
            let definition = substitute(definition);
            let inner = definition
                .trim_start_matches("label_values(")
                .trim_end_matches(')');
            let (metric, label) = inner.split_once(", ").unwrap();
            let values = prometheus
                .query_all(&format!("group by ({label}) ({metric})"))
                .await;
            assert!(!values.is_empty(), "variable {definition} has no values");
        }
    }
}

/// `rules.datasource` sends rule queries to a Prometheus-compatible API (here
/// the real Prometheus scraping another torchwatch); results land in the
/// built-in store and are served by torchwatch's own query API.
#[tokio::test]
async fn rules_run_against_a_remote_prometheus_datasource() {
    let watched = common::start(
        "datasource-target",
        &[ModelEntry::mlp("mlp")],
        "scrape:\n  self: false\n",
    );
    watched.wait_ready().await;
    let prometheus = start_prometheus(watched.base.trim_start_matches("http://"));
    prometheus.wait_ready().await;
    prometheus
        .wait_for(r#"up{job="torchwatch"}"#, |v| v == 1.0)
        .await;

    let dir = TempDir::new("datasource-rules");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: remote\n    rules:\n      - record: remote:up:sum\n        expr: sum by (job) (up)\n      - record: remote:models:count\n        expr: count(torchwatch_model_ready == 1)\n",
    )
    .unwrap();
    let evaluator = common::start(
        "datasource-evaluator",
        &[ModelEntry::mlp("mlp")],
        &format!(
            "scrape:\n  self: false\nrules:\n  files: ['{}']\n  evaluation_interval: 1s\n  datasource:\n    url: {}\n",
            rules.display(),
            prometheus.base
        ),
    );
    evaluator.wait_ready().await;
    let client = common::client();
    let query = |expr: &'static str| {
        let client = client.clone();
        let url = reqwest::Url::parse_with_params(
            &format!("{}/api/v1/query", evaluator.base),
            &[("query", expr)],
        )
        .unwrap();
        async move {
            let body: Value = client.get(url).send().await.unwrap().json().await.unwrap();
            assert_eq!(body["status"], "success", "{body}");
            body["data"]["result"].as_array().unwrap().clone()
        }
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    let recorded = loop {
        let result = query("remote:up:sum").await;
        if !result.is_empty() {
            break result;
        }
        assert!(Instant::now() < deadline, "the remote rule never recorded");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(recorded[0]["metric"]["job"], "torchwatch");
    assert_eq!(recorded[0]["value"][1], "1");
    let models = loop {
        let result = query("remote:models:count").await;
        if !result.is_empty() {
            break result;
        }
        assert!(
            Instant::now() < deadline,
            "the second remote rule never recorded"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(models[0]["value"][1], "1");
    assert!(
        query("up").await.is_empty(),
        "the evaluator scrapes nothing itself: the value came from Prometheus"
    );
}
