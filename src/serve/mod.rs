//! Serving models: per model one or more instances (worker threads, each owning its own copy of
//! the LibTorch module and running the batcher) that all take work from the model's one bounded
//! queue, and an optional result cache in front of the queue. A lone request with a short pass
//! borrows an idle instance's module and runs its pass on its own thread instead (see the
//! batcher). The number of instances can change at run time between the configured limits
//! ([`ModelService::scale_instances`]).
//!
//! Requests are checked against the model's declared inputs here, independently of the wire
//! protocol, so every front end gets the same validation and the same error texts.

mod batcher;
mod cache;
mod mrc;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

pub use batcher::Arrival;
pub use cache::{CacheAdvice, CacheKey, CacheStats, CurvePoint, Recommendation, ResultCache};
pub use mrc::naive_capacity;

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

/// One served model: its configuration, queue, cache, instances and readiness.
#[derive(Debug)]
pub struct ModelService {
    config: ModelConfig,
    queue: batcher::Queue,
    cache: Option<ResultCache>,
    instances: Arc<Instances>,
    draining: AtomicBool,
    metrics: ModelMetrics,
}

/// What a model reports once its first `instances.min` instances are warm.
#[derive(Debug)]
struct Loaded {
    device: String,
    seconds: f64,
}

/// A model's instances, shared by the service and every instance thread. The threads must not
/// hold the service: it owns the queue's sender, and they exit only once every sender is gone.
#[derive(Debug)]
struct Instances {
    config: ModelConfig,
    inbox: batcher::Inbox,
    metrics: ModelMetrics,
    started: Instant,
    /// Set once `instances.min` instances have served at the same time.
    loaded: OnceLock<Loaded>,
    table: Mutex<Table>,
}

#[derive(Debug, Default)]
struct Table {
    next_id: u64,
    /// The instances that count toward the target (loading or serving, not retiring), oldest
    /// first.
    active: Vec<Instance>,
    /// Threads spawned and not yet joined, retired ones included.
    threads: Vec<JoinHandle<()>>,
}

#[derive(Debug)]
struct Instance {
    id: u64,
    /// Set once the module is loaded and warmed up: the instance is serving, and lends the module
    /// to lone requests while it is between passes.
    module: Option<Arc<Mutex<Model>>>,
    /// Held only to be dropped: never sent on, its disconnection (when the entry is removed) is
    /// what retires the instance.
    _retire: crossbeam_channel::Sender<()>,
}

/// What one request gets from a forward pass.
type PassOutcome = Result<batcher::Batched, batcher::ForwardError>;

/// An instance's load outcome during start-up.
type LoadReport = std::sync::mpsc::Sender<Result<(), String>>;

impl Instances {
    /// A panicking instance thread must not disable scaling: every update of the table is one
    /// step that leaves it consistent, so a poisoned lock is still safe to use.
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn serving(&self) -> usize {
        self.table()
            .active
            .iter()
            .filter(|i| i.is_serving())
            .count()
    }

    /// Starts one instance thread, counted toward the target from now on. `report` (start-up
    /// only) hears whether it loaded; without it a failed load is logged.
    fn spawn(
        self: &Arc<Self>,
        table: &mut Table,
        report: Option<LoadReport>,
    ) -> Result<(), String> {
        let id = table.next_id;
        table.next_id += 1;
        let (retire, retired) = crossbeam_channel::bounded(0);
        let instances = self.clone();
        let thread = std::thread::Builder::new()
            .name(format!("model-{}-{id}", self.config.name))
            .spawn(move || instances.serve(id, &retired, report))
            .map_err(|e| format!("cannot start its worker thread: {e}"))?;
        // The caller holds the lock, so the thread cannot look itself up before this entry exists.
        table.active.push(Instance {
            id,
            module: None,
            _retire: retire,
        });
        table.threads.push(thread);
        Ok(())
    }

    /// The body of an instance thread: load and warm up a module, then serve the queue until it
    /// closes or the instance is retired.
    fn serve(
        &self,
        id: u64,
        retired: &crossbeam_channel::Receiver<()>,
        report: Option<LoadReport>,
    ) {
        let _leave = Leave {
            instances: self,
            id,
        };
        let model = match load_and_warm_up(&self.config) {
            Ok(model) => model,
            Err(reason) => {
                match report {
                    Some(report) => {
                        let _ = report.send(Err(reason));
                    }
                    None => tracing::error!(
                        event = "instance_load_failed",
                        model = %self.config.name,
                        error = %reason,
                        "a new instance failed to load or warm up; it is not counted"
                    ),
                }
                return;
            }
        };
        let device = model::device_name(model.device());
        let model = Arc::new(Mutex::new(model));
        let serving = self.start_serving(id, &model, device);
        // Reported even when the instance was retired while loading: its load succeeded, and the
        // target it was retired for is still at least `min`.
        if let Some(report) = report {
            let _ = report.send(Ok(()));
        }
        if !serving {
            return;
        }
        let policy = batcher::Policy {
            enabled: self.config.batching.enabled,
            max_batch_size: self.config.batching.max_batch_size,
            max_queue_delay: self.config.batching.max_queue_delay,
        };
        // Locked per pass, never across the wait for work, so lone requests can borrow it.
        let mut forward =
            |requests: &[&[HostTensor]]| batcher::Forward::forward(&mut *lock(&model), requests);
        batcher::run(
            self.inbox.clone(),
            retired,
            policy,
            &mut forward,
            &|rows, took| self.metrics.record_batch(rows, took),
        );
    }

    /// Marks a warm instance as serving; false when it was retired while it loaded.
    fn start_serving(&self, id: u64, model: &Arc<Mutex<Model>>, device: String) -> bool {
        let mut table = self.table();
        let Some(instance) = table.active.iter_mut().find(|i| i.id == id) else {
            return false;
        };
        instance.module = Some(model.clone());
        if table.active.iter().filter(|i| i.is_serving()).count() >= self.config.instances.min {
            let _ = self.loaded.set(Loaded {
                device,
                seconds: self.started.elapsed().as_secs_f64(),
            });
        }
        true
    }

    /// The module of a serving instance that is between passes, if any.
    fn idle_module(&self) -> Option<Arc<Mutex<Model>>> {
        self.table()
            .active
            .iter()
            .filter_map(|i| i.module.as_ref())
            .find(|module| try_lock(module).is_some())
            .cloned()
    }

    fn scale(self: &Arc<Self>, target: usize) -> Result<(), String> {
        let (name, limits) = (&self.config.name, self.config.instances);
        if !(limits.min..=limits.max).contains(&target) {
            return Err(format!(
                "model '{name}': cannot scale to {target} instances; its instances are limited \
                 to min {}, max {}",
                limits.min, limits.max
            ));
        }
        let mut table = self.table();
        // Finished threads need no joining; dropping their handles keeps the list short.
        table.threads.retain(|thread| !thread.is_finished());
        let from = table.active.len();
        let mut spawned = Ok(());
        while spawned.is_ok() && table.active.len() < target {
            spawned = self.spawn(&mut table, None);
        }
        while table.active.len() > target {
            // Loading instances go first, as retiring one costs no capacity; among the same kind
            // the newest. A serving one is retired only once no loading one is left, so at least
            // `target` >= 1 instances keep serving.
            let newest = table.active.len() - 1;
            let victim = table
                .active
                .iter()
                .rposition(|i| !i.is_serving())
                .unwrap_or(newest);
            table.active.remove(victim);
        }
        let to = table.active.len();
        if to != from {
            tracing::info!(
                event = "instances_changed",
                model = %name,
                from,
                to,
                "instances of the model are loading or retiring toward the new count"
            );
        }
        spawned.map_err(|reason| format!("model '{name}': {reason}"))
    }
}

impl Instance {
    fn is_serving(&self) -> bool {
        self.module.is_some()
    }
}

/// A pass that panicked inside LibTorch leaves the module as usable as any failed pass does.
fn lock(model: &Mutex<Model>) -> MutexGuard<'_, Model> {
    model.lock().unwrap_or_else(PoisonError::into_inner)
}

fn try_lock(model: &Mutex<Model>) -> Option<MutexGuard<'_, Model>> {
    match model.try_lock() {
        Ok(guard) => Some(guard),
        Err(std::sync::TryLockError::Poisoned(poisoned)) => Some(poisoned.into_inner()),
        Err(std::sync::TryLockError::WouldBlock) => None,
    }
}

impl batcher::Forward for Model {
    fn forward(&mut self, requests: &[&[HostTensor]]) -> Result<Vec<HostTensor>, String> {
        self.forward_joined(requests).map_err(|e| e.to_string())
    }
}

/// Takes an instance out of the count however its thread ends (retired, queue closed, panic).
struct Leave<'a> {
    instances: &'a Instances,
    id: u64,
}

impl Drop for Leave<'_> {
    fn drop(&mut self) {
        self.instances.table().active.retain(|i| i.id != self.id);
    }
}

impl ModelService {
    /// The model's configuration (name, declared inputs and outputs, settings).
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// True once `instances.min` instances have loaded and run their warm-up pass, until
    /// shutdown begins. Scaling never changes it: at least one instance always serves.
    pub fn is_ready(&self) -> bool {
        self.instances.loaded.get().is_some() && !self.draining.load(Ordering::Acquire)
    }

    /// Instances taking work now: loaded, warmed up and not retiring.
    pub fn instances(&self) -> usize {
        self.instances.serving()
    }

    /// Instances serving or still loading: what the model is moving to. An instance that
    /// failed to load leaves it, so a scaler sees the shortfall and asks again.
    pub fn instance_target(&self) -> usize {
        self.instances.table().active.len()
    }

    /// The `(min, max)` instances the config allows.
    pub fn instance_limits(&self) -> (usize, usize) {
        (self.config.instances.min, self.config.instances.max)
    }

    /// Starts moving to `target` instances and returns at once; `target` outside
    /// [`ModelService::instance_limits`] is an error. New instances load and warm up their own
    /// module before taking work (one that fails is logged as `instance_load_failed` and not
    /// counted). A retired instance finishes what it has taken, then exits; queued requests are
    /// left to the others, so none is dropped. Instances still loading count toward the target,
    /// so repeated calls converge on the latest one.
    pub fn scale_instances(&self, target: usize) -> Result<(), String> {
        self.instances.scale(target)
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
        let loaded = self.instances.loaded.get();
        ModelSnapshot {
            model: self.config.name.clone(),
            device: loaded.map(|l| l.device.clone()),
            ready: self.is_ready(),
            load_seconds: loaded.map(|l| l.seconds),
            instances: self.instances(),
            queue_depth: self.queue.depth(),
            queue_capacity: self.config.batching.queue_capacity,
            cache: self.cache.as_ref().map(|cache| {
                let stats = cache.stats();
                let advice = cache.advice();
                CacheSnapshot {
                    hits: stats.hits.load(Ordering::Relaxed),
                    misses: stats.misses.load(Ordering::Relaxed),
                    evicted_size: stats.evicted_size.load(Ordering::Relaxed),
                    evicted_expired: stats.evicted_expired.load(Ordering::Relaxed),
                    entries: cache.approximate_entries(),
                    capacity: cache.capacity(),
                    hit_ratio_estimates: advice
                        .curve
                        .iter()
                        .map(|point| (point.capacity, point.hit_ratio))
                        .collect(),
                    recommended_capacity: advice.recommended_capacity,
                    estimator_sampling_rate: advice.sampling_rate,
                }
            }),
        }
    }

    /// Announces a request whose inputs are still being read, so the batcher may wait for it
    /// and a lone request can tell it has company. Pass the guard to [`ModelService::infer`].
    pub fn arrival(&self) -> Arrival {
        self.queue.arrival()
    }

    /// Validates the inputs, then answers from the cache or through the batcher.
    pub async fn infer(
        &self,
        inputs: NamedInputs,
        mut arrival: Arrival,
    ) -> Result<Inference, InferError> {
        // Requests accepted during a drain are still served: only loading gates inference.
        if self.instances.loaded.get().is_none() {
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
        let batched = match self.try_run_alone(inputs, &mut arrival) {
            Ok(answered) => answered,
            Err(inputs) => {
                let submitted = self.queue.submit(inputs);
                arrival.submitted();
                let reply =
                    submitted.map_err(|_| InferError::Overloaded(self.config.name.clone()))?;
                reply
                    .await
                    .map_err(|_| InferError::NotReady(self.config.name.clone()))?
            }
        }
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

    /// Runs the pass on the calling thread with an idle instance's module when
    /// [`batcher::Queue::may_run_alone`] allows it; otherwise hands the request back for the
    /// queue. An instance thread that wants the module meanwhile waits for this one pass.
    fn try_run_alone(
        &self,
        inputs: Vec<HostTensor>,
        arrival: &mut Arrival,
    ) -> Result<PassOutcome, Vec<HostTensor>> {
        let rows = inputs.first().map_or(0, HostTensor::rows);
        if !self.queue.may_run_alone(rows) {
            return Err(inputs);
        }
        let Some(module) = self.instances.idle_module() else {
            return Err(inputs);
        };
        // Taken since it was found idle: the queue does not wait for it.
        let Some(mut module) = try_lock(&module) else {
            return Err(inputs);
        };
        arrival.submitted();
        // LibTorch's intra-op thread count belongs to the calling thread (OpenMP's setting), and
        // this one did not load the model.
        model::use_threads(self.config.threads);
        Ok(batcher::run_alone(
            &self.queue,
            inputs,
            &mut *module,
            &|rows, took| self.metrics.record_batch(rows, took),
        ))
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
    /// Starts `instances.min` instance threads per model, each of which loads the model, warms it
    /// up and then serves the model's queue. Returns at once; the receiver reports when every
    /// model's first instances are ready, or the first failure.
    pub fn start(
        models: &[ModelConfig],
        metrics: &Metrics,
    ) -> (Registry, oneshot::Receiver<Result<(), StartError>>) {
        let mut services = Vec::new();
        let mut loads = Vec::new();
        for config in models {
            let (queue, inbox) = batcher::queue(config.batching.queue_capacity);
            let model_metrics = metrics.for_model(&config.name);
            let instances = Arc::new(Instances {
                config: config.clone(),
                inbox,
                metrics: model_metrics.clone(),
                started: Instant::now(),
                loaded: OnceLock::new(),
                table: Mutex::default(),
            });
            {
                let mut table = instances.table();
                for _ in 0..config.instances.min {
                    let (report, load) = std::sync::mpsc::channel();
                    if let Err(reason) = instances.spawn(&mut table, Some(report.clone())) {
                        let _ = report.send(Err(reason));
                    }
                    loads.push((config.name.clone(), load));
                }
            }
            services.push(Arc::new(ModelService {
                config: config.clone(),
                queue,
                cache: config
                    .cache
                    .enabled
                    .then(|| ResultCache::new(&config.cache)),
                instances,
                draining: AtomicBool::new(false),
                metrics: model_metrics,
            }));
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
        (Registry { services, by_name }, ready)
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

    /// Waits until every instance thread ever started (scaled-up ones included) has drained its
    /// queue and exited. Call after the HTTP server stopped, once the last queue handle is gone.
    pub fn join(self) {
        let models: Vec<Arc<Instances>> =
            self.services.iter().map(|s| s.instances.clone()).collect();
        drop(self);
        for instances in models {
            // Taken again until empty: a scale-up by someone still holding a service (its queue
            // then stays open, so the first join waits for them) may add threads meanwhile.
            loop {
                let threads = std::mem::take(&mut instances.table().threads);
                if threads.is_empty() {
                    break;
                }
                for thread in threads {
                    let _ = thread.join();
                }
            }
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{BucketsConfig, Config};
    use crate::tensor::DataType;
    use std::sync::atomic::AtomicUsize;

    fn mlp(instances: &str) -> ModelConfig {
        let text = format!(
            "models:
  - name: mlp
    path: {}/models/mlp.pt
    inputs: [{{name: input__0, datatype: FP32, shape: [-1, 784]}}]
    outputs: [{{name: output__0, datatype: FP32, shape: [-1, 10]}}]
    instances: {instances}
",
            env!("CARGO_MANIFEST_DIR")
        );
        Config::parse(&text, "test.yaml").unwrap().models.remove(0)
    }

    fn floats(tensor: &HostTensor) -> Vec<f32> {
        tensor
            .data
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect()
    }

    fn rows(count: usize) -> HostTensor {
        let values: Vec<u8> = (0..784 * count)
            .flat_map(|i| ((i % 7) as f32 * 0.25).to_le_bytes())
            .collect();
        HostTensor::new(DataType::Fp32, vec![count as i64, 784], values.into()).unwrap()
    }

    async fn infer(service: &ModelService) -> Vec<f32> {
        let inference = service
            .infer(vec![("input__0".to_owned(), rows(1))], service.arrival())
            .await
            .unwrap_or_else(|e| panic!("an inference failed: {e}"));
        assert_eq!(inference.outputs[0].shape, vec![1, 10]);
        floats(&inference.outputs[0])
    }

    /// Batched and unbatched passes differ by float summation order only.
    fn assert_close(outputs: &[f32], expected: &[f32]) {
        assert_eq!(outputs.len(), expected.len());
        let off = outputs
            .iter()
            .zip(expected)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0, f32::max);
        assert!(off < 1e-5, "{outputs:?} is not {expected:?}");
    }

    /// Polls `done` until it holds; the deadline only turns a hang into a failure.
    async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(120);
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn instances_scale_up_and_down_without_failing_a_request() {
        let metrics = Metrics::new(&BucketsConfig::default());
        let (registry, loaded) = Registry::start(&[mlp("{min: 1, max: 3}")], &metrics);
        loaded.await.unwrap().unwrap();
        let service = registry.get("mlp").unwrap().clone();
        let pool = service.instances.clone();
        assert_eq!(service.instances(), 1);
        assert_eq!(service.instance_limits(), (1, 3));
        assert_eq!(
            service.scale_instances(4).unwrap_err(),
            "model 'mlp': cannot scale to 4 instances; its instances are limited to min 1, max 3"
        );
        assert!(service.scale_instances(0).is_err());
        let expected = infer(&service).await;

        service.scale_instances(3).unwrap();
        // Asked again while the first two are loading: they count, so no more are spawned.
        service.scale_instances(3).unwrap();
        assert_eq!(pool.table().active.len(), 3);
        wait_for("3 instances", || service.instances() == 3).await;
        assert_eq!(service.snapshot().instances, 3);
        assert!(service.is_ready());

        let answered = Arc::new(AtomicUsize::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..4)
            .map(|_| {
                let (service, answered, stop) = (service.clone(), answered.clone(), stop.clone());
                let expected = expected.clone();
                tokio::spawn(async move {
                    while !stop.load(Ordering::Acquire) {
                        assert_close(&infer(&service).await, &expected);
                        answered.fetch_add(1, Ordering::AcqRel);
                    }
                })
            })
            .collect();
        // Requests are flowing through every instance before two of them retire.
        wait_for("requests under way", || {
            answered.load(Ordering::Acquire) >= 40
        })
        .await;
        service.scale_instances(1).unwrap();
        assert!(service.is_ready());
        wait_for("1 instance", || service.instances() == 1).await;
        let at_one = answered.load(Ordering::Acquire);
        wait_for("requests after the scale-down", || {
            answered.load(Ordering::Acquire) >= at_one + 40
        })
        .await;
        assert!(service.is_ready());
        stop.store(true, Ordering::Release);
        for client in clients {
            // A failed inference panics its client task, which fails this join.
            client.await.unwrap();
        }

        drop(service);
        tokio::task::spawn_blocking(move || registry.join())
            .await
            .unwrap();
        // Every instance thread, the retired ones included, has ended.
        assert!(pool.table().active.is_empty());
        assert!(pool.table().threads.is_empty());
    }

    #[tokio::test]
    async fn a_lone_request_borrows_an_idle_instance_and_answers_as_the_queue_does() {
        let metrics = Metrics::new(&BucketsConfig::default());
        let mut config = mlp("{min: 1, max: 1}");
        config.batching.max_batch_size = 1024;
        let (registry, loaded) = Registry::start(&[config], &metrics);
        loaded.await.unwrap().unwrap();
        let service = registry.get("mlp").unwrap().clone();
        let mut arrival = service.arrival();
        // Before any pass of one request nothing says how long one takes: the queue it is.
        assert!(service.try_run_alone(vec![rows(1)], &mut arrival).is_err());
        drop(arrival);
        // A pass of many rows gives a time per row that stays far under the limit for one row
        // however loaded the machine is. Its first row is the one-row input.
        let batch = service
            .infer(vec![("input__0".to_owned(), rows(1024))], service.arrival())
            .await
            .unwrap();
        let queued = floats(&batch.outputs[0])[..10].to_vec();

        let module = service.instances.table().active[0]
            .module
            .clone()
            .expect("a serving instance lends its module");
        {
            let _busy = lock(&module);
            let mut arrival = service.arrival();
            assert!(
                service.try_run_alone(vec![rows(1)], &mut arrival).is_err(),
                "ran alone with the only instance busy"
            );
        }
        let mut arrival = service.arrival();
        let alone = service
            .try_run_alone(vec![rows(1)], &mut arrival)
            .unwrap_or_else(|_| panic!("an idle instance was not lent"))
            .unwrap();
        drop(arrival);
        assert_eq!(alone.batch_size, 1);
        assert_close(&floats(&alone.outputs[0]), &queued);
        // The request path takes the same way and gets the same answer.
        assert_close(&infer(&service).await, &queued);

        drop(service);
        tokio::task::spawn_blocking(move || registry.join())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn a_failed_scale_up_is_not_counted() {
        let path = std::env::temp_dir().join(format!("torchwatch-{}-mlp.pt", std::process::id()));
        let mut config = mlp("{min: 1, max: 2}");
        std::fs::copy(&config.path, &path).unwrap();
        config.path = path.clone();
        let metrics = Metrics::new(&BucketsConfig::default());
        let (registry, loaded) = Registry::start(&[config], &metrics);
        loaded.await.unwrap().unwrap();
        // The new instance's load fails: the file it would load is gone.
        std::fs::remove_file(&path).unwrap();
        let service = registry.get("mlp").unwrap().clone();
        service.scale_instances(2).unwrap();
        let pool = service.instances.clone();
        wait_for("the failed instance to leave", || {
            pool.table().active.len() == 1
        })
        .await;
        assert_eq!(service.instances(), 1);
        assert!(service.is_ready());
        infer(&service).await;
        drop(service);
        tokio::task::spawn_blocking(move || registry.join())
            .await
            .unwrap();
    }
}
