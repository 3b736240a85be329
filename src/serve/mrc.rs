//! Miss-ratio curves by SHARDS (Waldspurger et al., "Efficient MRC Construction with SHARDS",
//! FAST 2015): the hit ratio an LRU cache would have at sizes other than the configured one,
//! from a spatially hashed sample of the lookups.
//!
//! A reference is sampled iff the top 24 bits of its key's hash are below a threshold `T`, so
//! the rate is `R = T / 2^24` and a key is either always or never in the sample. On sampled
//! references the LRU stack (reuse) distance is exact among sampled keys; divided by `R` it
//! estimates the distance among all keys. A cache of size `C` hits a reference whose distance
//! is below `C`. SHARDS_adj then moves the difference between the expected (`N·R`) and actual
//! number of sampled references into distance 0, which corrects most of the error of a hot key
//! falling in or out of the sample. Memory is bounded (fixed-size SHARDS): past `max_keys`
//! tracked keys, the threshold drops to exclude the keys with the largest hash values and what
//! was counted is rescaled to the new rate.
//!
//! The estimate ignores TTL expiry: with a TTL shorter than typical reuse intervals it is
//! optimistic.

use std::collections::{BTreeSet, HashMap};

/// Bits of the hash compared against the threshold: the paper's modulus `P = 2^24`, fine
/// enough that lowering the threshold by one step drops few keys at a time.
const SAMPLE_BITS: u32 = 24;

/// `P`, the number of distinct sample values.
const MODULUS: u64 = 1 << SAMPLE_BITS;

/// Fewest histogram buckets; more only when `max_keys` is larger, so exact distances up to
/// `max_keys` fit at rate 1.
const MIN_BUCKETS: usize = 1024;

/// Resolution of the knee search: capacities step by a factor of 2^(1/32) (about 2 %).
const KNEE_STEPS_PER_DOUBLING: f64 = 32.0;

/// A doubling of the capacity that gains less hit ratio than this is not worth it.
const KNEE_GAIN: f64 = 0.01;

/// The value of `hash` compared against the threshold; a reference is sampled iff it is below
/// [`Shards::threshold`].
pub fn sample_value(hash: u64) -> u64 {
    hash >> (64 - SAMPLE_BITS)
}

/// The threshold of a sampling rate in (0, 1]: rates below 2^-24 round up to it.
pub fn threshold_of(rate: f64) -> u64 {
    ((rate * MODULUS as f64).round() as u64).clamp(1, MODULUS)
}

/// The tutorial's rule of thumb, which has no curve: shrink by 100 above a 0.9 hit ratio, grow
/// by 100 below 0.7, otherwise keep `capacity`. Kept so reports can show it beside SHARDS.
pub fn naive_capacity(capacity: u64, hit_ratio: f64) -> u64 {
    if hit_ratio > 0.9 {
        capacity.saturating_sub(100).max(1)
    } else if hit_ratio < 0.7 {
        capacity.saturating_add(100)
    } else {
        capacity
    }
}

/// A SHARDS estimator with bounded memory. Pure and synchronous; the caller locks it.
#[derive(Debug)]
pub struct Shards {
    threshold: u64,
    max_keys: usize,
    /// Last access position of each tracked key (by its 64-bit hash: a collision merges two
    /// keys in an estimate, which is harmless).
    last: HashMap<u64, u32>,
    /// The tracked keys ordered by hash, so those with the largest sample values go first.
    by_hash: BTreeSet<u64>,
    /// 1 at the last position of every tracked key, so a reuse distance is a range sum.
    positions: Fenwick,
    next: u32,
    histogram: Histogram,
    /// Sampled references counted, rescaled with the histogram whenever the rate drops.
    sampled: f64,
    /// Sampled references seen, never rescaled.
    observed: u64,
}

impl Shards {
    /// An estimator sampling at `rate` (in (0, 1]) that tracks at most `max_keys` keys (≥ 1).
    pub fn new(rate: f64, max_keys: usize) -> Shards {
        let max_keys = max_keys.max(1);
        // Room for twice the tracked keys, so compaction runs at most every `max_keys + 2`
        // sampled references and costs O(log n) per reference amortised.
        let slots = 2 * max_keys + 2;
        Shards {
            threshold: threshold_of(rate),
            max_keys,
            last: HashMap::new(),
            by_hash: BTreeSet::new(),
            positions: Fenwick::new(slots),
            next: 0,
            histogram: Histogram::new(max_keys.max(MIN_BUCKETS)),
            sampled: 0.0,
            observed: 0,
        }
    }

    /// A reference is sampled iff `sample_value(hash) < threshold()`.
    pub fn threshold(&self) -> u64 {
        self.threshold
    }

    /// The sampling rate in effect, lowered from the configured one when `max_keys` was
    /// exceeded (0 only if more than `max_keys` keys share the lowest sample value).
    pub fn rate(&self) -> f64 {
        self.threshold as f64 / MODULUS as f64
    }

    /// Sampled references seen so far.
    pub fn sampled_references(&self) -> u64 {
        self.observed
    }

    /// Keys tracked now (at most `max_keys`).
    #[cfg(test)]
    fn tracked_keys(&self) -> usize {
        self.last.len()
    }

    /// Records a reference to the key with `hash`. Callers may skip unsampled hashes; this
    /// checks again because the threshold may have dropped since the caller looked.
    pub fn observe(&mut self, hash: u64) {
        if sample_value(hash) >= self.threshold {
            return;
        }
        self.observed += 1;
        self.sampled += 1.0;
        if self.next as usize == self.positions.len() {
            self.compact();
        }
        let now = self.next;
        self.next += 1;
        match self.last.insert(hash, now) {
            Some(before) => {
                let distance = self.positions.prefix(now) - self.positions.prefix(before + 1);
                self.positions.add(before, -1);
                self.histogram.add(f64::from(distance) / self.rate());
            }
            None => {
                self.by_hash.insert(hash);
            }
        }
        self.positions.add(now, 1);
        if self.last.len() > self.max_keys {
            self.lower_threshold();
        }
    }

    /// The curve after `references` lookups in all (sampled or not), or `None` before any
    /// sampled reference (or when sampling stopped).
    pub fn curve(&self, references: u64) -> Option<Curve> {
        let expected = references as f64 * self.rate();
        if self.observed == 0 || expected <= 0.0 {
            return None;
        }
        let mut cumulative = Vec::with_capacity(self.histogram.counts.len() + 1);
        let mut sum = 0.0;
        cumulative.push(sum);
        for count in &self.histogram.counts {
            sum += count;
            cumulative.push(sum);
        }
        Some(Curve {
            counts: self.histogram.counts.clone(),
            cumulative,
            width: self.histogram.width,
            adjustment: expected - self.sampled,
            total: expected,
        })
    }

    /// Renumbers the tracked keys' positions 0..n in access order, freeing the positions after.
    fn compact(&mut self) {
        let mut order: Vec<(u32, u64)> = self.last.iter().map(|(&h, &p)| (p, h)).collect();
        order.sort_unstable();
        self.positions.clear();
        for (position, (_, hash)) in (0u32..).zip(order) {
            self.last.insert(hash, position);
            self.positions.add(position, 1);
        }
        self.next = self.last.len() as u32;
    }

    /// Fixed-size SHARDS: drops the keys with the largest sample value until `max_keys` hold,
    /// and rescales the counts to the lower rate as if it had applied all along.
    fn lower_threshold(&mut self) {
        while self.last.len() > self.max_keys {
            let Some(&largest) = self.by_hash.last() else {
                break;
            };
            let threshold = sample_value(largest);
            while let Some(&hash) = self.by_hash.last()
                && sample_value(hash) >= threshold
            {
                self.by_hash.pop_last();
                if let Some(position) = self.last.remove(&hash) {
                    self.positions.add(position, -1);
                }
            }
            let factor = threshold as f64 / self.threshold as f64;
            self.histogram.scale(factor);
            self.sampled *= factor;
            self.threshold = threshold;
        }
    }
}

/// An estimated hit-ratio curve: evaluate it at any capacity.
#[derive(Debug, Clone)]
pub struct Curve {
    counts: Vec<f64>,
    /// `cumulative[k]` is the sum of `counts[..k]`.
    cumulative: Vec<f64>,
    width: f64,
    /// SHARDS_adj's correction, counted at distance 0 (a hit at every capacity ≥ 1).
    adjustment: f64,
    /// Expected sampled references, `N·R`.
    total: f64,
}

impl Curve {
    /// The estimated LRU hit ratio at `capacity` entries. Within a histogram bucket the
    /// distances are taken as evenly spread, so the curve is piecewise linear.
    pub fn hit_ratio(&self, capacity: u64) -> f64 {
        if capacity == 0 {
            return 0.0;
        }
        let x = capacity as f64 / self.width;
        let bucket = x.floor() as usize;
        let hits = match self.counts.get(bucket) {
            Some(count) => self.cumulative[bucket] + count * (x - bucket as f64),
            None => self.cumulative[self.counts.len()],
        };
        ((hits + self.adjustment) / self.total).clamp(0.0, 1.0)
    }

    /// The smallest capacity past which the curve is flat (every sampled reuse fits).
    fn flat_from(&self) -> u64 {
        ((self.counts.len() as f64 * self.width).ceil() as u64).max(1)
    }

    /// The smallest capacity whose estimated hit ratio reaches `target`, if any does.
    pub fn capacity_for(&self, target: f64) -> Option<u64> {
        let (mut low, mut high) = (1, self.flat_from());
        if self.hit_ratio(high) < target {
            return None;
        }
        while low < high {
            let mid = low + (high - low) / 2;
            if self.hit_ratio(mid) >= target {
                high = mid;
            } else {
                low = mid + 1;
            }
        }
        Some(low)
    }

    /// The knee: the smallest capacity `C` such that, at `C` and every larger size, doubling
    /// the cache gains less than 1 percentage point of hit ratio. Doubling is scale-free, so the
    /// answer does not depend on how the capacity axis is drawn (a point-farthest-from-chord
    /// knee does), and "every larger size" keeps a plateau before a working-set cliff from
    /// passing for the knee. Sizes are searched in steps of 2^(1/32) (about 2 %).
    pub fn knee(&self) -> u64 {
        let flat = self.flat_from();
        let mut grid = vec![1u64];
        while let Some(&last) = grid.last()
            && last < flat
        {
            let step = (last as f64 * 2f64.powf(1.0 / KNEE_STEPS_PER_DOUBLING)).ceil() as u64;
            grid.push(step.max(last + 1).min(flat));
        }
        let gains = |c: u64| self.hit_ratio(c.saturating_mul(2)) - self.hit_ratio(c);
        match grid.iter().rposition(|&c| gains(c) >= KNEE_GAIN) {
            // At `flat` the gain is 0, so a failing point always has a successor.
            Some(i) => grid[(i + 1).min(grid.len() - 1)],
            None => 1,
        }
    }
}

/// Histogram of scaled reuse distances; bucket width doubles (pairs merge) when a distance
/// would fall past the last bucket, which bounds memory whatever the rate drops to.
#[derive(Debug)]
struct Histogram {
    counts: Vec<f64>,
    width: f64,
    max_buckets: usize,
}

impl Histogram {
    fn new(max_buckets: usize) -> Histogram {
        Histogram {
            counts: Vec::new(),
            width: 1.0,
            max_buckets,
        }
    }

    fn add(&mut self, distance: f64) {
        let mut bucket = (distance / self.width) as usize;
        while bucket >= self.max_buckets {
            self.counts = self
                .counts
                .chunks(2)
                .map(|pair| pair.iter().sum())
                .collect();
            self.width *= 2.0;
            bucket = (distance / self.width) as usize;
        }
        if bucket >= self.counts.len() {
            self.counts.resize(bucket + 1, 0.0);
        }
        self.counts[bucket] += 1.0;
    }

    fn scale(&mut self, factor: f64) {
        for count in &mut self.counts {
            *count *= factor;
        }
    }
}

/// A Fenwick (binary indexed) tree over positions: O(log n) point updates and prefix sums.
#[derive(Debug)]
struct Fenwick(Vec<i32>);

impl Fenwick {
    fn new(len: usize) -> Fenwick {
        Fenwick(vec![0; len + 1])
    }

    fn len(&self) -> usize {
        self.0.len() - 1
    }

    fn clear(&mut self) {
        self.0.fill(0);
    }

    fn add(&mut self, position: u32, delta: i32) {
        let mut i = position as usize + 1;
        while i < self.0.len() {
            self.0[i] += delta;
            i += i & i.wrapping_neg();
        }
    }

    /// The sum over positions `0..end`.
    fn prefix(&self, end: u32) -> i32 {
        let (mut i, mut sum) = (end as usize, 0);
        while i > 0 {
            sum += self.0[i];
            i -= i & i.wrapping_neg();
        }
        sum
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A hash that every threshold samples (sample value 0) and that tells keys apart.
    fn always_sampled(key: u64) -> u64 {
        key
    }

    /// Hit ratio of a real LRU cache of `capacity` over `keys` (cold misses count as misses).
    fn lru_hit_ratio(keys: &[u64], capacity: usize) -> f64 {
        let mut stack: Vec<u64> = Vec::new();
        let mut hits = 0;
        for &key in keys {
            if let Some(i) = stack.iter().position(|&k| k == key) {
                stack.remove(i);
                hits += 1;
            } else if stack.len() == capacity {
                stack.remove(0);
            }
            stack.push(key);
        }
        hits as f64 / keys.len() as f64
    }

    fn pseudo_random(seed: &mut u64) -> u64 {
        *seed = seed.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = *seed;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    #[test]
    fn at_rate_one_the_curve_is_exact_lru() {
        // Hand-made: loops, a scan, re-references; distances 0 to 9.
        let mut keys: Vec<u64> = vec![1, 2, 3, 1, 1, 2, 4, 5, 3, 1, 6, 7, 8, 9, 10, 2, 1, 4];
        keys.extend([1, 2, 3, 4, 5, 6].repeat(3));
        let mut shards = Shards::new(1.0, 64);
        for &key in &keys {
            shards.observe(always_sampled(key));
        }
        let curve = shards.curve(keys.len() as u64).unwrap();
        for capacity in [1, 2, 3, 4, 5, 6, 8, 10, 20] {
            assert_eq!(
                curve.hit_ratio(capacity),
                lru_hit_ratio(&keys, capacity as usize),
                "capacity {capacity}"
            );
        }
        // 10 distinct keys, so from 10 entries on only cold misses remain.
        assert_eq!(
            curve.hit_ratio(10),
            (keys.len() - 10) as f64 / keys.len() as f64
        );
    }

    #[test]
    fn exact_through_compactions() {
        // A small max_keys compacts the position space every few references.
        let mut seed = 7;
        let keys: Vec<u64> = (0..5000).map(|_| pseudo_random(&mut seed) % 12).collect();
        let mut shards = Shards::new(1.0, 16);
        for &key in &keys {
            shards.observe(always_sampled(key));
        }
        assert_eq!(shards.rate(), 1.0);
        let curve = shards.curve(keys.len() as u64).unwrap();
        for capacity in [1, 3, 6, 11, 12] {
            assert_eq!(
                curve.hit_ratio(capacity),
                lru_hit_ratio(&keys, capacity as usize),
                "capacity {capacity}"
            );
        }
    }

    #[test]
    fn distances_scale_by_the_rate_and_unsampled_hashes_are_ignored() {
        let mut shards = Shards::new(0.5, 64);
        let threshold = shards.threshold();
        assert_eq!(threshold, MODULUS / 2);
        let sampled = |k: u64| k; // sample value 0
        let unsampled = |k: u64| (threshold << 40) | k;
        // a b c a: distance 2 among sampled keys, scaled to 4.
        for hash in [sampled(1), sampled(2), unsampled(9), sampled(3), sampled(1)] {
            shards.observe(hash);
        }
        assert_eq!(shards.sampled_references(), 4);
        // 8 references in all, 4 expected sampled: no adjustment.
        let curve = shards.curve(8).unwrap();
        assert_eq!(curve.hit_ratio(4), 0.0);
        assert_eq!(curve.hit_ratio(5), 0.25);
    }

    #[test]
    fn adjustment_moves_the_sampling_error_to_distance_zero() {
        let mut shards = Shards::new(0.5, 64);
        for key in [1, 2, 1] {
            shards.observe(always_sampled(key));
        }
        // 3 sampled where 10 references at rate 0.5 expect 5: 2 more hits at distance 0.
        let curve = shards.curve(10).unwrap();
        assert_eq!(curve.hit_ratio(1), 2.0 / 5.0);
        // Distance 1 scaled by 1 / 0.5 is 2: a hit from capacity 3 on.
        assert_eq!(curve.hit_ratio(3), 3.0 / 5.0);
        // Too many sampled (a hot key in the sample): the adjustment subtracts, clamped at 0.
        let curve = shards.curve(4).unwrap();
        assert_eq!(curve.hit_ratio(1), 0.0);
        assert_eq!(curve.hit_ratio(3), 0.0);
        assert!(Shards::new(0.5, 64).curve(100).is_none());
    }

    #[test]
    fn max_keys_holds_and_the_rate_drops() {
        let mut shards = Shards::new(1.0, 100);
        let mut seed = 11;
        for _ in 0..20_000 {
            let hash = pseudo_random(&mut seed);
            shards.observe(hash);
            assert!(shards.tracked_keys() <= 100);
        }
        // About 100 of 20,000 distinct keys fit: the rate ends near 100 / 20,000.
        let rate = shards.rate();
        assert!(rate < 0.01 && rate > 0.002, "rate {rate}");
        // Every tracked key is below the threshold, and no key was ever reused.
        assert!(
            shards
                .last
                .keys()
                .all(|&h| sample_value(h) < shards.threshold())
        );
        assert!(shards.histogram.counts.is_empty());
    }

    #[test]
    fn fixed_size_rescaling_keeps_a_looping_curve() {
        // 400 keys in a loop, each seen 50 times: LRU hits every reuse from 400 entries on.
        let mut seed = 3;
        let keys: Vec<u64> = (0..400).map(|_| pseudo_random(&mut seed)).collect();
        let mut shards = Shards::new(1.0, 50);
        let mut references = 0;
        for _ in 0..50 {
            for &key in &keys {
                shards.observe(key);
                references += 1;
            }
        }
        assert!(shards.tracked_keys() <= 50);
        let curve = shards.curve(references).unwrap();
        // About 50 of 400 keys sampled, so the rate only roughly matches the sampled share of
        // the keys; the adjustment puts that difference (8 % here) at distance 0, under the
        // cliff. The cliff itself stays between 300 and 480 entries.
        let (below, full) = (curve.hit_ratio(300), curve.hit_ratio(480));
        assert!(full - below > 0.85, "{below} to {full}");
        assert!((full - 49.0 / 50.0).abs() < 0.05, "{full}");
    }

    #[test]
    fn capacity_for_target_and_knee() {
        // 10 keys in a loop, 10 rounds: hit ratio 0 below 10 entries, 0.9 from 10 on.
        let mut shards = Shards::new(1.0, 64);
        for _ in 0..10 {
            for key in 0..10 {
                shards.observe(always_sampled(key));
            }
        }
        let curve = shards.curve(100).unwrap();
        assert_eq!(curve.capacity_for(0.9), Some(10));
        assert_eq!(curve.capacity_for(0.95), None);
        // Doubling gains 0.9 at 5 to 9 entries, nothing from 10 on.
        assert_eq!(curve.knee(), 10);
    }

    #[test]
    fn naive_rule() {
        assert_eq!(naive_capacity(1000, 0.95), 900);
        assert_eq!(naive_capacity(50, 0.95), 1);
        assert_eq!(naive_capacity(1000, 0.5), 1100);
        assert_eq!(naive_capacity(1000, 0.8), 1000);
        assert_eq!(naive_capacity(1000, 0.9), 1000);
    }

    #[test]
    fn fenwick_prefix_sums() {
        let mut tree = Fenwick::new(10);
        for p in [0, 3, 4, 9] {
            tree.add(p, 1);
        }
        tree.add(4, -1);
        assert_eq!(
            (0..=10).map(|e| tree.prefix(e)).collect::<Vec<_>>(),
            [0, 1, 1, 1, 2, 2, 2, 2, 2, 2, 3]
        );
    }
}
