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

/// The running groups.
pub struct RuleManager {
    groups: Vec<Arc<Mutex<Group>>>,
}

/// What every evaluation shares.
struct Shared {
    query: Arc<dyn QueryFn>,
    storage: Arc<Storage>,
    external_labels: BTreeMap<String, String>,
    external_url: String,
}

impl RuleManager {
    /// Starts one timer per group; they stop when `stop` turns true.
    #[allow(clippy::too_many_arguments)] // one call site; a parameter struct would only rename them
    pub fn start(
        groups: Vec<Group>,
        default_interval: Duration,
        query: Arc<dyn QueryFn>,
        storage: Arc<Storage>,
        external_labels: BTreeMap<String, String>,
        external_url: String,
        metrics: RuleMetrics,
        stop: watch::Receiver<bool>,
    ) -> RuleManager {
        let shared = Arc::new(Shared {
            query,
            storage,
            external_labels,
            external_url,
        });
        let groups: Vec<Arc<Mutex<Group>>> = groups
            .into_iter()
            .map(|g| Arc::new(Mutex::new(g)))
            .collect();
        for group in &groups {
            let (name, interval, recorder) = {
                let g = group.lock().unwrap_or_else(|e| e.into_inner());
                let interval = g
                    .interval_ms
                    .map(|ms| Duration::from_millis(ms as u64))
                    .unwrap_or(default_interval);
                // Prometheus names a group `file;name` in its metrics.
                let recorder = metrics.group(&format!("{};{}", g.file.display(), g.name));
                (g.name.clone(), interval, recorder)
            };
            let group = group.clone();
            let shared = shared.clone();
            let mut stop = stop.clone();
            tokio::spawn(async move {
                let mut ticker = tokio::time::interval(interval);
                ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
                loop {
                    tokio::select! {
                        _ = ticker.tick() => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
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
                        let now = crate::scrape::now_ms();
                        let outcome = g.eval(now, shared.query.as_ref(), &shared.storage, &ctx);
                        for rule in &g.rules {
                            recorder
                                .evaluation_duration
                                .observe(rule.last_duration.as_secs_f64());
                        }
                        recorder.last_evaluation.set(now as f64 / 1000.0);
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
            });
        }
        RuleManager { groups }
    }

    /// The groups, for the API and status pages.
    pub fn groups(&self) -> &[Arc<Mutex<Group>>] {
        &self.groups
    }
}
