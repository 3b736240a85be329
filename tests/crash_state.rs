//! `kill -9` at any moment never leaves state torchwatch cannot read: a server whose rules fire
//! every 200 ms (alert state written after each evaluation, the notification log after each
//! delivery) and whose store's log is flushed every 50 ms (self-scrapes every 50 ms) is killed
//! again and again at varying moments, and every restart reads its state without a
//! `state_unreadable` warning (a torn last frame of the log is expected and dropped).

mod common;

use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_writes_never_leaves_unreadable_state() {
    let (hook, received) = common::receiver("/hook", 0).await;
    let dir = common::TempDir::new("crash-state");
    let rules = dir.path().join("rules.yml");
    std::fs::write(
        &rules,
        "groups:\n  - name: g\n    interval: 200ms\n    rules:\n      - alert: Busy\n        expr: vector(1)\n        for: 0s\n        labels: {severity: page}\n",
    )
    .unwrap();
    let config = format!(
        "scrape:\n  interval: 50ms\nstorage:\n  flush_interval: 50ms\nrules:\n  files: ['{}']\nstate:\n  dir: {}\nnotify:\n  route:\n    receiver: hook\n    group_wait: 0s\n    group_interval: 200ms\n    repeat_interval: 200ms\n  receivers:\n    - name: hook\n      webhook_configs:\n        - url: {hook}\n",
        rules.display(),
        dir.path().join("state").display()
    );
    for round in 0..12u64 {
        let mut server = common::start("crash-state", &[], &config);
        server.wait_ready().await;
        // Let it write for a while that differs each round, then kill it mid-stride.
        let deadline = Instant::now() + Duration::from_millis(150 + round * 97 % 700);
        while Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let unreadable: Vec<_> = server
            .log_lines()
            .into_iter()
            .filter(|l| l["event"] == "state_unreadable")
            .collect();
        assert!(
            unreadable.is_empty(),
            "round {round}: state left by the previous kill was unreadable: {unreadable:?}"
        );
        server.signal("KILL");
        server.wait_exit();
    }
    // The last kill's state, read once more: once it notifies again, it has read it all.
    let before = received.lock().unwrap().bodies.len();
    let server = common::start("crash-state", &[], &config);
    server.wait_ready().await;
    common::wait_for_bodies(&received, before + 1).await;
    let unreadable: Vec<_> = server
        .log_lines()
        .into_iter()
        .filter(|l| l["event"] == "state_unreadable")
        .collect();
    assert!(unreadable.is_empty(), "{unreadable:?}");
    drop(server);
    assert!(
        !received.lock().unwrap().bodies.is_empty(),
        "the alert was never delivered, so the log was never written"
    );
    let files: Vec<_> = std::fs::read_dir(dir.path().join("state"))
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    assert!(
        files.iter().any(|f| f.starts_with("alerts")),
        "no alert state was written: {files:?}"
    );
    assert!(
        files.iter().any(|f| f == "storage.wal") && files.iter().any(|f| f == "storage.snapshot"),
        "the store was not persisted: {files:?}"
    );
}
