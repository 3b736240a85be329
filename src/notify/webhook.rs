//! The webhook receiver: Alertmanager's webhook payload (version 4), POSTed as JSON.

use super::{Message, Notifier, SendError};
use crate::config::{self, WebhookConfig};
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
        let url = config::resolve_secret(
            &config.url,
            &config.url_file,
            &config.url_env,
            &format!("receiver {receiver}: webhook url"),
        )?
        .ok_or_else(|| {
            format!("receiver {receiver}: webhook_configs needs url, url_file or url_env")
        })?;
        reqwest::Url::parse(&url).map_err(|_| {
            // The URL itself is a secret: say what is wrong, not what it is.
            format!("receiver {receiver}: the webhook url is not a valid URL")
        })?;
        Ok(Webhook {
            client,
            url,
            timeout: config
                .timeout
                .map(|d| Duration::from_millis(d.millis() as u64))
                .unwrap_or(Duration::from_secs(10)),
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

    fn notify<'a>(
        &'a self,
        message: &'a Message,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SendError>> + Send + 'a>>
    {
        Box::pin(async move {
            let payload = message.webhook_payload(self.max_alerts);
            let response = self
                .client
                .post(&self.url)
                .timeout(self.timeout)
                .json(&payload)
                .send()
                .await
                .map_err(|e| SendError::from_reqwest(&e))?;
            SendError::check_status(response.status())
        })
    }
}
