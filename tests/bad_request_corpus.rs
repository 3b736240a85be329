//! A corpus of malformed inference requests over JSON and the binary extension: each gets a
//! 4xx with a JSON error naming its cause, and the server answers a good request after each.

mod common;

use common::{ModelEntry, infer_body, references};
use serde_json::{Value, json};

/// One malformed request: its body, its `Inference-Header-Content-Length` if any, the status
/// and a part of the error message expected.
struct Case {
    what: String,
    body: Vec<u8>,
    header_length: Option<String>,
    status: u16,
    says: &'static str,
}

fn json_case(what: &str, body: Value, status: u16, says: &'static str) -> Case {
    raw_case(what, body.to_string().into_bytes(), status, says)
}

fn raw_case(what: &str, body: Vec<u8>, status: u16, says: &'static str) -> Case {
    Case {
        what: what.into(),
        body,
        header_length: None,
        status,
        says,
    }
}

/// A binary-extension request: the JSON header, then `binary`.
fn binary_case(
    what: &str,
    header: Value,
    binary: &[u8],
    declared: Option<&str>,
    says: &'static str,
) -> Case {
    let header = header.to_string();
    let length = declared.map_or(header.len().to_string(), str::to_string);
    let mut body = header.into_bytes();
    body.extend_from_slice(binary);
    Case {
        what: what.into(),
        body,
        header_length: Some(length),
        status: 400,
        says,
    }
}

fn input(shape: Value, datatype: Value, data: Value) -> Value {
    json!({"inputs": [{"name": "input__0", "shape": shape, "datatype": datatype, "data": data}]})
}

/// `levels` nested arrays around a 0.
fn deep_array(levels: usize) -> Value {
    (0..levels).fold(json!(0), |inner, _| json!([inner]))
}

fn corpus() -> Vec<Case> {
    let row: Vec<f32> = vec![0.5; 784];
    let good = input(json!([1, 784]), json!("FP32"), json!(row));
    let good_text = good.to_string();
    let mut cases = vec![
        raw_case(
            "empty body",
            Vec::new(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "whitespace",
            b"  \n ".to_vec(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "not JSON",
            b"inputs=1".to_vec(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "JSON null",
            b"null".to_vec(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "JSON array",
            b"[1,2]".to_vec(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "JSON string",
            b"\"x\"".to_vec(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "invalid UTF-8",
            b"{\"inputs\": [{\"name\": \"\xff\xfe\"}]}".to_vec(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "trailing garbage",
            format!("{good_text} x").into_bytes(),
            400,
            "invalid inference request JSON",
        ),
        raw_case(
            "deep nesting",
            format!(
                "{{\"inputs\": [], \"parameters\": {{\"p\": {}{}}}}}",
                "[".repeat(10_000),
                "]".repeat(10_000)
            )
            .into_bytes(),
            400,
            "nested deeper than server.max_json_depth (64 levels)",
        ),
        json_case(
            "one level past max_json_depth",
            json!({"inputs": good["inputs"], "parameters": {"p": deep_array(63)}}),
            400,
            "nested deeper than server.max_json_depth (64 levels)",
        ),
        json_case(
            "one input past max_inputs",
            json!({"inputs": vec![good["inputs"][0].clone(); 65]}),
            400,
            "more than server.max_inputs (64) inputs",
        ),
        json_case(
            "one dimension past max_tensor_rank",
            input(json!(vec![1; 33]), json!("FP32"), json!([0.5])),
            400,
            "input 'input__0': shape has 33 dimensions, more than server.max_tensor_rank (32)",
        ),
        json_case(
            "no inputs key",
            json!({"outputs": []}),
            400,
            "missing field `inputs`",
        ),
        json_case(
            "inputs an object",
            json!({"inputs": {}}),
            400,
            "invalid type: map",
        ),
        json_case(
            "inputs empty",
            json!({"inputs": []}),
            400,
            "the request has no inputs",
        ),
        json_case(
            "input not an object",
            json!({"inputs": [1]}),
            400,
            "invalid type: integer",
        ),
        json_case(
            "input without a name",
            json!({"inputs": [{"shape": [1, 784], "datatype": "FP32", "data": row}]}),
            400,
            "missing field `name`",
        ),
        json_case(
            "name a number",
            json!({"inputs": [{"name": 7, "shape": [1, 784], "datatype": "FP32", "data": row}]}),
            400,
            "invalid type: integer `7`",
        ),
        json_case(
            "unknown input",
            json!({"inputs": [{"name": "pixels", "shape": [1, 784], "datatype": "FP32", "data": row}]}),
            400,
            "unknown input 'pixels'",
        ),
        json_case(
            "input twice",
            json!({"inputs": [
                {"name": "input__0", "shape": [1, 784], "datatype": "FP32", "data": row},
                {"name": "input__0", "shape": [1, 784], "datatype": "FP32", "data": row}]}),
            400,
            "input__0",
        ),
        json_case(
            "no shape",
            json!({"inputs": [{"name": "input__0", "datatype": "FP32", "data": row}]}),
            400,
            "missing field `shape`",
        ),
        json_case(
            "no datatype",
            json!({"inputs": [{"name": "input__0", "shape": [1, 784], "data": row}]}),
            400,
            "missing field `datatype`",
        ),
        json_case(
            "no data",
            json!({"inputs": [{"name": "input__0", "shape": [1, 784], "datatype": "FP32"}]}),
            400,
            "input 'input__0' has no 'data'",
        ),
        json_case(
            "shape a string",
            input(json!("1,784"), json!("FP32"), json!(row)),
            400,
            "invalid type: string",
        ),
        json_case(
            "shape of floats",
            input(json!([1.5, 784]), json!("FP32"), json!(row)),
            400,
            "invalid type: floating point",
        ),
        json_case(
            "negative dimension",
            input(json!([-1, 784]), json!("FP32"), json!(row)),
            400,
            "input 'input__0'",
        ),
        json_case(
            "huge dimensions",
            input(json!([i64::MAX, i64::MAX]), json!("FP32"), json!(row)),
            400,
            "input 'input__0'",
        ),
        json_case(
            "too many dimensions",
            input(json!(vec![1; 64]), json!("FP32"), json!([0.5])),
            400,
            "input 'input__0'",
        ),
        json_case(
            "wrong rank",
            input(json!([784]), json!("FP32"), json!(row)),
            400,
            "input 'input__0'",
        ),
        json_case(
            "wrong width",
            input(json!([1, 783]), json!("FP32"), json!(vec![0.5; 783])),
            400,
            "input 'input__0'",
        ),
        json_case(
            "data shorter than shape",
            input(json!([2, 784]), json!("FP32"), json!(row)),
            400,
            "input 'input__0'",
        ),
        json_case(
            "data longer than shape",
            input(json!([1, 392]), json!("FP32"), json!(row)),
            400,
            "input 'input__0'",
        ),
        json_case(
            "empty tensor",
            input(json!([0, 784]), json!("FP32"), json!([])),
            400,
            "is empty",
        ),
        json_case(
            "unknown datatype",
            input(json!([1, 784]), json!("FP128"), json!(row)),
            400,
            "unknown or unsupported datatype 'FP128'",
        ),
        json_case(
            "lowercase datatype",
            input(json!([1, 784]), json!("fp32"), json!(row)),
            400,
            "unknown or unsupported datatype 'fp32'",
        ),
        json_case(
            "datatype a number",
            input(json!([1, 784]), json!(32), json!(row)),
            400,
            "invalid type: integer",
        ),
        json_case(
            "wrong datatype for the model",
            input(json!([1, 784]), json!("INT64"), json!(vec![1; 784])),
            400,
            "input 'input__0'",
        ),
        json_case(
            "BYTES",
            input(json!([1, 1]), json!("BYTES"), json!(["a"])),
            400,
            "BYTES",
        ),
        json_case(
            "strings as FP32",
            input(json!([1, 1]), json!("FP32"), json!(["a"])),
            400,
            "string data (BYTES tensors) is not supported",
        ),
        json_case(
            "data an object",
            input(json!([1, 784]), json!("FP32"), json!({"a": 1})),
            400,
            "invalid",
        ),
        json_case(
            "data a string",
            input(json!([1, 784]), json!("FP32"), json!("0.5")),
            400,
            "invalid",
        ),
        json_case(
            "null in data",
            input(json!([1, 2]), json!("FP32"), json!([0.5, null])),
            400,
            "invalid",
        ),
        json_case(
            "booleans as FP32",
            input(json!([1, 2]), json!("FP32"), json!([true, false])),
            400,
            "input 'input__0'",
        ),
        json_case(
            "parameters not an object",
            json!({"inputs": [{"name": "input__0", "shape": [1, 784], "datatype": "FP32", "data": row, "parameters": [1]}]}),
            400,
            "invalid type: sequence",
        ),
        json_case(
            "binary_data_output not a bool",
            json!({"inputs": good["inputs"], "parameters": {"binary_data_output": "yes"}}),
            400,
            "binary_data_output",
        ),
        json_case(
            "outputs not a list",
            json!({"inputs": good["inputs"], "outputs": "output__0"}),
            400,
            "invalid type: string",
        ),
        json_case(
            "unknown output",
            json!({"inputs": good["inputs"], "outputs": [{"name": "logits"}]}),
            400,
            "unknown output 'logits'",
        ),
        json_case(
            "output binary_data not a bool",
            json!({"inputs": good["inputs"], "outputs": [{"name": "output__0", "parameters": {"binary_data": 1}}]}),
            400,
            "binary_data",
        ),
        json_case(
            "id a number",
            json!({"id": 5, "inputs": good["inputs"]}),
            400,
            "invalid type: integer `5`",
        ),
    ];
    // JSON cut short at several places.
    for cut in [1, 2, 10, 30, 50, good_text.len() / 2, good_text.len() - 1] {
        cases.push(raw_case(
            &format!("truncated at {cut}"),
            good_text.as_bytes()[..cut].to_vec(),
            400,
            "invalid inference request JSON",
        ));
    }
    // The binary extension.
    let header = |size: Value| {
        json!({"inputs": [{"name": "input__0", "shape": [1, 784], "datatype": "FP32",
                            "parameters": {"binary_data_size": size}}]})
    };
    let tensor: Vec<u8> = row.iter().flat_map(|v| v.to_le_bytes()).collect();
    cases.extend([
        binary_case("binary size past the body", header(json!(3136)), &[], None, "binary_data_size 3136 but only 0 binary bytes remain"),
        binary_case("binary size a string", header(json!("3136")), &tensor, None, "binary_data_size"),
        binary_case("binary size negative", header(json!(-1)), &tensor, None, "binary_data_size"),
        binary_case("binary size huge", header(json!(u64::MAX)), &tensor, None, "but only 3136 binary bytes remain"),
        binary_case("binary size short of the shape", header(json!(3132)), &tensor[..3132], None, "input 'input__0'"),
        binary_case("binary bytes left over", header(json!(3136)), &[tensor.clone(), vec![0; 4]].concat(), None, "4 bytes of binary data follow the JSON header"),
        binary_case("binary and data both", json!({"inputs": [{"name": "input__0", "shape": [1, 784], "datatype": "FP32", "data": row, "parameters": {"binary_data_size": 3136}}]}), &tensor, None, "has both 'data' and a binary_data_size parameter"),
        binary_case("header length past the body", header(json!(3136)), &tensor, Some("999999"), "Inference-Header-Content-Length is 999999"),
        binary_case("header length not a number", header(json!(3136)), &tensor, Some("ten"), "Inference-Header-Content-Length must be a non-negative integer"),
        binary_case("header length negative", header(json!(3136)), &tensor, Some("-5"), "Inference-Header-Content-Length must be a non-negative integer"),
        binary_case("header length cuts the JSON", header(json!(3136)), &tensor, Some("20"), "invalid inference request JSON"),
        binary_case("header length zero", header(json!(3136)), &tensor, Some("0"), "invalid inference request JSON"),
        Case {
            status: 413,
            ..binary_case("header length past max_inference_header_bytes", header(json!(3136)), &tensor, Some("1048577"), "Inference-Header-Content-Length is 1048577, more than server.max_inference_header_bytes (1048576)")
        },
    ]);
    cases
}

#[tokio::test]
async fn every_malformed_request_gets_a_4xx_naming_its_cause_and_the_server_serves_on() {
    let server = common::start("corpus", &[ModelEntry::mlp("mlp")], "");
    server.wait_ready().await;
    let client = common::client();
    let url = server.url("/v2/models/mlp/infer");
    let case = &references("mlp")[0];
    let good = infer_body(&case.shape, &case.input).to_string();
    let cases = corpus();
    assert!(cases.len() >= 50, "only {} cases", cases.len());
    let mut wrong = Vec::new();
    for c in &cases {
        let mut request = client
            .post(&url)
            .header("content-type", "application/json")
            .body(c.body.clone());
        if let Some(length) = &c.header_length {
            request = request.header("Inference-Header-Content-Length", length);
        }
        let response = request.send().await.unwrap();
        let status = response.status().as_u16();
        let text = response.text().await.unwrap();
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_string));
        match error {
            Some(e) if status == c.status && e.contains(c.says) => {}
            _ => wrong.push(format!("{}: {status} {text}", c.what)),
        }
        let after = client
            .post(&url)
            .header("content-type", "application/json")
            .body(good.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(after.status(), 200, "not serving after {}", c.what);
    }
    assert!(
        wrong.is_empty(),
        "{} of {} cases:\n{}",
        wrong.len(),
        cases.len(),
        wrong.join("\n")
    );
}

#[tokio::test]
async fn the_decoder_limits_are_raised_in_the_config() {
    let server = common::start(
        "corpus-limits",
        &[ModelEntry::mlp("mlp")],
        "  max_json_depth: 100",
    );
    server.wait_ready().await;
    let case = &references("mlp")[0];
    let mut body = infer_body(&case.shape, &case.input);
    // 82 levels: past the default 64, within the 100 configured.
    body["parameters"] = json!({"p": deep_array(80)});
    let response = common::client()
        .post(server.url("/v2/models/mlp/infer"))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let answer: Value = response.json().await.unwrap();
    let output = common::output_data(&answer);
    assert_eq!(output.len(), case.output.len());
    assert!(common::max_abs_diff(&output, &case.output) <= 1e-5);
}
