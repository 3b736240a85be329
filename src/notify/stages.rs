//! The pipeline one flush of a group runs, per integration as Alertmanager's
//! `createReceiverStage`: mute, dedup, retry, then the log (written by the dispatcher).

use super::dispatch::{Delivered, Group};
use super::nflog::Notified;
use super::{Alert, Message, Notifier, SendError};
use crate::metrics::NotifyMetrics;
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// One flush of a group: Alertmanager's pipeline with dedup, retry and log per integration,
/// the integrations notified in parallel.
pub(super) fn flush(
    key: &str,
    group: &mut Group,
    muted: &dyn Fn(&Alert) -> bool,
    external_url: &str,
    metrics: &NotifyMetrics,
    done: &mpsc::UnboundedSender<Delivered>,
) {
    // Muted alerts are left out, as Alertmanager's mute stage does; when none is left the
    // pipeline stops there, so neither a notification nor a log entry is made.
    let mut alerts: Vec<Alert> = group
        .alerts
        .values()
        .filter(|a| !muted(a))
        .cloned()
        .collect();
    let of = |resolved: bool| -> HashSet<u64> {
        alerts
            .iter()
            .filter(|a| a.resolved() == resolved)
            .map(Alert::fingerprint)
            .collect()
    };
    let (firing, resolved) = (of(false), of(true));
    let due: Vec<(usize, Arc<dyn Notifier>)> = group
        .receiver
        .integrations
        .iter()
        .enumerate()
        .filter(|(i, integration)| {
            !alerts.is_empty()
                && needs_update(
                    group.notified.get(i),
                    &firing,
                    &resolved,
                    integration.send_resolved(),
                    group.route.repeat_interval,
                )
        })
        .map(|(i, integration)| (i, integration.clone()))
        .collect();
    if due.is_empty() {
        // Nothing new: drop resolved alerts nobody was told were firing.
        group.alerts.retain(|_, a| !a.resolved());
        return;
    }
    alerts.sort_by(|a, b| {
        a.resolved()
            .cmp(&b.resolved())
            .then_with(|| a.labels.cmp(&b.labels))
    });
    let message = Message {
        receiver: group.receiver.name.clone(),
        group_key: key.to_string(),
        group_labels: group.labels.clone(),
        alerts,
        external_url: external_url.to_string(),
    };
    group.in_flight = true;
    let deadline = group.route.group_interval;
    let metrics = metrics.clone();
    let done = done.clone();
    let key = key.to_string();
    tokio::spawn(async move {
        let mut sends = tokio::task::JoinSet::new();
        for (i, integration) in due {
            let mut message = message.clone();
            let metrics = metrics.clone();
            sends.spawn(async move {
                if !integration.send_resolved() {
                    message.alerts.retain(|a| !a.resolved());
                    // Only resolved alerts, which it does not send: done, as Alertmanager's
                    // retry stage counts it.
                    if message.alerts.is_empty() {
                        return (i, true);
                    }
                }
                (
                    i,
                    deliver(integration.as_ref(), &message, deadline, &metrics).await,
                )
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = sends.join_next().await {
            // A panicking integration counts as failed; the next flush tries it again.
            outcomes.push(joined.unwrap_or((usize::MAX, false)));
        }
        let _ = done.send(Delivered {
            key,
            firing,
            resolved,
            outcomes,
        });
    });
}

/// Alertmanager's `DedupStage.needsUpdate` for one integration: notify when something new
/// fires, when everything it was told about resolved, when something resolved and it sends
/// resolved notices, or when the repeat interval passed.
pub(super) fn needs_update(
    last: Option<&Notified>,
    firing: &HashSet<u64>,
    resolved: &HashSet<u64>,
    send_resolved: bool,
    repeat: Duration,
) -> bool {
    let Some((last_firing, last_resolved, at)) = last else {
        return !firing.is_empty();
    };
    if !firing.is_subset(last_firing) {
        return true;
    }
    // All resolved: notify (whatever send_resolved says) so the log forgets the firing ones,
    // unless nothing it was told about was firing.
    if firing.is_empty() {
        return !last_firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(last_resolved) {
        return true;
    }
    at.elapsed() >= repeat
}

/// The wait before the next attempt: the backoff with ±50 % jitter, so integrations that
/// failed together do not retry in lockstep, or longer where `Retry-After` asks for it.
pub(super) fn retry_in(e: &SendError, backoff: Duration) -> Duration {
    let jittered = backoff.mul_f64(0.5 + fastrand::f64());
    // A Retry-After of 0 or in the past must not turn retries into a tight loop.
    e.retry_after.map_or(jittered, |asked| asked.max(jittered))
}

/// Sends with exponential backoff on retryable errors until `deadline` (the
/// group interval) has passed.
pub(super) async fn deliver(
    integration: &dyn Notifier,
    message: &Message,
    deadline: Duration,
    metrics: &NotifyMetrics,
) -> bool {
    let give_up = Instant::now() + deadline;
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let outcome = integration.notify(message).await;
        metrics.observe_duration(integration.integration(), started.elapsed().as_secs_f64());
        let e = match outcome {
            Ok(()) => {
                metrics.outcome(&message.receiver, integration.integration(), "success");
                return true;
            }
            Err(e) => e,
        };
        let wait = retry_in(&e, backoff);
        if !e.retryable || Instant::now() + wait >= give_up {
            metrics.outcome(&message.receiver, integration.integration(), "failure");
            tracing::error!(event = "notification_failed", receiver = %message.receiver,
                integration = integration.integration(), error = %e.message,
                "notification given up");
            return false;
        }
        metrics.outcome(&message.receiver, integration.integration(), "retry");
        tracing::warn!(event = "notification_retry", receiver = %message.receiver,
            integration = integration.integration(), error = %e.message,
            retry_in_ms = wait.as_millis() as u64, "notification failed; retrying");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::integration::retry_after;

    #[test]
    pub(super) fn retry_after_is_honoured_and_backoff_is_jittered() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        // 1,700,000,030 s: 30 s after `now`, as an HTTP date.
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        let throttled = SendError {
            message: String::new(),
            retryable: true,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            retry_in(&throttled, Duration::from_millis(100)),
            Duration::from_secs(3)
        );
        let now_please = SendError {
            message: String::new(),
            retryable: true,
            retry_after: Some(Duration::ZERO),
        };
        assert!(retry_in(&now_please, Duration::from_millis(100)) >= Duration::from_millis(50));
        let failed = SendError {
            retry_after: None,
            ..throttled
        };
        let waits: Vec<Duration> = (0..50)
            .map(|_| retry_in(&failed, Duration::from_millis(100)))
            .collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_millis(50) && *w <= Duration::from_millis(150))
        );
        assert!(
            waits.windows(2).any(|w| w[0] != w[1]),
            "no jitter: {waits:?}"
        );
    }

    #[test]
    pub(super) fn dedup_per_integration_is_alertmanagers_needs_update() {
        let set = |fps: &[u64]| fps.iter().copied().collect::<HashSet<u64>>();
        let hour = Duration::from_secs(3600);
        let now = Instant::now();
        let told = (set(&[1, 2]), set(&[]), now);
        // Never told: only firing alerts are worth a first notification.
        assert!(needs_update(None, &set(&[1]), &set(&[]), true, hour));
        assert!(!needs_update(None, &set(&[]), &set(&[1]), true, hour));
        // Something new fires.
        assert!(needs_update(
            Some(&told),
            &set(&[1, 3]),
            &set(&[]),
            false,
            hour
        ));
        // One of two resolved: only integrations that send resolved notices are told.
        assert!(needs_update(
            Some(&told),
            &set(&[1]),
            &set(&[2]),
            true,
            hour
        ));
        assert!(!needs_update(
            Some(&told),
            &set(&[1]),
            &set(&[2]),
            false,
            hour
        ));
        // All resolved: every integration, so its log forgets the firing ones.
        assert!(needs_update(
            Some(&told),
            &set(&[]),
            &set(&[1, 2]),
            false,
            hour
        ));
        let quiet = (set(&[]), set(&[1]), now);
        assert!(!needs_update(
            Some(&quiet),
            &set(&[]),
            &set(&[1]),
            true,
            hour
        ));
        // Unchanged: only after the repeat interval.
        assert!(!needs_update(
            Some(&told),
            &set(&[1, 2]),
            &set(&[]),
            true,
            hour
        ));
        let old = (set(&[1, 2]), set(&[]), now - Duration::from_secs(2));
        assert!(needs_update(
            Some(&old),
            &set(&[1, 2]),
            &set(&[]),
            true,
            Duration::from_secs(1)
        ));
    }
}
