//! The exporter-toolkit web config on a live torchwatch: HTTPS with a private CA and required
//! client certificates, basic auth with a bcrypt hash, extra headers, certificate rotation
//! without a restart, an invalid change kept out, and Debian's Prometheus and NVIDIA's
//! tritonclient talking to it over TLS.

mod common;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const USER: &str = "alice";
const PASSWORD: &str = "correct horse battery staple";

/// A CA and the certificates it signs, written as PEM files.
struct Authority {
    ca: PathBuf,
    params: rcgen::CertificateParams,
    key: rcgen::KeyPair,
}

impl Authority {
    fn new(dir: &Path, name: &str) -> Authority {
        let mut params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, format!("{name} test CA"));
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.clone().self_signed(&key).unwrap();
        let ca = dir.join(format!("{name}-ca.pem"));
        std::fs::write(&ca, certificate.pem()).unwrap();
        Authority { ca, params, key }
    }

    /// A leaf for `names` (DNS names or IP addresses): (certificate PEM, key PEM).
    fn issue(&self, names: &[&str]) -> (String, String) {
        let issuer = self.params.clone().self_signed(&self.key).unwrap();
        let mut params =
            rcgen::CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, names[0]);
        let key = rcgen::KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &issuer, &self.key).unwrap();
        (certificate.pem(), key.serialize_pem())
    }

    /// A leaf written to `<dir>/<stem>.pem` and `<stem>.key`.
    fn issue_files(&self, dir: &Path, stem: &str, names: &[&str]) -> (PathBuf, PathBuf) {
        let (cert, key) = self.issue(names);
        let (cert_path, key_path) = (
            dir.join(format!("{stem}.pem")),
            dir.join(format!("{stem}.key")),
        );
        std::fs::write(&cert_path, cert).unwrap();
        std::fs::write(&key_path, key).unwrap();
        (cert_path, key_path)
    }
}

/// A client trusting `ca`, presenting `identity` (certificate and key files) when given.
fn client(ca: &Path, identity: Option<(&Path, &Path)>) -> reqwest::Client {
    torchwatch::install_tls_provider();
    let mut builder = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(ca).unwrap()).unwrap()])
        .timeout(Duration::from_secs(10));
    if let Some((cert, key)) = identity {
        let mut pem = std::fs::read(cert).unwrap();
        pem.extend(std::fs::read(key).unwrap());
        builder = builder.identity(reqwest::Identity::from_pem(&pem).unwrap());
    }
    builder.build().unwrap()
}

/// The status of GET `url` with the right password, or the error text when there is no answer.
async fn status_of(client: &reqwest::Client, url: String) -> Result<u16, String> {
    client
        .get(url)
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .map(|r| r.status().as_u16())
        .map_err(|e| format!("{e:?}"))
}

/// Polls until `check` accepts what `probe` returns, for changes torchwatch picks up by itself.
async fn eventually<T: std::fmt::Debug, F: std::future::Future<Output = T>>(
    what: &str,
    mut probe: impl FnMut() -> F,
    check: impl Fn(&T) -> bool,
) -> T {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = probe().await;
        if check(&got) {
            return got;
        }
        assert!(Instant::now() < deadline, "{what}: still {got:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn tls_client_certificates_and_basic_auth_guard_every_route() {
    let dir = common::TempDir::new("web-security");
    let pki = Authority::new(dir.path(), "main");
    let (server_cert, server_key) =
        pki.issue_files(dir.path(), "server", &["localhost", "127.0.0.1"]);
    let (client_cert, client_key) = pki.issue_files(dir.path(), "client", &["prometheus"]);
    let stranger = Authority::new(dir.path(), "stranger");
    let (stranger_cert, stranger_key) = stranger.issue_files(dir.path(), "stranger", &["x"]);
    // Cost 4 keeps the test fast; the cost is part of the hash, as with htpasswd's.
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let web_config = dir.path().join("web.yml");
    let write_web_config = |cert: &Path, key: &Path| {
        std::fs::write(
            &web_config,
            format!(
                "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: \
                 RequireAndVerifyClientCert\n  client_ca_file: {}\n  min_version: TLS12\n\
                 http_server_config:\n  headers:\n    X-Frame-Options: deny\n    \
                 X-Content-Type-Options: nosniff\nbasic_auth_users:\n  {USER}: {hash}\n",
                cert.display(),
                key.display(),
                pki.ca.display()
            ),
        )
        .unwrap();
    };
    write_web_config(&server_cert, &server_key);
    let server = common::start(
        "web-security",
        &[
            common::ModelEntry::mlp("mlp"),
            common::ModelEntry::cnn("cnn"),
        ],
        &format!("  web_config_file: {}", web_config.display()),
    );
    let base = server.base.replacen("http://", "https://", 1);
    let url = |path: &str| format!("{base}{path}");
    let trusted = client(&pki.ca, Some((&client_cert, &client_key)));
    let _ready = eventually(
        "readiness over HTTPS",
        || status_of(&trusted, url("/v2/health/ready")),
        |s| *s == Ok(200),
    )
    .await;

    // The right user, password and certificate: served, with the configured headers.
    let response = trusted
        .get(url("/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["x-frame-options"], "deny");
    assert_eq!(response.headers()["x-content-type-options"], "nosniff");
    let metrics = response.text().await.unwrap();
    assert!(metrics.contains("torchwatch_requests_total"), "{metrics}");

    // Wrong password, unknown user, no credentials: 401 with the challenge, headers still set.
    for (user, password) in [
        (USER, Some("wrong")),
        ("mallory", Some(PASSWORD)),
        ("", None),
    ] {
        let mut request = trusted.get(url("/v2/health/live"));
        if password.is_some() {
            request = request.basic_auth(user, password);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{user}");
        assert_eq!(response.headers()["www-authenticate"], "Basic");
        assert_eq!(response.headers()["x-frame-options"], "deny");
    }

    // No client certificate, or one another CA signed: the handshake is refused.
    for (what, client) in [
        ("no client certificate", client(&pki.ca, None)),
        (
            "a stranger's certificate",
            client(&pki.ca, Some((&stranger_cert, &stranger_key))),
        ),
    ] {
        let outcome = status_of(&client, url("/v2/health/live")).await;
        assert!(outcome.is_err(), "{what}: {outcome:?}");
    }

    // Plain HTTP on the TLS port: Go's answer, then the connection closes.
    let address = server.base.trim_start_matches("http://").to_string();
    let mut plain = std::net::TcpStream::connect(&address).unwrap();
    plain
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    plain
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut answer = String::new();
    plain.read_to_string(&mut answer).unwrap();
    assert!(
        answer.starts_with("HTTP/1.0 400 Bad Request")
            && answer.contains("Client sent an HTTP request to an HTTPS server."),
        "{answer}"
    );

    // Lifecycle routes stay off even for an authenticated client.
    let reload = trusted
        .post(url("/-/reload"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap();
    assert_eq!(reload.status(), 403);

    // Inference over HTTPS.
    let body = common::infer_body(&[1, 784], &[0.5; 784]);
    let inferred = trusted
        .post(url("/v2/models/mlp/infer"))
        .basic_auth(USER, Some(PASSWORD))
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(inferred.status(), 200);
    let inferred: serde_json::Value = inferred.json().await.unwrap();
    assert_eq!(common::output_data(&inferred).len(), 10, "{inferred}");

    // torchwatch scrapes itself in-process (it cannot present a client certificate): up is 1.
    eventually(
        "the self-scrape's up",
        || async {
            let response = trusted
                .get(
                    reqwest::Url::parse_with_params(
                        &url("/api/v1/query"),
                        [("query", "up{job=\"torchwatch\"}")],
                    )
                    .unwrap(),
                )
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .unwrap();
            response.json::<serde_json::Value>().await.unwrap()["data"]["result"][0]["value"][1]
                .clone()
        },
        |v| v == "1",
    )
    .await;

    // NVIDIA's client over HTTPS with a client certificate and basic auth.
    let (ca, cert, key) = (
        pki.ca.display().to_string(),
        client_cert.display().to_string(),
        client_key.display().to_string(),
    );
    let credentials = format!("{USER}:{PASSWORD}");
    let stdout = common::triton_client_check(
        &address,
        &[
            ("TRITON_TLS_CA", &ca),
            ("TRITON_TLS_CERT", &cert),
            ("TRITON_TLS_KEY", &key),
            ("TRITON_BASIC_AUTH", &credentials),
        ],
    )
    .await;
    // 2 models x 2 reference cases x (JSON, binary), as in the plain-HTTP check.
    assert_eq!(
        stdout.lines().filter(|l| l.contains("infer batch")).count(),
        8,
        "{stdout}"
    );

    // Debian's Prometheus scrapes it with its tls_config and basic_auth.
    let prometheus_config = dir.path().join("prometheus.yml");
    std::fs::write(
        &prometheus_config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: tw\n    scheme: https\n    \
             static_configs: [{{targets: ['{address}']}}]\n    tls_config:\n      ca_file: {}\n      \
             cert_file: {}\n      key_file: {}\n    basic_auth:\n      username: {USER}\n      \
             password: '{PASSWORD}'\n",
            pki.ca.display(),
            client_cert.display(),
            client_key.display()
        ),
    )
    .unwrap();
    let prometheus = common::PrometheusProcess::start(&prometheus_config, dir.path());
    let plain_client = common::client();
    eventually(
        "Prometheus scraping torchwatch over HTTPS",
        || async {
            let Ok(response) = plain_client
                .get(
                    reqwest::Url::parse_with_params(
                        &format!("{}/api/v1/query", prometheus.base),
                        [(
                            "query",
                            "scrape_samples_scraped{job=\"tw\"} * up{job=\"tw\"}",
                        )],
                    )
                    .unwrap(),
                )
                .send()
                .await
            else {
                return 0.0;
            };
            let Ok(body) = response.json::<serde_json::Value>().await else {
                return 0.0;
            };
            body["data"]["result"][0]["value"][1]
                .as_str()
                .and_then(|v| v.parse::<f64>().ok())
                .unwrap_or(0.0)
        },
        |samples| *samples > 100.0,
    )
    .await;

    // A rotated certificate (from a new CA) is served without a restart.
    let rotated = Authority::new(dir.path(), "rotated");
    let (cert, key) = rotated.issue(&["localhost", "127.0.0.1"]);
    std::fs::write(&server_key, key).unwrap();
    std::fs::write(&server_cert, cert).unwrap();
    let trusting_rotated = client(&rotated.ca, Some((&client_cert, &client_key)));
    let _served = eventually(
        "the rotated certificate",
        || status_of(&trusting_rotated, url("/v2/health/live")),
        |s| *s == Ok(200),
    )
    .await;
    // New connections get the new certificate (open ones keep theirs), so a fresh client that
    // trusts only the old CA is refused.
    let trusting_old = client(&pki.ca, Some((&client_cert, &client_key)));
    assert!(
        status_of(&trusting_old, url("/v2/health/live"))
            .await
            .is_err()
    );

    // A broken change is refused once and the last good configuration stays in force. (The
    // rotation above may have been refused once too, between the key's write and the cert's.)
    let refusals = || {
        server
            .log_lines()
            .iter()
            .filter(|l| l["event"] == "web_config_refused")
            .count()
    };
    let before = refusals();
    std::fs::write(
        &web_config,
        "tls_server_config: {cert_file: [not, a, path]}\n",
    )
    .unwrap();
    eventually(
        "the refusal in the log",
        || async { refusals() },
        |n| *n > before,
    )
    .await;
    assert_eq!(
        status_of(&trusting_rotated, url("/v2/health/live")).await,
        Ok(200)
    );
    // Two more checks of the unchanged broken file must not log again.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        refusals(),
        before + 1,
        "a refused file is reported once per change"
    );

    // The bcrypt hash and the password appear nowhere torchwatch writes.
    let log = std::fs::read_to_string(&server.log_file).unwrap();
    let stderr = server.stderr_lines().join("\n");
    let metrics = trusting_rotated
        .get(url("/metrics"))
        .basic_auth(USER, Some(PASSWORD))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for secret in [hash.as_str(), PASSWORD] {
        assert!(!log.contains(secret), "the log holds a secret");
        assert!(!stderr.contains(secret), "stderr holds a secret");
        assert!(!metrics.contains(secret), "/metrics holds a secret");
    }
    drop(prometheus);
}

/// Outgoing TLS: a torchwatch whose rules query a datasource and whose alerts go to an
/// Alertmanager, both a torchwatch behind mutual TLS and basic auth (it answers the query API
/// and takes alerts on Alertmanager's v2 API). The alert exists only if the query crossed TLS,
/// and arrives only if the forward did.
#[tokio::test]
async fn the_datasource_and_alertmanagers_use_tls_config_and_basic_auth() {
    let dir = common::TempDir::new("web-security-out");
    let pki = Authority::new(dir.path(), "out");
    let (server_cert, server_key) = pki.issue_files(dir.path(), "server", &["guarded.test"]);
    let (client_cert, client_key) = pki.issue_files(dir.path(), "client", &["rules"]);
    let hash = bcrypt::hash(PASSWORD, 4).unwrap();
    let web_config = dir.path().join("web.yml");
    std::fs::write(
        &web_config,
        format!(
            "tls_server_config:\n  cert_file: {}\n  key_file: {}\n  client_auth_type: \
             RequireAndVerifyClientCert\n  client_ca_file: {}\nbasic_auth_users:\n  {USER}: {hash}\n",
            server_cert.display(),
            server_key.display(),
            pki.ca.display()
        ),
    )
    .unwrap();
    let guarded = common::start(
        "web-security-guarded",
        &[],
        &format!(
            "  web_config_file: {}\nscrape:\n  self: false",
            web_config.display()
        ),
    );
    let base = guarded.base.replacen("http://", "https://", 1);
    // This test's own client reaches it by the name its certificate carries.
    let address: std::net::SocketAddr = guarded.base.trim_start_matches("http://").parse().unwrap();
    let named = format!("https://guarded.test:{}", address.port());
    let mut pem = std::fs::read(&client_cert).unwrap();
    pem.extend(std::fs::read(&client_key).unwrap());
    torchwatch::install_tls_provider();
    let trusted = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(&std::fs::read(&pki.ca).unwrap()).unwrap()])
        .identity(reqwest::Identity::from_pem(&pem).unwrap())
        .resolve("guarded.test", address)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let _live = eventually(
        "the guarded torchwatch answers",
        || status_of(&trusted, format!("{named}/v2/health/live")),
        |s| *s == Ok(200),
    )
    .await;

    // The certificate names guarded.test, not 127.0.0.1: server_name makes it match.
    let password_file = dir.path().join("password");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let client_settings = format!(
        "basic_auth: {{username: {USER}, password_file: {}}}\n      tls_config: {{ca_file: {}, \
         cert_file: {}, key_file: {}, server_name: guarded.test}}",
        password_file.display(),
        pki.ca.display(),
        client_cert.display(),
        client_key.display()
    );
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 200ms\n    rules:\n      - alert: QueriedOverTls\n        \
         expr: vector(1)\n        labels: {severity: page}\n",
    )
    .unwrap();
    let sender = common::start(
        "web-security-sender",
        &[],
        &format!(
            "scrape:\n  self: false\nrules:\n  files: ['{}']\n  datasource:\n    url: {base}\n    \
             {}\nnotify:\n  alertmanagers:\n    - url: {base}\n      {client_settings}\n",
            rules.display(),
            client_settings.replace("\n      ", "\n    "),
        ),
    );
    sender.wait_ready().await;
    let alerts = eventually(
        "the alert forwarded over TLS",
        || async {
            let response = trusted
                .get(format!("{named}/api/v2/alerts"))
                .basic_auth(USER, Some(PASSWORD))
                .send()
                .await
                .unwrap();
            response.json::<serde_json::Value>().await.unwrap()
        },
        |alerts| {
            alerts.as_array().is_some_and(|a| {
                a.iter()
                    .any(|x| x["labels"]["alertname"] == "QueriedOverTls")
            })
        },
    )
    .await;
    assert!(!alerts.to_string().contains(PASSWORD));
    let log = std::fs::read_to_string(&sender.log_file).unwrap();
    assert!(!log.contains(PASSWORD), "the password reached the log");
}
