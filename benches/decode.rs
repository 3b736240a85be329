//! Cost of decoding KServe V2 inference bodies into typed tensors, as `POST .../infer` does, for
//! the demo models' reference inputs (MLP 1×784 FP32, CNN 1×3×64×64 FP32) in JSON and with binary
//! tensors, and of encoding a 1×10 FP32 answer. Run with `cargo bench --bench decode`.
//!
//! Baselines in the same run, so a busy machine still gives comparable ratios: parsing the same
//! JSON into a `serde_json::Value` (what a generic JSON front end does before it can read a
//! tensor) and copying the body once.

use std::hint::black_box;
use std::time::{Duration, Instant};

use serde_json::Value;
use torchwatch::fuzzing::{
    decode_inference_request, default_decode_limits, encode_inference_answer,
};

fn per_op(mut op: impl FnMut()) -> Duration {
    let warm_up = Instant::now();
    let mut iterations = 0u32;
    while warm_up.elapsed() < Duration::from_millis(200) {
        op();
        iterations += 1;
    }
    // Five rounds as long as the warm-up; the fastest round is the least disturbed.
    let per_round = iterations.max(1);
    (0..5)
        .map(|_| {
            let started = Instant::now();
            for _ in 0..per_round {
                op();
            }
            started.elapsed() / per_round
        })
        .min()
        .expect("five rounds")
}

fn reference_input(model: &str) -> (Vec<i64>, Vec<f32>) {
    let path = format!(
        "{}/models/{model}.reference.json",
        env!("CARGO_MANIFEST_DIR")
    );
    let reference: Value =
        serde_json::from_str(&std::fs::read_to_string(&path).expect("reference file"))
            .expect("reference JSON");
    let input = &reference["cases"][0]["input"];
    let shape = serde_json::from_value(input["shape"].clone()).expect("shape");
    let data = serde_json::from_value(input["data"].clone()).expect("data");
    (shape, data)
}

fn main() {
    let limits = default_decode_limits();
    println!(
        "| body | bytes | decode µs | MB/s | serde_json::Value µs | decode / Value | copy µs |"
    );
    println!("|---|---|---|---|---|---|---|");
    for model in ["mlp", "cnn"] {
        let (shape, data) = reference_input(model);
        // In the order clients (tritonclient, the tutorial's) write an input's keys, which
        // serde_json's sorted maps would not keep.
        let shape = serde_json::to_string(&shape).expect("shape JSON");
        let json_body = |data: &str| {
            format!(
                r#"{{"inputs":[{{"name":"input__0","shape":{shape},"datatype":"FP32","data":{data}}}]}}"#
            )
            .into_bytes()
        };
        let json = json_body(&serde_json::to_string(&data).expect("data JSON"));
        // The reference values are short binary fractions (`-1.625`). A client that builds the
        // body from a tensor in Python (`tolist()`, then `json.dumps`) writes each FP32 value as
        // the shortest text of the f64 it widens to: 16-17 digits.
        let full: Vec<f32> = data.iter().map(|v| v * 1.1).collect();
        let widened: Vec<f64> = full.iter().map(|&v| f64::from(v)).collect();
        let python = json_body(&serde_json::to_string(&widened).expect("data JSON"));
        let header = format!(
            r#"{{"inputs":[{{"name":"input__0","shape":{shape},"datatype":"FP32","parameters":{{"binary_data_size":{}}}}}]}}"#,
            data.len() * 4
        );
        let mut binary = header.clone().into_bytes();
        binary.extend(data.iter().flat_map(|v| v.to_le_bytes()));
        for (encoding, body, header_length, values) in [
            ("json", &json, None, &data),
            ("json, Python floats", &python, None, &full),
            ("binary", &binary, Some(header.len()), &data),
        ] {
            let decoded = decode_inference_request(body, header_length, &limits)
                .expect("the reference input decodes");
            let expected: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
            assert_eq!(decoded[0].1.data[..], expected[..]);
            let decode = per_op(|| {
                black_box(decode_inference_request(black_box(body), header_length, &limits).ok());
            });
            let value = per_op(|| {
                black_box(
                    serde_json::from_slice::<Value>(black_box(
                        &body[..header_length.unwrap_or(body.len())],
                    ))
                    .ok(),
                );
            });
            let copy = per_op(|| {
                black_box(black_box(body).to_vec());
            });
            println!(
                "| {model} {encoding} | {} | {:.1} | {:.0} | {:.1} | {:.2} | {:.1} |",
                body.len(),
                decode.as_secs_f64() * 1e6,
                body.len() as f64 / decode.as_secs_f64() / 1e6,
                value.as_secs_f64() * 1e6,
                decode.as_secs_f64() / value.as_secs_f64(),
                copy.as_secs_f64() * 1e6,
            );
        }
    }
    let answer: Vec<f32> = (0..10).map(|i| i as f32 * 0.123_456_7 - 0.5).collect();
    let encode = per_op(|| {
        black_box(encode_inference_answer(black_box(&answer)));
    });
    println!(
        "\nencode a 1×10 FP32 JSON answer: {:.2} µs",
        encode.as_secs_f64() * 1e6
    );
}
