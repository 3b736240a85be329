//! The email receiver: SMTP through lettre with STARTTLS, implicit TLS or a
//! plain connection, AUTH with a password from the config, a file or the
//! environment, and templated subject, text and HTML bodies.

use super::integration::{BuildContext, Text, attempt_timeout};
use super::{Message, Notifier, SendError, SendFuture};
use crate::clock::rfc3339;
use crate::config::{self, EmailConfig, SmtpSecurity};
use lettre::message::header::{ContentType, HeaderName, HeaderValue};
use lettre::message::{Mailbox, MultiPart, SinglePart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::transport::smtp::extension::ClientId;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// One email receiver.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Text,
    to: Text,
    subject: Text,
    /// Other headers, templated.
    headers: Vec<(String, Text)>,
    text: Option<Text>,
    html: Option<Text>,
    /// The tutorial's list of alerts after the text (torchwatch's form only).
    alert_list: bool,
    send_resolved: bool,
}

/// Alertmanager's `email_config` defaults, from default.tmpl.
const ALERTMANAGER_SUBJECT: &str = r#"{{ template "email.default.subject" . }}"#;
const ALERTMANAGER_HTML: &str = r#"{{ template "email.default.html" . }}"#;
/// torchwatch's own: a short subject and the summary, followed by the list of alerts.
const TORCHWATCH_SUBJECT: &str = "[{{ .Status | toUpper }}] {{ .CommonLabels.alertname }}";
const TORCHWATCH_TEXT: &str = "{{ .CommonAnnotations.summary }}";

/// Where and how to connect: Alertmanager's `smarthost` (port 465 is TLS from the first byte,
/// else STARTTLS, required unless `require_tls: false`) or torchwatch's `host`/`port`/`security`.
fn endpoint(
    config: &EmailConfig,
    global: &crate::config::AlertmanagerGlobal,
    what: &dyn Fn(&str) -> String,
) -> Result<(String, u16, SmtpSecurity, bool), String> {
    if config.host.is_some() && config.smarthost.is_some() {
        return Err(format!(
            "{}: give smarthost (host:port) or host and port, not both",
            what("smarthost")
        ));
    }
    if let Some(host) = &config.host {
        if config.require_tls.is_some() {
            return Err(format!(
                "{}: with host, say security: starttls | tls | none",
                what("require_tls")
            ));
        }
        let security = config.security.unwrap_or(SmtpSecurity::Starttls);
        return Ok((host.clone(), config.port.unwrap_or(587), security, true));
    }
    if config.port.is_some() || config.security.is_some() {
        return Err(format!(
            "{}: port and security go with host; with smarthost write host:port and require_tls",
            what("port")
        ));
    }
    let smarthost = config
        .smarthost
        .as_ref()
        .or(global.smtp_smarthost.as_ref())
        .ok_or_else(|| {
            format!(
                "{}: give smarthost or global.smtp_smarthost",
                what("smarthost")
            )
        })?;
    let (host, port) = smarthost
        .rsplit_once(':')
        .and_then(|(h, p)| Some((h.trim_matches(['[', ']']), p.parse::<u16>().ok()?)))
        .ok_or_else(|| format!("{}: {smarthost:?} is not host:port", what("smarthost")))?;
    let require_tls = config
        .require_tls
        .or(global.smtp_require_tls)
        .unwrap_or(true);
    let security = if port == 465 {
        SmtpSecurity::Tls
    } else {
        SmtpSecurity::Starttls
    };
    Ok((host.to_string(), port, security, require_tls))
}

impl Email {
    /// Resolves the password, reads the certificates and compiles the templates now (start
    /// or reload).
    pub(super) fn new(
        config: &EmailConfig,
        context: &BuildContext,
        receiver: &str,
    ) -> Result<Email, String> {
        let what = |field: &str| format!("receiver {receiver}: email {field}");
        let global = context.global;
        let from = config
            .from
            .as_ref()
            .or(global.smtp_from.as_ref())
            .ok_or_else(|| format!("{}: give from or global.smtp_from", what("from")))?;
        if config.to.0.is_empty() {
            return Err(format!("{}: give at least one address", what("to")));
        }
        for address in config.to.0.iter().filter(|a| !a.contains("{{")) {
            address
                .parse::<Mailbox>()
                .map_err(|e| format!("{}: {address:?}: {e}", what("to")))?;
        }
        if !from.contains("{{") {
            from.parse::<Mailbox>()
                .map_err(|e| format!("{}: {e}", what("from")))?;
        }
        let (host, port, security, require_tls) = endpoint(config, global, &what)?;
        let tls_config = config.tls_config.clone().unwrap_or_default();
        if config.ca_file.is_some() && tls_config.ca_file.is_some() {
            return Err(format!(
                "{}: give ca_file or tls_config.ca_file, not both",
                what("ca_file")
            ));
        }
        if tls_config.cert_file.is_some() || tls_config.key_file.is_some() {
            return Err(format!(
                "{}: client certificates are not supported for SMTP",
                what("tls_config.cert_file")
            ));
        }
        if tls_config.min_version.is_some() || tls_config.max_version.is_some() {
            return Err(format!(
                "{}: TLS versions cannot be chosen for SMTP",
                what("tls_config.min_version")
            ));
        }
        let server_name = tls_config.server_name.clone().unwrap_or(host.clone());
        let ca_file = config.ca_file.as_ref().or(tls_config.ca_file.as_ref());
        let tls = || -> Result<TlsParameters, String> {
            let mut builder = TlsParameters::builder(server_name.clone())
                .dangerous_accept_invalid_certs(tls_config.insecure_skip_verify);
            if let Some(path) = ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("{}: cannot read {}: {e}", what("ca_file"), path.display())
                })?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| format!("{}: {}: {e}", what("ca_file"), path.display()))?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| format!("{}: TLS setup: {e}", what("smarthost")))
        };
        let hello = config
            .hello
            .as_ref()
            .or(global.smtp_hello.as_ref())
            .cloned()
            .unwrap_or_else(|| "localhost".into());
        let mut transport = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
            .port(port)
            .hello_name(ClientId::Domain(hello))
            .timeout(Some(attempt_timeout(config.timeout)))
            .tls(match security {
                SmtpSecurity::Starttls if require_tls => Tls::Required(tls()?),
                SmtpSecurity::Starttls => Tls::Opportunistic(tls()?),
                SmtpSecurity::Tls => Tls::Wrapper(tls()?),
                SmtpSecurity::None => Tls::None,
            });
        let own_user = config.auth_username.is_some();
        let user = config
            .auth_username
            .as_ref()
            .or(global.smtp_auth_username.as_ref());
        if let Some(user) = user {
            let identity = if own_user {
                config.auth_identity.as_ref()
            } else {
                global.smtp_auth_identity.as_ref()
            };
            if identity.is_some_and(|i| !i.is_empty() && i != user) {
                return Err(format!(
                    "{}: torchwatch authenticates as the user name; an identity other than it is \
                     not supported",
                    what("auth_identity")
                ));
            }
            let password = if own_user {
                config::resolve_secret(
                    &config.auth_password,
                    &config.auth_password_file,
                    &config.auth_password_env,
                    &what("auth_password"),
                )?
            } else {
                config::resolve_secret(
                    &global.smtp_auth_password,
                    &global.smtp_auth_password_file,
                    &None,
                    &what("global.smtp_auth_password"),
                )?
            }
            .ok_or_else(|| format!("{}: auth_username needs a password", what("auth_password")))?;
            transport = transport.credentials(Credentials::new(
                user.clone(),
                password.expose().to_string(),
            ));
        }
        let am = context.alertmanager_defaults();
        let mut headers = config.headers.clone();
        let mut take = |name: &str| {
            let key = headers
                .keys()
                .find(|k| k.eq_ignore_ascii_case(name))
                .cloned();
            key.and_then(|k| headers.remove(&k))
        };
        let subject_header = take("Subject");
        let to_header = take("To");
        let from_header = take("From");
        if config.subject.is_some() && subject_header.is_some() {
            return Err(format!(
                "{}: give subject or headers.Subject, not both",
                what("subject")
            ));
        }
        let subject = config
            .subject
            .clone()
            .or(subject_header)
            .unwrap_or_else(|| {
                if am {
                    ALERTMANAGER_SUBJECT
                } else {
                    TORCHWATCH_SUBJECT
                }
                .into()
            });
        let text = config
            .text
            .clone()
            .or_else(|| (!am).then(|| TORCHWATCH_TEXT.to_string()));
        let html = config
            .html
            .clone()
            .or_else(|| am.then(|| ALERTMANAGER_HTML.to_string()));
        Ok(Email {
            transport: transport.build(),
            from: context.text(&from_header.unwrap_or(from.clone()), &what("from"))?,
            to: context.text(&to_header.unwrap_or(config.to.0.join(", ")), &what("to"))?,
            subject: context.text(&subject, &what("subject"))?,
            headers: headers
                .iter()
                .map(|(name, value)| {
                    Ok((
                        name.clone(),
                        context.text(value, &what(&format!("headers.{name}")))?,
                    ))
                })
                .collect::<Result<_, String>>()?,
            text: text.map(|t| context.text(&t, &what("text"))).transpose()?,
            html: html.map(|t| context.html(&t, &what("html"))).transpose()?,
            alert_list: !am,
            send_resolved: config.send_resolved,
        })
    }

    /// The email for `message`: templated headers, a text and an HTML part as configured
    /// (both as alternatives of one another, as Alertmanager sends them).
    pub fn compose(&self, message: &Message) -> Result<lettre::Message, String> {
        let data = message.template_data();
        let mut text = self.text.as_ref().map(|t| t.render(&data));
        if self.alert_list
            && let Some(text) = &mut text
        {
            text.push_str("\n\nAlerts:\n");
            for a in &message.alerts {
                let state = match a.ends_at {
                    Some(end) => format!("resolved at {}", rfc3339(end)),
                    None => format!("firing since {}", rfc3339(a.starts_at)),
                };
                text.push_str(&format!("- {} {state}\n", a.labels));
            }
            text.push_str(&format!("\n{}\n", message.external_url));
        }
        let from = self.from.render(&data);
        let mut builder = lettre::Message::builder()
            .from(
                from.parse::<Mailbox>()
                    .map_err(|e| format!("from {from:?}: {e}"))?,
            )
            .subject(self.subject.render(&data));
        for address in self.to.render(&data).split(',').map(str::trim) {
            if address.is_empty() {
                continue;
            }
            builder = builder.to(address
                .parse::<Mailbox>()
                .map_err(|e| format!("to {address:?}: {e}"))?);
        }
        let mut built = match (text, self.html.as_ref().map(|h| h.render(&data))) {
            (Some(text), Some(html)) => {
                builder.multipart(MultiPart::alternative_plain_html(text, html))
            }
            (None, Some(html)) => builder.singlepart(SinglePart::html(html)),
            (text, None) => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text.unwrap_or_default()),
            ),
        }
        .map_err(|e| format!("cannot build the email: {e}"))?;
        for (name, value) in &self.headers {
            let name = HeaderName::new_from_ascii(name.clone())
                .map_err(|e| format!("header {name:?}: {e}"))?;
            built
                .headers_mut()
                .insert_raw(HeaderValue::new(name, value.render(&data)));
        }
        Ok(built)
    }
}

impl Notifier for Email {
    fn integration(&self) -> &'static str {
        "email"
    }

    fn send_resolved(&self) -> bool {
        self.send_resolved
    }

    fn notify<'a>(&'a self, message: &'a Message) -> SendFuture<'a> {
        Box::pin(async move {
            let email = self.compose(message).map_err(|message| SendError {
                message,
                retryable: false,
                retry_after: None,
            })?;
            self.transport
                .send(email)
                .await
                .map(|_| ())
                .map_err(|e| SendError {
                    // lettre's messages hold the server's reply, never the credentials.
                    message: format!("SMTP: {e}"),
                    retryable: !e.is_permanent(),
                    retry_after: None,
                })
        })
    }
}
