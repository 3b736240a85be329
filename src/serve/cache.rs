//! The inference result cache: identical inputs get the stored outputs without a forward pass.
//!
//! The key is the exact bytes of every input with its datatype and shape; its hash only picks
//! the slot, and keys are compared byte for byte, so a collision can never hand one client
//! another input's answer. One cache per model, so the model is part of the key by construction.
//!
//! Each key is hashed once (SipHash keyed per process, as moka would hash it, so clients cannot
//! aim for collisions in moka's table) and the hash serves both moka and the SHARDS estimator ([`super::mrc`]), which
//! samples the lookups to predict the hit ratio at other capacities. An unsampled lookup costs
//! one comparison; a sampled one takes the estimator's lock.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;
use moka::policy::EvictionPolicy;
use serde::Serialize;

use super::mrc::{self, Shards};
use crate::config::{CacheConfig, CacheEviction};
use crate::tensor::HostTensor;

/// Cached outputs of one request.
pub type CachedOutputs = Arc<Vec<HostTensor>>;

/// Sampled references an estimate needs before it is reported: a proportion from n samples
/// has a standard error up to 0.5/sqrt(n), 0.05 here; fewer would be noise passed off as a
/// figure.
const MIN_SAMPLED_REFERENCES: u64 = 100;

/// The process's keyed SipHash (what moka uses by default), random per process: a keyed hash,
/// unlike a fast seeded one such as XXH3, has no known seed-independent collisions, so clients
/// cannot flood one slot of moka's table.
static HASHER: LazyLock<RandomState> = LazyLock::new(RandomState::new);

/// Counters the exporter reads; moka keeps no hit/miss statistics of its own.
#[derive(Debug, Default)]
pub struct CacheStats {
    /// Lookups answered from the cache.
    pub hits: AtomicU64,
    /// Lookups that had to run the model.
    pub misses: AtomicU64,
    /// Entries dropped because the cache was full.
    pub evicted_size: AtomicU64,
    /// Entries dropped because their TTL passed.
    pub evicted_expired: AtomicU64,
}

/// A bounded cache of model outputs keyed by the exact inputs.
#[derive(Debug)]
pub struct ResultCache {
    entries: Cache<CacheKey, CachedOutputs, PassThrough>,
    stats: Arc<CacheStats>,
    capacity: u64,
    /// The estimator's threshold, copied out so unsampled lookups never take its lock.
    sample_below: AtomicU64,
    estimator: Mutex<Shards>,
    /// Capacities the curve is reported at, ascending.
    capacities: Vec<u64>,
    target_hit_ratio: f64,
}

/// The lookup key of a request: every input's datatype, shape and bytes, length-prefixed,
/// with their hash.
#[derive(Debug, Clone)]
pub struct CacheKey {
    hash: u64,
    bytes: Bytes,
}

impl PartialEq for CacheKey {
    fn eq(&self, other: &CacheKey) -> bool {
        // The hash comparison only makes unequal keys cheap to tell apart; the bytes decide.
        self.hash == other.hash && self.bytes == other.bytes
    }
}

impl Eq for CacheKey {}

impl Hash for CacheKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.hash);
    }
}

impl CacheKey {
    /// Builds the key of `inputs` (already in the model's input order).
    pub fn of(inputs: &[HostTensor]) -> CacheKey {
        let size: usize = inputs
            .iter()
            .map(|t| t.data.len() + 16 + 8 * t.shape.len())
            .sum();
        let mut key = Vec::with_capacity(size);
        for input in inputs {
            key.extend_from_slice(input.datatype.name().as_bytes());
            key.push(0);
            key.extend_from_slice(&(input.shape.len() as u64).to_le_bytes());
            for dim in &input.shape {
                key.extend_from_slice(&dim.to_le_bytes());
            }
            key.extend_from_slice(&(input.data.len() as u64).to_le_bytes());
            key.extend_from_slice(&input.data);
        }
        CacheKey::hashed(key.into(), &*HASHER)
    }

    /// Keys of one cache must all share `hasher`, or equal bytes would hash apart.
    fn hashed(bytes: Bytes, hasher: &impl BuildHasher) -> CacheKey {
        CacheKey {
            hash: hasher.hash_one(&bytes[..]),
            bytes,
        }
    }
}

/// Hands moka the hash a [`CacheKey`] already carries instead of hashing its bytes again.
#[derive(Debug, Clone, Copy, Default)]
struct PassThrough;

impl BuildHasher for PassThrough {
    type Hasher = PassThroughHasher;

    fn build_hasher(&self) -> PassThroughHasher {
        PassThroughHasher(0)
    }
}

#[derive(Debug)]
struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, hash: u64) {
        self.0 = hash;
    }

    // Only `CacheKey` is hashed here and it writes one u64; anything else still gets a
    // keyed hash rather than a panic.
    fn write(&mut self, bytes: &[u8]) {
        self.0 = HASHER.hash_one((self.0, bytes));
    }
}

/// One point of an estimated hit-ratio curve.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct CurvePoint {
    /// Cache size in entries.
    pub capacity: u64,
    /// Estimated LRU hit ratio at that size.
    pub hit_ratio: f64,
}

/// How [`CacheAdvice::recommended_capacity`] was chosen.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Recommendation {
    /// The smallest capacity whose estimated hit ratio reaches the target.
    Target,
    /// The target is out of reach at any size: the curve's knee, past which doubling the
    /// cache gains less than 1 percentage point (see `mrc::Curve::knee`).
    Knee,
}

/// The estimated hit-ratio curve of a cache and the sizes it suggests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct CacheAdvice {
    /// The configured capacity.
    pub capacity: u64,
    /// Estimated LRU hit ratio at each of `cache.estimate.capacities`; empty until enough
    /// lookups were sampled.
    pub curve: Vec<CurvePoint>,
    /// The `cache.estimate.target_hit_ratio` aimed for.
    pub target_hit_ratio: f64,
    /// The capacity SHARDS suggests, once enough lookups were sampled.
    pub recommended_capacity: Option<u64>,
    /// How `recommended_capacity` was chosen.
    pub recommended_by: Option<Recommendation>,
    /// What the ±100 rule of thumb ([`naive_capacity`](super::naive_capacity)) suggests from
    /// the measured hit ratio.
    pub naive_capacity: u64,
    /// Hits over lookups so far, `None` before the first lookup.
    pub measured_hit_ratio: Option<f64>,
    /// The sampling rate in effect (lowered from the configured one past `max_keys`).
    pub sampling_rate: f64,
    /// Lookups the estimator sampled.
    pub sampled_references: u64,
    /// Lookups in all.
    pub references: u64,
}

impl ResultCache {
    /// A cache as `config` describes it (its capacity, TTL, eviction and estimate).
    pub fn new(config: &CacheConfig) -> ResultCache {
        let stats = Arc::new(CacheStats::default());
        let listener_stats = stats.clone();
        let eviction = match config.eviction {
            CacheEviction::Lru => EvictionPolicy::lru(),
            CacheEviction::TinyLfu => EvictionPolicy::tiny_lfu(),
        };
        let entries = Cache::builder()
            .max_capacity(config.capacity)
            .time_to_live(config.ttl)
            .eviction_policy(eviction)
            .eviction_listener(move |_key, _value, cause| {
                let counter = match cause {
                    RemovalCause::Size => &listener_stats.evicted_size,
                    RemovalCause::Expired => &listener_stats.evicted_expired,
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .build_with_hasher(PassThrough);
        let estimate = &config.estimate;
        let mut capacities = if estimate.capacities.is_empty() {
            [4, 2, 1]
                .iter()
                .map(|d| config.capacity / d)
                .chain([2, 4].iter().map(|m| config.capacity.saturating_mul(*m)))
                .map(|c| c.max(1))
                .collect()
        } else {
            estimate.capacities.clone()
        };
        capacities.sort_unstable();
        capacities.dedup();
        let estimator = Shards::new(estimate.sampling_rate, estimate.max_keys);
        ResultCache {
            entries,
            stats,
            capacity: config.capacity,
            sample_below: AtomicU64::new(estimator.threshold()),
            estimator: Mutex::new(estimator),
            capacities,
            target_hit_ratio: estimate.target_hit_ratio,
        }
    }

    /// The stored outputs for `key`, counting the hit or miss.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedOutputs> {
        if mrc::sample_value(key.hash) < self.sample_below.load(Ordering::Relaxed) {
            let mut estimator = self.estimator();
            estimator.observe(key.hash);
            self.sample_below
                .store(estimator.threshold(), Ordering::Relaxed);
        }
        let found = self.entries.get(key).await;
        let counter = if found.is_some() {
            &self.stats.hits
        } else {
            &self.stats.misses
        };
        counter.fetch_add(1, Ordering::Relaxed);
        found
    }

    /// Stores outputs for `key`.
    pub async fn insert(&self, key: CacheKey, outputs: CachedOutputs) {
        self.entries.insert(key, outputs).await;
    }

    /// Hit, miss and eviction counters.
    pub fn stats(&self) -> &CacheStats {
        &self.stats
    }

    /// Entries held now, after applying pending evictions (so the eviction counters are current).
    pub async fn entries(&self) -> u64 {
        self.entries.run_pending_tasks().await;
        self.entries.entry_count()
    }

    /// Entries held, without applying pending evictions (cheap, for scrapes).
    pub fn approximate_entries(&self) -> u64 {
        self.entries.entry_count()
    }

    /// Most entries the cache holds.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// The estimated hit-ratio curve at the configured capacities and the capacities it and
    /// the rule of thumb suggest. Cheap enough for every scrape (linear in the estimator's
    /// histogram, at most `max(max_keys, 1024)` buckets).
    pub fn advice(&self) -> CacheAdvice {
        let hits = self.stats.hits.load(Ordering::Relaxed);
        let references = hits + self.stats.misses.load(Ordering::Relaxed);
        let measured_hit_ratio = (references > 0).then(|| hits as f64 / references as f64);
        let (curve, sampling_rate, sampled_references) = {
            let estimator = self.estimator();
            let sampled = estimator.sampled_references();
            let curve = (sampled >= MIN_SAMPLED_REFERENCES)
                .then(|| estimator.curve(references))
                .flatten();
            (curve, estimator.rate(), sampled)
        };
        let recommended =
            curve
                .as_ref()
                .map(|curve| match curve.capacity_for(self.target_hit_ratio) {
                    Some(capacity) => (capacity, Recommendation::Target),
                    None => (curve.knee(), Recommendation::Knee),
                });
        CacheAdvice {
            capacity: self.capacity,
            curve: curve
                .map(|curve| {
                    self.capacities
                        .iter()
                        .map(|&capacity| CurvePoint {
                            capacity,
                            hit_ratio: curve.hit_ratio(capacity),
                        })
                        .collect()
                })
                .unwrap_or_default(),
            target_hit_ratio: self.target_hit_ratio,
            recommended_capacity: recommended.map(|(capacity, _)| capacity),
            recommended_by: recommended.map(|(_, by)| by),
            naive_capacity: measured_hit_ratio.map_or(self.capacity, |ratio| {
                mrc::naive_capacity(self.capacity, ratio)
            }),
            measured_hit_ratio,
            sampling_rate,
            sampled_references,
            references,
        }
    }

    /// The estimator; a panic elsewhere while it was held leaves counts, not broken memory,
    /// so a poisoned lock is still used.
    fn estimator(&self) -> std::sync::MutexGuard<'_, Shards> {
        self.estimator
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use super::*;
    use crate::config::{CacheEstimateConfig, Config};
    use crate::tensor::DataType;

    fn input(values: &[u8], shape: Vec<i64>) -> HostTensor {
        HostTensor::new(DataType::Uint8, shape, Bytes::copy_from_slice(values)).unwrap()
    }

    fn config(capacity: u64, ttl: Duration) -> CacheConfig {
        CacheConfig {
            enabled: true,
            capacity,
            ttl,
            ..CacheConfig::default()
        }
    }

    #[test]
    fn key_tells_shapes_with_the_same_bytes_apart() {
        let a = CacheKey::of(&[input(&[1, 2, 3, 4], vec![1, 4])]);
        let b = CacheKey::of(&[input(&[1, 2, 3, 4], vec![2, 2])]);
        assert_ne!(a, b);
        assert_eq!(a, CacheKey::of(&[input(&[1, 2, 3, 4], vec![1, 4])]));
    }

    #[tokio::test]
    async fn a_hash_collision_never_returns_another_inputs_outputs() {
        let cache = ResultCache::new(&config(10, Duration::from_secs(60)));
        let a = CacheKey {
            hash: 42,
            bytes: Bytes::from_static(b"a"),
        };
        let b = CacheKey {
            hash: 42,
            bytes: Bytes::from_static(b"b"),
        };
        let outputs: CachedOutputs = Arc::new(vec![input(&[1], vec![1, 1])]);
        cache.insert(a.clone(), outputs.clone()).await;
        assert_eq!(cache.get(&b).await, None);
        assert_eq!(cache.get(&a).await, Some(outputs));
    }

    #[tokio::test]
    async fn counts_hits_misses_and_size_evictions() {
        let cache = ResultCache::new(&config(2, Duration::from_secs(60)));
        let outputs: CachedOutputs = Arc::new(vec![input(&[9], vec![1, 1])]);
        let keys: Vec<_> = (0..5u8)
            .map(|i| CacheKey::of(&[input(&[i], vec![1, 1])]))
            .collect();
        assert!(cache.get(&keys[0]).await.is_none());
        cache.insert(keys[0].clone(), outputs.clone()).await;
        assert_eq!(cache.get(&keys[0]).await, Some(outputs.clone()));
        for key in &keys[1..] {
            cache.insert(key.clone(), outputs.clone()).await;
        }
        assert_eq!(cache.entries().await, 2);
        let stats = cache.stats();
        assert_eq!(stats.hits.load(Ordering::Relaxed), 1);
        assert_eq!(stats.misses.load(Ordering::Relaxed), 1);
        assert_eq!(stats.evicted_size.load(Ordering::Relaxed), 3);
    }

    #[tokio::test]
    async fn expired_entries_are_misses_and_counted() {
        let cache = ResultCache::new(&config(10, Duration::from_millis(20)));
        let key = CacheKey::of(&[input(&[1], vec![1, 1])]);
        cache.insert(key.clone(), Arc::new(vec![])).await;
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&key).await.is_none());
        assert_eq!(cache.entries().await, 0);
        assert_eq!(cache.stats().evicted_expired.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn eviction_and_estimate_are_read_and_checked() {
        let model = |cache: &str| {
            format!(
                "models:\n  - name: m\n    path: m.pt\n    \
                 inputs: [{{name: i, datatype: FP32, shape: [-1, 1]}}]\n    \
                 outputs: [{{name: o, datatype: FP32, shape: [-1, 1]}}]\n    cache: {cache}\n"
            )
        };
        let parsed = Config::parse(
            &model(
                "{enabled: true, capacity: 100, eviction: tiny_lfu, \
                 estimate: {sampling_rate: 0.5, capacities: [10, 1000], target_hit_ratio: 0.8}}",
            ),
            "t.yaml",
        )
        .unwrap();
        let cache = &parsed.models[0].cache;
        assert_eq!(cache.eviction, CacheEviction::TinyLfu);
        assert_eq!(
            cache.estimate,
            CacheEstimateConfig {
                sampling_rate: 0.5,
                max_keys: 8192,
                capacities: vec![10, 1000],
                target_hit_ratio: 0.8,
            }
        );
        let defaults = Config::parse(&model("{enabled: true}"), "t.yaml").unwrap();
        assert_eq!(defaults.models[0].cache.eviction, CacheEviction::Lru);
        for (cache, error) in [
            (
                "{estimate: {sampling_rate: 0}}",
                "cache.estimate.sampling_rate: 0 is not in (0, 1]",
            ),
            (
                "{estimate: {sampling_rate: 1.5}}",
                "cache.estimate.sampling_rate: 1.5 is not in (0, 1]",
            ),
            (
                "{estimate: {max_keys: 0}}",
                "cache.estimate.max_keys: must be between 1 and 4194304",
            ),
            (
                "{estimate: {capacities: [5, 0]}}",
                "cache.estimate.capacities[1]: must be at least 1",
            ),
            (
                "{estimate: {target_hit_ratio: 0}}",
                "cache.estimate.target_hit_ratio: 0 is not in (0, 1]",
            ),
            ("{eviction: fifo}", "unknown variant `fifo`"),
            ("{estimate: {rate: 0.1}}", "unknown field `rate`"),
        ] {
            let err = Config::parse(&model(cache), "t.yaml")
                .unwrap_err()
                .to_string();
            assert!(err.contains(error), "{cache}: {err}");
        }
    }

    #[tokio::test]
    async fn advice_waits_for_enough_samples() {
        let mut every = config(1000, Duration::from_secs(60));
        every.estimate.sampling_rate = 1.0;
        let cache = ResultCache::new(&every);
        let outputs: CachedOutputs = Arc::new(vec![]);
        let keys: Vec<_> = (0..50u8)
            .map(|i| CacheKey::of(&[input(&[i], vec![1, 1])]))
            .collect();
        for key in &keys {
            cache.insert(key.clone(), outputs.clone()).await;
            assert!(cache.get(key).await.is_some());
        }
        let early = cache.advice();
        assert_eq!(early.sampled_references, 50);
        assert!(early.curve.is_empty() && early.recommended_capacity.is_none());
        assert_eq!(early.measured_hit_ratio, Some(1.0));
        // A hit ratio above 0.9: the rule of thumb shrinks by 100.
        assert_eq!(early.naive_capacity, 900);
        // 50 first lookups (cold to the estimator) and 50 reuses at distance 49.
        for key in &keys {
            cache.get(key).await;
        }
        let advice = cache.advice();
        assert_eq!(advice.sampling_rate, 1.0);
        assert_eq!(
            advice.curve,
            [
                (250, 0.5),
                (500, 0.5),
                (1000, 0.5),
                (2000, 0.5),
                (4000, 0.5)
            ]
            .map(|(capacity, hit_ratio)| CurvePoint {
                capacity,
                hit_ratio
            })
        );
        // 0.9 is out of reach (half the lookups were first ones); the knee is all 50 keys.
        assert_eq!(advice.recommended_capacity, Some(50));
        assert_eq!(advice.recommended_by, Some(Recommendation::Knee));
        assert_eq!(advice.references, 100);
    }

    /// splitmix64, so the stream is the same on every run and platform.
    fn next_random(state: &mut u64) -> u64 {
        *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// `requests` ranks in 0..keys, Zipf-distributed with `exponent` (inverse-CDF sampling).
    fn zipf_stream(keys: usize, exponent: f64, requests: usize, seed: u64) -> Vec<u32> {
        let mut cdf = Vec::with_capacity(keys);
        let mut sum = 0.0;
        for rank in 1..=keys {
            sum += (rank as f64).powf(-exponent);
            cdf.push(sum);
        }
        let mut state = seed;
        (0..requests)
            .map(|_| {
                let u = (next_random(&mut state) >> 11) as f64 / (1u64 << 53) as f64 * sum;
                cdf.partition_point(|&c| c < u).min(keys - 1) as u32
            })
            .collect()
    }

    /// moka applies evictions lazily (after 64 pending writes). Each lookup inserts at most one
    /// entry, so settling every 16 keeps the measured cache within 16 entries of its capacity.
    const SETTLE_EVERY: usize = 16;

    /// Serves `stream` through a fresh cache (a miss inserts), applying moka's pending
    /// evictions every `settle_every` lookups; returns the cache and the most entries seen.
    async fn replay(
        keys: &[CacheKey],
        stream: &[u32],
        config: &CacheConfig,
        settle_every: usize,
    ) -> (ResultCache, u64) {
        let cache = ResultCache::new(config);
        let outputs: CachedOutputs = Arc::new(vec![]);
        let mut most = 0;
        for (i, &rank) in stream.iter().enumerate() {
            let key = &keys[rank as usize];
            if cache.get(key).await.is_none() {
                cache.insert(key.clone(), outputs.clone()).await;
            }
            if i % settle_every == 0 {
                most = most.max(cache.entries().await);
            }
        }
        (cache, most)
    }

    fn measured(cache: &ResultCache) -> f64 {
        cache.advice().measured_hit_ratio.unwrap_or(0.0)
    }

    #[test]
    fn shards_predicts_the_hit_ratio_at_other_capacities() {
        let started = Instant::now();
        // SHARDS is accurate with many sampled keys (about 5,000 here at 1 %) and at sizes well
        // above 1/R = 100 entries. Simulated over 20 hash seeds this setup's error averaged
        // 0.013 (worst 0.030); with 50,000 keys it averaged 0.04, too few keys for 1 %.
        const KEYS: usize = 500_000;
        let stream = zipf_stream(KEYS, 0.9, 500_000, 1);
        // SipHash with fixed keys makes the sample, and so the estimate, reproducible.
        let fixed =
            std::hash::BuildHasherDefault::<std::collections::hash_map::DefaultHasher>::default();
        let keys: Vec<CacheKey> = (0..KEYS as u64)
            .map(|rank| CacheKey::hashed(Bytes::copy_from_slice(&rank.to_le_bytes()), &fixed))
            .collect();
        let others = [5_000, 50_000, 200_000];
        let mut base = config(20_000, Duration::from_secs(3600));
        base.estimate.capacities = vec![5_000, 20_000, 50_000, 200_000];
        // The four replays are independent: one thread (and runtime) each.
        let configs: Vec<CacheConfig> = std::iter::once(base.clone())
            .chain(others.map(|capacity| config(capacity, base.ttl)))
            .collect();
        let runs: Vec<(ResultCache, u64)> = std::thread::scope(|scope| {
            let handles: Vec<_> = configs
                .iter()
                .map(|config| {
                    let (keys, stream) = (&keys, &stream);
                    scope.spawn(move || {
                        tokio::runtime::Builder::new_current_thread()
                            .build()
                            .unwrap()
                            .block_on(replay(keys, stream, config, SETTLE_EVERY))
                    })
                })
                .collect();
            handles.into_iter().map(|h| h.join().unwrap()).collect()
        });
        let advice = runs[0].0.advice();
        let naive = measured(&runs[0].0);
        assert_eq!(
            advice.sampling_rate,
            mrc::threshold_of(0.01) as f64 / 16_777_216.0
        );
        println!(
            "Zipf 0.9, {KEYS} keys, {} lookups; measured at {} entries: {naive:.4}; \
             {} sampled at rate {:.4}",
            stream.len(),
            base.capacity,
            advice.sampled_references,
            advice.sampling_rate
        );
        println!("capacity  measured  SHARDS   error   naive   error  most settled entries");
        let at = |capacity: u64| {
            advice
                .curve
                .iter()
                .find(|p| p.capacity == capacity)
                .map_or(f64::NAN, |p| p.hit_ratio)
        };
        // The estimate at the size it ran at, for the README's table (not in the mean: the
        // question is the other sizes).
        let own = at(base.capacity);
        println!(
            "{:>8}  {naive:>8.4}  {own:>6.4}  {:>6.4}  {naive:>6.4}  {:>6.4}  (the run itself)",
            base.capacity,
            (own - naive).abs(),
            0.0
        );
        let mut shards_errors = Vec::new();
        for (capacity, (other, most)) in others.into_iter().zip(&runs[1..]) {
            let truth = measured(other);
            let estimate = at(capacity);
            shards_errors.push((estimate - truth).abs());
            println!(
                "{capacity:>8}  {truth:>8.4}  {estimate:>6.4}  {:>6.4}  {naive:>6.4}  {:>6.4}  {most}",
                (estimate - truth).abs(),
                (naive - truth).abs()
            );
            // Once settled, moka holds at most its capacity.
            assert!(*most <= capacity, "{most} entries in a cache of {capacity}");
        }
        let mae = shards_errors.iter().sum::<f64>() / shards_errors.len() as f64;
        println!(
            "SHARDS mean absolute error {mae:.4}; recommended {:?} by {:?}, naive {}; {:.1?}",
            advice.recommended_capacity,
            advice.recommended_by,
            advice.naive_capacity,
            started.elapsed()
        );
        assert!(mae <= 0.03, "mean absolute error {mae}");
    }
}
