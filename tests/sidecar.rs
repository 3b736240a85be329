//! Sidecar mode: `models: []`. torchwatch serves no model and runs only the rule engine next to
//! a model server it scrapes; here a Triton-like target and the shipped `rules/triton.yml`.

mod common;

use common::{Api, FakeTarget};

const TEXT: &str = "text/plain; version=0.0.4";

fn triton(success: u64, failure: u64, queue_us: u64) -> String {
    format!(
        "# HELP nv_inference_request_success Number of successful inference requests, all batch sizes\n\
         # TYPE nv_inference_request_success counter\n\
         nv_inference_request_success{{model=\"resnet\",version=\"1\"}} {success}\n\
         # HELP nv_inference_request_failure Number of failed inference requests, all batch sizes\n\
         # TYPE nv_inference_request_failure counter\n\
         nv_inference_request_failure{{model=\"resnet\",version=\"1\"}} {failure}\n\
         # HELP nv_inference_queue_duration_us Cumulative inference queuing duration in microseconds\n\
         # TYPE nv_inference_queue_duration_us counter\n\
         nv_inference_queue_duration_us{{model=\"resnet\",version=\"1\"}} {queue_us}\n"
    )
}

#[tokio::test]
async fn without_models_torchwatch_watches_a_triton_like_server_with_the_shipped_rules() {
    let target = FakeTarget::start(Vec::new(), TEXT, triton(0, 0, 0)).await;
    let server = common::start(
        "sidecar",
        &[],
        &format!(
            "scrape:\n  interval: 1s\n  jobs:\n    - job_name: triton\n      targets: ['{}']\nrules:\n  files: ['{}']\n  evaluation_interval: 1s\n",
            target.address,
            common::root().join("rules/triton.yml").display()
        ),
    );
    // Ready at once: there is no model to load.
    server.wait_ready().await;
    let api = Api::new(&server);
    api.eventually("up{job=\"triton\"}", "the Triton target scraped", |v| {
        v.len() == 1 && v[0].1 == 1.0
    })
    .await;
    // 90 successes and 10 failures, 27 s of queueing (0.3 s per success).
    target.set(TEXT, &triton(90, 10, 27_000_000));
    let ratio = api
        .eventually(
            "model:nv_inference_request:failure_ratio_rate5m",
            "the recording rule over Triton's counters",
            |v| v.len() == 1,
        )
        .await;
    assert!((ratio[0].1 - 0.1).abs() < 1e-9, "{ratio:?}");
    assert_eq!(ratio[0].0["model"], "resnet");
    assert_eq!(ratio[0].0["job"], "triton");
    let queue = api
        .vector("model:nv_inference_queue_duration:mean_seconds_rate5m")
        .await;
    assert!((queue[0].1 - 0.3).abs() < 1e-9, "{queue:?}");
    // The failure ratio's alert goes pending (for: 5m), as Prometheus would have it.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    loop {
        let (_, alerts) = api.get("/api/v1/alerts", &[]).await;
        let pending: Vec<serde_json::Value> = alerts["data"]["alerts"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == "TritonModelErrorRatioHigh")
            .cloned()
            .collect();
        if let [alert] = pending.as_slice() {
            assert_eq!(alert["state"], "pending");
            assert_eq!(alert["labels"]["severity"], "critical");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never pending: {alerts}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    // No model families carry samples, and the server says it serves none.
    let text = api.metrics_text().await;
    assert!(!text.contains("torchwatch_model_ready{"), "{text}");
    let (status, body) = api.get("/v2/health/live", &[]).await;
    assert_eq!((status, body.is_object()), (200, true));
}
