//! Dynamic batching: requests wait in a bounded queue; a dedicated thread (one per model instance,
//! all sharing the model's queue) takes the first, waits at most `max_queue_delay` for more, joins
//! their rows along dimension 0 into one forward pass and hands each request its own rows of the
//! outputs.
//!
//! Each thread is a plain OS thread, never a runtime worker, because a forward pass blocks for
//! milliseconds. Requests reach it through a bounded channel, so memory is bounded by
//! `queue_capacity` requests whatever the load.
//!
//! The batcher only waits for company that is known to be on its way: requests whose bodies are
//! being read or decoded ([`Arrival`]). A lone request never pays `max_queue_delay`, so batching
//! costs nothing at low load; under load, requests that queue while the model is busy are taken
//! together without waiting at all.
//!
//! A request that has had no company for a while (no other request of the model in flight) and
//! whose pass is short skips the queue and runs its pass on the thread that decoded it
//! ([`Queue::may_run_alone`], [`run_alone`]): handing it to an instance thread and the answer back
//! costs two thread wake-ups, which on a small VM cost more CPU than a small model's pass.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender, TryRecvError, TrySendError};
use tokio::sync::oneshot;

use crate::tensor::HostTensor;

/// What the batcher needs from a model.
pub trait Forward {
    /// One forward pass over the rows of `requests` (each one request's inputs), joined along
    /// dimension 0 by the model itself, so it can copy each request's bytes once, into the
    /// memory the pass reads. The outputs hold every row, in the order of `requests`.
    fn forward(&mut self, requests: &[&[HostTensor]]) -> Result<Vec<HostTensor>, String>;
}

impl<F: FnMut(&[&[HostTensor]]) -> Result<Vec<HostTensor>, String>> Forward for F {
    fn forward(&mut self, requests: &[&[HostTensor]]) -> Result<Vec<HostTensor>, String> {
        self(requests)
    }
}

/// How the batcher groups requests.
#[derive(Debug, Clone, Copy)]
pub struct Policy {
    /// When false every request is its own forward pass.
    pub enabled: bool,
    /// Most rows in one forward pass.
    pub max_batch_size: usize,
    /// Longest wait for company after the first request of a batch was queued.
    pub max_queue_delay: Duration,
}

/// One request's share of a forward pass.
#[derive(Debug)]
pub struct Batched {
    /// This request's rows of each model output.
    pub outputs: Vec<HostTensor>,
    /// Rows in the forward pass it rode in.
    pub batch_size: usize,
    /// Time from queueing to the start of the forward pass.
    pub queue_time: Duration,
    /// Duration of the forward pass.
    pub forward_time: Duration,
}

/// The model rejected the input; the message is LibTorch's.
pub type ForwardError = String;

/// A queued request; opaque outside the batcher.
#[derive(Debug)]
pub struct Job {
    inputs: Vec<HostTensor>,
    rows: usize,
    queued_at: Instant,
    reply: oneshot::Sender<Result<Batched, ForwardError>>,
}

/// The queue is full; the client should retry later.
#[derive(Debug)]
pub struct QueueFull;

/// How often a batcher waiting for arriving requests looks again when none has been queued.
const ARRIVAL_POLL: Duration = Duration::from_micros(100);

/// How long a batcher waits without work before it hands the heap's free pages back, so the
/// memory of a load is released soon after it ends but never between two busy moments.
const IDLE_BEFORE_TRIM: Duration = Duration::from_secs(1);
/// A wait that ends only when a job arrives or the batcher retires.
const IDLE_FOREVER: Duration = Duration::from_secs(24 * 3600);

/// The longest pass [`run_alone`] is allowed, estimated from the model's last pass of one
/// request. The calling thread is a runtime thread, which serves nothing else during the pass
/// (the other runtime threads do); past a couple of milliseconds the two wake-ups it saves are
/// not worth holding it.
const ALONE_PASS_LIMIT: Duration = Duration::from_millis(2);

/// How long after two requests of a model were last in flight together its requests keep going
/// through the queue. Between two waves of a few clients there is often a moment with one
/// request in flight; run on its own, it would split the batch about to form. Many passes long,
/// yet short enough that a load's end soon brings back the cheaper path.
const CROWD_MEMORY: Duration = Duration::from_millis(50);

/// What is shared by every handle on one model's queue.
#[derive(Debug)]
struct Shared {
    /// Requests announced by [`Queue::arrival`] and not yet submitted.
    arriving: AtomicUsize,
    /// Requests announced and not yet answered.
    in_flight: AtomicUsize,
    /// Until when (nanoseconds since `epoch`) requests are taken to have company: see
    /// [`CROWD_MEMORY`].
    crowded_until: AtomicU64,
    /// Nanoseconds per row of the last pass that served one request; `u64::MAX` before one ran.
    lone_pass_per_row: AtomicU64,
    epoch: Instant,
}

impl Shared {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_nanos()).unwrap_or(u64::MAX)
    }

    fn record_lone_pass(&self, rows: usize, took: Duration) {
        let per_row = took.as_nanos() / rows.max(1) as u128;
        self.lone_pass_per_row.store(
            u64::try_from(per_row).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
    }
}

/// The sending side of a model's queue.
#[derive(Clone, Debug)]
pub struct Queue {
    sender: Sender<Job>,
    shared: Arc<Shared>,
}

/// The receiving side, drained by [`run`]; every clone takes from the same queue, so several
/// instances can share it.
#[derive(Clone, Debug)]
pub struct Inbox {
    receiver: Receiver<Job>,
    shared: Arc<Shared>,
}

/// A request in flight: announced before its body is read, submitted (or run alone) once decoded,
/// dropped once answered. Until it is submitted the batcher may wait for it, up to
/// `max_queue_delay`.
pub struct Arrival {
    shared: Arc<Shared>,
    submitted: bool,
}

impl Arrival {
    /// The request has left the stage a batcher waits for: it is queued, runs alone, or fails.
    pub fn submitted(&mut self) {
        if !self.submitted {
            self.submitted = true;
            self.shared.arriving.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

impl Drop for Arrival {
    fn drop(&mut self) {
        self.submitted();
        self.shared.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Queue {
    /// Announces a request that will be submitted soon; keep the guard until it is answered.
    pub fn arrival(&self) -> Arrival {
        let shared = &self.shared;
        shared.arriving.fetch_add(1, Ordering::AcqRel);
        if shared.in_flight.fetch_add(1, Ordering::AcqRel) >= 1 {
            let until = shared.now().saturating_add(CROWD_MEMORY.as_nanos() as u64);
            shared.crowded_until.fetch_max(until, Ordering::Relaxed);
        }
        Arrival {
            shared: shared.clone(),
            submitted: false,
        }
    }

    /// Whether a request of `rows` rows may run its pass itself with [`run_alone`]: it is the
    /// model's only request in flight, no two were in flight together for [`CROWD_MEMORY`],
    /// nothing is queued, and the model's last pass of one request says this one ends within
    /// [`ALONE_PASS_LIMIT`] (before such a pass has run, requests go through the queue).
    pub fn may_run_alone(&self, rows: usize) -> bool {
        let shared = &self.shared;
        let estimate = u128::from(shared.lone_pass_per_row.load(Ordering::Relaxed)) * rows as u128;
        shared.in_flight.load(Ordering::Acquire) <= 1
            && shared.now() >= shared.crowded_until.load(Ordering::Relaxed)
            && self.sender.is_empty()
            && estimate <= ALONE_PASS_LIMIT.as_nanos()
    }

    /// Queues a request without waiting; the receiver resolves when its forward pass is done.
    /// Every input must have the same number of rows (dimension 0), at least one.
    pub fn submit(
        &self,
        inputs: Vec<HostTensor>,
    ) -> Result<oneshot::Receiver<Result<Batched, ForwardError>>, QueueFull> {
        let (reply, receiver) = oneshot::channel();
        let rows = inputs.first().map_or(0, HostTensor::rows);
        let job = Job {
            inputs,
            rows,
            queued_at: Instant::now(),
            reply,
        };
        match self.sender.try_send(job) {
            Ok(()) => Ok(receiver),
            // A disconnected queue only happens during shutdown, after the server stopped
            // accepting; to a client it is the same as a full one.
            Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) => Err(QueueFull),
        }
    }

    /// Requests waiting for a forward pass.
    pub fn depth(&self) -> usize {
        self.sender.len()
    }
}

/// Creates a queue holding at most `capacity` requests and the inbox that [`run`] drains.
pub fn queue(capacity: usize) -> (Queue, Inbox) {
    let (sender, receiver) = crossbeam_channel::bounded(capacity);
    let shared = Arc::new(Shared {
        arriving: AtomicUsize::new(0),
        in_flight: AtomicUsize::new(0),
        crowded_until: AtomicU64::new(0),
        lone_pass_per_row: AtomicU64::new(u64::MAX),
        epoch: Instant::now(),
    });
    (
        Queue {
            sender,
            shared: shared.clone(),
        },
        Inbox { receiver, shared },
    )
}

/// Runs one request's pass on the calling thread, exactly as an instance thread runs a batch of
/// one (the same error handling and `on_pass` report), with no time queued. Ask
/// [`Queue::may_run_alone`] first, and mark the request's [`Arrival`] submitted before calling,
/// so an instance thread gathering a batch does not wait for it.
pub fn run_alone(
    queue: &Queue,
    inputs: Vec<HostTensor>,
    model: &mut impl Forward,
    on_pass: &dyn Fn(usize, Duration),
) -> Result<Batched, ForwardError> {
    let (reply, mut answer) = oneshot::channel();
    let job = Job {
        rows: inputs.first().map_or(0, HostTensor::rows),
        inputs,
        queued_at: Instant::now(),
        reply,
    };
    execute(model, vec![job], on_pass, &queue.shared);
    // `execute` answers every job it is given before it returns.
    answer
        .try_recv()
        .unwrap_or_else(|_| Err("the forward pass ended without an answer".to_owned()))
}

/// Serves batches until every [`Queue`] handle is dropped and the queue is empty, or until
/// `retire` is disconnected (its sender dropped; it never carries a message). A retiring batcher
/// finishes the batch it is running and the job it already took for the next one, and takes no
/// more: the jobs still queued are left to the other instances on the same queue. `on_pass` is
/// told the rows and duration of every forward pass.
pub fn run(
    inbox: Inbox,
    retire: &Receiver<()>,
    policy: Policy,
    model: &mut impl Forward,
    on_pass: &dyn Fn(usize, Duration),
) {
    let receiver = &inbox.receiver;
    let mut carried: Option<Job> = None;
    // Whether passes ran since the heap was last trimmed.
    let mut heap_grown = false;
    loop {
        let first = match carried.take() {
            Some(job) => job,
            // Checked before waiting because `select!` picks at random among ready operations: a
            // busy queue would otherwise keep a retiring instance taking jobs.
            None if retiring(retire) => return,
            None => {
                let idle = if heap_grown {
                    IDLE_BEFORE_TRIM
                } else {
                    IDLE_FOREVER
                };
                let job = crossbeam_channel::select! {
                    recv(receiver) -> job => match job {
                        Ok(job) => Some(job),
                        Err(_) => return,
                    },
                    recv(retire) -> _ => return,
                    default(idle) => None,
                };
                match job {
                    Some(job) => job,
                    None => {
                        if heap_grown {
                            crate::memory::release_free_heap();
                            heap_grown = false;
                        }
                        continue;
                    }
                }
            }
        };
        heap_grown = true;
        let mut batch = vec![first];
        // A retiring batcher runs what it holds alone rather than gathering company, which could
        // carry yet another job over and postpone its exit.
        if policy.enabled && !retiring(retire) {
            carried = fill(&inbox, &policy, &mut batch);
        }
        execute(model, batch, on_pass, &inbox.shared);
    }
}

fn retiring(retire: &Receiver<()>) -> bool {
    !matches!(retire.try_recv(), Err(TryRecvError::Empty))
}

/// Adds compatible jobs to `batch` until it is full, or nothing is queued and nothing is arriving,
/// or the delay has passed. Returns a job that was taken but does not fit, to start the next batch.
fn fill(inbox: &Inbox, policy: &Policy, batch: &mut Vec<Job>) -> Option<Job> {
    let deadline = batch[0].queued_at + policy.max_queue_delay;
    let mut rows = batch[0].rows;
    while rows < policy.max_batch_size {
        let job = match inbox.receiver.try_recv() {
            Ok(job) => job,
            Err(_) => {
                let now = Instant::now();
                if now >= deadline || inbox.shared.arriving.load(Ordering::Acquire) == 0 {
                    return None;
                }
                match inbox
                    .receiver
                    .recv_deadline(deadline.min(now + ARRIVAL_POLL))
                {
                    Ok(job) => job,
                    Err(RecvTimeoutError::Timeout) => continue,
                    Err(RecvTimeoutError::Disconnected) => return None,
                }
            }
        };
        if rows + job.rows > policy.max_batch_size || !compatible(&batch[0], &job) {
            return Some(job);
        }
        rows += job.rows;
        batch.push(job);
    }
    None
}

/// Jobs can share a forward pass when their inputs agree in everything but dimension 0.
fn compatible(a: &Job, b: &Job) -> bool {
    a.inputs.len() == b.inputs.len()
        && a.inputs
            .iter()
            .zip(&b.inputs)
            .all(|(x, y)| x.stacks_with(y))
}

/// Runs `batch` as one forward pass. A pass that fails is split in halves, each run again, until
/// the failing requests run alone: one request's content can fail a whole batch (an out-of-range
/// index, a model that raises on some values), and only the culprit should get the error. Halving
/// costs about two passes per halving step (2·log2 of the batch size for one bad request) where
/// running every request alone would cost one per request, which a client sending bad requests
/// under load could use to divide throughput by the batch size. Only passes that succeed are told
/// to `on_pass`, so the inference and execution counts are of answered work, as Triton's are.
fn execute(
    model: &mut impl Forward,
    mut batch: Vec<Job>,
    on_pass: &dyn Fn(usize, Duration),
    shared: &Shared,
) {
    let rows: usize = batch.iter().map(|j| j.rows).sum();
    let requests: Vec<&[HostTensor]> = batch.iter().map(|job| job.inputs.as_slice()).collect();
    let started = Instant::now();
    let result = model.forward(&requests);
    let forward_time = started.elapsed();
    let shares = result.and_then(|outputs| {
        if batch.len() == 1 {
            Ok(vec![outputs])
        } else {
            split(&outputs, &batch, rows)
        }
    });
    match shares {
        Ok(shares) => {
            on_pass(rows, forward_time);
            if batch.len() == 1 {
                shared.record_lone_pass(rows, forward_time);
            }
            for (job, outputs) in batch.into_iter().zip(shares) {
                let _ = job.reply.send(Ok(Batched {
                    outputs,
                    batch_size: rows,
                    queue_time: started - job.queued_at,
                    forward_time,
                }));
            }
        }
        Err(error) if batch.len() == 1 => {
            let job = batch.pop().expect("batch has one job");
            let _ = job.reply.send(Err(error));
        }
        Err(_) => {
            let second = batch.split_off(batch.len() / 2);
            execute(model, batch, on_pass, shared);
            execute(model, second, on_pass, shared);
        }
    }
}

/// Cuts every output into each job's rows, without copying.
fn split(
    outputs: &[HostTensor],
    batch: &[Job],
    rows: usize,
) -> Result<Vec<Vec<HostTensor>>, ForwardError> {
    for output in outputs {
        if output.shape.is_empty() || output.rows() != rows {
            return Err(format!(
                "an output of shape {:?} does not have the batch's {rows} rows in dimension 0",
                output.shape
            ));
        }
    }
    let mut first_row = 0;
    Ok(batch
        .iter()
        .map(|job| {
            let share = outputs
                .iter()
                .map(|output| {
                    let row_bytes = output.row_bytes();
                    let mut shape = output.shape.clone();
                    shape[0] = job.rows as i64;
                    HostTensor {
                        datatype: output.datatype,
                        shape,
                        data: output
                            .data
                            .slice(first_row * row_bytes..(first_row + job.rows) * row_bytes),
                    }
                })
                .collect();
            first_row += job.rows;
            share
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::{DataType, fp32_rows};
    use crossbeam_channel::never;
    use std::sync::{Arc, Mutex};

    /// The requests' inputs joined the way the real model joins them: each request's rows
    /// after the previous request's.
    fn join(requests: &[&[HostTensor]]) -> Vec<HostTensor> {
        (0..requests[0].len())
            .map(|i| {
                let data: Vec<u8> = requests.iter().flat_map(|r| r[i].data.to_vec()).collect();
                let mut shape = requests[0][i].shape.clone();
                shape[0] = requests.iter().map(|r| r[i].shape[0]).sum();
                HostTensor::new(requests[0][i].datatype, shape, data.into()).unwrap()
            })
            .collect()
    }

    /// Doubles every element and records the batch sizes it saw.
    fn doubler(
        seen: Arc<Mutex<Vec<i64>>>,
    ) -> impl FnMut(&[&[HostTensor]]) -> Result<Vec<HostTensor>, String> {
        move |requests: &[&[HostTensor]]| {
            let inputs = join(requests);
            seen.lock().unwrap().push(inputs[0].shape[0]);
            let doubled: Vec<u8> = inputs[0]
                .data
                .chunks_exact(4)
                .flat_map(|c| (f32::from_le_bytes(c.try_into().unwrap()) * 2.0).to_le_bytes())
                .collect();
            Ok(vec![HostTensor::new(
                DataType::Fp32,
                inputs[0].shape.clone(),
                doubled.into(),
            )?])
        }
    }

    fn policy(max_batch_size: usize) -> Policy {
        Policy {
            enabled: true,
            max_batch_size,
            max_queue_delay: Duration::from_millis(50),
        }
    }

    #[tokio::test]
    async fn queued_requests_share_a_forward_pass_and_get_their_own_rows() {
        let (queue, inbox) = queue(16);
        // Queue everything before the batcher starts, so the batch composition is deterministic.
        let pending: Vec<_> = (0..5)
            .map(|i| {
                queue
                    .submit(vec![fp32_rows(&[i as f32, 10.0 + i as f32], 2)])
                    .unwrap()
            })
            .collect();
        drop(queue);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut model = doubler(seen.clone());
        let worker =
            std::thread::spawn(move || run(inbox, &never(), policy(4), &mut model, &|_, _| {}));
        for (i, reply) in pending.into_iter().enumerate() {
            let batched = reply.await.unwrap().unwrap();
            assert_eq!(
                batched.outputs[0],
                fp32_rows(&[2.0 * i as f32, 20.0 + 2.0 * i as f32], 2)
            );
        }
        worker.join().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![4, 1]);
    }

    #[tokio::test]
    async fn incompatible_shapes_start_a_new_batch() {
        let (queue, inbox) = queue(16);
        let a = queue.submit(vec![fp32_rows(&[1.0, 2.0], 2)]).unwrap();
        let b = queue.submit(vec![fp32_rows(&[1.0, 2.0, 3.0], 3)]).unwrap();
        drop(queue);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut model = doubler(seen.clone());
        std::thread::spawn(move || run(inbox, &never(), policy(8), &mut model, &|_, _| {}));
        assert_eq!(a.await.unwrap().unwrap().batch_size, 1);
        assert_eq!(b.await.unwrap().unwrap().outputs[0].shape, vec![1, 3]);
        assert_eq!(*seen.lock().unwrap(), vec![1, 1]);
    }

    #[tokio::test]
    async fn waits_for_an_arriving_request_but_not_for_nobody() {
        let (queue, inbox) = queue(16);
        let arrival = queue.arrival();
        let first = queue.submit(vec![fp32_rows(&[1.0], 1)]).unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut model = doubler(seen.clone());
        let patient = Policy {
            max_queue_delay: Duration::from_secs(30),
            ..policy(8)
        };
        let worker =
            std::thread::spawn(move || run(inbox, &never(), patient, &mut model, &|_, _| {}));
        // The batcher holds the first request while the second is announced...
        let second = queue.submit(vec![fp32_rows(&[2.0], 1)]).unwrap();
        drop(arrival);
        assert_eq!(first.await.unwrap().unwrap().batch_size, 2);
        assert_eq!(second.await.unwrap().unwrap().batch_size, 2);
        // ...but with nothing announced a lone request goes at once, despite the 30 s delay.
        let started = Instant::now();
        let lone = queue.submit(vec![fp32_rows(&[3.0], 1)]).unwrap();
        assert_eq!(lone.await.unwrap().unwrap().batch_size, 1);
        assert!(started.elapsed() < Duration::from_secs(10));
        drop(queue);
        worker.join().unwrap();
        assert_eq!(*seen.lock().unwrap(), vec![2, 1]);
    }

    #[test]
    fn a_full_queue_refuses_instead_of_growing() {
        let (queue, _inbox) = queue(2);
        assert!(queue.submit(vec![fp32_rows(&[1.0], 1)]).is_ok());
        assert!(queue.submit(vec![fp32_rows(&[1.0], 1)]).is_ok());
        assert!(queue.submit(vec![fp32_rows(&[1.0], 1)]).is_err());
        assert_eq!(queue.depth(), 2);
    }

    #[tokio::test]
    async fn a_failing_batch_is_halved_until_only_the_culprit_fails() {
        let (queue, inbox) = queue(16);
        // Eight requests, the sixth with a value the model refuses.
        let replies: Vec<_> = (0..8)
            .map(|i| {
                let value = if i == 5 { -1.0 } else { i as f32 };
                queue.submit(vec![fp32_rows(&[value], 1)]).unwrap()
            })
            .collect();
        drop(queue);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut double = doubler(seen.clone());
        let mut model = move |requests: &[&[HostTensor]]| -> Result<Vec<HostTensor>, String> {
            let outputs = double(requests)?;
            let negative = join(requests)[0]
                .data
                .chunks_exact(4)
                .any(|c| f32::from_le_bytes(c.try_into().unwrap()) < 0.0);
            if negative {
                return Err("index out of range".to_owned());
            }
            Ok(outputs)
        };
        let passes = Arc::new(Mutex::new(Vec::new()));
        let recorded = passes.clone();
        std::thread::spawn(move || {
            run(inbox, &never(), policy(8), &mut model, &|rows, _| {
                recorded.lock().unwrap().push(rows)
            })
        });
        for (i, reply) in replies.into_iter().enumerate() {
            let result = reply.await.unwrap();
            if i == 5 {
                assert_eq!(result.unwrap_err(), "index out of range");
                continue;
            }
            let batched = result.unwrap();
            assert_eq!(
                batched.outputs[0],
                fp32_rows(&[2.0 * i as f32], 1),
                "job {i}"
            );
            let expected_batch = match i {
                0..=3 => 4,
                4 => 1,
                _ => 2,
            };
            assert_eq!(batched.batch_size, expected_batch, "job {i}");
        }
        // 8 fails; 0-3 pass; 4-7 fails; 4-5 fails; 4 passes; 5 fails alone; 6-7 pass.
        assert_eq!(*seen.lock().unwrap(), vec![8, 4, 4, 2, 1, 1, 2]);
        // Only the passes that answered are counted: the seven good rows, once each.
        assert_eq!(*passes.lock().unwrap(), vec![4, 1, 2]);
    }

    #[tokio::test]
    async fn disabled_batching_runs_each_request_alone() {
        let (queue, inbox) = queue(16);
        let replies: Vec<_> = (0..3)
            .map(|_| queue.submit(vec![fp32_rows(&[1.0], 1)]).unwrap())
            .collect();
        drop(queue);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut model = doubler(seen.clone());
        let disabled = Policy {
            enabled: false,
            ..policy(8)
        };
        std::thread::spawn(move || run(inbox, &never(), disabled, &mut model, &|_, _| {}));
        for reply in replies {
            reply.await.unwrap().unwrap();
        }
        assert_eq!(*seen.lock().unwrap(), vec![1, 1, 1]);
    }

    #[tokio::test]
    async fn a_request_runs_alone_only_after_a_lone_pass_and_without_company() {
        let (queue, inbox) = queue(16);
        let seen = Arc::new(Mutex::new(Vec::new()));
        let mut model = doubler(seen.clone());
        let first = queue.arrival();
        // No pass has run yet, so nothing says how long one takes.
        assert!(!queue.may_run_alone(1));
        // A pass of many rows gives a time per row far under the limit for one row, however
        // loaded the machine is.
        let reply = queue.submit(vec![fp32_rows(&[1.0; 1000], 1)]).unwrap();
        let worker = std::thread::spawn(move || {
            let mut instance = doubler(Arc::new(Mutex::new(Vec::new())));
            run(inbox, &never(), policy(4), &mut instance, &|_, _| {});
        });
        reply.await.unwrap().unwrap();
        drop(first);

        let mut lone = queue.arrival();
        assert!(queue.may_run_alone(1));
        lone.submitted();
        let passes = Arc::new(Mutex::new(Vec::new()));
        let record = passes.clone();
        let answer = run_alone(
            &queue,
            vec![fp32_rows(&[1.5, 2.0], 2)],
            &mut model,
            &move |rows, _| record.lock().unwrap().push(rows),
        )
        .unwrap();
        drop(lone);
        assert_eq!(answer.batch_size, 1);
        assert_eq!(answer.outputs[0].data, fp32_rows(&[3.0, 4.0], 2).data);
        // It ran on this thread, with the model it was given, and was reported as a pass.
        assert_eq!(*seen.lock().unwrap(), vec![1]);
        assert_eq!(*passes.lock().unwrap(), vec![1]);

        // Two requests in flight together: neither, nor the next ones for a while, runs alone.
        let one = queue.arrival();
        let two = queue.arrival();
        let crowded_at = Instant::now();
        assert!(!queue.may_run_alone(1));
        drop((one, two));
        let after = queue.arrival();
        assert!(!queue.may_run_alone(1) || crowded_at.elapsed() >= CROWD_MEMORY);
        drop(after);

        let waiting = queue.arrival();
        let companion = queue.arrival();
        // Waiting out the memory is the point here: it is a span of time, not an event.
        std::thread::sleep(CROWD_MEMORY);
        assert!(
            !queue.may_run_alone(1),
            "two in flight, long after the crowd"
        );
        drop(companion);
        assert!(
            queue.may_run_alone(1),
            "alone again once the memory has passed"
        );
        drop(waiting);
        drop(queue);
        worker.join().unwrap();
    }

    #[tokio::test]
    async fn a_long_pass_is_not_run_alone() {
        let (queue, inbox) = queue(16);
        // Each pass takes at least 3 ms, more than the limit for a pass run alone.
        let mut slow = |requests: &[&[HostTensor]]| {
            std::thread::sleep(Duration::from_millis(3));
            Ok(join(requests))
        };
        let arrival = queue.arrival();
        let reply = queue.submit(vec![fp32_rows(&[1.0], 1)]).unwrap();
        drop(arrival);
        let worker = std::thread::spawn(move || {
            run(inbox, &never(), policy(4), &mut slow, &|_, _| {});
        });
        reply.await.unwrap().unwrap();
        let next = queue.arrival();
        assert!(!queue.may_run_alone(1));
        drop(next);
        drop(queue);
        worker.join().unwrap();
    }

    /// Doubles like [`doubler`] and records the first value of every row it ran.
    fn recording(
        ran: Arc<Mutex<Vec<f32>>>,
    ) -> impl FnMut(&[&[HostTensor]]) -> Result<Vec<HostTensor>, String> {
        let mut double = doubler(Arc::new(Mutex::new(Vec::new())));
        move |requests: &[&[HostTensor]]| {
            let inputs = join(requests);
            let width = inputs[0].row_bytes();
            ran.lock().unwrap().extend(
                inputs[0]
                    .data
                    .chunks_exact(width)
                    .map(|row| f32::from_le_bytes(row[..4].try_into().unwrap())),
            );
            double(requests)
        }
    }

    #[tokio::test]
    async fn a_retired_instance_finishes_what_it_took_and_the_others_serve_the_rest() {
        let (queue, inbox) = queue(256);
        // Job 0 then job 1 of another width: the first instance takes job 0 and carries job 1
        // over to its next batch, the case a retirement must not drop.
        let mut submitted = vec![0.0, 1.0];
        let mut replies = vec![
            (0.0, queue.submit(vec![fp32_rows(&[0.0, 0.0], 2)]).unwrap()),
            (1.0, queue.submit(vec![fp32_rows(&[1.0; 3], 3)]).unwrap()),
        ];
        let submit = |from: usize, to: usize, submitted: &mut Vec<f32>, replies: &mut Vec<_>| {
            for i in from..to {
                let value = i as f32;
                submitted.push(value);
                replies.push((
                    value,
                    queue.submit(vec![fp32_rows(&[value; 2], 2)]).unwrap(),
                ));
            }
        };
        submit(2, 100, &mut submitted, &mut replies);

        let ran = Arc::new(Mutex::new(Vec::new()));
        let (in_pass, first_pass) = crossbeam_channel::bounded(1);
        let (open_gate, gate) = crossbeam_channel::bounded::<()>(1);
        let retiree_shapes = Arc::new(Mutex::new(Vec::new()));
        let shapes = retiree_shapes.clone();
        let mut record = recording(ran.clone());
        // Holds its first forward pass until told, so it is retired in the middle of it.
        let mut retiree = move |requests: &[&[HostTensor]]| {
            if shapes.lock().unwrap().is_empty() {
                in_pass.send(()).unwrap();
                gate.recv().unwrap();
            }
            shapes.lock().unwrap().push(join(requests)[0].shape.clone());
            record(requests)
        };
        let (retire, retired) = crossbeam_channel::bounded::<()>(0);
        let retiree_inbox = inbox.clone();
        let (exited, retiree_exit) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            run(retiree_inbox, &retired, policy(4), &mut retiree, &|_, _| {});
            exited.send(()).unwrap();
        });
        first_pass.recv().unwrap();

        let others: Vec<_> = (0..2)
            .map(|_| {
                let (inbox, mut model) = (inbox.clone(), recording(ran.clone()));
                std::thread::spawn(move || run(inbox, &never(), policy(4), &mut model, &|_, _| {}))
            })
            .collect();
        drop(inbox);
        drop(retire);
        open_gate.send(()).unwrap();
        // It exits although the queue stays open and may still hold work for the others. (A
        // deadline only, so a hang fails the test instead of stalling the suite.)
        retiree_exit
            .recv_timeout(Duration::from_secs(30))
            .expect("the retired instance exits while its queue is open");
        assert_eq!(
            *retiree_shapes.lock().unwrap(),
            vec![vec![1, 2], vec![1, 3]]
        );

        submit(100, 150, &mut submitted, &mut replies);
        drop(queue);
        for (value, reply) in replies {
            let batched = reply.await.unwrap().unwrap();
            let width = if value == 1.0 { 3 } else { 2 };
            assert_eq!(
                batched.outputs[0],
                fp32_rows(&vec![2.0 * value; width], width as i64)
            );
        }
        for other in others {
            other.join().unwrap();
        }
        // Each job ran exactly once: no job was lost, none was run twice.
        let mut ran = ran.lock().unwrap().clone();
        ran.sort_by(f32::total_cmp);
        assert_eq!(ran, submitted);
    }

    #[test]
    fn an_idle_instance_retires_at_once_and_takes_nothing_more() {
        let (queue, inbox) = queue(4);
        // Another instance's handle on the queue, which keeps it open after this one exits.
        let _other = inbox.clone();
        let (retire, retired) = crossbeam_channel::bounded::<()>(0);
        let (exited, exit) = crossbeam_channel::bounded(1);
        std::thread::spawn(move || {
            let mut model = doubler(Arc::new(Mutex::new(Vec::new())));
            run(inbox, &retired, policy(4), &mut model, &|_, _| {});
            exited.send(()).unwrap();
        });
        drop(retire);
        // A deadline only, so a hang fails the test instead of stalling the suite.
        exit.recv_timeout(Duration::from_secs(30))
            .expect("the retired instance exits while its queue is open");
        let _reply = queue.submit(vec![fp32_rows(&[1.0], 1)]).unwrap();
        assert_eq!(queue.depth(), 1);
    }
}
