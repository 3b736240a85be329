//! Timers shared by everything that runs on an interval inside `serve` (rule groups, scale
//! policies): a first tick after a delay, then one per interval, overruns skipped rather than
//! bunched up, and an end when shutdown starts.

use std::time::Duration;

use tokio::sync::watch;

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
