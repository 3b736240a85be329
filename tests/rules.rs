//! `torchwatch rules test` and `rules check` against promtool's behaviour:
//! promtool's own conformance files, our PromQL corpus (expected values produced
//! by Prometheus 2.42), and — when Debian's promtool is installed — the same
//! files run through promtool with the same exit status.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn torchwatch(args: &[&str], dir: &Path) -> Output {
    Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run torchwatch")
}

fn promtool_available() -> bool {
    Command::new("promtool")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

/// promtool's conformance files shipped next to the project (`../shared`).
fn conformance_dir() -> Option<PathBuf> {
    let dir = common::root().join("../shared/conformance/promtool");
    if dir.is_dir() {
        Some(dir)
    } else {
        eprintln!(
            "promtool conformance files not found at {}: conformance cases not run",
            dir.display()
        );
        None
    }
}

/// Test files are the ones with a top-level `tests:` key; the others are rule files.
fn test_files(dir: &Path) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| {
            std::fs::read_to_string(e.path())
                .is_ok_and(|text| text.lines().any(|l| l.starts_with("tests:")))
        })
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    files
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

#[test]
fn promtool_conformance_files_give_promtools_exit_status() {
    let Some(root) = conformance_dir() else {
        return;
    };
    for (folder, expected) in [("pass", 0), ("fail", 1)] {
        let dir = root.join(folder);
        let files = test_files(&dir);
        assert!(files.len() >= 4, "expected test files in {}", dir.display());
        for file in files {
            let out = torchwatch(&["rules", "test", &file], &dir);
            assert_eq!(
                out.status.code(),
                Some(expected),
                "{folder}/{file}:\n{}",
                text(&out)
            );
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert!(
                stdout.starts_with(&format!("Unit Testing:  {file}\n")),
                "{stdout}"
            );
            if expected == 0 {
                assert!(stdout.contains("  SUCCESS\n"), "{stdout}");
            } else {
                assert!(String::from_utf8_lossy(&out.stderr).contains("  FAILED:\n"));
            }
        }
    }
}

#[test]
fn a_failing_expectation_prints_expected_and_obtained_values() {
    let Some(root) = conformance_dir() else {
        return;
    };
    let out = torchwatch(&["rules", "test", "failing.yml"], &root.join("fail"));
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "    name: Failing test,\n    alertname: Test, time: 0s, \n        exp:[\n            0:\n              Labels:{alertname=\"Test\"}\n              Annotations:{}\n            ], \n        got:[]",
        "    expr: \"test\", time: 0s,\n        exp: {__name__=\"test\"} 1E+00\n        got: {__name__=\"test\"} 0E+00",
        "Labels:{alertname=\"InstanceDown\", job=\"test\", severity=\"page\"}\n              Annotations:{description=\" of job test has been down for more than 5 minutes.\", summary=\"Instance  down\"}",
    ] {
        assert!(
            stderr.contains(expected),
            "missing:\n{expected}\nin:\n{stderr}"
        );
    }
    let bad = torchwatch(
        &["rules", "test", "bad-rules-error-test.yml"],
        &root.join("fail"),
    );
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("    rule: joined, time: 0s, err: found duplicate series for the match group {a=\"1\"} on the right hand-side of the operation"),
        "{}",
        text(&bad)
    );
}

fn corpus() -> (PathBuf, Vec<String>) {
    let dir = common::root().join("tests/promql");
    let files = test_files(&dir);
    assert!(
        files.len() >= 3,
        "PromQL corpus missing in {}",
        dir.display()
    );
    (dir, files)
}

#[test]
fn promql_corpus_matches_prometheus_values() {
    let (dir, files) = corpus();
    for file in &files {
        let out = torchwatch(&["rules", "test", file], &dir);
        assert!(out.status.success(), "{file}:\n{}", text(&out));
    }
}

#[test]
fn corpus_and_conformance_files_give_the_same_exit_status_under_promtool() {
    if !promtool_available() {
        eprintln!("promtool not installed: comparison skipped (make test-deps installs it)");
        return;
    }
    let (dir, files) = corpus();
    let mut cases: Vec<(PathBuf, String)> = files.into_iter().map(|f| (dir.clone(), f)).collect();
    if let Some(root) = conformance_dir() {
        for folder in ["pass", "fail"] {
            let d = root.join(folder);
            cases.extend(test_files(&d).into_iter().map(|f| (d.clone(), f)));
        }
    }
    for (dir, file) in cases {
        let ours = torchwatch(&["rules", "test", &file], &dir);
        let theirs = Command::new("promtool")
            .args(["test", "rules", &file])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(
            ours.status.code(),
            theirs.status.code(),
            "{}: torchwatch:\n{}\npromtool:\n{}",
            file,
            text(&ours),
            text(&theirs)
        );
    }
}

#[test]
fn a_wrong_expectation_in_the_corpus_is_caught() {
    let (dir, _) = corpus();
    let tmp = common::TempDir::new("rules-wrong");
    std::fs::copy(
        dir.join("alert-rules.yml"),
        tmp.path().join("alert-rules.yml"),
    )
    .unwrap();
    let original = std::fs::read_to_string(dir.join("alerts.yml")).unwrap();
    let broken = original.replace("value: 300", "value: 300.001");
    assert_ne!(original, broken);
    std::fs::write(tmp.path().join("alerts.yml"), broken).unwrap();
    let out = torchwatch(&["rules", "test", "alerts.yml"], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("3.00001E+02"),
        "{}",
        text(&out)
    );
}

#[test]
fn rules_check_reports_every_error_with_position_and_rule_name() {
    let tmp = common::TempDir::new("rules-check");
    let good = tmp.path().join("good.yml");
    std::fs::write(
        &good,
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(up)\n      - alert: Down\n        expr: up == 0\n        for: 5m\n      - record: a:b\n        expr: sum(up)\n",
    )
    .unwrap();
    let out = torchwatch(&["rules", "check", "good.yml"], tmp.path());
    assert!(
        out.status.success(),
        "duplicates are a lint finding only: {}",
        text(&out)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Checking good.yml\n\n"
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "  FAILED:\nlint error 1 duplicate rule(s) found.\nMetric: a:b\nLabel(s):\nMight cause inconsistency while recording expressions\n"
    );
    std::fs::write(
        &good,
        "groups:\n  - name: g\n    rules:\n      - record: a:b\n        expr: sum(up)\n",
    )
    .unwrap();
    let out = torchwatch(&["rules", "check", "good.yml"], tmp.path());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "Checking good.yml\n  SUCCESS: 1 rules found\n\n"
    );

    let bad = tmp.path().join("bad.yml");
    std::fs::write(
        &bad,
        "groups:\n  - name: g\n    rules:\n      - record: x\n        expr: 'rate(up[5m]'\n      - alert: A\n        record: B\n        expr: up\n      - record: 'bad name'\n        expr: up\n      - alert: T\n        expr: up\n        annotations:\n          summary: '{{ if $value }}unclosed'\n  - name: g\n    rules: []\n",
    )
    .unwrap();
    let out = torchwatch(&["rules", "check", "good.yml", "bad.yml"], tmp.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "bad.yml: 5:15: group \"g\", rule 1, \"x\": could not parse expression: ",
        "bad.yml: 6:9: group \"g\", rule 2, \"B\": only one of 'record' and 'alert' must be set",
        "bad.yml: 9:17: group \"g\", rule 3, \"bad name\": invalid recording rule name: bad name",
        "group \"g\", rule 4, \"T\": annotation \"summary\": template: ",
        "bad.yml: 15:11: groupname: \"g\" is repeated in the same file",
    ] {
        assert!(
            stderr.contains(expected),
            "missing {expected:?} in:\n{stderr}"
        );
    }
    let yaml = tmp.path().join("yaml.yml");
    std::fs::write(&yaml, "groups:\n  - name: g\n    rulez: []\n").unwrap();
    let out = torchwatch(&["rules", "check", "yaml.yml"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("yaml.yml:3:"),
        "{}",
        text(&out)
    );
}

#[test]
fn rules_check_prints_what_promtool_prints_for_a_clean_file() {
    if !promtool_available() {
        eprintln!("promtool not installed: comparison skipped");
        return;
    }
    let (dir, _) = corpus();
    let mut cases = vec![(dir, "alert-rules.yml")];
    if let Some(root) = conformance_dir() {
        cases.push((root.join("pass"), "rules.yml"));
    }
    for (dir, file) in cases {
        let ours = torchwatch(&["rules", "check", file], &dir);
        let theirs = Command::new("promtool")
            .args(["check", "rules", file])
            .current_dir(&dir)
            .output()
            .unwrap();
        assert_eq!(ours.status.code(), theirs.status.code(), "{}", text(&ours));
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout)
        );
    }
}

const SHORT_FORM: &str = r#"groups:
  - name: tutorial
    labels:
      team: ml
    rules:
      - alert: high_cpu_usage
        metric: rate(cpu_seconds_total[1m]) / cpu_cores
        condition: greater_than
        threshold: 0.9
        for: 2m
        annotations:
          summary: '{{ $value | humanizePercentage }} of the CPU'
      - alert: model_not_ready
        metric: model_ready
        condition: equals
        threshold: 0
"#;

fn short_form_test(rule_file: &str) -> String {
    format!(
        r#"rule_files: [{rule_file}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      - series: cpu_seconds_total
        values: '0+57x10'
      - series: cpu_cores
        values: '1x10'
      - series: model_ready
        values: '1 1 0 0 1'
    alert_rule_test:
      - eval_time: 2m
        alertname: high_cpu_usage
        exp_alerts: []
      - eval_time: 3m
        alertname: high_cpu_usage
        exp_alerts:
          - exp_labels: {{team: ml}}
            exp_annotations: {{summary: '95% of the CPU'}}
      - eval_time: 2m
        alertname: model_not_ready
        exp_alerts:
          - exp_labels: {{team: ml}}
      - eval_time: 4m
        alertname: model_not_ready
        exp_alerts: []
"#
    )
}

#[test]
fn short_form_rules_compile_to_prometheus_rules_promtool_accepts() {
    let tmp = common::TempDir::new("short-form");
    std::fs::write(tmp.path().join("short.yml"), SHORT_FORM).unwrap();
    std::fs::write(
        tmp.path().join("short-test.yml"),
        short_form_test("short.yml"),
    )
    .unwrap();
    let out = torchwatch(&["rules", "test", "short-test.yml"], tmp.path());
    assert!(out.status.success(), "{}", text(&out));

    let out = torchwatch(
        &["rules", "export", "short.yml", "-o", "exported"],
        tmp.path(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let exported = std::fs::read_to_string(tmp.path().join("exported/short.yml")).unwrap();
    assert!(
        exported.contains("expr: (rate(cpu_seconds_total[1m]) / cpu_cores) > 0.9"),
        "{exported}"
    );
    assert!(exported.contains("expr: model_ready == 0"), "{exported}");
    assert!(
        !exported.contains("metric:") && !exported.contains("threshold:"),
        "{exported}"
    );
    // The exported file behaves the same, for torchwatch and for promtool.
    std::fs::write(
        tmp.path().join("exported/test.yml"),
        short_form_test("short.yml"),
    )
    .unwrap();
    let out = torchwatch(&["rules", "test", "test.yml"], &tmp.path().join("exported"));
    assert!(out.status.success(), "{}", text(&out));
    if promtool_available() {
        for args in [
            &["check", "rules", "short.yml"][..],
            &["test", "rules", "test.yml"][..],
        ] {
            let theirs = Command::new("promtool")
                .args(args)
                .current_dir(tmp.path().join("exported"))
                .output()
                .unwrap();
            assert!(
                theirs.status.success(),
                "promtool {args:?}: {}",
                text(&theirs)
            );
        }
    }

    // Mistakes in the short form are reported with their position.
    std::fs::write(
        tmp.path().join("bad.yml"),
        "groups:\n  - name: g\n    rules:\n      - alert: A\n        metric: up\n        condition: above\n        threshold: 1\n      - alert: B\n        metric: up\n        expr: up\n",
    )
    .unwrap();
    let out = torchwatch(&["rules", "check", "bad.yml"], tmp.path());
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("bad.yml: 6:20: group \"g\", rule 1, \"A\": unknown condition \"above\": use one of greater_than, less_than, equals, not_equals, greater_than_or_equal, less_than_or_equal"),
        "{stderr}"
    );
    assert!(
        stderr.contains(
            "bad.yml: 9:17: group \"g\", rule 2, \"B\": set either 'expr' or the short form"
        ),
        "{stderr}"
    );
}

/// The default policies under `rules/`: their unit tests pass, and Prometheus'
/// own tools accept the files as they are (they are plain Prometheus syntax).
#[test]
fn default_policies_pass_their_unit_tests() {
    let dir = common::root().join("rules/tests");
    let files = test_files(&dir);
    assert!(!files.is_empty(), "no unit tests under rules/tests");
    for file in &files {
        let out = torchwatch(&["rules", "test", file], &dir);
        assert!(out.status.success(), "{file}:\n{}", text(&out));
        if promtool_available() {
            let theirs = Command::new("promtool")
                .args(["test", "rules", file])
                .current_dir(&dir)
                .output()
                .unwrap();
            assert!(
                theirs.status.success(),
                "promtool {file}:\n{}",
                text(&theirs)
            );
        }
    }
    let rules_dir = common::root().join("rules");
    let out = torchwatch(&["rules", "check", "torchwatch.yml"], &rules_dir);
    assert!(out.status.success(), "{}", text(&out));
    let tmp = common::TempDir::new("default-export");
    let out = torchwatch(
        &[
            "rules",
            "export",
            "torchwatch.yml",
            "-o",
            tmp.path().to_str().unwrap(),
        ],
        &rules_dir,
    );
    assert!(out.status.success(), "{}", text(&out));
    if promtool_available() {
        for dir in [rules_dir.as_path(), tmp.path()] {
            let theirs = Command::new("promtool")
                .args(["check", "rules", "torchwatch.yml"])
                .current_dir(dir)
                .output()
                .unwrap();
            assert!(
                theirs.status.success(),
                "promtool check rules in {}: {}",
                dir.display(),
                text(&theirs)
            );
        }
    }
}
