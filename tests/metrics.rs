//! `/metrics` of a live torchwatch: every family is documented in the README's table with its
//! type and labels (and every documented family is exposed), the values follow the requests the
//! test made, OpenMetrics exemplars carry request ids from the JSON logs, and gzip works.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;

use common::{ModelEntry, infer_body, references};

/// `name -> (type, label names)`.
type Families = BTreeMap<String, (String, BTreeSet<String>)>;

/// Whether the README's row for `name` starts its meaning with `prefix`.
fn readme_row_says(name: &str, prefix: &str) -> bool {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    readme.lines().any(|l| {
        let cells: Vec<&str> = l.split('|').map(str::trim).collect();
        cells.len() > 4 && cells[1] == format!("`{name}`") && cells[4].starts_with(prefix)
    })
}

/// `name -> (type, labels)` from the README's metrics table, and the names only GPU hosts expose.
fn documented() -> (Families, BTreeSet<String>) {
    let readme = std::fs::read_to_string(common::root().join("README.md")).unwrap();
    let section = readme
        .split("## Metrics")
        .nth(1)
        .unwrap()
        .split("\n## ")
        .next()
        .unwrap();
    let rows: Vec<Vec<&str>> = section
        .lines()
        .filter(|l| l.starts_with("| `"))
        .map(|row| row.split('|').map(str::trim).collect())
        .collect();
    let gpu_only = rows
        .iter()
        .filter(|cells| cells[4].starts_with("GPU hosts only"))
        .map(|cells| cells[1].trim_matches('`').to_owned())
        .collect();
    let table = rows
        .iter()
        .map(|cells| {
            let labels = cells[3]
                .split(',')
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .map(str::to_owned)
                .collect();
            (
                cells[1].trim_matches('`').to_owned(),
                (cells[2].to_owned(), labels),
            )
        })
        .collect();
    (table, gpu_only)
}

/// `name -> (type, labels seen on its samples, without le)` from Prometheus text.
fn exposed(text: &str) -> Families {
    let mut families = Families::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            families.insert(name.to_owned(), (kind.to_owned(), BTreeSet::new()));
        }
    }
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let (series, _) = line.split_once(' ').unwrap();
        let (name, labels) = series.split_once('{').unwrap_or((series, ""));
        let family = families
            .keys()
            .filter(|f| {
                name == f.as_str()
                    || name
                        .strip_prefix(f.as_str())
                        .is_some_and(|s| ["_bucket", "_sum", "_count"].contains(&s))
            })
            .max_by_key(|f| f.len())
            .unwrap_or_else(|| panic!("sample {name} has no # TYPE line"))
            .clone();
        let seen = &mut families.get_mut(&family).unwrap().1;
        for pair in labels
            .trim_end_matches('}')
            .split(',')
            .filter(|p| !p.is_empty())
        {
            let key = pair.split_once('=').unwrap().0;
            if key != "le" {
                seen.insert(key.to_owned());
            }
        }
    }
    families
}

fn sample(text: &str, series: &str) -> f64 {
    common::sample(text, series).unwrap_or_else(|| panic!("no sample {series}"))
}

#[tokio::test]
async fn metrics_match_the_readme_and_the_traffic() {
    let mut cached = ModelEntry::mlp("mlp");
    cached.cache = "{enabled: true, capacity: 100, ttl: 5m}";
    // One rule group, so the rule engine's families carry samples.
    let rules_dir = common::TempDir::new("metrics-rules");
    let rules = rules_dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - record: up:sum\n        expr: sum(up)\n      - record: broken\n        expr: label_replace(vector(1), \"a\", \"b\", \"c\", \"(\")\n",
    )
    .unwrap();
    // And one predictive scale policy with a price, so every scale family (the forecast and the
    // cost too) has samples, and a cost policy with right-sizing.
    let policies = rules_dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        "scale_policies:\n  - name: p\n    interval: 1s\n    max_replicas: 2\n    algorithm: predictive\n    price_per_replica_hour: 0.5\n    metrics:\n      - query: vector(1)\n        target: {type: value, value: 1}\n    predictive: {model: mean, season: 1s, history: 1m, resolution: 1s}\ncost_policies:\n  - name: c\n    interval: 1s\n    allocated: {cpu_cores: 2, memory_bytes: 4e9, gpus: 1}\n    used: {cpu_cores: 0.5, memory_bytes: 1e9, gpus: 0.5}\n    inferences: vector(10)\n    right_sizing: {window: 1m, resolution: 1s, min_points: 1}\n",
    )
    .unwrap();
    let server = common::start(
        "metrics",
        &[cached],
        &format!(
            "scrape:\n  interval: 1s\nrules:\n  files: ['{}']\npolicies:\n  files: ['{}']\n",
            rules.display(),
            policies.display()
        ),
    );
    server.wait_ready().await;
    let client = common::client();
    let case = &references("mlp")[1];
    for _ in 0..3 {
        let response = client
            .post(server.url("/v2/models/mlp/infer"))
            .json(&infer_body(&case.shape, &case.input))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let bad = client
        .post(server.url("/v2/models/mlp/infer"))
        .body("{")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);

    let text = client.get(server.url("/metrics")).send().await.unwrap();
    assert_eq!(
        text.headers()["content-type"],
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let text = text.text().await.unwrap();

    let (documented, gpu_only) = documented();
    let exposed = exposed(&text);
    let gpu = sample(&text, "torchwatch_gpu_available") == 1.0;
    let undocumented: Vec<_> = exposed
        .keys()
        .filter(|k| !documented.contains_key(*k))
        .collect();
    let missing: Vec<_> = documented
        .keys()
        .filter(|k| !exposed.contains_key(*k) && (gpu || !gpu_only.contains(*k)))
        // Families that only exist once something was recorded in them.
        .filter(|k| !readme_row_says(k, "after the first notification"))
        .collect();
    assert!(
        undocumented.is_empty(),
        "exposed but not in the README: {undocumented:?}"
    );
    assert!(
        missing.is_empty(),
        "in the README but not exposed: {missing:?}"
    );
    for (name, (kind, labels)) in &exposed {
        let (doc_kind, doc_labels) = &documented[name];
        assert_eq!(kind, doc_kind, "{name}: type");
        // A family nothing was recorded in yet (no notification sent) shows no labels.
        let has_samples = text
            .lines()
            .any(|l| !l.starts_with('#') && l.starts_with(name.as_str()));
        if has_samples {
            assert_eq!(labels, doc_labels, "{name}: labels");
        }
    }

    // Three good requests with the same input: one forward pass (4 rows), two cache hits.
    assert_eq!(
        sample(
            &text,
            r#"torchwatch_requests_total{model="mlp",code="200"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"torchwatch_requests_total{model="mlp",code="400"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"torchwatch_requests_rejected_total{model="mlp",reason="bad_request"}"#
        ),
        1.0
    );
    // What has not happened yet is exported at 0, so rate() and absence alerts work from the
    // start.
    for series in [
        r#"torchwatch_requests_total{model="mlp",code="503"}"#,
        r#"torchwatch_requests_rejected_total{model="mlp",reason="queue_full"}"#,
        r#"torchwatch_requests_rejected_total{model="mlp",reason="model_not_ready"}"#,
    ] {
        assert_eq!(sample(&text, series), 0.0, "{series}");
    }
    assert_eq!(
        sample(
            &text,
            r#"torchwatch_request_duration_seconds_count{model="mlp"}"#
        ),
        4.0
    );
    assert_eq!(
        sample(&text, r#"torchwatch_execution_count_total{model="mlp"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"torchwatch_inference_count_total{model="mlp"}"#),
        4.0
    );
    assert_eq!(
        sample(&text, r#"torchwatch_batch_size_sum{model="mlp"}"#),
        4.0
    );
    assert_eq!(
        sample(
            &text,
            r#"torchwatch_cache_requests_total{model="mlp",result="hit"}"#
        ),
        2.0
    );
    assert_eq!(
        sample(
            &text,
            r#"torchwatch_cache_requests_total{model="mlp",result="miss"}"#
        ),
        1.0
    );
    // The group runs once the first scrapes are in (within a second here), and its
    // broken rule (an invalid regular expression) fails every time.
    let group = format!("{{rule_group=\"{};g\"}}", rules.display());
    let iterations_of = |text: &str| {
        sample(
            text,
            &format!("torchwatch_rule_group_iterations_total{group}"),
        )
    };
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let mut text = text;
    while iterations_of(&text) < 1.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the rule group never ran"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        text = common::Api::new(&server).metrics_text().await;
    }
    let iterations = iterations_of(&text);
    // Both counters move once per run, not atomically together: a scrape may fall between.
    let failures = sample(
        &text,
        &format!("torchwatch_rule_evaluation_failures_total{group}"),
    );
    assert!(
        failures >= 1.0 && (iterations - failures).abs() <= 1.0,
        "{failures} of {iterations}"
    );
    // Two rules per iteration: the failures' denominator.
    let evaluations = sample(&text, &format!("torchwatch_rule_evaluations_total{group}"));
    assert!(
        (evaluations - 2.0 * iterations).abs() <= 2.0 && evaluations >= 2.0,
        "{evaluations} evaluations in {iterations} iterations"
    );
    assert!(
        sample(
            &text,
            &format!("torchwatch_rule_group_last_evaluation_timestamp_seconds{group}")
        ) > 1.7e9
    );
    assert_eq!(
        sample(&text, r#"torchwatch_cache_entries{model="mlp"}"#),
        1.0
    );
    assert_eq!(sample(&text, r#"torchwatch_model_ready{model="mlp"}"#), 1.0);
    assert!(sample(&text, "process_resident_memory_bytes") > 1e7);
    assert_eq!(
        sample(&text, r#"torchwatch_queue_capacity{model="mlp"}"#),
        256.0
    );
    // Without a GPU: one log line at start, and no per-scrape complaint.
    let gpu_complaints = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .filter(|l| l["event"] == "gpu_metrics_unavailable")
            .count()
    };
    let expected = usize::from(!gpu);
    let gpu_lines = gpu_complaints(
        &server
            .wait_for_logs("the GPU line", |lines| gpu_complaints(lines) >= expected)
            .await,
    );
    assert_eq!(gpu_lines, usize::from(!gpu));

    // OpenMetrics, as Prometheus asks for it: exemplars name request ids from the logs.
    let openmetrics = client
        .get(server.url("/metrics"))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5",
        )
        .send()
        .await
        .unwrap();
    assert!(
        openmetrics.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let openmetrics = openmetrics.text().await.unwrap();
    assert!(openmetrics.ends_with("# EOF\n"));
    let exemplar_id = openmetrics
        .lines()
        .filter(|l| l.starts_with("torchwatch_request_duration_seconds_bucket"))
        .find_map(|l| {
            l.split("request_id=\"")
                .nth(1)?
                .split('"')
                .next()
                .map(str::to_owned)
        })
        .expect("an exemplar with a request id");
    let logged: BTreeSet<String> = server
        .wait_for_logs("the exemplar's request", |lines| {
            lines
                .iter()
                .any(|l| l["request_id"] == exemplar_id.as_str())
        })
        .await
        .iter()
        .filter_map(|l| l["request_id"].as_str().map(str::to_owned))
        .collect();
    assert!(
        logged.contains(&exemplar_id),
        "exemplar {exemplar_id} is not in the logs"
    );

    // The crate enables reqwest's transparent gzip (its scraper asks for gzip),
    // so this check uses a client that leaves the body as sent.
    let raw = reqwest::Client::builder().no_gzip().build().unwrap();
    let gzipped = raw
        .get(server.url("/metrics"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gzipped.headers()["content-encoding"], "gzip");
    let mut unzipped = String::new();
    flate2::read::GzDecoder::new(&gzipped.bytes().await.unwrap()[..])
        .read_to_string(&mut unzipped)
        .unwrap();
    assert!(unzipped.contains("# TYPE torchwatch_requests_total counter"));
}
