//! Scale policies in `serve`: an HPA policy scales the CNN's in-process instances up under load
//! and back down after its window, without a failed request; the webhook and command actuators
//! get the decided count, and their failures are retried, counted and logged while decisions go
//! on.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::{Api, ModelEntry, sample};
use serde_json::{Value, json};

/// `serve` with one model and the policy file `policies`.
fn start(tag: &str, model: ModelEntry, policies: &str) -> (common::Server, common::TempDir) {
    let dir = common::TempDir::new(tag);
    let file = dir.path().join("policies.yml");
    std::fs::write(&file, policies).unwrap();
    let server = common::start(
        tag,
        &[model],
        &format!(
            "scrape:\n  interval: 1s\npolicies:\n  files: ['{}']\n",
            file.display()
        ),
    );
    (server, dir)
}

/// Polls `/api/v1/scale/{policy}` until `check` accepts it.
async fn policy_until(
    api: &Api,
    policy: &str,
    what: &str,
    check: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = api.get(&format!("/api/v1/scale/{policy}"), &[]).await;
        assert_eq!(status, 200, "{body}");
        if check(&body["data"]) {
            return body["data"].clone();
        }
        assert!(Instant::now() < deadline, "{what}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Clients sending CNN requests until stopped, each pausing `pause` between requests; returns
/// every status code.
fn load(
    server: &common::Server,
    clients: usize,
    pause: Duration,
    stop: Arc<AtomicBool>,
) -> Vec<tokio::task::JoinHandle<Vec<u16>>> {
    let body = common::infer_body(&[1, 3, 64, 64], &[0.5; 3 * 64 * 64]);
    (0..clients)
        .map(|_| {
            let (client, url, body, stop) = (
                common::client(),
                server.url("/v2/models/cnn/infer"),
                body.clone(),
                stop.clone(),
            );
            tokio::spawn(async move {
                let mut codes = Vec::new();
                while !stop.load(Ordering::Relaxed) {
                    let status = client
                        .post(&url)
                        .json(&body)
                        .send()
                        .await
                        .map(|r| r.status());
                    codes.push(status.map_or(0, |s| s.as_u16()));
                    tokio::time::sleep(pause).await;
                }
                codes
            })
        })
        .collect()
}

async fn codes(clients: Vec<tokio::task::JoinHandle<Vec<u16>>>) -> Vec<u16> {
    let mut all = Vec::new();
    for c in clients {
        all.extend(c.await.unwrap());
    }
    all
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hpa_policy_scales_model_instances_up_and_down_without_failing_a_request() {
    let mut cnn = ModelEntry::cnn("cnn");
    cnn.instances = "{min: 1, max: 2}";
    // A target of 10 req/s per instance: 8 busy clients need 2, a trickle of ~4 req/s needs 1.
    let (server, _dir) = start(
        "scale-model",
        cnn,
        "scale_policies:
  - name: cnn
    interval: 1s
    min_replicas: 1
    max_replicas: 2
    metrics:
      - query: sum(rate(torchwatch_requests_total{model=\"cnn\"}[5s]))
        target: {type: average_value, value: 10}
    behavior:
      scale_down: {stabilization_window: 5s}
    actuator: {model: cnn}
",
    );
    server.wait_ready().await;
    let api = Api::new(&server);
    let at_rest = policy_until(&api, "cnn", "a first decision", |p| {
        !p["desired_replicas"].is_null()
    })
    .await;
    assert_eq!(at_rest["current_replicas"], 1, "{at_rest}");
    assert_eq!(at_rest["actuator"], "model");

    // Readiness is watched throughout both changes.
    let watching = Arc::new(AtomicBool::new(false));
    let readiness = {
        let (client, url, done) = (
            common::client(),
            server.url("/v2/models/cnn/ready"),
            watching.clone(),
        );
        tokio::spawn(async move {
            let mut seen = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let status = client.get(&url).send().await.map(|r| r.status().as_u16());
                seen.push(status.unwrap_or(0));
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let stop = Arc::new(AtomicBool::new(false));
    let busy = load(&server, 8, Duration::ZERO, stop.clone());
    let up = policy_until(&api, "cnn", "scaling up to 2", |p| {
        p["current_replicas"] == 2
    })
    .await;
    assert_eq!(up["desired_replicas"], 2, "{up}");
    assert!(up["metrics"][0]["value"].as_f64().unwrap() > 10.0, "{up}");
    // The second instance loads and warms up before it counts.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = api.metrics_text().await;
        if sample(&text, "torchwatch_model_instances{model=\"cnn\"}") == Some(2.0) {
            assert!(
                sample(
                    &text,
                    "torchwatch_scale_decisions_total{policy=\"cnn\",direction=\"up\"}"
                )
                .unwrap()
                    >= 1.0
            );
            assert_eq!(
                sample(&text, "torchwatch_scale_current_replicas{policy=\"cnn\"}"),
                Some(2.0)
            );
            break;
        }
        assert!(Instant::now() < deadline, "no second instance:\n{text}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let during_load = codes(busy).await;
    assert!(during_load.len() > 50, "{} requests", during_load.len());
    assert!(
        during_load.iter().all(|c| *c == 200),
        "failed requests under load: {:?}",
        during_load
            .iter()
            .filter(|c| **c != 200)
            .collect::<Vec<_>>()
    );

    // A trickle keeps requests in flight while the second instance retires.
    let stop = Arc::new(AtomicBool::new(false));
    let trickle = load(&server, 1, Duration::from_millis(250), stop.clone());
    let down = policy_until(&api, "cnn", "scaling back to 1", |p| {
        p["current_replicas"] == 1
    })
    .await;
    assert!(
        down["reason"].as_str().unwrap().contains("below target"),
        "{down}"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while sample(
        &api.metrics_text().await,
        "torchwatch_model_instances{model=\"cnn\"}",
    ) != Some(1.0)
    {
        assert!(
            Instant::now() < deadline,
            "the second instance never retired"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // And it keeps serving on one instance: three more answered requests.
    let answered = r#"torchwatch_requests_total{model="cnn",code="200"}"#;
    let retired_at = sample(&api.metrics_text().await, answered).unwrap();
    while sample(&api.metrics_text().await, answered).unwrap() < retired_at + 3.0 {
        assert!(
            Instant::now() < deadline,
            "no requests served after the retirement"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let while_retiring = codes(trickle).await;
    assert!(!while_retiring.is_empty());
    assert!(
        while_retiring.iter().all(|c| *c == 200),
        "{while_retiring:?}"
    );
    watching.store(true, Ordering::Relaxed);
    let readiness = readiness.await.unwrap();
    assert!(readiness.len() > 20, "{readiness:?}");
    assert!(readiness.iter().all(|s| *s == 200), "{readiness:?}");

    let changes_logged = |lines: &[Value]| {
        lines
            .iter()
            .filter(|l| l["event"] == "instances_changed")
            .count()
            >= 2
    };
    let lines = server
        .wait_for_logs("both instance changes", changes_logged)
        .await;
    let decisions: Vec<Value> = lines
        .iter()
        .filter(|l| l["event"] == "scale_decision")
        .cloned()
        .collect();
    assert!(
        decisions.iter().any(|d| d["from"] == 1 && d["to"] == 2),
        "{decisions:?}"
    );
    assert!(
        decisions.iter().any(|d| d["from"] == 2 && d["to"] == 1),
        "{decisions:?}"
    );
    let changes: Vec<Value> = lines
        .into_iter()
        .filter(|l| l["event"] == "instances_changed")
        .collect();
    assert_eq!(changes.len(), 2, "{changes:?}");
}

#[tokio::test]
async fn webhook_and_command_actuators_get_the_count_and_failures_are_retried_and_counted() {
    let (url, received) = common::receiver("/scale/T0KEN-4b1d", 3).await;
    let dir = common::TempDir::new("scale-actuators-out");
    let out = dir.path().join("calls.txt");
    // 250 against 100 per replica: 3 replicas, from the min of 1.
    let policy = |name: &str, actuator: String| {
        format!(
            "  - name: {name}
    interval: 1s
    min_replicas: 1
    max_replicas: 4
    metrics:
      - query: vector(250)
        target: {{type: average_value, value: 100}}
    actuator: {actuator}
"
        )
    };
    let policies = format!(
        "scale_policies:\n{}{}{}",
        policy(
            "hook",
            format!("{{webhook: {{url: '{url}'}}, attempts: 2}}")
        ),
        policy(
            "cmd",
            format!(
                "{{command: [sh, -c, 'echo {{{{ .Policy }}}} {{{{ .From }}}} {{{{ .Replicas }}}} >> {}']}}",
                out.display()
            )
        ),
        policy(
            "broken",
            "{command: [sh, -c, 'echo no cluster >&2; exit 3'], attempts: 2}".into()
        ),
    );
    let (server, _policy_dir) = start("scale-actuators", ModelEntry::mlp("mlp"), &policies);
    server.wait_ready().await;
    let api = Api::new(&server);

    // The webhook refuses three calls: two attempts of the first decision, one of the second.
    let bodies = common::wait_for_bodies(&received, 1).await;
    assert_eq!(bodies[0]["policy"], "hook");
    assert_eq!(
        (bodies[0]["from"].clone(), bodies[0]["to"].clone()),
        (json!(1), json!(3))
    );
    assert!(
        bodies[0]["reason"]
            .as_str()
            .unwrap()
            .contains("above target")
    );
    policy_until(&api, "hook", "the webhook's count in effect", |p| {
        p["current_replicas"] == 3
    })
    .await;

    let deadline = Instant::now() + Duration::from_secs(30);
    // `>>` creates the file before echo writes to it: wait for the whole line.
    let calls = || std::fs::read_to_string(&out).unwrap_or_default();
    while !calls().ends_with('\n') {
        assert!(Instant::now() < deadline, "the command never ran");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(calls(), "cmd 1 3\n");

    // The broken command keeps failing, and the policy keeps deciding.
    let broken = policy_until(&api, "broken", "failures counted", |p| {
        p["actuator_failures"].as_u64().unwrap() >= 4
    })
    .await;
    assert_eq!(
        broken["current_replicas"], 1,
        "nothing was carried out: {broken}"
    );
    assert!(broken["decisions"]["up"].as_u64().unwrap() >= 2, "{broken}");
    let text = api.metrics_text().await;
    assert_eq!(
        sample(
            &text,
            "torchwatch_scale_actuator_failures_total{policy=\"hook\"}"
        ),
        Some(3.0)
    );
    assert_eq!(
        sample(
            &text,
            "torchwatch_scale_desired_replicas{policy=\"broken\"}"
        ),
        Some(3.0)
    );
    let failed = |l: &Value| l["event"] == "scale_actuator_failed" && l["policy"] == "broken";
    let logged: Vec<Value> = server
        .wait_for_logs("four failed calls", |lines| {
            lines.iter().filter(|l| failed(l)).count() >= 4
        })
        .await
        .into_iter()
        .filter(failed)
        .collect();
    assert!(logged.len() >= 4, "{logged:?}");
    assert_eq!(
        logged[0]["error"],
        "sh exited with exit status: 3: no cluster"
    );
    // Only the webhook's one successful call arrived, and its URL is in no log line.
    assert_eq!(received.lock().unwrap().bodies.len(), 1);
    let log = std::fs::read_to_string(&server.log_file).unwrap();
    assert!(!log.contains(&url), "the webhook URL was logged");
}
