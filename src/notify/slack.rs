//! The Slack receiver: Alertmanager's incoming-webhook message (one attachment with templated
//! title, text, colour, fields, ...). Written for torchwatch, it also carries the tutorial's
//! fields: the metric, condition, threshold, current value and time of the first alert.

use super::integration::{BuildContext, Text, attempt_timeout};
use super::{Message, Notifier, SendFuture, post_json, secret_url};
use crate::clock::rfc3339;
use crate::config::Secret;
use crate::config::SlackConfig;
use crate::http_client::HttpClient;
use serde_json::{Value, json};
use std::time::Duration;

/// One Slack incoming webhook.
pub struct Slack {
    client: HttpClient,
    url: Secret,
    timeout: Duration,
    send_resolved: bool,
    channel: Option<Text>,
    username: Option<Text>,
    icon_emoji: Option<Text>,
    icon_url: Option<Text>,
    link_names: bool,
    title: Option<Text>,
    title_link: Option<Text>,
    pretext: Option<Text>,
    text: Option<Text>,
    fallback: Option<Text>,
    callback_id: Option<Text>,
    image_url: Option<Text>,
    thumb_url: Option<Text>,
    footer: Option<Text>,
    color: Option<Text>,
    fields: Vec<(Text, Text, bool)>,
    mrkdwn_in: Vec<String>,
    /// The tutorial's condition fields, when nobody configured fields.
    condition_fields: bool,
}

/// Alertmanager's `DefaultSlackConfig`, all of it from default.tmpl.
const ALERTMANAGER_DEFAULTS: [(&str, &str); 10] = [
    ("username", r#"{{ template "slack.default.username" . }}"#),
    (
        "color",
        r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#,
    ),
    ("title", r#"{{ template "slack.default.title" . }}"#),
    (
        "title_link",
        r#"{{ template "slack.default.titlelink" . }}"#,
    ),
    (
        "icon_emoji",
        r#"{{ template "slack.default.iconemoji" . }}"#,
    ),
    ("icon_url", r#"{{ template "slack.default.iconurl" . }}"#),
    ("pretext", r#"{{ template "slack.default.pretext" . }}"#),
    ("text", r#"{{ template "slack.default.text" . }}"#),
    ("fallback", r#"{{ template "slack.default.fallback" . }}"#),
    (
        "callback_id",
        r#"{{ template "slack.default.callbackid" . }}"#,
    ),
];

/// torchwatch's own defaults: a short title and the summary, in torchwatch's name.
const TORCHWATCH_DEFAULTS: [(&str, &str); 4] = [
    ("username", "torchwatch"),
    (
        "color",
        r#"{{ if eq .Status "firing" }}danger{{ else }}good{{ end }}"#,
    ),
    (
        "title",
        "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}",
    ),
    ("text", "{{ .CommonAnnotations.summary }}"),
];

impl Slack {
    /// Resolves the URL and compiles the templates now (start or reload).
    pub(super) fn new(
        config: &SlackConfig,
        context: &BuildContext,
        receiver: &str,
    ) -> Result<Slack, String> {
        let what = format!("receiver {receiver}: slack");
        let own = config.api_url.is_some()
            || config.api_url_file.is_some()
            || config.api_url_env.is_some();
        let url = if own {
            secret_url(
                &config.api_url,
                &config.api_url_file,
                &config.api_url_env,
                &format!("{what} api_url"),
            )?
        } else {
            secret_url(
                &context.global.slack_api_url,
                &context.global.slack_api_url_file,
                &None,
                &format!("{what} api_url (or global.slack_api_url)"),
            )?
        };
        let defaults: &[(&str, &str)] = if context.alertmanager_defaults() {
            &ALERTMANAGER_DEFAULTS
        } else {
            &TORCHWATCH_DEFAULTS
        };
        let field = |name: &str, given: &Option<String>| -> Result<Option<Text>, String> {
            let text = given.as_deref().or_else(|| {
                defaults
                    .iter()
                    .find(|(n, _)| *n == name)
                    .map(|(_, text)| *text)
            });
            text.map(|t| context.text(t, &format!("{what} {name}")))
                .transpose()
        };
        let fields = config
            .fields
            .iter()
            .enumerate()
            .map(|(i, f)| {
                let at = format!("{what} fields[{i}]");
                Ok((
                    context.text(&f.title, &format!("{at}.title"))?,
                    context.text(&f.value, &format!("{at}.value"))?,
                    f.short.unwrap_or(config.short_fields),
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Slack {
            client: context.http(config.http_config.as_ref(), &what)?,
            url,
            timeout: attempt_timeout(config.timeout),
            send_resolved: config.send_resolved,
            channel: field("channel", &config.channel)?,
            username: field("username", &config.username)?,
            icon_emoji: field("icon_emoji", &config.icon_emoji)?,
            icon_url: field("icon_url", &config.icon_url)?,
            link_names: config.link_names,
            title: field("title", &config.title)?,
            title_link: field("title_link", &config.title_link)?,
            pretext: field("pretext", &config.pretext)?,
            text: field("text", &config.text)?,
            fallback: field("fallback", &config.fallback)?,
            callback_id: field("callback_id", &config.callback_id)?,
            image_url: field("image_url", &config.image_url)?,
            thumb_url: field("thumb_url", &config.thumb_url)?,
            footer: field("footer", &config.footer)?,
            color: field("color", &config.color)?,
            fields,
            mrkdwn_in: config
                .mrkdwn_in
                .clone()
                .unwrap_or_else(|| ["fallback", "pretext", "text"].map(String::from).to_vec()),
            condition_fields: !context.alertmanager_defaults() && config.fields.is_empty(),
        })
    }

    /// The message Slack receives: Alertmanager's request, empty fields left out as its JSON
    /// encoding leaves them out.
    pub fn payload(&self, message: &Message) -> Value {
        let data = message.template_data();
        let render = |t: &Option<Text>| t.as_ref().map(|t| t.render(&data)).unwrap_or_default();
        let title = render(&self.title);
        let mut attachment = serde_json::Map::new();
        let mut put = |name: &str, value: String, always: bool| {
            if always || !value.is_empty() {
                attachment.insert(name.into(), Value::String(value));
            }
        };
        put("title", title.chars().take(1024).collect(), false);
        put(
            "title_link",
            match &self.title_link {
                Some(t) => t.render(&data),
                None => message.external_url.clone(),
            },
            false,
        );
        put("pretext", render(&self.pretext), false);
        put("text", render(&self.text), true);
        put(
            "fallback",
            match &self.fallback {
                Some(t) => t.render(&data),
                None => title.clone(),
            },
            true,
        );
        put("callback_id", render(&self.callback_id), true);
        put("image_url", render(&self.image_url), false);
        put("thumb_url", render(&self.thumb_url), false);
        put("footer", render(&self.footer), true);
        put("color", render(&self.color), false);
        let fields: Vec<Value> = if self.condition_fields {
            condition_fields(message)
        } else {
            self.fields
                .iter()
                .map(|(title, value, short)| {
                    json!({"title": title.render(&data), "value": value.render(&data), "short": short})
                })
                .collect()
        };
        if !fields.is_empty() {
            attachment.insert("fields".into(), Value::Array(fields));
        }
        attachment.insert("mrkdwn_in".into(), json!(self.mrkdwn_in));
        let mut payload = serde_json::Map::new();
        for (name, value) in [
            ("channel", render(&self.channel)),
            ("username", render(&self.username)),
            ("icon_emoji", render(&self.icon_emoji)),
            ("icon_url", render(&self.icon_url)),
        ] {
            if !value.is_empty() {
                payload.insert(name.into(), Value::String(value));
            }
        }
        if self.link_names {
            payload.insert("link_names".into(), Value::Bool(true));
        }
        payload.insert(
            "attachments".into(),
            Value::Array(vec![Value::Object(attachment)]),
        );
        Value::Object(payload)
    }
}

/// The tutorial's fields about the first alert: what it measures, against what, and when.
fn condition_fields(message: &Message) -> Vec<Value> {
    let Some(first) = message.alerts.first() else {
        return Vec::new();
    };
    let c = &first.condition;
    let short = |title: &str, value: String| json!({"title": title, "value": value, "short": true});
    let mut fields = vec![json!({"title": "Metric", "value": c.metric, "short": false})];
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
    fields
}

impl Notifier for Slack {
    fn integration(&self) -> &'static str {
        "slack"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn notify<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            post_json(
                self.client.post(self.url.expose()),
                self.timeout,
                &self.payload(message),
            )
            .await
        })
    }
}
