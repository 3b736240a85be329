//! Time, shared by every module: the wall clock in Unix milliseconds (what samples, alerts and
//! decisions are stamped with), RFC 3339 as Prometheus and Alertmanager print it, and the timers
//! of everything that runs on an interval inside `serve` (rule groups, scale and cost policies):
//! a first tick after a delay, then one per interval, overruns skipped rather than bunched up,
//! and an end when shutdown starts.

use std::time::Duration;

use tokio::sync::watch;

/// Now, in Unix milliseconds (0 if the clock is before 1970).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Unix milliseconds as RFC 3339 in UTC with as many fractional digits as needed, as Go's
/// `time.RFC3339Nano` prints them (Prometheus' and Alertmanager's APIs).
pub fn rfc3339(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true))
        .unwrap_or_default()
}

/// An interval timer that ends when `stop` turns true.
pub struct Timer {
    ticker: tokio::time::Interval,
    stop: watch::Receiver<bool>,
}

impl Timer {
    /// Ticks `delay` from now, then every `interval`.
    pub fn new(delay: Duration, interval: Duration, stop: watch::Receiver<bool>) -> Timer {
        let mut ticker = tokio::time::interval_at(tokio::time::Instant::now() + delay, interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        Timer { ticker, stop }
    }

    /// Waits for the next tick; false once shutdown started.
    pub async fn tick(&mut self) -> bool {
        tokio::select! {
            _ = self.ticker.tick() => true,
            _ = self.stop.wait_for(|s| *s) => false,
        }
    }
}
