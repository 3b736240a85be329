//! Runs loaded rule groups on their timers inside `serve`: each group on its own
//! interval, its rules in order, evaluation on a blocking thread so queries
//! never stall the HTTP server.

use super::{Group, QueryFn, TemplateContext};
use crate::metrics::RuleMetrics;
use crate::storage::Storage;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Loads every rule file the patterns (globs allowed) name; all errors are collected.
pub fn load_all(patterns: &[String]) -> Result<Vec<Group>, String> {
    super::load_files(&super::expand_globs(patterns)?).map_err(|errors| errors.join("\n"))
}

/// What every evaluation shares; replaced as a whole on reload.
pub struct RuleContext {
    /// Where queries run.
    pub query: Arc<dyn QueryFn>,
    /// Where results are written.
    pub storage: Arc<Storage>,
    /// `$externalLabels` of templates.
    pub external_labels: BTreeMap<String, String>,
    /// `$externalURL` of templates.
    pub external_url: String,
    /// Interval of groups without their own.
    pub default_interval: Duration,
    /// Where firing and resolved alerts go after each evaluation.
    pub alerts: Option<crate::notify::AlertSink>,
    /// Where alert state is kept across restarts, and how long a pending
    /// alert's `for` clock survives an outage (ms).
    pub state: Option<(std::path::PathBuf, i64)>,
    /// Wait this long before the first evaluation of groups started now: after
    /// a restart the built-in store is empty until the first scrapes land, and
    /// evaluating earlier would resolve every restored alert.
    pub first_evaluation_delay: Duration,
}

/// The running groups, each on its own timer; replaceable as a whole (reload).
pub struct RuleManager {
    running: Mutex<Running>,
    metrics: RuleMetrics,
    stop: watch::Receiver<bool>,
}

struct Running {
    groups: Vec<Arc<Mutex<Group>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    default_interval: Duration,
}

impl RuleManager {
    /// A manager with no groups; timers stop when `stop` turns true.
    pub fn new(metrics: RuleMetrics, stop: watch::Receiver<bool>) -> RuleManager {
        RuleManager {
            running: Mutex::new(Running {
                groups: Vec::new(),
                tasks: Vec::new(),
                default_interval: Duration::from_secs(60),
            }),
            metrics,
            stop,
        }
    }

    /// Replaces the running groups. Like Prometheus, a new group takes over the
    /// state of the old group with the same file and name: alerts and staleness
    /// tracking of rules with the same name and labels carry over.
    pub fn apply(&self, groups: Vec<Group>, context: RuleContext) {
        let context = Arc::new(context);
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        for task in running.tasks.drain(..) {
            task.abort();
        }
        let mut old: Vec<Arc<Mutex<Group>>> = std::mem::take(&mut running.groups);
        let mut groups: Vec<Group> = groups;
        for group in &mut groups {
            if let Some(i) = old.iter().position(|o| {
                let o = o.lock().unwrap_or_else(|e| e.into_inner());
                o.name == group.name && o.file == group.file
            }) {
                let previous = old.swap_remove(i);
                // An evaluation still running finishes before its state moves.
                let mut previous = previous.lock().unwrap_or_else(|e| e.into_inner());
                group.copy_state_from(&mut previous);
            } else if let Some((dir, tolerance)) = &context.state {
                // A group this process has not run yet: what an earlier run saved.
                group.restore_state(dir, crate::clock::now_ms(), *tolerance);
            }
        }
        running.default_interval = context.default_interval;
        running.groups = groups
            .into_iter()
            .map(|g| Arc::new(Mutex::new(g)))
            .collect();
        running.tasks = running
            .groups
            .iter()
            .map(|group| self.spawn_group(group.clone(), context.clone()))
            .collect();
    }

    fn spawn_group(
        &self,
        group: Arc<Mutex<Group>>,
        shared: Arc<RuleContext>,
    ) -> tokio::task::JoinHandle<()> {
        let (name, interval, recorder) = {
            let g = group.lock().unwrap_or_else(|e| e.into_inner());
            let interval = g
                .interval_ms
                .map(|ms| Duration::from_millis(ms as u64))
                .unwrap_or(shared.default_interval);
            // Prometheus names a group `file;name` in its metrics.
            let recorder = self
                .metrics
                .group(&format!("{};{}", g.file.display(), g.name));
            (g.name.clone(), interval, recorder)
        };
        let stop = self.stop.clone();
        tokio::spawn(async move {
            let mut timer = crate::clock::Timer::new(shared.first_evaluation_delay, interval, stop);
            while timer.tick().await {
                let group = group.clone();
                let shared = shared.clone();
                let recorder = recorder.clone();
                let started = std::time::Instant::now();
                let evaluated = tokio::task::spawn_blocking(move || {
                    let mut g = group.lock().unwrap_or_else(|e| e.into_inner());
                    let ctx = TemplateContext {
                        external_labels: &shared.external_labels,
                        external_url: &shared.external_url,
                    };
                    let now = crate::clock::now_ms();
                    let outcome = g.eval(now, shared.query.as_ref(), &shared.storage, &ctx);
                    if let Some(sink) = &shared.alerts {
                        let alerts = g.notifications(&shared.external_url, interval);
                        if !alerts.is_empty() {
                            sink.submit(alerts);
                        }
                    }
                    for rule in &g.rules {
                        recorder
                            .evaluation_duration
                            .observe(rule.last_duration.as_secs_f64());
                    }
                    recorder.evaluations.inc_by(g.rules.len() as u64);
                    recorder.last_evaluation.set(now as f64 / 1000.0);
                    // state::save logs a failing file once, and counts every failure.
                    if let Some((dir, _)) = &shared.state {
                        let _ = g.save_state(dir, now);
                    }
                    outcome
                })
                .await;
                let elapsed = started.elapsed();
                recorder.iterations.inc();
                recorder.last_duration.set(elapsed.as_secs_f64());
                // The ticker skips the ticks an overrun swallowed; count them.
                let missed = (elapsed.as_nanos() / interval.as_nanos().max(1)) as u64;
                if missed > 0 {
                    recorder.missed.inc_by(missed);
                }
                match evaluated {
                    Ok(outcome) => {
                        recorder.failures.inc_by(outcome.errors.len() as u64);
                        for (rule, error) in outcome.errors {
                            tracing::warn!(event = "rule_evaluation_failed", group = %name,
                                rule = %rule, error = %error, "rule evaluation failed");
                        }
                    }
                    Err(e) => tracing::error!(event = "error_occurred", error_type = "rules",
                        group = %name, message = %e, "rule evaluation task failed"),
                }
            }
        })
    }
}

/// A point-in-time copy of a group's state, for the API and the status page.
#[derive(Debug, Clone)]
pub struct GroupStatus {
    /// Group name.
    pub name: String,
    /// The file it came from.
    pub file: String,
    /// Evaluation interval in seconds.
    pub interval_s: f64,
    /// Per-rule limit (0 = none).
    pub limit: usize,
    /// The rules in order.
    pub rules: Vec<RuleStatus>,
}

/// One rule's state.
#[derive(Debug, Clone)]
pub struct RuleStatus {
    /// Record or alert name.
    pub name: String,
    /// The expression as written.
    pub query: String,
    /// `alerting` or `recording`.
    pub kind: &'static str,
    /// Labels the rule sets.
    pub labels: BTreeMap<String, String>,
    /// Annotation templates (alerting rules).
    pub annotations: BTreeMap<String, String>,
    /// `for`, in seconds.
    pub for_s: f64,
    /// `keep_firing_for`, in seconds.
    pub keep_firing_for_s: f64,
    /// Last evaluation (ms), if any.
    pub last_evaluation: Option<i64>,
    /// How long it took, seconds.
    pub evaluation_time_s: f64,
    /// The last error, if the last evaluation failed.
    pub last_error: Option<String>,
    /// Pending, firing and recently resolved alerts.
    pub alerts: Vec<super::Alert>,
}

impl RuleStatus {
    /// `ok`, `err`, or `unknown` before the first evaluation, as Prometheus reports health.
    pub fn health(&self) -> &'static str {
        match (&self.last_evaluation, &self.last_error) {
            (None, _) => "unknown",
            (_, Some(_)) => "err",
            _ => "ok",
        }
    }

    /// The most severe state among the rule's alerts (`inactive` without any).
    pub fn state(&self) -> super::AlertState {
        use super::AlertState::*;
        self.alerts
            .iter()
            .map(|a| a.state)
            .max_by_key(|s| match s {
                Inactive => 0,
                Pending => 1,
                Firing => 2,
            })
            .unwrap_or(Inactive)
    }
}

impl RuleManager {
    /// Copies every group's state.
    pub fn snapshot(&self) -> Vec<GroupStatus> {
        let running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        let default_interval_s = running.default_interval.as_secs_f64();
        running
            .groups
            .iter()
            .map(|g| {
                let g = g.lock().unwrap_or_else(|e| e.into_inner());
                GroupStatus {
                    name: g.name.clone(),
                    file: g.file.display().to_string(),
                    interval_s: g
                        .interval_ms
                        .map(|ms| ms as f64 / 1000.0)
                        .unwrap_or(default_interval_s),
                    limit: g.limit,
                    rules: g.rules.iter().map(rule_status).collect(),
                }
            })
            .collect()
    }
}

fn rule_status(rule: &super::Rule) -> RuleStatus {
    let (query, kind, labels, annotations, for_ms, keep_ms, alerts) = match &rule.kind {
        super::RuleKind::Recording(r) => (
            r.expr_text.clone(),
            "recording",
            r.labels.clone(),
            BTreeMap::new(),
            0,
            0,
            Vec::new(),
        ),
        super::RuleKind::Alerting(a) => (
            a.expr_text.clone(),
            "alerting",
            a.labels.clone(),
            a.annotations.clone(),
            a.for_ms,
            a.keep_firing_for_ms,
            a.active_alerts().into_iter().cloned().collect(),
        ),
    };
    RuleStatus {
        name: rule.name().to_string(),
        query,
        kind,
        labels,
        annotations,
        for_s: for_ms as f64 / 1000.0,
        keep_firing_for_s: keep_ms as f64 / 1000.0,
        last_evaluation: rule.last_evaluation,
        evaluation_time_s: rule.last_duration.as_secs_f64(),
        last_error: rule.last_error.clone(),
        alerts,
    }
}
