//! Forwarding to real Alertmanagers through their v2 API, with Prometheus'
//! behaviour: every firing alert is re-sent each `RESEND_DELAY` with an `endsAt`
//! a few resends ahead (so Alertmanager resolves it if torchwatch goes away),
//! and a resolved alert is re-sent while retained, with its resolution time. Each
//! Alertmanager has its own bounded queue and send loop, as Prometheus' notifier.

use super::integration::attempt_timeout;
use super::message::label_map;
use super::{Alert, Message, Notifier, SendFuture, post_json};
use crate::clock::rfc3339;
use crate::config::AlertmanagerConfig;
use crate::http_client::HttpClient;
use crate::metrics::NotifyMetrics;
use crate::storage::Labels;
use serde_json::{Value, json};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Prometheus' notifier sends at most this many alerts per request.
const MAX_BATCH: usize = 256;

/// Prometheus' default `rules.alert.resend-delay`.
pub const RESEND_DELAY: Duration = Duration::from_secs(60);

/// One Alertmanager.
pub struct Alertmanager {
    client: HttpClient,
    url: String,
    timeout: Duration,
}

impl Alertmanager {
    /// Checks the URL, credentials and certificates now, so a typo fails at start or reload.
    /// `shared` serves an Alertmanager without credentials or TLS settings of its own.
    pub fn new(
        config: &AlertmanagerConfig,
        index: usize,
        shared: &reqwest::Client,
    ) -> Result<Alertmanager, String> {
        let what = format!("notify.alertmanagers[{index}]");
        let base = config.url.trim_end_matches('/');
        let url = format!("{base}/api/v2/alerts");
        reqwest::Url::parse(&url)
            .map_err(|e| format!("{what}: {:?} is not a URL: {e}", config.url))?;
        let http = config.http_config();
        let own = config.basic_auth.is_some()
            || config.authorization.is_some()
            || config.tls_config.is_some();
        let client = HttpClient::build(own.then_some(&http), shared, &what)?;
        Ok(Alertmanager {
            client,
            url,
            timeout: attempt_timeout(config.timeout),
        })
    }
}

/// An alert's `endsAt` in the v2 API: the resolution time, or for a firing alert Prometheus'
/// `ValidUntil`: 4 × max(group interval, resend delay) ahead of `now`, so two missed
/// evaluations or sends do not let Alertmanager resolve it.
pub(super) fn valid_until(alert: &Alert, now_ms: i64) -> i64 {
    let delta = alert.group_interval_ms.max(RESEND_DELAY.as_millis() as i64);
    alert.ends_at.unwrap_or(now_ms + 4 * delta)
}

/// The v2 API's postable alert.
fn postable(alert: &Alert, now_ms: i64) -> Value {
    let ends_at = valid_until(alert, now_ms);
    json!({
        "labels": label_map(&alert.labels),
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": alert.generator_url,
    })
}

/// One Alertmanager's send loop: alerts wait in a bounded queue that drops the oldest on
/// overflow (the newest state of an alert matters, and it is re-sent anyway), and go out in
/// batches of at most 256, one request at a time, so a slow Alertmanager never piles up
/// requests.
pub struct Queue {
    pending: Mutex<VecDeque<Alert>>,
    wake: tokio::sync::Notify,
    capacity: usize,
    closed: std::sync::atomic::AtomicBool,
    metrics: NotifyMetrics,
}

impl Queue {
    /// Starts the send loop of `alertmanager`; it ends after [`Queue::close`].
    pub fn start(
        alertmanager: Arc<Alertmanager>,
        capacity: usize,
        external_url: String,
        metrics: NotifyMetrics,
    ) -> Arc<Queue> {
        let queue = Arc::new(Queue {
            pending: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            capacity: capacity.max(1),
            closed: Default::default(),
            metrics,
        });
        tokio::spawn(send_loop(queue.clone(), alertmanager, external_url));
        queue
    }

    /// Queues `alerts`, dropping (and counting) the oldest beyond the capacity.
    pub fn push(&self, alerts: &[Alert]) {
        let dropped = {
            let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            pending.extend(alerts.iter().cloned());
            let excess = pending.len().saturating_sub(self.capacity);
            pending.drain(..excess);
            excess
        };
        if dropped > 0 {
            self.metrics.alertmanager_dropped.inc_by(dropped as u64);
        }
        self.wake.notify_one();
    }

    /// Ends the send loop once the current batch is out (a reload replaced the Alertmanager).
    pub fn close(&self) {
        self.closed
            .store(true, std::sync::atomic::Ordering::Release);
        self.wake.notify_one();
    }

    fn batch(&self) -> Vec<Alert> {
        let mut pending = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        let n = pending.len().min(MAX_BATCH);
        pending.drain(..n).collect()
    }
}

async fn send_loop(queue: Arc<Queue>, alertmanager: Arc<Alertmanager>, external_url: String) {
    loop {
        if queue.closed.load(std::sync::atomic::Ordering::Acquire) {
            return;
        }
        let alerts = queue.batch();
        if alerts.is_empty() {
            queue.wake.notified().await;
            continue;
        }
        let message = Message {
            receiver: "alertmanager".into(),
            group_key: String::new(),
            group_labels: Labels::default(),
            alerts,
            external_url: external_url.clone(),
        };
        // One attempt, as Prometheus makes: the alerts are re-sent within a resend delay.
        super::stages::deliver(
            alertmanager.as_ref(),
            &message,
            Duration::ZERO,
            &queue.metrics,
        )
        .await;
    }
}

impl Notifier for Alertmanager {
    fn integration(&self) -> &'static str {
        "alertmanager"
    }

    fn send_resolved(&self) -> bool {
        true
    }

    fn notify<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            let now = crate::clock::now_ms();
            let body: Vec<Value> = message.alerts.iter().map(|a| postable(a, now)).collect();
            post_json(self.client.post(&self.url), self.timeout, &body).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firing_alert_stays_valid_for_four_of_the_longer_of_group_interval_and_resend_delay() {
        let mut alert = Alert::firing_for_test(&[("alertname", "A")]);
        let now = 1_700_000_000_000;
        assert_eq!(postable(&alert, now)["endsAt"], rfc3339(now + 4 * 60_000));
        // A 5-minute group: valid for 20 minutes, not 4, or it resolves between evaluations.
        alert.group_interval_ms = 300_000;
        assert_eq!(postable(&alert, now)["endsAt"], rfc3339(now + 20 * 60_000));
        alert.ends_at = Some(now - 1000);
        assert_eq!(postable(&alert, now)["endsAt"], rfc3339(now - 1000));
    }

    #[tokio::test]
    async fn the_queue_drops_the_oldest_on_overflow_and_sends_batches() {
        crate::install_tls_provider();
        let metrics = crate::metrics::Metrics::new(&Default::default()).notify();
        // An Alertmanager nobody listens on: sends fail at once, the queue still drains.
        let am = Arc::new(
            Alertmanager::new(
                &AlertmanagerConfig {
                    url: "http://127.0.0.1:9".into(),
                    timeout: None,
                    basic_auth: None,
                    authorization: None,
                    tls_config: None,
                },
                0,
                &reqwest::Client::new(),
            )
            .unwrap(),
        );
        let alert = |i: usize| Alert::firing_for_test(&[("alertname", &format!("A{i}"))]);
        let queue = Queue {
            pending: Mutex::new(VecDeque::new()),
            wake: tokio::sync::Notify::new(),
            capacity: 300,
            closed: Default::default(),
            metrics: metrics.clone(),
        };
        queue.push(&(0..400).map(alert).collect::<Vec<_>>());
        assert_eq!(metrics.alertmanager_dropped.get(), 100, "the 100 oldest");
        let first = queue.batch();
        assert_eq!(first.len(), MAX_BATCH);
        assert_eq!(first[0].labels.get("alertname"), "A100");
        assert_eq!(queue.batch().len(), 44);
        // The loop itself ends once closed and empty.
        let running = Queue::start(am, 10, "http://tw".into(), metrics);
        running.push(&[alert(1)]);
        running.close();
        tokio::time::timeout(Duration::from_secs(5), async {
            while Arc::strong_count(&running) > 1 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the send loop ended");
    }
}
