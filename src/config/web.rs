//! The web configuration file of Prometheus' exporter-toolkit (`--web.config.file`), which
//! Prometheus, Alertmanager and node_exporter read: TLS for the listeners, basic-auth users with
//! bcrypt hashes, extra response headers and a request rate limit. Files written for those
//! work here unchanged; what torchwatch's TLS library cannot do is refused with the field named.

use super::{PromDuration, Secret, yaml_error};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct WebConfig {
    /// TLS for every listener; plain HTTP when absent.
    pub tls_server_config: Option<TlsServerConfig>,
    /// `http2` and the extra response headers.
    pub http_server_config: HttpServerConfig,
    /// User name → bcrypt hash; when not empty every request must authenticate.
    pub basic_auth_users: BTreeMap<String, Secret>,
    /// A token bucket over all requests; 429 past it.
    pub rate_limit: Option<RateLimit>,
}

/// `tls_server_config:`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct TlsServerConfig {
    /// The certificate chain, PEM, inline.
    pub cert: Option<String>,
    /// The private key, PEM, inline.
    pub key: Option<Secret>,
    /// CAs for client certificates, PEM, inline.
    pub client_ca: Option<String>,
    /// The certificate chain, PEM.
    pub cert_file: Option<PathBuf>,
    /// The private key, PEM.
    pub key_file: Option<PathBuf>,
    /// Go's `tls.ClientAuthType` by name; `NoClientCert` when absent.
    pub client_auth_type: Option<String>,
    /// CAs for client certificates, PEM.
    pub client_ca_file: Option<PathBuf>,
    /// A client certificate must carry one of these SANs exactly.
    pub client_allowed_sans: Option<Vec<String>>,
    /// `TLS12` when absent.
    pub min_version: Option<String>,
    /// `TLS13` when absent.
    pub max_version: Option<String>,
    /// TLS 1.2 cipher suites by Go's names, in preference order.
    pub cipher_suites: Vec<String>,
    /// Use the server's order of `cipher_suites` rather than the client's.
    pub prefer_server_cipher_suites: Option<bool>,
    /// Key-exchange groups by Go's names, in preference order.
    pub curve_preferences: Vec<String>,
}

/// `http_server_config:`.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct HttpServerConfig {
    /// Offer HTTP/2; torchwatch speaks HTTP/1.1, which every HTTP/2 client also speaks, so the
    /// offer is only ever declined (ALPN says `http/1.1`).
    pub http2: bool,
    /// Extra response headers, from exporter-toolkit's fixed list.
    pub headers: BTreeMap<String, String>,
}

impl Default for HttpServerConfig {
    fn default() -> Self {
        HttpServerConfig {
            http2: true,
            headers: BTreeMap::new(),
        }
    }
}

/// `rate_limit:`.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Time between two requests; 0 turns the limiter off.
    pub interval: PromDuration,
    /// Requests allowed at once above the steady rate.
    #[serde(default)]
    pub burst: u32,
}

/// The headers exporter-toolkit lets a file set, with the values it accepts (any when empty).
const EXTRA_HEADERS: [(&str, &[&str]); 5] = [
    ("Strict-Transport-Security", &[]),
    ("X-Content-Type-Options", &["nosniff"]),
    ("X-Frame-Options", &["deny", "sameorigin"]),
    ("X-XSS-Protection", &[]),
    ("Content-Security-Policy", &[]),
];

impl WebConfig {
    /// Reads and checks `path`; relative certificate paths are relative to it. Errors name the
    /// file (with line and column for YAML errors) and never hold a key or a hash.
    pub fn load(path: &Path) -> Result<WebConfig, String> {
        let origin = path.display().to_string();
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("{origin}: cannot read the web config file: {e}"))?;
        let mut config: WebConfig = if text.trim().is_empty() {
            WebConfig::default()
        } else {
            serde_saphyr::from_str(&text).map_err(|e| yaml_error(&origin, &e))?
        };
        config.check().map_err(|e| format!("{origin}: {e}"))?;
        if let Some(tls) = &mut config.tls_server_config {
            let base = path.parent().unwrap_or(Path::new(""));
            for file in [
                &mut tls.cert_file,
                &mut tls.key_file,
                &mut tls.client_ca_file,
            ]
            .into_iter()
            .flatten()
            {
                if file.is_relative() {
                    *file = base.join(&*file);
                }
            }
        }
        Ok(config)
    }

    fn check(&self) -> Result<(), String> {
        for (name, value) in &self.http_server_config.headers {
            let Some((_, allowed)) = EXTRA_HEADERS.iter().find(|(h, _)| h == name) else {
                return Err(format!(
                    "http_server_config.headers: HTTP header {name:?} can not be configured; \
                     the ones that can are {}",
                    EXTRA_HEADERS.map(|(h, _)| h).join(", ")
                ));
            };
            if !allowed.is_empty() && !allowed.contains(&value.as_str()) {
                return Err(format!(
                    "http_server_config.headers: invalid value for {name}. Expected one of: \
                     {allowed:?}, but got: {value:?}"
                ));
            }
            if axum::http::HeaderValue::from_str(value).is_err() {
                return Err(format!(
                    "http_server_config.headers.{name}: the value holds characters a header cannot"
                ));
            }
        }
        for (user, hash) in &self.basic_auth_users {
            hash.expose().parse::<bcrypt::HashParts>().map_err(|_| {
                format!(
                    "basic_auth_users.{user}: not a bcrypt hash (make one with \
                     `htpasswd -nBC 10 \"\" | tr -d ':\\n'`)"
                )
            })?;
        }
        let Some(tls) = &self.tls_server_config else {
            return Ok(());
        };
        if tls.cert.is_some() && tls.cert_file.is_some() {
            return Err("tls_server_config: give cert or cert_file, not both".into());
        }
        if tls.key.is_some() && tls.key_file.is_some() {
            return Err("tls_server_config: give key or key_file, not both".into());
        }
        if tls.client_ca.is_some() && tls.client_ca_file.is_some() {
            return Err("tls_server_config: give client_ca or client_ca_file, not both".into());
        }
        if tls.cert.is_none() && tls.cert_file.is_none() {
            return Err("tls_server_config: missing one of cert or cert_file".into());
        }
        if tls.key.is_none() && tls.key_file.is_none() {
            return Err("tls_server_config: missing one of key or key_file".into());
        }
        Ok(())
    }
}
