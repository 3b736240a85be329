//! Scrapes targets' `/metrics` into the [`Storage`] the way Prometheus does: targets from
//! `scrape_configs` (static and file_sd, relabelled), `honor_labels`, `metric_relabel_configs`,
//! the sample and label limits, `up`, `scrape_duration_seconds`, `scrape_samples_scraped`,
//! `scrape_samples_post_metric_relabeling`, and staleness markers for series that disappear from
//! a scrape or whose target goes down.

mod parse;
pub mod relabel;
mod targets;

pub use parse::{Format, ParseError, ParsedSample, parse};
pub use targets::{InProcess, OwnMetrics, ScrapePlan, Target, plan};

use crate::storage::{Labels, METRIC_NAME, SeriesRef, Storage, stale_nan};
use reqwest::header::{ACCEPT, CONTENT_TYPE};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// What Prometheus asks for: OpenMetrics first, the text format as fallback.
pub const ACCEPT_HEADER: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

/// The series every scrape writes about itself.
const REPORT_SERIES: [&str; 4] = [
    "up",
    "scrape_duration_seconds",
    "scrape_samples_scraped",
    "scrape_samples_post_metric_relabeling",
];

/// Per-target memory between scrapes, like Prometheus' scrape cache: each
/// exposition series' final labels (None: dropped by `metric_relabel_configs`) and
/// store slot, and the scrape that last saw it (series not seen in the latest scrape
/// get a staleness marker).
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
    labels: Option<Labels>,
    slot: Option<SeriesRef>,
    seen: u64,
}

/// The outcome of one scrape, after it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct ScrapeReport {
    /// Samples in the exposition.
    pub samples: usize,
    /// Samples stored: those `metric_relabel_configs` kept.
    pub stored: usize,
    /// How long fetching and parsing took.
    pub duration: Duration,
    /// Why the scrape failed, if it did.
    pub error: Option<String>,
}

/// Scrapes `target` once at `now_ms` and writes the result (or `up 0` and
/// staleness markers) into `storage`.
pub async fn scrape_once(
    target: &Target,
    storage: &Storage,
    state: &mut TargetState,
    now_ms: i64,
) -> ScrapeReport {
    let started = Instant::now();
    let fetched = match (&target.forced_error, &target.settings.in_process) {
        (Some(error), _) => Err(error.clone()),
        (None, Some(in_process)) => {
            match tokio::time::timeout(target.timeout, in_process()).await {
                Ok(fetched) => fetched,
                Err(_) => Err("context deadline exceeded".into()),
            }
        }
        (None, None) => fetch(target).await,
    };
    let parsed = fetched.and_then(|(body, format)| {
        parse(&body, format).map_err(|e| format!("malformed exposition: {e}"))
    });
    let duration = started.elapsed();
    let (samples, mut error) = match parsed {
        Ok(samples) => (samples, None),
        Err(e) => (Vec::new(), Some(e)),
    };
    let count = samples.len();
    let stored = match ingest(storage, target, &samples, now_ms, state) {
        Ok(stored) => stored,
        Err(e) => {
            // As in Prometheus, a scrape over a limit stores nothing: its series end.
            error = Some(e);
            let _ = ingest(storage, target, &[], now_ms, state);
            0
        }
    };
    let mut appender = storage.appender();
    for (name, value) in REPORT_SERIES.into_iter().zip([
        if error.is_none() { 1.0 } else { 0.0 },
        duration.as_secs_f64(),
        count as f64,
        stored as f64,
    ]) {
        let _ = appender.append(&report_labels(target, name), now_ms, value);
    }
    ScrapeReport {
        samples: count,
        stored,
        duration,
        error,
    }
}

async fn fetch(target: &Target) -> Result<(String, Format), String> {
    let request = target
        .settings
        .client
        .get(&target.url)
        .timeout(target.timeout)
        .header(ACCEPT, ACCEPT_HEADER)
        .header(
            "X-Prometheus-Scrape-Timeout-Seconds",
            target.timeout.as_secs_f64().to_string(),
        );
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

/// Prometheus' `mutateReportSampleLabels`: the target's labels on `up` and friends.
fn report_labels(target: &Target, name: &str) -> Labels {
    let mut builder = target.labels.builder();
    builder.set(METRIC_NAME, name);
    builder.build()
}

/// Prometheus' `mutateSampleLabels`: the exposition's labels plus the target's, then
/// `metric_relabel_configs`; None when relabelling drops the series. On a clash the target's
/// label wins and the exposition's is kept as `exported_<name>` (`exported_exported_<name>` if
/// that is taken too), unless `honor_labels` keeps the exposition's.
fn sample_labels(target: &Target, exposed: &[(String, String)]) -> Option<Labels> {
    let mut labels: relabel::LabelMap = exposed
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let honor = target.settings.honor_labels;
    let mut clashes = Vec::new();
    for label in target.labels.iter() {
        match labels.get(&label.name) {
            Some(_) if honor => continue,
            Some(value) => clashes.push((label.name.clone(), value.clone())),
            None => {}
        }
        labels.insert(label.name.clone(), label.value.clone());
    }
    // Shorter names first, as Prometheus resolves them.
    clashes.sort_by_key(|(name, _)| name.len());
    let mut renamed: Vec<(String, String)> = Vec::new();
    for (name, value) in clashes {
        let mut new_name = name;
        loop {
            new_name = format!("exported_{new_name}");
            let taken = exposed.iter().any(|(n, _)| *n == new_name)
                || !target.labels.get(&new_name).is_empty()
                || renamed.iter().any(|(n, _)| *n == new_name);
            if !taken {
                break;
            }
        }
        renamed.push((new_name, value));
    }
    labels.extend(renamed);
    if !relabel::process(&mut labels, &target.settings.metric_relabel) || labels.is_empty() {
        return None;
    }
    Some(Labels::from_pairs(labels))
}

/// Prometheus' `verifyLabelLimits` and its `__name__` check, for a series not seen before.
fn check_series(labels: &Labels, limits: &targets::Limits) -> Result<(), String> {
    let metric: String = labels.metric_name().chars().take(50).collect();
    if metric.is_empty() {
        return Err("__name__ label is missing".into());
    }
    if limits.labels > 0 && labels.len() > limits.labels {
        return Err(format!(
            "label_limit exceeded (metric: {metric}, number of labels: {}, limit: {})",
            labels.len(),
            limits.labels
        ));
    }
    for label in labels.iter() {
        let name: String = label.name.chars().take(50).collect();
        if limits.name_length > 0 && label.name.len() > limits.name_length {
            return Err(format!(
                "label_name_length_limit exceeded (metric: {metric}, label name: {name}, length: {}, limit: {})",
                label.name.len(),
                limits.name_length
            ));
        }
        if limits.value_length > 0 && label.value.len() > limits.value_length {
            let value: String = label.value.chars().take(50).collect();
            return Err(format!(
                "label_value_length_limit exceeded (metric: {metric}, label name: {name}, value: {value:?}, length: {}, limit: {})",
                label.value.len(),
                limits.value_length
            ));
        }
    }
    Ok(())
}

/// The cache entry of `sample`, made (labels computed and checked) on first sight.
fn entry<'a>(
    state: &'a mut TargetState,
    target: &Target,
    sample: &ParsedSample,
) -> Result<&'a mut CachedSeries, String> {
    // Looked up by reference; the key is only built for series not seen before.
    let key = SeriesKeyRef {
        name: &sample.name,
        labels: &sample.labels,
    };
    if !state.series.contains_key(&key as &dyn AsKey) {
        let mut exposed = Vec::with_capacity(sample.labels.len() + 1);
        exposed.push((METRIC_NAME.to_string(), sample.name.clone()));
        exposed.extend(sample.labels.iter().cloned());
        let labels = sample_labels(target, &exposed);
        if let Some(labels) = &labels {
            check_series(labels, &target.settings.limits)?;
        }
        state.series.insert(
            SeriesKey {
                name: sample.name.clone(),
                labels: sample.labels.clone(),
            },
            CachedSeries {
                labels,
                slot: None,
                seen: 0,
            },
        );
    }
    Ok(state
        .series
        .get_mut(&key as &dyn AsKey)
        .expect("inserted above"))
}

/// Writes parsed samples of one scrape at `now_ms` (or their own timestamps, with
/// `honor_timestamps`) and marks series of the previous scrape that are gone as stale.
/// Returns how many samples were stored; a limit exceeded stores none and is the error.
pub fn ingest(
    storage: &Storage,
    target: &Target,
    samples: &[ParsedSample],
    now_ms: i64,
    state: &mut TargetState,
) -> Result<usize, String> {
    let limits = target.settings.limits;
    // A limit fails the whole scrape, so with limits every series is checked before any is
    // written; without, the one pass below checks new series (the `__name__` check) itself.
    if limits.sample > 0 || limits.labels > 0 || limits.name_length > 0 || limits.value_length > 0 {
        let mut kept = 0;
        for s in samples {
            if entry(state, target, s)?.labels.is_some() {
                kept += 1;
            }
        }
        if limits.sample > 0 && kept > limits.sample {
            return Err("sample limit exceeded".into());
        }
    }
    state.scrape += 1;
    let scrape = state.scrape;
    let mut appender = storage.appender();
    let mut written = 0;
    let mut failure = None;
    for s in samples {
        let cached = match entry(state, target, s) {
            Ok(c) => c,
            Err(e) => {
                failure = Some(e);
                break;
            }
        };
        cached.seen = scrape;
        let Some(labels) = &cached.labels else {
            continue;
        };
        let t = match s.timestamp_ms {
            Some(t) if target.settings.honor_timestamps => t,
            _ => now_ms,
        };
        if let Ok(slot) = appender.append_ref(cached.slot, labels, t, s.value) {
            cached.slot = Some(slot);
            written += 1;
        }
    }
    state.series.retain(|_, c| {
        if c.seen == scrape && failure.is_none() {
            return true;
        }
        if let (Some(labels), Some(_)) = (&c.labels, c.slot) {
            let _ = appender.append_ref(c.slot, labels, now_ms, stale_nan());
        }
        false
    });
    match failure {
        Some(e) => Err(e),
        None => Ok(written),
    }
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

/// The scrape loops, one per target; [`Scraper::apply`] swaps the plan (reload): loops of
/// unchanged targets keep running, removed targets get their series marked stale, as in
/// Prometheus. While a plan reads file_sd files, a task re-reads them when they change.
pub struct Scraper {
    inner: Arc<Inner>,
}

struct Inner {
    storage: Arc<Storage>,
    stop: watch::Receiver<bool>,
    running: std::sync::Mutex<Vec<RunningTarget>>,
    /// Ends the discovery task of the plan in effect.
    discovery: std::sync::Mutex<Option<watch::Sender<bool>>>,
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
        &target.labels,
        &target.url,
        target.interval,
        target.timeout,
        &target.forced_error,
        target.settings.identity,
    )
        .hash(&mut h);
    h.finish()
}

/// How often file_sd files are checked for changes (Prometheus watches them with inotify).
const FILE_CHECK_INTERVAL: Duration = Duration::from_secs(1);

impl Scraper {
    /// A scraper with no targets; loops stop when `stop` turns true.
    pub fn new(storage: Arc<Storage>, stop: watch::Receiver<bool>) -> Scraper {
        Scraper {
            inner: Arc::new(Inner {
                storage,
                stop,
                running: std::sync::Mutex::new(Vec::new()),
                discovery: std::sync::Mutex::new(None),
            }),
        }
    }

    /// Scrapes exactly the targets of `plan` from now on, and those its file_sd files name
    /// as they change.
    pub fn apply(&self, mut plan: ScrapePlan) {
        self.inner.apply(plan.targets().to_vec());
        let mut discovery = self
            .inner
            .discovery
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if let Some(previous) = discovery.take() {
            let _ = previous.send(true);
        }
        if !plan.has_files() {
            return;
        }
        let (replaced_tx, mut replaced) = watch::channel(false);
        *discovery = Some(replaced_tx);
        let inner = self.inner.clone();
        let mut stop = self.inner.stop.clone();
        tokio::spawn(async move {
            let mut ticker = tokio::time::interval(FILE_CHECK_INTERVAL);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = ticker.tick() => {}
                    _ = stop.wait_for(|s| *s) => return,
                    _ = replaced.wait_for(|r| *r) => return,
                }
                // file_sd files are small; reading them inline costs less than a thread hop.
                if let Some(targets) = plan.refresh().map(<[Target]>::to_vec) {
                    tracing::info!(
                        event = "file_sd_changed",
                        scrape_targets = targets.len(),
                        "file_sd targets changed"
                    );
                    inner.apply(targets);
                }
            }
        });
    }

    /// How many targets are scraped.
    pub fn len(&self) -> usize {
        self.inner
            .running
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    /// True without targets.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Inner {
    fn apply(&self, targets: Vec<Target>) {
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

    fn spawn(&self, target: Target, mut retired: watch::Receiver<bool>) {
        let storage = self.storage.clone();
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
                let report =
                    scrape_once(&target, &storage, &mut state, crate::clock::now_ms()).await;
                // One log line per change of health, not one per failing scrape.
                if report.error != last_error {
                    match &report.error {
                        Some(e) => tracing::warn!(event = "scrape_failed", job = %target.job,
                            instance = %target.instance(), error = %e, "target is down"),
                        None => tracing::info!(event = "scrape_recovered", job = %target.job,
                            instance = %target.instance(), samples = report.samples,
                            "target is up"),
                    }
                    last_error = report.error;
                }
            }
        });
    }
}

/// A target left the configuration: every series it produced, `up` included, ends now.
fn retire(storage: &Storage, target: &Target, state: &mut TargetState, now_ms: i64) {
    let _ = ingest(storage, target, &[], now_ms, state);
    let mut appender = storage.appender();
    for name in REPORT_SERIES {
        let _ = appender.append(&report_labels(target, name), now_ms, stale_nan());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(job_yaml: &str) -> Target {
        let config = crate::config::Config::parse(
            &format!("scrape:\n  self: false\n  scrape_configs:\n{job_yaml}"),
            "t.yaml",
        )
        .unwrap();
        let own = OwnMetrics {
            address: "127.0.0.1:1".parse().unwrap(),
            tls: false,
            in_process: None,
        };
        let plan = plan(&config.scrape, &own).unwrap();
        plan.targets()[0].clone()
    }

    fn exposed(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn target_labels_win_and_clashes_are_exported() {
        let target = target(
            "  - job_name: j\n    static_configs: [{targets: ['h:1'], labels: {zone: z1}}]\n",
        );
        let labels = sample_labels(
            &target,
            &exposed(&[
                ("__name__", "m"),
                ("job", "inner"),
                ("zone", "z9"),
                ("exported_zone", "taken"),
            ]),
        );
        assert_eq!(
            labels.unwrap().to_string(),
            r#"{__name__="m", exported_exported_zone="z9", exported_job="inner", exported_zone="taken", instance="h:1", job="j", zone="z1"}"#
        );
    }

    #[test]
    fn honor_labels_keeps_the_exposition_and_metric_relabelling_runs_last() {
        let target = target(
            "  - job_name: j\n    honor_labels: true\n    static_configs: [{targets: ['h:1']}]
    metric_relabel_configs:
      - {source_labels: [__name__], regex: 'drop_.*', action: drop}
      - {source_labels: [job], target_label: origin}\n",
        );
        let labels = sample_labels(&target, &exposed(&[("__name__", "m"), ("job", "inner")]));
        assert_eq!(
            labels.unwrap().to_string(),
            r#"{__name__="m", instance="h:1", job="inner", origin="inner"}"#
        );
        assert_eq!(
            sample_labels(&target, &exposed(&[("__name__", "drop_me")])),
            None
        );
    }

    #[test]
    fn target_labels_are_populated_like_prometheus() {
        let probe = target(
            "  - job_name: j
    scrape_interval: 30s
    params: {module: [http_2xx, other]}
    static_configs: [{targets: ['web'], labels: {__tmp_env: prod}}]
    relabel_configs:
      - {source_labels: [__address__], target_label: __param_target}
      - {source_labels: [__tmp_env, __scrape_interval__], separator: '-', target_label: env}
      - {target_label: __address__, replacement: 'probe:9115'}
      - {target_label: __metrics_path__, replacement: /probe}\n",
        );
        // `web` gets no port: it was replaced before the default port is added.
        assert_eq!(
            probe.labels.to_string(),
            r#"{env="prod-30s", instance="probe:9115", job="j"}"#
        );
        assert_eq!(
            probe.url,
            "http://probe:9115/probe?module=http_2xx&module=other&target=web"
        );
        assert_eq!(probe.interval, Duration::from_secs(30));
        assert_eq!(probe.timeout, Duration::from_secs(10));
        let https = target(
            "  - job_name: j\n    scheme: https\n    static_configs: [{targets: ['web']}]\n",
        );
        // The URL drops the default port again; the label keeps it, as Prometheus' does.
        assert_eq!(https.url, "https://web/metrics");
        assert_eq!(https.instance(), "web:443");
    }
}
