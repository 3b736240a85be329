//! The inference result cache: identical inputs get the stored outputs without a forward pass.
//!
//! The key is the exact bytes of every input with its datatype and shape (not a hash of them), so
//! a collision can never hand one client another input's answer. One cache per model, so the
//! model is part of the key by construction.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use moka::future::Cache;
use moka::notification::RemovalCause;

use crate::tensor::HostTensor;

/// Cached outputs of one request.
pub type CachedOutputs = Arc<Vec<HostTensor>>;

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
    entries: Cache<Bytes, CachedOutputs>,
    stats: Arc<CacheStats>,
    capacity: u64,
}

/// The lookup key of a request: every input's datatype, shape and bytes, length-prefixed.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CacheKey(Bytes);

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
        CacheKey(key.into())
    }
}

impl ResultCache {
    /// A cache of at most `capacity` results, each valid for `ttl`.
    pub fn new(capacity: u64, ttl: Duration) -> ResultCache {
        let stats = Arc::new(CacheStats::default());
        let listener_stats = stats.clone();
        let entries = Cache::builder()
            .max_capacity(capacity)
            .time_to_live(ttl)
            .eviction_listener(move |_key, _value, cause| {
                let counter = match cause {
                    RemovalCause::Size => &listener_stats.evicted_size,
                    RemovalCause::Expired => &listener_stats.evicted_expired,
                    RemovalCause::Explicit | RemovalCause::Replaced => return,
                };
                counter.fetch_add(1, Ordering::Relaxed);
            })
            .build();
        ResultCache {
            entries,
            stats,
            capacity,
        }
    }

    /// The stored outputs for `key`, counting the hit or miss.
    pub async fn get(&self, key: &CacheKey) -> Option<CachedOutputs> {
        let found = self.entries.get(&key.0).await;
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
        self.entries.insert(key.0, outputs).await;
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
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor::DataType;

    fn input(values: &[u8], shape: Vec<i64>) -> HostTensor {
        HostTensor::new(DataType::Uint8, shape, Bytes::copy_from_slice(values)).unwrap()
    }

    #[test]
    fn key_tells_shapes_with_the_same_bytes_apart() {
        let a = CacheKey::of(&[input(&[1, 2, 3, 4], vec![1, 4])]);
        let b = CacheKey::of(&[input(&[1, 2, 3, 4], vec![2, 2])]);
        assert_ne!(a, b);
        assert_eq!(a, CacheKey::of(&[input(&[1, 2, 3, 4], vec![1, 4])]));
    }

    #[tokio::test]
    async fn counts_hits_misses_and_size_evictions() {
        let cache = ResultCache::new(2, Duration::from_secs(60));
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
        let cache = ResultCache::new(10, Duration::from_millis(20));
        let key = CacheKey::of(&[input(&[1], vec![1, 1])]);
        cache.insert(key.clone(), Arc::new(vec![])).await;
        std::thread::sleep(Duration::from_millis(40));
        assert!(cache.get(&key).await.is_none());
        assert_eq!(cache.entries().await, 0);
        assert_eq!(cache.stats().evicted_expired.load(Ordering::Relaxed), 1);
    }
}
