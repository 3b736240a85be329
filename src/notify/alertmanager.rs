//! Forwarding to real Alertmanagers through their v2 API, with Prometheus'
//! behaviour: every firing alert is re-sent each `RESEND_DELAY` with an `endsAt`
//! a few resends ahead (so Alertmanager resolves it if torchwatch goes away),
//! and a resolved alert is sent once with its resolution time.

use super::{Alert, Message, Notifier, SendFuture, attempt_timeout, label_map, post_json};
use crate::clock::rfc3339;
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

/// The v2 API's alert: `endsAt` is the resolution time, or for a firing alert Prometheus'
/// `ValidUntil`: 4 × max(group interval, resend delay) ahead of `now`, so two missed
/// evaluations or sends do not let Alertmanager resolve it.
fn postable(alert: &Alert, now_ms: i64) -> Value {
    let delta = alert.group_interval_ms.max(RESEND_DELAY.as_millis() as i64);
    let ends_at = alert.ends_at.unwrap_or(now_ms + 4 * delta);
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
            let now = crate::clock::now_ms();
            let body: Vec<Value> = message.alerts.iter().map(|a| postable(a, now)).collect();
            post_json(&self.client, &self.url, self.timeout, &body).await
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_firing_alert_stays_valid_for_four_of_the_longer_of_group_interval_and_resend_delay() {
        let mut alert = Alert {
            labels: crate::storage::Labels::from_pairs([("alertname", "A")]),
            annotations: Default::default(),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
            value: 1.0,
            condition: Default::default(),
            group_interval_ms: 15_000,
        };
        let now = 1_700_000_000_000;
        assert_eq!(postable(&alert, now)["endsAt"], rfc3339(now + 4 * 60_000));
        // A 5-minute group: valid for 20 minutes, not 4, or it resolves between evaluations.
        alert.group_interval_ms = 300_000;
        assert_eq!(postable(&alert, now)["endsAt"], rfc3339(now + 20 * 60_000));
        alert.ends_at = Some(now - 1000);
        assert_eq!(postable(&alert, now)["endsAt"], rfc3339(now - 1000));
    }
}
