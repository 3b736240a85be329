//! Alerting inside `serve`: an alert goes pending then firing as the scraped
//! value crosses its threshold, and `/api/v1/rules`, `/api/v1/alerts`, the
//! `ALERTS` series and the status page at `/` all show it.

mod common;

use std::time::{Duration, Instant};

use common::{Api, FakeTarget};
use serde_json::Value;

const TEXT: &str = "text/plain; version=0.0.4";

async fn wait_for_alert(api: &Api, state: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (status, body) = api.get("/api/v1/alerts", &[]).await;
        assert_eq!(status, 200, "{body}");
        if let Some(alert) = body["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["state"] == state)
        {
            return alert.clone();
        }
        assert!(Instant::now() < deadline, "no {state} alert: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn alerts_go_pending_then_firing_and_every_view_shows_them() {
    let target = FakeTarget::start(Vec::new(), TEXT, "queue_depth{model=\"mlp\"} 3\n".into()).await;
    let dir = common::TempDir::new("alerting");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        r#"groups:
  - name: queue
    interval: 1s
    rules:
      - record: model:queue_depth:max
        expr: max by (model) (queue_depth)
      - alert: QueueBacklog
        expr: model:queue_depth:max > 10
        for: 2s
        labels:
          severity: page
        annotations:
          summary: 'Queue of {{ $labels.model }} at {{ $value }} (> 10) on {{ $externalLabels.cluster }}'
"#,
    )
    .unwrap();
    let server = common::start(
        "alerting",
        &[common::ModelEntry::mlp("mlp")],
        &format!(
            "scrape:\n  interval: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\nrules:\n  files: ['{}']\n  evaluation_interval: 1s\n  external_labels:\n    cluster: eu1\n",
            target.address,
            rules.display()
        ),
    );
    server.wait_ready().await;
    let api = Api::new(&server);

    api.eventually("model:queue_depth:max", "recording rule ran", |v| {
        v.len() == 1 && v[0].1 == 3.0
    })
    .await;
    let (status, body) = api.get("/api/v1/rules", &[]).await;
    assert_eq!(status, 200, "{body}");
    let group = &body["data"]["groups"][0];
    assert_eq!(group["name"], "queue");
    assert_eq!(group["interval"], 1.0);
    assert_eq!(group["file"], rules.display().to_string());
    let recording = &group["rules"][0];
    assert_eq!(recording["type"], "recording");
    assert_eq!(recording["health"], "ok");
    assert_eq!(recording["query"], "max by (model) (queue_depth)");
    let alerting = &group["rules"][1];
    assert_eq!(alerting["type"], "alerting");
    assert_eq!(alerting["name"], "QueueBacklog");
    assert_eq!(alerting["duration"], 2.0);
    assert_eq!(alerting["state"], "inactive");
    assert_eq!(alerting["alerts"], serde_json::json!([]));
    assert_eq!(alerting["labels"], serde_json::json!({"severity": "page"}));

    target.set(TEXT, "queue_depth{model=\"mlp\"} 42\n");
    let pending = wait_for_alert(&api, "pending").await;
    assert_eq!(
        pending["labels"],
        serde_json::json!({"alertname": "QueueBacklog", "model": "mlp", "severity": "page"})
    );
    assert_eq!(pending["value"], "4.2e+01");
    assert_eq!(
        pending["annotations"]["summary"],
        "Queue of mlp at 42 (> 10) on eu1"
    );
    let firing = wait_for_alert(&api, "firing").await;
    assert_eq!(
        firing["activeAt"], pending["activeAt"],
        "the for clock is kept"
    );
    api.eventually(
        "ALERTS{alertname=\"QueueBacklog\", alertstate=\"firing\"}",
        "ALERTS series written",
        |v| v.len() == 1,
    )
    .await;
    let (_, only_alerts) = api.get("/api/v1/rules", &[("type", "alert")]).await;
    let rules_listed = only_alerts["data"]["groups"][0]["rules"]
        .as_array()
        .unwrap();
    assert_eq!(rules_listed.len(), 1);
    assert_eq!(rules_listed[0]["state"], "firing");
    let (status, bad) = api.get("/api/v1/rules", &[("type", "both")]).await;
    assert_eq!((status, bad["errorType"].as_str()), (400, Some("bad_data")));

    let page = api
        .client
        .get(format!("{}/", server.base))
        .send()
        .await
        .unwrap();
    assert!(
        page.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/html")
    );
    let html = page.text().await.unwrap();
    for expected in [
        "<h2>queue</h2>",
        "QueueBacklog",
        "model:queue_depth:max &gt; 10",
        "<b>1</b> alerts firing",
        "<td class=firing>firing</td>",
    ] {
        assert!(
            html.contains(expected),
            "{expected:?} missing from the status page:\n{html}"
        );
    }

    // The condition clears: the alert resolves and leaves /api/v1/alerts.
    target.set(TEXT, "queue_depth{model=\"mlp\"} 1\n");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, body) = api.get("/api/v1/alerts", &[]).await;
        if body["data"]["alerts"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "alert never resolved: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, body) = api.get("/api/v1/rules", &[("type", "alert")]).await;
    assert_eq!(body["data"]["groups"][0]["rules"][0]["state"], "inactive");
}
