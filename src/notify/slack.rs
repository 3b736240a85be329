//! The Slack receiver: an incoming-webhook message with a templated title,
//! text and colour, and fields for the metric, condition, threshold, current
//! value and time of the first alert.

use super::{Message, Notifier, SendFuture, attempt_timeout, post_json, secret_url};
use crate::clock::rfc3339;
use crate::config::SlackConfig;
use crate::template::{TemplateSet, expand_notification_or_error};
use serde_json::{Value, json};
use std::time::Duration;

/// One Slack incoming webhook.
pub struct Slack {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    config: SlackConfig,
}

impl Slack {
    /// Resolves the URL and checks the templates now (start or reload).
    pub fn new(
        config: &SlackConfig,
        client: reqwest::Client,
        receiver: &str,
    ) -> Result<Slack, String> {
        let url = secret_url(
            &config.api_url,
            &config.api_url_file,
            &config.api_url_env,
            &format!("receiver {receiver}: slack api_url"),
        )?;
        for (field, text) in [
            ("title", &config.title),
            ("text", &config.text),
            ("color", &config.color),
        ] {
            TemplateSet::with_defaults()
                .compile(text)
                .map_err(|e| format!("receiver {receiver}: slack {field}: {e}"))?;
        }
        Ok(Slack {
            client,
            url,
            timeout: attempt_timeout(config.timeout),
            config: config.clone(),
        })
    }

    /// The message Slack receives.
    pub fn payload(&self, message: &Message) -> Value {
        let data = message.template_data();
        let title = expand_notification_or_error(&self.config.title, &data);
        let mut fields = Vec::new();
        if let Some(first) = message.alerts.first() {
            let c = &first.condition;
            let short =
                |title: &str, value: String| json!({"title": title, "value": value, "short": true});
            fields.push(json!({"title": "Metric", "value": c.metric, "short": false}));
            if let Some(comparison) = &c.comparison {
                fields.push(short("Condition", comparison.clone()));
            }
            if let Some(threshold) = c.threshold {
                fields.push(short("Threshold", crate::gofmt::verb_v(threshold)));
            }
            fields.push(short("Value", crate::gofmt::verb_v(first.value)));
            fields.push(short(
                "Time",
                rfc3339(first.ends_at.unwrap_or(first.starts_at)),
            ));
            if message.alerts.len() > 1 {
                fields.push(short("Alerts", message.alerts.len().to_string()));
            }
        }
        let mut payload = json!({
            "username": self.config.username,
            "attachments": [{
                "fallback": title,
                "title": title,
                "title_link": message.external_url,
                "text": expand_notification_or_error(&self.config.text, &data),
                "color": expand_notification_or_error(&self.config.color, &data),
                "fields": fields,
            }],
        });
        if let Some(channel) = &self.config.channel {
            payload["channel"] = json!(channel);
        }
        payload
    }
}

impl Notifier for Slack {
    fn integration(&self) -> &'static str {
        "slack"
    }

    fn send_resolved(&self) -> bool {
        self.config.send_resolved
    }

    fn notify<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            post_json(
                &self.client,
                &self.url,
                self.timeout,
                &self.payload(message),
            )
            .await
        })
    }
}
