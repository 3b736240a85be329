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
    let stdout = common::triton_client_check(server.base.trim_start_matches("http://"), &[]).await;
    // 2 models x 2 reference cases x (JSON, binary) inferences, each with its id check.
    assert_eq!(
        stdout.lines().filter(|l| l.contains("infer batch")).count(),
        8,
        "{stdout}"
    );
}

fn torchwatch(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(args)
        .current_dir(common::root())
        .output()
        .unwrap()
}

#[test]
fn every_shipped_policy_file_checks_and_a_broken_one_names_the_place() {
    let shipped: Vec<String> = std::fs::read_dir(common::root().join("policies"))
        .unwrap()
        .map(|e| e.unwrap().path().display().to_string())
        .collect();
    assert!(shipped.len() >= 2, "{shipped:?}");
    let mut args = vec!["policies", "check"];
    args.extend(shipped.iter().map(String::as_str));
    let output = torchwatch(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(stdout.matches("SUCCESS").count(), shipped.len(), "{stdout}");

    let dir = common::TempDir::new("policies-check");
    let broken = dir.path().join("broken.yml");
    std::fs::write(
        &broken,
        "scale_policies:\n  - name: web\n    max_replicas: 3\n    metrics:\n      - query: up\n        target: {type: average, value: 1}\n",
    )
    .unwrap();
    let output = torchwatch(&["policies", "check", broken.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{}:6:24: scale policy \"web\": ",
            broken.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("average"), "{stderr}");
}

#[test]
fn scale_simulate_compares_policies_over_a_trace() {
    let dir = common::TempDir::new("simulate");
    // Two hours at 5-minute steps: 100 req/s, then 1,000 req/s for the second hour.
    let mut trace = String::from("timestamp,value\n");
    for i in 0..=24 {
        let rps = if i < 12 { 100 } else { 1000 };
        trace.push_str(&format!("{},{rps}\n", 1_700_000_000 + i * 300));
    }
    let trace_file = dir.path().join("trace.csv");
    std::fs::write(&trace_file, trace).unwrap();
    let policies = dir.path().join("policies.yml");
    std::fs::write(
        &policies,
        "scale_policies:
  - name: hpa
    max_replicas: 20
    price_per_replica_hour: 2
    metrics:
      - query: sum(rate(torchwatch_requests_total[1m]))
        target: {type: average_value, value: 100}
    behavior: {}
  - name: fixed
    min_replicas: 12
    max_replicas: 12
    metrics:
      - query: sum(rate(torchwatch_requests_total[1m]))
        target: {type: average_value, value: 100}
",
    )
    .unwrap();
    let plot = dir.path().join("plot.svg");
    let simulate = |more: &[&str]| {
        let mut args = vec![
            "scale",
            "simulate",
            "--trace",
            trace_file.to_str().unwrap(),
            "--policies",
            policies.to_str().unwrap(),
            "--capacity",
            "150",
        ];
        args.extend_from_slice(more);
        torchwatch(&args)
    };
    let output = simulate(&[
        "--startup",
        "60s",
        "--price-per-replica-hour",
        "0.5",
        "--json",
        "--timeline",
        "--plot",
        plot.to_str().unwrap(),
    ]);
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let report: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["steps"], 25);
    let by_name = |name: &str| {
        report["policies"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap()
            .clone()
    };
    let (hpa, fixed) = (by_name("hpa"), by_name("fixed"));
    // 1,000 req/s at 100 per replica: about 10 replicas. On the way it overshoots: once
    // capacity catches up, the backlog drains at full speed and looks like load (15 peak).
    assert_eq!(hpa["peak_replicas"], 15, "{hpa}");
    // The answered rate is capped by ready capacity, so HPA climbs in steps (1.5x per replica
    // start-up) and the ramp is served late for a few minutes.
    let late = hpa["slo_violation_minutes"].as_f64().unwrap();
    assert!(late > 0.5 && late < 10.0, "{hpa}");
    assert_eq!(hpa["reversals"], 1, "the overshoot's correction: {hpa}");
    // A policy's own price beats the flag's.
    let hpa_hours = hpa["replica_hours"].as_f64().unwrap();
    assert!(
        (hpa["cost"].as_f64().unwrap() - 2.0 * hpa_hours).abs() < 1e-9,
        "{hpa}"
    );
    // 12 fixed replicas for two hours never violate and cost 12 x 2 x 0.5 at the flag's price.
    assert_eq!(fixed["slo_violation_minutes"], 0.0, "{fixed}");
    assert_eq!(fixed["scaling_actions"], 0);
    assert!(
        (fixed["replica_hours"].as_f64().unwrap() - 24.0).abs() < 0.01,
        "{fixed}"
    );
    assert!(
        (fixed["cost"].as_f64().unwrap() - 12.0).abs() < 0.01,
        "{fixed}"
    );
    let timeline = hpa["timeline"].as_array().unwrap();
    assert_eq!(timeline.len(), 25);
    assert_eq!(timeline[0][0], 1_700_000_000.0);
    assert_eq!(timeline[24][1], 1000.0);
    // Down from 15 to 11, where 1,000 / (11 x 100) = 0.91 is inside HPA's 10 % band.
    assert_eq!(timeline[24][2], 11.0, "ready at the end: {timeline:?}");
    let svg = std::fs::read_to_string(&plot).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.contains("hpa: ready capacity"),
        "{}",
        &svg[..200.min(svg.len())]
    );

    let output = simulate(&["--policy", "nope"]);
    assert_eq!(output.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&output.stderr).contains("--policy nope"));
}

#[test]
fn check_config_loads_every_file_a_config_names_and_check_metrics_lints_like_promtool() {
    let output = torchwatch(&["check", "config", "torchwatch.yaml"]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(stdout.contains("SUCCESS: 2 models"), "{stdout}");
    assert!(stdout.contains("cost policies"), "{stdout}");

    // A rule file with a broken expression fails the config that names it, with its place.
    let dir = common::TempDir::new("check-config");
    let rules = dir.path().join("bad.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up ==\n",
    )
    .unwrap();
    let config = dir.path().join("tw.yaml");
    std::fs::write(
        &config,
        format!(
            "rules:\n  files: ['{}']\nmodels:\n  - name: mlp\n    path: {}\n    inputs: [{{name: input__0, datatype: FP32, shape: [-1, 784]}}]\n    outputs: [{{name: output__0, datatype: FP32, shape: [-1, 10]}}]\n",
            rules.display(),
            common::root().join("models/mlp.pt").display()
        ),
    )
    .unwrap();
    let output = torchwatch(&["check", "config", config.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!("{}: 5:15: group \"x\"", rules.display())),
        "{stderr}"
    );

    let lint = |text: &str| {
        let mut child = Command::new(env!("CARGO_BIN_EXE_torchwatch"))
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    assert!(
        lint("# HELP a_total A.\n# TYPE a_total counter\na_total 1\n")
            .status
            .success()
    );
    let bad = lint("# TYPE requests counter\nrequests 1\n");
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr)
            .contains("requests counter metrics should have \"_total\" suffix"),
        "{bad:?}"
    );
}

#[test]
fn notify_routes_test_agrees_with_amtool_on_the_same_tree() {
    // The same routing tree as an Alertmanager file and as torchwatch's notify section.
    let dir = common::TempDir::new("routes-test");
    let tree = "route:\n  receiver: team\n  routes:\n    - matchers: ['severity=\"critical\"']\n      receiver: oncall\n      continue: true\n    - matchers: ['service=~\"db|cache\"']\n      receiver: storage\n      routes:\n        - matchers: ['env!=\"prod\"']\n          receiver: storage-dev\nreceivers:\n  - name: team\n  - name: oncall\n  - name: storage\n  - name: storage-dev\n";
    let am = dir.path().join("alertmanager.yml");
    std::fs::write(&am, tree).unwrap();
    let indented: String = tree.lines().map(|l| format!("  {l}\n")).collect();
    let config = dir.path().join("tw.yaml");
    std::fs::write(
        &config,
        format!(
            "notify:\n{indented}models:\n  - name: mlp\n    path: {}\n    inputs: [{{name: input__0, datatype: FP32, shape: [-1, 784]}}]\n    outputs: [{{name: output__0, datatype: FP32, shape: [-1, 10]}}]\n",
            common::root().join("models/mlp.pt").display()
        ),
    )
    .unwrap();
    let cases: [&[&str]; 5] = [
        &["severity=critical", "service=db", "env=prod"],
        &["service=cache", "env=dev"],
        &["service=db", "env=prod"],
        &["severity=critical"],
        &["foo=bar"],
    ];
    for labels in cases {
        let mut args = vec![
            "notify",
            "routes",
            "test",
            "--config",
            config.to_str().unwrap(),
        ];
        args.extend_from_slice(labels);
        let ours = torchwatch(&args);
        assert!(ours.status.success(), "{ours:?}");
        let theirs = Command::new("amtool")
            .args(["config", "routes", "test"])
            .arg(format!("--config.file={}", am.display()))
            .args(labels)
            .output()
            .expect("amtool (make test-deps installs it)");
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{labels:?}"
        );
    }
    let wrong = torchwatch(&[
        "notify",
        "routes",
        "test",
        "--config",
        config.to_str().unwrap(),
        "--verify.receivers=team",
        "severity=critical",
    ]);
    assert_eq!(wrong.status.code(), Some(1));
}

#[test]
fn template_render_expands_like_an_annotation() {
    let out = torchwatch(&[
        "template",
        "render",
        "p99 of {{ $labels.model }} on {{ $externalLabels.cluster }} is {{ $value | humanizeDuration }}",
        "--label",
        "model=cnn",
        "--external-label",
        "cluster=eu1",
        "--value",
        "0.0123",
    ]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "p99 of cnn on eu1 is 12.3ms\n"
    );
    let bad = torchwatch(&["template", "render", "{{ if $value }}"]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("cannot parse the template"));
}
