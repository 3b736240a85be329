//! One `alertmanager.yml` (global SMTP and Slack settings, `match`/`match_re`, time intervals,
//! a template file with `range .Alerts`, an email and a Slack receiver) checked by Debian's
//! `amtool check-config` and by `torchwatch check config`, then run under torchwatch and
//! under Debian's Alertmanager with the same alert: the Slack message and the mail each
//! delivers must be the same.

mod common;

use std::process::Command;

use common::smtp::{Security, start_smtp, wait_for_mail};
use serde_json::{Value, json};

const EXTERNAL_URL: &str = "http://alerts.example:9093";

const TEMPLATE: &str = r#"{{ define "ml.subject" }}[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .CommonLabels.alertname }} ({{ .CommonLabels.model }}){{ end }}
{{ define "ml.text" }}{{ range .Alerts }}* {{ .Labels.alertname }} on {{ .Labels.model }}: {{ .Annotations.summary }}
{{ end }}{{ with .CommonLabels.team }}team {{ . }}{{ end }}{{ end }}
"#;

fn alertmanager_yml(smtp_port: u16, slack_url: &str) -> String {
    format!(
        r#"global:
  resolve_timeout: 5m
  smtp_smarthost: 127.0.0.1:{smtp_port}
  smtp_from: alertmanager@example.org
  smtp_hello: torchwatch.test
  smtp_require_tls: false
  slack_api_url: {slack_url}
templates:
  - templates/*.tmpl
time_intervals:
  - name: always
    time_intervals:
      - weekdays: ['sunday:saturday']
  - name: long-ago
    time_intervals:
      - years: ['2001']
route:
  receiver: nobody
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
  routes:
    - receiver: ml-team
      match:
        team: ml
      match_re:
        severity: crit.*
      active_time_intervals: [always]
      mute_time_intervals: [long-ago]
receivers:
  - name: nobody
  - name: ml-team
    email_configs:
      - to: 'oncall@example.org, ml@example.org'
        headers:
          Subject: '{{{{ template "ml.subject" . }}}}'
        text: '{{{{ template "ml.text" . }}}}'
    slack_configs:
      - channel: '#ml-alerts'
        title: '{{{{ template "ml.subject" . }}}}'
        text: '{{{{ template "ml.text" . }}}}'
"#
    )
}

/// The headers and parts of a raw mail, decoded by Python's email package.
fn parse_mail(raw: &str) -> Value {
    let script = r#"
import email, json, sys
from email import policy
m = email.message_from_string(sys.stdin.read(), policy=policy.default)
parts = {}
for part in m.walk():
    if part.get_content_maintype() == "text":
        parts[part.get_content_type()] = part.get_content()
print(json.dumps({"subject": m["Subject"], "from": m["From"],
                  "to": sorted(a.addr_spec for a in m["To"].addresses), "parts": parts}))
"#;
    let mut child = Command::new("/usr/bin/python3")
        .args(["-c", script])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(raw.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "cannot parse the mail: {raw}");
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test]
async fn an_alertmanager_file_is_accepted_and_notifies_as_alertmanager_does() {
    if !common::amtool_available() {
        return;
    }
    let dir = common::TempDir::new("amconfig");
    let smtp = start_smtp(dir.path(), "smtp", Security::Plain, None);
    let (slack_url, slack) = common::receiver("/slack", 0).await;
    let am_yml = alertmanager_yml(smtp.port, &slack_url);
    let am_file = dir.path().join("alertmanager.yml");
    std::fs::write(&am_file, &am_yml).unwrap();
    std::fs::create_dir_all(dir.path().join("templates")).unwrap();
    std::fs::write(dir.path().join("templates/ml.tmpl"), TEMPLATE).unwrap();

    // Both checkers accept the file.
    let amtool = Command::new("amtool")
        .arg("check-config")
        .arg(&am_file)
        .output()
        .expect("amtool runs (make test-deps installs Debian's package)");
    let said = String::from_utf8_lossy(&amtool.stdout);
    assert!(
        amtool.status.success() && said.contains("SUCCESS"),
        "{said}"
    );
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: ModelDown\n        expr: vector(1)\n        labels: {severity: critical, team: ml, model: mlp}\n        annotations: {summary: mlp answers no requests}\n",
    )
    .unwrap();
    let server_yaml = format!(
        "  external_url: {EXTERNAL_URL}\nscrape:\n  self: false\nrules:\n  files: ['{}']\nnotify:\n  alertmanager_config_file: {}\n",
        rules.display(),
        am_file.display()
    );
    let config = dir.path().join("torchwatch.yaml");
    std::fs::write(
        &config,
        format!("server:\n  listen: 127.0.0.1:0\n{server_yaml}models: []\n"),
    )
    .unwrap();
    let check = Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["check", "config"])
        .arg(&config)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}{}",
        String::from_utf8_lossy(&check.stdout),
        String::from_utf8_lossy(&check.stderr)
    );

    // torchwatch delivers first.
    let server = common::start("amconfig", &[], &server_yaml);
    let ours_slack = common::wait_for_bodies(&slack, 1).await.remove(0);
    let ours_mail = parse_mail(wait_for_mail(&smtp, 1).await[0]["data"].as_str().unwrap());
    drop(server);
    // The alert's link to its expression, which Alertmanager is then given as it is.
    let html = ours_mail["parts"]["text/html"].as_str().unwrap_or_default();
    let generator_url = html
        .split("href=\"")
        .map(|s| s.split('"').next().unwrap_or_default())
        .find(|link| link.contains("query="))
        .unwrap_or_else(|| panic!("no generator URL in {html}"))
        .replace("&amp;", "&");

    // Then Alertmanager, on the same file, with the same alert.
    let am_dir = common::TempDir::new("amconfig-am");
    std::fs::create_dir_all(am_dir.path().join("templates")).unwrap();
    std::fs::write(am_dir.path().join("templates/ml.tmpl"), TEMPLATE).unwrap();
    let am = common::Alertmanager::start_in(am_dir, &am_yml, Some(EXTERNAL_URL)).await;
    let posted = common::client()
        .post(format!("{}/api/v2/alerts", am.base))
        .json(&json!([{
            "labels": {"alertname": "ModelDown", "severity": "critical", "team": "ml", "model": "mlp"},
            "annotations": {"summary": "mlp answers no requests"},
            "generatorURL": generator_url,
        }]))
        .send()
        .await
        .unwrap();
    assert_eq!(posted.status(), 200);
    let theirs_slack = common::wait_for_bodies(&slack, 2).await.remove(1);
    let theirs_mail = parse_mail(wait_for_mail(&smtp, 2).await[1]["data"].as_str().unwrap());

    assert_eq!(
        ours_slack["attachments"][0]["title"],
        "[FIRING:1] ModelDown (mlp)"
    );
    assert_eq!(
        ours_slack["attachments"][0]["text"],
        "* ModelDown on mlp: mlp answers no requests\nteam ml"
    );
    assert_eq!(ours_slack, theirs_slack, "the Slack messages differ");
    assert_eq!(ours_mail["subject"], "[FIRING:1] ModelDown (mlp)");
    assert_eq!(ours_mail["from"], "alertmanager@example.org");
    assert_eq!(
        ours_mail["to"],
        json!(["ml@example.org", "oncall@example.org"])
    );
    for field in ["subject", "from", "to"] {
        assert_eq!(
            ours_mail[field], theirs_mail[field],
            "the mails' {field} differ"
        );
    }
    assert_eq!(
        ours_mail["parts"]["text/plain"].as_str().map(str::trim_end),
        theirs_mail["parts"]["text/plain"]
            .as_str()
            .map(str::trim_end),
        "the text parts differ"
    );
    assert_eq!(
        ours_mail["parts"]["text/html"], theirs_mail["parts"]["text/html"],
        "the HTML parts differ"
    );
}
