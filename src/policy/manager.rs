//! Runs scale policies inside `serve`: each on its own timer, deciding on a blocking thread
//! (queries block), then acting through its actuator with retries. Replaceable as a whole on
//! reload; a policy that keeps its name keeps its state (recommendations, scale events, history,
//! counters), as Prometheus carries alert state over.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::watch;

use super::{Actuator, Decision, History, PolicyState, ScalePolicy};
use crate::metrics::{ScaleSnapshot, ScaleSource};
use crate::rules::QueryFn;
use crate::sync::lock;

/// What every scale decision and cost evaluation shares; replaced as a whole on reload.
pub struct PolicyContext {
    /// Where queries run.
    pub query: Arc<dyn QueryFn>,
    /// Where predictive policies keep their history.
    pub state_dir: Option<PathBuf>,
    /// Wait this long before the first decision of policies started now (the first scrapes).
    pub first_decision_delay: Duration,
}

struct Entry {
    policy: ScalePolicy,
    actuator: Actuator,
    state: Mutex<Tracked>,
}

/// A policy's state and its counters.
#[derive(Default)]
struct Tracked {
    state: PolicyState,
    /// Decisions by direction: up, down, none.
    decisions: [u64; 3],
    actuator_failures: u64,
}

/// The running policies.
pub struct ScaleManager {
    running: Mutex<Vec<(Arc<Entry>, tokio::task::JoinHandle<()>)>>,
    stop: watch::Receiver<bool>,
}

/// A point-in-time copy of a policy, for the API and the status page.
#[derive(Debug, Clone)]
pub struct PolicyStatus {
    /// Name.
    pub name: String,
    /// Its file.
    pub file: String,
    /// `hpa`, `step` or `predictive`.
    pub algorithm: &'static str,
    /// `model`, `webhook`, `command` or `none`.
    pub actuator: &'static str,
    /// Seconds between decisions.
    pub interval_s: f64,
    /// Bounds.
    pub min_replicas: u32,
    /// Bounds.
    pub max_replicas: u32,
    /// The count last carried out (recommending only: last decided).
    pub applied: Option<u32>,
    /// The last decision.
    pub last: Option<Decision>,
    /// Decisions up, down, none.
    pub decisions: [u64; 3],
    /// Failed actuator attempts.
    pub actuator_failures: u64,
    /// What one replica costs per hour, when the policy says.
    pub price_per_replica_hour: Option<f64>,
}

impl PolicyStatus {
    /// The count in effect: carried out, else the one the last decision started from.
    pub fn current_replicas(&self) -> Option<u32> {
        self.applied
            .or(self.last.as_ref().map(|d| d.current_replicas))
    }

    /// The replicas in effect × their price.
    pub fn hourly_cost(&self) -> Option<f64> {
        Some(f64::from(self.current_replicas()?) * self.price_per_replica_hour?)
    }
}

impl ScaleManager {
    /// A manager with no policies; timers stop when `stop` turns true.
    pub fn new(stop: watch::Receiver<bool>) -> ScaleManager {
        ScaleManager {
            running: Mutex::new(Vec::new()),
            stop,
        }
    }

    /// Replaces the running policies.
    pub fn apply(&self, policies: Vec<(ScalePolicy, Actuator)>, context: Arc<PolicyContext>) {
        let mut running = lock(&self.running);
        let mut old: Vec<Arc<Entry>> = running
            .drain(..)
            .map(|(entry, task)| {
                task.abort();
                entry
            })
            .collect();
        for (policy, actuator) in policies {
            let mut tracked = Tracked::default();
            if let Some(i) = old.iter().position(|e| e.policy.name == policy.name) {
                let previous = old.swap_remove(i);
                tracked = std::mem::take(&mut *lock(&previous.state));
                // A history of another resolution or span cannot be read on.
                if tracked
                    .state
                    .history
                    .as_ref()
                    .is_some_and(|h| !policy.history_fits(h))
                {
                    tracked.state.history = None;
                }
            } else if let Some(dir) = &context.state_dir {
                policy.restore_history(&mut tracked.state, dir);
            }
            let entry = Arc::new(Entry {
                policy,
                actuator,
                state: Mutex::new(tracked),
            });
            let task = tokio::spawn(run(entry.clone(), context.clone(), self.stop.clone()));
            running.push((entry, task));
        }
    }

    /// Copies every policy's state.
    pub fn snapshot(&self) -> Vec<PolicyStatus> {
        lock(&self.running)
            .iter()
            .map(|(entry, _)| {
                let tracked = lock(&entry.state);
                let p = &entry.policy;
                PolicyStatus {
                    name: p.name.clone(),
                    file: p.file.display().to_string(),
                    algorithm: p.algorithm_name(),
                    actuator: entry.actuator.kind(),
                    interval_s: p.interval_ms as f64 / 1000.0,
                    min_replicas: p.min,
                    max_replicas: p.max,
                    applied: tracked.state.applied,
                    last: tracked.state.last.clone(),
                    decisions: tracked.decisions,
                    actuator_failures: tracked.actuator_failures,
                    price_per_replica_hour: p.price_per_replica_hour,
                }
            })
            .collect()
    }
}

impl ScaleSource for ScaleManager {
    fn snapshot(&self) -> Vec<ScaleSnapshot> {
        ScaleManager::snapshot(self)
            .into_iter()
            .map(|s| ScaleSnapshot {
                desired: s.last.as_ref().map(|d| d.desired_replicas),
                current: s.current_replicas(),
                metrics: s
                    .last
                    .as_ref()
                    .map(|d| d.metrics.iter().map(|m| (m.value, m.target)).collect())
                    .unwrap_or_default(),
                forecast: s.last.as_ref().and_then(|d| d.forecast),
                hourly_cost: s.hourly_cost(),
                last_decision_s: s.last.as_ref().map(|d| d.time_ms as f64 / 1000.0),
                policy: s.name,
                min: s.min_replicas,
                max: s.max_replicas,
                decisions: s.decisions,
                actuator_failures: s.actuator_failures,
            })
            .collect()
    }
}

async fn run(entry: Arc<Entry>, context: Arc<PolicyContext>, stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(entry.policy.interval_ms as u64);
    let mut timer = crate::clock::Timer::new(context.first_decision_delay, interval, stop);
    while timer.tick().await {
        let (e, c) = (entry.clone(), context.clone());
        match tokio::task::spawn_blocking(move || decide(&e, &c)).await {
            Ok(Some(decision)) => act(&entry, &decision, interval).await,
            Ok(None) => {}
            Err(e) => tracing::error!(event = "error_occurred", error_type = "scale",
                policy = %entry.policy.name, message = %e, "scale decision task failed"),
        }
    }
}

/// One decision, logged and counted; `None` when the current count could not be read. The
/// queries run on a copy of the state, so the API and `/metrics` never wait for them.
fn decide(entry: &Entry, context: &PolicyContext) -> Option<Decision> {
    let policy = &entry.policy;
    let now = crate::clock::now_ms();
    let actual = entry.actuator.replicas();
    if actual.is_none() && entry.actuator.knows_count() {
        tracing::debug!(policy = %policy.name, "the model is not serving yet; no decision");
        return None;
    }
    let mut state = lock(&entry.state).state.clone();
    let replicas = match policy.replicas(&state, context.query.as_ref(), now, actual) {
        Ok(r) => r,
        Err(error) => {
            tracing::warn!(event = "scale_decision_failed", policy = %policy.name, error = %error,
                "cannot read the current replica count; no decision");
            return None;
        }
    };
    let history_end = state.history.as_ref().map(History::end_ms);
    let decision = policy.decide(&mut state, now, context.query.as_ref(), replicas);
    let step_closed = state.history.as_ref().map(History::end_ms) != history_end;
    {
        let mut tracked = lock(&entry.state);
        tracked.decisions[match decision.direction() {
            "up" => 0,
            "down" => 1,
            _ => 2,
        }] += 1;
        tracked.state = state.clone();
    }
    // state::save logs a failing file once, and counts every failure.
    if let Some(dir) = &context.state_dir
        && step_closed
    {
        let _ = policy.save_history(&state, dir);
    }
    let values: Vec<Option<f64>> = decision.metrics.iter().map(|m| m.value).collect();
    let values = serde_json::to_string(&values).unwrap_or_default();
    if decision.direction() == "none" {
        tracing::debug!(event = "scale_decision", policy = %policy.name,
            from = decision.current_replicas, to = decision.desired_replicas,
            reason = %decision.reason, metric_values = %values, forecast = decision.forecast,
            "no change");
    } else {
        tracing::info!(event = "scale_decision", policy = %policy.name,
            from = decision.current_replicas, to = decision.desired_replicas,
            reason = %decision.reason, metric_values = %values, forecast = decision.forecast,
            actuator = entry.actuator.kind(), "scaling");
    }
    Some(decision)
}

/// Carries a decision out, retrying with backoff; a decision that still fails is tried again by
/// the next one (the count it starts from has not changed).
async fn act(entry: &Entry, decision: &Decision, interval: Duration) {
    let policy = &entry.policy;
    let (from, to) = (decision.current_replicas, decision.desired_replicas);
    let attempts = policy.actuator.attempts;
    if from != to {
        for attempt in 1..=attempts {
            match entry
                .actuator
                .apply(&policy.name, from, to, &decision.reason, decision.time_ms)
                .await
            {
                Ok(()) => break,
                Err(error) => {
                    lock(&entry.state).actuator_failures += 1;
                    tracing::warn!(event = "scale_actuator_failed", policy = %policy.name,
                        actuator = entry.actuator.kind(), from, to, attempt, attempts,
                        error = %error, "the actuator could not carry out the decision");
                    if attempt == attempts {
                        return;
                    }
                    let backoff = Duration::from_millis(250 << (attempt - 1).min(6));
                    tokio::time::sleep(backoff.min(interval / 4)).await;
                }
            }
        }
    }
    policy.carried_out(&mut lock(&entry.state).state, decision.time_ms, from, to);
}
