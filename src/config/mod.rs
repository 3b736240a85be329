//! The YAML schemas torchwatch reads. Parsing rejects unknown keys and wrong types with the file,
//! line and column; `validate` then checks what types cannot say (unique names, sane sizes).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::tensor::DataType;

mod duration;
mod notify;
mod policy;
mod rules;
mod scrape;
mod secret;
mod web;

pub use duration::PromDuration;
pub use notify::{
    AlertmanagerConfig, AlertmanagerFile, AlertmanagerGlobal, EmailConfig, HttpClientConfig,
    InhibitRuleConfig, NotifyConfig, NotifyOrigin, ReceiverConfig, Recipients, RouteConfig,
    SlackConfig, SlackFieldConfig, SmtpSecurity, TimeIntervalConfig, TimeIntervalSpec,
    TimeRangeConfig, WebhookConfig,
};
pub use policy::{
    ActuatorConfig, Algorithm, Amount, BehaviorConfig, Combine, CostPolicyConfig, ForecastModel,
    MemoryStatistic, MetricConfig, PolicyFile, PredictiveConfig, PricesConfig, ResourcesConfig,
    RightSizingConfig, ScalePolicyConfig, ScalingPolicyConfig, ScalingPolicyType,
    ScalingRulesConfig, SelectPolicy, StepConfig, TargetConfig, TargetType, WebhookActuatorConfig,
};
pub use rules::{
    AlertTest, ExpectedAlert, ExpectedSample, ExportedFile, ExportedGroup, ExportedRule, ExprTest,
    ExprText, InputSeries, RuleEntry, RuleFile, RuleGroup, TestGroup, UnitTestFile,
};
pub use scrape::{
    FileSdConfig, GlobalConfig, JobShorthand, RelabelAction, RelabelConfig, RelabelRegex,
    ScrapeConfig, ScrapeJob, StaticConfig, TlsConfig,
};
pub(crate) use scrape::{check_label_names, check_target_address};
pub use secret::{Secret, resolve_secret};
pub use web::{HttpServerConfig, RateLimit, TlsServerConfig, WebConfig};

/// The `torchwatch.yaml` file given to `torchwatch serve`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// HTTP server settings.
    #[serde(default)]
    pub server: ServerConfig,
    /// Log destinations and level.
    #[serde(default)]
    pub logging: LoggingConfig,
    /// Exporter settings.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// The in-memory series store.
    #[serde(default)]
    pub storage: StorageConfig,
    /// What the rule engine scrapes.
    #[serde(default)]
    pub scrape: ScrapeConfig,
    /// Rule files and where their queries run.
    #[serde(default)]
    pub rules: RulesConfig,
    /// Where alerts are sent.
    #[serde(default)]
    pub notify: NotifyConfig,
    /// Scale policy files.
    #[serde(default)]
    pub policies: PoliciesConfig,
    /// Alert state and the notification log kept across restarts.
    #[serde(default)]
    pub state: StateConfig,
    /// The models to serve. None (sidecar mode): only the rule engine, policies and
    /// notifications run, next to a model server torchwatch scrapes.
    #[serde(default)]
    pub models: Vec<ModelConfig>,
}

/// `state:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StateConfig {
    /// Directory for alert state and the notification log (relative to the
    /// config file); nothing is kept across restarts without it.
    pub dir: Option<PathBuf>,
    /// A pending alert keeps its `for` clock across a restart when torchwatch
    /// was down for less than this.
    pub pending_tolerance: PromDuration,
}

impl Default for StateConfig {
    fn default() -> Self {
        Self {
            dir: None,
            pending_tolerance: PromDuration(3600 * 1000),
        }
    }
}

/// `storage:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// How long samples are kept.
    pub retention: PromDuration,
    /// Most series held at once; samples of further new series are refused and counted.
    pub max_series: usize,
    /// How often appends are written to the write-ahead log under `state.dir` and synced: a
    /// `kill -9` loses at most this much. Without `state.dir` nothing is persisted.
    pub flush_interval: PromDuration,
}

impl Default for StorageConfig {
    fn default() -> Self {
        Self {
            retention: PromDuration(2 * 3600 * 1000),
            max_series: 1_000_000,
            flush_interval: PromDuration(10_000),
        }
    }
}

/// `basic_auth:`; the password comes inline, from a file or from an environment variable.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BasicAuth {
    /// User name.
    pub username: String,
    /// Password (avoid: it sits in the file).
    pub password: Option<Secret>,
    /// File whose first line is the password.
    pub password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub password_env: Option<String>,
}

/// `authorization:`: an `Authorization: <type> <credentials>` header.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Authorization {
    /// The scheme; `Bearer` when not given.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// The token (avoid: it sits in the file).
    pub credentials: Option<Secret>,
    /// File whose first line is the token.
    pub credentials_file: Option<PathBuf>,
    /// Environment variable holding the token.
    pub credentials_env: Option<String>,
}

/// `policies:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PoliciesConfig {
    /// Policy files (globs allowed), relative to the config file.
    pub files: Vec<String>,
}

/// `rules:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RulesConfig {
    /// Rule files (globs allowed), relative to the config file.
    pub files: Vec<String>,
    /// Interval of groups that do not set one.
    pub evaluation_interval: PromDuration,
    /// How far back an instant selector looks for a sample.
    pub lookback_delta: PromDuration,
    /// Run rule queries against this Prometheus-compatible API instead of the built-in store.
    pub datasource: Option<DatasourceConfig>,
    /// Labels templates see as `$externalLabels`.
    pub external_labels: std::collections::BTreeMap<String, String>,
}

impl Default for RulesConfig {
    fn default() -> Self {
        Self {
            files: Vec::new(),
            evaluation_interval: PromDuration(60_000),
            lookback_delta: PromDuration(300_000),
            datasource: None,
            external_labels: Default::default(),
        }
    }
}

/// A remote Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatasourceConfig {
    /// Base URL; `/api/v1/query` is appended.
    pub url: String,
    /// Per-query timeout.
    #[serde(default = "default_query_timeout")]
    pub timeout: PromDuration,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token.
    pub authorization: Option<Authorization>,
    /// TLS settings (a private CA, a client certificate, `server_name`).
    pub tls_config: Option<TlsConfig>,
}

fn default_query_timeout() -> PromDuration {
    PromDuration(30_000)
}

/// `metrics:` section.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Histogram bucket upper bounds per family.
    pub buckets: BucketsConfig,
}

/// Bucket upper bounds (`le`) of each histogram family, strictly increasing.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BucketsConfig {
    /// `torchwatch_request_duration_seconds`.
    pub request_duration_seconds: Vec<f64>,
    /// `torchwatch_queue_duration_seconds`.
    pub queue_duration_seconds: Vec<f64>,
    /// `torchwatch_batch_duration_seconds`.
    pub batch_duration_seconds: Vec<f64>,
    /// `torchwatch_batch_size`.
    pub batch_size: Vec<f64>,
}

/// From 50 µs to 10 s: sub-millisecond MLPs to multi-second batches of large models.
const LATENCY_BUCKETS: [f64; 17] = [
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

impl Default for BucketsConfig {
    fn default() -> Self {
        BucketsConfig {
            request_duration_seconds: LATENCY_BUCKETS.to_vec(),
            queue_duration_seconds: LATENCY_BUCKETS.to_vec(),
            batch_duration_seconds: LATENCY_BUCKETS.to_vec(),
            batch_size: vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0],
        }
    }
}

/// The deepest `server.max_json_depth` can be: serde_json's own recursion limit.
const MAX_JSON_DEPTH: usize = 127;

/// `server:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address the KServe V2 API listens on.
    pub listen: SocketAddr,
    /// Largest request body accepted; larger ones get 413.
    pub max_body_bytes: usize,
    /// Deepest nesting of JSON arrays and objects in an inference request; deeper ones get 400.
    pub max_json_depth: usize,
    /// Most `inputs` in one inference request; more get 400.
    pub max_inputs: usize,
    /// Most dimensions in an input's `shape`; more get 400.
    pub max_tensor_rank: usize,
    /// Largest `Inference-Header-Content-Length` (the JSON part of a binary-extension request);
    /// larger ones get 413.
    pub max_inference_header_bytes: usize,
    /// After SIGTERM/SIGINT, how long queued and in-flight requests may take to finish.
    #[serde(deserialize_with = "duration")]
    pub drain_timeout: Duration,
    /// The URL users reach torchwatch at (behind a proxy, in a container), for `$externalURL`,
    /// `generatorURL` and notification links; Prometheus' `--web.external-url`.
    pub external_url: Option<String>,
    /// Longest a query API evaluation may run (Prometheus' `query.timeout`); a request's
    /// `timeout` parameter can only shorten it.
    #[serde(deserialize_with = "duration")]
    pub query_timeout: Duration,
    /// Most samples one query step may hold (Prometheus' `query.max-samples`).
    pub query_max_samples: usize,
    /// Query API evaluations running at once (Prometheus' `query.max-concurrency`); more wait
    /// within their timeout.
    pub query_max_concurrency: usize,
    /// Serve what changes state over HTTP (`POST /-/reload`, silence writes); off by default,
    /// as Prometheus' `--web.enable-lifecycle`. SIGHUP reloads either way.
    pub enable_lifecycle: bool,
    /// Longest an inference request may take, body to answer, and longest the body of a request
    /// to any other route may take to arrive; later ones get 504.
    #[serde(deserialize_with = "duration")]
    pub request_timeout: Duration,
    /// Time a client has to send a request's headers; a slower one is disconnected.
    #[serde(deserialize_with = "duration")]
    pub header_read_timeout: Duration,
    /// Connections served at once; more wait to be accepted (Prometheus'
    /// `--web.max-connections`, 512).
    pub max_connections: usize,
    /// exporter-toolkit's web config (TLS, basic auth, extra headers, rate limit) for every
    /// listener; Prometheus' `--web.config.file`.
    pub web_config_file: Option<PathBuf>,
    /// A second listener for `/metrics`, the query and Alertmanager APIs, the status page and
    /// `/-/reload`; `listen` then serves only the KServe V2 API.
    pub metrics_listen: Option<SocketAddr>,
}

impl ServerConfig {
    /// `external_url` without a trailing `/`, else Prometheus' default: `http://` (`https://`
    /// with `tls`) with the listen address, or this host's name where it listens on every
    /// address.
    pub fn external_url(&self, bound: SocketAddr, tls: bool) -> String {
        if let Some(url) = &self.external_url {
            return url.trim_end_matches('/').to_string();
        }
        let scheme = if tls { "https" } else { "http" };
        if bound.ip().is_unspecified() {
            let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
                .map(|h| h.trim().to_string())
                .ok()
                .filter(|h| !h.is_empty())
                .unwrap_or_else(|| "localhost".into());
            format!("{scheme}://{host}:{}", bound.port())
        } else {
            format!("{scheme}://{bound}")
        }
    }
}

/// An absolute http or https URL, as `server.external_url` must be.
pub fn check_external_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?}: {e}"))?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host_str().is_none() {
        return Err(format!("{url:?}: need an absolute http:// or https:// URL"));
    }
    Ok(())
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            max_body_bytes: 64 << 20,
            max_json_depth: 64,
            max_inputs: 64,
            max_tensor_rank: 32,
            max_inference_header_bytes: 1 << 20,
            drain_timeout: Duration::from_secs(30),
            external_url: None,
            query_timeout: Duration::from_secs(120),
            query_max_samples: 50_000_000,
            query_max_concurrency: 20,
            enable_lifecycle: false,
            request_timeout: Duration::from_secs(60),
            header_read_timeout: Duration::from_secs(10),
            max_connections: 512,
            web_config_file: None,
            metrics_listen: None,
        }
    }
}

/// `logging:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LoggingConfig {
    /// Also append JSON log lines to this file (stdout always gets them).
    pub file: Option<PathBuf>,
    /// Minimum level, or a tracing `EnvFilter` directive such as `info,torchwatch=debug`.
    pub level: String,
    /// The share of successful requests, answered faster than `slow_request`, that get their
    /// `response_sent` line: 1 logs every request, 0.01 one in a hundred. Errors and slow
    /// requests are always logged.
    pub success_sample_ratio: f64,
    /// A request that takes at least this long is always logged, whatever the sampling.
    #[serde(deserialize_with = "duration")]
    pub slow_request: Duration,
}

impl Default for LoggingConfig {
    fn default() -> Self {
        LoggingConfig {
            file: None,
            level: "info".to_owned(),
            success_sample_ratio: 1.0,
            slow_request: Duration::from_secs(1),
        }
    }
}

/// One entry of `models:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Name in URLs (`/v2/models/{name}`).
    pub name: String,
    /// TorchScript file; relative paths are relative to the config file.
    pub path: PathBuf,
    /// `cpu`, `cuda`, `cuda:N` or `auto` (the first GPU when there is one).
    #[serde(default = "default_device")]
    pub device: String,
    /// LibTorch intra-op threads for this model's forward passes.
    #[serde(default = "default_threads")]
    pub threads: usize,
    /// Inputs in the order the model's `forward` takes them.
    pub inputs: Vec<TensorConfig>,
    /// Outputs in the order the model returns them (a tensor, or a tuple of tensors).
    pub outputs: Vec<TensorConfig>,
    /// Dynamic batching.
    #[serde(default)]
    pub batching: BatchingConfig,
    /// Inference result cache.
    #[serde(default)]
    pub cache: CacheConfig,
    /// How many instances (each its own copy of the module) serve the model's queue.
    #[serde(default)]
    pub instances: InstancesConfig,
}

fn default_device() -> String {
    "cpu".to_owned()
}

fn default_threads() -> usize {
    1
}

/// An input or output as the metadata endpoint reports it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TensorConfig {
    /// Tensor name in requests and responses.
    pub name: String,
    /// Element type.
    pub datatype: DataType,
    /// Dimensions, `-1` where any size is accepted (always the first one when batching).
    pub shape: Vec<i64>,
}

/// `batching:` of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchingConfig {
    /// Join concurrent requests into one forward pass.
    pub enabled: bool,
    /// Most rows (along dimension 0) in one forward pass.
    pub max_batch_size: usize,
    /// Longest wait for more requests after the first of a batch arrived.
    #[serde(deserialize_with = "duration")]
    pub max_queue_delay: Duration,
    /// Requests that may wait; more get 503 with `Retry-After`.
    pub queue_capacity: usize,
}

impl Default for BatchingConfig {
    fn default() -> Self {
        BatchingConfig {
            enabled: true,
            max_batch_size: 32,
            max_queue_delay: Duration::from_millis(2),
            queue_capacity: 1024,
        }
    }
}

/// `cache:` of a model.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheConfig {
    /// Answer repeated identical requests from memory.
    pub enabled: bool,
    /// Most cached results.
    pub capacity: u64,
    /// How long a result stays valid.
    #[serde(deserialize_with = "duration")]
    pub ttl: Duration,
    /// Which entry a full cache drops.
    pub eviction: CacheEviction,
    /// The hit-ratio estimate at other capacities.
    pub estimate: CacheEstimateConfig,
}

impl Default for CacheConfig {
    fn default() -> Self {
        CacheConfig {
            enabled: false,
            capacity: 10_000,
            ttl: Duration::from_secs(300),
            eviction: CacheEviction::Lru,
            estimate: CacheEstimateConfig::default(),
        }
    }
}

/// `cache.eviction:` of a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheEviction {
    /// Least recently used: what the hit-ratio estimate models, so it predicts this cache.
    Lru,
    /// moka's TinyLFU (admits a new entry only if it is used more often than the one it would
    /// replace): often more hits under skewed traffic, but the LRU estimate is then advisory.
    TinyLfu,
}

/// `cache.estimate:` of a model: SHARDS sampling of the lookups, predicting the LRU hit ratio
/// at other capacities.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheEstimateConfig {
    /// Fraction of keys sampled, in (0, 1]; lowered at run time to keep `max_keys`.
    pub sampling_rate: f64,
    /// Most sampled keys tracked (bounds the estimator's memory).
    pub max_keys: usize,
    /// Capacities whose estimated hit ratio is exported; empty: the configured capacity
    /// times 1/4, 1/2, 1, 2 and 4.
    pub capacities: Vec<u64>,
    /// Hit ratio the recommended capacity aims for, in (0, 1].
    pub target_hit_ratio: f64,
}

impl Default for CacheEstimateConfig {
    fn default() -> Self {
        CacheEstimateConfig {
            sampling_rate: 0.01,
            max_keys: 8192,
            capacities: Vec::new(),
            target_hit_ratio: 0.9,
        }
    }
}

/// `instances:` of a model: worker threads that each load their own copy of the module and take
/// work from the model's one queue, like Triton's instance group, but changeable at run time.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InstancesConfig {
    /// Instances loaded at start, and the fewest the model is scaled down to.
    pub min: usize,
    /// The most instances the model is scaled up to.
    pub max: usize,
}

impl Default for InstancesConfig {
    fn default() -> Self {
        InstancesConfig { min: 1, max: 1 }
    }
}

/// A config file that could not be used; the message names the file and where in it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct ConfigError(String);

impl Config {
    /// Reads, parses and validates a config file. Relative model paths become relative to it.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| ConfigError(format!("{}: cannot read: {e}", path.display())))?;
        Config::parse_at(
            &text,
            &path.display().to_string(),
            path.parent().unwrap_or(Path::new("")),
        )
    }

    /// Parses and validates YAML text; `origin` names it in errors.
    pub fn parse(text: &str, origin: &str) -> Result<Config, ConfigError> {
        Config::parse_at(text, origin, Path::new(""))
    }

    /// Like [`Config::parse`], with relative paths taken relative to `base`.
    fn parse_at(text: &str, origin: &str, base: &Path) -> Result<Config, ConfigError> {
        let mut config: Config =
            serde_saphyr::from_str(text).map_err(|e| ConfigError(yaml_error(origin, &e)))?;
        config.resolve_paths(base);
        config
            .notify
            .load_alertmanager_file(base)
            .map_err(ConfigError)?;
        let scrape = config
            .scrape
            .resolve(base)
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        for (name, value) in scrape.external_labels {
            match config.rules.external_labels.get(&name) {
                Some(ours) if *ours != value => {
                    return Err(ConfigError(format!(
                        "{origin}: rules.external_labels: {name} is {ours:?} here and {value:?} in \
                         the scrape global: section; keep one"
                    )));
                }
                _ => {
                    config.rules.external_labels.insert(name, value);
                }
            }
        }
        config
            .validate()
            .map_err(|e| ConfigError(format!("{origin}: {e}")))?;
        Ok(config)
    }

    /// Model, state, rule and policy paths are relative to the config file.
    fn resolve_paths(&mut self, base: &Path) {
        for model in &mut self.models {
            if model.path.is_relative() {
                model.path = base.join(&model.path);
            }
        }
        for path in [&mut self.state.dir, &mut self.server.web_config_file]
            .into_iter()
            .flatten()
        {
            if path.is_relative() {
                *path = base.join(&*path);
            }
        }
        if let Some(datasource) = &mut self.rules.datasource {
            notify::resolve_client_paths(
                base,
                datasource.basic_auth.as_mut(),
                datasource.authorization.as_mut(),
                datasource.tls_config.as_mut(),
            );
        }
        for file in self.rules.files.iter_mut().chain(&mut self.policies.files) {
            if Path::new(file.as_str()).is_relative() {
                *file = base.join(&*file).to_string_lossy().into_owned();
            }
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.server.query_timeout.is_zero() {
            return Err("server.query_timeout: must be longer than 0s".into());
        }
        if self.server.header_read_timeout.is_zero() {
            return Err("server.header_read_timeout: must be longer than 0s".into());
        }
        if self.server.metrics_listen == Some(self.server.listen) {
            return Err(
                "server.metrics_listen: must differ from server.listen (leave it out to serve \
                 everything on one port)"
                    .into(),
            );
        }
        // A request with one flat input nests 4 deep (object, inputs, input, data); serde_json
        // refuses more than 127 levels whatever this says.
        if !(4..=MAX_JSON_DEPTH).contains(&self.server.max_json_depth) {
            return Err(format!(
                "server.max_json_depth: must be between 4 and {MAX_JSON_DEPTH}"
            ));
        }
        for (key, value) in [
            ("max_inputs", self.server.max_inputs),
            ("max_tensor_rank", self.server.max_tensor_rank),
            (
                "max_inference_header_bytes",
                self.server.max_inference_header_bytes,
            ),
        ] {
            if value == 0 {
                return Err(format!("server.{key}: must be at least 1"));
            }
        }
        if self.server.max_connections == 0 {
            return Err("server.max_connections: must be at least 1".into());
        }
        let ratio = self.logging.success_sample_ratio;
        if !(0.0..=1.0).contains(&ratio) {
            return Err(format!(
                "logging.success_sample_ratio: {ratio} is not between 0 and 1"
            ));
        }
        if self.server.request_timeout.is_zero() {
            return Err("server.request_timeout: must be longer than 0s".into());
        }
        if self.server.query_max_concurrency == 0 {
            return Err("server.query_max_concurrency: must be at least 1".into());
        }
        if let Some(url) = &self.server.external_url {
            check_external_url(url).map_err(|e| format!("server.external_url: {e}"))?;
        }
        let buckets = &self.metrics.buckets;
        for (name, bounds) in [
            (
                "request_duration_seconds",
                &buckets.request_duration_seconds,
            ),
            ("queue_duration_seconds", &buckets.queue_duration_seconds),
            ("batch_duration_seconds", &buckets.batch_duration_seconds),
            ("batch_size", &buckets.batch_size),
        ] {
            let increasing = bounds.windows(2).all(|w| w[0] < w[1]);
            if bounds.is_empty() || !increasing || bounds.iter().any(|b| !b.is_finite()) {
                return Err(format!(
                    "metrics.buckets.{name}: give at least one finite bound, strictly increasing"
                ));
            }
        }
        if self.storage.retention.millis() <= 0 {
            return Err("storage.retention: must be longer than 0s".into());
        }
        if self.storage.flush_interval.millis() <= 0 {
            return Err("storage.flush_interval: must be longer than 0s".into());
        }
        if self.rules.evaluation_interval.millis() <= 0 {
            return Err("rules.evaluation_interval: must be longer than 0s".into());
        }
        for (i, model) in self.models.iter().enumerate() {
            let at = format!("models[{i}] ({})", model.name);
            if model.name.is_empty() || model.name.contains(['/', '?', '#', ' ']) {
                return Err(format!(
                    "models[{i}].name: '{}' must be non-empty and free of '/', '?', '#' and spaces",
                    model.name
                ));
            }
            if self.models[..i].iter().any(|m| m.name == model.name) {
                return Err(format!("{at}.name: another model has the same name"));
            }
            parse_device(&model.device).map_err(|e| format!("{at}.device: {e}"))?;
            if model.threads == 0 {
                return Err(format!("{at}.threads: must be at least 1"));
            }
            if model.inputs.is_empty() || model.outputs.is_empty() {
                return Err(format!("{at}: declare at least one input and one output"));
            }
            for (kind, specs) in [("inputs", &model.inputs), ("outputs", &model.outputs)] {
                for (j, spec) in specs.iter().enumerate() {
                    if specs[..j].iter().any(|s| s.name == spec.name) {
                        return Err(format!(
                            "{at}.{kind}[{j}].name: '{}' appears twice",
                            spec.name
                        ));
                    }
                    if spec.shape.iter().any(|&d| d < -1) {
                        return Err(format!("{at}.{kind}[{j}].shape: dimensions are -1 or >= 0"));
                    }
                    if model.batching.enabled && spec.shape.first() != Some(&-1) {
                        return Err(format!(
                            "{at}.{kind}[{j}].shape: with batching enabled the first dimension \
                             is the batch and must be -1"
                        ));
                    }
                }
            }
            let batching = &model.batching;
            if batching.max_batch_size == 0 || batching.queue_capacity == 0 {
                return Err(format!(
                    "{at}.batching: max_batch_size and queue_capacity must be at least 1"
                ));
            }
            if model.cache.enabled && model.cache.capacity == 0 {
                return Err(format!("{at}.cache.capacity: must be at least 1"));
            }
            let estimate = &model.cache.estimate;
            // Written so NaN fails too.
            if !(estimate.sampling_rate > 0.0 && estimate.sampling_rate <= 1.0) {
                return Err(format!(
                    "{at}.cache.estimate.sampling_rate: {} is not in (0, 1]",
                    estimate.sampling_rate
                ));
            }
            if estimate.max_keys == 0 || estimate.max_keys > 1 << 22 {
                return Err(format!(
                    "{at}.cache.estimate.max_keys: must be between 1 and 4194304"
                ));
            }
            if let Some(j) = estimate.capacities.iter().position(|&c| c == 0) {
                return Err(format!(
                    "{at}.cache.estimate.capacities[{j}]: must be at least 1"
                ));
            }
            if !(estimate.target_hit_ratio > 0.0 && estimate.target_hit_ratio <= 1.0) {
                return Err(format!(
                    "{at}.cache.estimate.target_hit_ratio: {} is not in (0, 1]",
                    estimate.target_hit_ratio
                ));
            }
            let instances = model.instances;
            if instances.min == 0 {
                return Err(format!(
                    "{at}.instances.min: must be at least 1 (an instance serves the queue)"
                ));
            }
            if instances.max < instances.min {
                return Err(format!(
                    "{at}.instances.max: {} is less than instances.min {}",
                    instances.max, instances.min
                ));
            }
        }
        Ok(())
    }
}

/// Where a model runs, as written in the config.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeviceSpec {
    /// The CPU.
    Cpu,
    /// CUDA device N.
    Cuda(usize),
    /// The first CUDA device when one is usable, else the CPU.
    Auto,
}

/// Parses `cpu`, `cuda`, `cuda:N` or `auto`.
pub fn parse_device(text: &str) -> Result<DeviceSpec, String> {
    match text {
        "cpu" => Ok(DeviceSpec::Cpu),
        "auto" => Ok(DeviceSpec::Auto),
        "cuda" => Ok(DeviceSpec::Cuda(0)),
        other => other
            .strip_prefix("cuda:")
            .and_then(|n| n.parse().ok())
            .map(DeviceSpec::Cuda)
            .ok_or_else(|| format!("'{other}' is not one of cpu, cuda, cuda:N, auto")),
    }
}

/// `file:line:column: message`, the form editors and terminals make clickable, followed by
/// serde-saphyr's snippet of the offending lines.
pub(crate) fn yaml_error(origin: &str, error: &serde_saphyr::Error) -> String {
    let rendered = redact_snippet(&error.to_string());
    let detail = rendered.strip_prefix("error: ").unwrap_or(&rendered);
    match error.location() {
        Some(at) => {
            let prefix = format!("line {} column {}: ", at.line(), at.column());
            let detail = detail.strip_prefix(&prefix).unwrap_or(detail);
            let detail = scrape::explain_unsupported(detail)
                .or_else(|| notify::explain_unsupported(detail))
                .unwrap_or_else(|| detail.to_string());
            format!("{origin}:{}:{}: {detail}", at.line(), at.column())
        }
        None => format!("{origin}: {detail}"),
    }
}

/// serde-saphyr's snippet quotes the file's lines; the values of keys that hold secrets
/// (passwords, tokens, credentials, URLs that carry them) are blanked so errors never show them.
fn redact_snippet(rendered: &str) -> String {
    const SECRET_KEYS: [&str; 6] = ["password", "secret", "token", "credentials", "url", "key"];
    rendered
        .lines()
        .map(|line| {
            let Some((key, _)) = line.split_once(": ").filter(|(key, _)| {
                let key = key.to_ascii_lowercase();
                SECRET_KEYS.iter().any(|s| key.ends_with(s))
            }) else {
                return line.to_string();
            };
            format!("{key}: <secret>")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Rewrites serde's "unknown field `x`, expected ..." for a field `product` has and torchwatch
/// lacks (`hint` says what to do instead) so it does not read as a typo; `None` otherwise.
fn explain_unknown_field(
    detail: &str,
    product: &str,
    hint: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let rest = detail.strip_prefix("unknown field `")?;
    let (field, tail) = rest.split_once('`')?;
    let hint = hint(field)?;
    // serde's list of expected fields ends the first line; the snippet follows it.
    let snippet = tail.split_once('\n').map_or("", |(_, s)| s);
    let sep = if snippet.is_empty() { "" } else { "\n" };
    Some(format!(
        "`{field}` is {product} setting torchwatch does not support: {hint}{sep}{snippet}"
    ))
}

/// Prometheus' duration grammar for every duration of the config, so one file never mixes two.
fn duration<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Duration, D::Error> {
    let text = String::deserialize(deserializer)?;
    parse_duration(&text).map_err(serde::de::Error::custom)
}

/// A duration in Prometheus' grammar (`2ms`, `30s`, `1h30m`), for config fields and flags.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    PromDuration::parse(text)
        .map(|d| Duration::from_millis(d.millis() as u64))
        .map_err(|e| format!("'{text}' is not a duration like 2ms, 30s or 1h30m: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = "models:
  - name: mlp
    path: mlp.pt
    inputs: [{name: input__0, datatype: FP32, shape: [-1, 784]}]
    outputs: [{name: output__0, datatype: FP32, shape: [-1, 10]}]
";

    #[test]
    fn defaults_fill_what_is_left_out() {
        let config = Config::parse(MINIMAL, "t.yaml").unwrap();
        assert_eq!(config.server.listen, "127.0.0.1:8080".parse().unwrap());
        let model = &config.models[0];
        assert_eq!(model.device, "cpu");
        assert!(model.batching.enabled);
        assert_eq!(model.batching.max_queue_delay, Duration::from_millis(2));
        assert!(!model.cache.enabled);
    }

    #[test]
    fn unknown_key_is_reported_with_line_and_column() {
        let text = MINIMAL.replace("    path: mlp.pt\n", "    path: mlp.pt\n    devise: cpu\n");
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(
            err.starts_with("t.yaml:4:5: unknown field `devise`"),
            "{err}"
        );
    }

    #[test]
    fn wrong_type_is_reported_with_line_and_column() {
        let text = format!("{MINIMAL}    threads: many\n");
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.starts_with("t.yaml:6:14: "), "{err}");
    }

    #[test]
    fn bad_duration_names_the_value() {
        let text = format!("{MINIMAL}    batching: {{max_queue_delay: soon}}\n");
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("'soon' is not a duration"), "{err}");
        // One grammar in the whole file, Prometheus': what rules and scrape settings accept.
        for (text, ok) in [
            ("1h30m", true),
            ("250ms", true),
            ("1.5s", false),
            ("2 ms", false),
        ] {
            let config = format!("server: {{drain_timeout: '{text}'}}\n{MINIMAL}");
            assert_eq!(Config::parse(&config, "t.yaml").is_ok(), ok, "{text}");
        }
        let server = Config::parse(
            &format!("server: {{drain_timeout: 1h30m}}\n{MINIMAL}"),
            "t.yaml",
        );
        assert_eq!(
            server.unwrap().server.drain_timeout,
            Duration::from_secs(5400)
        );
    }

    #[test]
    fn batching_requires_a_variable_batch_dimension() {
        let text = MINIMAL.replace("[-1, 784]", "[1, 784]");
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("models[0] (mlp).inputs[0].shape"), "{err}");
    }

    #[test]
    fn external_url_is_absolute_http_and_defaults_like_prometheus() {
        let with = |url: &str| {
            Config::parse(
                &format!("server: {{external_url: '{url}'}}\n{MINIMAL}"),
                "t.yaml",
            )
        };
        let config = with("https://tw.example.com/ml/").unwrap();
        let bound: SocketAddr = "0.0.0.0:8080".parse().unwrap();
        assert_eq!(
            config.server.external_url(bound, false),
            "https://tw.example.com/ml"
        );
        for bad in ["ftp://x", "/ml", "tw.example.com"] {
            let err = with(bad).unwrap_err().to_string();
            assert!(err.starts_with("t.yaml: server.external_url: "), "{err}");
        }
        let default = Config::parse(MINIMAL, "t.yaml").unwrap().server;
        assert_eq!(
            default.external_url("127.0.0.1:9000".parse().unwrap(), false),
            "http://127.0.0.1:9000"
        );
        assert_eq!(
            default.external_url("127.0.0.1:9000".parse().unwrap(), true),
            "https://127.0.0.1:9000"
        );
        // Listening everywhere, the bind address is no place to send people: the host's name.
        let everywhere = default.external_url(bound, false);
        assert!(everywhere.starts_with("http://") && everywhere.ends_with(":8080"));
        assert!(!everywhere.contains("0.0.0.0"), "{everywhere}");
    }

    #[test]
    fn buckets_must_increase() {
        let text = format!("metrics: {{buckets: {{batch_size: [1, 4, 2]}}}}\n{MINIMAL}");
        let err = Config::parse(&text, "t.yaml").unwrap_err().to_string();
        assert!(err.contains("metrics.buckets.batch_size"), "{err}");
    }

    #[test]
    fn scrape_timeouts_follow_prometheus() {
        let job = |timeout: &str| {
            format!(
                "scrape: {{interval: 1s, jobs: [{{job_name: j, targets: ['h:1']{timeout}}}]}}\n{MINIMAL}"
            )
        };
        assert!(
            Config::parse(&job(""), "t.yaml").is_ok(),
            "the 10s default is cut to 1s"
        );
        let err = Config::parse(&job(", timeout: 5s"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("scrape.jobs[0] (j): scrape timeout greater"),
            "{err}"
        );
        let err = Config::parse(
            &format!("storage: {{retention: 1.5h}}\n{MINIMAL}"),
            "t.yaml",
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("1.5h"),
            "Prometheus durations have no fractions: {err}"
        );
    }

    #[test]
    fn outgoing_client_files_are_relative_to_the_config_file() {
        let client = "basic_auth: {username: u, password_file: pw}\n    authorization: \
                      {credentials_file: token}\n    tls_config: {ca_file: ca.pem, cert_file: c.pem, \
                      key_file: c.key}";
        let text = format!(
            "rules:\n  datasource:\n    url: https://p\n    {client}\nnotify:\n  alertmanagers:\n    \
             - url: https://am\n      {}\n{MINIMAL}",
            client.replace("\n    ", "\n      ")
        );
        let config = Config::parse_at(&text, "t.yaml", Path::new("/etc/tw")).unwrap();
        let datasource = config.rules.datasource.unwrap();
        let am = &config.notify.alertmanagers[0];
        for (basic, auth, tls) in [
            (
                &datasource.basic_auth,
                &datasource.authorization,
                &datasource.tls_config,
            ),
            (&am.basic_auth, &am.authorization, &am.tls_config),
        ] {
            let tls = tls.as_ref().unwrap();
            let files = [
                basic.as_ref().unwrap().password_file.clone(),
                auth.as_ref().unwrap().credentials_file.clone(),
                tls.ca_file.clone(),
                tls.cert_file.clone(),
                tls.key_file.clone(),
            ];
            let expected = ["pw", "token", "ca.pem", "c.pem", "c.key"]
                .map(|f| Some(Path::new("/etc/tw").join(f)));
            assert_eq!(files, expected);
        }
    }

    #[test]
    fn decoder_limits_default_and_are_checked() {
        let config = Config::parse(MINIMAL, "t.yaml").unwrap();
        let server = &config.server;
        assert_eq!(
            (
                server.max_json_depth,
                server.max_inputs,
                server.max_tensor_rank,
                server.max_inference_header_bytes
            ),
            (64, 64, 32, 1 << 20)
        );
        let with = |server: &str| format!("server: {{{server}}}\n{MINIMAL}");
        let config = Config::parse(&with("max_json_depth: 127, max_inputs: 1"), "t.yaml").unwrap();
        assert_eq!(
            (config.server.max_json_depth, config.server.max_inputs),
            (127, 1)
        );
        for (setting, error) in [
            (
                "max_json_depth: 3",
                "server.max_json_depth: must be between 4 and 127",
            ),
            (
                "max_json_depth: 128",
                "server.max_json_depth: must be between 4 and 127",
            ),
            ("max_inputs: 0", "server.max_inputs: must be at least 1"),
            (
                "max_tensor_rank: 0",
                "server.max_tensor_rank: must be at least 1",
            ),
            (
                "max_inference_header_bytes: 0",
                "server.max_inference_header_bytes: must be at least 1",
            ),
        ] {
            let err = Config::parse(&with(setting), "t.yaml")
                .unwrap_err()
                .to_string();
            assert_eq!(err, format!("t.yaml: {error}"), "{setting}");
        }
    }

    #[test]
    fn instances_default_to_one_and_are_checked() {
        let config = Config::parse(MINIMAL, "t.yaml").unwrap();
        assert_eq!(
            config.models[0].instances,
            InstancesConfig { min: 1, max: 1 }
        );
        let with = |instances: &str| format!("{MINIMAL}    instances: {instances}\n");
        let config = Config::parse(&with("{max: 3}"), "t.yaml").unwrap();
        assert_eq!(
            config.models[0].instances,
            InstancesConfig { min: 1, max: 3 }
        );
        let err = Config::parse(&with("{min: 0, max: 2}"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(
            err.starts_with("t.yaml: models[0] (mlp).instances.min: must be at least 1"),
            "{err}"
        );
        let err = Config::parse(&with("{min: 3, max: 2}"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "t.yaml: models[0] (mlp).instances.max: 2 is less than instances.min 3"
        );
        let err = Config::parse(&with("{min: 1, count: 2}"), "t.yaml")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `count`"), "{err}");
    }

    #[test]
    fn devices_parse() {
        assert_eq!(parse_device("cuda:1"), Ok(DeviceSpec::Cuda(1)));
        assert_eq!(parse_device("auto"), Ok(DeviceSpec::Auto));
        assert!(parse_device("gpu").unwrap_err().contains("'gpu'"));
    }
}
