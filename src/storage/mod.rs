//! In-memory series store: samples per series, a postings index for selector
//! matching, time-based retention and a cap on the number of series.
//!
//! Reads go through a [`View`], which sees every appender dropped before it was opened and
//! nothing of those dropped after, as Prometheus' isolation has it: a rule evaluated while a
//! scrape is being stored sees all of that scrape or none of it, never its first series without
//! the rest (a ratio of two of its counters would be off by a scrape).

mod labels;
mod persist;

pub use labels::{
    Label, Labels, LabelsBuilder, METRIC_NAME, fnv1a, is_valid_label_name, is_valid_metric_name,
    quote,
};

pub use persist::{Persistence, Replayed};

use promql_parser::label::{MatchOp, Matcher};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock};

/// Prometheus' staleness marker: a NaN with a payload no computation produces.
pub const STALE_NAN_BITS: u64 = 0x7ff0_0000_0000_0002;

/// The staleness marker as a float.
pub fn stale_nan() -> f64 {
    f64::from_bits(STALE_NAN_BITS)
}

/// True when `v` is the staleness marker (not just any NaN).
pub fn is_stale(v: f64) -> bool {
    v.to_bits() == STALE_NAN_BITS
}

/// One timestamped value; timestamps are milliseconds since the epoch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Point {
    /// Milliseconds since the Unix epoch.
    pub t: i64,
    /// The value (may be the staleness marker).
    pub v: f64,
}

/// A series' labels with some of its points.
#[derive(Clone, Debug)]
pub struct SeriesPoints {
    /// The series' labels.
    pub labels: Labels,
    /// Points in time order.
    pub points: Vec<Point>,
}

/// Read access the PromQL engine needs; implemented by [`View`].
pub trait Queryable: Send + Sync {
    /// Every series matching all `matchers` (an empty value matches an absent
    /// label), with its points in `[mint, maxt]`; series without points there are
    /// left out.
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesPoints>;

    /// For every matching series, its latest point in `[mint, maxt]`, if any.
    fn select_latest(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<(Labels, Point)>;
}

/// Why a sample was not stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum AppendError {
    /// Older than the series' newest sample.
    #[error("out of order sample")]
    OutOfOrder,
    /// Same timestamp as the newest sample, different value.
    #[error("duplicate sample for timestamp")]
    Duplicate,
    /// The series would be new and the series limit is reached.
    #[error("series limit reached")]
    SeriesLimit,
    /// Older than the retention window.
    #[error("sample older than the retention period")]
    TooOld,
}

/// Limits of a [`Storage`].
#[derive(Clone, Copy, Debug)]
pub struct StorageOptions {
    /// Samples older than the newest append minus this (ms) are dropped.
    pub retention_ms: i64,
    /// Appends that would create more series than this are refused.
    pub max_series: usize,
}

impl Default for StorageOptions {
    fn default() -> Self {
        Self {
            retention_ms: 2 * 3600 * 1000,
            max_series: 1_000_000,
        }
    }
}

/// Size and count figures, for metrics and the benchmark.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StorageStats {
    /// Live series.
    pub series: usize,
    /// Stored samples.
    pub samples: usize,
    /// Approximate heap bytes of samples, labels and index.
    pub bytes: usize,
    /// Samples refused because of the series limit, since start.
    pub refused_series_limit: u64,
    /// Samples refused as out of order or duplicate, since start.
    pub refused_out_of_order: u64,
    /// Bytes of the write-ahead log under `state.dir` (0 without one).
    pub wal_bytes: u64,
    /// Bytes of the last snapshot under `state.dir`.
    pub snapshot_bytes: u64,
    /// How long the replay at start took, in seconds.
    pub replay_seconds: f64,
    /// Snapshots written since start.
    pub checkpoints: u64,
    /// Writes of the log or a snapshot that failed since start.
    pub write_failures: u64,
}

/// Figures of [`Persistence`], kept here so the store's collector reports them.
#[derive(Default)]
struct Durability {
    wal_bytes: AtomicU64,
    snapshot_bytes: AtomicU64,
    replay_micros: AtomicU64,
    checkpoints: AtomicU64,
    write_failures: AtomicU64,
}

struct MemSeries {
    labels: Labels,
    points: Vec<Point>,
    /// Whether the current write-ahead log has named this series' labels.
    logged: bool,
    /// For appenders that open views must not see yet: the appender's id and how many points
    /// the series held before it, oldest first. Empty while no view is open.
    appends: Vec<(u64, usize)>,
}

impl MemSeries {
    /// The points appenders up to `read_point` left.
    fn visible(&self, read_point: u64) -> &[Point] {
        let len = self
            .appends
            .iter()
            .find(|(appender, _)| *appender > read_point)
            .map_or(self.points.len(), |&(_, len)| len);
        &self.points[..len]
    }
}

#[derive(Default)]
struct Inner {
    series: Vec<Option<MemSeries>>,
    free: Vec<u32>,
    by_labels: HashMap<Labels, u32>,
    /// label name -> label value -> ids of series carrying that pair, ascending.
    postings: HashMap<String, HashMap<String, BTreeSet<u32>>>,
    newest: i64,
    /// The id of the last appender dropped; a view opened now reads up to it.
    committed: u64,
    /// Appends not yet in the write-ahead log; `None` while nothing is persisted.
    journal: Option<Vec<u8>>,
}

/// The in-memory series store; shared behind an `Arc`, internally locked.
pub struct Storage {
    inner: RwLock<Inner>,
    options: StorageOptions,
    refused_series_limit: AtomicU64,
    refused_out_of_order: AtomicU64,
    durability: Durability,
    /// Open views by read point, with how many are open at each.
    views: Mutex<BTreeMap<u64, usize>>,
}

/// A series' slot in the store, for repeated appends without a label lookup.
/// Only valid together with the `Labels` it was returned for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SeriesRef(u32);

/// Writes many samples under one lock; see [`Storage::appender`]. Views opened after it is
/// dropped see its samples, views opened before do not.
pub struct Appender<'a> {
    inner: std::sync::RwLockWriteGuard<'a, Inner>,
    storage: &'a Storage,
    id: u64,
    /// The oldest read point of the views open when it was made: what they need kept of the
    /// series' `appends`. `None` when no view is open.
    oldest_view: Option<u64>,
}

impl Drop for Appender<'_> {
    fn drop(&mut self) {
        self.inner.committed = self.id;
    }
}

impl Appender<'_> {
    /// Stores one sample, creating the series when needed.
    pub fn append(&mut self, labels: &Labels, t: i64, v: f64) -> Result<SeriesRef, AppendError> {
        self.append_ref(None, labels, t, v)
    }

    /// Like [`append`](Self::append), skipping the label lookup when `known`
    /// (from an earlier append of the same `labels`) still names that series.
    pub fn append_ref(
        &mut self,
        known: Option<SeriesRef>,
        labels: &Labels,
        t: i64,
        v: f64,
    ) -> Result<SeriesRef, AppendError> {
        let inner = &mut *self.inner;
        if t < inner.newest - self.storage.options.retention_ms {
            return Err(AppendError::TooOld);
        }
        let cached = known.filter(|r| {
            inner.series[r.0 as usize]
                .as_ref()
                .is_some_and(|s| s.labels.same_allocation(labels))
        });
        let id = match cached
            .map(|r| r.0)
            .or_else(|| inner.by_labels.get(labels).copied())
        {
            Some(id) => id,
            None => {
                if inner.by_labels.len() >= self.storage.options.max_series {
                    self.storage
                        .refused_series_limit
                        .fetch_add(1, Ordering::Relaxed);
                    return Err(AppendError::SeriesLimit);
                }
                inner.insert_series(labels.clone())
            }
        };
        let Some(series) = inner.series[id as usize].as_mut() else {
            unreachable!("indexed series ids always refer to live series");
        };
        let journal = &mut inner.journal;
        if let Some(last) = series.points.last() {
            if t < last.t {
                self.storage
                    .refused_out_of_order
                    .fetch_add(1, Ordering::Relaxed);
                return Err(AppendError::OutOfOrder);
            }
            if t == last.t {
                if last.v.to_bits() == v.to_bits() {
                    return Ok(SeriesRef(id));
                }
                self.storage
                    .refused_out_of_order
                    .fetch_add(1, Ordering::Relaxed);
                return Err(AppendError::Duplicate);
            }
        }
        // No view can open while this appender holds the lock, so only those open now can
        // read past what it appends.
        let needless = series.appends.partition_point(|&(appender, _)| {
            self.oldest_view.is_none_or(|oldest| appender <= oldest)
        });
        series.appends.drain(..needless);
        if self.oldest_view.is_some() && series.appends.last().map(|a| a.0) != Some(self.id) {
            series.appends.push((self.id, series.points.len()));
        }
        series.points.push(Point { t, v });
        if let Some(journal) = journal {
            persist::journal_sample(journal, id, &mut series.logged, &series.labels, t, v);
        }
        inner.newest = inner.newest.max(t);
        Ok(SeriesRef(id))
    }
}

impl Inner {
    fn insert_series(&mut self, labels: Labels) -> u32 {
        let series = MemSeries {
            labels: labels.clone(),
            points: Vec::new(),
            logged: false,
            appends: Vec::new(),
        };
        let id = match self.free.pop() {
            Some(id) => {
                self.series[id as usize] = Some(series);
                id
            }
            None => {
                self.series.push(Some(series));
                (self.series.len() - 1) as u32
            }
        };
        for l in labels.iter() {
            self.postings
                .entry(l.name.clone())
                .or_default()
                .entry(l.value.clone())
                .or_default()
                .insert(id);
        }
        self.by_labels.insert(labels, id);
        id
    }

    fn remove_series(&mut self, id: u32) {
        let Some(series) = self.series[id as usize].take() else {
            return;
        };
        for l in series.labels.iter() {
            if let Some(values) = self.postings.get_mut(&l.name) {
                if let Some(ids) = values.get_mut(&l.value) {
                    ids.remove(&id);
                    if ids.is_empty() {
                        values.remove(&l.value);
                    }
                }
                if values.is_empty() {
                    self.postings.remove(&l.name);
                }
            }
        }
        self.by_labels.remove(&series.labels);
        self.free.push(id);
    }

    /// Ids of series matching every matcher, using postings for equality
    /// matchers on non-empty values and checking the rest per series.
    fn matching_ids(&self, matchers: &[Matcher]) -> Vec<u32> {
        let mut candidates: Option<Vec<u32>> = None;
        for m in matchers {
            if matches!(m.op, MatchOp::Equal) && !m.value.is_empty() {
                let ids: Vec<u32> = self
                    .postings
                    .get(&m.name)
                    .and_then(|values| values.get(&m.value))
                    .map(|ids| ids.iter().copied().collect())
                    .unwrap_or_default();
                candidates = Some(match candidates {
                    None => ids,
                    Some(prev) => intersect_sorted(&prev, &ids),
                });
            }
        }
        let candidates = candidates.unwrap_or_else(|| {
            self.series
                .iter()
                .enumerate()
                .filter(|(_, s)| s.is_some())
                .map(|(i, _)| i as u32)
                .collect()
        });
        candidates
            .into_iter()
            .filter(|&id| {
                self.series[id as usize]
                    .as_ref()
                    .is_some_and(|s| matchers.iter().all(|m| m.is_match(s.labels.get(&m.name))))
            })
            .collect()
    }
}

fn intersect_sorted(a: &[u32], b: &[u32]) -> Vec<u32> {
    let (mut i, mut j, mut out) = (0, 0, Vec::new());
    while i < a.len() && j < b.len() {
        match a[i].cmp(&b[j]) {
            std::cmp::Ordering::Less => i += 1,
            std::cmp::Ordering::Greater => j += 1,
            std::cmp::Ordering::Equal => {
                out.push(a[i]);
                i += 1;
                j += 1;
            }
        }
    }
    out
}

fn window(points: &[Point], mint: i64, maxt: i64) -> &[Point] {
    let start = points.partition_point(|p| p.t < mint);
    let end = points.partition_point(|p| p.t <= maxt);
    &points[start..end.max(start)]
}

impl std::fmt::Debug for Storage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Storage")
            .field("options", &self.options)
            .finish_non_exhaustive()
    }
}

impl Storage {
    /// An empty store.
    pub fn new(options: StorageOptions) -> Self {
        Self {
            inner: RwLock::new(Inner {
                newest: i64::MIN / 2,
                ..Inner::default()
            }),
            options,
            refused_series_limit: AtomicU64::new(0),
            refused_out_of_order: AtomicU64::new(0),
            durability: Durability::default(),
            views: Mutex::new(BTreeMap::new()),
        }
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(|e| e.into_inner())
    }

    fn views(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, usize>> {
        self.views.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A consistent read of the store: every appender dropped until now, none dropped later.
    /// Evaluate a whole query over one view.
    pub fn view(&self) -> View<'_> {
        // Registered under the read lock, so an appender (which takes the write lock before it
        // looks at the open views) cannot miss it.
        let inner = self.read();
        let read_point = inner.committed;
        *self.views().entry(read_point).or_default() += 1;
        drop(inner);
        View {
            storage: self,
            read_point,
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The limits this store was built with.
    pub fn options(&self) -> StorageOptions {
        self.options
    }

    /// Takes the write lock once for many appends (one scrape, one rule result).
    pub fn appender(&self) -> Appender<'_> {
        let inner = self.write();
        let id = inner.committed + 1;
        let oldest_view = self.views().keys().next().copied();
        Appender {
            inner,
            storage: self,
            id,
            oldest_view,
        }
    }

    /// Drops samples older than `now - retention` and series left empty.
    pub fn truncate(&self, now: i64) {
        let cutoff = now - self.options.retention_ms;
        let mut inner = self.write();
        let mut emptied = Vec::new();
        for (id, slot) in inner.series.iter_mut().enumerate() {
            if let Some(series) = slot {
                let old = series.points.partition_point(|p| p.t < cutoff);
                if old > 0 {
                    series.points.drain(..old);
                    for (_, len) in &mut series.appends {
                        *len = len.saturating_sub(old);
                    }
                    series.points.shrink_to(series.points.len() * 2);
                }
                if series.points.is_empty() {
                    emptied.push(id as u32);
                }
            }
        }
        for id in emptied {
            inner.remove_series(id);
        }
    }

    /// Counts and sizes.
    pub fn stats(&self) -> StorageStats {
        let inner = self.read();
        let mut stats = StorageStats {
            refused_series_limit: self.refused_series_limit.load(Ordering::Relaxed),
            refused_out_of_order: self.refused_out_of_order.load(Ordering::Relaxed),
            wal_bytes: self.durability.wal_bytes.load(Ordering::Relaxed),
            snapshot_bytes: self.durability.snapshot_bytes.load(Ordering::Relaxed),
            replay_seconds: self.durability.replay_micros.load(Ordering::Relaxed) as f64 / 1e6,
            checkpoints: self.durability.checkpoints.load(Ordering::Relaxed),
            write_failures: self.durability.write_failures.load(Ordering::Relaxed),
            ..StorageStats::default()
        };
        for series in inner.series.iter().flatten() {
            stats.series += 1;
            stats.samples += series.points.len();
            // Labels are stored twice (series and lookup key) but share one Arc.
            stats.bytes += std::mem::size_of::<MemSeries>()
                + series.points.capacity() * std::mem::size_of::<Point>()
                + series.labels.heap_bytes()
                + std::mem::size_of::<(Labels, u32)>();
        }
        for (name, values) in &inner.postings {
            stats.bytes += name.len();
            for (value, ids) in values {
                stats.bytes += value.len() + ids.len() * 2 * std::mem::size_of::<u32>();
            }
        }
        stats
    }

    /// Label sets of series matching any of the selector sets and holding a
    /// point in `[mint, maxt]`; all series when `selectors` is empty.
    pub fn series(&self, selectors: &[Vec<Matcher>], mint: i64, maxt: i64) -> Vec<Labels> {
        let inner = self.read();
        let mut ids: BTreeSet<u32> = BTreeSet::new();
        if selectors.is_empty() {
            ids.extend(inner.by_labels.values().copied());
        }
        for matchers in selectors {
            ids.extend(inner.matching_ids(matchers));
        }
        let mut out: Vec<Labels> = ids
            .into_iter()
            .filter_map(|id| inner.series[id as usize].as_ref())
            .filter(|s| !window(&s.points, mint, maxt).is_empty())
            .map(|s| s.labels.clone())
            .collect();
        out.sort();
        out
    }
}

/// A consistent read of a [`Storage`]; see [`Storage::view`].
pub struct View<'a> {
    storage: &'a Storage,
    read_point: u64,
}

impl Drop for View<'_> {
    fn drop(&mut self) {
        let mut views = self.storage.views();
        if let Some(open) = views.get_mut(&self.read_point) {
            *open -= 1;
            if *open == 0 {
                views.remove(&self.read_point);
            }
        }
    }
}

impl Queryable for View<'_> {
    fn select(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<SeriesPoints> {
        let inner = self.storage.read();
        inner
            .matching_ids(matchers)
            .into_iter()
            .filter_map(|id| {
                let series = inner.series[id as usize].as_ref()?;
                let points = window(series.visible(self.read_point), mint, maxt);
                (!points.is_empty()).then(|| SeriesPoints {
                    labels: series.labels.clone(),
                    points: points.to_vec(),
                })
            })
            .collect()
    }

    fn select_latest(&self, matchers: &[Matcher], mint: i64, maxt: i64) -> Vec<(Labels, Point)> {
        let inner = self.storage.read();
        inner
            .matching_ids(matchers)
            .into_iter()
            .filter_map(|id| {
                let series = inner.series[id as usize].as_ref()?;
                let last = *window(series.visible(self.read_point), mint, maxt).last()?;
                Some((series.labels.clone(), last))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn eq(name: &str, value: &str) -> Matcher {
        Matcher::new(MatchOp::Equal, name, value)
    }

    #[test]
    fn a_view_sees_whole_appenders_dropped_before_it_and_nothing_later() {
        let s = Storage::new(StorageOptions {
            retention_ms: 1500,
            ..StorageOptions::default()
        });
        let series = |job: &str| Labels::from_pairs([("__name__", "requests"), ("job", job)]);
        let (a, b, c) = (series("a"), series("b"), series("c"));
        let mut app = s.appender();
        app.append(&a, 1000, 0.0).unwrap();
        app.append(&b, 1000, 0.0).unwrap();
        drop(app);
        let before = s.view();
        let mut app = s.appender();
        app.append(&a, 2000, 90.0).unwrap();
        // A view cannot open while an appender holds the store, so it cannot see half of one.
        app.append(&b, 2000, 10.0).unwrap();
        app.append(&c, 2000, 1.0).unwrap();
        drop(app);
        let after = s.view();
        let times = |view: &View, job: &str| -> Vec<i64> {
            view.select(&[eq("job", job)], 0, 10_000)
                .iter()
                .flat_map(|series| series.points.iter().map(|p| p.t))
                .collect()
        };
        assert_eq!(
            (times(&before, "a"), times(&before, "b")),
            (vec![1000], vec![1000])
        );
        assert_eq!(times(&before, "c"), Vec::<i64>::new());
        let latest = before.select_latest(&[eq("__name__", "requests")], 0, 10_000);
        assert!(latest.iter().all(|(_, p)| p.t == 1000), "{latest:?}");
        assert_eq!(times(&after, "a"), vec![1000, 2000]);
        assert_eq!(times(&after, "c"), vec![2000]);
        // Retention trims the front under an open view and the view's cut stays where it was.
        let mut app = s.appender();
        app.append(&a, 3000, 95.0).unwrap();
        drop(app);
        s.truncate(3000);
        assert_eq!(times(&after, "a"), vec![2000]);
        assert_eq!(times(&s.view(), "a"), vec![2000, 3000]);
        // With no view open, an append drops what the series kept for views.
        drop((before, after));
        let mut app = s.appender();
        app.append(&a, 4000, 99.0).unwrap();
        drop(app);
        let inner = s.read();
        let kept = inner
            .by_labels
            .get(&a)
            .map(|&id| inner.series[id as usize].as_ref());
        assert_eq!(kept.flatten().map(|series| series.appends.len()), Some(0));
    }

    #[test]
    fn selects_by_postings_and_filters_the_rest() {
        let s = Storage::new(StorageOptions::default());
        let a = Labels::from_pairs([("__name__", "up"), ("job", "a")]);
        let b = Labels::from_pairs([("__name__", "up"), ("job", "b")]);
        let mut app = s.appender();
        for t in 0..10 {
            app.append(&a, t * 1000, t as f64).unwrap();
            app.append(&b, t * 1000, -(t as f64)).unwrap();
        }
        assert_eq!(app.append(&a, 0, 1.0), Err(AppendError::OutOfOrder));
        assert_eq!(app.append(&a, 9000, 1.0), Err(AppendError::Duplicate));
        let r = app.append(&a, 9500, 1.0).unwrap();
        // A ref for other labels falls back to the lookup.
        let rb = app.append_ref(Some(r), &b, 9500, 2.0).unwrap();
        assert_ne!(r, rb);
        drop(app);
        let got = s
            .view()
            .select(&[eq("__name__", "up"), eq("job", "b")], 2000, 4000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].points.len(), 3);
        assert_eq!(
            s.view().select(&[eq("job", "b")], 9500, 9500)[0].points[0].v,
            2.0
        );
        assert_eq!(got[0].points[2], Point { t: 4000, v: -4.0 });
        let absent = s
            .view()
            .select(&[eq("__name__", "up"), eq("zone", "")], 0, 9000);
        assert_eq!(absent.len(), 2, "an empty value matches a missing label");
        let latest = s.view().select_latest(&[eq("__name__", "up")], 0, 4500);
        assert!(latest.iter().all(|(_, p)| p.t == 4000));
    }

    #[test]
    fn retention_and_series_limit() {
        let s = Storage::new(StorageOptions {
            retention_ms: 5000,
            max_series: 1,
        });
        let a = Labels::from_pairs([("__name__", "a")]);
        let b = Labels::from_pairs([("__name__", "b")]);
        let mut app = s.appender();
        for t in 0..10 {
            app.append(&a, t * 1000, 1.0).unwrap();
        }
        assert_eq!(app.append(&b, 9000, 1.0), Err(AppendError::SeriesLimit));
        assert_eq!(app.append(&a, 1000, 1.0), Err(AppendError::TooOld));
        drop(app);
        s.truncate(9000);
        let stats = s.stats();
        assert_eq!((stats.series, stats.samples), (1, 6));
        assert_eq!(stats.refused_series_limit, 1);
        s.truncate(20_000);
        assert_eq!(s.stats().series, 0);
        assert!(s.series(&[], i64::MIN, i64::MAX).is_empty());
    }
}
