//! The built-in store survives restarts: everything after SIGTERM (the final snapshot), at
//! most `storage.flush_interval` of samples after `kill -9`, and serving goes on while the state
//! directory is full, catching up once space returns. Each restart that checks the replay runs
//! without scrapes, so the store holds only what was read back.

mod common;

use common::{Api, Server};
use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

/// Raw samples of every series the self-scrape wrote: labels -> [(timestamp, value)].
type Samples = BTreeMap<String, Vec<(String, String)>>;

async fn samples(api: &Api) -> Samples {
    let (status, body) = api
        .get("/api/v1/query", &[("query", "{job=\"torchwatch\"}[1h]")])
        .await;
    assert_eq!(status, 200, "{body}");
    body["data"]["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let points = r["values"]
                .as_array()
                .unwrap()
                .iter()
                .map(|p| (p[0].to_string(), p[1].as_str().unwrap().to_owned()))
                .collect();
            (r["metric"].to_string(), points)
        })
        .collect()
}

fn config(state: &Path, scrape: bool, flush: &str) -> String {
    let scrape = if scrape {
        "scrape:\n  interval: 100ms\n"
    } else {
        "scrape:\n  self: false\n"
    };
    format!(
        "{scrape}storage:\n  flush_interval: {flush}\nstate:\n  dir: {}\n",
        state.display()
    )
}

async fn metric(api: &Api, name: &str) -> f64 {
    common::sample(&api.metrics_text().await, name).unwrap_or_else(|| panic!("{name} missing"))
}

/// Every sample of `before` is in `after`, bit for bit.
fn assert_kept(before: &Samples, after: &Samples, what: &str) {
    let total: usize = before.values().map(Vec::len).sum();
    assert!(total > 0, "{what}: nothing was scraped before the restart");
    for (series, points) in before {
        let kept = after.get(series).map(Vec::as_slice).unwrap_or_default();
        let missing: Vec<_> = points.iter().filter(|p| !kept.contains(p)).collect();
        assert!(
            missing.is_empty(),
            "{what}: {series} lost {} of {} samples, e.g. {:?}",
            missing.len(),
            points.len(),
            &missing[..missing.len().min(3)]
        );
    }
}

/// Starts a scraping server on `state` and waits until it holds at least `n` samples of `up`.
async fn scraping(state: &Path, flush: &str, n: usize) -> (Server, Api) {
    let server = common::start("storage", &[], &config(state, true, flush));
    server.wait_ready().await;
    let api = Api::new(&server);
    api.eventually("count_over_time(up[1h])", "self-scrapes", |v| {
        v.first().is_some_and(|(_, c)| *c >= n as f64)
    })
    .await;
    (server, api)
}

/// A server that only replays `state`, with what it read back.
async fn replayed(state: &Path) -> (Server, Samples) {
    let server = common::start("storage", &[], &config(state, false, "10s"));
    server.wait_ready().await;
    let got = samples(&Api::new(&server)).await;
    (server, got)
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_keeps_every_sample_and_kill_9_loses_at_most_a_flush_interval() {
    let dir = common::TempDir::new("storage-restarts");
    let state = dir.path().join("state");

    // SIGTERM: the log is flushed only every 60 s, so only the final snapshot can keep these.
    let (mut server, api) = scraping(&state, "60s", 10).await;
    let before = samples(&api).await;
    server.signal_term();
    assert!(server.wait_exit().success());
    let (mut check, after) = replayed(&state).await;
    assert_kept(&before, &after, "after SIGTERM");
    let replay = check
        .wait_for_logs("storage_replayed", |lines| {
            lines.iter().any(|l| l["event"] == "storage_replayed")
        })
        .await
        .into_iter()
        .find(|l| l["event"] == "storage_replayed")
        .expect("a storage_replayed line");
    let total: usize = before.values().map(Vec::len).sum();
    assert!(
        replay["samples"].as_u64().unwrap() >= total as u64,
        "{replay}"
    );
    check.signal_term();
    assert!(check.wait_exit().success());

    // kill -9, three times: every sample older than two flushes is back.
    let mut kept = after;
    for round in 0..3 {
        let (mut server, api) = scraping(&state, "200ms", 5).await;
        let before = samples(&api).await;
        assert_kept(&kept, &before, &format!("round {round}, earlier runs"));
        // Two changes of the log's size: the second flush began after `before` was read.
        let mut size = metric(&api, "torchwatch_storage_wal_bytes").await;
        let deadline = Instant::now() + Duration::from_secs(20);
        for _ in 0..2 {
            loop {
                let now = metric(&api, "torchwatch_storage_wal_bytes").await;
                if now != size {
                    size = now;
                    break;
                }
                assert!(Instant::now() < deadline, "the log never grew");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        server.signal("KILL");
        server.wait_exit();
        let (mut check, after) = replayed(&state).await;
        assert_kept(&before, &after, &format!("round {round}, after kill -9"));
        let torn: Vec<_> = check
            .log_lines()
            .into_iter()
            .filter(|l| l["event"] == "state_unreadable")
            .collect();
        assert!(torn.is_empty(), "{torn:?}");
        check.signal_term();
        assert!(check.wait_exit().success());
        kept = after;
    }
}

/// Runs `mount`/`umount`; the test needs root, as CI has.
fn run(program: &str, args: &[&str]) {
    let status = std::process::Command::new(program)
        .args(args)
        .status()
        .unwrap();
    assert!(status.success(), "{program} {args:?} failed");
}

struct Tmpfs(std::path::PathBuf);

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_state_directory_is_counted_and_caught_up_when_space_returns() {
    let dir = common::TempDir::new("storage-full");
    let mount = dir.path().join("small");
    std::fs::create_dir_all(&mount).unwrap();
    let path = mount.to_str().unwrap();
    run("mount", &["-t", "tmpfs", "-o", "size=2m", "tmpfs", path]);
    let _mounted = Tmpfs(mount.clone());
    let state = mount.join("state");
    let (mut server, api) = scraping(&state, "200ms", 3).await;
    // Fill the disk: every later write of the log or a snapshot fails.
    let filler = mount.join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 64 << 10];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    drop(file);
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(&api, "torchwatch_storage_write_failures_total").await < 3.0 {
        assert!(Instant::now() < deadline, "no write failure counted");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Still serving and scraping.
    let during = samples(&api).await;
    let later = api
        .eventually("count_over_time(up[1h])", "scrapes go on", |v| {
            v.first()
                .is_some_and(|(_, c)| *c as usize > during.values().map(Vec::len).max().unwrap())
        })
        .await;
    assert!(!later.is_empty());
    let warnings: Vec<_> = server
        .wait_for_logs("state_not_saved", |lines| {
            lines.iter().any(|l| l["event"] == "state_not_saved")
        })
        .await
        .into_iter()
        .filter(|l| l["event"] == "state_not_saved")
        .collect();
    assert!(
        !warnings.is_empty() && warnings.len() <= 3,
        "logged once per file that fails, not per write: {warnings:?}"
    );
    // Space returns: the next checkpoint writes everything, including the samples of the
    // failing period.
    std::fs::remove_file(&filler).unwrap();
    let checkpoints = metric(&api, "torchwatch_storage_checkpoints_total").await;
    server
        .wait_for_logs("state_saved_again", |lines| {
            lines.iter().any(|l| l["event"] == "state_saved_again")
        })
        .await;
    assert!(metric(&api, "torchwatch_storage_checkpoints_total").await > checkpoints);
    server.signal("KILL");
    server.wait_exit();
    let (_check, after) = replayed(&state).await;
    assert_kept(&during, &after, "after the disk was full");
}
