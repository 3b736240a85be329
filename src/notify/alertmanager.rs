//! Forwarding to real Alertmanagers through their v2 API, with Prometheus'
//! behaviour: every firing alert is re-sent each `RESEND_DELAY` with an `endsAt`
//! a few resends ahead (so Alertmanager resolves it if torchwatch goes away),
//! and a resolved alert is sent once with its resolution time.

use super::{Alert, Message, Notifier, SendFuture, attempt_timeout, label_map, post_json, rfc3339};
use crate::config::AlertmanagerConfig;
use serde_json::{Value, json};
use std::time::Duration;

/// Prometheus' default `rules.alert.resend-delay`.
pub const RESEND_DELAY: Duration = Duration::from_secs(60);

/// One Alertmanager.
pub struct Alertmanager {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
}

impl Alertmanager {
    /// Checks the URL now, so a typo fails at start or reload.
    pub fn new(
        config: &AlertmanagerConfig,
        client: reqwest::Client,
    ) -> Result<Alertmanager, String> {
        let base = config.url.trim_end_matches('/');
        let url = format!("{base}/api/v2/alerts");
        reqwest::Url::parse(&url)
            .map_err(|e| format!("notify.alertmanagers: {:?} is not a URL: {e}", config.url))?;
        Ok(Alertmanager {
            client,
            url,
            timeout: attempt_timeout(config.timeout),
        })
    }
}

/// The v2 API's alert: `endsAt` is the resolution time, or for a firing
/// alert 4 resend delays ahead of `now` (Prometheus' `ValidUntil`).
fn postable(alert: &Alert, now_ms: i64) -> Value {
    let ends_at = alert
        .ends_at
        .unwrap_or(now_ms + 4 * RESEND_DELAY.as_millis() as i64);
    json!({
        "labels": label_map(&alert.labels),
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(ends_at),
        "generatorURL": alert.generator_url,
    })
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
            let now = crate::scrape::now_ms();
            let body: Vec<Value> = message.alerts.iter().map(|a| postable(a, now)).collect();
            post_json(&self.client, &self.url, self.timeout, &body).await
        })
    }
}
