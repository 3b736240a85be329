//! Starts the real `torchwatch` binary on a free port with a test config, and stops it.
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod smtp;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use serde_json::Value;

/// An HTTP client for tests (the crate's TLS provider installed first).
pub fn client() -> reqwest::Client {
    torchwatch::install_tls_provider();
    reqwest::Client::new()
}

/// A port free on 127.0.0.1 right now, for servers the tests start.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The repository root, where `models/` lives.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Whether Debian's `amtool` is installed; under CI its absence fails the test instead of
/// skipping it.
pub fn amtool_available() -> bool {
    let found = Command::new("amtool").arg("--version").output().is_ok();
    assert!(
        found || std::env::var_os("CI").is_none(),
        "amtool is missing: install prometheus-alertmanager (make test-deps)"
    );
    if !found {
        eprintln!(
            "SKIPPED: amtool is not installed (Debian's prometheus-alertmanager provides it)"
        );
    }
    found
}

/// A fresh directory under the system temp dir, removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        let dir = std::env::temp_dir().join(format!(
            "torchwatch-test-{tag}-{}-{nanos}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A model entry of a test config.
pub struct ModelEntry {
    pub name: &'static str,
    pub file: &'static str,
    pub input_shape: &'static str,
    pub output_shape: &'static str,
    pub batching: &'static str,
    pub cache: &'static str,
    pub instances: &'static str,
}

impl ModelEntry {
    pub fn mlp(name: &'static str) -> ModelEntry {
        ModelEntry {
            name,
            file: "mlp.pt",
            input_shape: "[-1, 784]",
            output_shape: "[-1, 10]",
            batching: "{enabled: true, max_batch_size: 64, max_queue_delay: 5ms, queue_capacity: 256}",
            cache: "{enabled: false}",
            instances: "{min: 1, max: 1}",
        }
    }

    pub fn cnn(name: &'static str) -> ModelEntry {
        ModelEntry {
            input_shape: "[-1, 3, 64, 64]",
            file: "cnn.pt",
            ..ModelEntry::mlp(name)
        }
    }

    /// `models/picky.pt`: twice its `[-1, 4]` input, and an error for any negative value.
    pub fn picky(name: &'static str) -> ModelEntry {
        ModelEntry {
            input_shape: "[-1, 4]",
            output_shape: "[-1, 4]",
            file: "picky.pt",
            ..ModelEntry::mlp(name)
        }
    }

    fn yaml(&self) -> String {
        format!(
            "  - name: {}\n    path: {}\n    inputs: [{{name: input__0, datatype: FP32, shape: {}}}]\n    \
             outputs: [{{name: output__0, datatype: FP32, shape: {}}}]\n    batching: {}\n    cache: {}\n    \
             instances: {}\n",
            self.name,
            root().join("models").join(self.file).display(),
            self.input_shape,
            self.output_shape,
            self.batching,
            self.cache,
            self.instances
        )
    }
}

/// Runs tests/triton_client_check.py (NVIDIA's tritonclient) against `address` with `env`
/// (TLS and basic-auth settings), asserts it passed, and returns what it printed.
pub async fn triton_client_check(address: &str, env: &[(&str, &str)]) -> String {
    let python = root().join(".venv/bin/python");
    let output = tokio::process::Command::new(&python)
        .arg(root().join("tests/triton_client_check.py"))
        .arg(address)
        .arg(root().join("models"))
        .envs(env.iter().copied())
        .output()
        .await
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}); run `make test-deps`",
                python.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "tritonclient check failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    stdout
}

/// A running `torchwatch serve`.
pub struct Server {
    child: Option<Child>,
    pub base: String,
    pub log_file: PathBuf,
    stderr: mpsc::Receiver<String>,
    _dir: TempDir,
}

/// `torchwatch serve` with `models` and extra `server:` keys, on a free port. Returns once it
/// listens; call [`Server::wait_ready`] before inference.
pub fn start(tag: &str, models: &[ModelEntry], server_yaml: &str) -> Server {
    start_with_logging("", tag, models, server_yaml)
}

/// [`start`] with extra `logging:` keys.
pub fn start_with_logging(
    logging_yaml: &str,
    tag: &str,
    models: &[ModelEntry],
    server_yaml: &str,
) -> Server {
    let dir = TempDir::new(tag);
    let log_file = dir.path().join("torchwatch.log");
    let mut config = format!(
        "server:\n  listen: 127.0.0.1:0\n{server_yaml}\nlogging:\n{logging_yaml}\n  file: {}\nmodels:{}\n",
        log_file.display(),
        if models.is_empty() { " []" } else { "" }
    );
    for model in models {
        config.push_str(&model.yaml());
    }
    let config_path = dir.path().join("torchwatch.yaml");
    std::fs::write(&config_path, config).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_torchwatch"))
        .args(["serve", "--config"])
        .arg(&config_path)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("torchwatch starts");
    // The bound port comes from the `server_started` log line on stdout.
    let stdout = child.stdout.take().unwrap();
    let (port_tx, port_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Ok(event) = serde_json::from_str::<Value>(&line)
                && event["event"] == "server_started"
            {
                let _ = port_tx.send(event["listen"].as_str().unwrap_or_default().to_owned());
            }
        }
    });
    let stderr = child.stderr.take().unwrap();
    let (err_tx, err_rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = err_tx.send(line);
        }
    });
    let listen = port_rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            panic!(
                "torchwatch did not report server_started: {:?}",
                err_rx.try_iter().collect::<Vec<_>>()
            )
        });
    Server {
        child: Some(child),
        base: format!("http://{listen}"),
        log_file,
        stderr: err_rx,
        _dir: dir,
    }
}

impl Server {
    /// Polls `/v2/health/ready` until 200.
    pub async fn wait_ready(&self) {
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let response = client
                .get(format!("{}/v2/health/ready", self.base))
                .send()
                .await;
            if matches!(&response, Ok(r) if r.status() == 200) {
                return;
            }
            assert!(Instant::now() < deadline, "torchwatch not ready after 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Sends SIGTERM.
    pub fn signal_term(&self) {
        self.signal("TERM");
    }

    /// Sends a signal by name (`TERM`, `HUP`, ...).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    /// The config file `start` wrote, for tests that change it and reload.
    pub fn config_path(&self) -> PathBuf {
        self._dir.path().join("torchwatch.yaml")
    }

    /// Waits for the process to exit (after a signal) and returns its status. On timeout the
    /// process stays owned, so `Drop` still kills it.
    pub fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let child = self.child.as_mut().expect("the server is running");
            if let Some(status) = child.try_wait().unwrap() {
                self.child = None;
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "torchwatch did not exit after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The JSON lines of the log file so far.
    pub fn log_lines(&self) -> Vec<Value> {
        std::fs::read_to_string(&self.log_file)
            .unwrap_or_default()
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Polls the log file until `predicate` holds for the lines so far.
    pub async fn wait_for_logs(
        &self,
        what: &str,
        predicate: impl Fn(&[Value]) -> bool,
    ) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.log_lines();
            if predicate(&lines) {
                return lines;
            }
            assert!(Instant::now() < deadline, "log never showed {what}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.try_iter().collect()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// A reference case from `models/<model>.reference.json`: input and PyTorch's output.
pub struct Reference {
    pub shape: Vec<i64>,
    pub input: Vec<f32>,
    pub output_shape: Vec<i64>,
    pub output: Vec<f32>,
}

pub fn references(model: &str) -> Vec<Reference> {
    let text =
        std::fs::read_to_string(root().join(format!("models/{model}.reference.json"))).unwrap();
    let parsed: Value = serde_json::from_str(&text).unwrap();
    let floats = |v: &Value| -> Vec<f32> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap() as f32)
            .collect()
    };
    let ints = |v: &Value| -> Vec<i64> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_i64().unwrap())
            .collect()
    };
    parsed["cases"]
        .as_array()
        .unwrap()
        .iter()
        .map(|case| Reference {
            shape: ints(&case["input"]["shape"]),
            input: floats(&case["input"]["data"]),
            output_shape: ints(&case["output"]["shape"]),
            output: floats(&case["output"]["data"]),
        })
        .collect()
}

/// A KServe V2 JSON request with one FP32 input.
pub fn infer_body(shape: &[i64], data: &[f32]) -> Value {
    serde_json::json!({
        "inputs": [{"name": "input__0", "shape": shape, "datatype": "FP32", "data": data}]
    })
}

/// The `output__0` data of a JSON response.
pub fn output_data(response: &Value) -> Vec<f32> {
    response["outputs"][0]["data"]
        .as_array()
        .unwrap_or_else(|| panic!("no output data in {response}"))
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Largest absolute difference of two equally long vectors.
pub fn max_abs_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len(), "lengths differ");
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f32::max)
}

/// A binary-extension request with one FP32 input: the JSON header and the body.
pub fn binary_request(shape: &[i64], data: &[f32]) -> (usize, Vec<u8>) {
    let header = serde_json::json!({
        "inputs": [{"name": "input__0", "shape": shape, "datatype": "FP32",
                    "parameters": {"binary_data_size": data.len() * 4}}]
    })
    .to_string();
    let mut body = header.clone().into_bytes();
    body.extend(data.iter().flat_map(|v| v.to_le_bytes()));
    (header.len(), body)
}

/// Posts a [`binary_request`]; returns the status, Retry-After, and the JSON response.
pub async fn post_binary(
    client: &reqwest::Client,
    url: String,
    (header_length, body): (usize, Vec<u8>),
) -> (u16, Option<String>, Value) {
    let response = client
        .post(url)
        .header("Inference-Header-Content-Length", header_length)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry_after, response.json().await.unwrap())
}

/// A scrape target the test controls: serves `/metrics` with the content type
/// and body last set, to requests carrying one of the accepted `Authorization`
/// values (any request when none are given).
pub struct FakeTarget {
    pub address: String,
    state: std::sync::Arc<std::sync::Mutex<(&'static str, String)>>,
}

impl FakeTarget {
    pub async fn start(
        accepted_auth: Vec<String>,
        content_type: &'static str,
        body: String,
    ) -> FakeTarget {
        use axum::http::{HeaderMap, StatusCode, header};
        let state = std::sync::Arc::new(std::sync::Mutex::new((content_type, body)));
        let served = state.clone();
        let handler = move |headers: HeaderMap| {
            let served = served.clone();
            let accepted = accepted_auth.clone();
            async move {
                let given = headers
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if !accepted.is_empty() && !accepted.iter().any(|a| a == given) {
                    return (
                        StatusCode::UNAUTHORIZED,
                        [(header::CONTENT_TYPE, "text/plain")],
                        String::new(),
                    );
                }
                let (content_type, body) = served.lock().unwrap().clone();
                (StatusCode::OK, [(header::CONTENT_TYPE, content_type)], body)
            }
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap().to_string();
        let app = axum::Router::new().route("/metrics", axum::routing::get(handler));
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        FakeTarget { address, state }
    }

    /// Changes what the next scrape gets.
    pub fn set(&self, content_type: &'static str, body: &str) {
        *self.state.lock().unwrap() = (content_type, body.to_string());
    }
}

/// Prometheus' query API of a running torchwatch.
pub struct Api {
    pub client: reqwest::Client,
    pub base: String,
}

impl Api {
    pub fn new(server: &Server) -> Api {
        Api {
            client: client(),
            base: server.base.clone(),
        }
    }

    pub async fn get(&self, path: &str, params: &[(&str, &str)]) -> (u16, Value) {
        let url = reqwest::Url::parse_with_params(&format!("{}{path}", self.base), params).unwrap();
        let response = self.client.get(url).send().await.unwrap();
        (response.status().as_u16(), response.json().await.unwrap())
    }

    /// `/metrics` as Prometheus text.
    pub async fn metrics_text(&self) -> String {
        let response = self
            .client
            .get(format!("{}/metrics", self.base))
            .send()
            .await
            .unwrap();
        response.text().await.unwrap()
    }

    /// The instant vector of `query` now, as (labels, value) pairs.
    pub async fn vector(&self, query: &str) -> Vec<(Value, f64)> {
        let (status, body) = self.get("/api/v1/query", &[("query", query)]).await;
        assert_eq!(status, 200, "{query}: {body}");
        assert_eq!(body["status"], "success");
        assert_eq!(body["data"]["resultType"], "vector", "{body}");
        body["data"]["result"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| {
                (
                    r["metric"].clone(),
                    r["value"][1].as_str().unwrap().parse().unwrap(),
                )
            })
            .collect()
    }

    /// Polls `query` until `check` accepts its result (scrapes and rules run every second).
    pub async fn eventually(
        &self,
        query: &str,
        what: &str,
        check: impl Fn(&[(Value, f64)]) -> bool,
    ) -> Vec<(Value, f64)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.vector(query).await;
            if check(&got) {
                return got;
            }
            assert!(Instant::now() < deadline, "{what}: {query} gave {got:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// What an in-process webhook receiver got.
#[derive(Default)]
pub struct Received {
    pub refused: usize,
    pub bodies: Vec<Value>,
}

/// An HTTP receiver of JSON POSTs on `path` that answers 503 to the first `refuse_first`.
pub async fn receiver(path: &'static str, refuse_first: usize) -> (String, Arc<Mutex<Received>>) {
    let state = Arc::new(Mutex::new(Received::default()));
    let shared = state.clone();
    let app = axum::Router::new().route(
        path,
        axum::routing::post(move |body: axum::Json<Value>| {
            let shared = shared.clone();
            async move {
                let mut r = shared.lock().unwrap();
                if r.refused < refuse_first {
                    r.refused += 1;
                    return axum::http::StatusCode::SERVICE_UNAVAILABLE;
                }
                r.bodies.push(body.0);
                axum::http::StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}{path}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, state)
}

/// Polls until the receiver got at least `n` bodies.
pub async fn wait_for_bodies(state: &Arc<Mutex<Received>>, n: usize) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let bodies = state.lock().unwrap().bodies.clone();
        if bodies.len() >= n {
            return bodies;
        }
        assert!(
            Instant::now() < deadline,
            "only {} notifications: {bodies:?}",
            bodies.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Now, in Unix seconds, as the server's timestamps are.
pub fn now_s() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// The value of `series` (name and labels exactly as exposed) in Prometheus text, if present.
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.split(' ').next()?.parse().ok())
}

/// Debian's `prometheus-alertmanager` on a temporary config, killed on drop.
pub struct Alertmanager {
    child: Child,
    pub base: String,
    pub dir: TempDir,
}

impl Drop for Alertmanager {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Alertmanager {
    /// Starts it on `config` (YAML text, written as `alertmanager.yml`; files it names go
    /// beside it in `dir`) with `external_url` when given; returns once it is ready.
    pub async fn start(config: &str, external_url: Option<&str>) -> Alertmanager {
        Self::start_in(TempDir::new("alertmanager"), config, external_url).await
    }

    /// As [`Alertmanager::start`] in a directory prepared by the caller.
    pub async fn start_in(dir: TempDir, config: &str, external_url: Option<&str>) -> Alertmanager {
        Self::start_at(dir, free_port(), config, external_url).await
    }

    /// As [`Alertmanager::start_in`] on `port`, for tests whose torchwatch was told of the
    /// Alertmanager before it started.
    pub async fn start_at(
        dir: TempDir,
        port: u16,
        config: &str,
        external_url: Option<&str>,
    ) -> Alertmanager {
        let config_path = dir.path().join("alertmanager.yml");
        std::fs::write(&config_path, config).unwrap();
        let mut command = Command::new("prometheus-alertmanager");
        command
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.path={}",
                dir.path().join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg("--cluster.listen-address=");
        if let Some(url) = external_url {
            command.arg(format!("--web.external-url={url}"));
        }
        let child = command
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus-alertmanager runs (make test-deps installs Debian's package)");
        let am = Alertmanager {
            child,
            base: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let client = client();
        let deadline = Instant::now() + Duration::from_secs(30);
        while !client
            .get(format!("{}/-/ready", am.base))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            assert!(Instant::now() < deadline, "alertmanager not ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        am
    }

    /// The alerts it holds named `name` (its v2 API lists unresolved ones).
    pub async fn alerts(&self, name: &str) -> Vec<Value> {
        let body: Value = client()
            .get(format!("{}/api/v2/alerts", self.base))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        body.as_array()
            .unwrap()
            .iter()
            .filter(|a| a["labels"]["alertname"] == name)
            .cloned()
            .collect()
    }
}

/// Debian's `prometheus` on `config`, its data under `dir`, on a free port; killed on drop.
pub struct PrometheusProcess {
    child: Child,
    /// `http://127.0.0.1:port`.
    pub base: String,
}

impl Drop for PrometheusProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl PrometheusProcess {
    pub fn start(config: &Path, dir: &Path) -> PrometheusProcess {
        let port = free_port();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("the prometheus binary runs (make test-deps installs Debian's package)");
        PrometheusProcess {
            child,
            base: format!("http://127.0.0.1:{port}"),
        }
    }
}
