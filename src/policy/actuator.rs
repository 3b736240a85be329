//! What carries a scale decision out: a served model's instances, a webhook, or a command (say
//! `kubectl scale`). Without one a policy only recommends (KEDA or an HPA can read it).

use std::sync::{Arc, OnceLock, Weak};
use std::time::Duration;

use crate::config::ActuatorConfig;
use crate::serve::Registry;

use super::Replicas;

/// The served models, once they exist: policies are loaded (and refused) before models start
/// loading, so the registry arrives later. Weak, so shutdown can still take the registry back.
#[derive(Default)]
pub struct Models(OnceLock<Weak<Registry>>);

impl Models {
    /// Hands over the registry once it exists.
    pub fn set(&self, registry: &Arc<Registry>) {
        let _ = self.0.set(Arc::downgrade(registry));
    }

    fn registry(&self) -> Result<Arc<Registry>, String> {
        self.0
            .get()
            .and_then(Weak::upgrade)
            .ok_or_else(|| "the models are not loaded yet (or shutting down)".to_string())
    }
}

/// A configured actuator, ready to act.
pub enum Actuator {
    /// Recommend only.
    None,
    /// In-process instances of a served model.
    Model {
        /// The model.
        name: String,
        /// Where it is served.
        models: Arc<Models>,
    },
    /// POST the decision as JSON.
    Webhook {
        /// The URL (a secret: never logged).
        url: crate::config::Secret,
        /// Shared client.
        client: reqwest::Client,
        /// Per attempt.
        timeout: Duration,
    },
    /// Run a program.
    Command {
        /// Program and arguments, with placeholders.
        argv: Vec<String>,
        /// Per attempt.
        timeout: Duration,
    },
}

const PLACEHOLDERS: [&str; 3] = ["Replicas", "From", "Policy"];

fn placeholder_regex() -> &'static regex::Regex {
    static RE: OnceLock<regex::Regex> = OnceLock::new();
    RE.get_or_init(|| regex::Regex::new(r"\{\{\s*\.(\w+)\s*\}\}").expect("a valid regex"))
}

/// Checks what the schema cannot: at most one kind, complete settings, known placeholders.
pub(super) fn validate(config: &ActuatorConfig) -> Result<(), String> {
    let kinds = [
        config.model.is_some(),
        config.webhook.is_some(),
        config.command.is_some(),
    ];
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err("give at most one of model, webhook and command".into());
    }
    if config.attempts == 0 {
        return Err("attempts: must be at least 1".into());
    }
    if config.timeout.millis() <= 0 {
        return Err("timeout: must be longer than 0s".into());
    }
    if let Some(w) = &config.webhook
        && w.url.is_some() == w.url_file.is_some()
    {
        return Err("webhook: give exactly one of url and url_file".into());
    }
    if let Some(argv) = &config.command {
        if argv.first().is_none_or(|p| p.is_empty()) {
            return Err("command: give the program and its arguments".into());
        }
        for arg in argv {
            for captures in placeholder_regex().captures_iter(arg) {
                if !PLACEHOLDERS.contains(&&captures[1]) {
                    return Err(format!(
                        "command: unknown placeholder {{{{ .{} }}}}; use .Replicas, .From or .Policy",
                        &captures[1]
                    ));
                }
            }
        }
    }
    Ok(())
}

impl Actuator {
    /// Builds the actuator; secrets (the webhook URL) are read now, so a missing one fails the
    /// load or reload.
    pub fn build(
        config: &ActuatorConfig,
        models: &Arc<Models>,
        client: &reqwest::Client,
    ) -> Result<Actuator, String> {
        let timeout = Duration::from_millis(config.timeout.millis() as u64);
        if let Some(name) = &config.model {
            return Ok(Actuator::Model {
                name: name.clone(),
                models: models.clone(),
            });
        }
        if let Some(w) = &config.webhook {
            let url = crate::notify::secret_url(&w.url, &w.url_file, &None, "actuator.webhook")?;
            return Ok(Actuator::Webhook {
                url,
                client: client.clone(),
                timeout,
            });
        }
        if let Some(argv) = &config.command {
            return Ok(Actuator::Command {
                argv: argv.clone(),
                timeout,
            });
        }
        Ok(Actuator::None)
    }

    /// `model`, `webhook`, `command` or `none`, for logs and the API.
    pub fn kind(&self) -> &'static str {
        match self {
            Actuator::None => "none",
            Actuator::Model { .. } => "model",
            Actuator::Webhook { .. } => "webhook",
            Actuator::Command { .. } => "command",
        }
    }

    /// True for actuators that know the real count (model instances): without it, no decision.
    pub fn knows_count(&self) -> bool {
        matches!(self, Actuator::Model { .. })
    }

    /// The count the actuator itself knows, when it knows one (model instances).
    pub fn replicas(&self) -> Option<Replicas> {
        let Actuator::Model { name, models } = self else {
            return None;
        };
        let registry = models.registry().ok()?;
        let service = registry.get(name)?;
        Some(Replicas {
            current: service.instance_target() as u32,
            ready: service.instances() as u32,
        })
    }

    /// One attempt at changing the count `from` → `to`.
    pub async fn apply(
        &self,
        policy: &str,
        from: u32,
        to: u32,
        reason: &str,
        time_ms: i64,
    ) -> Result<(), String> {
        match self {
            Actuator::None => Ok(()),
            Actuator::Model { name, models } => {
                let registry = models.registry()?;
                let service = registry
                    .get(name)
                    .ok_or_else(|| format!("model {name:?} is not served"))?;
                // During shutdown no new instance may start: the server is waiting for them.
                if !service.is_ready() {
                    return Err(format!(
                        "model {name:?} is not ready (loading or shutting down)"
                    ));
                }
                service.scale_instances(to as usize)
            }
            Actuator::Webhook {
                url,
                client,
                timeout,
            } => {
                let body = serde_json::json!({
                    "policy": policy,
                    "from": from,
                    "to": to,
                    "reason": reason,
                    "time": crate::clock::rfc3339(time_ms),
                });
                crate::notify::post_json(client.post(url.expose()), *timeout, &body)
                    .await
                    .map_err(|e| e.message)
            }
            Actuator::Command { argv, timeout } => {
                let expand = |arg: &String| {
                    placeholder_regex()
                        .replace_all(arg, |c: &regex::Captures| match &c[1] {
                            "Replicas" => to.to_string(),
                            "From" => from.to_string(),
                            _ => policy.to_string(),
                        })
                        .into_owned()
                };
                let mut command = tokio::process::Command::new(&argv[0]);
                command
                    .args(argv[1..].iter().map(expand))
                    .stdin(std::process::Stdio::null())
                    .kill_on_drop(true);
                let output = tokio::time::timeout(*timeout, command.output())
                    .await
                    .map_err(|_| format!("{} timed out after {timeout:?}", argv[0]))?
                    .map_err(|e| format!("cannot run {}: {e}", argv[0]))?;
                if output.status.success() {
                    return Ok(());
                }
                let stderr = String::from_utf8_lossy(&output.stderr);
                let last = stderr.lines().rev().find(|l| !l.trim().is_empty());
                Err(format!(
                    "{} exited with {}{}",
                    argv[0],
                    output.status,
                    last.map(|l| format!(": {}", l.trim())).unwrap_or_default()
                ))
            }
        }
    }
}
