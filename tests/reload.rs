//! Hot reload (`POST /-/reload` and SIGHUP): all or nothing, alerts of unchanged
//! rules keep their state, an invalid file leaves the running rules untouched,
//! and a target removed from the config goes stale at once.

mod common;

use std::time::{Duration, Instant};

use common::{Api, FakeTarget};
use serde_json::Value;

const TEXT: &str = "text/plain; version=0.0.4";

const ALERT: &str = "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: High\n        expr: fake_value > 10\n        for: 1h\n";

async fn rules(api: &Api) -> Vec<Value> {
    let (status, body) = api.get("/api/v1/rules", &[]).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
        .clone()
}

async fn reload(api: &Api) -> (u16, String) {
    let response = api
        .client
        .post(format!("{}/-/reload", api.base))
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

async fn metric(api: &Api, name: &str) -> f64 {
    let text = api.metrics_text().await;
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
        .unwrap_or_else(|| panic!("no {name}"))
        .parse()
        .unwrap()
}

#[tokio::test]
async fn reload_keeps_state_refuses_bad_files_and_retires_targets() {
    let target = FakeTarget::start(Vec::new(), TEXT, "fake_value 20\n".into()).await;
    let dir = common::TempDir::new("reload-rules");
    let rules_file = dir.path().join("rules.yml");
    std::fs::write(&rules_file, ALERT).unwrap();
    let scrape = format!(
        "scrape:\n  interval: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\n",
        target.address
    );
    let rules_section = format!("rules:\n  files: ['{}']\n", rules_file.display());
    let server = common::start(
        "reload",
        &[common::ModelEntry::mlp("mlp")],
        &format!("  enable_lifecycle: true\n{scrape}{rules_section}"),
    );
    server.wait_ready().await;
    let api = Api::new(&server);

    // The alert is pending (for: 1h), so its activeAt shows whether the clock survives.
    let deadline = Instant::now() + Duration::from_secs(20);
    let active_at = loop {
        let rules = rules(&api).await;
        if let Some(alert) = rules[0]["alerts"].as_array().and_then(|a| a.first()) {
            assert_eq!(alert["state"], "pending");
            break alert["activeAt"].clone();
        }
        assert!(
            Instant::now() < deadline,
            "alert never became pending: {rules:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };

    // A valid change: one more rule; the unchanged alert keeps its state.
    std::fs::write(
        &rules_file,
        format!("{ALERT}      - record: fake:doubled\n        expr: fake_value * 2\n"),
    )
    .unwrap();
    assert_eq!(reload(&api).await, (200, String::new()));
    let after = rules(&api).await;
    assert_eq!(after.len(), 2);
    assert_eq!(after[1]["name"], "fake:doubled");
    assert_eq!(
        after[0]["alerts"][0]["activeAt"], active_at,
        "the for clock survives a reload"
    );
    assert_eq!(after[0]["alerts"][0]["state"], "pending");
    api.eventually("fake:doubled", "new rule evaluated", |v| {
        v.len() == 1 && v[0].1 == 40.0
    })
    .await;
    assert_eq!(
        metric(&api, "torchwatch_config_last_reload_successful").await,
        1.0
    );

    // An invalid file: refused with file:line, old rules keep running, the gauge says so.
    std::fs::write(
        &rules_file,
        "groups:\n  - name: g\n    rules:\n      - record: broken\n        expr: 'sum(('\n",
    )
    .unwrap();
    let (status, body) = reload(&api).await;
    assert_eq!(status, 500, "{body}");
    let location = format!(
        "{}: 5:15: group \"g\", rule 1, \"broken\": could not parse expression",
        rules_file.display()
    );
    assert!(
        body.starts_with("failed to reload config: ") && body.contains(&location),
        "{body}"
    );
    assert_eq!(
        rules(&api).await.len(),
        2,
        "the running rules are untouched"
    );
    assert_eq!(
        metric(&api, "torchwatch_config_last_reload_successful").await,
        0.0
    );
    let logged = server
        .wait_for_logs("config_reload_failed", |lines| {
            lines.iter().any(|l| l["event"] == "config_reload_failed")
        })
        .await
        .into_iter()
        .find(|l| l["event"] == "config_reload_failed")
        .expect("config_reload_failed logged");
    assert!(
        logged["error"].as_str().unwrap().contains(&location),
        "{logged}"
    );

    // SIGHUP, like Prometheus: the target's job is removed, so its series go stale now,
    // not after the 5-minute lookback.
    std::fs::write(&rules_file, ALERT).unwrap();
    std::fs::write(
        server.config_path(),
        std::fs::read_to_string(server.config_path())
            .unwrap()
            .replace(&scrape, "scrape:\n  interval: 1s\n"),
    )
    .unwrap();
    assert_eq!(api.vector("up{job=\"fake\"}").await.len(), 1);
    server.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&api, "torchwatch_config_last_reload_successful").await != 1.0 {
        assert!(Instant::now() < deadline, "SIGHUP did not reload");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api.eventually("up{job=\"fake\"}", "removed target marked stale", |v| {
        v.is_empty()
    })
    .await;
    assert!(api.vector("fake_value").await.is_empty());
    // With its input gone the pending alert is dropped at the next evaluation, as in Prometheus.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let after = rules(&api).await;
        assert_eq!(after.len(), 1, "the reloaded rule file has one rule");
        if after[0]["alerts"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "pending alert kept without its input: {after:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn policy_names(api: &Api) -> Vec<String> {
    let (status, body) = api.get("/api/v1/scale", &[]).await;
    assert_eq!(status, 200, "{body}");
    body["data"]["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["policy"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn policy_files_reload_all_or_nothing_and_keep_a_policys_state() {
    let dir = common::TempDir::new("reload-policies");
    let file = dir.path().join("scale.yml");
    let policy = |name: &str| {
        format!(
            "  - name: {name}\n    interval: 1s\n    max_replicas: 3\n    metrics:\n      - query: vector(250)\n        target: {{type: average_value, value: 100}}\n"
        )
    };
    std::fs::write(&file, format!("scale_policies:\n{}", policy("web"))).unwrap();
    let server = common::start(
        "reload-policies",
        &[common::ModelEntry::mlp("mlp")],
        &format!(
            "  enable_lifecycle: true\npolicies:\n  files: ['{}']\n",
            file.display()
        ),
    );
    server.wait_ready().await;
    let api = Api::new(&server);
    assert_eq!(policy_names(&api).await, ["web"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    // Recommended 3, and decided again since (none up).
    while api.get("/api/v1/scale/web", &[]).await.1["data"]["decisions"]["none"] == 0 {
        assert!(Instant::now() < deadline, "web decided only once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // A broken file is refused with its place; the running policy stays.
    std::fs::write(
        &file,
        format!("scale_policies:\n{}    tolerence: 0.2\n", policy("web")),
    )
    .unwrap();
    let (status, body) = reload(&api).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains(&format!(
            "{}:8:5: scale policy \"web\": unknown field `tolerence`",
            file.display()
        )),
        "{body}"
    );
    assert_eq!(policy_names(&api).await, ["web"]);

    // A good one applies; `web` keeps the count it had reached (no restart from min_replicas).
    std::fs::write(
        &file,
        format!("scale_policies:\n{}{}", policy("web"), policy("api")),
    )
    .unwrap();
    let (_, before) = api.get("/api/v1/scale/web", &[]).await;
    assert_eq!(before["data"]["current_replicas"], 3, "{before}");
    let decided = |body: &Value| {
        let d = &body["data"]["decisions"];
        d["up"].as_u64().unwrap() + d["down"].as_u64().unwrap() + d["none"].as_u64().unwrap()
    };
    assert!(decided(&before) >= 2, "{before}");
    assert_eq!(reload(&api).await, (200, String::new()));
    assert_eq!(policy_names(&api).await, ["web", "api"]);
    let (_, after) = api.get("/api/v1/scale/web", &[]).await;
    assert_eq!(after["data"]["current_replicas"], 3, "{after}");
    assert!(
        decided(&after) >= decided(&before),
        "counters restarted: {after}"
    );
    assert_eq!(after["data"]["decisions"]["up"], 1, "{after}");

    // Cost policies reload with them: a broken one refuses the whole set, a good one runs, and
    // a reload keeps its usage history.
    let scale = format!("scale_policies:\n{}{}", policy("web"), policy("api"));
    let cost = |sizing: &str| {
        format!(
            "cost_policies:\n  - name: box\n    interval: 1s\n    allocated: {{cpu_cores: 2, memory_bytes: 1e9}}\n    used: {{cpu_cores: 1, memory_bytes: 5e8}}\n    right_sizing: {{window: 1m, resolution: 1s, min_points: 1{sizing}}}\n"
        )
    };
    std::fs::write(&file, format!("{scale}{}", cost(", margin: -1"))).unwrap();
    let (status, body) = reload(&api).await;
    assert_eq!(status, 500, "{body}");
    assert!(
        body.contains("cost policy \"box\": right_sizing.margin: must be a number >= 0"),
        "{body}"
    );
    assert_eq!(policy_names(&api).await, ["web", "api"]);
    // (points, time of the evaluation)
    let cost_state = || async {
        let (_, body) = api.get("/api/v1/cost", &[]).await;
        let last = &body["data"]["policies"][0]["last"];
        (
            last["right_sizing"]["points"].as_u64(),
            last["time_ms"].as_i64(),
        )
    };
    let cost_points = || async { cost_state().await.0 };
    assert_eq!(cost_points().await, None, "nothing applied");
    std::fs::write(&file, format!("{scale}{}", cost(""))).unwrap();
    assert_eq!(reload(&api).await, (200, String::new()));
    let deadline = Instant::now() + Duration::from_secs(20);
    while cost_points().await.unwrap_or(0) < 3 {
        assert!(Instant::now() < deadline, "the cost policy kept no history");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (before, evaluated) = cost_state().await;
    assert_eq!(reload(&api).await, (200, String::new()));
    // Read after the reloaded policy evaluated once: a fresh history would have no points yet.
    let after = loop {
        let (points, at) = cost_state().await;
        if at != evaluated {
            break points;
        }
        assert!(
            Instant::now() < deadline,
            "the reloaded cost policy never ran"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        after >= before,
        "history restarted: {before:?} -> {after:?}"
    );
}

#[tokio::test]
async fn state_changing_endpoints_are_off_without_the_lifecycle_switch() {
    let server = common::start("lifecycle-off", &[], "");
    let client = common::client();
    let reload = client
        .post(format!("{}/-/reload", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 403);
    assert!(
        reload
            .text()
            .await
            .unwrap()
            .starts_with("Lifecycle API is not enabled.")
    );
    let silence = client
        .post(format!("{}/api/v2/silences", server.base))
        .json(&serde_json::json!({
            "matchers": [{"name": "alertname", "value": "X", "isRegex": false}],
            "startsAt": "2026-01-01T00:00:00Z", "endsAt": "2099-01-01T00:00:00Z",
            "createdBy": "test", "comment": "off"
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(silence.status(), 403);
    // Reading stays open.
    let listed = client
        .get(format!("{}/api/v2/silences", server.base))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), 200);
    assert_eq!(listed.text().await.unwrap(), "[]");
}
