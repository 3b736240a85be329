//! What every integration shares: the `Notifier` trait, send errors and how they are
//! classified, and the HTTP helpers the JSON integrations use.

use super::Message;
use crate::config::{AlertmanagerGlobal, HttpClientConfig, NotifyOrigin, Secret};
use crate::http_client::HttpClient;
use crate::template::{NotificationData, Template, TemplateSet};
use std::sync::Arc;
use std::time::Duration;

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// What went wrong (never the URL or a credential).
    pub message: String,
    /// Connection errors, timeouts, 5xx and 429 are worth retrying.
    pub retryable: bool,
    /// What a 429 or 503 asked for in `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl SendError {
    pub(super) fn from_reqwest(e: &reqwest::Error) -> SendError {
        // The URL may carry a token: only the kind of failure is reported.
        SendError {
            message: crate::client_error::kind(e).into(),
            retryable: e.is_timeout() || e.is_connect() || e.is_request(),
            retry_after: None,
        }
    }

    pub(super) fn check_status(response: &reqwest::Response) -> Result<(), SendError> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let throttled = status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        let retry_after = throttled
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        Err(SendError {
            message: format!("receiver answered HTTP {status}"),
            retryable: status.is_server_error() || throttled,
            retry_after,
        })
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110); a date in the past means now.
pub(super) fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A receiver URL from its inline, file or environment source; the URL is a
/// secret (it often carries a token), so errors never repeat it.
pub fn secret_url(
    inline: &Option<Secret>,
    file: &Option<std::path::PathBuf>,
    env: &Option<String>,
    what: &str,
) -> Result<Secret, String> {
    let url = crate::config::resolve_secret(inline, file, env, what)?
        .ok_or_else(|| format!("{what}: give it inline, as a *_file or as an *_env variable"))?;
    reqwest::Url::parse(url.expose()).map_err(|_| format!("{what}: not a valid URL"))?;
    Ok(url)
}

/// A configured per-attempt timeout, 10 s when absent.
pub(super) fn attempt_timeout(configured: Option<crate::config::PromDuration>) -> Duration {
    configured
        .map(|d| Duration::from_millis(d.millis() as u64))
        .unwrap_or(Duration::from_secs(10))
}

/// One POST of a JSON body; 2xx is success.
pub async fn post_json(
    request: reqwest::RequestBuilder,
    timeout: Duration,
    body: &impl serde::Serialize,
) -> Result<(), SendError> {
    let response = request
        .timeout(timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::from_reqwest(&e))?;
    SendError::check_status(&response)
}

/// One delivery attempt in flight.
pub type SendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SendError>> + Send + 'a>>;

/// One integration of a receiver (webhook, Slack, email, ...).
pub trait Notifier: Send + Sync {
    /// `webhook`, `slack`, ... for metrics and logs.
    fn integration(&self) -> &'static str;
    /// Whether resolved alerts are sent.
    fn send_resolved(&self) -> bool;
    /// One attempt to deliver `message`.
    fn notify<'a>(&'a self, message: &'a Message) -> SendFuture<'a>;
}

/// A named receiver and its integrations.
pub struct Receiver {
    pub(super) name: String,
    pub(super) integrations: Vec<Arc<dyn Notifier>>,
}

/// What every integration is built with: the shared HTTP client, the template set,
/// Alertmanager's `global:` defaults, and whose defaults apply.
pub(super) struct BuildContext<'a> {
    pub(super) client: &'a reqwest::Client,
    pub(super) templates: &'a TemplateSet,
    pub(super) global: &'a AlertmanagerGlobal,
    pub(super) origin: NotifyOrigin,
}

impl BuildContext<'_> {
    /// The HTTP client of an integration: its own `http_config`, else `global.http_config`.
    pub(super) fn http(
        &self,
        own: Option<&HttpClientConfig>,
        what: &str,
    ) -> Result<HttpClient, String> {
        HttpClient::build(
            own.or(self.global.http_config.as_ref()),
            self.client,
            &format!("{what}.http_config"),
        )
    }

    /// Compiles a field's template once, at load.
    pub(super) fn text(&self, text: &str, what: &str) -> Result<Text, String> {
        self.templates
            .compile(text)
            .map(Text)
            .map_err(|e| format!("{what}: template: {e}"))
    }

    /// Compiles an HTML field once, escaping as Alertmanager's html/template does.
    pub(super) fn html(&self, text: &str, what: &str) -> Result<Text, String> {
        self.templates
            .compile_html(text)
            .map(Text)
            .map_err(|e| format!("{what}: template: {e}"))
    }

    /// Alertmanager's defaults for a file written for it, torchwatch's otherwise.
    pub(super) fn alertmanager_defaults(&self) -> bool {
        self.origin == NotifyOrigin::AlertmanagerFile
    }
}

/// One templated field, compiled at load.
pub(super) struct Text(Template);

impl Text {
    /// The field for one notification; a failing template shows its error in place, so the
    /// notification still goes out and says what to fix.
    pub(super) fn render(&self, data: &NotificationData) -> String {
        self.0
            .expand_notification(data)
            .unwrap_or_else(|e| format!("<error expanding template: {e}>"))
    }
}
