//! The email receiver: SMTP through lettre with STARTTLS, implicit TLS or a
//! plain connection, AUTH with a password from the config, a file or the
//! environment, and templated subject, text and HTML bodies.

use super::{Message, Notifier, SendError, SendFuture, attempt_timeout};
use crate::clock::rfc3339;
use crate::config::{self, EmailConfig, SmtpSecurity};
use crate::template::{TemplateSet, expand_notification_or_error};
use lettre::message::{Mailbox, MultiPart, SinglePart, header::ContentType};
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

/// One email receiver.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    config: EmailConfig,
}

impl Email {
    /// Resolves the password, reads the CA and checks addresses and templates
    /// now (start or reload).
    pub fn new(config: &EmailConfig, receiver: &str) -> Result<Email, String> {
        let what = |field: &str| format!("receiver {receiver}: email {field}");
        let from: Mailbox = config
            .from
            .parse()
            .map_err(|e| format!("{}: {e}", what("from")))?;
        let to = config
            .to
            .iter()
            .map(|a| {
                a.parse::<Mailbox>()
                    .map_err(|e| format!("{}: {a:?}: {e}", what("to")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        if to.is_empty() {
            return Err(format!("{}: give at least one address", what("to")));
        }
        for (field, text) in [
            ("subject", Some(&config.subject)),
            ("text", Some(&config.text)),
            ("html", config.html.as_ref()),
        ] {
            if let Some(text) = text {
                TemplateSet::with_defaults()
                    .compile(text)
                    .map_err(|e| format!("{}: {e}", what(field)))?;
            }
        }
        let tls = || -> Result<TlsParameters, String> {
            let mut builder = TlsParameters::builder(config.host.clone());
            if let Some(path) = &config.ca_file {
                let pem = std::fs::read(path).map_err(|e| {
                    format!("{}: cannot read {}: {e}", what("ca_file"), path.display())
                })?;
                let cert = Certificate::from_pem(&pem)
                    .map_err(|e| format!("{}: {}: {e}", what("ca_file"), path.display()))?;
                builder = builder.add_root_certificate(cert);
            }
            builder
                .build_rustls()
                .map_err(|e| format!("{}: TLS setup: {e}", what("host")))
        };
        let mut transport =
            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(config.host.clone())
                .port(config.port)
                .timeout(Some(attempt_timeout(config.timeout)))
                .tls(match config.security {
                    SmtpSecurity::Starttls => Tls::Required(tls()?),
                    SmtpSecurity::Tls => Tls::Wrapper(tls()?),
                    SmtpSecurity::None => Tls::None,
                });
        if let Some(user) = &config.auth_username {
            let password = config::resolve_secret(
                &config.auth_password,
                &config.auth_password_file,
                &config.auth_password_env,
                &what("auth_password"),
            )?
            .ok_or_else(|| format!("{}: auth_username needs a password", what("auth_password")))?;
            transport = transport.credentials(Credentials::new(user.clone(), password));
        }
        Ok(Email {
            transport: transport.build(),
            from,
            to,
            config: config.clone(),
        })
    }

    /// The email for `message`: templated subject and text (followed by a list
    /// of the alerts, which templates cannot loop over), and the HTML
    /// alternative when configured.
    pub fn compose(&self, message: &Message) -> Result<lettre::Message, String> {
        let data = message.template_data();
        let mut text = expand_notification_or_error(&self.config.text, &data);
        text.push_str("\n\nAlerts:\n");
        for a in &message.alerts {
            let state = match a.ends_at {
                Some(end) => format!("resolved at {}", rfc3339(end)),
                None => format!("firing since {}", rfc3339(a.starts_at)),
            };
            text.push_str(&format!("- {} {state}\n", a.labels));
        }
        text.push_str(&format!("\n{}\n", message.external_url));
        let mut builder = lettre::Message::builder()
            .from(self.from.clone())
            .subject(expand_notification_or_error(&self.config.subject, &data));
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        let built = match &self.config.html {
            Some(html) => builder.multipart(MultiPart::alternative_plain_html(
                text,
                expand_notification_or_error(html, &data),
            )),
            None => builder.singlepart(
                SinglePart::builder()
                    .header(ContentType::TEXT_PLAIN)
                    .body(text),
            ),
        };
        built.map_err(|e| format!("cannot build the email: {e}"))
    }
}

impl Notifier for Email {
    fn integration(&self) -> &'static str {
        "email"
    }

    fn send_resolved(&self) -> bool {
        self.config.send_resolved
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
