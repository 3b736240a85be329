//! Files that keep alert state and the notification log across restarts:
//! JSON, written atomically (write a temporary file, fsync, rename), so a
//! crash leaves the previous version; unreadable files start clean with one
//! warning.

use serde::Serialize;
use serde::de::DeserializeOwned;
use std::collections::BTreeSet;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

/// Files whose last save failed. A file that starts failing is logged once and one that
/// writes again once, so a full or read-only state dir gives a line per change, not one per
/// evaluation; torchwatch keeps serving and retries at every change.
static FAILING: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());
static FAILURES: AtomicU64 = AtomicU64::new(0);

/// Saves that failed since start (`torchwatch_state_write_failures_total`).
pub fn write_failures() -> u64 {
    FAILURES.load(Ordering::Relaxed)
}

/// Writes `value` to `path` atomically; failures are counted and logged once per change.
pub fn save<T: Serialize>(path: &Path, value: &T) -> std::io::Result<()> {
    let result = serde_json::to_vec(value)
        .map_err(std::io::Error::other)
        .and_then(|bytes| write_bytes_atomically(path, &bytes));
    if result.is_err() {
        FAILURES.fetch_add(1, Ordering::Relaxed);
    }
    record_outcome(path, result.as_ref().map(|_| ()));
    result
}

/// Logs a file that starts failing to save once, and once when it saves again, so a full or
/// read-only state dir gives a line per change, not one per write.
pub fn record_outcome(path: &Path, outcome: Result<(), &std::io::Error>) {
    let mut failing = crate::sync::lock(&FAILING);
    match outcome {
        Err(e) => {
            if failing.insert(path.to_path_buf()) {
                tracing::warn!(event = "state_not_saved", file = %path.display(), error = %e,
                    "cannot save state; serving on, and retrying at every change");
            }
        }
        Ok(()) => {
            if failing.remove(path) {
                tracing::info!(event = "state_saved_again", file = %path.display(),
                    "state is saved again");
            }
        }
    }
}

/// Writes `bytes` to `path` so that a crash at any moment leaves either the old file or the
/// new one: a temporary file, synced, renamed over `path`, then the directory synced.
pub fn write_bytes_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    // A name of its own per write, so two writers of one file never interleave in one
    // temporary file; the rename still leaves whole files only.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{n}", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        // A full disk must not also fill up with half-written temporary files.
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself is durable once the directory is synced.
    if let Some(dir) = path.parent()
        && let Ok(d) = std::fs::File::open(dir)
    {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Reads `path`; a missing file is `None`, an unreadable one too, after one warning.
pub fn load<T: DeserializeOwned>(path: &Path, what: &str) -> Option<T> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            tracing::warn!(event = "state_unreadable", file = %path.display(), error = %e,
                "cannot read saved {what}; starting without it");
            return None;
        }
    };
    match serde_json::from_slice(&bytes) {
        Ok(v) => Some(v),
        Err(e) => {
            tracing::warn!(event = "state_unreadable", file = %path.display(), error = %e,
                "saved {what} is corrupt; starting without it");
            None
        }
    }
}

/// A file name for `key` that is safe on any filesystem.
pub fn file_for(dir: &Path, prefix: &str, key: &str) -> PathBuf {
    // Stable across runs and Rust versions, unlike DefaultHasher.
    let hash = crate::storage::fnv1a([key.as_bytes()]);
    dir.join(format!("{prefix}-{hash:016x}.json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_atomically_and_survives_corruption() {
        let dir = std::env::temp_dir().join(format!("torchwatch-state-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = file_for(&dir, "t", "group;g");
        save(&path, &vec![1, 2, 3]).unwrap();
        assert_eq!(load::<Vec<i32>>(&path, "test"), Some(vec![1, 2, 3]));
        let leftovers = std::fs::read_dir(&dir)
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .count();
        assert_eq!(leftovers, 0, "no temporary file left");
        std::fs::write(&path, b"{not json").unwrap();
        assert_eq!(load::<Vec<i32>>(&path, "test"), None);
        assert_eq!(load::<Vec<i32>>(&dir.join("missing.json"), "test"), None);
        assert_eq!(file_for(&dir, "t", "group;g"), path, "stable names");
        // A directory that cannot be written: counted, no temporary file left, and the
        // next good save recovers.
        let blocked = dir.join("not-a-dir");
        std::fs::write(&blocked, b"file").unwrap();
        let failures = write_failures();
        assert!(save(&blocked.join("x.json"), &1).is_err());
        assert!(save(&blocked.join("x.json"), &1).is_err());
        assert_eq!(write_failures(), failures + 2);
        assert!(save(&path, &vec![4]).is_ok());
        assert_eq!(load::<Vec<i32>>(&path, "test"), Some(vec![4]));
        let _ = std::fs::remove_dir_all(&dir);
    }
}
