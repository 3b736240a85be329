//! Email notifications against a real SMTP server (Debian's aiosmtpd, started
//! by the test on 127.0.0.1): over a plain connection, with STARTTLS and AUTH,
//! and with implicit TLS, behind a throwaway CA. The mail must carry the
//! expected subject and body, and the SMTP password must appear nowhere.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::FakeTarget;
use common::smtp::{Security, start_smtp, wait_for_mail};

const PASSWORD: &str = "Sm7p-s3cret-4b2";

/// A throwaway CA and a server certificate for 127.0.0.1 signed by it:
/// (CA file for torchwatch, certificate and key for the server).
fn throwaway_certificates(dir: &Path) -> (PathBuf, PathBuf, PathBuf) {
    let path = |name: &str| dir.join(name);
    let openssl = |args: &[&str]| {
        let status = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "openssl {args:?} failed");
    };
    openssl(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=torchwatch test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ]);
    openssl(&[
        "req",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "key.pem",
        "-out",
        "server.csr",
    ]);
    std::fs::write(
        path("server.ext"),
        "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n",
    )
    .unwrap();
    openssl(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "1",
        "-extfile",
        "server.ext",
        "-out",
        "cert.pem",
    ]);
    (path("ca.pem"), path("cert.pem"), path("key.pem"))
}

#[tokio::test]
async fn mail_goes_out_plain_over_starttls_with_auth_and_over_implicit_tls() {
    let dir = common::TempDir::new("email");
    let (ca, cert, key) = throwaway_certificates(dir.path());
    let plain = start_smtp(dir.path(), "plain", Security::Plain, None);
    let secure = start_smtp(
        dir.path(),
        "secure",
        Security::Starttls(&cert, &key),
        Some(("alerts", PASSWORD)),
    );
    let smtps = start_smtp(dir.path(), "smtps", Security::Implicit(&cert, &key), None);
    let password_file = dir.path().join("smtp-password");
    std::fs::write(&password_file, PASSWORD).unwrap();

    let target = FakeTarget::start(
        Vec::new(),
        "text/plain; version=0.0.4",
        "fake_value 20\n".into(),
    )
    .await;
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 1s\n    rules:\n      - alert: Hot\n        expr: fake_value > 10\n        labels:\n          severity: page\n        annotations:\n          summary: 'fake_value is {{ $value }}'\n",
    )
    .unwrap();
    let server = common::start(
        "email",
        &[common::ModelEntry::mlp("mlp")],
        &format!(
            r#"scrape:
  interval: 1s
  jobs:
    - job_name: fake
      targets: ['{target}']
rules:
  files: ['{rules}']
notify:
  route:
    receiver: mail
    group_wait: 0s
    group_interval: 1s
  receivers:
    - name: mail
      email_configs:
        - to: [oncall@example.org]
          from: torchwatch@example.org
          host: 127.0.0.1
          port: {plain_port}
          security: none
          send_resolved: true
        - to: [oncall@example.org, ml@example.org]
          from: torchwatch@example.org
          host: 127.0.0.1
          port: {secure_port}
          security: starttls
          ca_file: {cert}
          auth_username: alerts
          auth_password_file: {password}
          html: '<p>{{{{ .CommonAnnotations.summary }}}}</p>'
        - to: [audit@example.org]
          from: torchwatch@example.org
          host: 127.0.0.1
          port: {smtps_port}
          security: tls
          ca_file: {cert}
"#,
            target = target.address,
            rules = rules.display(),
            plain_port = plain.port,
            secure_port = secure.port,
            smtps_port = smtps.port,
            cert = ca.display(),
            password = password_file.display(),
        ),
    );
    server.wait_ready().await;

    let mail = wait_for_mail(&plain, 1).await.remove(0);
    assert_eq!(mail["from"], "torchwatch@example.org");
    assert_eq!(mail["to"], serde_json::json!(["oncall@example.org"]));
    assert_eq!(mail["tls"], false);
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: [FIRING] Hot"), "{data}");
    assert!(data.contains("fake_value is 20"), "{data}");
    // The alert list (the body is quoted-printable: `=` travels as `=3D`).
    assert!(
        data.contains("Alerts:") && data.contains("firing since"),
        "{data}"
    );

    let mail = wait_for_mail(&secure, 1).await.remove(0);
    assert_eq!(mail["tls"], true, "STARTTLS was used");
    assert_eq!(mail["authenticated"], true, "AUTH succeeded");
    assert_eq!(
        mail["to"],
        serde_json::json!(["oncall@example.org", "ml@example.org"])
    );
    let data = mail["data"].as_str().unwrap();
    assert!(data.contains("Subject: [FIRING] Hot"), "{data}");
    assert!(data.contains("multipart/alternative"), "{data}");
    assert!(data.contains("<p>fake_value is 20</p>"), "{data}");

    // Implicit TLS (SMTPS): TLS from the first byte.
    let mail = wait_for_mail(&smtps, 1).await.remove(0);
    assert_eq!(mail["tls"], true);
    assert_eq!(mail["to"], serde_json::json!(["audit@example.org"]));
    assert!(
        mail["data"]
            .as_str()
            .unwrap()
            .contains("Subject: [FIRING] Hot")
    );

    // Resolved: the plain receiver asked for it.
    target.set("text/plain; version=0.0.4", "fake_value 1\n");
    let mails = wait_for_mail(&plain, 2).await;
    assert!(
        mails[1]["data"]
            .as_str()
            .unwrap()
            .contains("Subject: [RESOLVED] Hot")
    );

    let log = std::fs::read_to_string(&server.log_file).unwrap();
    let metrics = common::Api::new(&server).metrics_text().await;
    for text in [&log, &metrics, &server.stderr_lines().join("\n")] {
        assert!(!text.contains(PASSWORD), "the SMTP password leaked");
    }
}
