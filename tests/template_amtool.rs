//! Notification templates against the real oracle: Debian's `amtool template
//! render` (Alertmanager 0.25) renders every template defined in the vendored
//! default templates, and a user file, with the same data torchwatch renders
//! them with; the outputs must be equal byte for byte.
//!
//! Needs `amtool` on PATH (`make test-deps`); without it the test is skipped
//! with a message, except under CI where it fails.

mod common;

use common::{TempDir, amtool_available};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use torchwatch::template::{NotificationAlert, NotificationData, TemplateSet, amtool_example};

fn vendored() -> String {
    format!("{}/templates/*.tmpl", env!("CARGO_MANIFEST_DIR"))
}

/// amtool's rendering, or its error.
fn amtool(globs: &[String], text: &str, html: bool, data: Option<&Path>) -> Result<String, String> {
    let mut cmd = Command::new("amtool");
    cmd.arg("template").arg("render");
    for g in globs {
        cmd.arg(format!("--template.glob={g}"));
    }
    cmd.arg(format!("--template.text={text}"));
    if html {
        cmd.arg("--template.type=html");
    }
    if let Some(d) = data {
        cmd.arg(format!("--template.data={}", d.display()));
    }
    let out = cmd.output().expect("run amtool");
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn torchwatch(
    set: &TemplateSet,
    text: &str,
    html: bool,
    data: &NotificationData,
) -> Result<String, String> {
    let t = if html {
        set.compile_html(text)
    } else {
        set.compile(text)
    }?;
    t.expand_notification(data)
}

fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .expect("a valid time")
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// The JSON `--template.data` amtool reads for `data`.
fn to_json(data: &NotificationData) -> Value {
    let alerts: Vec<Value> = data
        .alerts
        .iter()
        .map(|a| {
            json!({
                "status": a.status,
                "labels": a.labels,
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at_ms),
                "endsAt": a.ends_at_ms.map_or("0001-01-01T00:00:00Z".to_string(), rfc3339),
                "generatorURL": a.generator_url,
                "fingerprint": a.fingerprint,
            })
        })
        .collect();
    json!({
        "receiver": data.receiver,
        "status": data.status,
        "alerts": alerts,
        "groupLabels": data.group_labels,
        "commonLabels": data.common_labels,
        "commonAnnotations": data.common_annotations,
        "externalURL": data.external_url,
    })
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Data with characters every escaper treats differently, a firing and a
/// resolved alert, and fixed times.
fn tricky() -> NotificationData<'static> {
    let common = [("alertname", "Disk <Full> & \"hot\""), ("team", "ml+ops")];
    let alert = |status, extra: (&str, &str), starts, ends, url, fp: &str| {
        let mut labels = map(&common);
        labels.insert(extra.0.into(), extra.1.into());
        NotificationAlert {
            status,
            labels,
            annotations: map(&[
                ("summary", "it's 95% 'full' <b>now</b>"),
                ("runbook", "https://wiki/x?a=1&b=2"),
            ]),
            starts_at_ms: starts,
            ends_at_ms: ends,
            generator_url: url,
            fingerprint: fp.into(),
        }
    };
    NotificationData {
        status: "firing",
        receiver: "team a&b <ml>",
        group_labels: map(&[("alertname", "Disk <Full> & \"hot\"")]),
        common_labels: map(&common),
        common_annotations: map(&[("summary", "it's 95% 'full' <b>now</b>")]),
        external_url: "http://am.example:9093/prefix",
        alerts: vec![
            alert(
                "firing",
                ("instance", "host-1:9100"),
                1_796_184_306_123,
                Some(1_796_184_606_000),
                "http://prom:9090/graph?g0.expr=up%7Bjob%3D%22x%22%7D&g0.tab=1",
                "a1b2c3d4e5f60718",
            ),
            alert(
                "resolved",
                ("instance", "host-2:9100"),
                1_796_180_000_000,
                None,
                "javascript:alert(1)",
                "0000000000000001",
            ),
        ],
    }
}

const USER_TEMPLATE: &str = r#"{{ define "custom.title" -}}
[{{ .Status | toUpper }}{{ if eq .Status "firing" }}:{{ .Alerts.Firing | len }}{{ end }}] {{ .CommonLabels.alertname }}
{{- end }}
{{ define "custom.text" }}
{{- range $i, $a := .Alerts -}}
{{ $i }}: {{ $a.Labels.instance | reReplaceAll ":[0-9]+$" "" }} since {{ $a.StartsAt }} until {{ .EndsAt }}
{{- with $a.Annotations.summary }} - {{ . }}{{ else }} - no summary{{ end }}
{{ else }}no alerts
{{ end -}}
firing: {{ range .Alerts.Firing }}{{ .Fingerprint }} {{ end }}resolved: {{ len .Alerts.Resolved }}
labels: {{ range .CommonLabels.SortedPairs }}{{ .Name }}={{ .Value }};{{ end }}
names: {{ .CommonLabels.Names | join "," }} rest: {{ (.CommonLabels.Remove .GroupLabels.Names).Values | join "," }}
{{ $x := "outer" }}{{ range .Alerts }}{{ $x = .Status }}{{ end }}last status: {{ $x }}
{{ if and .Alerts (gt (len .Alerts) 1) }}many{{ else if .Alerts }}one{{ end }} {{ or .Receiver "nobody" }}
{{ printf "%q %5.1f %d %s" .Receiver 3.14159 42 .ExternalURL }} {{ index .CommonLabels "team" }} {{ slice .Receiver 0 4 }}
{{ .Receiver | urlquery }} {{ html .Receiver }} {{ js .CommonLabels.alertname }} {{ print 1 2 "a" "b" 3 }}
{{ .GroupLabels }} {{ .CommonLabels.SortedPairs }} {{ stringSlice "a" "b" }} {{ title "hello wORLD" }}
{{ match "^ml" .CommonLabels.team }} {{ safeHtml "<i>x</i>" }} {{ block "custom.footer" . }}default footer {{ .ExternalURL }}{{ end }}
{{ end }}
{{ define "custom.html" }}<p title="{{ .CommonLabels.alertname }}">{{ .CommonAnnotations.summary }}</p>
{{ range .Alerts }}<a href="{{ .GeneratorURL }}">{{ .Labels.instance }}</a> <a href="{{ $.ExternalURL }}/#/silences/new?filter={{ .Labels.alertname }}">silence</a> {{ safeHtml "<b>ok</b>" }}
{{ end }}<!-- dropped --><a href="{{ template "__alertmanagerURL" . }}">am</a>{{ end }}
"#;

/// The cases one data set is checked with: every defined name as text, the
/// HTML ones as html, and the user file's templates.
fn check(
    set: &TemplateSet,
    globs: &[String],
    data: &NotificationData,
    json_file: Option<&Path>,
) -> usize {
    let mut cases: Vec<(String, bool)> = set.names().map(|n| (n.to_string(), false)).collect();
    for html in ["email.default.html", "email.default.subject", "custom.html"] {
        if set.names().any(|n| n == html) {
            cases.push((html.to_string(), true));
        }
    }
    let mut failures = Vec::new();
    for (name, html) in &cases {
        let text = format!("{{{{ template {name:?} . }}}}");
        let want = amtool(globs, &text, *html, json_file);
        let got = torchwatch(set, &text, *html, data);
        match (&want, &got) {
            (Ok(w), Ok(g)) if w == g => {}
            // Both fail: the messages need not match (Go prints times with
            // a monotonic clock reading that torchwatch does not have).
            (Err(_), Err(_)) => {}
            _ => failures.push(format!(
                "{name} (html: {html}):\n--- amtool\n{want:?}\n--- torchwatch\n{got:?}"
            )),
        }
    }
    assert!(
        failures.is_empty(),
        "{} differences:\n{}",
        failures.len(),
        failures.join("\n")
    );
    cases.len()
}

#[test]
fn default_templates_render_as_amtool_renders_them() {
    if !amtool_available() {
        return;
    }
    let set = TemplateSet::with_defaults();
    for required in [
        "__subject",
        "__text_alert_list",
        "slack.default.title",
        "email.default.html",
    ] {
        assert!(
            set.names().any(|n| n == required),
            "{required} is not defined"
        );
    }
    // amtool's own example data: its times are time.Now(), which none of
    // the default templates print.
    let example = amtool_example(torchwatch::clock::now_ms());
    let checked = check(&set, &[vendored()], &example, None);
    assert!(checked > 40, "only {checked} templates checked");

    let dir = TempDir::new("amtool-defaults");
    let data = tricky();
    let file = dir.path().join("data.json");
    std::fs::write(&file, to_json(&data).to_string()).expect("write the data");
    check(&set, &[vendored()], &data, Some(&file));
}

#[test]
fn user_templates_render_as_amtool_renders_them() {
    if !amtool_available() {
        return;
    }
    let dir = TempDir::new("amtool-user");
    let user = dir.path().join("custom.tmpl");
    std::fs::write(&user, USER_TEMPLATE).expect("write the template");
    let set =
        TemplateSet::load(&["custom.tmpl".to_string()], dir.path()).expect("load the user file");
    assert!(set.names().any(|n| n == "custom.footer"));
    let globs = [vendored(), user.display().to_string()];
    let data = tricky();
    let file = dir.path().join("data.json");
    std::fs::write(&file, to_json(&data).to_string()).expect("write the data");
    check(&set, &globs, &data, Some(&file));
    // The same with the example data, and with no alerts at all.
    let mut empty = tricky();
    empty.alerts.clear();
    std::fs::write(&file, to_json(&empty).to_string()).expect("write the data");
    check(&set, &globs, &empty, Some(&file));
}

#[test]
fn load_errors_name_the_file_and_line() {
    let dir = TempDir::new("template-errors");
    std::fs::write(
        dir.path().join("bad.tmpl"),
        "{{ define \"x\" }}\nok\n{{ end }}\n{{ end }}\n",
    )
    .expect("write");
    let err = TemplateSet::load(&["*.tmpl".to_string()], dir.path())
        .err()
        .expect("an unexpected {{end}} fails");
    assert!(err.ends_with("bad.tmpl:4: unexpected {{end}}"), "{err}");
    assert!(err.starts_with("template: "), "{err}");
    // A glob that matches nothing is fine, as in Alertmanager.
    let set =
        TemplateSet::load(&["none/*.tmpl".to_string()], dir.path()).expect("an empty glob loads");
    assert!(set.names().any(|n| n == "slack.default.title"));
}
