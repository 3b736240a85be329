//! The docker-compose stack and the Kubernetes manifests, validated offline (no Docker engine or
//! cluster runs here): Prometheus's and Alertmanager's own checkers accept their configs, the
//! compose file satisfies the Compose Specification's JSON schema, every file the stack mounts
//! exists, and every object under deploy/kubernetes/ satisfies Kubernetes' or its CRD's schema.

mod common;

use std::process::Command;

fn run(program: &str, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .env("TORCHWATCH", env!("CARGO_BIN_EXE_torchwatch"))
        .current_dir(common::root())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} ({e}); run `make test-deps`"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{program} {args:?} failed:\n{text}"
    );
    text
}

#[test]
fn prometheus_accepts_its_config() {
    let report = run(
        "promtool",
        &["check", "config", "deploy/prometheus/prometheus.yml"],
    );
    assert!(report.contains("SUCCESS"), "{report}");
}

#[test]
fn alertmanager_accepts_its_config() {
    let report = run(
        "amtool",
        &["check-config", "deploy/alertmanager/alertmanager.yml"],
    );
    assert!(report.contains("SUCCESS"), "{report}");
}

#[test]
fn compose_file_follows_the_compose_specification() {
    let checker = common::root().join(".venv/bin/check-jsonschema");
    let report = run(
        checker.to_str().unwrap(),
        &[
            "--builtin-schema",
            "vendor.compose-spec",
            "docker-compose.yml",
        ],
    );
    assert!(report.contains("validation done"), "{report}");
}

#[test]
fn kubernetes_manifests_follow_their_schemas() {
    // Core kinds against kubernetes-validate's schemas, KEDA and prometheus-operator kinds
    // against their CRDs in ../shared/schemas/, plus the config/policy cross-checks.
    let python = common::root().join(".venv/bin/python");
    let report = run(python.to_str().unwrap(), &["tests/validate_kubernetes.py"]);
    for object in [
        "Namespace torchwatch",
        "ConfigMap torchwatch",
        "Deployment torchwatch",
        "Service torchwatch",
        "ServiceMonitor torchwatch",
        "PodMonitor torchwatch",
        "ScaledObject torchwatch",
        "HorizontalPodAutoscaler torchwatch",
    ] {
        let ok = format!("ok    {object} (");
        assert!(
            report.lines().any(|l| l.starts_with(&ok)),
            "{object} not validated:\n{report}"
        );
    }
    for check in [
        "ok    ConfigMap files parse as YAML",
        "ok    Deployment torchwatch mounts its config and policy files",
        "ok    ConfigMap policy files pass torchwatch policies check",
        "ok    ScaledObject torchwatch bounds equal its policy's",
        "ok    HorizontalPodAutoscaler torchwatch bounds equal its policy's",
    ] {
        assert!(
            report.lines().any(|l| l == check),
            "{check} missing:\n{report}"
        );
    }
    assert!(report.contains("all 8 objects valid"), "{report}");
}

#[test]
fn every_mounted_or_copied_file_exists() {
    let root = common::root();
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let mounts: Vec<&str> = compose
        .lines()
        .filter_map(|l| l.trim().strip_prefix("- ./"))
        .map(|m| m.split(':').next().unwrap())
        .collect();
    assert!(mounts.len() >= 4, "{mounts:?}");
    for mount in mounts {
        assert!(
            root.join(mount).exists(),
            "docker-compose.yml mounts missing ./{mount}"
        );
    }
    // Grafana's dashboard provider reads the directory compose mounts the dashboards at.
    let provider =
        std::fs::read_to_string(root.join("grafana/provisioning/dashboards/torchwatch.yml"))
            .unwrap();
    assert!(provider.contains("path: /var/lib/grafana/dashboards"));
    assert!(compose.contains("./grafana/dashboards:/var/lib/grafana/dashboards"));
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    for copied in ["scripts/setup", "torchwatch.yaml"] {
        assert!(
            dockerfile.contains(copied) && root.join(copied).exists(),
            "{copied}"
        );
    }
}

#[test]
fn the_runtime_image_can_reach_tls_endpoints_runs_unprivileged_and_reports_health() {
    let root = common::root();
    let dockerfile = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    let runtime = dockerfile
        .rsplit_once("\nFROM ")
        .map(|(_, stage)| stage)
        .expect("a multi-stage Dockerfile");
    assert!(
        runtime.contains("install -y --no-install-recommends ca-certificates"),
        "the runtime stage has no CA certificates: HTTPS webhooks, Slack and SMTP over TLS fail"
    );
    let user = runtime
        .lines()
        .find_map(|l| l.strip_prefix("USER "))
        .expect("the runtime stage sets USER");
    assert!(!["root", "0"].contains(&user.trim()), "USER {user}");
    let healthcheck = runtime
        .lines()
        .position(|l| l.starts_with("HEALTHCHECK"))
        .expect("the runtime stage has a HEALTHCHECK");
    let check = runtime.lines().nth(healthcheck + 1).unwrap_or_default();
    assert!(check.contains("/v2/health/ready"), "{check}");

    // The healthcheck's command, run against a real torchwatch, passes once it is ready.
    let server = common::start("healthcheck", &[common::ModelEntry::mlp("mlp")], "");
    let port = server.base.rsplit_once(':').unwrap().1.to_string();
    let command: Vec<String> = serde_json::from_str(
        check
            .trim()
            .strip_prefix("CMD ")
            .expect("HEALTHCHECK ... CMD [exec form]"),
    )
    .unwrap();
    let script = command[2].replace("127.0.0.1/8080", &format!("127.0.0.1/{port}"));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let status = Command::new(&command[0])
            .args([&command[1], &script])
            .status()
            .unwrap();
        if status.success() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the healthcheck never passed"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }

    // The default config keeps state in state/, which compose puts on a volume.
    let config = std::fs::read_to_string(root.join("torchwatch.yaml")).unwrap();
    assert!(config.contains("state:\n  dir: state\n"), "{config}");
    let compose = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    assert!(
        compose.contains("- torchwatch-state:/app/state"),
        "state.dir is not on a volume"
    );
}
