//! Durability of the series store under `state.dir`: a write-ahead log of every append since
//! the last snapshot (`storage.wal`) and a snapshot of the whole store (`storage.snapshot`).
//!
//! Appends are encoded into an in-memory journal under the store's write lock (no I/O on the
//! scrape path); [`Persistence::flush`] writes that journal to the log as one checksummed frame
//! and syncs it, so a `kill -9` loses at most one flush interval. When the log has grown as big
//! as the snapshot, [`Persistence::checkpoint`] writes a new snapshot and starts an empty log of
//! the next generation. The snapshot is written first and renamed into place, the log after
//! it; a log whose generation is older than the snapshot's is already contained in it, so a
//! crash between the two renames loses nothing. A torn frame (a crash in the middle of a write)
//! fails its checksum and ends the replay of that file.
//!
//! When a write fails (a full or read-only disk) the store keeps serving from memory; the
//! journal is dropped, since memory holds everything it had, and every later flush tries a
//! checkpoint until one succeeds, which writes the whole store again.

use super::{Inner, Labels, Storage};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::time::Instant;

const WAL_MAGIC: &[u8; 8] = b"TWWAL\0\0\x01";
const SNAPSHOT_MAGIC: &[u8; 8] = b"TWSNAP\0\x01";
const HEADER_LEN: usize = 24;
/// Frames are read whole, so a corrupt length must not make replay allocate gigabytes.
const MAX_FRAME: usize = 256 << 20;
/// Snapshot frames are cut at about this size, so a torn or corrupt frame costs little.
const SNAPSHOT_FRAME: usize = 1 << 20;
/// A log this small is never worth a checkpoint of its own.
const MIN_CHECKPOINT_WAL: u64 = 1 << 20;

const ENTRY_SERIES: u8 = 1;
const ENTRY_SAMPLE: u8 = 2;
const ENTRY_RUN: u8 = 3;

/// What a replay at start found.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Replayed {
    /// Series in the store after the replay.
    pub series: usize,
    /// Samples read from both files (some may be past the retention or duplicates).
    pub samples: u64,
    /// Wall time of the replay.
    pub seconds: f64,
}

/// The files of one store; owned by the single task that flushes and checkpoints.
pub struct Persistence {
    storage: std::sync::Arc<Storage>,
    wal_path: PathBuf,
    snapshot_path: PathBuf,
    wal: Option<std::fs::File>,
    generation: u64,
    wal_bytes: u64,
    snapshot_bytes: u64,
    /// Set after a failed write: the next flush writes the whole store instead.
    needs_checkpoint: bool,
}

impl std::fmt::Debug for Persistence {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Persistence")
            .field("wal", &self.wal_path)
            .field("generation", &self.generation)
            .finish_non_exhaustive()
    }
}

impl Persistence {
    /// Replays `dir`'s snapshot and log into `storage` (which should be empty), then starts
    /// journaling its appends. The first checkpoint happens at once, so the files on disk are
    /// whole again even if the last run crashed in the middle of a write.
    pub fn open(dir: &Path, storage: std::sync::Arc<Storage>) -> (Self, Replayed) {
        let started = Instant::now();
        let snapshot_path = dir.join("storage.snapshot");
        let wal_path = dir.join("storage.wal");
        let mut samples = 0;
        let snapshot_generation =
            replay_file(&snapshot_path, SNAPSHOT_MAGIC, &storage, None).map(|(generation, n)| {
                samples += n;
                generation
            });
        if let Some((_, n)) = replay_file(&wal_path, WAL_MAGIC, &storage, snapshot_generation) {
            samples += n;
        }
        let replayed = Replayed {
            series: storage.stats().series,
            samples,
            seconds: started.elapsed().as_secs_f64(),
        };
        storage
            .durability
            .replay_micros
            .store((replayed.seconds * 1e6) as u64, Ordering::Relaxed);
        storage.write().journal = Some(Vec::new());
        let mut persistence = Self {
            storage,
            wal_path,
            snapshot_path,
            wal: None,
            generation: snapshot_generation.unwrap_or(0),
            wal_bytes: 0,
            snapshot_bytes: 0,
            needs_checkpoint: true,
        };
        let _ = persistence.flush();
        (persistence, replayed)
    }

    /// Writes what was appended since the last flush to the log and syncs it; checkpoints
    /// instead when the log has outgrown the snapshot or an earlier write failed.
    pub fn flush(&mut self) -> std::io::Result<()> {
        if self.needs_checkpoint || self.wal_bytes >= self.snapshot_bytes.max(MIN_CHECKPOINT_WAL) {
            return self.checkpoint();
        }
        let entries = std::mem::take(self.storage.write().journal.get_or_insert_default());
        if entries.is_empty() {
            return Ok(());
        }
        let mut frame = Vec::with_capacity(entries.len() + 8);
        push_frame(&mut frame, &entries);
        let written = match self.wal.as_mut() {
            Some(wal) => wal.write_all(&frame).and_then(|()| wal.sync_data()),
            None => Err(std::io::Error::other("the write-ahead log is not open")),
        };
        let written = self.record(&self.wal_path, written);
        match written {
            Ok(()) => {
                self.wal_bytes += frame.len() as u64;
                self.publish();
            }
            Err(_) => self.needs_checkpoint = true,
        }
        written
    }

    /// Writes the whole store as a new snapshot and starts an empty log of the next
    /// generation. Also the final write at shutdown.
    pub fn checkpoint(&mut self) -> std::io::Result<()> {
        let generation = self.generation + 1;
        let mut image = header(SNAPSHOT_MAGIC, generation);
        {
            let mut inner = self.storage.write();
            // Everything journaled so far is in the image; what is appended from now on is
            // journaled again, its series labels included, for the new log.
            if let Some(journal) = inner.journal.as_mut() {
                journal.clear();
            }
            encode_snapshot(&mut inner, &mut image);
        }
        self.needs_checkpoint = true;
        let written = crate::state::write_bytes_atomically(&self.snapshot_path, &image);
        self.record(&self.snapshot_path, written)?;
        let started =
            crate::state::write_bytes_atomically(&self.wal_path, &header(WAL_MAGIC, generation))
                .and_then(|()| {
                    std::fs::OpenOptions::new()
                        .append(true)
                        .open(&self.wal_path)
                });
        let wal = self.record(&self.wal_path, started)?;
        self.wal = Some(wal);
        self.generation = generation;
        self.snapshot_bytes = image.len() as u64;
        self.wal_bytes = HEADER_LEN as u64;
        self.needs_checkpoint = false;
        self.storage
            .durability
            .checkpoints
            .fetch_add(1, Ordering::Relaxed);
        self.publish();
        Ok(())
    }

    fn publish(&self) {
        let d = &self.storage.durability;
        d.wal_bytes.store(self.wal_bytes, Ordering::Relaxed);
        d.snapshot_bytes
            .store(self.snapshot_bytes, Ordering::Relaxed);
    }

    /// Counts a failed write and logs once per change of state, as every state file does.
    fn record<T>(&self, path: &Path, result: std::io::Result<T>) -> std::io::Result<T> {
        if result.is_err() {
            self.storage
                .durability
                .write_failures
                .fetch_add(1, Ordering::Relaxed);
        }
        crate::state::record_outcome(path, result.as_ref().map(|_| ()));
        result
    }
}

fn header(magic: &[u8; 8], generation: u64) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(magic);
    h.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    h
}

/// The generation of a valid header with `magic`.
fn read_header(bytes: &[u8], magic: &[u8; 8]) -> Option<u64> {
    let h = bytes.get(..HEADER_LEN)?;
    let crc = u32::from_le_bytes(h[16..20].try_into().ok()?);
    (&h[..8] == magic && crc32fast::hash(&h[..16]) == crc)
        .then(|| u64::from_le_bytes(h[8..16].try_into().unwrap_or_default()))
}

fn push_frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32fast::hash(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Journals one appended sample, and the series' labels first if this log has not named it.
pub(super) fn journal_sample(
    journal: &mut Vec<u8>,
    id: u32,
    logged: &mut bool,
    labels: &Labels,
    t: i64,
    v: f64,
) {
    if !*logged {
        push_series(journal, id, labels);
        *logged = true;
    }
    journal.push(ENTRY_SAMPLE);
    journal.extend_from_slice(&id.to_le_bytes());
    journal.extend_from_slice(&t.to_le_bytes());
    journal.extend_from_slice(&v.to_bits().to_le_bytes());
}

fn push_series(out: &mut Vec<u8>, id: u32, labels: &Labels) {
    out.push(ENTRY_SERIES);
    out.extend_from_slice(&id.to_le_bytes());
    push_varint(out, labels.len() as u64);
    for l in labels.iter() {
        push_varint(out, l.name.len() as u64);
        out.extend_from_slice(l.name.as_bytes());
        push_varint(out, l.value.len() as u64);
        out.extend_from_slice(l.value.as_bytes());
    }
}

/// Every series as its labels and one run of its points: timestamps as deltas of deltas
/// (one byte at a steady scrape interval) and values XORed with the previous one, bit-reversed
/// so the shared exponent becomes leading zeros of a varint (one byte for an unchanged value).
/// Resets every series' "named in this log" flag, since a new log starts with the snapshot.
fn encode_snapshot(inner: &mut Inner, out: &mut Vec<u8>) {
    let mut payload = Vec::with_capacity(SNAPSHOT_FRAME + 4096);
    for (id, slot) in inner.series.iter_mut().enumerate() {
        let Some(series) = slot else { continue };
        series.logged = false;
        if series.points.is_empty() {
            continue;
        }
        push_series(&mut payload, id as u32, &series.labels);
        payload.push(ENTRY_RUN);
        payload.extend_from_slice(&(id as u32).to_le_bytes());
        push_varint(&mut payload, series.points.len() as u64);
        let (mut prev_t, mut prev_delta, mut prev_v) = (0i64, 0i64, 0u64);
        for (i, p) in series.points.iter().enumerate() {
            let bits = p.v.to_bits();
            if i == 0 {
                payload.extend_from_slice(&p.t.to_le_bytes());
                payload.extend_from_slice(&bits.to_le_bytes());
            } else {
                let delta = p.t.wrapping_sub(prev_t);
                push_varint(&mut payload, zigzag(delta.wrapping_sub(prev_delta)));
                push_varint(&mut payload, (bits ^ prev_v).reverse_bits());
                prev_delta = delta;
            }
            prev_t = p.t;
            prev_v = bits;
        }
        if payload.len() >= SNAPSHOT_FRAME {
            push_frame(out, &payload);
            payload.clear();
        }
    }
    if !payload.is_empty() {
        push_frame(out, &payload);
    }
}

/// Replays one file into `storage`; its generation and the samples read, or `None` when it is
/// missing, unreadable, or (for a log) older than the snapshot. Stops at the first frame that
/// fails its checksum, keeping what came before.
fn replay_file(
    path: &Path,
    magic: &[u8; 8],
    storage: &Storage,
    snapshot_generation: Option<u64>,
) -> Option<(u64, u64)> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(event = "state_unreadable", file = %path.display(), error = %e,
                "cannot read the stored samples; starting without them");
            return None;
        }
    };
    let Some(generation) = read_header(&bytes, magic) else {
        tracing::warn!(event = "state_unreadable", file = %path.display(),
            "not a torchwatch storage file of this version (bad header); starting without it");
        return None;
    };
    if snapshot_generation.is_some_and(|s| generation < s) {
        // Written before the snapshot that contains it; the crash came between the renames.
        return None;
    }
    let mut replay = Replay::new(storage);
    let mut rest = &bytes[HEADER_LEN..];
    while !rest.is_empty() {
        let Some((payload, after)) = next_frame(rest) else {
            tracing::warn!(event = "storage_torn_write", file = %path.display(),
                bytes_dropped = rest.len(),
                "the file ends in a partial or corrupt write (a crash while writing); \
                 keeping everything before it");
            break;
        };
        if let Err(e) = replay.apply(payload) {
            tracing::warn!(event = "state_unreadable", file = %path.display(), error = e,
                "a frame passed its checksum but does not decode; keeping what came before");
            break;
        }
        rest = after;
    }
    Some((generation, replay.samples))
}

fn next_frame(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let len = u32::from_le_bytes(bytes.get(..4)?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(bytes.get(4..8)?.try_into().ok()?);
    if len > MAX_FRAME {
        return None;
    }
    let payload = bytes.get(8..8 + len)?;
    (crc32fast::hash(payload) == crc).then(|| (payload, &bytes[8 + len..]))
}

/// Replay state: the labels each series id of the file stood for, and the store's ref for it.
struct Replay<'a> {
    storage: &'a Storage,
    series: std::collections::HashMap<u32, (Labels, Option<super::SeriesRef>)>,
    samples: u64,
}

impl<'a> Replay<'a> {
    fn new(storage: &'a Storage) -> Self {
        Self {
            storage,
            series: Default::default(),
            samples: 0,
        }
    }

    fn apply(&mut self, mut payload: &[u8]) -> Result<(), &'static str> {
        let mut appender = self.storage.appender();
        while let Some((&kind, rest)) = payload.split_first() {
            payload = rest;
            let id = u32::from_le_bytes(take(&mut payload, 4)?.try_into().map_err(|_| "id")?);
            match kind {
                ENTRY_SERIES => {
                    let n = read_varint(&mut payload)?;
                    let mut pairs = Vec::with_capacity(n.min(64) as usize);
                    for _ in 0..n {
                        let name = read_string(&mut payload)?;
                        let value = read_string(&mut payload)?;
                        pairs.push((name, value));
                    }
                    self.series.insert(id, (Labels::from_pairs(pairs), None));
                }
                ENTRY_SAMPLE => {
                    let t = read_i64(&mut payload)?;
                    let v = f64::from_bits(read_i64(&mut payload)? as u64);
                    self.append(&mut appender, id, t, v)?;
                }
                ENTRY_RUN => {
                    let n = read_varint(&mut payload)?;
                    let mut t = read_i64(&mut payload)?;
                    let mut bits = read_i64(&mut payload)? as u64;
                    self.append(&mut appender, id, t, f64::from_bits(bits))?;
                    let mut delta = 0i64;
                    for _ in 1..n {
                        delta = delta.wrapping_add(unzigzag(read_varint(&mut payload)?));
                        t = t.wrapping_add(delta);
                        bits ^= read_varint(&mut payload)?.reverse_bits();
                        self.append(&mut appender, id, t, f64::from_bits(bits))?;
                    }
                }
                _ => return Err("unknown entry type"),
            }
        }
        Ok(())
    }

    fn append(
        &mut self,
        appender: &mut super::Appender<'_>,
        id: u32,
        t: i64,
        v: f64,
    ) -> Result<(), &'static str> {
        let (labels, known) = self
            .series
            .get_mut(&id)
            .ok_or("a sample of a series the file never named")?;
        self.samples += 1;
        // Samples past the retention, or already held, are dropped as at append time.
        if let Ok(r) = appender.append_ref(*known, labels, t, v) {
            *known = Some(r);
        }
        Ok(())
    }
}

fn take<'b>(bytes: &mut &'b [u8], n: usize) -> Result<&'b [u8], &'static str> {
    if bytes.len() < n {
        return Err("entry cut short");
    }
    let (head, rest) = bytes.split_at(n);
    *bytes = rest;
    Ok(head)
}

fn read_i64(bytes: &mut &[u8]) -> Result<i64, &'static str> {
    let b = take(bytes, 8)?;
    Ok(i64::from_le_bytes(b.try_into().map_err(|_| "i64")?))
}

fn read_string(bytes: &mut &[u8]) -> Result<String, &'static str> {
    let len = read_varint(bytes)? as usize;
    let raw = take(bytes, len)?;
    String::from_utf8(raw.to_vec()).map_err(|_| "a label that is not UTF-8")
}

fn push_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn read_varint(bytes: &mut &[u8]) -> Result<u64, &'static str> {
    let mut v = 0u64;
    for shift in (0..64).step_by(7) {
        let b = take(bytes, 1)?[0];
        v |= u64::from(b & 0x7f) << shift;
        if b < 0x80 {
            return Ok(v);
        }
    }
    Err("varint too long")
}

fn zigzag(v: i64) -> u64 {
    ((v << 1) ^ (v >> 63)) as u64
}

fn unzigzag(v: u64) -> i64 {
    ((v >> 1) as i64) ^ -((v & 1) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Queryable, StorageOptions, is_stale, stale_nan};
    use std::sync::Arc;

    fn temp_dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("torchwatch-persist-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn store() -> Arc<Storage> {
        Arc::new(Storage::new(StorageOptions {
            retention_ms: 1 << 40,
            max_series: 1000,
        }))
    }

    fn everything(s: &Storage) -> Vec<(String, Vec<(i64, u64)>)> {
        let mut all: Vec<_> = s
            .view()
            .select(&[], i64::MIN, i64::MAX)
            .into_iter()
            .map(|sp| {
                let pts = sp.points.iter().map(|p| (p.t, p.v.to_bits())).collect();
                (sp.labels.to_string(), pts)
            })
            .collect();
        all.sort();
        all
    }

    fn fill(s: &Storage, from: i64, to: i64) {
        let mut app = s.appender();
        for t in from..to {
            for job in ["a", "b", "c"] {
                let labels = Labels::from_pairs([("__name__", "up"), ("job", job)]);
                // Irregular steps, negative and special values, the staleness marker.
                let v = match t % 7 {
                    0 => stale_nan(),
                    1 => f64::INFINITY,
                    2 => -(t as f64) * 0.37,
                    _ => t as f64,
                };
                app.append(&labels, t * 1000 + (t % 3) * 17, v).unwrap();
            }
        }
    }

    #[test]
    fn replays_snapshot_and_log_bit_for_bit() {
        let dir = temp_dir("replay");
        let first = store();
        let (mut p, replayed) = Persistence::open(&dir, first.clone());
        assert_eq!(replayed.samples, 0);
        fill(&first, 0, 100);
        p.checkpoint().unwrap();
        fill(&first, 100, 150);
        p.flush().unwrap();
        fill(&first, 150, 160);
        p.flush().unwrap();
        // Appended after the last flush: lost by a kill -9, as documented.
        fill(&first, 160, 161);
        let expected: Vec<_> = everything(&first)
            .into_iter()
            .map(|(l, pts)| (l, pts.into_iter().filter(|(t, _)| *t < 160_000).collect()))
            .collect();
        drop(p);
        let second = store();
        let (_p, replayed) = Persistence::open(&dir, second.clone());
        assert_eq!(replayed.series, 3);
        assert_eq!(replayed.samples, 3 * 160);
        assert_eq!(everything(&second), expected);
        let stale = second.view().select(&[], 0, 0);
        assert!(
            is_stale(stale[0].points[0].v),
            "the staleness marker survives"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_torn_tail_keeps_every_whole_frame() {
        let dir = temp_dir("torn");
        let first = store();
        let (mut p, _) = Persistence::open(&dir, first.clone());
        fill(&first, 0, 10);
        p.flush().unwrap();
        let whole = std::fs::metadata(dir.join("storage.wal")).unwrap().len();
        fill(&first, 10, 20);
        p.flush().unwrap();
        drop(p);
        // A crash in the middle of the second frame.
        let wal = dir.join("storage.wal");
        let len = std::fs::metadata(&wal).unwrap().len();
        let file = std::fs::OpenOptions::new().write(true).open(&wal).unwrap();
        file.set_len(whole + (len - whole) / 2).unwrap();
        let second = store();
        let (_p, replayed) = Persistence::open(&dir, second.clone());
        assert_eq!(replayed.samples, 30);
        assert_eq!(second.stats().samples, 30);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn an_older_log_beside_a_newer_snapshot_is_not_replayed_twice() {
        let dir = temp_dir("generations");
        let first = store();
        let (mut p, _) = Persistence::open(&dir, first.clone());
        fill(&first, 0, 10);
        p.flush().unwrap();
        let old_wal = std::fs::read(dir.join("storage.wal")).unwrap();
        p.checkpoint().unwrap();
        drop(p);
        // As if the crash came after the snapshot's rename and before the log's.
        std::fs::write(dir.join("storage.wal"), old_wal).unwrap();
        let second = store();
        let (_p, replayed) = Persistence::open(&dir, second.clone());
        assert_eq!(replayed.samples, 30, "the snapshot only");
        assert_eq!(everything(&second), everything(&first));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_write_is_caught_up_by_the_next_checkpoint() {
        let dir = temp_dir("failing");
        let first = store();
        let (mut p, _) = Persistence::open(&dir, first.clone());
        fill(&first, 0, 10);
        // The directory disappears under the log: writes fail, serving goes on.
        std::fs::remove_dir_all(&dir).unwrap();
        std::fs::write(&dir, b"not a directory").unwrap();
        p.wal = None;
        assert!(p.flush().is_err());
        fill(&first, 10, 20);
        assert!(p.flush().is_err());
        assert!(first.stats().write_failures >= 2);
        std::fs::remove_file(&dir).unwrap();
        std::fs::create_dir_all(&dir).unwrap();
        p.flush().unwrap();
        let second = store();
        let (_p, replayed) = Persistence::open(&dir, second.clone());
        assert_eq!(replayed.samples, 60);
        assert_eq!(everything(&second), everything(&first));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn varints_and_zigzag_round_trip() {
        for v in [0i64, 1, -1, 63, -64, i64::MAX, i64::MIN, 15_000, -15_000] {
            let mut out = Vec::new();
            push_varint(&mut out, zigzag(v));
            let mut slice = &out[..];
            assert_eq!(unzigzag(read_varint(&mut slice).unwrap()), v);
            assert!(slice.is_empty());
        }
    }
}
