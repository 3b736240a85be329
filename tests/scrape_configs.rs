//! One Prometheus `scrape_configs` section with relabelling, written once, given to Debian's
//! `prometheus` and to torchwatch (inline in torchwatch.yaml, and as `prometheus_config_file`);
//! both scrape the same fake targets and must store series with exactly the same label sets.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::{FakeTarget, TempDir};
use serde_json::Value;

const EXPOSITION: &str = "# TYPE tw_requests_total counter
tw_requests_total{code=\"200\",job=\"inner\",instance=\"inside\"} 5
tw_requests_total{code=\"500\",exported_job=\"taken\",job=\"inner\"} 1
# TYPE tw_drop_me gauge
tw_drop_me 1
# TYPE tw_rewrite gauge
tw_rewrite{path=\"/a/b\"} 2
tw_rewrite{path=\"/c\",zone=\"exposed\"} 3
# TYPE tw_temp_celsius gauge
tw_temp_celsius 21.5
";

/// The scrape section both get; `DIR` is the test's directory, `A`..`C` the fake targets.
const SCRAPE_CONFIGS: &str = r#"scrape_configs:
  - job_name: static
    scrape_interval: 1s
    scrape_timeout: 1s
    params:
      module: [http_2xx]
    static_configs:
      - targets: ['A', 'B']
        labels: {__tmp_team: ml, zone: z1, drop_me: x}
      - targets: ['C']
        labels: {zone: z9}
    relabel_configs:
      - source_labels: [__address__]
        regex: '127\.0\.0\.1:(\d+)'
        target_label: port
        replacement: 'p${1}'
      - regex: '__tmp_(.*)'
        action: labelmap
      - source_labels: [__address__]
        modulus: 8
        target_label: shard
        action: hashmod
      - source_labels: [__param_module, __scrape_interval__]
        separator: '@'
        target_label: module
      - source_labels: [zone]
        regex: z9
        action: drop
      - regex: drop_me
        action: labeldrop
    metric_relabel_configs:
      - source_labels: [__name__]
        regex: 'tw_drop_.*'
        action: drop
      - source_labels: [__name__, path]
        regex: 'tw_rewrite;/([^/]*).*'
        target_label: route
        replacement: 'r_$1'
      - regex: path
        action: labeldrop
      - source_labels: [code]
        regex: '5..'
        target_label: __name__
        replacement: tw_errors_total
  - job_name: files
    scrape_interval: 1s
    scrape_timeout: 1s
    honor_labels: true
    file_sd_configs:
      - files: ['DIR/sd/*.json']
    relabel_configs:
      - regex: '__meta_(filepath)'
        action: labelmap
      - source_labels: [env]
        regex: 'prod|staging'
        action: keep
      - regex: '__.*|job|instance|env|filepath|rack'
        action: labelkeep
      - source_labels: [rack]
        target_label: instance
        replacement: 'rack-$1'
"#;

async fn get(base: &str, path: &str, params: &[(&str, &str)]) -> Option<Value> {
    let url = reqwest::Url::parse_with_params(&format!("{base}{path}"), params).unwrap();
    let response = common::client().get(url).send().await.ok()?;
    let body: Value = response.json().await.ok()?;
    (body["status"] == "success").then_some(body)
}

/// Label sets of `query` through `/api/v1/query`, and through `/api/v1/series` of `selector`.
async fn label_sets(
    base: &str,
    query: &str,
    selector: &str,
) -> (BTreeSet<String>, BTreeSet<String>) {
    let as_set = |items: Option<&Vec<Value>>| -> BTreeSet<String> {
        items
            .map(|items| items.iter().map(|i| i.to_string()).collect())
            .unwrap_or_default()
    };
    let queried = get(base, "/api/v1/query", &[("query", query)]).await;
    let queried = queried
        .as_ref()
        .and_then(|b| b["data"]["result"].as_array())
        .map(|r| r.iter().map(|s| s["metric"].clone()).collect::<Vec<_>>());
    let now = common::now_s();
    let start = format!("{}", now - 2.0);
    let end = format!("{now}");
    let series = get(
        base,
        "/api/v1/series",
        &[("match[]", selector), ("start", &start), ("end", &end)],
    )
    .await;
    (
        as_set(queried.as_ref()),
        as_set(series.as_ref().and_then(|b| b["data"].as_array())),
    )
}

/// Polls until both APIs of both servers show the expected number of `up` series, all up,
/// and the same label sets; returns them.
async fn compare(prometheus: &str, torchwatch: &str) -> BTreeSet<String> {
    let query = r#"{__name__=~"up|tw_.*|scrape_samples_post_metric_relabeling"}"#;
    let selector = query;
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (p_query, p_series) = label_sets(prometheus, query, selector).await;
        let (t_query, t_series) = label_sets(torchwatch, query, selector).await;
        let ups = |set: &BTreeSet<String>| {
            set.iter()
                .filter(|s| s.contains(r#""__name__":"up""#))
                .count()
        };
        let settled =
            ups(&p_query) == 3 && p_query == t_query && p_series == t_series && p_query == p_series;
        if settled {
            return p_query;
        }
        assert!(
            Instant::now() < deadline,
            "label sets differ:\nPrometheus query:  {p_query:#?}\ntorchwatch query:  {t_query:#?}\n\
             Prometheus series: {p_series:#?}\ntorchwatch series: {t_series:#?}"
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn values(base: &str, query: &str) -> BTreeSet<String> {
    let body = get(base, "/api/v1/query", &[("query", query)])
        .await
        .unwrap();
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| format!("{} {}", s["metric"], s["value"][1]))
        .collect()
}

#[tokio::test(flavor = "multi_thread")]
async fn relabelled_scrapes_give_prometheus_labels() {
    let mut targets = Vec::new();
    for _ in 0..3 {
        targets.push(
            FakeTarget::start(Vec::new(), "text/plain; version=0.0.4", EXPOSITION.into()).await,
        );
    }
    let dir = TempDir::new("scrape-configs");
    std::fs::create_dir_all(dir.path().join("sd")).unwrap();
    std::fs::write(
        dir.path().join("sd/targets.json"),
        format!(
            r#"[{{"targets": ["{}"], "labels": {{"env": "prod", "rack": "r1", "team": "x"}}}},
                {{"targets": ["{}"], "labels": {{"env": "dev"}}}}]"#,
            targets[2].address, targets[1].address
        ),
    )
    .unwrap();
    let section = SCRAPE_CONFIGS
        .replace("DIR", &dir.path().display().to_string())
        .replace("'A'", &format!("'{}'", targets[0].address))
        .replace("'B'", &format!("'{}'", targets[1].address))
        .replace("'C'", &format!("'{}'", targets[2].address));
    let prometheus_yml = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_yml,
        format!("global:\n  scrape_interval: 1s\n{section}"),
    )
    .unwrap();
    let prometheus = common::PrometheusProcess::start(&prometheus_yml, dir.path());

    // Inline: the section indented under torchwatch's scrape:.
    let inline: String = section.lines().map(|l| format!("  {l}\n")).collect();
    let torchwatch = common::start(
        "scrape-configs-inline",
        &[],
        &format!("scrape:\n  self: false\n{inline}"),
    );
    let expected = compare(&prometheus.base, &torchwatch.base).await;
    // What the relabelling must have made, so a change that breaks both alike still fails.
    let static_a = targets[0].address.rsplit(':').next().unwrap();
    assert!(
        expected
            .iter()
            .any(|s| s.contains(r#""__name__":"tw_requests_total""#)
                && s.contains(r#""exported_job":"inner""#)
                && s.contains(r#""exported_instance":"inside""#)
                && s.contains(&format!(r#""port":"p{static_a}""#))
                && s.contains(r#""module":"http_2xx@1s""#)
                && s.contains(r#""team":"ml""#)
                && s.contains(r#""shard":"#)),
        "{expected:#?}"
    );
    assert!(
        expected
            .iter()
            .any(|s| s.contains(r#""__name__":"tw_errors_total""#)
                && s.contains(r#""exported_exported_job":"inner""#)
                && s.contains(r#""exported_job":"taken""#)),
        "{expected:#?}"
    );
    assert!(
        expected
            .iter()
            .any(|s| s.contains(r#""route":"r_c""#) && s.contains(r#""exported_zone":"exposed""#)),
        "{expected:#?}"
    );
    assert!(
        expected
            .iter()
            .any(|s| s.contains(r#""instance":"rack-r1""#) && s.contains(r#""job":"inner""#)),
        "honor_labels keeps the exposition's job: {expected:#?}"
    );
    // The static job's metric relabelling dropped and rewrote; the files job has none.
    let static_series = expected.iter().filter(|s| s.contains(r#""job":"static""#));
    assert!(
        !static_series
            .clone()
            .any(|s| s.contains("drop_me") || s.contains(r#""path":"#))
    );
    assert!(static_series.count() > 0);
    assert!(
        !expected
            .iter()
            .any(|s| s.contains("z9") || s.contains(r#""env":"dev""#))
    );
    // Samples after metric relabelling, per target: the same figures.
    let post = "scrape_samples_post_metric_relabeling";
    assert_eq!(
        values(&prometheus.base, post).await,
        values(&torchwatch.base, post).await
    );
    drop(torchwatch);

    // The same file, read by torchwatch itself.
    let torchwatch = common::start(
        "scrape-configs-file",
        &[],
        &format!(
            "scrape:\n  self: false\n  prometheus_config_file: {}\n",
            prometheus_yml.display()
        ),
    );
    assert_eq!(compare(&prometheus.base, &torchwatch.base).await, expected);
}
