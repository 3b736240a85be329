//! Outgoing HTTP clients from Prometheus' common `http_config` (TLS settings and credentials),
//! so receivers honour what users wrote for Alertmanager.

use crate::config::{self, HttpClientConfig, Secret, TlsConfig};
use reqwest::header::{AUTHORIZATION, HeaderValue};

/// A client with its credentials; the credentials never appear in `Debug` or errors.
#[derive(Clone)]
pub struct HttpClient {
    client: reqwest::Client,
    credentials: Option<Credentials>,
}

#[derive(Clone, Hash)]
enum Credentials {
    Basic { username: String, password: Secret },
    Bearer(HeaderValue),
}

/// Hashes the credentials (the only part that is data), so a changed password or token file
/// shows as a changed client.
impl std::hash::Hash for HttpClient {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.credentials.hash(state);
    }
}

impl HttpClient {
    /// A POST with the configured credentials.
    pub fn post(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorize(self.client.post(url))
    }

    /// A GET with the configured credentials.
    pub fn get(&self, url: &str) -> reqwest::RequestBuilder {
        self.authorize(self.client.get(url))
    }

    fn authorize(&self, request: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.credentials {
            Some(Credentials::Basic { username, password }) => {
                request.basic_auth(username, Some(password.expose()))
            }
            Some(Credentials::Bearer(value)) => request.header(AUTHORIZATION, value.clone()),
            None => request,
        }
    }

    /// Builds the client `config` describes; `shared` is used as it is when there is none.
    /// `what` names the field in errors.
    pub fn build(
        config: Option<&HttpClientConfig>,
        shared: &reqwest::Client,
        what: &str,
    ) -> Result<HttpClient, String> {
        match config {
            Some(config) => HttpClient::from_config(config, what),
            None => Ok(HttpClient {
                client: shared.clone(),
                credentials: None,
            }),
        }
    }

    /// A client of its own for `config`; `what` names the field in errors.
    pub fn from_config(config: &HttpClientConfig, what: &str) -> Result<HttpClient, String> {
        let mut builder = reqwest::Client::builder();
        if let Some(tls) = &config.tls_config {
            builder = with_tls(builder, tls, &field(what, "tls_config"))?;
        }
        if config.follow_redirects == Some(false) {
            builder = builder.redirect(reqwest::redirect::Policy::none());
        }
        let client = builder
            .build()
            .map_err(|e| format!("{}cannot build the HTTP client: {e}", prefix(what)))?;
        Ok(HttpClient {
            client,
            credentials: credentials(config, what)?,
        })
    }
}

/// The one credential given.
fn credentials(config: &HttpClientConfig, what: &str) -> Result<Option<Credentials>, String> {
    let given = [
        config.basic_auth.is_some(),
        config.authorization.is_some(),
        config.bearer_token.is_some() || config.bearer_token_file.is_some(),
    ];
    if given.iter().filter(|g| **g).count() > 1 {
        return Err(format!(
            "{}give at most one of basic_auth, authorization and bearer_token",
            prefix(what)
        ));
    }
    let header = |scheme: &str, token: Secret| {
        let mut value = HeaderValue::from_str(&format!("{scheme} {}", token.expose()))
            .map_err(|_| format!("{}the token holds characters a header cannot", prefix(what)))?;
        value.set_sensitive(true);
        Ok(Some(Credentials::Bearer(value)))
    };
    if let Some(basic) = &config.basic_auth {
        let password = config::resolve_secret(
            &basic.password,
            &basic.password_file,
            &basic.password_env,
            &field(what, "basic_auth.password"),
        )?
        .unwrap_or_default();
        return Ok(Some(Credentials::Basic {
            username: basic.username.clone(),
            password,
        }));
    }
    if let Some(auth) = &config.authorization {
        let credentials = config::resolve_secret(
            &auth.credentials,
            &auth.credentials_file,
            &auth.credentials_env,
            &field(what, "authorization.credentials"),
        )?
        .ok_or_else(|| {
            format!(
                "{}: give credentials or credentials_file",
                field(what, "authorization")
            )
        })?;
        return header(auth.kind.as_deref().unwrap_or("Bearer"), credentials);
    }
    if let Some(token) = config::resolve_secret(
        &config.bearer_token,
        &config.bearer_token_file,
        &None,
        &field(what, "bearer_token"),
    )? {
        return header("Bearer", token);
    }
    Ok(None)
}

/// `what.name`, or `name` alone at the top of a section.
fn field(what: &str, name: &str) -> String {
    if what.is_empty() {
        name.to_string()
    } else {
        format!("{what}.{name}")
    }
}

/// `what: `, or nothing at the top of a section.
fn prefix(what: &str) -> String {
    if what.is_empty() {
        String::new()
    } else {
        format!("{what}: ")
    }
}

fn tls_version(text: &str, field: &str) -> Result<reqwest::tls::Version, String> {
    match text {
        "TLS12" => Ok(reqwest::tls::Version::TLS_1_2),
        "TLS13" => Ok(reqwest::tls::Version::TLS_1_3),
        "TLS10" | "TLS11" => Err(format!(
            "{field}: {text} is not offered by torchwatch's TLS library; use TLS12 or TLS13"
        )),
        other => Err(format!("{field}: {other:?} is not one of TLS12, TLS13")),
    }
}

/// `builder` with Prometheus' `tls_config` applied; `what` names the field in errors.
pub fn with_tls(
    mut builder: reqwest::ClientBuilder,
    tls: &TlsConfig,
    what: &str,
) -> Result<reqwest::ClientBuilder, String> {
    let read = |path: &std::path::Path, field: &str| {
        std::fs::read(path)
            .map_err(|e| format!("{what}.{field}: cannot read {}: {e}", path.display()))
    };
    if let Some(path) = &tls.ca_file {
        let pem = read(path, "ca_file")?;
        let certificates = reqwest::Certificate::from_pem_bundle(&pem)
            .map_err(|e| format!("{what}.ca_file: {}: {e}", path.display()))?;
        if certificates.is_empty() {
            return Err(format!(
                "{what}.ca_file: {}: no PEM certificate in it",
                path.display()
            ));
        }
        // Prometheus trusts only the given CAs when ca_file is set.
        builder = builder.tls_certs_only(certificates);
    }
    match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let mut pem = read(cert, "cert_file")?;
            pem.push(b'\n');
            pem.extend(read(key, "key_file")?);
            let identity = reqwest::Identity::from_pem(&pem)
                .map_err(|e| format!("{what}: cert_file and key_file: {e}"))?;
            builder = builder.identity(identity);
        }
        (None, None) => {}
        _ => return Err(format!("{what}: give cert_file and key_file together")),
    }
    if tls.server_name.is_some() {
        return Err(format!(
            "{what}.server_name: not supported for this client; connect by the name the \
             certificate carries"
        ));
    }
    if tls.insecure_skip_verify {
        builder = builder.tls_danger_accept_invalid_certs(true);
    }
    if let Some(v) = &tls.min_version {
        builder = builder.tls_version_min(tls_version(v, &format!("{what}.min_version"))?);
    }
    if let Some(v) = &tls.max_version {
        builder = builder.tls_version_max(tls_version(v, &format!("{what}.max_version"))?);
    }
    Ok(builder)
}
