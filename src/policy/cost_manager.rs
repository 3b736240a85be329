//! Runs cost policies inside `serve`, each on its own timer, evaluating on a blocking thread
//! (queries block). Replaceable as a whole on reload; a policy that keeps its name keeps its
//! usage history, and the history is saved under `state.dir` whenever a step closes.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::PolicyContext;
use super::cost::{CostPolicy, CostReport, CostState};
use crate::metrics::{CostSnapshot, CostSource};
use crate::sync::lock;

struct Entry {
    policy: CostPolicy,
    state: Mutex<Tracked>,
}

#[derive(Default)]
struct Tracked {
    state: CostState,
    /// Why the last evaluation failed, if it did.
    error: Option<String>,
    failures: u64,
    failures_in_a_row: u32,
    /// The cause last logged, so each is logged once.
    logged: Option<String>,
    /// When the policy last evaluated successfully, ms; kept through failures, for staleness
    /// alerts.
    last_success_ms: Option<i64>,
}

/// The running cost policies.
pub struct CostManager {
    running: Mutex<Vec<(Arc<Entry>, tokio::task::JoinHandle<()>)>>,
    stop: watch::Receiver<bool>,
}

/// A point-in-time copy of a cost policy, for the API, the report and the status page.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CostStatus {
    /// Name.
    pub name: String,
    /// Its file.
    pub file: String,
    /// Seconds between evaluations.
    pub interval_s: f64,
    /// Prices per hour.
    pub prices: super::cost::Prices,
    /// The right-sizing settings.
    pub right_sizing: super::cost::RightSizing,
    /// The last successful evaluation.
    pub last: Option<CostReport>,
    /// Why the last evaluation failed, when it did.
    pub error: Option<String>,
    /// Failed evaluations.
    pub failures: u64,
    /// When it last evaluated successfully, ms (also while it fails).
    pub last_success_ms: Option<i64>,
}

impl CostManager {
    /// A manager with no policies; timers stop when `stop` turns true.
    pub fn new(stop: watch::Receiver<bool>) -> CostManager {
        CostManager {
            running: Mutex::new(Vec::new()),
            stop,
        }
    }

    /// Replaces the running policies; they share the scale policies' context.
    pub fn apply(&self, policies: Vec<CostPolicy>, context: Arc<PolicyContext>) {
        let mut running = lock(&self.running);
        let mut old: Vec<Arc<Entry>> = running
            .drain(..)
            .map(|(entry, task)| {
                task.abort();
                entry
            })
            .collect();
        for policy in policies {
            let mut tracked = Tracked::default();
            if let Some(i) = old.iter().position(|e| e.policy.name == policy.name) {
                tracked = std::mem::take(&mut *lock(&old.swap_remove(i).state));
                policy.adopt(&mut tracked.state);
            } else if let Some(dir) = &context.state_dir {
                policy.restore_history(&mut tracked.state, dir);
            }
            let entry = Arc::new(Entry {
                policy,
                state: Mutex::new(tracked),
            });
            let task = tokio::spawn(run(entry.clone(), context.clone(), self.stop.clone()));
            running.push((entry, task));
        }
    }

    /// Copies every policy's state.
    pub fn snapshot(&self) -> Vec<CostStatus> {
        lock(&self.running)
            .iter()
            .map(|(entry, _)| {
                let tracked = lock(&entry.state);
                let p = &entry.policy;
                CostStatus {
                    name: p.name.clone(),
                    file: p.file.display().to_string(),
                    interval_s: p.interval_ms as f64 / 1000.0,
                    prices: p.prices,
                    right_sizing: p.right_sizing,
                    last: tracked.state.last.clone(),
                    error: tracked.error.clone(),
                    failures: tracked.failures,
                    last_success_ms: tracked.last_success_ms,
                }
            })
            .collect()
    }
}

impl CostSource for CostManager {
    fn snapshot(&self) -> Vec<CostSnapshot> {
        CostManager::snapshot(self)
            .into_iter()
            .map(|s| {
                let last = s.last.as_ref();
                let recommendation = last.and_then(|r| r.right_sizing.as_ref());
                CostSnapshot {
                    allocated: last.map(|r| r.allocated.into()),
                    used: last.map(|r| r.used.into()),
                    hourly: last.map(|r| r.costs.hourly.into()),
                    idle_hourly: last.map(|r| r.costs.idle_hourly.into()),
                    idle_share: last.map(|r| r.costs.idle_share),
                    efficiency: last.map(|r| r.costs.efficiency.into()),
                    per_1k_inferences: last.and_then(|r| r.cost_per_1k_inferences),
                    recommended: recommendation.map(|r| r.recommended.into()),
                    savings_hourly: recommendation.map(|r| r.savings_hourly),
                    last_evaluation_s: s.last_success_ms.map(|t| t as f64 / 1000.0),
                    failures: s.failures,
                    policy: s.name,
                }
            })
            .collect()
    }
}

impl From<super::cost::Resources> for [f64; 3] {
    fn from(r: super::cost::Resources) -> [f64; 3] {
        [r.cpu_cores, r.memory_bytes, r.gpus]
    }
}

impl From<super::cost::PerResource> for [f64; 4] {
    fn from(r: super::cost::PerResource) -> [f64; 4] {
        [r.cpu, r.memory, r.gpu, r.total]
    }
}

async fn run(entry: Arc<Entry>, context: Arc<PolicyContext>, stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(entry.policy.interval_ms as u64);
    let mut timer = crate::clock::Timer::new(context.first_decision_delay, interval, stop);
    while timer.tick().await {
        let (e, c) = (entry.clone(), context.clone());
        if let Err(e) = tokio::task::spawn_blocking(move || evaluate(&e, &c)).await {
            tracing::error!(event = "error_occurred", error_type = "cost",
                policy = %entry.policy.name, message = %e, "cost evaluation task failed");
        }
    }
}

/// One evaluation on a copy of the state, so the API and `/metrics` never wait for queries or
/// for the history being saved.
fn evaluate(entry: &Entry, context: &PolicyContext) {
    let policy = &entry.policy;
    let now = crate::clock::now_ms();
    let mut state = lock(&entry.state).state.clone();
    let history_end = CostPolicy::history_end(&state);
    let outcome = policy.evaluate(&mut state, now, context.query.as_ref());
    match outcome {
        Ok(report) => {
            tracing::debug!(event = "cost_evaluated", policy = %policy.name,
                hourly = report.costs.hourly.total, idle_share = report.costs.idle_share,
                cost_per_1k_inferences = report.cost_per_1k_inferences, "cost evaluated");
            // state::save logs a failing file once, and counts every failure.
            if let Some(dir) = &context.state_dir
                && CostPolicy::history_end(&state) != history_end
            {
                let _ = policy.save_history(&state, dir);
            }
            let mut tracked = lock(&entry.state);
            tracked.state = state;
            tracked.error = None;
            tracked.last_success_ms = Some(now);
            tracked.failures_in_a_row = 0;
            tracked.logged = None;
        }
        Err(e) => {
            let mut tracked = lock(&entry.state);
            tracked.failures += 1;
            tracked.failures_in_a_row += 1;
            // Logged once per cause, and not for a single miss (at start-up `rate()` has no two
            // samples yet).
            if tracked.failures_in_a_row >= 2 && tracked.logged.as_ref() != Some(&e.0) {
                tracing::warn!(event = "cost_evaluation_failed", policy = %policy.name,
                    error = %e.0, "cost policy not evaluated; its figures are withheld");
                tracked.logged = Some(e.0.clone());
            }
            tracked.error = Some(e.0);
            tracked.state.last = None;
        }
    }
}
