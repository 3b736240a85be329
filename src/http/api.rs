//! Prometheus' HTTP query API over the built-in store (`/api/v1/query`,
//! `query_range`, `series`, `labels`, `label/{name}/values`), in Prometheus'
//! JSON shapes, so Grafana's Prometheus datasource can point at torchwatch.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use axum::extract::{Form, Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use promql_parser::label::Matcher;
use promql_parser::parser::Expr;
use serde_json::{Value as Json_, json};

use crate::clock::rfc3339;
use crate::config::PromDuration;
use crate::gofmt;
use crate::policy::{CostManager, PolicyStatus, ScaleManager};
use crate::promql::{self, Engine, Value};
use crate::rules::{Alert, RuleManager, RuleStatus};
use crate::storage::{Labels, Point, SeriesPoints, Storage};

/// Prometheus' cap on points per series in a range query.
const MAX_POINTS: i64 = 11_000;

/// What the query API needs.
#[derive(Clone)]
pub struct QueryApi {
    /// The store queried.
    pub storage: Arc<Storage>,
    /// Engine settings (lookback, default subquery step).
    pub engine: Engine,
    /// The rule groups, for `/api/v1/rules` and `/api/v1/alerts`.
    pub rules: Arc<RuleManager>,
    /// The scale policies, for `/api/v1/scale`.
    pub scale: Arc<ScaleManager>,
    /// The cost policies, for `/api/v1/cost`.
    pub cost: Arc<CostManager>,
    /// The served models, for their caches' advice in `/api/v1/cost`.
    pub models: Arc<crate::serve::Registry>,
    /// What bounds each evaluation.
    pub limits: QueryLimits,
}

/// Prometheus' query limits, shared by every request.
#[derive(Clone)]
pub struct QueryLimits {
    /// `query.timeout`.
    pub timeout: Duration,
    /// `query.max-samples`.
    pub max_samples: usize,
    /// `query.max-concurrency` permits.
    pub slots: Arc<tokio::sync::Semaphore>,
    /// Turns true at shutdown: evaluations in flight stop.
    pub stop: tokio::sync::watch::Receiver<bool>,
}

/// Sets the flag when dropped: an evaluation whose request ended (answered, timed out, or
/// its client gone) stops at its next step instead of burning a core.
struct CancelOnDrop(Arc<AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

impl QueryApi {
    /// Each enabled cache's estimated hit-ratio curve and advice, by model.
    pub fn cache_advice(&self) -> Vec<(String, crate::serve::CacheAdvice)> {
        self.models
            .all()
            .iter()
            .filter_map(|m| Some((m.config().name.clone(), m.cache()?.advice())))
            .collect()
    }
}

/// Routes under `/api/v1`, ready to nest in any router.
pub fn router<S: Clone + Send + Sync + 'static>(api: QueryApi) -> Router<S> {
    Router::new()
        .route("/query", get(query).post(query))
        .route("/query_range", get(query_range).post(query_range))
        .route("/series", get(series).post(series))
        .route("/labels", get(labels).post(labels))
        .route("/label/{name}/values", get(label_values))
        .route("/rules", get(rules))
        .route("/alerts", get(alerts))
        .route("/scale", get(scale_policies))
        .route("/scale/{policy}", get(scale_policy))
        .route("/cost", get(cost))
        .with_state(api)
}

/// Prometheus' error JSON.
struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn bad_data(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            kind: "bad_data",
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            Json(json!({"status": "error", "errorType": self.kind, "error": self.message})),
        )
            .into_response()
    }
}

fn success(data: Json_) -> Response {
    Json(json!({"status": "success", "data": data})).into_response()
}

type Params = Form<Vec<(String, String)>>;

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// Unix seconds (float) or RFC 3339, as Prometheus accepts; in ms.
fn parse_time(text: &str, name: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0).round() as i64);
    }
    chrono::DateTime::parse_from_rfc3339(text)
        .map(|t| t.timestamp_millis())
        .map_err(|_| {
            ApiError::bad_data(format!(
                "invalid parameter \"{name}\": cannot parse \"{text}\" to a valid timestamp"
            ))
        })
}

/// Seconds (float) or a Prometheus duration; in ms.
fn parse_duration(text: &str, name: &str) -> Result<i64, ApiError> {
    if let Ok(secs) = text.parse::<f64>()
        && secs.is_finite()
    {
        return Ok((secs * 1000.0).round() as i64);
    }
    PromDuration::parse(text).map(|d| d.millis()).map_err(|_| {
        ApiError::bad_data(format!(
            "invalid parameter \"{name}\": cannot parse \"{text}\" to a valid duration"
        ))
    })
}

fn parse_query(params: &[(String, String)]) -> Result<Expr, ApiError> {
    let text = param(params, "query").unwrap_or("");
    promql::parse(text).map_err(|e| ApiError::bad_data(format!("invalid parameter \"query\": {e}")))
}

/// The request's `timeout`, never longer than `query.timeout`, as Prometheus takes it.
fn timeout(params: &[(String, String)], limits: &QueryLimits) -> Result<Duration, ApiError> {
    match param(params, "timeout") {
        Some(t) => Ok(
            Duration::from_millis(parse_duration(t, "timeout")?.max(1) as u64).min(limits.timeout),
        ),
        None => Ok(limits.timeout),
    }
}

fn timed_out() -> ApiError {
    ApiError {
        status: StatusCode::SERVICE_UNAVAILABLE,
        kind: "timeout",
        message: promql::TIMED_OUT.into(),
    }
}

fn canceled() -> ApiError {
    ApiError {
        // Prometheus' statusClientClosedConnection.
        status: StatusCode::from_u16(499).unwrap_or(StatusCode::SERVICE_UNAVAILABLE),
        kind: "canceled",
        message: promql::CANCELED.into(),
    }
}

/// Runs an evaluation off the async threads within Prometheus' limits: it waits for one of
/// `query.max-concurrency` slots, then runs until it ends, its deadline passes, its request
/// goes away or torchwatch stops; the evaluation itself checks the flag, so no thread keeps
/// running after the answer.
async fn evaluate<T: Send + 'static>(
    limits: &QueryLimits,
    timeout: Duration,
    work: impl FnOnce(&promql::Limits) -> Result<T, promql::Error> + Send + 'static,
) -> Result<T, ApiError> {
    let deadline = tokio::time::Instant::now() + timeout;
    let permit = tokio::time::timeout_at(deadline, limits.slots.clone().acquire_owned())
        .await
        .map_err(|_| timed_out())?
        .map_err(|_| canceled())?;
    let cancelled = Arc::new(AtomicBool::new(false));
    let _cancel = CancelOnDrop(cancelled.clone());
    let engine_limits = promql::Limits {
        deadline: Some(deadline.into_std()),
        cancelled: Some(cancelled),
        max_samples: limits.max_samples,
    };
    let work = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        work(&engine_limits)
    });
    let mut stop = limits.stop.clone();
    let joined = tokio::select! {
        joined = work => joined,
        _ = stop.wait_for(|s| *s) => return Err(canceled()),
    };
    match joined {
        Err(e) => Err(ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            kind: "internal",
            message: format!("evaluation failed: {e}"),
        }),
        Ok(Err(e)) if e.0 == promql::TIMED_OUT => Err(timed_out()),
        Ok(Err(e)) if e.0 == promql::CANCELED => Err(canceled()),
        Ok(Err(e)) => Err(ApiError {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            kind: "execution",
            message: e.0,
        }),
        Ok(Ok(v)) => Ok(v),
    }
}

fn labels_json(labels: &Labels) -> Json_ {
    Json_::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), Json_::String(l.value.clone())))
            .collect(),
    )
}

fn point_json(t: i64, v: f64) -> Json_ {
    json!([t as f64 / 1000.0, gofmt::plain(v)])
}

fn matrix_json(series: &[SeriesPoints]) -> Json_ {
    Json_::Array(
        series
            .iter()
            .map(|s| {
                json!({
                    "metric": labels_json(&s.labels),
                    "values": s.points.iter().map(|p: &Point| point_json(p.t, p.v)).collect::<Vec<_>>(),
                })
            })
            .collect(),
    )
}

async fn query(State(api): State<QueryApi>, Form(params): Params) -> Result<Response, ApiError> {
    let expr = parse_query(&params)?;
    let t = match param(&params, "time") {
        Some(t) => parse_time(t, "time")?,
        None => crate::clock::now_ms(),
    };
    let limit = timeout(&params, &api.limits)?;
    let value = evaluate(&api.limits.clone(), limit, move |limits| {
        api.engine
            .instant_limited(&api.storage.view(), &expr, t, limits)
    })
    .await?;
    let result = match &value {
        Value::Scalar(v) => point_json(t, *v),
        Value::String(s) => json!([t as f64 / 1000.0, s]),
        Value::Vector(samples) => Json_::Array(
            samples
                .iter()
                .map(|s| json!({"metric": labels_json(&s.labels), "value": point_json(t, s.v)}))
                .collect(),
        ),
        Value::Matrix(series) => matrix_json(series),
    };
    Ok(success(
        json!({"resultType": value.type_name(), "result": result}),
    ))
}

async fn query_range(
    State(api): State<QueryApi>,
    Form(params): Params,
) -> Result<Response, ApiError> {
    let expr = parse_query(&params)?;
    let start = parse_time(param(&params, "start").unwrap_or(""), "start")?;
    let end = parse_time(param(&params, "end").unwrap_or(""), "end")?;
    if end < start {
        return Err(ApiError::bad_data(
            "invalid parameter \"end\": end timestamp must not be before start time",
        ));
    }
    let step = parse_duration(param(&params, "step").unwrap_or(""), "step")?;
    if step <= 0 {
        return Err(ApiError::bad_data(
            "invalid parameter \"step\": zero or negative query resolution step widths are not accepted. Try a positive integer",
        ));
    }
    if (end - start) / step > MAX_POINTS {
        return Err(ApiError::bad_data(
            "exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)",
        ));
    }
    let limit = timeout(&params, &api.limits)?;
    let series = evaluate(&api.limits.clone(), limit, move |limits| {
        api.engine
            .range_limited(&api.storage.view(), &expr, start, end, step, limits)
    })
    .await?;
    Ok(success(
        json!({"resultType": "matrix", "result": matrix_json(&series)}),
    ))
}

/// `match[]` selectors, `start` and `end` (whole store when absent).
fn selection(
    params: &[(String, String)],
    required: bool,
) -> Result<(Vec<Vec<Matcher>>, i64, i64), ApiError> {
    let mut selectors = Vec::new();
    for (_, text) in params.iter().filter(|(k, _)| k == "match[]") {
        let expr = promql::parse(text)
            .map_err(|e| ApiError::bad_data(format!("invalid parameter \"match[]\": {e}")))?;
        let Expr::VectorSelector(vs) = expr else {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"match[]\": {text:?} is not a series selector"
            )));
        };
        selectors.extend(promql::selector_matchers(&vs));
    }
    if required && selectors.is_empty() {
        return Err(ApiError::bad_data("no match[] parameter provided"));
    }
    let start = match param(params, "start") {
        Some(t) => parse_time(t, "start")?,
        None => i64::MIN / 2,
    };
    let end = match param(params, "end") {
        Some(t) => parse_time(t, "end")?,
        None => i64::MAX / 2,
    };
    Ok((selectors, start, end))
}

async fn series(State(api): State<QueryApi>, Form(params): Params) -> Result<Response, ApiError> {
    let (selectors, start, end) = selection(&params, true)?;
    let found = api.storage.series(&selectors, start, end);
    Ok(success(Json_::Array(
        found.iter().map(labels_json).collect(),
    )))
}

async fn labels(State(api): State<QueryApi>, Form(params): Params) -> Result<Response, ApiError> {
    let (selectors, start, end) = selection(&params, false)?;
    let mut names: Vec<String> = api
        .storage
        .series(&selectors, start, end)
        .iter()
        .flat_map(|l| l.iter().map(|l| l.name.clone()).collect::<Vec<_>>())
        .collect();
    names.sort();
    names.dedup();
    Ok(success(json!(names)))
}

async fn label_values(
    State(api): State<QueryApi>,
    Path(name): Path<String>,
    Form(params): Params,
) -> Result<Response, ApiError> {
    if !crate::storage::is_valid_label_name(&name) {
        return Err(ApiError::bad_data(format!("invalid label name: {name:?}")));
    }
    let (selectors, start, end) = selection(&params, false)?;
    let mut values: Vec<String> = api
        .storage
        .series(&selectors, start, end)
        .iter()
        .map(|l| l.get(&name).to_string())
        .filter(|v| !v.is_empty())
        .collect();
    values.sort();
    values.dedup();
    Ok(success(json!(values)))
}

/// RFC 3339 with fractional seconds, as Prometheus' API writes times.
fn string_map(map: &std::collections::BTreeMap<String, String>) -> Json_ {
    json!(map)
}

fn alert_json(alert: &Alert) -> Json_ {
    json!({
        "labels": labels_json(&alert.labels),
        "annotations": string_map(&alert.annotations),
        "state": alert.state.as_str(),
        "activeAt": rfc3339(alert.active_at),
        "value": gofmt::exponent(alert.value, false),
    })
}

fn rule_json(rule: &RuleStatus) -> Json_ {
    let mut out = json!({
        "name": rule.name,
        "query": rule.query,
        "labels": string_map(&rule.labels),
        "health": rule.health(),
        "lastError": rule.last_error.clone().unwrap_or_default(),
        "evaluationTime": rule.evaluation_time_s,
        "lastEvaluation": rule.last_evaluation.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "type": rule.kind,
    });
    if rule.kind == "alerting" {
        out["duration"] = json!(rule.for_s);
        out["keepFiringFor"] = json!(rule.keep_firing_for_s);
        out["annotations"] = string_map(&rule.annotations);
        out["state"] = json!(rule.state().as_str());
        out["alerts"] = Json_::Array(rule.alerts.iter().map(alert_json).collect());
    }
    out
}

/// `/api/v1/rules`, optionally `type=alert|record`.
async fn rules(State(api): State<QueryApi>, Form(params): Params) -> Result<Response, ApiError> {
    let wanted = match param(&params, "type") {
        None | Some("") => None,
        Some("alert") => Some("alerting"),
        Some("record") => Some("recording"),
        Some(other) => {
            return Err(ApiError::bad_data(format!(
                "invalid parameter \"type\": {other:?} is neither alert nor record"
            )));
        }
    };
    let groups: Vec<Json_> = api
        .rules
        .snapshot()
        .iter()
        .map(|g| {
            let rules: Vec<Json_> = g
                .rules
                .iter()
                .filter(|r| wanted.is_none_or(|w| r.kind == w))
                .map(rule_json)
                .collect();
            let last = g.rules.iter().filter_map(|r| r.last_evaluation).max();
            json!({
                "name": g.name,
                "file": g.file,
                "interval": g.interval_s,
                "limit": g.limit,
                "rules": rules,
                "evaluationTime": g.rules.iter().map(|r| r.evaluation_time_s).sum::<f64>(),
                "lastEvaluation": last.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
            })
        })
        .collect();
    Ok(success(json!({ "groups": groups })))
}

/// `/api/v1/alerts`: every pending and firing alert.
async fn alerts(State(api): State<QueryApi>) -> Response {
    let alerts: Vec<Json_> = api
        .rules
        .snapshot()
        .iter()
        .flat_map(|g| g.rules.iter())
        .flat_map(|r| r.alerts.iter())
        .filter(|a| a.state != crate::rules::AlertState::Inactive)
        .map(alert_json)
        .collect();
    success(json!({ "alerts": alerts }))
}

/// One policy: bounds, the count in effect, and its last decision flattened so KEDA's
/// metrics-api scaler can point `valueLocation` at `data.desired_replicas`.
fn policy_json(p: &PolicyStatus) -> Json_ {
    let last = p.last.as_ref();
    json!({
        "policy": p.name,
        "file": p.file,
        "algorithm": p.algorithm,
        "actuator": p.actuator,
        "interval_seconds": p.interval_s,
        "min_replicas": p.min_replicas,
        "max_replicas": p.max_replicas,
        "current_replicas": p.current_replicas(),
        "desired_replicas": last.map(|d| d.desired_replicas),
        "ready_replicas": last.map(|d| d.ready_replicas),
        "reason": last.map(|d| d.reason.as_str()),
        "last_decision": last.map(|d| rfc3339(d.time_ms)),
        "metrics": last.map(|d| &d.metrics),
        "forecast": last.and_then(|d| d.forecast),
        "decisions": {"up": p.decisions[0], "down": p.decisions[1], "none": p.decisions[2]},
        "actuator_failures": p.actuator_failures,
        "price_per_replica_hour": p.price_per_replica_hour,
        "hourly_cost": p.hourly_cost(),
    })
}

/// `/api/v1/scale`: every policy's last decision.
async fn scale_policies(State(api): State<QueryApi>) -> Response {
    let policies: Vec<Json_> = api.scale.snapshot().iter().map(policy_json).collect();
    success(json!({ "policies": policies }))
}

/// `/api/v1/scale/{policy}`: one policy, for KEDA's metrics-api scaler.
async fn scale_policy(
    State(api): State<QueryApi>,
    Path(name): Path<String>,
) -> Result<Response, ApiError> {
    let policies = api.scale.snapshot();
    let policy = policies.iter().find(|p| p.name == name).ok_or(ApiError {
        status: StatusCode::NOT_FOUND,
        kind: "not_found",
        message: format!("no scale policy is called {name:?}"),
    })?;
    Ok(success(policy_json(policy)))
}

/// `/api/v1/cost`: each cost policy's last evaluation with its right-sizing, what the scale
/// policies with a price cost, and each cache's sizing advice.
async fn cost(State(api): State<QueryApi>) -> Response {
    let policies: Vec<Json_> = api
        .cost
        .snapshot()
        .iter()
        .map(|p| {
            let mut value = serde_json::to_value(p).unwrap_or_default();
            value["last_evaluation"] = json!(p.last.as_ref().map(|r| rfc3339(r.time_ms)));
            value
        })
        .collect();
    let scale: Vec<Json_> = api
        .scale
        .snapshot()
        .iter()
        .filter(|p| p.price_per_replica_hour.is_some())
        .map(|p| {
            json!({
                "policy": p.name,
                "current_replicas": p.current_replicas(),
                "price_per_replica_hour": p.price_per_replica_hour,
                "hourly_cost": p.hourly_cost(),
            })
        })
        .collect();
    let caches: Vec<Json_> = api
        .cache_advice()
        .into_iter()
        .map(|(model, advice)| {
            let mut value = serde_json::to_value(advice).unwrap_or_default();
            value["model"] = json!(model);
            value
        })
        .collect();
    success(json!({ "policies": policies, "scale_policies": scale, "caches": caches }))
}
