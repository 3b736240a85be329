//! Scrapes targets' `/metrics` into the [`Storage`] the way Prometheus does:
//! `job`/`instance` labels, `up`, `scrape_duration_seconds`,
//! `scrape_samples_scraped`, and staleness markers for series that disappear
//! from a scrape or whose target goes down.

mod parse;

pub use parse::{Format, ParseError, ParsedSample, parse};

use crate::config::{self, ScrapeConfig};
use crate::storage::{Labels, METRIC_NAME, SeriesRef, Storage, stale_nan};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What Prometheus asks for: OpenMetrics first, the text format as fallback.
const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// One endpoint to scrape.
#[derive(Clone)]
pub struct Target {
    /// `job` label.
    pub job: String,
    /// `instance` label (`host:port`).
    pub instance: String,
    /// Full URL of the exposition.
    pub url: String,
    /// Time between scrapes.
    pub interval: Duration,
    /// Per-scrape timeout.
    pub timeout: Duration,
    /// Credentials, if any (never logged).
    auth: Option<Auth>,
    /// Job-level labels added to every series.
    pub extra_labels: Vec<(String, String)>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("job", &self.job)
            .field("instance", &self.instance)
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

/// Scrape credentials; `Debug` never shows them.
#[derive(Clone)]
enum Auth {
    Basic { username: String, password: String },
    Bearer(String),
}

/// Builds the target list: torchwatch itself (job `torchwatch`) when
/// `scrape.self` is on, then every static target of every job.
pub fn targets(config: &ScrapeConfig, own_address: SocketAddr) -> Result<Vec<Target>, String> {
    let mut out = Vec::new();
    let interval = Duration::from_millis(config.interval.millis() as u64);
    let timeout = Duration::from_millis(config.timeout.millis() as u64).min(interval);
    if config.scrape_self {
        // A wildcard listen address is reachable on loopback.
        let mut address = own_address;
        if address.ip().is_unspecified() {
            address.set_ip(if address.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            });
        }
        out.push(Target {
            job: "torchwatch".into(),
            instance: address.to_string(),
            url: format!("http://{address}/metrics"),
            interval,
            timeout,
            auth: None,
            extra_labels: Vec::new(),
        });
    }
    for job in &config.jobs {
        let what = format!("scrape job {}", job.job_name);
        let auth = match (&job.basic_auth, &job.authorization) {
            (Some(_), Some(_)) => {
                return Err(format!("{what}: set basic_auth or authorization, not both"));
            }
            (Some(basic), None) => Some(Auth::Basic {
                username: basic.username.clone(),
                password: config::resolve_secret(
                    &basic.password,
                    &basic.password_file,
                    &basic.password_env,
                    &format!("{what}: basic_auth password"),
                )?
                .unwrap_or_default(),
            }),
            (None, Some(auth)) => config::resolve_secret(
                &auth.credentials,
                &auth.credentials_file,
                &auth.credentials_env,
                &format!("{what}: authorization credentials"),
            )?
            .map(Auth::Bearer),
            (None, None) => None,
        };
        let interval = job
            .interval
            .map(|d| Duration::from_millis(d.millis() as u64))
            .unwrap_or(interval);
        let timeout = job
            .timeout
            .map(|d| Duration::from_millis(d.millis() as u64))
            .unwrap_or(timeout)
            .min(interval);
        for instance in &job.targets {
            out.push(Target {
                job: job.job_name.clone(),
                instance: instance.clone(),
                url: format!("{}://{instance}{}", job.scheme, job.metrics_path),
                interval,
                timeout,
                auth: auth.clone(),
                extra_labels: job
                    .labels
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
            });
        }
    }
    Ok(out)
}

/// Per-target memory between scrapes, like Prometheus' scrape cache: each
/// exposition series' final labels and store slot, and the scrape that last saw
/// it (series not seen in the latest scrape get a staleness marker).
#[derive(Default)]
pub struct TargetState {
    series: HashMap<SeriesKey, CachedSeries>,
    scrape: u64,
}

/// An exposition series as parsed: metric name and labels in written order.
#[derive(Clone, PartialEq, Eq, Hash)]
struct SeriesKey {
    name: String,
    labels: Vec<(String, String)>,
}

struct CachedSeries {
    labels: Labels,
    slot: Option<SeriesRef>,
    seen: u64,
}

/// The outcome of one scrape, after it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeReport {
    /// Samples in the exposition.
    pub samples: usize,
    /// How long fetching and parsing took.
    pub duration: Duration,
    /// Why the scrape failed, if it did.
    pub error: Option<String>,
}

/// Scrapes `target` once at `now_ms` and writes the result (or `up 0` and
/// staleness markers) into `storage`.
pub async fn scrape_once(
    client: &reqwest::Client,
    target: &Target,
    storage: &Storage,
    state: &mut TargetState,
    now_ms: i64,
) -> ScrapeReport {
    let started = Instant::now();
    let fetched = fetch(client, target).await;
    let parsed = fetched.and_then(|(body, format)| {
        parse(&body, format).map_err(|e| format!("malformed exposition: {e}"))
    });
    let duration = started.elapsed();
    let (samples, error) = match parsed {
        Ok(samples) => (samples, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let count = samples.len();
    ingest(storage, target, &samples, now_ms, state);
    let mut appender = storage.appender();
    for (name, value) in [
        ("up", if error.is_none() { 1.0 } else { 0.0 }),
        ("scrape_duration_seconds", duration.as_secs_f64()),
        ("scrape_samples_scraped", count as f64),
    ] {
        let labels = target_labels(target, &[(METRIC_NAME.to_string(), name.to_string())]);
        let _ = appender.append(&labels, now_ms, value);
    }
    ScrapeReport {
        samples: count,
        duration,
        error,
    }
}

async fn fetch(client: &reqwest::Client, target: &Target) -> Result<(String, Format), String> {
    let mut request = client
        .get(&target.url)
        .timeout(target.timeout)
        .header(ACCEPT, ACCEPT_HEADER)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            target.timeout.as_secs_f64().to_string(),
        );
    request = match &target.auth {
        Some(Auth::Basic { username, password }) => request.basic_auth(username, Some(password)),
        Some(Auth::Bearer(token)) => request.bearer_auth(token),
        None => request,
    };
    // Errors are reported without the URL's query or credentials: reqwest's
    // messages include the URL, which is ours and holds no secrets.
    let response = request
        .send()
        .await
        .map_err(|e| crate::client_error::describe(&e))?;
    let status = response.status();
    if !status.is_success() {
        return Err(format!("server returned HTTP status {status}"));
    }
    let format = Format::from_content_type(
        response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok()),
    );
    let body = response
        .text()
        .await
        .map_err(|e| crate::client_error::describe(&e))?;
    Ok((body, format))
}

/// The exposition's labels plus the target's: `job` and `instance` win, and a
/// clashing exposition label is kept as `exported_<name>` (Prometheus'
/// `honor_labels: false`).
fn target_labels(target: &Target, labels: &[(String, String)]) -> Labels {
    let mut pairs: Vec<(String, String)> =
        Vec::with_capacity(labels.len() + 2 + target.extra_labels.len());
    for (name, value) in labels {
        if name == "job" || name == "instance" || target.extra_labels.iter().any(|(n, _)| n == name)
        {
            pairs.push((format!("exported_{name}"), value.clone()));
        } else {
            pairs.push((name.clone(), value.clone()));
        }
    }
    pairs.extend(target.extra_labels.iter().cloned());
    pairs.push(("job".into(), target.job.clone()));
    pairs.push(("instance".into(), target.instance.clone()));
    Labels::from_pairs(pairs)
}

/// Writes parsed samples of one scrape at `now_ms` (or their own timestamps)
/// and marks series of the previous scrape that are gone as stale.
pub fn ingest(
    storage: &Storage,
    target: &Target,
    samples: &[ParsedSample],
    now_ms: i64,
    state: &mut TargetState,
) -> usize {
    state.scrape += 1;
    let scrape = state.scrape;
    let mut appender = storage.appender();
    let mut written = 0;
    for s in samples {
        // Looked up by reference; the key is only built for series not seen before.
        let key = SeriesKeyRef {
            name: &s.name,
            labels: &s.labels,
        };
        let cached = match state.series.get_mut(&key as &dyn AsKey) {
            Some(c) => c,
            None => {
                let mut pairs = Vec::with_capacity(s.labels.len() + 1);
                pairs.push((METRIC_NAME.to_string(), s.name.clone()));
                pairs.extend(s.labels.iter().cloned());
                let labels = target_labels(target, &pairs);
                state
                    .series
                    .entry(SeriesKey {
                        name: s.name.clone(),
                        labels: s.labels.clone(),
                    })
                    .or_insert(CachedSeries {
                        labels,
                        slot: None,
                        seen: 0,
                    })
            }
        };
        cached.seen = scrape;
        if let Ok(slot) = appender.append_ref(
            cached.slot,
            &cached.labels,
            s.timestamp_ms.unwrap_or(now_ms),
            s.value,
        ) {
            cached.slot = Some(slot);
            written += 1;
        }
    }
    state.series.retain(|_, c| {
        if c.seen == scrape {
            return true;
        }
        let _ = appender.append_ref(c.slot, &c.labels, now_ms, stale_nan());
        false
    });
    written
}

/// Borrowed form of [`SeriesKey`] for lookups without allocating.
struct SeriesKeyRef<'a> {
    name: &'a str,
    labels: &'a [(String, String)],
}

trait AsKey {
    fn parts(&self) -> (&str, &[(String, String)]);
}

impl AsKey for SeriesKey {
    fn parts(&self) -> (&str, &[(String, String)]) {
        (&self.name, &self.labels)
    }
}

impl AsKey for SeriesKeyRef<'_> {
    fn parts(&self) -> (&str, &[(String, String)]) {
        (self.name, self.labels)
    }
}

impl<'a> std::borrow::Borrow<dyn AsKey + 'a> for SeriesKey {
    fn borrow(&self) -> &(dyn AsKey + 'a) {
        self
    }
}

impl PartialEq for dyn AsKey + '_ {
    fn eq(&self, other: &Self) -> bool {
        self.parts() == other.parts()
    }
}

impl Eq for dyn AsKey + '_ {}

impl std::hash::Hash for dyn AsKey + '_ {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        // Must hash exactly as the derived Hash of SeriesKey does.
        let (name, labels) = self.parts();
        name.hash(state);
        labels.hash(state);
    }
}

/// The scrape loops, one per target; [`Scraper::apply`] swaps the target list
/// (reload): loops of unchanged targets keep running, removed targets get their
/// series marked stale, as in Prometheus.
pub struct Scraper {
    storage: Arc<Storage>,
    client: reqwest::Client,
    stop: watch::Receiver<bool>,
    running: std::sync::Mutex<Vec<RunningTarget>>,
}

struct RunningTarget {
    identity: u64,
    retire: watch::Sender<bool>,
}

/// Everything that makes a target's loop: a change to any of it restarts the loop.
fn identity(target: &Target) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &target.job,
        &target.instance,
        &target.url,
        target.interval,
        target.timeout,
    )
        .hash(&mut h);
    target.extra_labels.hash(&mut h);
    match &target.auth {
        Some(Auth::Basic { username, password }) => (1u8, username, password).hash(&mut h),
        Some(Auth::Bearer(token)) => (2u8, token).hash(&mut h),
        None => 0u8.hash(&mut h),
    }
    h.finish()
}

impl Scraper {
    /// A scraper with no targets; loops stop when `stop` turns true.
    pub fn new(
        storage: Arc<Storage>,
        client: reqwest::Client,
        stop: watch::Receiver<bool>,
    ) -> Scraper {
        Scraper {
            storage,
            client,
            stop,
            running: std::sync::Mutex::new(Vec::new()),
        }
    }

    /// Scrapes exactly `targets` from now on.
    pub fn apply(&self, targets: Vec<Target>) {
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let wanted: Vec<u64> = targets.iter().map(identity).collect();
        running.retain(|r| {
            let keep = wanted.contains(&r.identity);
            if !keep {
                let _ = r.retire.send(true);
            }
            keep
        });
        for (target, id) in targets.into_iter().zip(wanted) {
            if running.iter().any(|r| r.identity == id) {
                continue;
            }
            let (retire, retired) = watch::channel(false);
            self.spawn(target, retired);
            running.push(RunningTarget {
                identity: id,
                retire,
            });
        }
    }

    /// How many targets are scraped.
    pub fn len(&self) -> usize {
        self.running.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// True without targets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn spawn(&self, target: Target, mut retired: watch::Receiver<bool>) {
        let storage = self.storage.clone();
        let client = self.client.clone();
        let mut stop = self.stop.clone();
        tokio::spawn(async move {
            let mut state = TargetState::default();
            let mut ticker = tokio::time::interval(target.interval);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            let mut last_error: Option<String> = None;
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                    _ = retired.wait_for(|r| *r) => {
                        retire(&storage, &target, &mut state, crate::clock::now_ms());
                        return;
                    }
                }
                let report = scrape_once(
                    &client,
                    &target,
                    &storage,
                    &mut state,
                    crate::clock::now_ms(),
                )
                .await;
                // One log line per change of health, not one per failing scrape.
                if report.error != last_error {
                    match &report.error {
                        Some(e) => tracing::warn!(event = "scrape_failed", job = %target.job,
                            instance = %target.instance, error = %e, "target is down"),
                        None => tracing::info!(event = "scrape_recovered", job = %target.job,
                            instance = %target.instance, samples = report.samples, "target is up"),
                    }
                    last_error = report.error;
                }
            }
        });
    }
}

/// A target left the configuration: every series it produced, `up` included, ends now.
fn retire(storage: &Storage, target: &Target, state: &mut TargetState, now_ms: i64) {
    ingest(storage, target, &[], now_ms, state);
    let mut appender = storage.appender();
    for name in ["up", "scrape_duration_seconds", "scrape_samples_scraped"] {
        let labels = target_labels(target, &[(METRIC_NAME.to_string(), name.to_string())]);
        let _ = appender.append(&labels, now_ms, stale_nan());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_labels_win_and_clashes_are_exported() {
        let target = Target {
            job: "j".into(),
            instance: "h:1".into(),
            url: String::new(),
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            auth: None,
            extra_labels: vec![("zone".into(), "z1".into())],
        };
        let labels = target_labels(
            &target,
            &[
                ("__name__".into(), "m".into()),
                ("job".into(), "inner".into()),
                ("zone".into(), "z9".into()),
            ],
        );
        assert_eq!(
            labels.to_string(),
            r#"{__name__="m", exported_job="inner", exported_zone="z9", instance="h:1", job="j", zone="z1"}"#
        );
    }
}
