//! Every kind of bad request gets a 4xx with a JSON error naming the problem, is logged as
//! `error_occurred`, and the server keeps serving. Model files that cannot be served stop `serve`
//! with one clear line.

mod common;

use common::{ModelEntry, infer_body, references};
use serde_json::{Value, json};

/// Writes an inference request's head ending in `rest` (headers and any partial body) on a raw
/// connection, and returns the first answer the server writes.
async fn raw_exchange(base: &str, rest: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = format!(
        "POST /v2/models/mlp/infer HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n{rest}"
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    let n = tokio::time::timeout(std::time::Duration::from_secs(30), stream.read(&mut answer))
        .await
        .expect("an answer without the rest of the body")
        .unwrap();
    String::from_utf8_lossy(&answer[..n]).into_owned()
}

async fn send(client: &reqwest::Client, url: String, body: Vec<u8>) -> (u16, Value) {
    let response = client
        .post(url)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let text = response.text().await.unwrap();
    let parsed = serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    (status, parsed)
}

#[tokio::test]
async fn bad_requests_get_4xx_json_errors_and_the_server_keeps_serving() {
    // The CNN declares only its channel count, so a wrong image size reaches LibTorch.
    let mut loose_cnn = ModelEntry::cnn("cnn_any_size");
    loose_cnn.input_shape = "[-1, 3, -1, -1]";
    let server = common::start(
        "bad-input",
        &[ModelEntry::mlp("mlp"), loose_cnn],
        "  max_body_bytes: 100000\n  request_timeout: 2s",
    );
    server.wait_ready().await;
    let client = common::client();
    let mlp = server.url("/v2/models/mlp/infer");
    let row = vec![0.5f32; 784];
    let body = |v: Value| v.to_string().into_bytes();
    let input = |shape: Value, datatype: &str, data: Value| {
        body(
            json!({"inputs": [{"name": "input__0", "shape": shape, "datatype": datatype, "data": data}]}),
        )
    };

    let cases: Vec<(&str, String, Vec<u8>, u16, &str)> = vec![
        (
            "malformed JSON",
            mlp.clone(),
            b"{\"inputs\": [".to_vec(),
            400,
            "invalid inference request JSON",
        ),
        (
            "unknown datatype",
            mlp.clone(),
            input(json!([1, 784]), "FP128", json!(row)),
            400,
            "unknown or unsupported datatype 'FP128'",
        ),
        (
            "data length differs from shape",
            mlp.clone(),
            input(json!([1, 784]), "FP32", json!(&row[..700])),
            400,
            "shape [1, 784] needs 784 elements, but data has 700",
        ),
        (
            "wrong rank",
            mlp.clone(),
            input(json!([784]), "FP32", json!(row)),
            400,
            "has shape [784] (rank 1), the model takes [-1, 784] (rank 2)",
        ),
        (
            "wrong feature size",
            mlp.clone(),
            input(json!([2, 392]), "FP32", json!(row)),
            400,
            "has shape [2, 392], the model takes [-1, 784]",
        ),
        (
            "wrong datatype",
            mlp.clone(),
            input(json!([1, 784]), "FP64", json!(row)),
            400,
            "has datatype FP64, the model takes FP32",
        ),
        (
            "LibTorch rejects the image size",
            server.url("/v2/models/cnn_any_size/infer"),
            input(json!([1, 3, 8, 8]), "FP32", json!(vec![0.0f32; 192])),
            400,
            "model rejected the input: mat1 and mat2 shapes cannot be multiplied",
        ),
        (
            "unknown model",
            server.url("/v2/models/resnet/infer"),
            input(json!([1, 784]), "FP32", json!(row)),
            404,
            "unknown model 'resnet'",
        ),
        (
            "body over the limit",
            mlp.clone(),
            input(json!([40, 784]), "FP32", json!(vec![0.5f32; 40 * 784])),
            413,
            "larger than server.max_body_bytes (100000 bytes)",
        ),
        (
            "no inputs",
            mlp.clone(),
            body(json!({"inputs": []})),
            400,
            "the request has no inputs",
        ),
        (
            "empty tensor",
            mlp.clone(),
            input(json!([0, 784]), "FP32", json!([])),
            400,
            "input 'input__0' is empty (shape [0, 784])",
        ),
        (
            "unknown input name",
            mlp.clone(),
            body(
                json!({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": row}]}),
            ),
            400,
            "unknown input 'pixels'",
        ),
        (
            "strings",
            mlp.clone(),
            input(json!([1, 1]), "FP32", json!(["a"])),
            400,
            "BYTES tensors) is not supported",
        ),
        (
            "binary length past the body",
            mlp.clone(),
            body(
                json!({"inputs": [{"name": "input__0", "shape": [1, 784], "datatype": "FP32",
                                    "parameters": {"binary_data_size": 3136}}]}),
            ),
            400,
            "binary_data_size 3136 but only 0 binary bytes remain",
        ),
    ];
    for (what, url, request, status, message) in cases {
        let (got_status, response) = send(&client, url, request).await;
        let error = response["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{what}: no error field in {response}"));
        assert_eq!(got_status, status, "{what}: {error}");
        assert!(
            error.contains(message),
            "{what}: '{error}' lacks '{message}'"
        );
    }

    // A declared length over the limit is refused from the headers alone: no body is sent, and
    // the answer comes anyway (before, the server waited for a body that never came).
    let answer = raw_exchange(&server.base, "Content-Length: 1000000000\r\n\r\n").await;
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    assert!(
        answer.contains("larger than server.max_body_bytes (100000 bytes)"),
        "{answer}"
    );

    // A body that stops arriving is given up on at server.request_timeout: 504, counted.
    {
        let answer = raw_exchange(&server.base, "Content-Length: 50\r\n\r\n{\"inputs\"").await;
        assert!(answer.starts_with("HTTP/1.1 504"), "{answer}");
        assert!(
            answer.contains("no answer within server.request_timeout (2s)"),
            "{answer}"
        );
        let metrics = client
            .get(server.url("/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert_eq!(
            common::sample(
                &metrics,
                "torchwatch_requests_rejected_total{model=\"mlp\",reason=\"request_timeout\"}"
            ),
            Some(1.0),
            "{metrics}"
        );
    }

    // Still serving, with the right answer.
    let case = &references("mlp")[0];
    let (status, response) = send(
        &client,
        mlp,
        infer_body(&case.shape, &case.input)
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(common::max_abs_diff(&common::output_data(&response), &case.output) <= 1e-5);

    let lines = server
        .wait_for_logs("an error line per bad request", |lines| {
            lines
                .iter()
                .filter(|l| l["event"] == "error_occurred")
                .count()
                >= 14
        })
        .await;
    let rejected = lines
        .iter()
        .find(|l| l["event"] == "error_occurred" && l["error_type"] == "model_error")
        .expect("LibTorch's rejection is logged");
    assert_eq!(rejected["level"], "WARN");
    assert_eq!(rejected["context"], "POST /v2/models/cnn_any_size/infer");
    assert!(rejected["request_id"].as_str().is_some());
}

/// Runs `serve` on `config` written into `dir`; it must exit 1. Returns the config path and stderr.
fn serve_fails(dir: &common::TempDir, config: &str) -> (std::path::PathBuf, String) {
    let config_path = dir.path().join("torchwatch.yaml");
    std::fs::write(&config_path, config).unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(1));
    (config_path, String::from_utf8(output.stderr).unwrap())
}

#[test]
fn a_missing_or_invalid_model_file_stops_serve_with_one_line() {
    let dir = common::TempDir::new("bad-model");
    let not_torchscript = dir.path().join("model.pt");
    std::fs::write(&not_torchscript, "this is not a zip archive").unwrap();
    for (path, expected) in [
        (dir.path().join("missing.pt"), "no such file"),
        (not_torchscript, "cannot load TorchScript model"),
    ] {
        let config = format!(
            "server: {{listen: '127.0.0.1:0'}}\nmodels:\n  - name: m\n    path: {}\n    \
             inputs: [{{name: x, datatype: FP32, shape: [-1, 4]}}]\n    \
             outputs: [{{name: y, datatype: FP32, shape: [-1, 4]}}]\n",
            path.display()
        );
        let (_, stderr) = serve_fails(&dir, &config);
        assert_eq!(stderr.lines().count(), 1, "{stderr}");
        assert!(stderr.starts_with("torchwatch: model 'm': "), "{stderr}");
        assert!(
            stderr.contains(&path.display().to_string()) && stderr.contains(expected),
            "{stderr}"
        );
    }
}

#[test]
fn config_errors_name_file_line_and_column() {
    let dir = common::TempDir::new("bad-config");
    let (config_path, stderr) = serve_fails(&dir, "models:\n  - name: m\n    pathh: x.pt\n");
    let expected = format!(
        "torchwatch: {}:3:5: unknown field `pathh`",
        config_path.display()
    );
    assert!(stderr.starts_with(&expected), "{stderr}");
}
