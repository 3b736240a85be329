//! The KServe V2 endpoints of a live torchwatch: health, metadata, inference against PyTorch's
//! reference outputs (JSON and binary), the result cache, request ids and JSON logs.

mod common;

use common::{ModelEntry, Server, infer_body, max_abs_diff, output_data, references};
use serde_json::{Value, json};

/// Same LibTorch, same CPU kernels: only summation order may differ from PyTorch.
const TOLERANCE: f32 = 1e-5;

async fn demo_server(tag: &str) -> Server {
    let mut cached = ModelEntry::mlp("mlp_cached");
    cached.cache = "{enabled: true, capacity: 100, ttl: 5m}";
    let server = common::start(
        tag,
        &[ModelEntry::mlp("mlp"), ModelEntry::cnn("cnn"), cached],
        "",
    );
    server.wait_ready().await;
    server
}

async fn get(url: String) -> (u16, Value) {
    let response = reqwest::get(url).await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

async fn post(url: String, body: &Value) -> (u16, Value) {
    let response = common::client().post(url).json(body).send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

#[tokio::test]
async fn health_metadata_and_config_endpoints() {
    let server = demo_server("endpoints").await;
    assert_eq!(
        get(server.url("/v2/health/live")).await,
        (200, json!({"live": true}))
    );
    assert_eq!(
        get(server.url("/v2/health/ready")).await,
        (200, json!({"ready": true}))
    );

    let (status, meta) = get(server.url("/v2")).await;
    assert_eq!(status, 200);
    assert_eq!(meta["name"], "torchwatch");
    assert_eq!(meta["version"], env!("CARGO_PKG_VERSION"));

    for (model, shape) in [("mlp", json!([-1, 784])), ("cnn", json!([-1, 3, 64, 64]))] {
        let expected = json!({
            "name": model,
            "versions": ["1"],
            "platform": "pytorch_torchscript",
            "inputs": [{"name": "input__0", "datatype": "FP32", "shape": shape}],
            "outputs": [{"name": "output__0", "datatype": "FP32", "shape": [-1, 10]}],
        });
        assert_eq!(
            get(server.url(&format!("/v2/models/{model}"))).await,
            (200, expected.clone())
        );
        assert_eq!(
            get(server.url(&format!("/v2/models/{model}/versions/1"))).await,
            (200, expected)
        );
        assert_eq!(
            get(server.url(&format!("/v2/models/{model}/ready"))).await,
            (200, json!({"name": model, "ready": true}))
        );
    }
    let (status, config) = get(server.url("/v2/models/cnn/config")).await;
    assert_eq!(status, 200);
    assert_eq!(config["max_batch_size"], 64);
    assert_eq!(
        config["input"][0],
        json!({"name": "input__0", "data_type": "TYPE_FP32", "dims": [3, 64, 64]})
    );

    let (status, error) = get(server.url("/v2/models/nope")).await;
    assert_eq!(
        (status, error),
        (404, json!({"error": "unknown model 'nope'"}))
    );
    let (status, error) = get(server.url("/v2/models/mlp/versions/7")).await;
    assert_eq!(status, 404);
    assert!(error["error"].as_str().unwrap().contains("no version '7'"));
    let (status, _) = get(server.url("/v3/whatever")).await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn json_inference_matches_pytorch_flat_and_nested() {
    let server = demo_server("json").await;
    for model in ["mlp", "cnn"] {
        for (i, case) in references(model).iter().enumerate() {
            let mut body = infer_body(&case.shape, &case.input);
            body["id"] = json!(format!("{model}-{i}"));
            let (status, response) =
                post(server.url(&format!("/v2/models/{model}/infer")), &body).await;
            assert_eq!(status, 200, "{response}");
            assert_eq!(response["id"], format!("{model}-{i}"));
            assert_eq!(response["model_name"], model);
            assert_eq!(response["outputs"][0]["shape"], json!(case.output_shape));
            let diff = max_abs_diff(&output_data(&response), &case.output);
            assert!(diff <= TOLERANCE, "{model} case {i}: max diff {diff}");
        }
    }
    // The same MLP input written as nested rows gives the same answer.
    let case = &references("mlp")[1];
    let rows: Vec<&[f32]> = case.input.chunks(784).collect();
    let nested = json!({"inputs": [{"name": "input__0", "shape": case.shape, "datatype": "FP32", "data": rows}]});
    let (status, response) = post(server.url("/v2/models/mlp/infer"), &nested).await;
    assert_eq!(status, 200);
    assert!(max_abs_diff(&output_data(&response), &case.output) <= TOLERANCE);
}

#[tokio::test]
async fn binary_tensors_in_and_out() {
    let server = demo_server("binary").await;
    let case = &references("cnn")[1];
    let bytes: Vec<u8> = case.input.iter().flat_map(|v| v.to_le_bytes()).collect();
    let header = json!({
        "id": "bin",
        "inputs": [{"name": "input__0", "shape": case.shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": bytes.len()}}],
        "outputs": [{"name": "output__0", "parameters": {"binary_data": true}}],
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend_from_slice(&bytes);
    let response = common::client()
        .post(server.url("/v2/models/cnn/infer"))
        .header("Inference-Header-Content-Length", header.len())
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let json_length: usize = response.headers()["inference-header-content-length"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    let body = response.bytes().await.unwrap();
    let head: Value = serde_json::from_slice(&body[..json_length]).unwrap();
    assert_eq!(head["id"], "bin");
    assert_eq!(
        head["outputs"][0]["parameters"]["binary_data_size"],
        4 * case.output.len()
    );
    let got: Vec<f32> = body[json_length..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    assert!(max_abs_diff(&got, &case.output) <= TOLERANCE);

    // binary_data_output at request level turns every output binary; a JSON input still works.
    let mut body = infer_body(&case.shape, &case.input);
    body["parameters"] = json!({"binary_data_output": true});
    let response = common::client()
        .post(server.url("/v2/models/cnn/infer"))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert!(
        response
            .headers()
            .contains_key("inference-header-content-length")
    );
}

#[tokio::test]
async fn outputs_list_is_honoured() {
    let server = demo_server("outputs").await;
    let case = &references("mlp")[0];
    let mut body = infer_body(&case.shape, &case.input);
    body["outputs"] = json!([{"name": "output__0"}]);
    let (status, response) = post(server.url("/v2/models/mlp/infer"), &body).await;
    assert_eq!(status, 200);
    assert_eq!(response["outputs"].as_array().unwrap().len(), 1);
    body["outputs"] = json!([{"name": "logits"}]);
    let (status, response) = post(server.url("/v2/models/mlp/infer"), &body).await;
    assert_eq!(status, 400);
    assert_eq!(response["error"], "unknown output 'logits' of model 'mlp'");
}

#[tokio::test]
async fn cache_answers_repeats_without_a_forward_pass() {
    let server = demo_server("cache").await;
    let case = &references("mlp")[0];
    let body = infer_body(&case.shape, &case.input);
    let mut answers = Vec::new();
    for _ in 0..3 {
        let (status, response) = post(server.url("/v2/models/mlp_cached/infer"), &body).await;
        assert_eq!(status, 200);
        answers.push(output_data(&response));
    }
    assert!(answers.iter().all(|a| a == &answers[0]));
    assert!(max_abs_diff(&answers[0], &case.output) <= TOLERANCE);
    // Three answered requests, one forward pass.
    let lines = server
        .wait_for_logs("three responses", |lines| {
            lines
                .iter()
                .filter(|l| l["event"] == "response_sent" && l["model"] == "mlp_cached")
                .count()
                >= 3
        })
        .await;
    let answered: Vec<(bool, bool)> = lines
        .iter()
        .filter(|l| l["event"] == "response_sent" && l["model"] == "mlp_cached")
        .map(|l| (l["cached"] == true, l["batch_size"].is_u64()))
        .collect();
    assert_eq!(answered, [(false, true), (true, false), (true, false)]);
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_logged() {
    let server = demo_server("request-id").await;
    let case = &references("mlp")[0];
    let response = common::client()
        .post(server.url("/v2/models/mlp/infer"))
        .header("x-request-id", "trace-42")
        .json(&infer_body(&case.shape, &case.input))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["x-request-id"], "trace-42");
    let generated = reqwest::get(server.url("/v2/health/live")).await.unwrap();
    let generated_id = generated.headers()["x-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    assert_eq!(generated_id.len(), 36, "a UUID: {generated_id}");

    let lines = server
        .wait_for_logs("trace-42's response", |lines| {
            lines
                .iter()
                .any(|l| l["event"] == "response_sent" && l["request_id"] == "trace-42")
        })
        .await;
    // One line per request, with what was asked and what was answered.
    let events: Vec<&Value> = lines
        .iter()
        .filter(|l| l["request_id"] == "trace-42")
        .collect();
    assert_eq!(events.len(), 1, "{events:?}");
    let line = events[0];
    assert_eq!(line["event"], "response_sent");
    assert!(line["timestamp"].as_str().unwrap().ends_with('Z'));
    assert_eq!(line["level"], "INFO");
    assert_eq!(line["method"], "POST");
    assert_eq!(line["path"], "/v2/models/mlp/infer");
    assert_eq!(line["model"], "mlp");
    assert_eq!(line["cached"], false);
    assert!(line["batch_size"].as_u64().unwrap() >= 1);
    assert!(line["forward_ms"].as_f64().unwrap() > 0.0);
    assert!(line["queue_ms"].as_f64().unwrap() >= 0.0);
    assert_eq!(line["status"], 200);
    assert!(line["bytes"].as_u64().unwrap() > 100);
    assert!(line["latency_ms"].as_f64().unwrap() > line["forward_ms"].as_f64().unwrap());

    // `logs search` finds exactly that request's line.
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["logs", "search"])
        .arg(&server.log_file)
        .args([
            "--event",
            "response_sent",
            "--since",
            "1h",
            "request_id=trace-42",
        ])
        .output()
        .unwrap();
    assert!(output.status.success());
    let found: Vec<Value> = String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["request_id"], "trace-42");
    assert_eq!(found[0]["event"], "response_sent");
}

#[tokio::test]
async fn sampling_logs_a_share_of_successes_and_every_error_and_slow_request() {
    const SLOW_MS: f64 = 20.0;
    let server = common::start_with_logging(
        "  success_sample_ratio: 0.25\n  slow_request: 20ms",
        "sampling",
        &[ModelEntry::mlp("mlp"), ModelEntry::cnn("cnn")],
        "",
    );
    server.wait_ready().await;
    let mlp = &references("mlp")[0];
    for i in 0..8 {
        let response = common::client()
            .post(server.url("/v2/models/mlp/infer"))
            .header("x-request-id", format!("good-{i}"))
            .json(&infer_body(&mlp.shape, &mlp.input))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }
    let bad = common::client()
        .post(server.url("/v2/models/mlp/infer"))
        .header("x-request-id", "bad")
        .json(&json!({"inputs": []}))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    // 32 CNN rows take tens of milliseconds in LibTorch, whatever the build.
    let (status, _, _) = common::post_binary(
        &common::client(),
        server.url("/v2/models/cnn/infer"),
        common::binary_request(&[32, 3, 64, 64], &vec![0.5; 32 * 3 * 64 * 64]),
    )
    .await;
    assert_eq!(status, 200);

    let lines = server
        .wait_for_logs("the CNN's response", |lines| {
            lines
                .iter()
                .any(|l| l["event"] == "response_sent" && l["model"] == "cnn")
        })
        .await;
    let sent: Vec<&Value> = lines
        .iter()
        .filter(|l| l["event"] == "response_sent")
        .collect();
    let id = |l: &Value| l["request_id"].as_str().unwrap().to_owned();
    // Every fourth success (the readiness polls before them count too), plus any that happened
    // to be slow on a loaded machine.
    let good: Vec<&&Value> = sent.iter().filter(|l| id(l).starts_with("good-")).collect();
    let fast = good
        .iter()
        .filter(|l| l["latency_ms"].as_f64().unwrap() < SLOW_MS)
        .count();
    assert!(!good.is_empty() && fast <= 2, "{good:?}");
    assert!(sent.iter().any(|l| id(l) == "bad" && l["status"] == 400));
    let slow = sent
        .iter()
        .find(|l| l["model"] == "cnn")
        .expect("the slow request is logged");
    assert!(slow["latency_ms"].as_f64().unwrap() >= SLOW_MS);
    assert!(
        lines
            .iter()
            .any(|l| l["event"] == "error_occurred" && l["request_id"] == "bad")
    );
}
