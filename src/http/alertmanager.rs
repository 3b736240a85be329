//! Alertmanager's v2 API (`/api/v2/...`), thin handlers over [`AlertmanagerApi`]: answers and
//! errors as Alertmanager writes them (a JSON string for its own errors, 404 without a body
//! for an unknown silence), so `amtool` and Grafana's Alertmanager datasource work unchanged.

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use serde_json::Value;

use crate::notify::{AlertmanagerApi, AmError};

type Params = Query<Vec<(String, String)>>;

/// The v2 routes; silences can be created and expired only with `lifecycle` on.
pub fn router<S: Clone + Send + Sync + 'static>(
    api: AlertmanagerApi,
    lifecycle: bool,
) -> Router<S> {
    Router::new()
        .route("/status", get(status))
        .route("/receivers", get(receivers))
        .route("/alerts", get(alerts).post(post_alerts))
        .route("/alerts/groups", get(groups))
        .route("/silences", get(silences).post(post_silence))
        .route("/silence/{id}", get(silence).delete(expire_silence))
        .with_state(Writes { api, lifecycle })
}

/// The API and whether state may be changed over HTTP.
#[derive(Clone)]
struct Writes {
    api: AlertmanagerApi,
    lifecycle: bool,
}

impl axum::extract::FromRef<Writes> for AlertmanagerApi {
    fn from_ref(writes: &Writes) -> AlertmanagerApi {
        writes.api.clone()
    }
}

/// A 200 with the JSON body, or an empty one (`None`: what Alertmanager answers to a post of
/// alerts or a deleted silence), or the error.
fn answer(outcome: Result<Option<Value>, AmError>) -> Response {
    match outcome {
        Ok(Some(v)) => json(StatusCode::OK, &v),
        Ok(None) => StatusCode::OK.into_response(),
        Err(AmError { status, body }) => {
            let status = StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            match body {
                Some(b) => json(status, &b),
                None => status.into_response(),
            }
        }
    }
}

fn json(status: StatusCode, body: &Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response()
}

/// Alerts are posted as to Alertmanager, which takes them from anyone who reaches it.
fn write(change: impl FnOnce() -> Result<Option<Value>, AmError>) -> Response {
    answer(change())
}

/// Silence writes change what is notified: only with the lifecycle switch, as `/-/reload`.
fn admin_write(
    writes: &Writes,
    change: impl FnOnce(&AlertmanagerApi) -> Result<Option<Value>, AmError>,
) -> Response {
    if !writes.lifecycle {
        return json(
            StatusCode::FORBIDDEN,
            &Value::String(
                "silences can be changed only with server.enable_lifecycle (--web.enable-lifecycle)"
                    .into(),
            ),
        );
    }
    answer(change(&writes.api))
}

async fn status(State(api): State<AlertmanagerApi>) -> Response {
    answer(Ok(Some(api.status_json())))
}

async fn receivers(State(api): State<AlertmanagerApi>) -> Response {
    answer(Ok(Some(api.receivers())))
}

async fn alerts(State(api): State<AlertmanagerApi>, Query(params): Params) -> Response {
    answer(api.alerts(&params).map(Some))
}

async fn groups(State(api): State<AlertmanagerApi>, Query(params): Params) -> Response {
    answer(api.groups(&params).map(Some))
}

async fn post_alerts(State(api): State<AlertmanagerApi>, body: Bytes) -> Response {
    write(|| api.post_alerts(&body).map(|()| None))
}

async fn silences(State(api): State<AlertmanagerApi>, Query(params): Params) -> Response {
    answer(api.list_silences(&params).map(Some))
}

async fn silence(State(api): State<AlertmanagerApi>, Path(id): Path<String>) -> Response {
    answer(api.get_silence(&id).map(Some))
}

async fn post_silence(State(writes): State<Writes>, body: Bytes) -> Response {
    admin_write(&writes, |api| api.post_silence(&body).map(Some))
}

async fn expire_silence(State(writes): State<Writes>, Path(id): Path<String>) -> Response {
    admin_write(&writes, |api| api.expire_silence(&id).map(|()| None))
}
