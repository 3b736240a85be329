//! Faults, each with its outcome asserted: a model that raises on some inputs (its batch-mates
//! still get their answers), a scrape target that accepts the connection and never answers, an
//! SMTP relay and an Alertmanager that are down and come back, and `kill -9` while a
//! notification is in flight.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{Api, ModelEntry, infer_body, output_data, sample};
use serde_json::Value;
use tokio::io::AsyncReadExt;

/// What picky answers for a request with one value negative (its TorchScript `raise`).
const PICKY_ERROR: &str = "model rejected the input: negative input: picky takes values >= 0";

/// Request `i` of a burst: every eighth has a negative value.
fn picky_input(i: usize) -> [f32; 4] {
    let base = i as f32;
    if i % 8 == 3 {
        [base, -1.0, 0.5, 2.0]
    } else {
        [base, 1.0, 0.5, 2.0]
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_that_raises_fails_only_the_requests_that_made_it_raise() {
    // A long delay makes batches form reliably; the batcher only waits for announced requests.
    let picky = ModelEntry {
        batching: "{enabled: true, max_batch_size: 16, max_queue_delay: 200ms, queue_capacity: 256}",
        ..ModelEntry::picky("picky")
    };
    let server = common::start("faults-model", &[picky], "");
    server.wait_ready().await;
    let client = common::client();
    let url = server.url("/v2/models/picky/infer");

    let response = client
        .post(&url)
        .json(&infer_body(&[1, 4], &[1.0, -2.0, 3.0, 4.0]))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 400);
    let body: Value = response.json().await.unwrap();
    assert_eq!(body, serde_json::json!({ "error": PICKY_ERROR }));

    // Bursts of 32 concurrent requests, 4 of them bad, ride in shared forward passes: a bad one
    // fails its pass, and the batcher must still answer each good batch-mate with its own rows.
    const ROUNDS: usize = 4;
    const BURST: usize = 32;
    for round in 0..ROUNDS {
        let tasks: Vec<_> = (0..BURST)
            .map(|i| {
                let (client, url) = (client.clone(), url.clone());
                tokio::spawn(async move {
                    let response = client
                        .post(url)
                        .header("x-request-id", format!("r{round}-{i}"))
                        .json(&infer_body(&[1, 4], &picky_input(i)))
                        .send()
                        .await
                        .unwrap();
                    let status = response.status().as_u16();
                    (status, response.json::<Value>().await.unwrap())
                })
            })
            .collect();
        for (i, task) in tasks.into_iter().enumerate() {
            let (status, body) = task.await.unwrap();
            if i % 8 == 3 {
                assert_eq!(status, 400, "round {round} request {i}: {body}");
                assert_eq!(body["error"], PICKY_ERROR);
            } else {
                assert_eq!(status, 200, "round {round} request {i}: {body}");
                let doubled: Vec<f32> = picky_input(i).iter().map(|v| v * 2.0).collect();
                assert_eq!(output_data(&body), doubled, "round {round} request {i}");
            }
        }
    }
    let good = ROUNDS * BURST * 7 / 8;
    let bad = ROUNDS * BURST / 8 + 1;

    // Batching really happened (so bad requests shared passes with good ones).
    let lines = server
        .wait_for_logs("an inference line per good request", |lines| {
            lines
                .iter()
                .filter(|l| l["event"] == "response_sent" && l["batch_size"].is_u64())
                .count()
                >= good
        })
        .await;
    let largest = lines
        .iter()
        .filter(|l| l["event"] == "response_sent")
        .filter_map(|l| l["batch_size"].as_u64())
        .max()
        .unwrap();
    assert!(largest > 1, "the bursts never shared a forward pass");

    // Still serving, and every failure counted as the model's, every success as answered work.
    let response = client
        .post(&url)
        .json(&infer_body(
            &[2, 4],
            &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
        ))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap();
    assert_eq!(
        output_data(&body),
        [0.0, 2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0]
    );
    let metrics = Api::new(&server).metrics_text().await;
    let value = |series: &str| sample(&metrics, series).unwrap_or_else(|| panic!("{series}"));
    assert_eq!(
        value("torchwatch_requests_rejected_total{model=\"picky\",reason=\"model_error\"}"),
        bad as f64
    );
    assert_eq!(
        value("torchwatch_requests_total{model=\"picky\",code=\"400\"}"),
        bad as f64
    );
    assert_eq!(
        value("torchwatch_requests_total{model=\"picky\",code=\"200\"}"),
        good as f64 + 1.0
    );
    // Each good row once and the two rows of the last request: the failed passes (and the rows
    // of good requests that rode in them) are not counted as inferences.
    assert_eq!(
        value("torchwatch_inference_count_total{model=\"picky\"}"),
        good as f64 + 2.0
    );
    let model_errors = |lines: &[Value]| {
        lines
            .iter()
            .filter(|l| l["event"] == "error_occurred" && l["error_type"] == "model_error")
            .count()
    };
    let lines = server
        .wait_for_logs("the model errors", |lines| model_errors(lines) >= bad)
        .await;
    let rejected = model_errors(&lines);
    assert_eq!(rejected, bad, "one error line per failed request");
}

/// A scrape target that accepts connections and never answers; counts the connections it
/// accepted and those the client has closed.
#[derive(Default)]
struct Silent {
    accepted: usize,
    closed: usize,
}

async fn silent_target() -> (String, Arc<Mutex<Silent>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap().to_string();
    let state = Arc::new(Mutex::new(Silent::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            shared.lock().unwrap().accepted += 1;
            let shared = shared.clone();
            tokio::spawn(async move {
                // Reads the request and whatever follows, answers nothing, and notes the end.
                let mut buffer = [0u8; 4096];
                while matches!(stream.read(&mut buffer).await, Ok(n) if n > 0) {}
                shared.lock().unwrap().closed += 1;
            });
        }
    });
    (address, state)
}

#[tokio::test(flavor = "multi_thread")]
async fn a_target_that_never_answers_is_down_at_its_timeout_and_holds_up_no_other() {
    let (silent, connections) = silent_target().await;
    let target = common::FakeTarget::start(
        Vec::new(),
        "text/plain; version=0.0.4",
        "fake_value 1\n".into(),
    )
    .await;
    // The silent target is scraped every 3 s with a 2-s timeout, the healthy one every 500 ms: a
    // scraper that waited for the silent one would scrape the healthy one at most once per 2 s.
    let server = common::start(
        "faults-scrape",
        &[],
        &format!(
            "scrape:\n  self: false\n  jobs:\n    - job_name: silent\n      targets: ['{silent}']\n      interval: 3s\n      timeout: 2s\n    - job_name: fake\n      targets: ['{}']\n      interval: 500ms\n",
            target.address
        ),
    );
    server.wait_ready().await;
    let api = Api::new(&server);
    api.eventually(
        "count_over_time(up{job=\"silent\"}[1m]) >= 3",
        "three timed-out scrapes",
        |v| v.len() == 1,
    )
    .await;
    let up = api.vector("up").await;
    let up_of = |job: &str| {
        up.iter()
            .find(|(labels, _)| labels["job"] == job)
            .map(|(_, v)| *v)
    };
    assert_eq!(up_of("silent"), Some(0.0), "{up:?}");
    assert_eq!(up_of("fake"), Some(1.0), "{up:?}");
    // Each timed-out scrape took its timeout and no longer (bounded by its 3-s interval).
    for (labels, seconds) in api
        .vector("max_over_time(scrape_duration_seconds{job=\"silent\"}[1m])")
        .await
        .into_iter()
        .chain(
            api.vector("min_over_time(scrape_duration_seconds{job=\"silent\"}[1m])")
                .await,
        )
    {
        assert!((2.0..3.0).contains(&seconds), "{labels}: {seconds} s");
    }
    // The healthy target kept its own schedule: about 6 scrapes in the last 3 s, never down.
    let recent = api
        .vector("count_over_time(up{job=\"fake\"}[3s])")
        .await
        .first()
        .map(|(_, v)| *v);
    assert!(
        recent.is_some_and(|n| n >= 4.0),
        "the healthy target was scraped {recent:?} times in 3 s"
    );
    assert_eq!(
        api.vector("min_over_time(up{job=\"fake\"}[1m])").await[0].1,
        1.0
    );
    // Every given-up scrape closed its connection: at most the one in flight is open.
    let (accepted, closed) = {
        let c = connections.lock().unwrap();
        (c.accepted, c.closed)
    };
    assert!(accepted >= 3, "{accepted} connections");
    assert!(
        accepted - closed <= 1,
        "{accepted} accepted, {closed} closed"
    );
    let failed: Vec<Value> = server
        .wait_for_logs("scrape_failed", |lines| {
            lines.iter().any(|l| l["event"] == "scrape_failed")
        })
        .await
        .into_iter()
        .filter(|l| l["event"] == "scrape_failed")
        .collect();
    assert_eq!(failed.len(), 1, "one line per change of health: {failed:?}");
    assert_eq!(failed[0]["job"], "silent");
    let error = failed[0]["error"].as_str().unwrap();
    assert!(error.contains("timed out"), "{error}");
}

/// Polls `/metrics` until `series` reaches `at_least`; returns the text.
async fn wait_for_count(api: &Api, series: &str, at_least: f64) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let metrics = api.metrics_text().await;
        if sample(&metrics, series).is_some_and(|v| v >= at_least) {
            return metrics;
        }
        assert!(
            Instant::now() < deadline,
            "{series} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `torchwatch_notifications_total` of one receiver, integration and outcome.
fn notifications(receiver: &str, integration: &str, outcome: &str) -> String {
    format!(
        "torchwatch_notifications_total{{receiver=\"{receiver}\",integration=\"{integration}\",outcome=\"{outcome}\"}}"
    )
}

/// A rule file whose alert `Hot` fires at every evaluation, written into `dir`.
fn always_firing(dir: &std::path::Path) -> std::path::PathBuf {
    let rules = dir.join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: vector(1)\n        labels: {severity: page}\n",
    )
    .unwrap();
    rules
}

#[tokio::test(flavor = "multi_thread")]
async fn a_relay_and_an_alertmanager_that_were_down_get_the_alert_once_they_are_back() {
    let dir = common::TempDir::new("faults-down");
    let rules = always_firing(dir.path());
    // Nothing listens on these ports yet.
    let (smtp_port, am_port) = (common::free_port(), common::free_port());
    let server = common::start(
        "faults-down",
        &[],
        &format!(
            "scrape:\n  self: false\nrules:\n  files: ['{}']\nnotify:\n  alertmanagers:\n    - url: http://127.0.0.1:{am_port}\n  route:\n    receiver: mail\n    group_wait: 0s\n    group_interval: 1s\n    repeat_interval: 1h\n  receivers:\n    - name: mail\n      email_configs:\n        - to: [oncall@example.org]\n          from: torchwatch@example.org\n          host: 127.0.0.1\n          port: {smtp_port}\n          security: none\n",
            rules.display()
        ),
    );
    server.wait_ready().await;
    let api = Api::new(&server);

    // Down: the relay's attempts are retried within each group interval, then given up and
    // counted as failures; the Alertmanager's one attempt per send fails and is counted too.
    wait_for_count(&api, &notifications("mail", "email", "failure"), 2.0).await;
    let metrics = wait_for_count(
        &api,
        &notifications("alertmanager", "alertmanager", "failure"),
        1.0,
    )
    .await;
    assert!(
        sample(&metrics, &notifications("mail", "email", "retry")).is_some_and(|v| v >= 1.0),
        "attempts within a flush are retried: {metrics}"
    );
    for (receiver, integration) in [("mail", "email"), ("alertmanager", "alertmanager")] {
        assert_eq!(
            sample(&metrics, &notifications(receiver, integration, "success")),
            None,
            "{receiver}: nothing delivered while down"
        );
    }
    let failed_on = |lines: &[Value], integration: &str| {
        lines
            .iter()
            .any(|l| l["event"] == "notification_failed" && l["integration"] == integration)
    };
    let failed: Vec<Value> = server
        .wait_for_logs("failed notifications", |lines| {
            failed_on(lines, "email") && failed_on(lines, "alertmanager")
        })
        .await
        .into_iter()
        .filter(|l| l["event"] == "notification_failed")
        .collect();
    assert!(
        failed.iter().any(|l| l["integration"] == "email")
            && failed.iter().any(|l| l["integration"] == "alertmanager"),
        "{failed:?}"
    );

    // Back: the relay gets the mail at the next flush, the Alertmanager the alert at the next
    // resend (Prometheus' resend delay, a minute).
    let smtp = common::smtp::start_smtp_at(
        dir.path(),
        "relay",
        smtp_port,
        common::smtp::Security::Plain,
        None,
    );
    let am = common::Alertmanager::start_at(
        common::TempDir::new("faults-down-am"),
        am_port,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
        None,
    )
    .await;
    let mail = common::smtp::wait_for_mail(&smtp, 1).await.remove(0);
    assert_eq!(mail["to"], serde_json::json!(["oncall@example.org"]));
    assert!(
        mail["data"]
            .as_str()
            .unwrap()
            .contains("Subject: [FIRING] Hot")
    );
    let deadline = Instant::now() + Duration::from_secs(90);
    let alert = loop {
        if let Some(a) = am.alerts("Hot").await.pop() {
            break a;
        }
        assert!(
            Instant::now() < deadline,
            "Alertmanager never got the alert after it came back"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    assert_eq!(alert["status"]["state"], "active");
    assert_eq!(alert["labels"]["severity"], "page");

    // Delivered once to the relay: the notification log stops the next flushes re-sending.
    let metrics = wait_for_count(
        &api,
        &notifications("alertmanager", "alertmanager", "success"),
        1.0,
    )
    .await;
    assert_eq!(
        sample(&metrics, &notifications("mail", "email", "success")),
        Some(1.0)
    );
    assert_eq!(common::smtp::received(&smtp).len(), 1);
}

/// A webhook receiver that holds every request open (never answering) until `answer` is set,
/// and from then on answers 200.
#[derive(Default)]
struct Hook {
    answer: bool,
    held: usize,
    answered: Vec<Value>,
}

async fn holding_receiver() -> (String, Arc<Mutex<Hook>>) {
    let state = Arc::new(Mutex::new(Hook::default()));
    let shared = state.clone();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |body: axum::Json<Value>| {
            let shared = shared.clone();
            async move {
                {
                    let mut hook = shared.lock().unwrap();
                    if hook.answer {
                        hook.answered.push(body.0);
                        return axum::http::StatusCode::OK;
                    }
                    hook.held += 1;
                }
                std::future::pending::<()>().await;
                unreachable!("a held request is never answered")
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// Whether the notification log in `state_dir` records a delivery to the webhook.
fn logged_webhook_delivery(state_dir: &std::path::Path) -> bool {
    std::fs::read(state_dir.join("notifications.json"))
        .ok()
        .and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok())
        .and_then(|log| {
            log.as_object()
                .map(|entries| entries.keys().any(|k| k.contains("|webhook|")))
        })
        .unwrap_or(false)
}

/// Polls until `check` holds, failing with `what` after 30 s.
async fn until(what: &str, check: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !check() {
        assert!(Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_a_send_delivers_after_restart_and_never_again_once_logged() {
    let (url, hook) = holding_receiver().await;
    let dir = common::TempDir::new("faults-kill");
    let rules = always_firing(dir.path());
    let state_dir = dir.path().join("state");
    let config = format!(
        "scrape:\n  self: false\nrules:\n  files: ['{}']\nstate:\n  dir: {}\nnotify:\n  route:\n    receiver: hook\n    group_wait: 0s\n    group_interval: 1s\n    repeat_interval: 1h\n  receivers:\n    - name: hook\n      webhook_configs: [{{url: '{url}'}}]\n",
        rules.display(),
        state_dir.display()
    );

    // Killed while the receiver holds its notification: nothing was acknowledged, nothing logged.
    let mut first = common::start("faults-kill-1", &[], &config);
    first.wait_ready().await;
    until("the notification never reached the receiver", || {
        hook.lock().unwrap().held >= 1
    })
    .await;
    first.signal("KILL");
    first.wait_exit();
    assert!(!logged_webhook_delivery(&state_dir));

    // Restarted with the receiver answering: delivered, once, and logged.
    hook.lock().unwrap().answer = true;
    let mut second = common::start("faults-kill-2", &[], &config);
    second.wait_ready().await;
    until("not delivered after the restart", || {
        !hook.lock().unwrap().answered.is_empty()
    })
    .await;
    until("the delivery was never logged", || {
        logged_webhook_delivery(&state_dir)
    })
    .await;
    let delivered = hook.lock().unwrap().answered[0].clone();
    assert_eq!(delivered["status"], "firing");
    assert_eq!(delivered["alerts"][0]["labels"]["alertname"], "Hot");
    second.signal("KILL");
    second.wait_exit();

    // Killed again after the acknowledgement was logged: the next run does not re-send.
    let third = common::start("faults-kill-3", &[], &config);
    third.wait_ready().await;
    let api = Api::new(&third);
    api.eventually(
        "ALERTS{alertstate=\"firing\"}",
        "the restarted rules fire again",
        |v| v.len() == 1,
    )
    .await;
    // Several evaluations and group intervals in which a forgotten log would have re-sent.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let answered = hook.lock().unwrap().answered.len();
    assert_eq!(answered, 1, "re-sent after an acknowledged delivery");
    assert_eq!(hook.lock().unwrap().held, 1);
    let metrics = api.metrics_text().await;
    assert_eq!(
        sample(&metrics, &notifications("hook", "webhook", "success")),
        None,
        "the third run sent: {metrics}"
    );
}
