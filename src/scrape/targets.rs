//! From `scrape_configs` to targets, as Prometheus' scrape/target.go does it: target groups from
//! `static_configs` and `file_sd_configs`, `PopulateLabels` (the `__` labels, relabelling,
//! default port and `instance`), and each job's HTTP client.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use super::relabel::{self, LabelMap};
use crate::config::{
    self, HttpClientConfig, PromDuration, RelabelConfig, ScrapeConfig, ScrapeJob, StaticConfig,
};
use crate::http_client::HttpClient;
use crate::storage::Labels;

/// Limits of a job's scrapes; 0: none.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Limits {
    pub sample: usize,
    pub labels: usize,
    pub name_length: usize,
    pub value_length: usize,
}

/// Reads torchwatch's own exposition without the network, for `scrape.self` when the web
/// config guards the listener with client certificates or passwords the scraper cannot present.
pub type InProcess = Arc<
    dyn Fn() -> std::pin::Pin<
            Box<dyn std::future::Future<Output = Result<(String, super::Format), String>> + Send>,
        > + Send
        + Sync,
>;

/// Where `scrape.self` finds torchwatch's own metrics.
#[derive(Clone)]
pub struct OwnMetrics {
    /// The listener that serves `/metrics`.
    pub address: std::net::SocketAddr,
    /// Whether that listener speaks TLS (the scrape URL says `https`).
    pub tls: bool,
    /// Set when the listener cannot be scraped over HTTP by torchwatch itself.
    pub in_process: Option<InProcess>,
}

/// What every target of a job shares.
pub(crate) struct JobSettings {
    /// The job's client with its TLS settings and credentials.
    pub client: HttpClient,
    /// Fetches in-process instead of with `client` (only torchwatch's own target).
    pub in_process: Option<InProcess>,
    pub honor_labels: bool,
    pub honor_timestamps: bool,
    pub metric_relabel: Vec<RelabelConfig>,
    pub limits: Limits,
    /// Changes whenever any of the above does, so a reload restarts the job's loops.
    pub identity: u64,
}

/// One endpoint to scrape.
#[derive(Clone)]
pub struct Target {
    /// The `job_name` of its scrape config (for logs).
    pub job: String,
    /// Its labels after relabelling (`job`, `instance`, ...), added to every series it yields.
    pub labels: Labels,
    /// Full URL of the exposition, query parameters included.
    pub url: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// Per-scrape timeout.
    pub timeout: Duration,
    pub(crate) settings: Arc<JobSettings>,
    /// Set when the job has more targets than its `target_limit`: every scrape fails with it.
    pub(crate) forced_error: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("labels", &self.labels)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl Target {
    /// The `instance` label.
    pub fn instance(&self) -> &str {
        self.labels.get("instance")
    }
}

/// A job ready to produce targets: its config, shared settings, and the target groups last
/// read from each of its file_sd files (kept when a file turns unreadable, as Prometheus does).
struct JobPlan {
    config: ScrapeJob,
    settings: Arc<JobSettings>,
    files: Mutex<HashMap<PathBuf, FileGroups>>,
}

struct FileGroups {
    stamp: Option<(SystemTime, u64)>,
    groups: Vec<StaticConfig>,
}

/// The targets of one configuration; [`ScrapePlan::refresh`] re-reads file_sd files.
pub struct ScrapePlan {
    own: Option<Target>,
    jobs: Vec<JobPlan>,
    targets: Vec<Target>,
    /// When each job's files were last read in full (`refresh_interval`).
    last_refresh: Mutex<Instant>,
}

/// Builds the plan: torchwatch itself (job `torchwatch`) when `scrape.self` is on, then every
/// scrape config. Unreadable file_sd files are logged and give no targets, as in Prometheus;
/// unusable credentials or TLS files are errors.
pub fn plan(config: &ScrapeConfig, own: &OwnMetrics) -> Result<ScrapePlan, String> {
    let millis = |d: PromDuration| Duration::from_millis(d.millis() as u64);
    // Every job builds a TLS-capable client; the process-wide provider must exist first.
    crate::install_tls_provider();
    let own = if config.scrape_self {
        // A wildcard listen address is reachable on loopback.
        let mut address = own.address;
        if address.ip().is_unspecified() {
            address.set_ip(if address.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        let client = HttpClient::from_config(&HttpClientConfig::default(), "scrape.self")?;
        Some(Target {
            job: "torchwatch".into(),
            labels: Labels::from_pairs([
                ("job", "torchwatch".to_string()),
                ("instance", address.to_string()),
            ]),
            url: format!(
                "{}://{address}/metrics",
                if own.tls { "https" } else { "http" }
            ),
            interval: millis(config.default_interval()),
            timeout: millis(config.default_timeout()),
            settings: Arc::new(JobSettings {
                client,
                in_process: own.in_process.clone(),
                honor_labels: false,
                honor_timestamps: true,
                metric_relabel: Vec::new(),
                limits: Limits::default(),
                identity: 0,
            }),
            forced_error: None,
        })
    } else {
        None
    };
    let jobs = config
        .scrape_configs
        .iter()
        .map(|job| {
            Ok(JobPlan {
                settings: Arc::new(
                    settings(job).map_err(|e| format!("scrape job {}: {e}", job.job_name))?,
                ),
                config: job.clone(),
                files: Mutex::new(HashMap::new()),
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    let mut plan = ScrapePlan {
        own,
        jobs,
        targets: Vec::new(),
        last_refresh: Mutex::new(Instant::now()),
    };
    plan.read_files(true);
    plan.targets = plan.build();
    Ok(plan)
}

impl ScrapePlan {
    /// Every target, `self` first.
    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// True when some job reads file_sd files (and [`ScrapePlan::refresh`] is worth calling).
    pub fn has_files(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| !j.config.file_sd_configs.is_empty())
    }

    /// Re-reads file_sd files that changed, or all of them once the shortest
    /// `refresh_interval` passed; returns the new targets when anything changed.
    pub fn refresh(&mut self) -> Option<&[Target]> {
        let refresh_every = self
            .jobs
            .iter()
            .flat_map(|j| &j.config.file_sd_configs)
            .map(|sd| Duration::from_millis(sd.refresh_interval.millis() as u64))
            .min()?;
        let all = {
            let mut last = self.last_refresh.lock().unwrap_or_else(|e| e.into_inner());
            let due = last.elapsed() >= refresh_every;
            if due {
                *last = Instant::now();
            }
            due
        };
        if !self.read_files(all) {
            return None;
        }
        self.targets = self.build();
        Some(&self.targets)
    }

    /// Reads each job's file_sd files, all of them or those whose modification time or size
    /// changed (or that appeared or vanished); true when any target group changed.
    fn read_files(&self, all: bool) -> bool {
        let mut changed = false;
        for job in &self.jobs {
            let patterns: Vec<String> = job
                .config
                .file_sd_configs
                .iter()
                .flat_map(|sd| sd.files.iter().cloned())
                .collect();
            if patterns.is_empty() {
                continue;
            }
            let paths = match crate::rules::expand_globs(&patterns) {
                Ok(paths) => paths,
                Err(e) => {
                    tracing::warn!(event = "file_sd_failed", job = %job.config.job_name,
                        error = %e, "cannot list file_sd files");
                    continue;
                }
            };
            let mut files = job.files.lock().unwrap_or_else(|e| e.into_inner());
            let before = files.len();
            files.retain(|path, _| paths.contains(path));
            changed |= files.len() != before;
            for path in paths {
                let stamp = std::fs::metadata(&path)
                    .ok()
                    .map(|m| (m.modified().unwrap_or(SystemTime::UNIX_EPOCH), m.len()));
                let known = files.get(&path);
                if !all && known.is_some_and(|k| k.stamp == stamp) {
                    continue;
                }
                match read_groups(&path) {
                    Ok(groups) => {
                        changed |= known
                            .is_none_or(|k| format!("{:?}", k.groups) != format!("{groups:?}"));
                        files.insert(path, FileGroups { stamp, groups });
                    }
                    Err(e) => {
                        // Keep what the file said last; mark it seen so the error is logged
                        // once per change, not every second.
                        tracing::warn!(event = "file_sd_failed", job = %job.config.job_name,
                            file = %path.display(), error = %e, "keeping the file's last targets");
                        let groups = known.map(|k| k.groups.clone()).unwrap_or_default();
                        files.insert(path, FileGroups { stamp, groups });
                    }
                }
            }
        }
        changed
    }

    fn build(&self) -> Vec<Target> {
        let mut out: Vec<Target> = self.own.iter().cloned().collect();
        for job in &self.jobs {
            let mut groups: Vec<(LabelMap, &StaticConfig)> = job
                .config
                .static_configs
                .iter()
                .map(|g| (LabelMap::new(), g))
                .collect();
            let files = job.files.lock().unwrap_or_else(|e| e.into_inner());
            let mut paths: Vec<&PathBuf> = files.keys().collect();
            paths.sort();
            let file_groups: Vec<(LabelMap, StaticConfig)> = paths
                .into_iter()
                .flat_map(|path| {
                    let meta: LabelMap =
                        [("__meta_filepath".to_string(), path.display().to_string())].into();
                    files[path]
                        .groups
                        .iter()
                        .map(move |g| (meta.clone(), g.clone()))
                })
                .collect();
            drop(files);
            groups.extend(file_groups.iter().map(|(m, g)| (m.clone(), g)));
            let mut targets = Vec::new();
            for (meta, group) in groups {
                for address in &group.targets {
                    let mut labels = meta.clone();
                    for (name, value) in &group.labels {
                        labels.insert(name.clone(), value.clone());
                    }
                    labels.insert("__address__".into(), address.clone());
                    labels.retain(|_, v| !v.is_empty());
                    match populate(labels, &job.config) {
                        Ok(Some(p)) => targets.push(Target {
                            job: job.config.job_name.clone(),
                            labels: p.labels,
                            url: p.url,
                            interval: p.interval,
                            timeout: p.timeout,
                            settings: job.settings.clone(),
                            forced_error: None,
                        }),
                        Ok(None) => {}
                        Err(e) => tracing::warn!(event = "target_invalid",
                            job = %job.config.job_name, target = %address, error = %e,
                            "target not scraped"),
                    }
                }
            }
            // Prometheus scrapes a target found twice once.
            let mut seen = std::collections::HashSet::new();
            targets.retain(|t| seen.insert((t.labels.clone(), t.url.clone())));
            let limit = job.config.target_limit;
            if limit > 0 && targets.len() > limit {
                let error = format!(
                    "target_limit exceeded (number of targets: {}, limit: {limit})",
                    targets.len()
                );
                for target in &mut targets {
                    target.forced_error = Some(error.clone());
                }
            }
            out.extend(targets);
        }
        out
    }
}

/// A file_sd file: a JSON or YAML list of target groups, by extension.
fn read_groups(path: &std::path::Path) -> Result<Vec<StaticConfig>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read: {e}"))?;
    let origin = path.display().to_string();
    let json = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    let groups: Vec<StaticConfig> = if json {
        serde_json::from_str(&text).map_err(|e| format!("{origin}: {e}"))?
    } else {
        serde_saphyr::from_str(&text).map_err(|e| config::yaml_error(&origin, &e))?
    };
    for group in &groups {
        config::check_label_names(&group.labels).map_err(|e| format!("{origin}: {e}"))?;
    }
    Ok(groups)
}

fn get(labels: &LabelMap, name: &str) -> String {
    labels.get(name).cloned().unwrap_or_default()
}

/// Go's `net.SplitHostPort`, as far as telling whether an address has a port goes.
fn has_port(address: &str) -> Option<bool> {
    if let Some(rest) = address.strip_prefix('[') {
        let (_, after) = rest.split_once(']')?;
        return match after {
            "" => Some(false),
            a if a.starts_with(':') && !a[1..].contains(':') => Some(true),
            _ => None,
        };
    }
    match address.matches(':').count() {
        0 => Some(false),
        1 => Some(true),
        // More colons need brackets; Prometheus' SplitHostPort fails, and so does adding a port.
        _ => None,
    }
}

/// What `PopulateLabels` makes of one target.
struct Populated {
    labels: Labels,
    url: String,
    interval: Duration,
    timeout: Duration,
}

/// Prometheus' `PopulateLabels` for one target: None when relabelling dropped it.
fn populate(mut labels: LabelMap, job: &ScrapeJob) -> Result<Option<Populated>, String> {
    for (name, value) in [
        ("job", job.job_name.clone()),
        ("__scrape_interval__", job.scrape_interval.to_string()),
        ("__scrape_timeout__", job.scrape_timeout.to_string()),
        ("__metrics_path__", job.metrics_path.clone()),
        ("__scheme__", job.scheme.clone()),
    ] {
        if labels.get(name).is_none_or(|v| v.is_empty()) && !value.is_empty() {
            labels.insert(name.to_string(), value);
        }
    }
    for (name, values) in &job.params {
        if let Some(first) = values.first().filter(|v| !v.is_empty()) {
            labels.insert(format!("__param_{name}"), first.clone());
        }
    }
    if !relabel::process(&mut labels, &job.relabel_configs) {
        return Ok(None);
    }
    let mut address = get(&labels, "__address__");
    if address.is_empty() {
        return Err("no address".into());
    }
    let scheme = get(&labels, "__scheme__");
    if has_port(&address) == Some(false) {
        address = match scheme.as_str() {
            "http" | "" => format!("{address}:80"),
            "https" => format!("{address}:443"),
            _ => return Err(format!("invalid scheme: {:?}", job.scheme)),
        };
        labels.insert("__address__".into(), address.clone());
    }
    config::check_target_address(&address)?;
    let duration = |name: &str, what: &str| -> Result<Duration, String> {
        let text = get(&labels, name);
        let parsed =
            PromDuration::parse(&text).map_err(|e| format!("error parsing scrape {what}: {e}"))?;
        if parsed.millis() == 0 {
            return Err(format!("scrape {what} cannot be 0"));
        }
        Ok(Duration::from_millis(parsed.millis() as u64))
    };
    let interval = duration("__scrape_interval__", "interval")?;
    let timeout = duration("__scrape_timeout__", "timeout")?;
    if timeout > interval {
        return Err(format!(
            "scrape timeout cannot be greater than scrape interval ({:?} > {:?})",
            get(&labels, "__scrape_timeout__"),
            get(&labels, "__scrape_interval__")
        ));
    }
    labels.retain(|name, _| !name.starts_with("__meta_"));
    if labels.get("instance").is_none_or(|v| v.is_empty()) {
        labels.insert("instance".into(), address.clone());
    }
    // The job's params, each overridden by its `__param_` label.
    let mut params: BTreeMap<String, Vec<String>> = job.params.clone();
    for (name, value) in &labels {
        if let Some(param) = name.strip_prefix("__param_") {
            let values = params.entry(param.to_string()).or_default();
            match values.first_mut() {
                Some(first) => *first = value.clone(),
                None => values.push(value.clone()),
            }
        }
    }
    let mut url = reqwest::Url::parse(&format!(
        "{scheme}://{address}{}",
        get(&labels, "__metrics_path__")
    ))
    .map_err(|e| format!("invalid URL for {address:?}: {e}"))?;
    if params.values().any(|v| !v.is_empty()) {
        let mut query = url.query_pairs_mut();
        for (name, values) in &params {
            for value in values {
                query.append_pair(name, value);
            }
        }
    }
    let visible = labels
        .iter()
        .filter(|(name, _)| !name.starts_with("__"))
        .map(|(n, v)| (n.clone(), v.clone()));
    Ok(Some(Populated {
        labels: Labels::from_pairs(visible),
        url: url.to_string(),
        interval,
        timeout,
    }))
}

fn read(path: &std::path::Path, what: &str) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| format!("{what}: cannot read {}: {e}", path.display()))
}

/// The job's HTTP client (TLS, redirects) and credentials.
fn settings(job: &ScrapeJob) -> Result<JobSettings, String> {
    use std::hash::{Hash, Hasher};
    let mut identity = std::collections::hash_map::DefaultHasher::new();
    // Debug hides secrets but shows everything else the job configures.
    format!("{job:?}").hash(&mut identity);
    let tls = &job.tls_config;
    // A changed certificate or key file is a changed job: its targets restart with it.
    for path in [&tls.ca_file, &tls.cert_file, &tls.key_file]
        .into_iter()
        .flatten()
    {
        read(path, "tls_config")?.hash(&mut identity);
    }
    let client = HttpClient::from_config(
        &HttpClientConfig {
            basic_auth: job.basic_auth.clone(),
            authorization: job.authorization.clone(),
            bearer_token: job.bearer_token.clone(),
            bearer_token_file: job.bearer_token_file.clone(),
            tls_config: Some(tls.clone()),
            follow_redirects: Some(job.follow_redirects),
            enable_http2: Some(job.enable_http2),
        },
        "",
    )?;
    client.hash(&mut identity);
    Ok(JobSettings {
        client,
        in_process: None,
        honor_labels: job.honor_labels,
        honor_timestamps: job.honor_timestamps,
        metric_relabel: job.metric_relabel_configs.clone(),
        limits: Limits {
            sample: job.sample_limit,
            labels: job.label_limit,
            name_length: job.label_name_length_limit,
            value_length: job.label_value_length_limit,
        },
        identity: identity.finish(),
    })
}
