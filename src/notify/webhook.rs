//! The webhook receiver: Alertmanager's webhook payload (version 4), POSTed as JSON.

use super::integration::{BuildContext, attempt_timeout};
use super::message::label_map;
use super::{Message, Notifier, SendFuture, post_json, secret_url};
use crate::clock::rfc3339;
use crate::config::Secret;
use crate::config::WebhookConfig;
use crate::http_client::HttpClient;
use serde_json::{Value, json};
use std::time::Duration;

/// One webhook endpoint.
pub struct Webhook {
    client: HttpClient,
    url: Secret,
    timeout: Duration,
    max_alerts: usize,
    send_resolved: bool,
}

impl Webhook {
    /// Resolves the URL now, so a missing secret fails at start or reload.
    pub(super) fn new(
        config: &WebhookConfig,
        context: &BuildContext,
        receiver: &str,
    ) -> Result<Webhook, String> {
        let what = format!("receiver {receiver}: webhook");
        let url = secret_url(
            &config.url,
            &config.url_file,
            &config.url_env,
            &format!("{what} url"),
        )?;
        Ok(Webhook {
            client: context.http(config.http_config.as_ref(), &what)?,
            url,
            timeout: attempt_timeout(config.timeout),
            max_alerts: config.max_alerts,
            send_resolved: config.send_resolved,
        })
    }
}

impl Notifier for Webhook {
    fn integration(&self) -> &'static str {
        "webhook"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn notify<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            let body = payload(message, self.max_alerts);
            post_json(self.client.post(self.url.expose()), self.timeout, &body).await
        })
    }
}

/// Alertmanager's webhook payload, version 4; `max_alerts` 0 = all.
fn payload(message: &Message, max_alerts: usize) -> Value {
    let shown = if max_alerts == 0 {
        message.alerts.len()
    } else {
        max_alerts.min(message.alerts.len())
    };
    let alerts: Vec<Value> = message.alerts[..shown]
        .iter()
        .map(|a| {
            json!({
                "status": if a.resolved() { "resolved" } else { "firing" },
                "labels": label_map(&a.labels),
                "annotations": a.annotations,
                "startsAt": rfc3339(a.starts_at),
                "endsAt": a.ends_at.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
                "generatorURL": a.generator_url,
                "fingerprint": format!("{:016x}", a.fingerprint()),
            })
        })
        .collect();
    json!({
        "version": "4",
        "groupKey": message.group_key,
        "truncatedAlerts": message.alerts.len() - shown,
        "status": message.status(),
        "receiver": message.receiver,
        "groupLabels": label_map(&message.group_labels),
        "commonLabels": label_map(&message.common_labels()),
        "commonAnnotations": message.common_annotations(),
        "externalURL": message.external_url,
        "alerts": alerts,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::notify::Alert;
    use crate::storage::Labels;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert::firing_for_test(pairs)
    }

    #[test]
    fn webhook_payload_has_alertmanagers_fields() {
        let mut resolved = alert(&[("alertname", "A"), ("instance", "b"), ("job", "j")]);
        resolved.ends_at = Some(2000);
        let mut firing = alert(&[("alertname", "A"), ("instance", "a"), ("job", "j")]);
        firing.annotations.insert("summary".into(), "s".into());
        let message = Message {
            receiver: "hook".into(),
            group_key: "{}:{alertname=\"A\"}".into(),
            group_labels: Labels::from_pairs([("alertname", "A")]),
            alerts: vec![firing, resolved],
            external_url: "http://tw".into(),
        };
        let p = payload(&message, 1);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["truncatedAlerts"], 1);
        assert_eq!(p["commonLabels"], json!({"alertname": "A", "job": "j"}));
        assert_eq!(p["commonAnnotations"], json!({}));
        assert_eq!(p["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(p["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
    }
}
