//! `tests/smtp_server.py` (Debian's aiosmtpd) as a test's SMTP server on 127.0.0.1.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// `tests/smtp_server.py`, stopped on drop.
pub struct Smtp {
    child: Child,
    pub port: u16,
    out: PathBuf,
}

impl Drop for Smtp {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How the test server secures connections.
pub enum Security<'a> {
    Plain,
    Starttls(&'a Path, &'a Path),
    Implicit(&'a Path, &'a Path),
}

/// Starts it; `user` (with `password`) turns AUTH on.
pub fn start_smtp(dir: &Path, name: &str, security: Security, user: Option<(&str, &str)>) -> Smtp {
    start_smtp_at(dir, name, super::free_port(), security, user)
}

/// As [`start_smtp`] on `port`, for tests whose torchwatch was told of the relay before it
/// started.
pub fn start_smtp_at(
    dir: &Path,
    name: &str,
    port: u16,
    security: Security,
    user: Option<(&str, &str)>,
) -> Smtp {
    let out = dir.join(format!("{name}.jsonl"));
    let mut command = Command::new("/usr/bin/python3");
    command
        .arg(super::root().join("tests/smtp_server.py"))
        .args(["--port", &port.to_string(), "--out"])
        .arg(&out);
    match security {
        Security::Plain => {}
        Security::Starttls(cert, key) => {
            command.arg("--cert").arg(cert).arg("--key").arg(key);
        }
        Security::Implicit(cert, key) => {
            command
                .arg("--cert")
                .arg(cert)
                .arg("--key")
                .arg(key)
                .arg("--implicit");
        }
    }
    if let Some((user, password)) = user {
        command.args(["--user", user, "--password", password]);
    }
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("Debian's python3 with python3-aiosmtpd (make test-deps installs it)");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    assert_eq!(line.trim(), "ready", "the SMTP server did not start");
    Smtp { child, port, out }
}

/// The mails it got so far.
pub fn received(smtp: &Smtp) -> Vec<Value> {
    std::fs::read_to_string(&smtp.out)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls until it got `n` mails.
pub async fn wait_for_mail(smtp: &Smtp, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mails = received(smtp);
        if mails.len() >= n {
            return mails;
        }
        assert!(Instant::now() < deadline, "{} mails of {n}", mails.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
