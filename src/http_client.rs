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
        let mut builder = with_tls(reqwest::Client::builder(), config.tls_config.as_ref(), what)?;
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

/// `builder` with Prometheus' `tls_config` applied when there is one; `what` names the section
/// in errors.
pub fn with_tls(
    builder: reqwest::ClientBuilder,
    tls: Option<&TlsConfig>,
    what: &str,
) -> Result<reqwest::ClientBuilder, String> {
    match tls {
        Some(tls) => Ok(builder
            .use_preconfigured_tls(crate::tls::client_config(tls, &field(what, "tls_config"))?)),
        None => Ok(builder),
    }
}
