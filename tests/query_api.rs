//! The rule engine inside `serve`: scraping itself and a target protected by
//! bearer and basic authentication, staleness when series or targets go away, a recording rule on its
//! timer, and the Prometheus-shaped query API over the built-in store.

mod common;

use common::{Api, FakeTarget};
use serde_json::Value;

const TOKEN: &str = "s3cret-token-7f1c";
const PASSWORD: &str = "b4sic-passw0rd";

const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// "scraper:b4sic-passw0rd" in base64, as HTTP basic authentication sends it.
const BASIC: &str = "Basic c2NyYXBlcjpiNHNpYy1wYXNzdzByZA==";

// Multi-threaded: the `torchwatch query` runs below block this thread, and the fake target
// served from this runtime must keep answering scrapes meanwhile (1s timeout).
#[tokio::test(flavor = "multi_thread")]
async fn scrapes_records_and_answers_prometheus_queries() {
    let target = FakeTarget::start(
        vec![format!("Bearer {TOKEN}"), BASIC.to_string()],
        OPENMETRICS,
        "# TYPE fake_requests counter\nfake_requests_total{path=\"/a\",job=\"inner\"} 5\nfake_requests_total{path=\"/b\"} 7 # {trace_id=\"x\"} 1\n# EOF\n".into(),
    )
    .await;
    let dir = common::TempDir::new("query-api");
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, format!("{TOKEN}\n")).unwrap();
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: fake\n    interval: 1s\n    rules:\n      - record: job:fake_requests:sum\n        expr: sum by (job) (fake_requests_total)\n",
    )
    .unwrap();
    let extra = format!(
        "scrape:\n  interval: 1s\n  timeout: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\n      authorization:\n        credentials_file: {}\n      labels:\n        team: ml\n    - job_name: fake-basic\n      targets: ['{}']\n      basic_auth:\n        username: scraper\n        password_file: {}\nrules:\n  files: ['{}']\n  evaluation_interval: 1s\n",
        target.address,
        token_file.display(),
        target.address,
        password_file.display(),
        rules.display()
    );
    let server = common::start("query-api", &[common::ModelEntry::mlp("mlp")], &extra);
    server.wait_ready().await;
    let api = Api::new(&server);

    let up = api
        .eventually("up", "every target scraped", |v| {
            v.len() == 3 && v.iter().all(|(_, x)| *x == 1.0)
        })
        .await;
    let mut jobs: Vec<&str> = up.iter().map(|(m, _)| m["job"].as_str().unwrap()).collect();
    jobs.sort();
    assert_eq!(
        jobs,
        ["fake", "fake-basic", "torchwatch"],
        "bearer and basic auth both accepted"
    );

    // `torchwatch query` prints what the API answers, the way promtool does.
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["query", "instant", &server.base, "up{job=\"torchwatch\"}"])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(cli.status.success(), "{printed}");
    assert!(
        printed.starts_with(&format!(
            "up{{instance=\"{}\", job=\"torchwatch\"}} => 1 @[",
            server.base.trim_start_matches("http://")
        )),
        "{printed}"
    );
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args([
            "query",
            "range",
            &server.base,
            "up{job=\"torchwatch\"}",
            "--step",
            "1s",
        ])
        .output()
        .unwrap();
    let printed = String::from_utf8_lossy(&cli.stdout);
    assert!(
        printed.lines().count() >= 2 && printed.lines().nth(1).unwrap().starts_with("1 @["),
        "{printed}"
    );
    let cli = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["query", "instant", &server.base, "up{"])
        .output()
        .unwrap();
    assert_eq!(cli.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&cli.stderr).contains("bad_data"),
        "{cli:?}"
    );

    let scraped = api.vector("fake_requests_total{job=\"fake\"}").await;
    assert_eq!(scraped.len(), 2, "{scraped:?}");
    let a = scraped.iter().find(|(m, _)| m["path"] == "/a").unwrap();
    assert_eq!(a.1, 5.0);
    assert_eq!(a.0["job"], "fake");
    assert_eq!(
        a.0["exported_job"], "inner",
        "a clashing job label is kept as exported_job"
    );
    assert_eq!(a.0["instance"], target.address.as_str());
    assert_eq!(a.0["team"], "ml");

    let recorded = api
        .eventually(
            "job:fake_requests:sum",
            "recording rule ran for both jobs",
            |v| v.len() == 2,
        )
        .await;
    assert!(recorded.iter().all(|(_, v)| *v == 12.0), "{recorded:?}");
    let own = api.vector("torchwatch_build_info").await;
    assert_eq!(own.len(), 1, "self-scrape stores torchwatch's own metrics");

    // A series that leaves the exposition goes stale at the next scrape, not after 5 minutes.
    target.set(
        OPENMETRICS,
        "# TYPE fake_requests counter\nfake_requests_total{path=\"/a\",job=\"inner\"} 6\n# EOF\n",
    );
    api.eventually(
        "fake_requests_total{path=\"/b\"}",
        "vanished series marked stale",
        |v| v.is_empty(),
    )
    .await;
    assert_eq!(api.vector("fake_requests_total").await.len(), 2);

    // A malformed exposition fails that scrape only: up 0, its series stale, the reason logged.
    target.set(
        "text/plain; version=0.0.4",
        "fake_requests_total{path=\"/a\" 1\n",
    );
    api.eventually("up{job=~\"fake.*\"}", "malformed scrape sets up 0", |v| {
        v.len() == 2 && v.iter().all(|(_, x)| *x == 0.0)
    })
    .await;
    assert!(
        api.vector("fake_requests_total").await.is_empty(),
        "series of a down target are stale"
    );
    assert_eq!(api.vector("up{job=\"torchwatch\"}").await[0].1, 1.0);
    let failures: Vec<Value> = server
        .wait_for_logs("two scrape failures", |lines| {
            lines
                .iter()
                .filter(|l| l["event"] == "scrape_failed")
                .count()
                >= 2
        })
        .await
        .into_iter()
        .filter(|l| l["event"] == "scrape_failed")
        .collect();
    assert_eq!(
        failures.len(),
        2,
        "one log line per target and change of health: {failures:?}"
    );
    let reason = failures[0]["error"].as_str().unwrap();
    assert!(
        reason.starts_with("malformed exposition: line 1:"),
        "{reason}"
    );

    // query_range: a matrix with one point per step.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    let (status, body) = api
        .get(
            "/api/v1/query_range",
            &[
                ("query", "up{job=\"torchwatch\"}"),
                ("start", &format!("{}", now - 3.0)),
                ("end", &format!("{now}")),
                ("step", "1s"),
            ],
        )
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["data"]["resultType"], "matrix");
    let values = body["data"]["result"][0]["values"].as_array().unwrap();
    assert_eq!(values.len(), 4, "{body}");
    assert!(values.iter().all(|p| p[1] == "1"));

    // Metadata endpoints.
    let (_, series) = api.get("/api/v1/series", &[("match[]", "up")]).await;
    assert_eq!(series["data"].as_array().unwrap().len(), 3, "{series}");
    let (_, labels) = api.get("/api/v1/labels", &[]).await;
    let labels: Vec<&str> = labels["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for name in ["__name__", "instance", "job", "team", "exported_job"] {
        assert!(labels.contains(&name), "{name} missing from {labels:?}");
    }
    let (_, jobs) = api
        .get("/api/v1/label/job/values", &[("match[]", "up")])
        .await;
    assert_eq!(
        jobs["data"],
        serde_json::json!(["fake", "fake-basic", "torchwatch"])
    );

    // POST form, scalars, and Prometheus' error JSON for bad input.
    let response = api
        .client
        .post(format!("{}/api/v1/query", server.base))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("query=1%2B1&time=100")
        .send()
        .await
        .unwrap();
    let scalar: Value = response.json().await.unwrap();
    assert_eq!(
        scalar["data"],
        serde_json::json!({"resultType": "scalar", "result": [100.0, "2"]})
    );
    for (params, kind) in [
        (vec![("query", "sum(")], "bad_data"),
        (vec![("query", "up"), ("time", "yesterday")], "bad_data"),
    ] {
        let (status, body) = api.get("/api/v1/query", &params).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["status"], "error");
        assert_eq!(body["errorType"], kind);
    }
    let (status, body) = api
        .get(
            "/api/v1/query_range",
            &[
                ("query", "up"),
                ("start", "0"),
                ("end", "100000"),
                ("step", "1"),
            ],
        )
        .await;
    assert_eq!(status, 400, "{body}");
    let (status, body) = api.get("/api/v1/series", &[]).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("no match[] parameter provided"))
    );

    // The bearer token never shows up in what torchwatch writes.
    let log = std::fs::read_to_string(&server.log_file).unwrap();
    for secret in [TOKEN, PASSWORD] {
        assert!(!log.contains(secret));
        assert!(server.stderr_lines().iter().all(|l| !l.contains(secret)));
    }
}
