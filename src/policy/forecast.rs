//! Forecasting a policy's first metric: a downsampled history the policy keeps itself (so it can
//! reach back further than the store's retention, and survives restarts under `state.dir`), and
//! the forecasters that read it.
//!
//! Every forecaster answers "the highest value expected between now and `lead_time` from now",
//! since capacity must be there for the whole start-up time, not only at its end.

use serde::{Deserialize, Serialize};

use crate::config::ForecastModel;

/// How a step's observations become its value.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Reduce {
    /// Their mean (load, CPU).
    #[default]
    Mean,
    /// Their peak (memory).
    Max,
}

/// One value per fixed step (the mean, or the peak, of its observations), oldest first, at most
/// `capacity` of them.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct History {
    step_ms: i64,
    capacity: usize,
    #[serde(default)]
    reduce: Reduce,
    /// Start time of `values[0]`.
    start_ms: i64,
    values: Vec<f64>,
    /// The step being filled: its start, sum (or peak) and count.
    open: Option<(i64, f64, u32)>,
}

impl History {
    /// An empty history of `span_ms` at `step_ms` resolution.
    pub fn new(step_ms: i64, span_ms: i64) -> History {
        History::reducing(step_ms, span_ms, Reduce::Mean)
    }

    /// An empty history whose steps reduce their observations with `reduce`.
    pub fn reducing(step_ms: i64, span_ms: i64, reduce: Reduce) -> History {
        History {
            step_ms,
            capacity: (span_ms / step_ms).max(1) as usize,
            reduce,
            start_ms: 0,
            values: Default::default(),
            open: None,
        }
    }

    /// True when `other` was made with the same resolution and span (a reload may change them).
    pub fn same_shape(&self, other: &History) -> bool {
        self.step_ms == other.step_ms
            && self.capacity == other.capacity
            && self.reduce == other.reduce
    }

    /// The completed steps' values, oldest first.
    pub fn values(&self) -> &[f64] {
        &self.values
    }

    /// Adds an observation; returns true when it closed a step (the completed values changed).
    pub fn observe(&mut self, t: i64, v: f64) -> bool {
        if !v.is_finite() {
            return false;
        }
        let step_start = t.div_euclid(self.step_ms) * self.step_ms;
        match &mut self.open {
            Some((start, acc, count)) if *start == step_start => {
                match self.reduce {
                    Reduce::Mean => *acc += v,
                    Reduce::Max => *acc = acc.max(v),
                }
                *count += 1;
                false
            }
            Some((start, _, _)) if step_start < *start => false,
            open => {
                let closed = open.take();
                *open = Some((step_start, v, 1));
                match closed {
                    Some((start, acc, count)) => {
                        let value = match self.reduce {
                            Reduce::Mean => acc / f64::from(count),
                            Reduce::Max => acc,
                        };
                        self.push(start, value);
                        true
                    }
                    None => false,
                }
            }
        }
    }

    /// Appends a completed step; missing steps in between repeat the last value. A gap as long
    /// as the whole history (a long outage) starts it afresh rather than flattening the season.
    fn push(&mut self, start: i64, value: f64) {
        if (start - self.end_ms()) / self.step_ms >= self.capacity as i64 {
            self.values.clear();
        }
        if let Some(&last) = self.values.last() {
            let mut next = self.start_ms + self.values.len() as i64 * self.step_ms;
            while next < start {
                self.values.push(last);
                next += self.step_ms;
            }
        } else {
            self.start_ms = start;
        }
        self.values.push(value);
        let excess = self.values.len().saturating_sub(self.capacity);
        self.values.drain(..excess);
        self.start_ms += excess as i64 * self.step_ms;
    }

    /// Completed steps.
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True before the first step completed.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The end of the last completed step; it moves whenever a step completes.
    pub fn end_ms(&self) -> i64 {
        self.start_ms + self.values.len() as i64 * self.step_ms
    }

    /// The highest value `model` expects in `(now, now + lead_ms]`, or why it cannot tell yet.
    pub fn forecast(
        &self,
        model: ForecastModel,
        params: &Params,
        now: i64,
        lead_ms: i64,
    ) -> Result<f64, String> {
        let values = &self.values;
        let step = self.step_ms;
        // Extrapolating across a gap (after an outage, or while the metric fails) would
        // forecast from the past as if it were now.
        if !values.is_empty() && now - self.end_ms() > 2 * step {
            return Err(format!(
                "the history stops {}s before now",
                (now - self.end_ms()) / 1000
            ));
        }
        // Steps from the last completed one to the forecast horizon's end.
        let first = ((now - self.end_ms()).max(0) / step + 1) as usize;
        let last = ((now + lead_ms - self.end_ms()).max(0) as f64 / step as f64).ceil() as usize;
        let horizons = first..=last.max(first);
        let season = (params.season_ms / step).max(1) as usize;
        let need = |n: usize| {
            if values.len() < n {
                Err(format!(
                    "{} of the {n} steps of history it needs",
                    values.len()
                ))
            } else {
                Ok(())
            }
        };
        let highest = |f: &dyn Fn(usize) -> f64| {
            horizons
                .clone()
                .map(f)
                .fold(f64::NEG_INFINITY, f64::max)
                .max(0.0)
        };
        match model {
            ForecastModel::Mean => {
                need(1)?;
                let tail = &values[values.len().saturating_sub(10)..];
                Ok(tail.iter().sum::<f64>() / tail.len() as f64)
            }
            ForecastModel::Linear => {
                need(2)?;
                let window = ((3_600_000 / step) as usize).clamp(2, values.len());
                let tail = &values[values.len() - window..];
                let (slope, intercept) = least_squares(tail);
                Ok(highest(&|h| intercept + slope * (window - 1 + h) as f64))
            }
            ForecastModel::SeasonalNaive => {
                need(season)?;
                let n = values.len();
                Ok(highest(&|h| {
                    let back = h.div_ceil(season) * season;
                    values[n - 1 + h - back]
                }))
            }
            ForecastModel::HoltWinters => {
                need(2 * season)?;
                let fit = holt_winters(values, season, params);
                Ok(highest(&|h| fit.at(h)))
            }
        }
    }
}

/// Holt-Winters smoothing factors and the season.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    /// Length of the cycle, ms.
    pub season_ms: i64,
    /// Level smoothing.
    pub alpha: f64,
    /// Trend smoothing.
    pub beta: f64,
    /// Season smoothing.
    pub gamma: f64,
}

/// `(slope, intercept)` of the least-squares line through `(i, values[i])`.
fn least_squares(values: &[f64]) -> (f64, f64) {
    let n = values.len() as f64;
    let mean_x = (n - 1.0) / 2.0;
    let mean_y = values.iter().sum::<f64>() / n;
    let (mut sxy, mut sxx) = (0.0, 0.0);
    for (i, y) in values.iter().enumerate() {
        let dx = i as f64 - mean_x;
        sxy += dx * (y - mean_y);
        sxx += dx * dx;
    }
    let slope = if sxx == 0.0 { 0.0 } else { sxy / sxx };
    (slope, mean_y - slope * mean_x)
}

/// The state of additive Holt-Winters after the last value.
struct Fit {
    level: f64,
    trend: f64,
    /// Seasonal offsets; `season[i]` belongs to the step `i` after the last one, modulo.
    season: Vec<f64>,
}

impl Fit {
    /// The forecast `h` steps after the last value.
    fn at(&self, h: usize) -> f64 {
        self.level + h as f64 * self.trend + self.season[(h - 1) % self.season.len()]
    }
}

/// Additive triple exponential smoothing, initialised from the first two seasons.
fn holt_winters(values: &[f64], m: usize, p: &Params) -> Fit {
    let mean = |s: &[f64]| s.iter().sum::<f64>() / s.len() as f64;
    let (first, second) = (mean(&values[..m]), mean(&values[m..2 * m]));
    let mut level = first;
    let mut trend = (second - first) / m as f64;
    let mut season: Vec<f64> = values[..m].iter().map(|v| v - first).collect();
    for (i, &y) in values.iter().enumerate().skip(m) {
        let s = season[i % m];
        let previous = level;
        level = p.alpha * (y - s) + (1.0 - p.alpha) * (level + trend);
        trend = p.beta * (level - previous) + (1.0 - p.beta) * trend;
        season[i % m] = p.gamma * (y - level) + (1.0 - p.gamma) * s;
    }
    // Rotate so index 0 is the step after the last value.
    let next = values.len() % m;
    season.rotate_left(next);
    Fit {
        level,
        trend,
        season,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEP: i64 = 60_000;
    const SEASON: usize = 48;

    fn params() -> Params {
        Params {
            season_ms: SEASON as i64 * STEP,
            alpha: 0.5,
            beta: 0.05,
            gamma: 0.3,
        }
    }

    fn seasonal(i: usize) -> f64 {
        100.0 + 50.0 * (2.0 * std::f64::consts::PI * i as f64 / SEASON as f64).sin()
    }

    /// One observation per step, so each step's mean is the value itself.
    fn history_of(values: impl Iterator<Item = f64>) -> (History, i64) {
        let mut history = History::new(STEP, 14 * 24 * 3_600_000);
        let mut t = 0;
        for v in values {
            history.observe(t, v);
            t += STEP;
        }
        (history, t - STEP)
    }

    #[test]
    fn steps_are_means_and_gaps_repeat_the_last_value() {
        let mut h = History::new(STEP, 10 * STEP);
        assert!(!h.observe(0, 1.0));
        assert!(!h.observe(30_000, 3.0));
        assert!(h.observe(STEP, 5.0), "the first step closed");
        assert!(h.observe(4 * STEP, 7.0), "steps 2 and 3 are missing");
        assert!(h.observe(5 * STEP, 1.0));
        assert_eq!(h.values, [2.0, 5.0, 5.0, 5.0, 7.0]);
        assert!(!h.observe(0, 9.0), "late samples are ignored");
        for i in 6..20 {
            h.observe(i * STEP, 1.0);
        }
        assert_eq!(h.len(), 10, "capped at the span");
        assert_eq!(h.start_ms, 9 * STEP);
        // An outage longer than the span starts afresh.
        h.observe(100 * STEP, 4.0);
        h.observe(101 * STEP, 4.0);
        assert_eq!((h.values.clone(), h.start_ms), (vec![4.0], 100 * STEP));
        let stale = h.forecast(ForecastModel::Mean, &params(), 110 * STEP, STEP);
        assert_eq!(stale.unwrap_err(), "the history stops 540s before now");
    }

    #[test]
    fn each_forecaster_on_a_seasonal_series() {
        let (history, now) = history_of((0..SEASON * 4).map(seasonal));
        // The truth over the next 5 steps: `now` is inside step 4*SEASON - 1, still open.
        let lead = 5 * STEP;
        let truth = (SEASON * 4 - 1..SEASON * 4 + 4)
            .map(seasonal)
            .fold(f64::MIN, f64::max);
        let hw = history
            .forecast(ForecastModel::HoltWinters, &params(), now, lead)
            .unwrap();
        assert!(
            (hw - truth).abs() < 0.05 * truth,
            "holt-winters {hw} vs {truth}"
        );
        let naive = history
            .forecast(ForecastModel::SeasonalNaive, &params(), now, lead)
            .unwrap();
        assert!(
            (naive - truth).abs() < 1e-9,
            "seasonal naive {naive} vs {truth}"
        );
        // The mean of the last 10 lags a sine wave; it is the mean, exactly.
        let mean = history
            .forecast(ForecastModel::Mean, &params(), now, lead)
            .unwrap();
        let expected = (SEASON * 4 - 11..SEASON * 4 - 1).map(seasonal).sum::<f64>() / 10.0;
        assert!((mean - expected).abs() < 1e-9);
    }

    #[test]
    fn linear_extrapolates_a_trend() {
        let (history, now) = history_of((0..100).map(|i| 10.0 + 2.0 * i as f64));
        // Completed steps 0..=98; the highest within 3 steps ahead is step 101.
        let v = history
            .forecast(ForecastModel::Linear, &params(), now, 3 * STEP)
            .unwrap();
        assert!((v - (10.0 + 2.0 * 101.0)).abs() < 1e-6, "{v}");
    }

    #[test]
    fn too_little_history_says_how_much_is_missing() {
        let (history, now) = history_of((0..SEASON).map(seasonal));
        let err = history
            .forecast(ForecastModel::HoltWinters, &params(), now, STEP)
            .unwrap_err();
        assert_eq!(
            err,
            format!("{} of the 96 steps of history it needs", SEASON - 1)
        );
    }
}
