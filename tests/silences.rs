//! Silences through Alertmanager's v2 API, driven by Debian's `amtool` against a live
//! torchwatch: a firing alert is listed, a silence stops its repeated notifications (across a
//! restart with the same state.dir), and expiring it lets them resume.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

/// `amtool` with `args` against `base`; its stdout, or the test fails with its stderr.
fn amtool(base: &str, args: &[&str]) -> String {
    let out = Command::new("amtool")
        .arg(format!("--alertmanager.url={base}"))
        .args(args)
        .output()
        .expect("amtool runs");
    assert!(
        out.status.success(),
        "amtool {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn amtool_json(base: &str, args: &[&str]) -> Value {
    let mut all = vec!["-o", "json"];
    all.extend_from_slice(args);
    serde_json::from_str(&amtool(base, &all)).unwrap()
}

/// The number of notifications received, once it has not changed for `quiet`.
async fn settled(received: &std::sync::Mutex<common::Received>, quiet: Duration) -> usize {
    let mut count = received.lock().unwrap().bodies.len();
    let mut since = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(30);
    while since.elapsed() < quiet {
        assert!(Instant::now() < deadline, "notifications never stopped");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = received.lock().unwrap().bodies.len();
        if now != count {
            (count, since) = (now, Instant::now());
        }
    }
    count
}

#[tokio::test]
async fn amtool_silences_an_alert_across_a_restart_and_expiring_resumes_notifications() {
    if !common::amtool_available() {
        eprintln!("skipped: amtool is not installed");
        return;
    }
    let (url, received) = common::receiver("/hook", 0).await;
    let dir = common::TempDir::new("silences");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Loud\n        expr: vector(1)\n        labels:\n          severity: page\n",
    )
    .unwrap();
    // A repeat every 2 s: a silence that did not mute would let one through within 2.5 s.
    let config = format!(
        "  enable_lifecycle: true\nrules:\n  files: ['{}']\nstate:\n  dir: {}\nnotify:\n  route:\n    receiver: hook\n    group_by: [alertname]\n    group_wait: 0s\n    group_interval: 500ms\n    repeat_interval: 2s\n  receivers:\n    - name: hook\n      webhook_configs:\n        - url: {url}\n",
        rules.display(),
        dir.path().join("state").display()
    );
    let mut server = common::start("silences", &[], &config);
    server.wait_ready().await;
    common::wait_for_bodies(&received, 2).await;

    let alerts = amtool_json(&server.base, &["alert", "query"]);
    assert_eq!(alerts.as_array().unwrap().len(), 1, "{alerts}");
    assert_eq!(alerts[0]["labels"]["alertname"], "Loud");
    assert_eq!(alerts[0]["status"]["state"], "active");
    assert_eq!(alerts[0]["receivers"][0]["name"], "hook");

    let id = amtool(
        &server.base,
        &[
            "silence",
            "add",
            "alertname=Loud",
            "-c",
            "deploying",
            "-a",
            "ops",
            "-d",
            "1h",
        ],
    )
    .trim()
    .to_string();
    assert_eq!(uuid_version(&id), Some('4'), "{id}");
    let silenced = amtool_json(&server.base, &["alert", "query", "--silenced"]);
    assert_eq!(silenced[0]["status"]["state"], "suppressed", "{silenced}");
    assert_eq!(silenced[0]["status"]["silencedBy"][0], id.as_str());
    assert_eq!(
        amtool_json(&server.base, &["alert", "query"]),
        serde_json::json!([]),
        "amtool's default query shows active alerts only"
    );

    // The silence outlives a restart with the same state.dir.
    server.signal_term();
    assert!(server.wait_exit().success());
    let server = common::start("silences", &[], &config);
    server.wait_ready().await;
    assert_eq!(amtool(&server.base, &["silence", "query", "-q"]).trim(), id);
    // The rules' first evaluation waits for the first scrapes; then the alert is back, muted.
    let deadline = Instant::now() + Duration::from_secs(30);
    while amtool_json(&server.base, &["alert", "query", "--silenced"]) == serde_json::json!([]) {
        assert!(Instant::now() < deadline, "the alert did not come back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let listed = amtool(&server.base, &["silence", "query"]);
    assert!(
        listed.contains(&id) && listed.contains("alertname=\"Loud\"") && listed.contains("ops"),
        "{listed}"
    );
    let silences = amtool_json(&server.base, &["silence", "query"]);
    assert_eq!(silences[0]["status"]["state"], "active");
    assert_eq!(
        (&silences[0]["createdBy"], &silences[0]["comment"]),
        (&Value::from("ops"), &Value::from("deploying"))
    );
    assert_eq!(
        silences[0]["matchers"],
        serde_json::json!([{"name": "alertname", "value": "Loud", "isRegex": false, "isEqual": true}])
    );

    // Muted: nothing new across more than two repeat intervals (the count may still move
    // once, for a notification already on its way when the silence was made).
    let before = settled(&received, Duration::from_millis(600)).await;
    tokio::time::sleep(Duration::from_secs(5)).await;
    assert_eq!(
        received.lock().unwrap().bodies.len(),
        before,
        "notified while silenced"
    );
    // Read at scrape time: the silence and the one alert it mutes.
    let metrics = common::Api::new(&server).metrics_text().await;
    for (series, value) in [
        ("torchwatch_notification_silences{state=\"active\"}", 1.0),
        ("torchwatch_notification_silences{state=\"expired\"}", 0.0),
        ("torchwatch_notification_alerts_silenced", 1.0),
    ] {
        assert_eq!(common::sample(&metrics, series), Some(value), "{series}");
    }

    amtool(&server.base, &["silence", "expire", &id]);
    let bodies = common::wait_for_bodies(&received, before + 1).await;
    assert_eq!(bodies[before]["status"], "firing");
    assert_eq!(bodies[before]["alerts"][0]["labels"]["alertname"], "Loud");
    assert_eq!(amtool(&server.base, &["silence", "query", "-q"]).trim(), "");
    let expired = amtool_json(&server.base, &["silence", "query", "--expired"]);
    assert_eq!(expired[0]["id"], id.as_str());
    assert_eq!(expired[0]["status"]["state"], "expired");

    // Alertmanager's error shapes: a JSON string for a refused silence, 404 for an unknown id.
    let client = common::client();
    let refused = client
        .post(server.url("/api/v2/silences"))
        .json(&serde_json::json!({"matchers": [], "startsAt": "2030-01-01T00:00:00Z", "endsAt": "2030-01-01T01:00:00Z", "createdBy": "a", "comment": "c"}))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 400);
    assert_eq!(
        refused.json::<Value>().await.unwrap(),
        "invalid silence: at least one matcher required"
    );
    let unknown = client
        .delete(server.url("/api/v2/silence/00000000-0000-4000-8000-000000000000"))
        .send()
        .await
        .unwrap();
    assert_eq!(unknown.status(), 404);
    let status: Value = client
        .get(server.url("/api/v2/status"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        status["cluster"],
        serde_json::json!({"status": "disabled", "peers": []})
    );
    assert!(
        status["config"]["original"]
            .as_str()
            .unwrap()
            .contains("receiver: \"hook\""),
        "{status}"
    );
    let groups: Value = client
        .get(server.url("/api/v2/alerts/groups"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        groups[0]["labels"],
        serde_json::json!({"alertname": "Loud"})
    );
    assert_eq!(groups[0]["receiver"]["name"], "hook");
    assert_eq!(groups[0]["alerts"][0]["status"]["state"], "active");
}

/// The version digit of a UUID, if `id` is one.
fn uuid_version(id: &str) -> Option<char> {
    let parts: Vec<&str> = id.split('-').collect();
    let shape = [8, 4, 4, 4, 12];
    (parts.len() == 5
        && parts
            .iter()
            .zip(shape)
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit())))
    .then(|| parts[2].chars().next())
    .flatten()
}
