//! The dispatcher: alerts in, routed into aggregation groups, each flushed on its own timer.

use super::api::{Seen, publish};
use super::nflog::{LogEntry, LogWriter, Notified, log_key, notified_from};
use super::route::Route;
use super::stages::flush;
use super::{Alert, Plan, RESEND_DELAY, Receiver, Silences, alertmanager};
use crate::metrics::NotifyMetrics;
use crate::storage::Labels;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

/// Hands alerts from the rule engine to the dispatcher without ever blocking.
#[derive(Clone)]
pub struct AlertSink {
    pub(super) sender: mpsc::Sender<Vec<Alert>>,
    pub(super) metrics: NotifyMetrics,
    /// The dispatcher's current alerts, for the Alertmanager API.
    pub(super) seen: watch::Receiver<Seen>,
}

impl AlertSink {
    /// Queues one evaluation's alerts; when the queue is full they are dropped and counted.
    pub fn submit(&self, alerts: Vec<Alert>) {
        let count = alerts.len() as u64;
        if self.sender.try_send(alerts).is_err() {
            self.metrics.dropped.inc_by(count);
        }
    }
}

pub(super) struct Group {
    pub(super) route: Route,
    pub(super) receiver: Arc<Receiver>,
    pub(super) labels: Labels,
    pub(super) alerts: HashMap<u64, Alert>,
    pub(super) next_flush: Instant,
    /// Per integration (its index in the receiver), the last notification it got: each
    /// integration is deduplicated on its own, so one that fails never re-sends the others.
    pub(super) notified: HashMap<usize, Notified>,
    pub(super) in_flight: bool,
}

pub(super) struct Delivered {
    pub(super) key: String,
    pub(super) firing: HashSet<u64>,
    pub(super) resolved: HashSet<u64>,
    /// Each integration notified, and whether it got the notification.
    pub(super) outcomes: Vec<(usize, bool)>,
}

/// Starts the dispatcher; `plans` delivers the current routing plan (replaced
/// on reload); `log_file` keeps the notification log across restarts; alerts that `silences`
/// mute are not notified.
pub fn start(
    plans: watch::Receiver<Arc<Plan>>,
    external_url: String,
    queue_capacity: usize,
    log_file: Option<std::path::PathBuf>,
    silences: Arc<Silences>,
    metrics: NotifyMetrics,
    stop: watch::Receiver<bool>,
) -> AlertSink {
    let (sender, receiver) = mpsc::channel(queue_capacity.max(1));
    let (view, seen) = watch::channel(Seen::default());
    tokio::spawn(dispatch(
        plans,
        receiver,
        Dispatch {
            external_url,
            queue_capacity,
            log_file,
            silences,
            view,
            metrics: metrics.clone(),
        },
        stop,
    ));
    AlertSink {
        sender,
        metrics,
        seen,
    }
}

/// The dispatcher's fixed settings.
pub(super) struct Dispatch {
    pub(super) external_url: String,
    /// Also the capacity of each Alertmanager's queue, as Prometheus' one setting.
    pub(super) queue_capacity: usize,
    pub(super) log_file: Option<std::path::PathBuf>,
    pub(super) silences: Arc<Silences>,
    pub(super) view: watch::Sender<Seen>,
    pub(super) metrics: NotifyMetrics,
}

pub(super) async fn dispatch(
    mut plans: watch::Receiver<Arc<Plan>>,
    mut incoming: mpsc::Receiver<Vec<Alert>>,
    settings: Dispatch,
    mut stop: watch::Receiver<bool>,
) {
    let Dispatch {
        external_url,
        queue_capacity,
        log_file,
        silences,
        view,
        metrics,
    } = settings;
    let mut groups: HashMap<String, Group> = HashMap::new();
    // The notification log: what each group was last told, kept on disk so a
    // restart neither repeats a notification nor forgets a resolved one owed.
    let mut log: HashMap<String, LogEntry> = log_file
        .as_deref()
        .and_then(|f| crate::state::load(f, "notification log"))
        .unwrap_or_default();
    // Every alert the rule engine reported lately, for inhibition; one not
    // reported for 15 minutes is gone (the rule engine reports each evaluation).
    let mut current: HashMap<u64, (Alert, Instant)> = HashMap::new();
    // What each alert last went to the Alertmanagers as, and when (resolved?, at).
    let mut forwarded: HashMap<u64, (bool, Instant)> = HashMap::new();
    let log_writer = log_file.clone().map(LogWriter::start);
    // One send loop per Alertmanager of the plan in effect.
    let mut queues: Vec<Arc<alertmanager::Queue>> = Vec::new();
    let mut queues_of: Option<Arc<Plan>> = None;
    let (done_tx, mut done) = mpsc::unbounded_channel::<Delivered>();
    loop {
        // Each group wakes the dispatcher at its own flush time, as each of Alertmanager's
        // aggregation groups has its own timer; otherwise once a second, to forget old alerts.
        let housekeeping = Instant::now() + Duration::from_secs(1);
        let wake = groups
            .values()
            .filter(|g| !g.in_flight)
            .map(|g| g.next_flush)
            .fold(housekeeping, Instant::min);
        tokio::select! {
            batch = incoming.recv() => {
                let Some(batch) = batch else { return };
                let plan = plans.borrow_and_update().clone();
                // A new plan (start-up or reload) gets new Alertmanager queues.
                if !queues_of.as_ref().is_some_and(|p| Arc::ptr_eq(p, &plan)) {
                    for queue in queues.drain(..) {
                        queue.close();
                    }
                    queues = plan
                        .alertmanagers
                        .iter()
                        .map(|am| {
                            alertmanager::Queue::start(
                                am.clone(),
                                queue_capacity,
                                external_url.clone(),
                                metrics.clone(),
                            )
                        })
                        .collect();
                    queues_of = Some(plan.clone());
                }
                forward(&queues, &batch, &mut forwarded);
                for alert in &batch {
                    current.insert(alert.fingerprint(), (alert.clone(), Instant::now()));
                }
                publish(&view, &current);
                let Some(root) = &plan.root else { continue };
                for alert in batch {
                    let mut routes = Vec::new();
                    root.matching(&alert.labels, &mut routes);
                    for route in routes {
                        let labels = route.group_labels(&alert.labels);
                        let key = format!("{}:{}", route.key, labels.to_string().replace(", ", ","));
                        let Some(receiver) = plan.receivers.get(&route.receiver) else { continue };
                        let group = groups.entry(key).or_insert_with_key(|key| Group {
                            route: route.clone(),
                            receiver: receiver.clone(),
                            labels,
                            alerts: HashMap::new(),
                            next_flush: Instant::now() + route.group_wait,
                            // Per integration; a log written before per-integration entries
                            // holds one entry per group, delivered to all of its integrations.
                            notified: receiver
                                .integrations
                                .iter()
                                .enumerate()
                                .filter_map(|(i, integration)| {
                                    let own = log_key(key, &receiver.name, integration.integration(), i);
                                    log.get(&own).or_else(|| log.get(key)).map(|e| (i, notified_from(e)))
                                })
                                .collect(),
                            in_flight: false,
                        });
                        group.alerts.insert(alert.fingerprint(), alert.clone());
                    }
                }
            }
            Some(result) = done.recv() => {
                if let Some(group) = groups.get_mut(&result.key) {
                    group.in_flight = false;
                    let now_ms = crate::clock::now_ms();
                    for &(i, ok) in &result.outcomes {
                        let Some(integration) = group.receiver.integrations.get(i).filter(|_| ok) else {
                            continue;
                        };
                        let key = log_key(&result.key, &group.receiver.name, integration.integration(), i);
                        log.insert(key, LogEntry {
                            firing: result.firing.iter().copied().collect(),
                            resolved: result.resolved.iter().copied().collect(),
                            at: now_ms,
                        });
                        group.notified.insert(i, (result.firing.clone(), result.resolved.clone(), Instant::now()));
                    }
                    if result.outcomes.iter().any(|(_, ok)| *ok) {
                        // Entries of groups gone for a day (or for their longest repeat
                        // interval, if longer) are of no use any more.
                        let keep = plans.borrow().longest_repeat().max(Duration::from_secs(24 * 3600));
                        log.retain(|_, e| e.at > now_ms - keep.as_millis() as i64);
                        if let Some(writer) = &log_writer {
                            writer.save(&log);
                        }
                    }
                    // Resolved alerts are done with once every integration got them.
                    if result.outcomes.iter().all(|(_, ok)| *ok) {
                        group.alerts.retain(|fp, a| !(a.resolved() && result.resolved.contains(fp)));
                    }
                }
                groups.retain(|_, g| g.in_flight || !g.alerts.is_empty());
            }
            _ = tokio::time::sleep_until(wake) => {
                let now = Instant::now();
                let before = current.len();
                current.retain(|_, (_, seen)| now.duration_since(*seen) < Duration::from_secs(15 * 60));
                if current.len() != before {
                    publish(&view, &current);
                }
                forwarded.retain(|fp, _| current.contains_key(fp));
                let plan = plans.borrow().clone();
                for (key, group) in groups.iter_mut() {
                    if group.in_flight || group.next_flush > now {
                        continue;
                    }
                    group.next_flush = now + group.route.group_interval;
                    // In a mute interval (or outside every active one) the group waits: nothing
                    // is sent or logged, so the next flush outside it notifies.
                    if plan.time_muted(&group.route, chrono::Utc::now()) {
                        continue;
                    }
                    // Silences mute resolved alerts too, as Alertmanager's silencer does.
                    let now_ms = crate::clock::now_ms();
                    let muted =
                        |a: &Alert| plan.muted(a, &current) || silences.mutes(&a.labels, now_ms);
                    flush(key, group, &muted, &external_url, &metrics, &done_tx);
                }
                groups.retain(|_, g| g.in_flight || !g.alerts.is_empty());
            }
            _ = stop.wait_for(|s| *s) => {
                for queue in &queues {
                    queue.close();
                }
                return;
            }
        }
    }
}

/// Queues for every Alertmanager what Prometheus would send now: new and
/// just-resolved alerts, and ones not re-sent for `RESEND_DELAY`.
pub(super) fn forward(
    queues: &[Arc<alertmanager::Queue>],
    batch: &[Alert],
    forwarded: &mut HashMap<u64, (bool, Instant)>,
) {
    let now = Instant::now();
    let due: Vec<Alert> = batch
        .iter()
        .filter(|a| needs_sending(a, forwarded.get(&a.fingerprint()).copied(), now))
        .cloned()
        .collect();
    if due.is_empty() {
        return;
    }
    for a in &due {
        forwarded.insert(a.fingerprint(), (a.resolved(), now));
    }
    for queue in queues {
        queue.push(&due);
    }
}

/// Prometheus' `needsSending`: new, just resolved, or not sent for a resend delay. Resolved
/// alerts are re-sent too while the rules retain them (15 minutes), so an Alertmanager that
/// missed the first notice still resolves the alert.
pub(super) fn needs_sending(alert: &Alert, last: Option<(bool, Instant)>, now: Instant) -> bool {
    match last {
        None => true,
        Some((was_resolved, at)) => {
            (alert.resolved() && !was_resolved) || now.duration_since(at) >= RESEND_DELAY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert::firing_for_test(pairs)
    }

    #[test]
    pub(super) fn forwarding_resends_firing_and_retained_resolved_alerts_each_resend_delay() {
        let now = Instant::now();
        let firing = alert(&[("alertname", "A")]);
        let mut resolved = firing.clone();
        resolved.ends_at = Some(1);
        let just = now - Duration::from_secs(1);
        let long_ago = now - RESEND_DELAY;
        assert!(needs_sending(&firing, None, now));
        assert!(!needs_sending(&firing, Some((false, just)), now));
        assert!(needs_sending(&firing, Some((false, long_ago)), now));
        assert!(
            needs_sending(&resolved, Some((false, just)), now),
            "just resolved"
        );
        assert!(!needs_sending(&resolved, Some((true, just)), now));
        assert!(
            needs_sending(&resolved, Some((true, long_ago)), now),
            "resolved and still retained: sent again"
        );
    }
}
