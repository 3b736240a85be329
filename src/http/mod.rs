//! The HTTP front end: KServe V2 REST routes, thin handlers over [`crate::serve`], request ids and
//! request/response logging. Every error is a JSON `{"error": "..."}` with a 4xx/5xx status.

mod alertmanager;
mod api;
mod deadline;
mod json_data;
pub(crate) mod protocol;
mod server;
mod status;
mod web;

pub use api::{QueryApi, QueryLimits};
pub use server::{ConnectionLimits, serve};
pub use web::Web;

use std::sync::Arc;
use std::time::Instant;

use axum::Router;
use axum::body::{Body, HttpBody};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json};
use bytes::Bytes;
use http_body_util::BodyExt;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::metrics::{self, Metrics};
use crate::serve::{InferError, ModelService, Registry, Source};

use protocol::{DecodeError, ResponseOutput, decode_request, encode_response};

/// The only model version torchwatch serves; the protocol requires one.
const MODEL_VERSION: &str = "1";
/// Platform name Triton uses for TorchScript models.
const PLATFORM: &str = "pytorch_torchscript";
const REQUEST_ID: &str = "x-request-id";

/// The request id of the request being handled: the client's `x-request-id` or a generated one.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// What every handler can reach.
#[derive(Clone)]
struct AppState {
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    max_body_bytes: usize,
    decode_limits: protocol::DecodeLimits,
    request_timeout: std::time::Duration,
}

/// Marks a request torchwatch makes to itself in-process (its self-scrape), which the web
/// config's authentication and rate limit leave alone: no client can set a request extension.
#[derive(Clone, Copy, Debug)]
struct InProcessRequest;

/// Reads `/metrics` through the router in `routes` (set once it is built) without the network,
/// for `scrape.self` when the web config guards the listener with client certificates or
/// passwords the scraper cannot present. The handler, its logging and metrics are the same.
pub fn in_process_metrics(routes: Arc<std::sync::OnceLock<Router>>) -> crate::scrape::InProcess {
    Arc::new(move || {
        let routes = routes.clone();
        Box::pin(async move {
            let router = routes
                .get()
                .cloned()
                .ok_or_else(|| "torchwatch is still starting".to_string())?;
            let mut request = Request::get("/metrics")
                .header(header::ACCEPT, crate::scrape::ACCEPT_HEADER)
                .body(Body::empty())
                .map_err(|e| e.to_string())?;
            request.extensions_mut().insert(InProcessRequest);
            let response = match tower::ServiceExt::oneshot(router, request).await {
                Ok(response) => response,
                Err(never) => match never {},
            };
            let status = response.status();
            if !status.is_success() {
                return Err(format!("server returned HTTP status {status}"));
            }
            let format = crate::scrape::Format::from_content_type(
                response
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok()),
            );
            let body = response
                .into_body()
                .collect()
                .await
                .map_err(|e| e.to_string())?
                .to_bytes();
            Ok((String::from_utf8_lossy(&body).into_owned(), format))
        })
    })
}

/// Re-reads the configuration; the error says why it was refused.
pub type ReloadHook = Arc<dyn Fn() -> Result<(), String> + Send + Sync>;

/// The routes of each listener: with `server.metrics_listen` set, `inference` holds only the
/// KServe V2 API and `admin` the rest (metrics, query and Alertmanager APIs, the status page,
/// `/-/reload`), as Triton keeps metrics off its inference port; otherwise `inference` serves
/// everything and `admin` is `None`.
pub struct Routers {
    /// For `server.listen`.
    pub inference: Router,
    /// For `server.metrics_listen`.
    pub admin: Option<Router>,
}

/// Builds the routers over the served models, the query API and Alertmanager's API, logging each
/// request as `logging:` says, with the `server:` limits: bodies above `max_body_bytes` get 413,
/// inferences past `request_timeout` and bodies of other routes not read by then 504, and
/// state-changing routes 403 unless `enable_lifecycle`; `web` authenticates every route and adds
/// its headers.
pub fn router(
    registry: Arc<Registry>,
    metrics: Arc<Metrics>,
    config: &crate::config::Config,
    web: Web,
    query_api: QueryApi,
    alertmanager_api: crate::notify::AlertmanagerApi,
    reload: ReloadHook,
) -> Routers {
    let server = &config.server;
    let request_log = RequestLog::from(&config.logging);
    let lifecycle = server.enable_lifecycle;
    let model_routes = Router::new()
        .route("/", get(model_metadata))
        .route("/ready", get(model_ready))
        .route("/config", get(model_config))
        .route("/infer", post(infer));
    let inference = Router::new()
        .route("/v2", get(server_metadata))
        .route("/v2/health/live", get(live))
        .route("/v2/health/ready", get(ready))
        .nest("/v2/models/{name}", model_routes.clone())
        .nest("/v2/models/{name}/versions/{version}", model_routes);
    let admin = Router::new()
        .route("/metrics", get(scrape))
        .merge(status::router(query_api.clone()))
        .route(
            "/-/reload",
            post(move || {
                let reload = reload.clone();
                async move {
                    if !lifecycle {
                        // Prometheus' answer; the config key says how to turn it on.
                        return (
                            StatusCode::FORBIDDEN,
                            "Lifecycle API is not enabled. Set server.enable_lifecycle or pass \
                             --web.enable-lifecycle.\n"
                                .to_string(),
                        );
                    }
                    match tokio::task::spawn_blocking(move || reload()).await {
                        Ok(Ok(())) => (StatusCode::OK, String::new()),
                        Ok(Err(e)) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("failed to reload config: {e}\n"),
                        ),
                        Err(e) => (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            format!("reload failed: {e}\n"),
                        ),
                    }
                }
            }),
        )
        .nest("/api/v1", api::router(query_api))
        .nest("/api/v2", alertmanager::router(alertmanager_api, lifecycle))
        .layer(middleware::from_fn_with_state(
            deadline::BodyDeadline {
                timeout: server.request_timeout,
                expired: metrics.body_timeouts(),
            },
            deadline::bound_body,
        ));
    let state = AppState {
        registry,
        metrics,
        max_body_bytes: server.max_body_bytes,
        decode_limits: server.into(),
        request_timeout: server.request_timeout,
    };
    let finish = |routes: Router<AppState>| {
        routes
            .fallback(not_found)
            .layer(middleware::from_fn_with_state(web.clone(), web::guard))
            .layer(middleware::from_fn_with_state(request_log.clone(), observe))
            .with_state(state.clone())
    };
    if server.metrics_listen.is_some() {
        Routers {
            inference: finish(inference),
            admin: Some(finish(admin)),
        }
    } else {
        Routers {
            inference: finish(inference.merge(admin)),
            admin: None,
        }
    }
}

/// An error answer: status, a short machine-readable kind for the logs, and the message.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    kind: &'static str,
    message: String,
}

/// What [`observe`] logs as `error_occurred`; handlers leave it in the response's extensions.
#[derive(Debug, Clone)]
struct ErrorRecord {
    kind: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, kind: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            kind,
            message: message.into(),
        }
    }

    /// The 504 of `server.request_timeout`; `what` says what did not happen in time.
    fn request_timeout(what: &str, timeout: std::time::Duration) -> ApiError {
        ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "request_timeout",
            format!(
                "{what} within server.request_timeout ({})",
                crate::config::PromDuration(timeout.as_millis() as i64)
            ),
        )
    }

    fn unknown_model(name: &str) -> ApiError {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!("unknown model '{name}'"),
        )
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut response = (self.status, Json(json!({ "error": self.message }))).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response.extensions_mut().insert(ErrorRecord {
            kind: self.kind,
            message: self.message,
        });
        response
    }
}

impl From<InferError> for ApiError {
    fn from(error: InferError) -> ApiError {
        let (status, kind) = match &error {
            InferError::InvalidInput(_) => (StatusCode::BAD_REQUEST, "invalid_input"),
            InferError::Model(_) => (StatusCode::BAD_REQUEST, "model_error"),
            InferError::Overloaded(_) => (StatusCode::SERVICE_UNAVAILABLE, "queue_full"),
            InferError::NotReady(_) => (StatusCode::SERVICE_UNAVAILABLE, "model_not_ready"),
        };
        ApiError::new(status, kind, error.to_string())
    }
}

/// What an inference handler leaves in the response's extensions for its `response_sent` line.
#[derive(Debug, Clone)]
struct InferenceRecord {
    service: Arc<ModelService>,
    /// The pass that computed it; `None` for a cache hit.
    pass: Option<Pass>,
}

/// Which requests get their `response_sent` line: see `logging.success_sample_ratio`.
#[derive(Clone)]
struct RequestLog {
    sampler: Arc<crate::logs::Sampler>,
    slow: std::time::Duration,
}

impl From<&crate::config::LoggingConfig> for RequestLog {
    fn from(logging: &crate::config::LoggingConfig) -> RequestLog {
        RequestLog {
            sampler: Arc::new(crate::logs::Sampler::new(logging.success_sample_ratio)),
            slow: logging.slow_request,
        }
    }
}

/// Assigns the request id, echoes it in the response and logs one `response_sent` line per
/// request with what was asked and what was answered (`request_received` and `model_inference`
/// are `debug`), plus `error_occurred` for every error.
async fn observe(State(log): State<RequestLog>, mut request: Request, next: Next) -> Response {
    let id: Arc<str> = request
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .map_or_else(|| uuid::Uuid::new_v4().to_string().into(), Arc::from);
    request.extensions_mut().insert(RequestId(id.clone()));
    let method = request.method().clone();
    let path = request.uri().path().to_owned();
    tracing::debug!(event = "request_received", request_id = %id, method = %method, path = %path);
    let started = Instant::now();
    let mut response = next.run(request).await;
    let latency = started.elapsed();
    let status = response.status();
    let error = response.extensions_mut().remove::<ErrorRecord>();
    if let Some(error) = &error {
        let context = format!("{method} {path}");
        if status.is_server_error() {
            tracing::error!(event = "error_occurred", request_id = %id, status = status.as_u16(),
                error_type = error.kind, message = %error.message, context = %context);
        } else {
            tracing::warn!(event = "error_occurred", request_id = %id, status = status.as_u16(),
                error_type = error.kind, message = %error.message, context = %context);
        }
    }
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(REQUEST_ID, value);
    }
    // The sampler is asked last, so only the successful, fast requests use up its share.
    if error.is_some() || !status.is_success() || latency >= log.slow || log.sampler.take() {
        let inference = response.extensions_mut().remove::<InferenceRecord>();
        let model = inference.as_ref().map(|i| i.service.config().name.as_str());
        let pass = inference.as_ref().and_then(|i| i.pass);
        let millis = |d: std::time::Duration| d.as_secs_f64() * 1e3;
        tracing::info!(
            event = "response_sent",
            request_id = %id,
            method = %method,
            path = %path,
            status = status.as_u16(),
            latency_ms = millis(latency),
            bytes = response.body().size_hint().exact(),
            model,
            cached = inference.as_ref().map(|i| i.pass.is_none()),
            batch_size = pass.map(|(rows, _, _)| rows),
            queue_ms = pass.map(|(_, queued, _)| millis(queued)),
            forward_ms = pass.map(|(_, _, forward)| millis(forward)),
        );
    }
    response
}

async fn read_body(body: Body, limit: usize) -> Result<Bytes, ApiError> {
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("request body is larger than server.max_body_bytes ({limit} bytes)"),
        )
    };
    // A Content-Length over the limit is refused before a byte of the body is used. What the
    // client is still sending is read and dropped for a few seconds meanwhile (nginx's
    // lingering close), so it gets the 413 rather than a connection reset mid-upload.
    if axum::body::HttpBody::size_hint(&body).lower() > limit as u64 {
        tokio::spawn(async move {
            let mut body = body;
            let drain = async {
                while let Some(frame) = body.frame().await {
                    if frame.is_err() {
                        break;
                    }
                }
            };
            let _ = tokio::time::timeout(std::time::Duration::from_secs(5), drain).await;
        });
        return Err(too_large());
    }
    let limited = http_body_util::Limited::new(body, limit);
    match limited.collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(error) if error.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Err(error) => Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("cannot read the request body: {error}"),
        )),
    }
}

async fn not_found(request: Request) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        format!("no route for {} {}", request.method(), request.uri().path()),
    )
}

async fn live() -> Json<Value> {
    Json(json!({ "live": true }))
}

async fn ready(State(AppState { registry, .. }): State<AppState>) -> (StatusCode, Json<Value>) {
    let ready = registry.all_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(json!({ "ready": ready })))
}

async fn server_metadata() -> Json<Value> {
    Json(json!({
        "name": "torchwatch",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data", "model_configuration"],
    }))
}

/// `/v2/models/{name}` and `/v2/models/{name}/versions/{version}`.
#[derive(Deserialize)]
struct ModelPath {
    name: String,
    version: Option<String>,
}

fn find(registry: &Registry, path: &ModelPath) -> Result<Arc<ModelService>, ApiError> {
    let service = registry
        .get(&path.name)
        .ok_or_else(|| ApiError::unknown_model(&path.name))?;
    match path.version.as_deref() {
        None | Some(MODEL_VERSION) => Ok(service.clone()),
        Some(other) => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "model_not_found",
            format!(
                "model '{}' has no version '{other}'; it serves version {MODEL_VERSION}",
                path.name
            ),
        )),
    }
}

async fn model_metadata(
    State(AppState { registry, .. }): State<AppState>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, ApiError> {
    let service = find(&registry, &path)?;
    let config = service.config();
    let tensors = |specs: &[crate::config::TensorConfig]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| json!({ "name": s.name, "datatype": s.datatype.name(), "shape": s.shape }))
            .collect()
    };
    Ok(Json(json!({
        "name": config.name,
        "versions": [MODEL_VERSION],
        "platform": PLATFORM,
        "inputs": tensors(&config.inputs),
        "outputs": tensors(&config.outputs),
    })))
}

async fn model_ready(
    State(AppState { registry, .. }): State<AppState>,
    Path(path): Path<ModelPath>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let service = find(&registry, &path)?;
    let ready = service.is_ready();
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Ok((status, Json(json!({ "name": path.name, "ready": ready }))))
}

/// Triton's model configuration, which Triton's tools (perf_analyzer) read before they start.
async fn model_config(
    State(AppState { registry, .. }): State<AppState>,
    Path(path): Path<ModelPath>,
) -> Result<Json<Value>, ApiError> {
    let service = find(&registry, &path)?;
    let config = service.config();
    let batching = config.batching.enabled;
    // Triton's dims leave out the batch dimension when max_batch_size > 0.
    let tensors = |specs: &[crate::config::TensorConfig]| -> Vec<Value> {
        specs
            .iter()
            .map(|s| {
                let dims = if batching { &s.shape[1..] } else { &s.shape[..] };
                json!({ "name": s.name, "data_type": format!("TYPE_{}", s.datatype.name()), "dims": dims })
            })
            .collect()
    };
    let mut body = json!({
        "name": config.name,
        "platform": PLATFORM,
        "backend": "pytorch",
        "max_batch_size": if batching { config.batching.max_batch_size } else { 0 },
        "input": tensors(&config.inputs),
        "output": tensors(&config.outputs),
    });
    if batching {
        body["dynamic_batching"] = json!({
            "max_queue_delay_microseconds": config.batching.max_queue_delay.as_micros() as u64,
        });
    }
    Ok(Json(body))
}

/// Serves `/metrics`: OpenMetrics when the scraper accepts it (Prometheus asks for it first),
/// else Prometheus text 0.0.4; gzip when accepted.
async fn scrape(State(state): State<AppState>, headers: HeaderMap) -> Response {
    // Eviction listeners only run while a cache is used; settle them so the counters are current.
    for service in state.registry.all() {
        if let Some(cache) = service.cache() {
            cache.entries().await;
        }
    }
    let accept = |name| {
        headers
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",")
    };
    let openmetrics = accept(header::ACCEPT).contains("application/openmetrics-text");
    let text = state.metrics.encode(openmetrics);
    let content_type = if openmetrics {
        metrics::OPENMETRICS_TEXT
    } else {
        metrics::PROMETHEUS_TEXT
    };
    let mut response = if accept(header::ACCEPT_ENCODING).contains("gzip") {
        let mut gzip = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let compressed =
            std::io::Write::write_all(&mut gzip, text.as_bytes()).and_then(|()| gzip.finish());
        match compressed {
            Ok(bytes) => {
                let mut response = Response::new(Body::from(bytes));
                response
                    .headers_mut()
                    .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
                response
            }
            Err(_) => Response::new(Body::from(text)),
        }
    } else {
        Response::new(Body::from(text))
    };
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// Records the request's duration, status and any rejection under the model's labels.
async fn infer(
    State(state): State<AppState>,
    Path(path): Path<ModelPath>,
    Extension(RequestId(request_id)): Extension<RequestId>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    // Unknown model names are not recorded: a label per arbitrary name would grow without bound.
    let service = find(&state.registry, &path)?;
    let started = Instant::now();
    // The deadline covers reading the body, decoding and the queue and forward pass; a request
    // given up on is dropped (its batch still runs, the answer is discarded).
    let result = tokio::time::timeout(
        state.request_timeout,
        infer_on(&service, &state, &request_id, &headers, body),
    )
    .await
    .unwrap_or_else(|_| {
        Err(ApiError::request_timeout(
            "no answer",
            state.request_timeout,
        ))
    });
    let recorder = service.metrics();
    let status = match &result {
        Ok((response, _)) => response.status(),
        Err(error) => {
            recorder.record_rejection(error.kind);
            error.status
        }
    };
    recorder.record_request(status.as_u16(), started.elapsed(), &request_id);
    let (mut response, pass) = result?;
    response
        .extensions_mut()
        .insert(InferenceRecord { service, pass });
    Ok(response)
}

/// Rows, queue time and forward time of the pass that answered a request.
type Pass = (usize, std::time::Duration, std::time::Duration);

async fn infer_on(
    service: &ModelService,
    state: &AppState,
    request_id: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<(Response, Option<Pass>), ApiError> {
    // Announced before the body is read, so the batcher can wait for this request.
    let arrival = service.arrival();
    let body = read_body(body, state.max_body_bytes).await?;
    let header_length = headers
        .get(protocol::HEADER_LENGTH)
        .map(|v| {
            v.to_str()
                .ok()
                .and_then(|s| s.trim().parse::<usize>().ok())
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        "Inference-Header-Content-Length must be a non-negative integer",
                    )
                })
        })
        .transpose()?;
    let request =
        decode_request(&body, header_length, &state.decode_limits).map_err(|e| match e {
            DecodeError::Invalid(message) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
            }
            DecodeError::TooLarge(message) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "body_too_large", message)
            }
        })?;
    let config = service.config();
    // Check requested outputs before spending a forward pass on them.
    let selected: Vec<(usize, bool)> = match &request.outputs {
        None => (0..config.outputs.len())
            .map(|i| (i, request.binary_output))
            .collect(),
        Some(requested) => requested
            .iter()
            .map(|r| {
                let index = config
                    .outputs
                    .iter()
                    .position(|o| o.name == r.name)
                    .ok_or_else(|| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_output",
                            format!("unknown output '{}' of model '{}'", r.name, config.name),
                        )
                    })?;
                Ok((index, r.binary.unwrap_or(request.binary_output)))
            })
            .collect::<Result<_, ApiError>>()?,
    };
    let inference = service.infer(request.inputs, arrival).await?;
    let pass = match inference.source {
        Source::Model {
            batch_size,
            queue_time,
            forward_time,
        } => {
            tracing::debug!(
                event = "model_inference",
                request_id = %request_id,
                model = %config.name,
                batch_size,
                queue_ms = queue_time.as_secs_f64() * 1e3,
                forward_ms = forward_time.as_secs_f64() * 1e3,
            );
            Some((batch_size, queue_time, forward_time))
        }
        Source::Cache => None,
    };
    let outputs: Vec<ResponseOutput<'_>> = selected
        .iter()
        .map(|&(index, binary)| ResponseOutput {
            name: &config.outputs[index].name,
            tensor: &inference.outputs[index],
            binary,
        })
        .collect();
    let encoded = encode_response(&config.name, MODEL_VERSION, request.id.as_deref(), &outputs);
    let mut response = Response::new(Body::from(encoded.body));
    let headers = response.headers_mut();
    match encoded.header_length {
        Some(length) => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            headers.insert(protocol::HEADER_LENGTH, HeaderValue::from(length));
        }
        None => {
            headers.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
    }
    Ok((response, pass))
}
