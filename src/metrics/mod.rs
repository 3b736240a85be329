//! The Prometheus exporter: every stage records into one registry, and `/metrics` encodes it as
//! Prometheus text 0.0.4 or OpenMetrics 1.0.
//!
//! Per-request recording touches only pre-resolved metric handles (atomics): the label lookups
//! happen once per model at start-up. State that already lives elsewhere (queue depth, cache
//! counters, readiness, the process) is read at scrape time by collectors instead of being
//! mirrored on the request path.

mod cgroup;
mod cost;
mod gpu;
mod notify;
mod process;
mod rules;
mod scale;

use std::sync::Arc;
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::exemplar::HistogramWithExemplars;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::config::BucketsConfig;

pub use cost::{CostCollector, CostSnapshot, CostSource};
pub use gpu::{GpuCollector, GpuSample, GpuSource};
pub use notify::{NotifyMetrics, SilenceCollector, SilenceCounts, SilenceSource};
pub use process::ProcessCollector;
pub use rules::{GroupMetrics, RuleMetrics};
pub use scale::{ScaleCollector, ScaleSnapshot, ScaleSource};

/// Content type of the Prometheus text format.
pub const PROMETHEUS_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";
/// Content type of OpenMetrics text.
pub const OPENMETRICS_TEXT: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabels {
    model: String,
    code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    model: String,
    reason: &'static str,
}

/// The exemplar attached to request-duration observations: the id in the JSON logs.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestIdLabel {
    request_id: String,
}

/// The registry and the families recorded on the request path.
pub struct Metrics {
    registry: Registry,
    request_duration: Family<ModelLabel, HistogramWithExemplars<RequestIdLabel>, BucketsFn>,
    queue_duration: Family<ModelLabel, Histogram, BucketsFn>,
    batch_duration: Family<ModelLabel, Histogram, BucketsFn>,
    batch_size: Family<ModelLabel, Histogram, BucketsFn>,
    requests: Family<CodeLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
    inference_count: Family<ModelLabel, Counter>,
    execution_count: Family<ModelLabel, Counter>,
    body_timeouts: Counter,
    rules: RuleMetrics,
    reload: ReloadMetrics,
    notify: NotifyMetrics,
}

/// Outcome of the last configuration reload, as Prometheus reports its own.
#[derive(Clone, Default)]
pub struct ReloadMetrics {
    successful: prometheus_client::metrics::gauge::Gauge,
    success_timestamp: prometheus_client::metrics::gauge::Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl ReloadMetrics {
    /// Records a reload (or the start-up load) and its outcome at `now` (Unix seconds).
    pub fn record(&self, ok: bool, now: f64) {
        self.successful.set(i64::from(ok));
        if ok {
            self.success_timestamp.set(now);
        }
    }
}

fn histograms<M>(bounds: &[f64]) -> Family<ModelLabel, M, BucketsFn> {
    Family::new_with_constructor(BucketsFn(bounds.into()))
}

/// Builds histograms with the configured buckets of one family.
#[derive(Clone)]
struct BucketsFn(Arc<[f64]>);

impl<M: FromBuckets> prometheus_client::metrics::family::MetricConstructor<M> for BucketsFn {
    fn new_metric(&self) -> M {
        M::from_buckets(&self.0)
    }
}

trait FromBuckets {
    fn from_buckets(buckets: &[f64]) -> Self;
}

impl FromBuckets for Histogram {
    fn from_buckets(buckets: &[f64]) -> Self {
        Histogram::new(buckets.iter().copied())
    }
}

impl FromBuckets for HistogramWithExemplars<RequestIdLabel> {
    fn from_buckets(buckets: &[f64]) -> Self {
        HistogramWithExemplars::new(buckets.iter().copied())
    }
}

/// One model's request-path metrics, resolved once so recording is a few atomic operations.
#[derive(Clone)]
pub struct ModelMetrics {
    model: String,
    request_duration: HistogramWithExemplars<RequestIdLabel>,
    queue_duration: Histogram,
    batch_duration: Histogram,
    batch_size: Histogram,
    inference_count: Counter,
    execution_count: Counter,
    requests: Family<CodeLabels, Counter>,
    rejected: Family<ReasonLabels, Counter>,
}

impl Metrics {
    /// Creates the registry with every request-path family, the build info and the process and
    /// machine collectors.
    pub fn new(buckets: &BucketsConfig) -> Metrics {
        let mut metrics = Metrics {
            request_duration: histograms(&buckets.request_duration_seconds),
            queue_duration: histograms(&buckets.queue_duration_seconds),
            batch_duration: histograms(&buckets.batch_duration_seconds),
            batch_size: histograms(&buckets.batch_size),
            requests: Family::default(),
            rejected: Family::default(),
            inference_count: Family::default(),
            execution_count: Family::default(),
            body_timeouts: Counter::default(),
            rules: RuleMetrics::new(),
            reload: ReloadMetrics::default(),
            notify: NotifyMetrics::new(),
            registry: Registry::default(),
        };
        let registry = &mut metrics.registry;
        registry.register(
            "torchwatch_request_duration_seconds",
            "End-to-end duration of inference requests, from the first byte read to the response",
            metrics.request_duration.clone(),
        );
        registry.register(
            "torchwatch_queue_duration_seconds",
            "Time requests waited in the model's queue before their forward pass started",
            metrics.queue_duration.clone(),
        );
        registry.register(
            "torchwatch_batch_duration_seconds",
            "Duration of one forward pass (one batch)",
            metrics.batch_duration.clone(),
        );
        registry.register(
            "torchwatch_batch_size",
            "Rows (samples) per forward pass",
            metrics.batch_size.clone(),
        );
        registry.register(
            "torchwatch_requests",
            "Inference requests answered, by HTTP status code",
            metrics.requests.clone(),
        );
        registry.register(
            "torchwatch_requests_rejected",
            "Inference requests refused before or by the model, by reason",
            metrics.rejected.clone(),
        );
        registry.register(
            "torchwatch_inference_count",
            "Samples (rows) inferred; divided by executions it gives the mean batch size",
            metrics.inference_count.clone(),
        );
        registry.register(
            "torchwatch_execution_count",
            "Forward passes run",
            metrics.execution_count.clone(),
        );
        registry.register(
            "torchwatch_request_body_timeouts",
            "Requests outside the inference API whose body did not arrive within server.request_timeout, answered 504 (inference counts its own in torchwatch_requests_rejected_total)",
            metrics.body_timeouts.clone(),
        );
        metrics.rules.register(registry);
        metrics.notify.register(registry);
        registry.register(
            "torchwatch_config_last_reload_successful",
            "Whether the last configuration reload succeeded (1) or failed and the previous configuration is still in use (0)",
            metrics.reload.successful.clone(),
        );
        registry.register(
            "torchwatch_config_last_reload_success_timestamp_seconds",
            "When the configuration was last loaded successfully, Unix seconds",
            metrics.reload.success_timestamp.clone(),
        );
        registry.register_collector(Box::new(BuildInfo));
        registry.register_collector(Box::new(ProcessCollector::new()));
        registry.register_collector(Box::new(GpuCollector::detect()));
        metrics
    }

    /// Adds a collector read at every scrape.
    /// The notifier's handles.
    pub fn notify(&self) -> NotifyMetrics {
        self.notify.clone()
    }

    /// The reload outcome's handles.
    pub fn reload(&self) -> ReloadMetrics {
        self.reload.clone()
    }

    /// Counts request bodies given up on outside the inference API.
    pub fn body_timeouts(&self) -> Counter {
        self.body_timeouts.clone()
    }

    /// The rule engine's handles.
    pub fn rules(&self) -> RuleMetrics {
        self.rules.clone()
    }

    pub fn register_collector(&mut self, collector: Box<dyn Collector>) {
        self.registry.register_collector(collector);
    }

    /// Encodes every metric; `openmetrics` picks OpenMetrics 1.0 (with exemplars) over text 0.0.4.
    pub fn encode(&self, openmetrics: bool) -> String {
        let mut out = String::with_capacity(16 * 1024);
        let encoded = if openmetrics {
            prometheus_client::encoding::text::encode(&mut out, &self.registry)
        } else {
            prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
        };
        // Writing to a String cannot fail; a collector error would be a bug worth seeing.
        if let Err(e) = encoded {
            tracing::error!(event = "error_occurred", error_type = "metrics", message = %e);
        }
        out
    }
}

/// Every `reason` an inference request can be refused for; each model's counters start at 0 for
/// each, so `rate()` and absence alerts work before the first refusal.
pub const REJECTION_REASONS: [&str; 9] = [
    "bad_request",
    "bad_body",
    "body_too_large",
    "invalid_input",
    "invalid_output",
    "model_error",
    "queue_full",
    "model_not_ready",
    "request_timeout",
];

/// Status codes whose request counters exist from the start (others appear when first seen).
const USUAL_CODES: [u16; 6] = [200, 400, 413, 500, 503, 504];

impl Metrics {
    /// Resolves one model's handles, once at start-up, and creates its request and rejection
    /// counters at 0 (Prometheus' instrumentation guide: export what can happen before it does).
    pub fn for_model(&self, model: &str) -> ModelMetrics {
        let label = ModelLabel {
            model: model.to_owned(),
        };
        for code in USUAL_CODES {
            self.requests.get_or_create_owned(&CodeLabels {
                model: model.to_owned(),
                code,
            });
        }
        for reason in REJECTION_REASONS {
            self.rejected.get_or_create_owned(&ReasonLabels {
                model: model.to_owned(),
                reason,
            });
        }
        ModelMetrics {
            model: model.to_owned(),
            request_duration: self.request_duration.get_or_create_owned(&label),
            queue_duration: self.queue_duration.get_or_create_owned(&label),
            batch_duration: self.batch_duration.get_or_create_owned(&label),
            batch_size: self.batch_size.get_or_create_owned(&label),
            inference_count: self.inference_count.get_or_create_owned(&label),
            execution_count: self.execution_count.get_or_create_owned(&label),
            requests: self.requests.clone(),
            rejected: self.rejected.clone(),
        }
    }
}

impl std::fmt::Debug for ModelMetrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ModelMetrics")
            .field("model", &self.model)
            .finish_non_exhaustive()
    }
}

impl ModelMetrics {
    /// Records one forward pass of `rows` samples.
    pub fn record_batch(&self, rows: usize, forward: Duration) {
        self.execution_count.inc();
        self.inference_count.inc_by(rows as u64);
        self.batch_size.observe(rows as f64);
        self.batch_duration.observe(forward.as_secs_f64());
    }

    /// Records how long one request waited for its forward pass.
    pub fn record_queue_wait(&self, waited: Duration) {
        self.queue_duration.observe(waited.as_secs_f64());
    }

    /// Records an answered request: its status and end-to-end duration, with the request id as
    /// exemplar.
    pub fn record_request(&self, code: u16, duration: Duration, request_id: &str) {
        self.request_duration.observe(
            duration.as_secs_f64(),
            Some(RequestIdLabel {
                request_id: request_id.to_owned(),
            }),
            None,
        );
        self.requests
            .get_or_create(&CodeLabels {
                model: self.model.clone(),
                code,
            })
            .inc();
    }

    /// Records a refused request; `reason` is one of [`REJECTION_REASONS`].
    pub fn record_rejection(&self, reason: &'static str) {
        debug_assert!(
            REJECTION_REASONS.contains(&reason),
            "rejection reason {reason:?} is missing from REJECTION_REASONS"
        );
        self.rejected
            .get_or_create(&ReasonLabels {
                model: self.model.clone(),
                reason,
            })
            .inc();
    }
}

/// A served model's state as read at scrape time.
#[derive(Debug, Clone)]
pub struct ModelSnapshot {
    /// Model name.
    pub model: String,
    /// Device it runs on, once loaded.
    pub device: Option<String>,
    /// Loaded, warmed up and not draining.
    pub ready: bool,
    /// Load plus warm-up time, once loaded.
    pub load_seconds: Option<f64>,
    /// Instances (worker threads with their own module) taking work.
    pub instances: usize,
    /// Requests waiting.
    pub queue_depth: usize,
    /// Most requests that may wait.
    pub queue_capacity: usize,
    /// Cache figures, when the cache is enabled.
    pub cache: Option<CacheSnapshot>,
}

/// A result cache's counters, size and hit-ratio estimate.
#[derive(Debug, Clone)]
pub struct CacheSnapshot {
    /// Lookups answered from the cache.
    pub hits: u64,
    /// Lookups that ran the model.
    pub misses: u64,
    /// Entries evicted because the cache was full.
    pub evicted_size: u64,
    /// Entries evicted because their TTL passed.
    pub evicted_expired: u64,
    /// Entries held.
    pub entries: u64,
    /// Most entries held.
    pub capacity: u64,
    /// `(capacity, estimated hit ratio)` at each exported capacity; empty until the estimator
    /// sampled enough lookups.
    pub hit_ratio_estimates: Vec<(u64, f64)>,
    /// The capacity the estimate recommends, once there is one.
    pub recommended_capacity: Option<u64>,
    /// The estimator's sampling rate in effect.
    pub estimator_sampling_rate: f64,
}

/// Something that can describe the served models at scrape time (the serving registry).
pub trait ModelSource: Send + Sync + std::fmt::Debug + 'static {
    /// The state of every model, in config order.
    fn snapshot(&self) -> Vec<ModelSnapshot>;
}

/// Encodes the served models' gauges and cache counters from a [`ModelSource`].
#[derive(Debug)]
pub struct ModelCollector<S>(pub S);

fn family<'a, F>(
    encoder: &mut DescriptorEncoder<'a>,
    name: &str,
    help: &str,
    metric_type: MetricType,
    rows: impl IntoIterator<Item = F>,
    mut write: impl FnMut(&mut prometheus_client::encoding::MetricEncoder<'_>, F) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut descriptor = encoder.encode_descriptor(name, help, None, metric_type)?;
    for row in rows {
        write(&mut descriptor, row)?;
    }
    Ok(())
}

fn gauge(
    e: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    value: f64,
) -> std::fmt::Result {
    ConstGauge::new(value).encode(e.encode_family(&labels)?)
}

fn counter(
    e: &mut prometheus_client::encoding::MetricEncoder<'_>,
    labels: &[(&str, &str)],
    value: u64,
) -> std::fmt::Result {
    ConstCounter::new(value).encode(e.encode_family(&labels)?)
}

impl<S: ModelSource> Collector for ModelCollector<S> {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let models = self.0.snapshot();
        family(
            &mut encoder,
            "torchwatch_model_info",
            "Served models with their device and platform",
            MetricType::Gauge,
            &models,
            |e, m| {
                let device = m.device.as_deref().unwrap_or("loading");
                gauge(
                    e,
                    &[
                        ("model", &m.model),
                        ("device", device),
                        ("platform", "pytorch_torchscript"),
                    ],
                    1.0,
                )
            },
        )?;
        family(
            &mut encoder,
            "torchwatch_model_ready",
            "1 when the model is loaded, warmed up and not draining",
            MetricType::Gauge,
            &models,
            |e, m| gauge(e, &[("model", &m.model)], f64::from(u8::from(m.ready))),
        )?;
        family(
            &mut encoder,
            "torchwatch_model_load_duration_seconds",
            "Time to load the model and run its warm-up pass",
            MetricType::Gauge,
            models.iter().filter_map(|m| Some((m, m.load_seconds?))),
            |e, (m, seconds)| gauge(e, &[("model", &m.model)], seconds),
        )?;
        family(
            &mut encoder,
            "torchwatch_model_instances",
            "Model instances (worker threads with their own module) taking work",
            MetricType::Gauge,
            &models,
            |e, m| gauge(e, &[("model", &m.model)], m.instances as f64),
        )?;
        family(
            &mut encoder,
            "torchwatch_queue_depth",
            "Requests waiting for a forward pass",
            MetricType::Gauge,
            &models,
            |e, m| gauge(e, &[("model", &m.model)], m.queue_depth as f64),
        )?;
        family(
            &mut encoder,
            "torchwatch_queue_capacity",
            "Most requests that may wait; more get 503",
            MetricType::Gauge,
            &models,
            |e, m| gauge(e, &[("model", &m.model)], m.queue_capacity as f64),
        )?;
        let cached: Vec<(&str, &CacheSnapshot)> = models
            .iter()
            .filter_map(|m| Some((m.model.as_str(), m.cache.as_ref()?)))
            .collect();
        family(
            &mut encoder,
            "torchwatch_cache_requests",
            "Result cache lookups, by result",
            MetricType::Counter,
            &cached,
            |e, (model, c)| {
                counter(e, &[("model", model), ("result", "hit")], c.hits)?;
                counter(e, &[("model", model), ("result", "miss")], c.misses)
            },
        )?;
        family(
            &mut encoder,
            "torchwatch_cache_evictions",
            "Result cache evictions, by cause",
            MetricType::Counter,
            &cached,
            |e, (model, c)| {
                counter(e, &[("model", model), ("cause", "size")], c.evicted_size)?;
                counter(
                    e,
                    &[("model", model), ("cause", "expired")],
                    c.evicted_expired,
                )
            },
        )?;
        family(
            &mut encoder,
            "torchwatch_cache_entries",
            "Results held in the cache",
            MetricType::Gauge,
            &cached,
            |e, (model, c)| gauge(e, &[("model", model)], c.entries as f64),
        )?;
        family(
            &mut encoder,
            "torchwatch_cache_capacity",
            "Most results the cache holds",
            MetricType::Gauge,
            &cached,
            |e, (model, c)| gauge(e, &[("model", model)], c.capacity as f64),
        )?;
        family(
            &mut encoder,
            "torchwatch_cache_hit_ratio_estimate",
            "Estimated LRU hit ratio (SHARDS) at other cache capacities",
            MetricType::Gauge,
            &cached,
            |e, (model, c)| {
                for (capacity, ratio) in &c.hit_ratio_estimates {
                    let capacity = capacity.to_string();
                    gauge(e, &[("model", model), ("capacity", &capacity)], *ratio)?;
                }
                Ok(())
            },
        )?;
        family(
            &mut encoder,
            "torchwatch_cache_recommended_capacity",
            "Cache capacity the hit-ratio estimate recommends",
            MetricType::Gauge,
            cached
                .iter()
                .filter_map(|(model, c)| Some((*model, c.recommended_capacity?))),
            |e, (model, capacity)| gauge(e, &[("model", model)], capacity as f64),
        )?;
        family(
            &mut encoder,
            "torchwatch_cache_estimator_sampling_rate",
            "Fraction of cache keys the hit-ratio estimator samples now",
            MetricType::Gauge,
            &cached,
            |e, (model, c)| gauge(e, &[("model", model)], c.estimator_sampling_rate),
        )?;
        Ok(())
    }
}

/// Encodes the series store's size and what it refused.
#[derive(Debug)]
pub struct StorageCollector(pub std::sync::Arc<crate::storage::Storage>);

impl Collector for StorageCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let stats = self.0.stats();
        for (name, help, value) in [
            (
                "torchwatch_storage_series",
                "Series held by the built-in store",
                stats.series as f64,
            ),
            (
                "torchwatch_storage_samples",
                "Samples held by the built-in store",
                stats.samples as f64,
            ),
            (
                "torchwatch_storage_bytes",
                "Approximate memory of the built-in store's samples, labels and index",
                stats.bytes as f64,
            ),
            (
                "torchwatch_storage_wal_bytes",
                "Bytes of the store's write-ahead log under state.dir",
                stats.wal_bytes as f64,
            ),
            (
                "torchwatch_storage_snapshot_bytes",
                "Bytes of the store's last snapshot under state.dir",
                stats.snapshot_bytes as f64,
            ),
            (
                "torchwatch_storage_replay_duration_seconds",
                "How long reading the store's files back took at start",
                stats.replay_seconds,
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Gauge,
                [value],
                |e, v| gauge(e, &[], v),
            )?;
        }
        family(
            &mut encoder,
            "torchwatch_storage_samples_refused",
            "Samples the built-in store refused, by reason",
            MetricType::Counter,
            [stats],
            |e, st| {
                counter(e, &[("reason", "series_limit")], st.refused_series_limit)?;
                counter(e, &[("reason", "out_of_order")], st.refused_out_of_order)
            },
        )?;
        for (name, help, value) in [
            (
                "torchwatch_storage_checkpoints",
                "Snapshots of the store written under state.dir",
                stats.checkpoints,
            ),
            (
                "torchwatch_storage_write_failures",
                "Writes of the store's log or snapshot that failed (full or read-only disk)",
                stats.write_failures,
            ),
        ] {
            family(
                &mut encoder,
                name,
                help,
                MetricType::Counter,
                [value],
                |e, v| counter(e, &[], v),
            )?;
        }
        Ok(())
    }
}

/// `torchwatch_build_info{version, torch_version, cuda}`.
#[derive(Debug)]
struct BuildInfo;

impl Collector for BuildInfo {
    fn encode(&self, mut encoder: DescriptorEncoder) -> std::fmt::Result {
        let cuda = if crate::model::cuda_available() {
            "true"
        } else {
            "false"
        };
        let labels = [
            ("version", env!("CARGO_PKG_VERSION")),
            ("torch_version", env!("TORCHWATCH_TORCH_VERSION")),
            ("cuda", cuda),
        ];
        let mut descriptor = encoder.encode_descriptor(
            "torchwatch_build_info",
            "torchwatch's version, the LibTorch version it runs, and whether CUDA is usable",
            None,
            MetricType::Gauge,
        )?;
        ConstGauge::new(1i64).encode(descriptor.encode_family(&labels)?)
    }
}
