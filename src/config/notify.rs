//! The `notify:` section: Alertmanager's routing tree and receivers, in-process.

use super::Secret;
use super::duration::PromDuration;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `notify:` — where alerts go. Alertmanager's configuration, as it is (inline or in
/// `alertmanager_config_file`), plus torchwatch's own keys (`queue_capacity`, `alertmanagers`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotifyConfig {
    /// An Alertmanager configuration file used as it is, instead of the keys below inline;
    /// relative to torchwatch's config file.
    pub alertmanager_config_file: Option<PathBuf>,
    /// Alertmanager's `global:` defaults.
    pub global: AlertmanagerGlobal,
    /// The routing tree's root; every alert enters here.
    pub route: Option<RouteConfig>,
    /// Named receivers the routes point at.
    pub receivers: Vec<ReceiverConfig>,
    /// Mute some alerts while others fire.
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// Template files (globs) whose `define`d templates notification fields can use.
    pub templates: Vec<String>,
    /// Named time intervals routes mute or activate on.
    pub time_intervals: Vec<TimeIntervalConfig>,
    /// The same, under Alertmanager's older name.
    pub mute_time_intervals: Vec<TimeIntervalConfig>,
    /// Evaluations' alert batches waiting for the dispatcher, and alerts waiting in each
    /// Alertmanager's send queue, at most; more are dropped and counted.
    pub queue_capacity: Option<usize>,
    /// Real Alertmanagers every firing and resolved alert is also sent to, as
    /// Prometheus sends them (they route, group and notify themselves).
    pub alertmanagers: Vec<AlertmanagerConfig>,
    /// Where the routing keys came from, which decides the receivers' defaults.
    #[serde(skip)]
    pub origin: NotifyOrigin,
}

/// Which defaults receivers get: an Alertmanager file gets Alertmanager's (its default
/// templates, no torchwatch fields), so it notifies as it did under Alertmanager.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NotifyOrigin {
    /// `notify:` written for torchwatch.
    #[default]
    Torchwatch,
    /// Read from `alertmanager_config_file`.
    AlertmanagerFile,
}

/// The parts of an Alertmanager file torchwatch reads; the same keys as inline.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerFile {
    /// `global:`.
    pub global: AlertmanagerGlobal,
    /// `route:`.
    pub route: Option<RouteConfig>,
    /// `receivers:`.
    pub receivers: Vec<ReceiverConfig>,
    /// `inhibit_rules:`.
    pub inhibit_rules: Vec<InhibitRuleConfig>,
    /// `templates:`, relative to the file.
    pub templates: Vec<String>,
    /// `time_intervals:`.
    pub time_intervals: Vec<TimeIntervalConfig>,
    /// `mute_time_intervals:`.
    pub mute_time_intervals: Vec<TimeIntervalConfig>,
}

/// Alertmanager's `global:`: defaults for every receiver.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertmanagerGlobal {
    /// How long an alert posted without `endsAt` stays firing (5m).
    pub resolve_timeout: Option<PromDuration>,
    /// HTTP client settings of webhook and Slack receivers that set none.
    pub http_config: Option<HttpClientConfig>,
    /// Default sender address.
    pub smtp_from: Option<String>,
    /// Name sent in the SMTP greeting (`localhost`).
    pub smtp_hello: Option<String>,
    /// Default SMTP server, `host:port`.
    pub smtp_smarthost: Option<String>,
    /// Default AUTH user name.
    pub smtp_auth_username: Option<String>,
    /// Default AUTH password.
    pub smtp_auth_password: Option<Secret>,
    /// Default AUTH password file.
    pub smtp_auth_password_file: Option<PathBuf>,
    /// PLAIN's identity; torchwatch authenticates as the user name.
    pub smtp_auth_identity: Option<String>,
    /// Require STARTTLS (true).
    pub smtp_require_tls: Option<bool>,
    /// Default Slack webhook URL.
    pub slack_api_url: Option<Secret>,
    /// Default Slack webhook URL file.
    pub slack_api_url_file: Option<PathBuf>,
}

/// Prometheus' common HTTP client settings (`http_config`), the parts torchwatch honours.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpClientConfig {
    /// HTTP basic authentication.
    pub basic_auth: Option<super::BasicAuth>,
    /// An `Authorization` header.
    pub authorization: Option<super::Authorization>,
    /// A bearer token (the older form of `authorization`).
    pub bearer_token: Option<Secret>,
    /// A file holding the bearer token.
    pub bearer_token_file: Option<PathBuf>,
    /// TLS settings.
    pub tls_config: Option<super::TlsConfig>,
    /// Follow redirects (true).
    pub follow_redirects: Option<bool>,
    /// Offer HTTP/2 (true); torchwatch speaks HTTP/1.1 to receivers either way.
    pub enable_http2: Option<bool>,
}

/// A named set of time intervals (Alertmanager's `time_intervals` entry).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeIntervalConfig {
    /// The name routes refer to.
    pub name: String,
    /// Any of these matching means the interval is on.
    #[serde(default)]
    pub time_intervals: Vec<TimeIntervalSpec>,
}

/// One of Alertmanager's time intervals: every given field must match.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TimeIntervalSpec {
    /// Times of day, `HH:MM` to `HH:MM` (end exclusive).
    pub times: Vec<TimeRangeConfig>,
    /// `monday`, `monday:friday`, ...
    pub weekdays: Vec<String>,
    /// `1`, `1:5`, `-1` (the last day), ...
    pub days_of_month: Vec<String>,
    /// `january`, `1:3`, ...
    pub months: Vec<String>,
    /// `2026`, `2026:2027`, ...
    pub years: Vec<String>,
    /// IANA time zone the fields are read in (UTC).
    pub location: Option<String>,
}

/// `times:` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TimeRangeConfig {
    /// `HH:MM`, inclusive.
    pub start_time: String,
    /// `HH:MM`, exclusive (`24:00` allowed).
    pub end_time: String,
}

/// One Alertmanager (its v2 API).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertmanagerConfig {
    /// Base URL, e.g. `http://alertmanager:9093`.
    pub url: String,
    /// Per-request timeout (10s).
    pub timeout: Option<PromDuration>,
    /// HTTP basic authentication, as in Prometheus' `alerting.alertmanagers`.
    #[serde(default)]
    pub basic_auth: Option<super::BasicAuth>,
    /// An `Authorization` header.
    #[serde(default)]
    pub authorization: Option<super::Authorization>,
    /// TLS settings (a private CA, a client certificate, `server_name`).
    #[serde(default)]
    pub tls_config: Option<super::TlsConfig>,
}

impl AlertmanagerConfig {
    /// The client settings, in the form every outgoing client is built from.
    pub fn http_config(&self) -> HttpClientConfig {
        HttpClientConfig {
            basic_auth: self.basic_auth.clone(),
            authorization: self.authorization.clone(),
            tls_config: self.tls_config.clone(),
            ..HttpClientConfig::default()
        }
    }
}

/// Alertmanager's `inhibit_rules` entry: while an alert matching the source matchers fires,
/// alerts matching the target matchers with the same values of the `equal` labels are not
/// notified.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InhibitRuleConfig {
    /// Matchers the muting alert satisfies.
    pub source_matchers: Vec<String>,
    /// Equality matchers of the muting alert (Alertmanager's older form).
    pub source_match: BTreeMap<String, String>,
    /// Regex matchers of the muting alert (older form).
    pub source_match_re: BTreeMap<String, String>,
    /// Matchers the muted alert satisfies.
    pub target_matchers: Vec<String>,
    /// Equality matchers of the muted alert (older form).
    pub target_match: BTreeMap<String, String>,
    /// Regex matchers of the muted alert (older form).
    pub target_match_re: BTreeMap<String, String>,
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
    /// Equality matchers (Alertmanager's older form).
    #[serde(rename = "match")]
    pub match_: BTreeMap<String, String>,
    /// Regex matchers (older form), anchored.
    pub match_re: BTreeMap<String, String>,
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
    /// Time intervals during which this route sends nothing.
    pub mute_time_intervals: Vec<String>,
    /// Time intervals outside which this route sends nothing.
    pub active_time_intervals: Vec<String>,
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

/// Recipients: a list, or Alertmanager's one comma-separated string.
#[derive(Debug, Clone, Default)]
pub struct Recipients(pub Vec<String>);

impl<'de> Deserialize<'de> for Recipients {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Form {
            One(String),
            Many(Vec<String>),
        }
        Ok(Recipients(match Form::deserialize(deserializer)? {
            Form::One(text) => text
                .split(',')
                .map(|a| a.trim().to_string())
                .filter(|a| !a.is_empty())
                .collect(),
            Form::Many(list) => list,
        }))
    }
}

/// Email: Alertmanager's `email_config`, or torchwatch's shorter form (`host`, `port`,
/// `security`, `subject`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// Recipients.
    pub to: Recipients,
    /// Sender address (`global.smtp_from` when absent).
    pub from: Option<String>,
    /// SMTP server as `host:port` (`global.smtp_smarthost` when absent).
    pub smarthost: Option<String>,
    /// SMTP server host name (torchwatch's form of `smarthost`).
    pub host: Option<String>,
    /// SMTP port (with `host`; 587).
    pub port: Option<u16>,
    /// Connection security (with `host`; `starttls`).
    pub security: Option<SmtpSecurity>,
    /// Require STARTTLS (Alertmanager's; `global.smtp_require_tls`, true). Port 465 is
    /// TLS from the first byte whatever this says, as Alertmanager does.
    pub require_tls: Option<bool>,
    /// Name sent in the SMTP greeting.
    pub hello: Option<String>,
    /// TLS settings of the SMTP connection.
    pub tls_config: Option<super::TlsConfig>,
    /// PEM file of a CA to trust besides the system's (torchwatch's form of `tls_config.ca_file`).
    pub ca_file: Option<PathBuf>,
    /// AUTH user name; AUTH is used when set.
    pub auth_username: Option<String>,
    /// AUTH password (avoid: it sits in the file).
    pub auth_password: Option<Secret>,
    /// File whose first line is the password.
    pub auth_password_file: Option<PathBuf>,
    /// Environment variable holding the password.
    pub auth_password_env: Option<String>,
    /// PLAIN's identity; torchwatch authenticates as the user name.
    pub auth_identity: Option<String>,
    /// Headers, templated; `Subject`, `To` and `From` set those of the message.
    pub headers: BTreeMap<String, String>,
    /// Template of the subject (torchwatch's form of `headers.Subject`).
    pub subject: Option<String>,
    /// Template of the plain-text body.
    pub text: Option<String>,
    /// Template of the HTML body.
    pub html: Option<String>,
    /// Also mail when alerts resolve (Alertmanager's default for email: false).
    pub send_resolved: bool,
    /// Per-attempt timeout (10s).
    pub timeout: Option<PromDuration>,
}

/// A Slack incoming webhook (Alertmanager's `slack_config`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SlackConfig {
    /// The incoming-webhook URL (a secret; `global.slack_api_url` when absent).
    pub api_url: Option<Secret>,
    /// File whose first line is the URL.
    pub api_url_file: Option<PathBuf>,
    /// Environment variable holding the URL.
    pub api_url_env: Option<String>,
    /// HTTP client settings.
    pub http_config: Option<HttpClientConfig>,
    /// Channel to post to (the webhook's own when absent).
    pub channel: Option<String>,
    /// Name shown as the sender.
    pub username: Option<String>,
    /// Template of the attachment colour (`danger`, `good`, `#hex`).
    pub color: Option<String>,
    /// Template of the title.
    pub title: Option<String>,
    /// Template of the title's link.
    pub title_link: Option<String>,
    /// Template of the text above the attachment.
    pub pretext: Option<String>,
    /// Template of the text.
    pub text: Option<String>,
    /// Attachment fields.
    pub fields: Vec<SlackFieldConfig>,
    /// Fields are short unless they say otherwise.
    pub short_fields: bool,
    /// Template of the footer.
    pub footer: Option<String>,
    /// Template of the plain-text summary.
    pub fallback: Option<String>,
    /// Template of the callback id.
    pub callback_id: Option<String>,
    /// Emoji shown as the sender's icon.
    pub icon_emoji: Option<String>,
    /// Image shown as the sender's icon.
    pub icon_url: Option<String>,
    /// Image in the attachment.
    pub image_url: Option<String>,
    /// Thumbnail in the attachment.
    pub thumb_url: Option<String>,
    /// Link channel names and user names.
    pub link_names: bool,
    /// Attachment fields Slack formats as markdown (`fallback`, `pretext`, `text`).
    pub mrkdwn_in: Option<Vec<String>>,
    /// Also post when alerts resolve (Alertmanager's default for Slack: false).
    pub send_resolved: bool,
    /// Per-attempt timeout (10s).
    pub timeout: Option<PromDuration>,
}

/// One field of a Slack attachment.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackFieldConfig {
    /// Template of its title.
    pub title: String,
    /// Template of its value.
    pub value: String,
    /// Shown beside others (`short_fields` when absent).
    pub short: Option<bool>,
}

/// A webhook (Alertmanager's `webhook_config`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// The URL (a secret: it often carries a token).
    pub url: Option<Secret>,
    /// File whose first line is the URL.
    pub url_file: Option<PathBuf>,
    /// Environment variable holding the URL.
    pub url_env: Option<String>,
    /// HTTP client settings.
    pub http_config: Option<HttpClientConfig>,
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

/// Alertmanager integrations and settings torchwatch knows but cannot honour.
const UNSUPPORTED_ALERTMANAGER_KEYS: &[&str] = &[
    "pagerduty_configs",
    "opsgenie_configs",
    "wechat_configs",
    "pushover_configs",
    "victorops_configs",
    "sns_configs",
    "telegram_configs",
    "webex_configs",
    "discord_configs",
    "msteams_configs",
    "pagerduty_url",
    "opsgenie_api_key",
    "opsgenie_api_key_file",
    "opsgenie_api_url",
    "wechat_api_url",
    "wechat_api_secret",
    "wechat_api_corp_id",
    "victorops_api_key",
    "victorops_api_key_file",
    "victorops_api_url",
    "telegram_api_url",
    "webex_api_url",
    "smtp_auth_secret",
    "auth_secret",
    "actions",
];

/// A clearer message for an unknown field that is an Alertmanager setting torchwatch lacks.
pub(super) fn explain_unsupported(detail: &str) -> Option<String> {
    super::explain_unknown_field(detail, "an Alertmanager", |field| {
        UNSUPPORTED_ALERTMANAGER_KEYS.contains(&field).then(|| {
            "torchwatch delivers by email, Slack and webhooks only (CRAM-MD5 secrets and Slack \
             actions neither); remove it, or reach the service through a webhook_configs bridge"
                .into()
        })
    })
}

impl NotifyConfig {
    /// Reads `alertmanager_config_file` into the routing keys, and makes every relative path
    /// (templates, password and URL files, certificates) relative to the file that names it,
    /// as Alertmanager does.
    pub(super) fn load_alertmanager_file(&mut self, config_dir: &Path) -> Result<(), String> {
        let Some(file) = self.alertmanager_config_file.clone() else {
            self.resolve_paths(config_dir);
            return Ok(());
        };
        let inline = self.route.is_some()
            || !self.receivers.is_empty()
            || !self.inhibit_rules.is_empty()
            || !self.templates.is_empty()
            || !self.time_intervals.is_empty()
            || !self.mute_time_intervals.is_empty();
        if inline {
            return Err(
                "notify: give either alertmanager_config_file or Alertmanager's keys (route, \
                 receivers, inhibit_rules, templates, time_intervals) inline, not both"
                    .into(),
            );
        }
        let path = config_dir.join(file);
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(&path)
            .map_err(|e| format!("notify.alertmanager_config_file: {origin}: cannot read: {e}"))?;
        let am: AlertmanagerFile =
            serde_saphyr::from_str(&text).map_err(|e| super::yaml_error(&origin, &e))?;
        self.global = am.global;
        self.route = am.route;
        self.receivers = am.receivers;
        self.inhibit_rules = am.inhibit_rules;
        self.templates = am.templates;
        self.time_intervals = am.time_intervals;
        self.mute_time_intervals = am.mute_time_intervals;
        self.origin = NotifyOrigin::AlertmanagerFile;
        self.resolve_paths(path.parent().unwrap_or(Path::new("")));
        self.alertmanager_config_file = Some(path);
        Ok(())
    }

    fn resolve_paths(&mut self, base: &Path) {
        let join = |p: &mut PathBuf| {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        };
        for glob in &mut self.templates {
            if Path::new(glob.as_str()).is_relative() {
                *glob = base.join(&*glob).to_string_lossy().into_owned();
            }
        }
        let global = &mut self.global;
        global.smtp_auth_password_file.iter_mut().for_each(join);
        global.slack_api_url_file.iter_mut().for_each(join);
        global
            .http_config
            .iter_mut()
            .for_each(|h| h.resolve_paths(base));
        for am in &mut self.alertmanagers {
            resolve_client_paths(
                base,
                am.basic_auth.as_mut(),
                am.authorization.as_mut(),
                am.tls_config.as_mut(),
            );
        }
        for receiver in &mut self.receivers {
            for email in &mut receiver.email_configs {
                email.auth_password_file.iter_mut().for_each(join);
                email.ca_file.iter_mut().for_each(join);
                email
                    .tls_config
                    .iter_mut()
                    .for_each(|t| t.resolve_paths(base));
            }
            for slack in &mut receiver.slack_configs {
                slack.api_url_file.iter_mut().for_each(join);
                slack
                    .http_config
                    .iter_mut()
                    .for_each(|h| h.resolve_paths(base));
            }
            for hook in &mut receiver.webhook_configs {
                hook.url_file.iter_mut().for_each(join);
                hook.http_config
                    .iter_mut()
                    .for_each(|h| h.resolve_paths(base));
            }
        }
    }
}

impl HttpClientConfig {
    fn resolve_paths(&mut self, base: &Path) {
        if let Some(p) = &mut self.bearer_token_file
            && p.is_relative()
        {
            *p = base.join(&*p);
        }
        resolve_client_paths(
            base,
            self.basic_auth.as_mut(),
            self.authorization.as_mut(),
            self.tls_config.as_mut(),
        );
    }
}

/// Makes the password, credentials and certificate files of an outgoing client's settings
/// relative to `base`, wherever those settings sit (`http_config`, an Alertmanager, the
/// datasource).
pub(super) fn resolve_client_paths(
    base: &Path,
    basic_auth: Option<&mut super::BasicAuth>,
    authorization: Option<&mut super::Authorization>,
    tls: Option<&mut super::TlsConfig>,
) {
    let secrets = basic_auth.map(|a| &mut a.password_file);
    let tokens = authorization.map(|a| &mut a.credentials_file);
    for path in secrets.into_iter().chain(tokens).flatten() {
        if path.is_relative() {
            *path = base.join(&*path);
        }
    }
    if let Some(tls) = tls {
        tls.resolve_paths(base);
    }
}

impl super::TlsConfig {
    fn resolve_paths(&mut self, base: &Path) {
        for p in [&mut self.ca_file, &mut self.cert_file, &mut self.key_file]
            .into_iter()
            .flatten()
        {
            if p.is_relative() {
                *p = base.join(&*p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::Config;

    fn error(yaml: &str) -> String {
        Config::parse(&format!("{yaml}models: []\n"), "t.yaml")
            .unwrap_err()
            .to_string()
    }

    #[test]
    fn alertmanager_settings_torchwatch_lacks_are_refused_by_name() {
        let err = error("notify:\n  receivers:\n    - name: pager\n      pagerduty_configs: []\n");
        assert!(
            err.starts_with(
                "t.yaml:4:7: `pagerduty_configs` is an Alertmanager setting torchwatch does not \
                 support"
            ),
            "{err}"
        );
        let err = error("notify:\n  global:\n    smtp_auth_secret: s3cret\n");
        assert!(err.starts_with("t.yaml:3:5: `smtp_auth_secret`"), "{err}");
        assert!(!err.contains("s3cret"), "the secret is repeated: {err}");
        // A typo still lists what is expected.
        let err = error("notify:\n  route:\n    recevier: x\n");
        assert!(err.contains("unknown field `recevier`, expected"), "{err}");
    }

    #[test]
    fn both_forms_of_the_older_matchers_and_recipients_parse() {
        let config = Config::parse(
            "notify:\n  route:\n    receiver: m\n    routes:\n      - match: {team: ml}\n        match_re: {severity: 'crit.*'}\n        receiver: m\n  receivers:\n    - name: m\n      email_configs:\n        - to: 'a@example.org, b@example.org'\n          smarthost: 'mail:25'\n        - to: [c@example.org]\n          host: mail\nmodels: []\n",
            "t.yaml",
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let route = config.notify.route.unwrap();
        assert_eq!(route.routes[0].match_["team"], "ml");
        assert_eq!(route.routes[0].match_re["severity"], "crit.*");
        let emails = &config.notify.receivers[0].email_configs;
        assert_eq!(emails[0].to.0, ["a@example.org", "b@example.org"]);
        assert_eq!(emails[1].to.0, ["c@example.org"]);
    }
}
