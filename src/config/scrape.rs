//! `scrape:`: what the rule engine scrapes. Prometheus' `scrape_configs` entries are taken as they
//! are (inline, or from a `prometheus.yml` named by `prometheus_config_file`), and torchwatch's
//! older `jobs:` shorthand becomes the same [`ScrapeJob`], so one representation reaches the
//! scraper. Fields Prometheus knows and torchwatch does not support are refused by name.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::{Authorization, BasicAuth, PromDuration, yaml_error};
use crate::storage::is_valid_label_name;

/// torchwatch's defaults where neither the file nor `global:` sets them (Prometheus' are 1m/10s).
const DEFAULT_INTERVAL: PromDuration = PromDuration(15_000);
const DEFAULT_TIMEOUT: PromDuration = PromDuration(10_000);

/// `scrape:` section.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScrapeConfig {
    /// Default scrape interval (torchwatch's name for `global.scrape_interval`).
    pub interval: Option<PromDuration>,
    /// Default scrape timeout (torchwatch's name for `global.scrape_timeout`).
    pub timeout: Option<PromDuration>,
    /// Scrape this process' own /metrics as job `torchwatch`.
    #[serde(rename = "self")]
    pub scrape_self: bool,
    /// Prometheus' `global:` block, for pasted configurations.
    pub global: Option<GlobalConfig>,
    /// A `prometheus.yml` whose `global:` and `scrape_configs:` are used (relative to this file).
    pub prometheus_config_file: Option<PathBuf>,
    /// Prometheus' `scrape_configs:`; after [`ScrapeConfig::resolve`] every job of every form.
    pub scrape_configs: Vec<ScrapeJob>,
    /// torchwatch's shorthand: static targets with `interval`, `timeout` and `labels`.
    pub jobs: Vec<JobShorthand>,
}

impl Default for ScrapeConfig {
    fn default() -> Self {
        Self {
            interval: None,
            timeout: None,
            scrape_self: true,
            global: None,
            prometheus_config_file: None,
            scrape_configs: Vec::new(),
            jobs: Vec::new(),
        }
    }
}

/// Prometheus' `global:`, the parts that concern scraping.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GlobalConfig {
    /// Interval of jobs that do not set one.
    #[serde(default)]
    pub scrape_interval: Option<PromDuration>,
    /// Timeout of jobs that do not set one.
    #[serde(default)]
    pub scrape_timeout: Option<PromDuration>,
    /// Merged into `rules.external_labels`: what Prometheus attaches them to (alerts) is what
    /// torchwatch uses them for; stored series never carry them, in Prometheus neither.
    #[serde(default)]
    pub external_labels: BTreeMap<String, String>,
}

/// The parts of a `prometheus.yml` torchwatch takes; the other top-level sections are refused.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PrometheusFile {
    #[serde(default)]
    global: Option<GlobalConfig>,
    #[serde(default)]
    scrape_configs: Vec<ScrapeJob>,
}

/// One entry of `jobs:` (torchwatch's shorthand for a job with static targets).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobShorthand {
    /// Value of the `job` label.
    pub job_name: String,
    /// `host:port` of each target (the `instance` label).
    pub targets: Vec<String>,
    /// Overrides the default interval.
    pub interval: Option<PromDuration>,
    /// Overrides the default timeout.
    pub timeout: Option<PromDuration>,
    /// Path of the exposition.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// Bearer token, inline or from a file (prefer the file).
    pub authorization: Option<Authorization>,
    /// Extra labels for every series of this job.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// One Prometheus `scrape_config`: the single form the scraper reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScrapeJob {
    /// Value of the `job` label.
    pub job_name: String,
    /// Time between scrapes; 0 (unset) until [`ScrapeConfig::resolve`] fills it in.
    #[serde(default)]
    pub scrape_interval: PromDuration,
    /// Per-scrape timeout; 0 (unset) until [`ScrapeConfig::resolve`] fills it in.
    #[serde(default)]
    pub scrape_timeout: PromDuration,
    /// Path of the exposition.
    #[serde(default = "default_metrics_path")]
    pub metrics_path: String,
    /// `http` or `https`.
    #[serde(default = "default_scheme")]
    pub scheme: String,
    /// URL query parameters; the first value of each is also `__param_<name>`.
    #[serde(default)]
    pub params: BTreeMap<String, Vec<String>>,
    /// Keep the exposition's labels where they clash with the target's.
    #[serde(default)]
    pub honor_labels: bool,
    /// Use the timestamps the exposition gives.
    #[serde(default = "yes")]
    pub honor_timestamps: bool,
    /// Targets written in the config.
    #[serde(default)]
    pub static_configs: Vec<StaticConfig>,
    /// Targets read from JSON or YAML files.
    #[serde(default)]
    pub file_sd_configs: Vec<FileSdConfig>,
    /// Rewrites target labels before scraping; may drop targets.
    #[serde(default)]
    pub relabel_configs: Vec<RelabelConfig>,
    /// Rewrites each scraped series before it is stored; may drop series.
    #[serde(default)]
    pub metric_relabel_configs: Vec<RelabelConfig>,
    /// HTTP basic authentication.
    pub basic_auth: Option<BasicAuth>,
    /// `Authorization` header.
    pub authorization: Option<Authorization>,
    /// Prometheus' older spelling of `authorization.credentials`.
    pub bearer_token: Option<super::Secret>,
    /// Prometheus' older spelling of `authorization.credentials_file`.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS settings for https targets.
    #[serde(default)]
    pub tls_config: TlsConfig,
    /// More samples (after metric relabelling) fail the scrape; 0: no limit.
    #[serde(default)]
    pub sample_limit: usize,
    /// More labels on a series fail the scrape; 0: no limit.
    #[serde(default)]
    pub label_limit: usize,
    /// A longer label name fails the scrape; 0: no limit.
    #[serde(default)]
    pub label_name_length_limit: usize,
    /// A longer label value fails the scrape; 0: no limit.
    #[serde(default)]
    pub label_value_length_limit: usize,
    /// More targets after relabelling fail every target of the job; 0: no limit.
    #[serde(default)]
    pub target_limit: usize,
    /// Follow HTTP redirects.
    #[serde(default = "yes")]
    pub follow_redirects: bool,
    /// Accepted for compatibility: torchwatch's client speaks HTTP/1.1, which every exporter
    /// serves, so `true` and `false` behave alike.
    #[serde(default = "yes")]
    pub enable_http2: bool,
}

fn yes() -> bool {
    true
}

fn default_metrics_path() -> String {
    "/metrics".into()
}

fn default_scheme() -> String {
    "http".into()
}

/// `static_configs:` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticConfig {
    /// `host:port` of each target.
    #[serde(default)]
    pub targets: Vec<String>,
    /// Labels of every target of the group.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `file_sd_configs:` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileSdConfig {
    /// Files, `*` allowed in the last path element; relative to the declaring config file.
    pub files: Vec<String>,
    /// Re-read this often even without a change seen.
    #[serde(default = "default_refresh")]
    pub refresh_interval: PromDuration,
}

fn default_refresh() -> PromDuration {
    PromDuration(5 * 60 * 1000)
}

/// `tls_config:`.
#[derive(Debug, Clone, Default, Deserialize, Hash)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA certificates (PEM) that replace the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Client certificate (PEM), with `key_file`.
    pub cert_file: Option<PathBuf>,
    /// Client key (PEM), with `cert_file`.
    pub key_file: Option<PathBuf>,
    /// Name the server certificate must carry instead of the target's host.
    pub server_name: Option<String>,
    /// Accept any server certificate.
    pub insecure_skip_verify: bool,
    /// `TLS12` (the default) or `TLS13`.
    pub min_version: Option<String>,
    /// Newest version offered: `TLS12` or `TLS13` (the default).
    pub max_version: Option<String>,
}

/// One `relabel_configs` / `metric_relabel_configs` entry, checked as Prometheus' relabel.go
/// checks it while parsing (so errors carry the line and column).
#[derive(Debug, Clone, Deserialize)]
#[serde(try_from = "RawRelabel")]
pub struct RelabelConfig {
    /// Labels whose values are joined with `separator`.
    pub source_labels: Vec<String>,
    /// Joins the source values.
    pub separator: String,
    /// Matched against the joined value, anchored at both ends.
    pub regex: RelabelRegex,
    /// For `hashmod`.
    pub modulus: u64,
    /// The label written; `$1`/`${name}` expanded for `replace`.
    pub target_label: String,
    /// Value written by `replace`, name written by `labelmap`.
    pub replacement: String,
    /// What to do.
    pub action: RelabelAction,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRelabel {
    #[serde(default)]
    source_labels: Vec<String>,
    #[serde(default = "default_separator")]
    separator: String,
    regex: Option<String>,
    #[serde(default)]
    modulus: u64,
    #[serde(default)]
    target_label: String,
    #[serde(default = "default_replacement")]
    replacement: String,
    #[serde(default)]
    action: Option<String>,
}

fn default_separator() -> String {
    ";".into()
}

fn default_replacement() -> String {
    "$1".into()
}

/// Relabelling actions, as Prometheus names them (case-insensitive in the file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelabelAction {
    /// Write `replacement` (expanded) to `target_label` when the regex matches.
    Replace,
    /// Drop unless the regex matches.
    Keep,
    /// Drop when the regex matches.
    Drop,
    /// Drop unless the joined value equals `target_label`'s value.
    KeepEqual,
    /// Drop when the joined value equals `target_label`'s value.
    DropEqual,
    /// `target_label` = md5 of the joined value modulo `modulus`.
    HashMod,
    /// Copy labels whose names match to the expanded `replacement`.
    LabelMap,
    /// Remove labels whose names match.
    LabelDrop,
    /// Remove labels whose names do not match.
    LabelKeep,
    /// `target_label` = the joined value in lower case.
    Lowercase,
    /// `target_label` = the joined value in upper case.
    Uppercase,
}

impl RelabelAction {
    fn parse(text: &str) -> Result<RelabelAction, String> {
        Ok(match text.to_lowercase().as_str() {
            "replace" => Self::Replace,
            "keep" => Self::Keep,
            "drop" => Self::Drop,
            "keepequal" => Self::KeepEqual,
            "dropequal" => Self::DropEqual,
            "hashmod" => Self::HashMod,
            "labelmap" => Self::LabelMap,
            "labeldrop" => Self::LabelDrop,
            "labelkeep" => Self::LabelKeep,
            "lowercase" => Self::Lowercase,
            "uppercase" => Self::Uppercase,
            _ => return Err(format!("unknown relabel action {text:?}")),
        })
    }

    fn name(self) -> &'static str {
        match self {
            Self::Replace => "replace",
            Self::Keep => "keep",
            Self::Drop => "drop",
            Self::KeepEqual => "keepequal",
            Self::DropEqual => "dropequal",
            Self::HashMod => "hashmod",
            Self::LabelMap => "labelmap",
            Self::LabelDrop => "labeldrop",
            Self::LabelKeep => "labelkeep",
            Self::Lowercase => "lowercase",
            Self::Uppercase => "uppercase",
        }
    }
}

/// A relabel regex: compiled as `^(?:...)$`, the text kept for comparisons with the default.
#[derive(Debug, Clone)]
pub struct RelabelRegex {
    source: String,
    compiled: regex::Regex,
}

impl RelabelRegex {
    /// Compiles `source` fully anchored, as Prometheus does.
    pub fn new(source: &str) -> Result<RelabelRegex, String> {
        let compiled = regex::Regex::new(&format!("^(?:{source})$"))
            .map_err(|e| format!("error parsing regexp {source:?}: {e}"))?;
        Ok(RelabelRegex {
            source: source.to_string(),
            compiled,
        })
    }

    /// The anchored regex.
    pub fn regex(&self) -> &regex::Regex {
        &self.compiled
    }

    /// True for `(.*)`, the default.
    pub fn is_default(&self) -> bool {
        self.source == DEFAULT_REGEX
    }
}

const DEFAULT_REGEX: &str = "(.*)";

/// relabel.go's `relabelTarget`: a label name in which `$1`, `${1}` or `$name` may appear.
fn is_valid_target_template(text: &str) -> bool {
    static TEMPLATE: std::sync::LazyLock<regex::Regex> = std::sync::LazyLock::new(|| {
        regex::Regex::new(
            r"^(?:(?:[a-zA-Z_]|\$(?:\{[0-9A-Za-z_]+\}|[0-9A-Za-z_]+))+[0-9A-Za-z_]*)+$",
        )
        .expect("a constant regex")
    });
    TEMPLATE.is_match(text)
}

impl TryFrom<RawRelabel> for RelabelConfig {
    type Error = String;

    /// relabel.go's `Validate`, with its messages.
    fn try_from(raw: RawRelabel) -> Result<RelabelConfig, String> {
        use RelabelAction::*;
        let action = match &raw.action {
            None => Replace,
            Some(text) if text.is_empty() => {
                return Err("relabel action cannot be empty".into());
            }
            Some(text) => RelabelAction::parse(text)?,
        };
        if let Some(bad) = raw.source_labels.iter().find(|l| !is_valid_label_name(l)) {
            return Err(format!("{bad:?} is not a valid label name"));
        }
        let regex = RelabelRegex::new(raw.regex.as_deref().unwrap_or(DEFAULT_REGEX))?;
        let target = raw.target_label.as_str();
        let name = action.name();
        if raw.modulus == 0 && action == HashMod {
            return Err("relabel configuration for hashmod requires non-zero modulus".into());
        }
        if matches!(
            action,
            Replace | HashMod | Lowercase | Uppercase | KeepEqual | DropEqual
        ) && target.is_empty()
        {
            return Err(format!(
                "relabel configuration for {name} action requires 'target_label' value"
            ));
        }
        let invalid_target = || format!("{target:?} is invalid 'target_label' for {name} action");
        if action == Replace
            && if target.contains('$') {
                !is_valid_target_template(target)
            } else {
                !is_valid_label_name(target)
            }
        {
            return Err(invalid_target());
        }
        let fixed_target = matches!(action, Lowercase | Uppercase | KeepEqual | DropEqual);
        if (fixed_target || action == HashMod) && !is_valid_label_name(target) {
            return Err(invalid_target());
        }
        if fixed_target && raw.replacement != default_replacement() {
            return Err(format!("'replacement' can not be set for {name} action"));
        }
        if action == LabelMap && !is_valid_target_template(&raw.replacement) {
            return Err(format!(
                "{:?} is invalid 'replacement' for {name} action",
                raw.replacement
            ));
        }
        if matches!(action, KeepEqual | DropEqual)
            && (!regex.is_default()
                || raw.modulus != 0
                || raw.separator != default_separator()
                || raw.replacement != default_replacement())
        {
            return Err(format!(
                "{name} action requires only 'source_labels' and `target_label`, and no other fields"
            ));
        }
        if matches!(action, LabelDrop | LabelKeep)
            && (!raw.source_labels.is_empty()
                || !target.is_empty()
                || raw.modulus != 0
                || raw.separator != default_separator()
                || raw.replacement != default_replacement())
        {
            return Err(format!(
                "{name} action requires only 'regex', and no other fields"
            ));
        }
        Ok(RelabelConfig {
            source_labels: raw.source_labels,
            separator: raw.separator,
            regex,
            modulus: raw.modulus,
            target_label: raw.target_label,
            replacement: raw.replacement,
            action,
        })
    }
}

/// Prometheus settings torchwatch knows but does not do, with what to use instead. A file that
/// sets one is refused at the field's line and column rather than half-applied.
const UNSUPPORTED: &[(&str, &str)] = &[
    ("rule_files", "put rule files in torchwatch's rules.files"),
    (
        "alerting",
        "configure Alertmanagers in torchwatch's notify.alertmanagers",
    ),
    ("remote_write", "torchwatch does not support remote_write"),
    ("remote_read", "torchwatch does not support remote_read"),
    ("storage", "set torchwatch's storage: section instead"),
    ("tracing", "torchwatch does not support tracing"),
    ("scrape_config_files", "list the jobs under scrape_configs"),
    (
        "evaluation_interval",
        "set torchwatch's rules.evaluation_interval",
    ),
    ("query_log_file", "torchwatch does not support a query log"),
    (
        "body_size_limit",
        "torchwatch does not support body_size_limit",
    ),
    ("oauth2", "use authorization or basic_auth"),
    ("proxy_url", "torchwatch does not scrape through proxies"),
    ("no_proxy", "torchwatch does not scrape through proxies"),
    (
        "proxy_from_environment",
        "torchwatch does not scrape through proxies",
    ),
    (
        "proxy_connect_header",
        "torchwatch does not scrape through proxies",
    ),
    ("max_version", "torchwatch speaks TLS 1.2 and 1.3"),
    ("ca", "put the CA in a file and use ca_file"),
    ("cert", "put the certificate in a file and use cert_file"),
    ("key", "put the key in a file and use key_file"),
    (
        "native_histogram_bucket_limit",
        "torchwatch stores no native histograms",
    ),
    (
        "scrape_classic_histograms",
        "torchwatch stores no native histograms",
    ),
    (
        "keep_dropped_targets",
        "torchwatch does not keep dropped targets",
    ),
];

/// Every service discovery but `static_configs` and `file_sd_configs`.
const DISCOVERIES: &[&str] = &[
    "azure",
    "consul",
    "digitalocean",
    "docker",
    "dockerswarm",
    "dns",
    "ec2",
    "eureka",
    "gce",
    "hetzner",
    "http",
    "ionos",
    "kubernetes",
    "kuma",
    "lightsail",
    "linode",
    "marathon",
    "nerve",
    "nomad",
    "openstack",
    "ovhcloud",
    "puppetdb",
    "scaleway",
    "serverset",
    "triton",
    "uyuni",
    "vultr",
];

/// A clearer message for an unknown field that is a Prometheus setting torchwatch lacks.
pub(crate) fn explain_unsupported(detail: &str) -> Option<String> {
    super::explain_unknown_field(detail, "a Prometheus", |field| {
        if let Some((_, hint)) = UNSUPPORTED.iter().find(|(name, _)| *name == field) {
            return Some((*hint).to_string());
        }
        let discovery = field.strip_suffix("_sd_configs")?;
        DISCOVERIES.contains(&discovery).then(|| {
            "torchwatch discovers targets only through static_configs and file_sd_configs".into()
        })
    })
}

impl JobShorthand {
    fn into_job(self) -> ScrapeJob {
        ScrapeJob {
            job_name: self.job_name,
            scrape_interval: self.interval.unwrap_or_default(),
            scrape_timeout: self.timeout.unwrap_or_default(),
            metrics_path: self.metrics_path,
            scheme: self.scheme,
            params: BTreeMap::new(),
            honor_labels: false,
            honor_timestamps: true,
            static_configs: vec![StaticConfig {
                targets: self.targets,
                labels: self.labels,
            }],
            file_sd_configs: Vec::new(),
            relabel_configs: Vec::new(),
            metric_relabel_configs: Vec::new(),
            basic_auth: self.basic_auth,
            authorization: self.authorization,
            bearer_token: None,
            bearer_token_file: None,
            tls_config: TlsConfig::default(),
            sample_limit: 0,
            label_limit: 0,
            label_name_length_limit: 0,
            label_value_length_limit: 0,
            target_limit: 0,
            follow_redirects: true,
            enable_http2: true,
        }
    }
}

fn relative_to(base: &Path, path: &mut PathBuf) {
    if path.is_relative() {
        *path = base.join(&*path);
    }
}

impl ScrapeJob {
    /// Paths in a config file are relative to that file, as in Prometheus.
    fn resolve_paths(&mut self, base: &Path) {
        for sd in &mut self.file_sd_configs {
            for file in &mut sd.files {
                if Path::new(file.as_str()).is_relative() {
                    *file = base.join(&*file).to_string_lossy().into_owned();
                }
            }
        }
        let tls = &mut self.tls_config;
        for path in [&mut tls.ca_file, &mut tls.cert_file, &mut tls.key_file]
            .into_iter()
            .chain([&mut self.bearer_token_file])
            .flatten()
        {
            relative_to(base, path);
        }
        if let Some(path) = self
            .basic_auth
            .as_mut()
            .and_then(|b| b.password_file.as_mut())
        {
            relative_to(base, path);
        }
        if let Some(path) = self
            .authorization
            .as_mut()
            .and_then(|a| a.credentials_file.as_mut())
        {
            relative_to(base, path);
        }
    }

    /// Prometheus' checks of one `scrape_config` (config.go), once defaults are filled in.
    fn validate(&self) -> Result<(), String> {
        if self.job_name.is_empty() {
            return Err("job_name is empty".into());
        }
        if self.scheme != "http" && self.scheme != "https" {
            return Err(format!(
                "scheme: must be http or https, not {:?}",
                self.scheme
            ));
        }
        if self.scrape_timeout > self.scrape_interval {
            return Err(format!(
                "scrape timeout greater than scrape interval for scrape config with job name {:?}",
                self.job_name
            ));
        }
        for (i, group) in self.static_configs.iter().enumerate() {
            for target in &group.targets {
                check_target_address(target)
                    .map_err(|e| format!("static_configs[{i}].targets: {e}"))?;
            }
            check_label_names(&group.labels)
                .map_err(|e| format!("static_configs[{i}].labels: {e}"))?;
        }
        for (i, sd) in self.file_sd_configs.iter().enumerate() {
            for file in &sd.files {
                if !is_valid_sd_file(file) {
                    return Err(format!(
                        "file_sd_configs[{i}].files: path name {file:?} is not valid for file discovery"
                    ));
                }
            }
            if sd.refresh_interval.millis() <= 0 {
                return Err(format!(
                    "file_sd_configs[{i}].refresh_interval: must be longer than 0s"
                ));
            }
        }
        let bearer = self.bearer_token.is_some() || self.bearer_token_file.is_some();
        if self.bearer_token.is_some() && self.bearer_token_file.is_some() {
            return Err(
                "at most one of bearer_token & bearer_token_file must be configured".into(),
            );
        }
        if self.basic_auth.is_some() && (bearer || self.authorization.is_some()) {
            return Err(
                "at most one of basic_auth, bearer_token & bearer_token_file, authorization must be configured"
                    .into(),
            );
        }
        if self.authorization.is_some() && bearer {
            return Err(
                "authorization is not compatible with bearer_token & bearer_token_file".into(),
            );
        }
        if let Some(basic) = &self.basic_auth
            && [
                basic.password.is_some(),
                basic.password_file.is_some(),
                basic.password_env.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count()
                > 1
        {
            return Err(
                "basic_auth: at most one of password, password_file & password_env must be configured"
                    .into(),
            );
        }
        if let Some(auth) = &self.authorization {
            if auth
                .kind
                .as_deref()
                .is_some_and(|k| k.eq_ignore_ascii_case("basic"))
            {
                return Err(
                    "authorization: authorization type cannot be set to \"basic\", use \"basic_auth\" instead"
                        .into(),
                );
            }
            if [
                auth.credentials.is_some(),
                auth.credentials_file.is_some(),
                auth.credentials_env.is_some(),
            ]
            .iter()
            .filter(|s| **s)
            .count()
                > 1
            {
                return Err(
                    "authorization: at most one of credentials, credentials_file & credentials_env must be configured"
                        .into(),
                );
            }
        }
        let tls = &self.tls_config;
        if tls.cert_file.is_some() != tls.key_file.is_some() {
            return Err("tls_config: set both cert_file and key_file, or neither".into());
        }
        match tls.min_version.as_deref() {
            None | Some("TLS12") | Some("TLS13") => {}
            Some(v @ ("TLS10" | "TLS11")) => {
                return Err(format!(
                    "tls_config.min_version: {v} is not supported: torchwatch speaks TLS 1.2 and 1.3 only; use TLS12"
                ));
            }
            Some(other) => {
                return Err(format!(
                    "tls_config.min_version: unknown TLS version: {other}"
                ));
            }
        }
        Ok(())
    }
}

/// Prometheus' `CheckTargetAddress`.
pub(crate) fn check_target_address(address: &str) -> Result<(), String> {
    if address.contains('/') {
        return Err(format!("{address:?} is not a valid hostname"));
    }
    Ok(())
}

/// Label names of a target group must be valid, as Prometheus' targetgroup parser requires.
pub(crate) fn check_label_names(labels: &BTreeMap<String, String>) -> Result<(), String> {
    match labels.keys().find(|n| !is_valid_label_name(n)) {
        Some(bad) => Err(format!("{bad:?} is not a valid label name")),
        None => Ok(()),
    }
}

/// Prometheus' `patFileSDName`: `*` only in the last path element, a JSON or YAML extension.
fn is_valid_sd_file(path: &str) -> bool {
    let (dir, name) = path.rsplit_once('/').unwrap_or(("", path));
    if dir.contains('*') {
        return false;
    }
    [".json", ".yml", ".yaml", ".JSON", ".YML", ".YAML"]
        .iter()
        .any(|ext| name.ends_with(ext))
}

/// What [`ScrapeConfig::resolve`] found for other sections of the config.
pub(crate) struct Resolved {
    /// `global.external_labels`, to merge into `rules.external_labels`.
    pub external_labels: BTreeMap<String, String>,
}

impl ScrapeConfig {
    /// The interval of jobs that set none and of the `self` target.
    pub fn default_interval(&self) -> PromDuration {
        self.interval.unwrap_or(DEFAULT_INTERVAL)
    }

    /// The timeout of jobs that set none, cut to the default interval.
    pub fn default_timeout(&self) -> PromDuration {
        self.timeout
            .unwrap_or(DEFAULT_TIMEOUT)
            .min(self.default_interval())
    }

    /// Reads `prometheus_config_file`, folds `global:` and `jobs:` into `interval`, `timeout`
    /// and `scrape_configs`, fills in each job's defaults and checks everything. `base` is the
    /// directory of the file this section came from.
    pub(crate) fn resolve(&mut self, base: &Path) -> Result<Resolved, String> {
        // Where each job came from, for errors.
        let mut origins: Vec<String> = Vec::new();
        for (i, job) in self.scrape_configs.iter_mut().enumerate() {
            job.resolve_paths(base);
            origins.push(format!("scrape.scrape_configs[{i}]"));
        }
        let mut globals = Vec::new();
        if let Some(global) = self.global.take() {
            globals.push(("scrape.global", global));
        }
        if let Some(file) = &self.prometheus_config_file {
            let path = if file.is_relative() {
                base.join(file)
            } else {
                file.clone()
            };
            let origin = path.display().to_string();
            let text = std::fs::read_to_string(&path)
                .map_err(|e| format!("scrape.prometheus_config_file: cannot read {origin}: {e}"))?;
            let parsed: PrometheusFile = serde_saphyr::from_str(&text).map_err(|e| {
                format!("scrape.prometheus_config_file: {}", yaml_error(&origin, &e))
            })?;
            let file_base = path.parent().unwrap_or(Path::new(""));
            for (i, mut job) in parsed.scrape_configs.into_iter().enumerate() {
                job.resolve_paths(file_base);
                origins.push(format!("{origin}: scrape_configs[{i}]"));
                self.scrape_configs.push(job);
            }
            if let Some(global) = parsed.global {
                globals.push(("the global: of scrape.prometheus_config_file", global));
            }
        }
        if globals.len() > 1 {
            return Err(
                "scrape.global: a global: section is also in scrape.prometheus_config_file; keep one"
                    .into(),
            );
        }
        let mut external_labels = BTreeMap::new();
        if let Some((at, global)) = globals.pop() {
            for (value, given, name) in [
                (global.scrape_interval, self.interval, "interval"),
                (global.scrape_timeout, self.timeout, "timeout"),
            ] {
                if value.is_some() && given.is_some() {
                    return Err(format!(
                        "scrape.{name}: {at} sets scrape_{name} too; keep one"
                    ));
                }
            }
            self.interval = self.interval.or(global.scrape_interval);
            self.timeout = self.timeout.or(global.scrape_timeout);
            check_label_names(&global.external_labels)
                .map_err(|e| format!("{at}.external_labels: {e}"))?;
            external_labels = global.external_labels;
        }
        if self.default_interval().millis() <= 0 {
            return Err("scrape.interval: must be longer than 0s".into());
        }
        if self.timeout.is_some_and(|t| t > self.default_interval()) {
            return Err(
                "scrape.timeout: global scrape timeout greater than scrape interval".into(),
            );
        }
        for (i, mut job) in std::mem::take(&mut self.jobs).into_iter().enumerate() {
            for path in [
                job.basic_auth
                    .as_mut()
                    .and_then(|b| b.password_file.as_mut()),
                job.authorization
                    .as_mut()
                    .and_then(|a| a.credentials_file.as_mut()),
            ]
            .into_iter()
            .flatten()
            {
                relative_to(base, path);
            }
            if job.targets.is_empty() {
                return Err(format!(
                    "scrape.jobs[{i}] ({}): targets: give at least one host:port",
                    job.job_name
                ));
            }
            origins.push(format!("scrape.jobs[{i}]"));
            self.scrape_configs.push(job.into_job());
        }
        let (interval, timeout) = (
            self.default_interval(),
            self.timeout.unwrap_or(DEFAULT_TIMEOUT),
        );
        let mut names = std::collections::HashSet::new();
        for (job, origin) in self.scrape_configs.iter_mut().zip(&origins) {
            let at = format!("{origin} ({})", job.job_name);
            if job.scrape_interval.millis() == 0 {
                job.scrape_interval = interval;
            }
            job.validate().map_err(|e| format!("{at}: {e}"))?;
            // As in Prometheus, an inherited timeout is cut to the interval; only a job's own
            // longer timeout is an error (checked above).
            if job.scrape_timeout.millis() == 0 {
                job.scrape_timeout = timeout.min(job.scrape_interval);
            }
            if !names.insert(job.job_name.clone()) {
                return Err(format!(
                    "{at}: found multiple scrape configs with job name {:?}",
                    job.job_name
                ));
            }
        }
        Ok(Resolved { external_labels })
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(yaml: &str) -> String {
        Config::parse(yaml, "t.yaml").unwrap_err().to_string()
    }

    #[test]
    fn prometheus_fields_torchwatch_lacks_are_refused_where_they_are() {
        let err = error(
            "scrape:\n  scrape_configs:\n    - job_name: k\n      kubernetes_sd_configs: [{role: pod}]\n",
        );
        assert!(
            err.starts_with(
                "t.yaml:4:7: `kubernetes_sd_configs` is a Prometheus setting torchwatch does not \
                 support: torchwatch discovers targets only through static_configs and file_sd_configs"
            ),
            "{err}"
        );
        let err = error("scrape:\n  scrape_configs:\n    - job_name: k\n      oauth2: {}\n");
        assert!(
            err.starts_with("t.yaml:4:7: `oauth2` is a Prometheus setting"),
            "{err}"
        );
        // A typo is not a Prometheus field: serde's list of what is expected stays.
        let err =
            error("scrape:\n  scrape_configs:\n    - job_name: k\n      scrape_intervall: 1s\n");
        assert!(
            err.contains("unknown field `scrape_intervall`, expected"),
            "{err}"
        );
    }

    #[test]
    fn relabel_errors_carry_the_position_and_prometheus_message() {
        let err = error(
            "scrape:\n  scrape_configs:\n    - job_name: k\n      relabel_configs:\n        - {action: hashmod, source_labels: [a], target_label: b}\n",
        );
        assert!(err.starts_with("t.yaml:5:"), "{err}");
        assert!(
            err.contains("relabel configuration for hashmod requires non-zero modulus"),
            "{err}"
        );
    }

    #[test]
    fn jobs_are_checked_as_prometheus_checks_them() {
        let job = |extra: &str| {
            format!("scrape:\n  interval: 10s\n  scrape_configs:\n    - job_name: k\n{extra}")
        };
        let err = error(&job("      scrape_timeout: 20s\n"));
        assert_eq!(
            err,
            "t.yaml: scrape.scrape_configs[0] (k): scrape timeout greater than scrape interval \
             for scrape config with job name \"k\""
        );
        let err = error(&job("    - job_name: k\n"));
        assert!(
            err.ends_with("found multiple scrape configs with job name \"k\""),
            "{err}"
        );
        let err = error(
            "scrape:\n  jobs: [{job_name: k, targets: ['a:1']}]\n  scrape_configs: [{job_name: k}]\n",
        );
        assert!(err.contains("scrape.jobs[0] (k): found multiple"), "{err}");
        let err = error(&job("      file_sd_configs: [{files: ['sd/*/x.json']}]\n"));
        assert!(err.contains("is not valid for file discovery"), "{err}");
        let err = error(&job(
            "      bearer_token: a\n      basic_auth: {username: u}\n",
        ));
        assert!(err.contains("at most one of basic_auth"), "{err}");
        let err = error(&job("      tls_config: {min_version: TLS10}\n"));
        assert!(err.contains("TLS10 is not supported"), "{err}");
        let config = Config::parse(&job(""), "t.yaml").unwrap();
        let k = &config.scrape.scrape_configs[0];
        // torchwatch's interval, Prometheus' path and scheme, the timeout cut to the interval.
        assert_eq!(
            (k.scrape_interval.to_string(), k.scrape_timeout.to_string()),
            ("10s".to_string(), "10s".to_string())
        );
        assert_eq!(
            (k.metrics_path.as_str(), k.scheme.as_str()),
            ("/metrics", "http")
        );
    }

    #[test]
    fn a_prometheus_file_gives_global_and_jobs_and_refuses_the_rest() {
        let dir = std::env::temp_dir().join(format!("tw-promfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let prom = dir.join("prometheus.yml");
        let load = |text: &str| {
            std::fs::write(&prom, text).unwrap();
            let config = dir.join("torchwatch.yaml");
            std::fs::write(
                &config,
                "scrape:\n  prometheus_config_file: prometheus.yml\nrules:\n  external_labels: {site: a}\n",
            )
            .unwrap();
            Config::load(&config)
        };
        let config = load(
            "global:\n  scrape_interval: 5s\n  external_labels: {region: eu}\nscrape_configs:\n  - job_name: p\n    static_configs: [{targets: ['h:1']}]\n    file_sd_configs: [{files: ['sd/*.json']}]\n",
        )
        .unwrap();
        let job = &config.scrape.scrape_configs[0];
        assert_eq!(job.scrape_interval.to_string(), "5s");
        assert_eq!(job.scrape_timeout.to_string(), "5s");
        assert_eq!(
            job.file_sd_configs[0].files[0],
            dir.join("sd/*.json").display().to_string(),
            "relative to the Prometheus file"
        );
        assert_eq!(
            config
                .rules
                .external_labels
                .get("region")
                .map(String::as_str),
            Some("eu")
        );
        for (section, hint) in [
            ("rule_files: [a.yml]\n", "rules.files"),
            ("alerting: {alertmanagers: []}\n", "notify.alertmanagers"),
            ("remote_write: []\n", "does not support remote_write"),
        ] {
            let err = load(section).unwrap_err().to_string();
            assert!(
                err.contains(&format!("{}:1:1: `", prom.display())) && err.contains(hint),
                "{err}"
            );
        }
        let err = load("global: {external_labels: {site: b}}\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("site is \"a\" here and \"b\""), "{err}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
