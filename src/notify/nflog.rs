//! The notification log: what each integration of each group was last told, kept on disk
//! so a restart neither repeats a notification nor forgets a resolved one owed.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What one integration was last told: the firing and resolved fingerprints, and when.
pub(super) type Notified = (HashSet<u64>, HashSet<u64>, Instant);

/// The notification log's key of one integration of a group, as Alertmanager's nflog keys
/// entries by group, receiver, integration and index.
pub(super) fn log_key(group_key: &str, receiver: &str, integration: &str, index: usize) -> String {
    format!("{group_key}|{receiver}|{integration}|{index}")
}

/// A log entry as the dedup stage reads it; its time mapped onto the monotonic clock.
pub(super) fn notified_from(entry: &LogEntry) -> Notified {
    let age = (crate::clock::now_ms() - entry.at).max(0) as u64;
    (
        entry.firing.iter().copied().collect(),
        entry.resolved.iter().copied().collect(),
        Instant::now()
            .checked_sub(Duration::from_millis(age))
            .unwrap_or_else(Instant::now),
    )
}

/// Writes a state file off the async runtime (fsync blocks): one writer task takes the newest
/// snapshot whenever it is free, so a burst of changes costs one write, not one each. The
/// notification log and the silences each have one.
pub(super) struct SnapshotWriter<T> {
    latest: watch::Sender<Option<Arc<T>>>,
}

/// The notification log's writer.
pub(super) type LogWriter = SnapshotWriter<HashMap<String, LogEntry>>;

impl<T: serde::Serialize + Clone + Send + Sync + 'static> SnapshotWriter<T> {
    /// Writes each newest snapshot to `file` (failures are logged by `state::save`, by file).
    pub(super) fn start(file: std::path::PathBuf) -> SnapshotWriter<T> {
        let (latest, mut changes) = watch::channel(None::<Arc<T>>);
        tokio::spawn(async move {
            // Ends once the owner is gone and its last snapshot is written.
            while changes.changed().await.is_ok() {
                let Some(snapshot) = changes.borrow_and_update().clone() else {
                    continue;
                };
                let file = file.clone();
                // state::save logs a failing file once, and counts every failure.
                let _ = tokio::task::spawn_blocking(move || crate::state::save(&file, &*snapshot))
                    .await;
            }
        });
        SnapshotWriter { latest }
    }

    pub(super) fn save(&self, snapshot: &T) {
        self.latest.send_replace(Some(Arc::new(snapshot.clone())));
    }
}

/// What was last delivered for one group, as saved across restarts: the
/// firing and resolved fingerprints and when (ms).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
pub(super) struct LogEntry {
    pub(super) firing: Vec<u64>,
    pub(super) resolved: Vec<u64>,
    pub(super) at: i64,
}
