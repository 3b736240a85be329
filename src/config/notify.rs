//! The `notify:` section: Alertmanager's routing tree and receivers, in-process.

use super::duration::PromDuration;
use serde::Deserialize;
use std::path::PathBuf;

/// `notify:` — where alerts go.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// The routing tree's root; every alert enters here.
    pub route: Option<RouteConfig>,
    /// Named receivers the routes point at.
    pub receivers: Vec<ReceiverConfig>,
    /// Evaluations' alert batches waiting for the dispatcher, and alerts waiting in each
    /// Alertmanager's send queue, at most; more are dropped and counted.
    pub queue_capacity: Option<usize>,
    /// Mute some alerts while others fire.
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Real Alertmanagers every firing and resolved alert is also sent to, as
    /// Prometheus sends them (they route, group and notify themselves).
    pub alertmanagers: Vec<AlertmanagerConfig>,
}

/// One Alertmanager (its v2 API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// Per-request timeout (10s).
    pub timeout: Option<PromDuration>,
}

/// Alertmanager's `inhibit_rules` entry: while an alert matching
/// `source_matchers` fires, alerts matching `target_matchers` with the same
/// values of the `equal` labels are not notified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InhibitRuleConfig {
    /// Matchers the muting alert satisfies.
    pub source_matchers: Vec<String>,
    /// Matchers the muted alert satisfies.
    pub target_matchers: Vec<String>,
    /// Labels both must share.
    pub equal: Vec<String>,
}

/// One node of the routing tree (Alertmanager's `route`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RouteConfig {
    /// Receiver of alerts this node routes; inherited when absent.
    pub receiver: Option<String>,
    /// Label matchers, e.g. `severity="critical"`, `team=~"ml|infra"`; all must match.
    pub matchers: Vec<String>,
    /// Keep looking at later siblings after this route matched.
    #[serde(rename = "continue")]
    pub continue_: bool,
    /// Labels that split alerts into notification groups; `...` = every label.
    pub group_by: Option<Vec<String>>,
    /// Wait before the first notification of a new group (30s).
    pub group_wait: Option<PromDuration>,
    /// Wait between notifications about a changed group (5m).
    pub group_interval: Option<PromDuration>,
    /// Wait before repeating an unchanged notification (4h).
    pub repeat_interval: Option<PromDuration>,
    /// Child routes, tried in order.
    pub routes: Vec<RouteConfig>,
}

/// A named receiver with its integrations.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReceiverConfig {
    /// Name routes refer to.
    pub name: String,
    /// Webhooks receiving Alertmanager's JSON payload.
    #[serde(default)]
    pub webhook_configs: Vec<WebhookConfig>,
    /// Slack incoming webhooks.
    #[serde(default)]
    pub slack_configs: Vec<SlackConfig>,
    /// Email over SMTP.
    #[serde(default)]
    pub email_configs: Vec<EmailConfig>,
}

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the first byte (SMTPS, usually port 465).
    Tls,
    /// No encryption (local relays only).
    None,
}

/// Email (Alertmanager's `email_config`, the parts that apply).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// Recipients.
    pub to: Vec<String>,
    /// Sender address.
    pub from: String,
    /// SMTP server host name (also the name its certificate must carry).
    pub host: String,
    /// SMTP port.
    #[serde(default = "default_smtp_port")]
    pub port: u16,
    /// Connection security.
    #[serde(default = "default_security")]
    pub security: SmtpSecurity,
    /// PEM file of a CA to trust besides the system's (private relays).
    pub ca_file: Option<PathBuf>,
    /// AUTH user name; AUTH is used when set.
    pub auth_username: Option<String>,
    /// AUTH password (avoid: it sits in the file).
    pub auth_password: Option<String>,
    /// File whose first line is the password.
    pub auth_password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub auth_password_env: Option<String>,
    /// Template of the subject.
    #[serde(default = "default_title")]
    pub subject: String,
    /// Template of the plain-text body (a list of the alerts follows it).
    #[serde(default = "default_text")]
    pub text: String,
    /// Template of an HTML body, sent as an alternative to the text.
    pub html: Option<String>,
    /// Also mail when alerts resolve (Alertmanager's default for email: false).
    #[serde(default)]
    pub send_resolved: bool,
    /// Per-attempt timeout (10s).
    pub timeout: Option<PromDuration>,
}

fn default_smtp_port() -> u16 {
    587
}

fn default_security() -> SmtpSecurity {
    SmtpSecurity::Starttls
}

impl std::fmt::Debug for EmailConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EmailConfig")
            .field("to", &self.to)
            .field("host", &self.host)
            .field("port", &self.port)
            .field("auth_password", &"<secret>")
            .finish_non_exhaustive()
    }
}

/// A Slack incoming webhook (Alertmanager's `slack_config`, the parts that apply).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL (a secret).
    pub api_url: Option<String>,
    /// File whose first line is the URL.
    pub api_url_file: Option<PathBuf>,
    /// Environment variable holding the URL.
    pub api_url_env: Option<String>,
    /// Channel to post to (the webhook's own when absent).
    pub channel: Option<String>,
    /// Name shown as the sender.
    #[serde(default = "default_username")]
    pub username: String,
    /// Template of the message title.
    #[serde(default = "default_title")]
    pub title: String,
    /// Template of the message text.
    #[serde(default = "default_text")]
    pub text: String,
    /// Template of the attachment colour (`danger`, `good`, `#hex`).
    #[serde(default = "default_color")]
    pub color: String,
    /// Also post when alerts resolve (Alertmanager's default for Slack: false).
    #[serde(default)]
    pub send_resolved: bool,
    /// Per-attempt timeout (10s).
    pub timeout: Option<PromDuration>,
}

fn default_username() -> String {
    "torchwatch".into()
}

fn default_title() -> String {
    "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}".into()
}

fn default_text() -> String {
    "{{ .CommonAnnotations.summary }}".into()
}

fn default_color() -> String {
    r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#.into()
}

impl std::fmt::Debug for SlackConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SlackConfig")
            .field("api_url", &"<secret>")
            .field("channel", &self.channel)
            .finish_non_exhaustive()
    }
}

/// A webhook (Alertmanager's `webhook_config`).
#[derive(Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL (a secret: it often carries a token).
    pub url: Option<String>,
    /// File whose first line is the URL.
    pub url_file: Option<PathBuf>,
    /// Environment variable holding the URL.
    pub url_env: Option<String>,
    /// Also notify when a group's alerts resolve (default true).
    #[serde(default = "yes")]
    pub send_resolved: bool,
    /// At most this many alerts per message (0 = all); the rest are counted in `truncatedAlerts`.
    #[serde(default)]
    pub max_alerts: usize,
    /// Per-attempt timeout (10s).
    pub timeout: Option<PromDuration>,
}

fn yes() -> bool {
    true
}

impl std::fmt::Debug for WebhookConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookConfig")
            .field("url", &"<secret>")
            .field("send_resolved", &self.send_resolved)
            .field("max_alerts", &self.max_alerts)
            .finish()
    }
}
