//! Notifications end to end: an alert fires, the webhook receiver (down for the
//! first two attempts) gets Alertmanager's payload exactly once, then the
//! resolved notice; an inhibited alert is never sent; retries are counted and
//! the secret URL never shows up.

mod common;

use std::time::{Duration, Instant};

use common::{Api, FakeTarget};

const TEXT: &str = "text/plain; version=0.0.4";
const SECRET_PATH: &str = "/hooks/T0KEN-9f8e7d";

#[tokio::test]
async fn webhook_gets_alertmanagers_payload_once_then_the_resolved_notice() {
    let (url, received) = common::receiver(SECRET_PATH, 2).await;
    let target = FakeTarget::start(Vec::new(), TEXT, "fake_value 20\n".into()).await;
    let dir = common::TempDir::new("notify");
    let url_file = dir.path().join("webhook-url");
    std::fs::write(&url_file, format!("{url}\n")).unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: fake_value > 10\n        labels:\n          severity: page\n        annotations:\n          summary: 'value {{ $value }}'\n      - alert: Warm\n        expr: fake_value > 5\n        labels:\n          severity: warning\n",
    )
    .unwrap();
    let server = common::start(
        "notify",
        &[common::ModelEntry::mlp("mlp")],
        &format!(
            "scrape:\n  interval: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\nrules:\n  files: ['{}']\nnotify:\n  route:\n    receiver: hook\n    group_by: [alertname]\n    group_wait: 0s\n    group_interval: 5s\n    repeat_interval: 1h\n  receivers:\n    - name: hook\n      webhook_configs:\n        - url_file: {}\n  inhibit_rules:\n    - source_matchers: ['severity=\"page\"']\n      target_matchers: ['severity=\"warning\"']\n      equal: [job]\n",
            target.address,
            rules.display(),
            url_file.display()
        ),
    );
    server.wait_ready().await;

    let firing = common::wait_for_bodies(&received, 1).await.remove(0);
    assert_eq!(
        received.lock().unwrap().refused,
        2,
        "two refused attempts before delivery"
    );
    assert_eq!(firing["version"], "4");
    assert_eq!(firing["status"], "firing");
    assert_eq!(firing["receiver"], "hook");
    assert_eq!(firing["groupKey"], "{}:{alertname=\"Hot\"}");
    assert_eq!(firing["truncatedAlerts"], 0);
    assert_eq!(
        firing["groupLabels"],
        serde_json::json!({"alertname": "Hot"})
    );
    assert_eq!(
        firing["commonLabels"],
        serde_json::json!({"alertname": "Hot", "instance": target.address, "job": "fake", "severity": "page"})
    );
    assert_eq!(
        firing["commonAnnotations"],
        serde_json::json!({"summary": "value 20"})
    );
    assert_eq!(firing["externalURL"], server.base);
    let alert = &firing["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"], firing["commonLabels"]);
    assert_eq!(alert["endsAt"], "0001-01-01T00:00:00Z");
    assert!(alert["startsAt"].as_str().unwrap().ends_with('Z'));
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .starts_with(&format!("{}/api/v1/query?query=fake_value", server.base)),
        "{alert}"
    );
    let fingerprint = alert["fingerprint"].as_str().unwrap();
    assert!(fingerprint.len() == 16 && fingerprint.chars().all(|c| c.is_ascii_hexdigit()));

    // The condition clears: one resolved notice, with the same fingerprint.
    target.set(TEXT, "fake_value 1\n");
    let bodies = common::wait_for_bodies(&received, 2).await;
    let resolved = &bodies[1];
    assert_eq!(resolved["status"], "resolved", "{bodies:?}");
    assert_eq!(resolved["alerts"][0]["status"], "resolved");
    assert_eq!(resolved["alerts"][0]["fingerprint"], fingerprint);
    assert_ne!(resolved["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
    assert_eq!(resolved["alerts"][0]["startsAt"], alert["startsAt"]);

    // Nothing more: no duplicate within the group interval and the evaluations after it.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        received.lock().unwrap().bodies.len(),
        2,
        "{:?}",
        received.lock().unwrap().bodies
    );

    let api = Api::new(&server);
    let metrics = api.metrics_text().await;
    for (outcome, count) in [("retry", 2), ("success", 2)] {
        let line = format!(
            "torchwatch_notifications_total{{receiver=\"hook\",integration=\"webhook\",outcome=\"{outcome}\"}} {count}"
        );
        assert!(metrics.contains(&line), "{line} missing");
    }
    // The webhook URL carries a token: it is in no log line, error or metric.
    let log = std::fs::read_to_string(&server.log_file).unwrap();
    assert!(log.contains("notification_retry"), "retries are logged");
    for text in [&log, &metrics, &server.stderr_lines().join("\n")] {
        assert!(!text.contains("T0KEN-9f8e7d"));
    }
}

#[tokio::test]
async fn alerts_are_forwarded_to_a_real_alertmanager() {
    let am = common::Alertmanager::start(
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        None,
    )
    .await;
    let target = FakeTarget::start(Vec::new(), TEXT, "fake_value 20\n".into()).await;
    let dir = common::TempDir::new("forward");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: fake_value > 10\n        labels:\n          severity: page\n        annotations:\n          summary: 'value {{ $value }}'\n",
    )
    .unwrap();
    let server = common::start(
        "forward",
        &[common::ModelEntry::mlp("mlp")],
        &format!(
            "scrape:\n  interval: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\nrules:\n  files: ['{}']\nnotify:\n  alertmanagers:\n    - url: {}\n",
            target.address,
            rules.display(),
            am.base
        ),
    );
    server.wait_ready().await;

    let deadline = Instant::now() + Duration::from_secs(30);
    let alert = loop {
        if let Some(a) = am.alerts("Hot").await.pop() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager never got the alert"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["labels"]["severity"], "page");
    assert_eq!(alert["labels"]["job"], "fake");
    assert_eq!(alert["annotations"]["summary"], "value 20");
    assert!(
        alert["generatorURL"]
            .as_str()
            .unwrap()
            .contains("/api/v1/query?query=fake_value")
    );
    // Prometheus' endsAt for a firing alert: four resend delays (4 minutes) ahead.
    let ends = chrono::DateTime::parse_from_rfc3339(alert["endsAt"].as_str().unwrap()).unwrap();
    let ahead = ends.timestamp() - chrono::Utc::now().timestamp();
    assert!((200..=245).contains(&ahead), "endsAt {ahead} s ahead");

    // Resolved: sent once with its resolution time, so Alertmanager drops it.
    target.set(TEXT, "fake_value 1\n");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !am.alerts("Hot").await.is_empty() {
        assert!(
            Instant::now() < deadline,
            "Alertmanager still holds the resolved alert"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = Api::new(&server).metrics_text().await;
    assert!(
        metrics.contains("torchwatch_notifications_total{receiver=\"alertmanager\",integration=\"alertmanager\",outcome=\"success\"} 2"),
        "one firing and one resolved post"
    );
}

#[tokio::test]
async fn slack_gets_a_templated_message_with_the_rules_fields() {
    let (url, received) = common::receiver(SECRET_PATH, 0).await;
    let target = FakeTarget::start(Vec::new(), TEXT, "queue_depth 42\n".into()).await;
    let dir = common::TempDir::new("slack");
    let url_file = dir.path().join("slack-url");
    std::fs::write(&url_file, &url).unwrap();
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: QueueDeep\n        metric: queue_depth\n        condition: greater_than\n        threshold: 10\n        annotations:\n          summary: 'queue at {{ $value }}, see {{ $externalURL }}'\n",
    )
    .unwrap();
    // Behind a proxy: links use the external URL (its trailing slash dropped), not the bind
    // address.
    let server = common::start(
        "slack",
        &[common::ModelEntry::mlp("mlp")],
        &format!(
            "  external_url: https://tw.example.com/ml/\nscrape:\n  interval: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\nrules:\n  files: ['{}']\nnotify:\n  route:\n    receiver: chat\n    group_wait: 0s\n    group_interval: 2s\n  receivers:\n    - name: chat\n      slack_configs:\n        - api_url_file: {}\n          channel: '#ml-alerts'\n",
            target.address,
            rules.display(),
            url_file.display()
        ),
    );
    server.wait_ready().await;
    let body = common::wait_for_bodies(&received, 1).await.remove(0);
    assert_eq!(body["channel"], "#ml-alerts");
    assert_eq!(body["username"], "torchwatch");
    let attachment = &body["attachments"][0];
    assert_eq!(attachment["title"], "[FIRING] QueueDeep");
    assert_eq!(
        attachment["text"],
        "queue at 42, see https://tw.example.com/ml"
    );
    assert_eq!(attachment["color"], "danger");
    assert_eq!(attachment["title_link"], "https://tw.example.com/ml");
    let fields: Vec<(String, String)> = attachment["fields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["title"].as_str().unwrap().to_string(),
                f["value"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        fields[..4],
        [
            ("Metric".to_string(), "queue_depth".to_string()),
            ("Condition".to_string(), "greater_than".to_string()),
            ("Threshold".to_string(), "10".to_string()),
            ("Value".to_string(), "42".to_string()),
        ]
    );
    assert_eq!(fields[4].0, "Time");
    assert!(fields[4].1.ends_with('Z'));

    // Slack's send_resolved defaults to false, as in Alertmanager: no "resolved" post.
    target.set(TEXT, "queue_depth 1\n");
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert_eq!(received.lock().unwrap().bodies.len(), 1);
}

#[tokio::test]
async fn firing_alerts_and_the_notification_log_survive_a_restart() {
    let (url, received) = common::receiver(SECRET_PATH, 0).await;
    let target = FakeTarget::start(Vec::new(), TEXT, "fake_value 20\n".into()).await;
    let dir = common::TempDir::new("restart");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: fake_value > 10\n        for: 3s\n",
    )
    .unwrap();
    let config = format!(
        "scrape:\n  interval: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\nrules:\n  files: ['{}']\nstate:\n  dir: {}\nnotify:\n  route:\n    receiver: hook\n    group_wait: 0s\n    group_interval: 1s\n    repeat_interval: 1h\n  receivers:\n    - name: hook\n      webhook_configs: [{{url: '{url}'}}]\n",
        target.address,
        rules.display(),
        dir.path().join("state").display()
    );
    let mut first = common::start("restart-1", &[common::ModelEntry::mlp("mlp")], &config);
    first.wait_ready().await;
    let firing = common::wait_for_bodies(&received, 1).await.remove(0);
    assert_eq!(firing["status"], "firing");
    let active_at = {
        let (_, body) = Api::new(&first).get("/api/v1/alerts", &[]).await;
        body["data"]["alerts"][0]["activeAt"].clone()
    };
    first.signal_term();
    assert!(first.wait_exit().success());

    let second = common::start("restart-2", &[common::ModelEntry::mlp("mlp")], &config);
    second.wait_ready().await;
    let api = Api::new(&second);
    // Back as firing at once, with the original activeAt: no new pending step.
    let deadline = Instant::now() + Duration::from_secs(20);
    let alert = loop {
        let (_, body) = api.get("/api/v1/alerts", &[]).await;
        if let Some(a) = body["data"]["alerts"].as_array().unwrap().first() {
            break a.clone();
        }
        assert!(Instant::now() < deadline, "alert not restored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(alert["state"], "firing");
    assert_eq!(alert["activeAt"], active_at);
    // Several evaluations and group intervals later: still only the one notification.
    api.eventually(
        "ALERTS{alertstate=\"firing\"}",
        "ALERTS written after restart",
        |v| v.len() == 1,
    )
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        received.lock().unwrap().bodies.len(),
        1,
        "no repeat before repeat_interval"
    );

    // The resolved notice, owed since before the restart, is sent when the condition clears.
    target.set(TEXT, "fake_value 1\n");
    let bodies = common::wait_for_bodies(&received, 2).await;
    assert_eq!(bodies[1]["status"], "resolved");
    assert_eq!(
        bodies[1]["alerts"][0]["fingerprint"],
        firing["alerts"][0]["fingerprint"]
    );
}

#[tokio::test]
async fn one_failing_integration_never_re_sends_the_others() {
    // Alertmanager's pipeline: dedup, retry and log per integration. The flaky webhook refuses
    // for several group intervals; the healthy one must still be told exactly once.
    let (healthy_url, healthy) = common::receiver("/healthy", 0).await;
    let (flaky_url, flaky) = common::receiver("/flaky", 12).await;
    let target = FakeTarget::start(Vec::new(), TEXT, "fake_value 20\n".into()).await;
    let dir = common::TempDir::new("notify-integrations");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: fake_value > 10\n",
    )
    .unwrap();
    let server = common::start(
        "notify-integrations",
        &[common::ModelEntry::mlp("mlp")],
        &format!(
            "scrape:\n  interval: 1s\n  jobs:\n    - job_name: fake\n      targets: ['{}']\nrules:\n  files: ['{}']\nnotify:\n  route:\n    receiver: team\n    group_wait: 0s\n    group_interval: 1s\n    repeat_interval: 1h\n  receivers:\n    - name: team\n      webhook_configs:\n        - url: '{healthy_url}'\n        - url: '{flaky_url}'\n",
            target.address,
            rules.display(),
        ),
    );
    server.wait_ready().await;
    let late = common::wait_for_bodies(&flaky, 1).await;
    assert_eq!(flaky.lock().unwrap().refused, 12);
    // Three more group intervals in which a shared log would have re-sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(late.len(), 1);
    assert_eq!(
        flaky.lock().unwrap().bodies.len(),
        1,
        "the flaky one, once, after it recovered"
    );
    let told = healthy.lock().unwrap().bodies.clone();
    assert_eq!(told.len(), 1, "the healthy one was re-sent: {told:?}");
    assert_eq!(told[0]["status"], "firing");
    // The flaky one was retried within each flush, and logged each time.
    let retries = |lines: &[serde_json::Value]| {
        lines
            .iter()
            .filter(|l| l["event"] == "notification_retry")
            .count()
    };
    let logged = retries(
        &server
            .wait_for_logs("three retries", |lines| retries(lines) >= 3)
            .await,
    );
    assert!(logged >= 3, "{logged} retries logged");
}
