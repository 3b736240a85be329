//! Dynamic batching under concurrency: batched answers equal unbatched ones, a full queue answers
//! 503 with Retry-After, and SIGTERM drains what was accepted before exiting 0.

mod common;

use common::{ModelEntry, infer_body, output_data};
use serde_json::Value;

/// Deterministic, distinct inputs: request `i` gets its own pattern.
fn input_for(i: usize, width: usize) -> Vec<f32> {
    (0..width)
        .map(|j| (((i * 31 + j * 7) % 17) as f32 - 8.0) / 8.0)
        .collect()
}

#[tokio::test]
async fn batched_answers_equal_unbatched_ones_under_64_concurrent_requests() {
    let mut single = ModelEntry::mlp("mlp_single");
    single.batching = "{enabled: false}";
    let mut batched = ModelEntry::mlp("mlp");
    // A long delay makes batches form reliably; the batcher only waits for announced requests.
    batched.batching =
        "{enabled: true, max_batch_size: 64, max_queue_delay: 200ms, queue_capacity: 256}";
    let server = common::start("batching", &[batched, single], "");
    server.wait_ready().await;
    let client = common::client();

    let mut unbatched = Vec::new();
    for i in 0..64 {
        let response: Value = client
            .post(server.url("/v2/models/mlp_single/infer"))
            .json(&infer_body(&[1, 784], &input_for(i, 784)))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        unbatched.push(output_data(&response));
    }

    let tasks: Vec<_> = (0..64)
        .map(|i| {
            let client = client.clone();
            let url = server.url("/v2/models/mlp/infer");
            tokio::spawn(async move {
                let mut body = infer_body(&[1, 784], &input_for(i, 784));
                body["id"] = Value::from(i.to_string());
                let response = client.post(url).json(&body).send().await.unwrap();
                assert_eq!(response.status(), 200);
                response.json::<Value>().await.unwrap()
            })
        })
        .collect();
    let mut worst = 0.0f32;
    for (i, task) in tasks.into_iter().enumerate() {
        let response = task.await.unwrap();
        assert_eq!(
            response["id"],
            i.to_string(),
            "each client gets its own answer"
        );
        let diff = common::max_abs_diff(&output_data(&response), &unbatched[i]);
        worst = worst.max(diff);
    }
    // Rows of a batched matrix product may take another summation order than a single row.
    assert!(worst <= 1e-5, "batched differs from unbatched by {worst}");

    let lines = server
        .wait_for_logs("64 batched inferences", |lines| {
            lines
                .iter()
                .filter(|l| l["event"] == "response_sent" && l["model"] == "mlp")
                .count()
                >= 64
        })
        .await;
    let largest = lines
        .iter()
        .filter(|l| l["event"] == "response_sent" && l["model"] == "mlp")
        .filter_map(|l| l["batch_size"].as_u64())
        .max()
        .unwrap();
    assert!(
        largest > 1,
        "64 concurrent requests never shared a forward pass"
    );
    eprintln!("largest batch {largest}, max |batched - unbatched| = {worst:e}");
}

/// Sends `count` copies of a binary request to the CNN at once; each task yields status,
/// Retry-After and the JSON answer.
fn spawn_binary_posts(
    server: &common::Server,
    count: usize,
    request: &(usize, Vec<u8>),
) -> Vec<tokio::task::JoinHandle<(u16, Option<String>, Value)>> {
    let client = common::client();
    (0..count)
        .map(|_| {
            let (client, url, request) = (
                client.clone(),
                server.url("/v2/models/cnn/infer"),
                request.clone(),
            );
            tokio::spawn(async move { common::post_binary(&client, url, request).await })
        })
        .collect()
}

#[tokio::test]
async fn a_full_queue_answers_503_with_retry_after() {
    let mut tiny = ModelEntry::cnn("cnn");
    tiny.batching = "{enabled: false, queue_capacity: 1}";
    let server = common::start("queue-full", &[tiny], "");
    server.wait_ready().await;
    // 32 images per request keep the model busy for many milliseconds per request; binary
    // tensors reach the queue without a slow JSON parse.
    let request = common::binary_request(&[32, 3, 64, 64], &input_for(0, 32 * 3 * 64 * 64));
    let tasks = spawn_binary_posts(&server, 16, &request);
    let mut rejected = 0;
    for task in tasks {
        let (status, retry_after, json) = task.await.unwrap();
        match status {
            200 => assert_eq!(json["outputs"][0]["shape"], serde_json::json!([32, 10])),
            503 => {
                rejected += 1;
                assert_eq!(retry_after.as_deref(), Some("1"));
                assert_eq!(
                    json["error"],
                    "model 'cnn' is overloaded: its queue is full, retry later"
                );
            }
            other => panic!("unexpected status {other}: {json}"),
        }
    }
    assert!(
        rejected > 0,
        "16 concurrent requests never overflowed a queue of one"
    );
    assert!(rejected < 16, "nothing was served");
}

#[tokio::test]
async fn sigterm_finishes_accepted_requests_then_exits_zero() {
    let mut cnn = ModelEntry::cnn("cnn");
    cnn.batching = "{enabled: false, queue_capacity: 64}";
    // At debug, `request_received` tells when each request has reached the server.
    let mut server =
        common::start_with_logging("  level: debug", "drain", &[cnn], "  drain_timeout: 60s");
    server.wait_ready().await;
    let request = common::binary_request(&[16, 3, 64, 64], &input_for(1, 16 * 3 * 64 * 64));
    let tasks = spawn_binary_posts(&server, 8, &request);
    // Every request is accepted (its inference queued or running) before the signal.
    server
        .wait_for_logs("8 accepted requests", |lines| {
            lines
                .iter()
                .filter(|l| l["event"] == "request_received" && l["path"] == "/v2/models/cnn/infer")
                .count()
                >= 8
        })
        .await;
    server.signal_term();
    for task in tasks {
        assert_eq!(
            task.await.unwrap().0,
            200,
            "an accepted request was dropped"
        );
    }
    let exit = tokio::task::spawn_blocking(move || {
        let exit = server.wait_exit();
        (exit, server.log_lines())
    })
    .await
    .unwrap();
    assert_eq!(exit.0.code(), Some(0));
    let events: Vec<&str> = exit.1.iter().filter_map(|l| l["event"].as_str()).collect();
    assert!(
        events.contains(&"shutdown_started") && events.last() == Some(&"shutdown_complete"),
        "{events:?}"
    );
}
