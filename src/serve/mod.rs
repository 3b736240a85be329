//! Serving models: per model a worker thread that owns the LibTorch module and runs the batcher,
//! a bounded queue in front of it, and an optional result cache in front of the queue.
//!
//! Requests are checked against the model's declared inputs here, independently of the wire
//! protocol, so every front end gets the same validation and the same error texts.

mod batcher;
mod cache;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use batcher::Arrival;
pub use cache::{CacheStats, ResultCache};

use crate::config::{ModelConfig, TensorConfig, parse_device};
use crate::metrics::{CacheSnapshot, Metrics, ModelMetrics, ModelSnapshot, ModelSource};
use crate::model::{self, Model};
use crate::tensor::{HostTensor, element_count};

/// Why an inference request failed, in terms a client can act on.
#[derive(Debug, thiserror::Error)]
pub enum InferError {
    /// The request does not fit the model's declared inputs.
    #[error("{0}")]
    InvalidInput(String),
    /// LibTorch rejected the input.
    #[error("model rejected the input: {0}")]
    Model(String),
    /// The queue is full; retry later.
    #[error("model '{0}' is overloaded: its queue is full, retry later")]
    Overloaded(String),
    /// The model is not loaded (yet, or any more).
    #[error("model '{0}' is not ready")]
    NotReady(String),
}

/// A request's inputs, named as the client sent them.
pub type NamedInputs = Vec<(String, HostTensor)>;

/// The result of one inference.
#[derive(Debug)]
pub struct Inference {
    /// Every model output, in declared order.
    pub outputs: Arc<Vec<HostTensor>>,
    /// How the outputs were produced.
    pub source: Source,
}

/// Where an inference's outputs came from.
#[derive(Debug)]
pub enum Source {
    /// The result cache; no forward pass ran.
    Cache,
    /// A forward pass, with its batch size and timings.
    Model {
        /// Rows in the forward pass.
        batch_size: usize,
        /// Time spent queued.
        queue_time: Duration,
        /// Forward pass duration.
        forward_time: Duration,
    },
}

/// One served model: its configuration, queue, cache and readiness.
#[derive(Debug)]
pub struct ModelService {
    config: ModelConfig,
    queue: batcher::Queue,
    cache: Option<ResultCache>,
    /// Set by the worker thread once loaded and warmed up. Shared with the worker, which must not
    /// hold the service: the service owns the queue's sender, and the worker exits only once
    /// every sender is gone.
    loaded: Arc<OnceLock<Loaded>>,
    draining: AtomicBool,
    metrics: ModelMetrics,
}

/// What a model's worker reports once the model is ready.
#[derive(Debug)]
struct Loaded {
    device: String,
    seconds: f64,
}

impl ModelService {
    /// The model's configuration (name, declared inputs and outputs, settings).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// True once the model has loaded and run its warm-up pass, until shutdown begins.
    pub fn is_ready(&self) -> bool {
        self.loaded.get().is_some() && !self.draining.load(Ordering::Acquire)
    }

    /// The result cache, when enabled.
    pub fn cache(&self) -> Option<&ResultCache> {
        self.cache.as_ref()
    }

    /// This model's request-path metrics.
    pub fn metrics(&self) -> &ModelMetrics {
        &self.metrics
    }

    fn snapshot(&self) -> ModelSnapshot {
        let loaded = self.loaded.get();
        ModelSnapshot {
            model: self.config.name.clone(),
            device: loaded.map(|l| l.device.clone()),
            ready: self.is_ready(),
            load_seconds: loaded.map(|l| l.seconds),
            queue_depth: self.queue.depth(),
            queue_capacity: self.config.batching.queue_capacity,
            cache: self.cache.as_ref().map(|cache| {
                let stats = cache.stats();
                CacheSnapshot {
                    hits: stats.hits.load(Ordering::Relaxed),
                    misses: stats.misses.load(Ordering::Relaxed),
                    evicted_size: stats.evicted_size.load(Ordering::Relaxed),
                    evicted_expired: stats.evicted_expired.load(Ordering::Relaxed),
                    entries: cache.approximate_entries(),
                    capacity: cache.capacity(),
                }
            }),
        }
    }

    /// Announces a request whose inputs are still being read, so the batcher may wait for it.
    /// Pass the guard to [`ModelService::infer`].
    pub fn arrival(&self) -> Arrival {
        self.queue.arrival()
    }

    /// Validates the inputs, then answers from the cache or through the batcher.
    pub async fn infer(
        &self,
        inputs: NamedInputs,
        arrival: Arrival,
    ) -> Result<Inference, InferError> {
        // Requests accepted during a drain are still served: only loading gates inference.
        if self.loaded.get().is_none() {
            return Err(InferError::NotReady(self.config.name.clone()));
        }
        let inputs = self.order_and_check(inputs)?;
        let key = self.cache.as_ref().map(|_| cache::CacheKey::of(&inputs));
        if let (Some(cache), Some(key)) = (&self.cache, &key)
            && let Some(outputs) = cache.get(key).await
        {
            return Ok(Inference {
                outputs,
                source: Source::Cache,
            });
        }
        let submitted = self.queue.submit(inputs);
        drop(arrival);
        let reply = submitted.map_err(|_| InferError::Overloaded(self.config.name.clone()))?;
        let batched = reply
            .await
            .map_err(|_| InferError::NotReady(self.config.name.clone()))?
            .map_err(InferError::Model)?;
        self.metrics.record_queue_wait(batched.queue_time);
        let outputs = Arc::new(self.name_outputs(batched.outputs)?);
        if let (Some(cache), Some(key)) = (&self.cache, key) {
            cache.insert(key, outputs.clone()).await;
        }
        Ok(Inference {
            outputs,
            source: Source::Model {
                batch_size: batched.batch_size,
                queue_time: batched.queue_time,
                forward_time: batched.forward_time,
            },
        })
    }

    /// Puts the inputs in the model's declared order and checks each against its declaration.
    fn order_and_check(&self, mut inputs: NamedInputs) -> Result<Vec<HostTensor>, InferError> {
        let declared = &self.config.inputs;
        if inputs.is_empty() {
            return Err(invalid(format!(
                "the request has no inputs; model '{}' takes {}",
                self.config.name,
                names(declared)
            )));
        }
        if let Some((name, _)) = inputs
            .iter()
            .find(|(name, _)| !declared.iter().any(|d| &d.name == name))
        {
            return Err(invalid(format!(
                "unknown input '{name}'; model '{}' takes {}",
                self.config.name,
                names(declared)
            )));
        }
        let mut ordered = Vec::with_capacity(declared.len());
        for spec in declared {
            let position = inputs
                .iter()
                .position(|(name, _)| name == &spec.name)
                .ok_or_else(|| invalid(format!("missing input '{}'", spec.name)))?;
            let (_, tensor) = inputs.swap_remove(position);
            check_input(
                spec,
                &tensor,
                self.config.batching.enabled.then_some(&self.config),
            )?;
            ordered.push(tensor);
        }
        if let Some((name, _)) = inputs.first() {
            return Err(invalid(format!("input '{name}' appears more than once")));
        }
        let rows = ordered[0].rows();
        if ordered.iter().any(|t| t.rows() != rows) {
            return Err(invalid(
                "inputs disagree on the batch size (dimension 0)".to_owned(),
            ));
        }
        Ok(ordered)
    }

    fn name_outputs(&self, outputs: Vec<HostTensor>) -> Result<Vec<HostTensor>, InferError> {
        if outputs.len() != self.config.outputs.len() {
            return Err(InferError::Model(format!(
                "the model returned {} output(s) but the config declares {} ({})",
                outputs.len(),
                self.config.outputs.len(),
                names(&self.config.outputs)
            )));
        }
        Ok(outputs)
    }
}

fn invalid(message: String) -> InferError {
    InferError::InvalidInput(message)
}

fn names(specs: &[TensorConfig]) -> String {
    specs
        .iter()
        .map(|s| format!("'{}'", s.name))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Checks datatype, rank and declared dimensions; `batching` carries the batch size limit.
fn check_input(
    spec: &TensorConfig,
    tensor: &HostTensor,
    batching: Option<&ModelConfig>,
) -> Result<(), InferError> {
    let name = &spec.name;
    if tensor.datatype != spec.datatype {
        return Err(invalid(format!(
            "input '{name}' has datatype {}, the model takes {}",
            tensor.datatype, spec.datatype
        )));
    }
    if tensor.shape.len() != spec.shape.len() {
        return Err(invalid(format!(
            "input '{name}' has shape {:?} (rank {}), the model takes {:?} (rank {})",
            tensor.shape,
            tensor.shape.len(),
            spec.shape,
            spec.shape.len()
        )));
    }
    let mismatch = spec
        .shape
        .iter()
        .zip(&tensor.shape)
        .any(|(&want, &got)| want != -1 && want != got);
    if mismatch {
        return Err(invalid(format!(
            "input '{name}' has shape {:?}, the model takes {:?} (-1: any size)",
            tensor.shape, spec.shape
        )));
    }
    if element_count(&tensor.shape) == Some(0) {
        return Err(invalid(format!(
            "input '{name}' is empty (shape {:?})",
            tensor.shape
        )));
    }
    if let Some(model) = batching {
        let limit = model.batching.max_batch_size;
        if tensor.rows() > limit {
            return Err(invalid(format!(
                "input '{name}' has {} rows, more than max_batch_size {limit}",
                tensor.rows()
            )));
        }
    }
    Ok(())
}

/// Every served model, by name, in config order.
#[derive(Debug)]
pub struct Registry {
    services: Vec<Arc<ModelService>>,
    by_name: HashMap<String, usize>,
    workers: Vec<JoinHandle<()>>,
}

/// A model failed to load or warm up; the message is one line fit for the terminal.
#[derive(Debug, thiserror::Error)]
#[error("model '{model}': {reason}")]
pub struct StartError {
    /// Which model.
    pub model: String,
    /// What went wrong.
    pub reason: String,
}

impl Registry {
    /// Starts one worker thread per model, which loads the model, warms it up and then serves its
    /// queue. Returns at once; the receiver reports when every model is ready, or the first
    /// failure.
    pub fn start(
        models: &[ModelConfig],
        metrics: &Metrics,
    ) -> (Registry, oneshot::Receiver<Result<(), StartError>>) {
        let mut services = Vec::new();
        let mut workers = Vec::new();
        let mut loads = Vec::new();
        for config in models {
            let (queue, inbox) = batcher::queue(config.batching.queue_capacity);
            let service = Arc::new(ModelService {
                config: config.clone(),
                queue,
                cache: config
                    .cache
                    .enabled
                    .then(|| ResultCache::new(config.cache.capacity, config.cache.ttl)),
                loaded: Arc::new(OnceLock::new()),
                draining: AtomicBool::new(false),
                metrics: metrics.for_model(&config.name),
            });
            let (loaded, load_result) = std::sync::mpsc::channel();
            let (worker_config, loaded_flag) = (config.clone(), service.loaded.clone());
            let worker_metrics = service.metrics.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("model-{}", config.name))
                .spawn(move || {
                    let config = &worker_config;
                    let started = Instant::now();
                    let model = match load_and_warm_up(config) {
                        Ok(model) => model,
                        Err(reason) => {
                            let _ = loaded.send(Err(reason));
                            return;
                        }
                    };
                    let _ = loaded_flag.set(Loaded {
                        device: model::device_name(model.device()),
                        seconds: started.elapsed().as_secs_f64(),
                    });
                    let _ = loaded.send(Ok(()));
                    let policy = batcher::Policy {
                        enabled: config.batching.enabled,
                        max_batch_size: config.batching.max_batch_size,
                        max_queue_delay: config.batching.max_queue_delay,
                    };
                    let mut forward =
                        |inputs: &[HostTensor]| model.forward(inputs).map_err(|e| e.to_string());
                    batcher::run(inbox, policy, &mut forward, &|rows, took| {
                        worker_metrics.record_batch(rows, took)
                    });
                });
            match spawned {
                Ok(handle) => {
                    workers.push(handle);
                    loads.push((config.name.clone(), load_result));
                    services.push(service);
                }
                Err(e) => {
                    let (sender, failed) = std::sync::mpsc::channel();
                    let _ = sender.send(Err(format!("cannot start its worker thread: {e}")));
                    loads.push((config.name.clone(), failed));
                }
            }
        }
        let (report, ready) = oneshot::channel();
        // Waiting on std channels blocks, so it gets a thread of its own rather than a runtime one.
        std::thread::spawn(move || {
            let outcome = loads.into_iter().try_for_each(|(model, load)| {
                load.recv()
                    .unwrap_or_else(|_| Err("its worker thread ended during start-up".to_owned()))
                    .map_err(|reason| StartError { model, reason })
            });
            let _ = report.send(outcome);
        });
        let by_name = services
            .iter()
            .enumerate()
            .map(|(i, s)| (s.config.name.clone(), i))
            .collect();
        (
            Registry {
                services,
                by_name,
                workers,
            },
            ready,
        )
    }

    /// The model called `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<ModelService>> {
        self.by_name.get(name).map(|&i| &self.services[i])
    }

    /// Every model, in config order.
    pub fn all(&self) -> &[Arc<ModelService>] {
        &self.services
    }

    /// True when every model is ready.
    pub fn all_ready(&self) -> bool {
        self.services.iter().all(|s| s.is_ready())
    }

    /// Marks every model not ready, so health checks steer traffic away during shutdown.
    pub fn begin_shutdown(&self) {
        for service in &self.services {
            service.draining.store(true, Ordering::Release);
        }
    }

    /// Waits until every worker thread has drained its queue and exited. Call after the HTTP
    /// server stopped, once the last queue handle is gone.
    pub fn join(self) {
        let Registry {
            services, workers, ..
        } = self;
        drop(services);
        for worker in workers {
            let _ = worker.join();
        }
    }
}

fn load_and_warm_up(config: &ModelConfig) -> Result<Model, String> {
    let spec = parse_device(&config.device)?;
    let device = model::resolve_device(spec).map_err(|e| e.to_string())?;
    model::set_threads(config.threads);
    let loaded = Model::load(&config.path, device).map_err(|e| e.to_string())?;
    if let Some(inputs) = warm_up_inputs(&config.inputs) {
        loaded
            .forward(&inputs)
            .map_err(|e| format!("warm-up forward pass failed: {e}"))?;
    } else {
        tracing::warn!(
            event = "warm_up_skipped",
            model = %config.name,
            "an input has a variable dimension besides the batch one, so no warm-up input can be made"
        );
    }
    Ok(loaded)
}

/// Zero inputs of batch size 1, when every other dimension is declared.
fn warm_up_inputs(specs: &[TensorConfig]) -> Option<Vec<HostTensor>> {
    specs
        .iter()
        .map(|spec| {
            let mut shape = spec.shape.clone();
            if let Some(batch) = shape.first_mut().filter(|d| **d == -1) {
                *batch = 1;
            }
            let count = element_count(&shape)?;
            Some(HostTensor {
                datatype: spec.datatype,
                shape,
                data: vec![0u8; count * spec.datatype.size()].into(),
            })
        })
        .collect()
}

impl ModelSource for Arc<Registry> {
    fn snapshot(&self) -> Vec<ModelSnapshot> {
        self.services.iter().map(|s| s.snapshot()).collect()
    }
}
