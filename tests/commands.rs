//! `torchwatch profile` and the tritonclient run against a live server.

mod common;

use std::process::Command;

use serde_json::Value;

#[test]
fn profile_reports_exact_statistics_per_batch_size() {
    let output = Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["profile"])
        .arg(common::root().join("models/mlp.pt"))
        .args([
            "--input-shape",
            "784",
            "--batch-sizes",
            "1,4",
            "--iterations",
            "25",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let results: Vec<Value> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(results.len(), 2);
    for (result, batch) in results.iter().zip([1, 4]) {
        let f = |k: &str| result[k].as_f64().unwrap();
        assert_eq!(result["batch_size"], batch);
        assert_eq!(result["count"], 25);
        assert!(0.0 < f("min") && f("min") <= f("p50") && f("p50") <= f("p95"));
        assert!(f("p95") <= f("p99") && f("p99") <= f("max"));
        assert!((f("sum") - 25.0 * f("avg")).abs() < 1e-9);
        assert!((f("throughput") - batch as f64 / f("avg")).abs() < 1e-6);
    }

    let table = Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["profile"])
        .arg(common::root().join("models/cnn.pt"))
        .args([
            "--input-shape",
            "3,64,64",
            "--batch-sizes",
            "2",
            "--iterations",
            "5",
        ])
        .output()
        .unwrap();
    let text = String::from_utf8(table.stdout).unwrap();
    assert!(text.contains("p99_ms"), "{text}");
    assert_eq!(text.lines().count(), 3, "{text}");
}

#[tokio::test]
async fn tritonclient_talks_to_torchwatch() {
    let server = common::start(
        "tritonclient",
        &[
            common::ModelEntry::mlp("mlp"),
            common::ModelEntry::cnn("cnn"),
        ],
        "",
    );
    server.wait_ready().await;
    let python = common::root().join(".venv/bin/python");
    let output = tokio::process::Command::new(&python)
        .arg(common::root().join("tests/triton_client_check.py"))
        .arg(server.base.trim_start_matches("http://"))
        .arg(common::root().join("models"))
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run `make test-deps`",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tritonclient check failed:\n{stdout}\n{stderr}"
    );
    // 2 models x 2 reference cases x (JSON, binary) inferences, each with its id check.
    assert_eq!(
        stdout.lines().filter(|l| l.contains("infer batch")).count(),
        8,
        "{stdout}"
    );
}
