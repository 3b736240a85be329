//! Where rule queries run: the built-in engine over the built-in store, or any
//! Prometheus-compatible query API (Prometheus, Thanos, Mimir, VictoriaMetrics),
//! the way vmalert does.

use super::RuleError;
use crate::config::{self, DatasourceConfig};
use crate::promql::{self, Sample};
use crate::storage::{Labels, Storage};
use promql_parser::parser::Expr;
use std::sync::Arc;
use std::time::Duration;

/// Runs a rule's query.
pub trait QueryFn: Send + Sync {
    /// Evaluates `expr` (also given as text, for remote APIs) at `t` ms and
    /// returns an instant vector (a scalar becomes one label-less sample).
    fn query(&self, expr: &Expr, text: &str, t: i64) -> Result<Vec<Sample>, RuleError>;
}

/// The built-in engine over the built-in store.
pub struct LocalQuery {
    /// Engine settings.
    pub engine: promql::Engine,
    /// The store.
    pub storage: Arc<Storage>,
}

impl QueryFn for LocalQuery {
    fn query(&self, expr: &Expr, _text: &str, t: i64) -> Result<Vec<Sample>, RuleError> {
        match self.engine.instant(&self.storage.view(), expr, t) {
            Ok(promql::Value::Vector(v)) => Ok(v),
            Ok(promql::Value::Scalar(v)) => Ok(vec![Sample {
                labels: Labels::default(),
                v,
            }]),
            Ok(_) => Err(RuleError("rule result is not a vector or scalar".into())),
            Err(e) => Err(RuleError(e.0)),
        }
    }
}

/// A remote `/api/v1/query`. Queries block the calling thread, so call it from
/// a blocking task (the rule manager does).
pub struct RemoteQuery {
    client: reqwest::Client,
    url: String,
    timeout: Duration,
    auth: Option<(String, Option<config::Secret>)>,
    bearer: Option<config::Secret>,
    runtime: tokio::runtime::Handle,
}

impl RemoteQuery {
    /// Builds the client; secrets are resolved now so a missing one fails at start.
    pub fn new(config: &DatasourceConfig, runtime: tokio::runtime::Handle) -> Result<Self, String> {
        let auth = match &config.basic_auth {
            Some(b) => Some((
                b.username.clone(),
                config::resolve_secret(
                    &b.password,
                    &b.password_file,
                    &b.password_env,
                    "rules.datasource.basic_auth password",
                )?,
            )),
            None => None,
        };
        let bearer = match &config.authorization {
            // `type` exists for scrape configs; the query API takes a bearer token.
            Some(a)
                if a.kind
                    .as_deref()
                    .is_some_and(|k| !k.eq_ignore_ascii_case("bearer")) =>
            {
                return Err(
                    "rules.datasource.authorization.type: only Bearer is supported here".into(),
                );
            }
            Some(a) => config::resolve_secret(
                &a.credentials,
                &a.credentials_file,
                &a.credentials_env,
                "rules.datasource.authorization credentials",
            )?,
            None => None,
        };
        let builder = crate::http_client::with_tls(
            reqwest::Client::builder(),
            config.tls_config.as_ref(),
            "rules.datasource",
        )?;
        let client = builder
            .build()
            .map_err(|e| format!("rules.datasource: cannot build an HTTP client: {e}"))?;
        Ok(Self {
            client,
            url: format!("{}/api/v1/query", config.url.trim_end_matches('/')),
            timeout: Duration::from_millis(config.timeout.millis() as u64),
            auth,
            bearer,
            runtime,
        })
    }

    async fn fetch(&self, text: &str, t: i64) -> Result<Vec<Sample>, RuleError> {
        let time = format!("{:.3}", t as f64 / 1000.0);
        let mut request = self
            .client
            .post(&self.url)
            .timeout(self.timeout)
            .form(&[("query", text), ("time", &time)]);
        if let Some((user, password)) = &self.auth {
            request = request.basic_auth(user, password.as_ref().map(config::Secret::expose));
        }
        if let Some(token) = &self.bearer {
            request = request.bearer_auth(token.expose());
        }
        let response = request
            .send()
            .await
            .map_err(|e| RuleError(format!("datasource: {}", e.without_url())))?;
        let status = response.status();
        let body: serde_json::Value = response.json().await.map_err(|e| {
            RuleError(format!(
                "datasource: HTTP {status}: unreadable response: {}",
                e.without_url()
            ))
        })?;
        parse_response(&body).map_err(|e| RuleError(format!("datasource: {e}")))
    }
}

impl QueryFn for RemoteQuery {
    fn query(&self, _expr: &Expr, text: &str, t: i64) -> Result<Vec<Sample>, RuleError> {
        self.runtime.block_on(self.fetch(text, t))
    }
}

/// Reads Prometheus' query API JSON: a vector or a scalar.
fn parse_response(body: &serde_json::Value) -> Result<Vec<Sample>, String> {
    if body["status"] != "success" {
        return Err(format!(
            "{}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"]
                .as_str()
                .unwrap_or("query failed without a message")
        ));
    }
    let value = |pair: &serde_json::Value| -> Result<f64, String> {
        pair.get(1)
            .and_then(|v| v.as_str())
            .and_then(parse_api_float)
            .ok_or_else(|| format!("unreadable sample value {pair}"))
    };
    let data = &body["data"];
    match data["resultType"].as_str() {
        Some("scalar") => Ok(vec![Sample {
            labels: Labels::default(),
            v: value(&data["result"])?,
        }]),
        Some("vector") => data["result"]
            .as_array()
            .ok_or("vector result is not a list")?
            .iter()
            .map(|item| {
                let labels =
                    item["metric"]
                        .as_object()
                        .map(|m| {
                            Labels::from_pairs(m.iter().map(|(k, v)| {
                                (k.clone(), v.as_str().unwrap_or_default().to_string())
                            }))
                        })
                        .unwrap_or_default();
                Ok(Sample {
                    labels,
                    v: value(&item["value"])?,
                })
            })
            .collect(),
        other => Err(format!(
            "rule result is not a vector or scalar (got {other:?})"
        )),
    }
}

/// The API's float strings: Go's formatting, incl. `NaN` and `±Inf`.
pub(crate) fn parse_api_float(s: &str) -> Option<f64> {
    match s {
        "NaN" => Some(f64::NAN),
        "+Inf" | "Inf" => Some(f64::INFINITY),
        "-Inf" => Some(f64::NEG_INFINITY),
        _ => s.parse().ok(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_vectors_scalars_and_errors() {
        let v: serde_json::Value = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"vector","result":[{"metric":{"__name__":"up","job":"a"},"value":[1700000000,"+Inf"]}]}}"#,
        )
        .unwrap();
        let got = parse_response(&v).unwrap();
        assert_eq!(got[0].labels.to_string(), r#"{__name__="up", job="a"}"#);
        assert_eq!(got[0].v, f64::INFINITY);
        let s: serde_json::Value = serde_json::from_str(
            r#"{"status":"success","data":{"resultType":"scalar","result":[1,"2.5"]}}"#,
        )
        .unwrap();
        assert_eq!(parse_response(&s).unwrap()[0].v, 2.5);
        let e: serde_json::Value = serde_json::from_str(
            r#"{"status":"error","errorType":"bad_data","error":"parse error"}"#,
        )
        .unwrap();
        assert_eq!(parse_response(&e).unwrap_err(), "bad_data: parse error");
    }
}
