//! The webhook receiver: Alertmanager's webhook payload (version 4), POSTed as JSON.

use super::{Message, Notifier, SendFuture, attempt_timeout, post_json, secret_url};
use crate::config::WebhookConfig;
use std::time::Duration;

/// One webhook endpoint.
pub struct Webhook {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    max_alerts: usize,
    send_resolved: bool,
}

impl Webhook {
    /// Resolves the URL now, so a missing secret fails at start or reload.
    pub fn new(
        config: &WebhookConfig,
        client: reqwest::Client,
        receiver: &str,
    ) -> Result<Webhook, String> {
        let url = secret_url(
            &config.url,
            &config.url_file,
            &config.url_env,
            &format!("receiver {receiver}: webhook url"),
        )?;
        Ok(Webhook {
            client,
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
            let payload = message.webhook_payload(self.max_alerts);
            post_json(&self.client, &self.url, self.timeout, &payload).await
        })
    }
}
