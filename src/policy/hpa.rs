//! Kubernetes' HorizontalPodAutoscaler arithmetic, as `pkg/controller/podautoscaler/`
//! (`horizontal.go`, `replica_calculator.go`) computes it: per-metric proposals with the
//! tolerance band, the max over metrics with HPA's rules for invalid ones, then either the legacy
//! normalisation (no `behavior`) or stabilisation windows and rate-limit policies.
//!
//! Times are milliseconds on the caller's clock, so the simulator and `serve` run the same code.

use crate::config::{ScalingPolicyType, SelectPolicy};

/// What one metric's value is compared with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Target {
    /// Per replica: the query returns the total (HPA External `AverageValue`).
    AverageValue(f64),
    /// The value as a whole (HPA External/Object `Value`).
    Value(f64),
    /// A ratio of requests, e.g. 0.7; HPA compares whole percents (Resource `Utilization`).
    Utilization(f64),
}

impl Target {
    /// The same kind of target, `factor` times as high.
    pub fn scaled(self, factor: f64) -> Target {
        match self {
            Target::AverageValue(v) => Target::AverageValue(v * factor),
            Target::Value(v) => Target::Value(v * factor),
            Target::Utilization(v) => Target::Utilization(v * factor),
        }
    }

    /// The configured number.
    pub fn value(self) -> f64 {
        match self {
            Target::AverageValue(v) | Target::Value(v) | Target::Utilization(v) => v,
        }
    }
}

/// HPA's tolerance band: within `1 - down ..= 1 + up` nothing changes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Tolerance {
    /// Above 1.
    pub up: f64,
    /// Below 1.
    pub down: f64,
}

impl Tolerance {
    fn outside(self, ratio: f64) -> bool {
        ratio < 1.0 - self.down || ratio > 1.0 + self.up
    }
}

/// The replica count one metric proposes. `current` replicas exist, `ready` of them serve (the
/// rest are starting). Mirrors `GetExternalPerPodMetricReplicas`, `GetExternalMetricReplicas` and
/// `GetResourceReplicas` for the aggregate values PromQL gives.
pub fn proposal(target: Target, value: f64, current: u32, ready: u32, tolerance: Tolerance) -> u32 {
    let ceil = |x: f64| x.ceil().clamp(0.0, f64::from(u32::MAX)) as u32;
    match target {
        Target::AverageValue(per_replica) => {
            let ratio = value / (per_replica * f64::from(current));
            if tolerance.outside(ratio) {
                ceil(value / per_replica)
            } else {
                current
            }
        }
        Target::Value(whole) => {
            let ratio = value / whole;
            if current == 0 {
                ceil(ratio)
            } else if !tolerance.outside(ratio) {
                current
            } else {
                ceil(ratio * f64::from(ready))
            }
        }
        Target::Utilization(share) => {
            // The value is the mean over ready replicas; HPA truncates to whole percents in
            // integer arithmetic (the epsilon keeps 0.57 at 57, not 56.999...).
            let percent = |v: f64| (v * 100.0 + 1e-9).floor();
            let used = percent(value);
            let target = (share * 100.0).round();
            let ratio = used / target;
            let unready = current.saturating_sub(ready);
            if unready == 0 || ratio <= 1.0 {
                return if tolerance.outside(ratio) {
                    ceil(ratio * f64::from(ready))
                } else {
                    current
                };
            }
            // Scaling up with replicas still starting: they count as using nothing, and if that
            // flips the direction or lands in the band, nothing changes.
            let with_unready =
                percent(used / 100.0 * f64::from(ready) / f64::from(current)) / target;
            if !tolerance.outside(with_unready) || with_unready < 1.0 {
                current
            } else {
                ceil(with_unready * f64::from(current))
            }
        }
    }
}

/// One rate-limit policy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    /// Pods or percent.
    pub kind: ScalingPolicyType,
    /// The amount.
    pub value: u32,
    /// The window it counts over, ms.
    pub period_ms: i64,
}

/// `HPAScalingRules` for one direction, defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Stabilisation window, ms.
    pub window_ms: i64,
    /// Which policy wins.
    pub select: SelectPolicy,
    /// Rate limits.
    pub policies: Vec<RatePolicy>,
}

impl Rules {
    /// HPA's scale-up defaults: no window, 4 pods or 100 % per 15 s, the larger.
    pub fn default_up() -> Rules {
        Rules {
            window_ms: 0,
            select: SelectPolicy::Max,
            policies: vec![
                RatePolicy {
                    kind: ScalingPolicyType::Pods,
                    value: 4,
                    period_ms: 15_000,
                },
                RatePolicy {
                    kind: ScalingPolicyType::Percent,
                    value: 100,
                    period_ms: 15_000,
                },
            ],
        }
    }

    /// HPA's scale-down defaults: a 5-minute window, 100 % per 15 s.
    pub fn default_down() -> Rules {
        Rules {
            window_ms: 300_000,
            select: SelectPolicy::Max,
            policies: vec![RatePolicy {
                kind: ScalingPolicyType::Percent,
                value: 100,
                period_ms: 15_000,
            }],
        }
    }

    fn longest_period_ms(&self) -> i64 {
        self.policies.iter().map(|p| p.period_ms).max().unwrap_or(0)
    }
}

/// How a proposal becomes the desired count.
#[derive(Debug, Clone, PartialEq)]
pub enum Normalization {
    /// No `behavior`: the max over a 5-minute window, then at most `max(2 × current, 4)`.
    Legacy,
    /// `behavior` with stabilisation windows and rate limits per direction.
    Behavior {
        /// Scaling up.
        up: Rules,
        /// Scaling down.
        down: Rules,
    },
}

/// HPA's settings for one scaled target.
#[derive(Debug, Clone, PartialEq)]
pub struct Hpa {
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// The tolerance band.
    pub tolerance: Tolerance,
    /// Legacy or behaviours.
    pub normalization: Normalization,
}

/// The legacy downscale stabilisation window (`--horizontal-pod-autoscaler-downscale-stabilization`).
const LEGACY_WINDOW_MS: i64 = 300_000;

/// What HPA remembers between decisions: recommendations and scale events.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct State {
    /// `(time, recommendation)` as `stabilizeRecommendation*` records them; `None` until the
    /// first decision seeds it with the current count (`recordInitialRecommendation`).
    recommendations: Option<Vec<(i64, u32)>>,
    /// `(time, replicas added)`.
    up_events: Vec<(i64, u32)>,
    /// `(time, replicas removed)`.
    down_events: Vec<(i64, u32)>,
}

/// The outcome of one decision.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// The replica count to scale to (equal to current: no change).
    pub desired: u32,
    /// Why, in HPA's words.
    pub reason: String,
}

/// One metric's proposal, or why it has none.
pub type Proposal = Result<u32, String>;

impl Hpa {
    /// One reconcile: `proposals` holds each metric's proposal (named for the reason text) or
    /// the error that made it invalid. Records the recommendation in `state`; call
    /// [`Hpa::record_scale`] once the change was carried out.
    pub fn decide(
        &self,
        state: &mut State,
        now: i64,
        current: u32,
        proposals: &[(String, Proposal)],
    ) -> Outcome {
        let keep = |reason: String| Outcome {
            desired: current,
            reason,
        };
        // HPA seeds the window with the count it found, so a (re)started controller does not
        // scale down on its first decision.
        state
            .recommendations
            .get_or_insert_with(|| vec![(now, current)]);
        if current == 0 && self.min > 0 {
            return keep("scaling is disabled while the target has 0 replicas".into());
        }
        if current > self.max {
            return Outcome {
                desired: self.max,
                reason: "current number of replicas above max_replicas".into(),
            };
        }
        if current < self.min {
            return Outcome {
                desired: self.min,
                reason: "current number of replicas below min_replicas".into(),
            };
        }
        let mut proposed = 0;
        let mut rescale_metric = "";
        let mut invalid = Vec::new();
        for (name, p) in proposals {
            match p {
                Ok(r) if *r > proposed || rescale_metric.is_empty() => {
                    proposed = proposed.max(*r);
                    rescale_metric = name;
                }
                Ok(_) => {}
                Err(e) => invalid.push(format!("{name}: {e}")),
            }
        }
        // All invalid, or some invalid and the rest would scale down: no change.
        if invalid.len() == proposals.len() || (!invalid.is_empty() && proposed < current) {
            return keep(format!(
                "no change: invalid metrics ({})",
                invalid.join("; ")
            ));
        }
        let mut reason = if proposed > current {
            format!("{rescale_metric} above target")
        } else if proposed < current {
            "all metrics below target".to_string()
        } else {
            "metrics within tolerance of target".to_string()
        };
        let desired = match &self.normalization {
            Normalization::Legacy => {
                let stabilized = stabilize_legacy(state, now, proposed);
                let scale_up_limit = (2 * current).max(4);
                let desired = stabilized.clamp(self.min, self.max.min(scale_up_limit));
                if stabilized != proposed {
                    reason.push_str(&format!(
                        "; stabilized to {stabilized} (highest recommendation of the last 5m)"
                    ));
                }
                desired
            }
            Normalization::Behavior { up, down } => {
                let recommendations = state.recommendations.get_or_insert_with(Vec::new);
                let stabilized =
                    stabilize_with_behaviors(recommendations, now, current, proposed, up, down);
                if stabilized != proposed {
                    reason.push_str(&format!("; stabilized to {stabilized}"));
                }
                let limited = self.rate_limit(state, now, current, stabilized, up, down);
                if limited != stabilized {
                    reason.push_str(&format!("; rate-limited to {limited}"));
                }
                limited
            }
        };
        Outcome { desired, reason }
    }

    /// `convertDesiredReplicasWithBehaviorRate`.
    fn rate_limit(
        &self,
        state: &State,
        now: i64,
        current: u32,
        desired: u32,
        up: &Rules,
        down: &Rules,
    ) -> u32 {
        if desired > current {
            let limit = rate_bound(current, state, now, up, true).max(i64::from(current));
            let allowed = i64::from(self.max).min(limit);
            if i64::from(desired) > allowed {
                return allowed as u32;
            }
        } else if desired < current {
            let limit = rate_bound(current, state, now, down, false).min(i64::from(current));
            let allowed = i64::from(self.min).max(limit);
            if i64::from(desired) < allowed {
                return allowed as u32;
            }
        }
        desired
    }

    /// `storeScaleEvent`: remembers a change that was carried out, for the rate limits.
    pub fn record_scale(&self, state: &mut State, now: i64, from: u32, to: u32) {
        let Normalization::Behavior { up, down } = &self.normalization else {
            return;
        };
        let longest = up.longest_period_ms().max(down.longest_period_ms());
        state.up_events.retain(|(t, _)| *t > now - longest);
        state.down_events.retain(|(t, _)| *t > now - longest);
        if to > from {
            state.up_events.push((now, to - from));
        } else if to < from {
            state.down_events.push((now, from - to));
        }
    }
}

/// `stabilizeRecommendation`: the max over the legacy window; the oldest expired sample's slot
/// is reused, as HPA does.
fn stabilize_legacy(state: &mut State, now: i64, proposed: u32) -> u32 {
    let recommendations = state.recommendations.get_or_insert_with(Vec::new);
    let cutoff = now - LEGACY_WINDOW_MS;
    let mut highest = proposed;
    let mut old = None;
    for (i, (t, r)) in recommendations.iter().enumerate() {
        if *t < cutoff {
            old = Some(i);
        } else {
            highest = highest.max(*r);
        }
    }
    record(recommendations, old, (now, proposed));
    highest
}

/// `stabilizeRecommendationWithBehaviors`: at least the min over the up window, at most the max
/// over the down window, starting from the current count.
fn stabilize_with_behaviors(
    recommendations: &mut Vec<(i64, u32)>,
    now: i64,
    current: u32,
    proposed: u32,
    up: &Rules,
    down: &Rules,
) -> u32 {
    let (up_cutoff, down_cutoff) = (now - up.window_ms, now - down.window_ms);
    let (mut up_recommendation, mut down_recommendation) = (proposed, proposed);
    let mut old = None;
    for (i, (t, r)) in recommendations.iter().enumerate() {
        if *t > up_cutoff {
            up_recommendation = up_recommendation.min(*r);
        }
        if *t > down_cutoff {
            down_recommendation = down_recommendation.max(*r);
        }
        if *t < up_cutoff && *t < down_cutoff {
            old = Some(i);
        }
    }
    let mut recommendation = current.max(up_recommendation);
    if recommendation > down_recommendation {
        recommendation = down_recommendation;
    }
    record(recommendations, old, (now, proposed));
    recommendation
}

fn record(recommendations: &mut Vec<(i64, u32)>, old: Option<usize>, sample: (i64, u32)) {
    match old {
        Some(i) => recommendations[i] = sample,
        None => recommendations.push(sample),
    }
}

/// Replicas changed in `(now - period, now]`.
fn changed_within(events: &[(i64, u32)], now: i64, period_ms: i64) -> i64 {
    events
        .iter()
        .filter(|(t, _)| *t > now - period_ms)
        .map(|(_, n)| i64::from(*n))
        .sum()
}

fn period_start(current: u32, state: &State, now: i64, period_ms: i64) -> i64 {
    i64::from(current) - changed_within(&state.up_events, now, period_ms)
        + changed_within(&state.down_events, now, period_ms)
}

/// `calculateScaleUpLimitWithScalingRules` (`up`) and `calculateScaleDownLimitWithBehaviors`:
/// each policy's bound counted from its period's start; `max` takes the largest change (the
/// highest count up, the lowest down), `min` the smallest, `disabled` none.
fn rate_bound(current: u32, state: &State, now: i64, rules: &Rules, up: bool) -> i64 {
    if rules.select == SelectPolicy::Disabled {
        return i64::from(current);
    }
    let bounds = rules.policies.iter().map(|policy| {
        let start = period_start(current, state, now, policy.period_ms);
        let value = i64::from(policy.value);
        let share = f64::from(policy.value) / 100.0;
        match (policy.kind, up) {
            (ScalingPolicyType::Pods, true) => start + value,
            (ScalingPolicyType::Pods, false) => start - value,
            // Up rounds up so a small count can still grow; down truncates, as HPA does.
            (ScalingPolicyType::Percent, true) => (start as f64 * (1.0 + share)).ceil() as i64,
            (ScalingPolicyType::Percent, false) => (start as f64 * (1.0 - share)) as i64,
        }
    });
    let highest = (rules.select == SelectPolicy::Max) == up;
    let bound = if highest { bounds.max() } else { bounds.min() };
    bound.unwrap_or(i64::from(current))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOL: Tolerance = Tolerance { up: 0.1, down: 0.1 };

    fn with_behavior(min: u32, max: u32, up: Rules, down: Rules) -> Hpa {
        Hpa {
            min,
            max,
            tolerance: TOL,
            normalization: Normalization::Behavior { up, down },
        }
    }

    fn ok(r: u32) -> Vec<(String, Proposal)> {
        vec![("m".into(), Ok(r))]
    }

    #[test]
    fn the_documented_algorithm() {
        // kubernetes.io: current 200m, target 100m -> double; 50m -> halve.
        let u = |v, current| proposal(Target::Utilization(0.5), v, current, current, TOL);
        assert_eq!(u(1.0, 3), 6);
        assert_eq!(u(0.25, 4), 2);
        // Within 10 %: no change, either way.
        assert_eq!(u(0.54, 4), 4);
        assert_eq!(u(0.46, 4), 4);
        assert_eq!(u(0.56, 4), 5, "ratio 1.12 -> ceil(4.48)");
        // Utilization compares whole percents: 54.9 % is 54 %, and 0.57 is 57 % (not 56).
        assert_eq!(u(0.549, 10), 10);
        assert_eq!(u(0.57, 10), 12, "57 / 50 = 1.14 -> ceil(11.4)");
    }

    #[test]
    fn average_value_divides_the_total_by_the_target() {
        let a = |v, current| proposal(Target::AverageValue(150.0), v, current, current, TOL);
        assert_eq!(a(412.5, 2), 3);
        assert_eq!(a(600.0, 1), 4);
        assert_eq!(a(310.0, 2), 2, "ratio 1.033: inside the band");
        assert_eq!(a(0.0, 3), 0);
        // The band is inclusive: 44 on 10 replicas at 4 each (ratio 1.1) stays, 45 scales.
        let per4 = |v, current| proposal(Target::AverageValue(4.0), v, current, current, TOL);
        assert_eq!(per4(44.0, 10), 10);
        assert_eq!(per4(45.0, 10), 12);
    }

    #[test]
    fn value_targets_scale_ready_replicas_and_zero_has_no_tolerance() {
        let v = |value, current, ready| proposal(Target::Value(10.0), value, current, ready, TOL);
        assert_eq!(v(30.0, 2, 2), 6);
        assert_eq!(v(30.0, 3, 2), 6, "ready pods, not all of them");
        assert_eq!(v(10.5, 2, 2), 2);
        assert_eq!(v(10.5, 0, 0), 2, "from 0: ceil(ratio) without tolerance");
    }

    #[test]
    fn starting_replicas_count_as_idle_when_scaling_up() {
        // 4 replicas, 2 ready at 90 % against 50 %: (90*2)/(50*4) = 0.9 -> flips to keep.
        assert_eq!(proposal(Target::Utilization(0.5), 0.9, 4, 2, TOL), 4);
        // At 150 %: 1.5 -> ceil(1.5 * 4) = 6.
        assert_eq!(proposal(Target::Utilization(0.5), 1.5, 4, 2, TOL), 6);
    }

    #[test]
    fn several_metrics_take_the_max_and_never_scale_down_on_partial_data() {
        let hpa = with_behavior(1, 10, Rules::default_up(), Rules::default_down());
        let mut state = State::default();
        let both = vec![("a".to_string(), Ok(3)), ("b".to_string(), Ok(5))];
        let out = hpa.decide(&mut state, 0, 4, &both);
        assert_eq!(out.desired, 5);
        assert_eq!(out.reason, "b above target");
        let partial = vec![
            ("a".to_string(), Ok(2)),
            ("b".to_string(), Err("down".into())),
        ];
        assert_eq!(hpa.decide(&mut state, 15_000, 4, &partial).desired, 4);
        let partial_up = vec![
            ("a".to_string(), Ok(6)),
            ("b".to_string(), Err("down".into())),
        ];
        assert_eq!(hpa.decide(&mut state, 30_000, 4, &partial_up).desired, 6);
        let none = vec![("a".to_string(), Err("x".into()))];
        let out = hpa.decide(&mut state, 45_000, 4, &none);
        assert_eq!(out.desired, 4);
        assert!(
            out.reason.contains("invalid metrics (a: x)"),
            "{}",
            out.reason
        );
    }

    #[test]
    fn out_of_range_counts_go_to_the_bounds_first() {
        let hpa = with_behavior(2, 5, Rules::default_up(), Rules::default_down());
        let mut state = State::default();
        assert_eq!(hpa.decide(&mut state, 0, 7, &ok(7)).desired, 5);
        assert_eq!(hpa.decide(&mut state, 0, 1, &ok(1)).desired, 2);
        assert_eq!(
            hpa.decide(&mut state, 0, 3, &ok(9)).desired,
            5,
            "clamped to max"
        );
    }

    #[test]
    fn default_behavior_doubles_or_adds_four_per_period() {
        let hpa = with_behavior(1, 100, Rules::default_up(), Rules::default_down());
        let mut state = State::default();
        // From 1: max(1 + 4, 2 * 1) = 5.
        let out = hpa.decide(&mut state, 0, 1, &ok(50));
        assert_eq!(out.desired, 5);
        hpa.record_scale(&mut state, 0, 1, 5);
        // Within the same 15 s period the limit counts from the period's start (1): still 5.
        assert_eq!(hpa.decide(&mut state, 10_000, 5, &ok(50)).desired, 5);
        // Next period from 5: max(9, 10) = 10.
        let out = hpa.decide(&mut state, 15_000, 5, &ok(50));
        assert_eq!(out.desired, 10);
        assert!(out.reason.contains("rate-limited to 10"), "{}", out.reason);
    }

    #[test]
    fn scale_down_waits_for_the_stabilization_window() {
        let hpa = with_behavior(1, 10, Rules::default_up(), Rules::default_down());
        let mut state = State::default();
        // The first decision seeds the window with the current count (as HPA does after start).
        assert_eq!(hpa.decide(&mut state, 0, 6, &ok(2)).desired, 6);
        assert_eq!(hpa.decide(&mut state, 150_000, 6, &ok(2)).desired, 6);
        // 300 s later the seed has left the window; the highest left is 2.
        assert_eq!(hpa.decide(&mut state, 300_001, 6, &ok(2)).desired, 2);
    }

    #[test]
    fn scale_up_window_takes_the_lowest_recommendation() {
        let up = Rules {
            window_ms: 60_000,
            ..Rules::default_up()
        };
        let hpa = with_behavior(1, 10, up, Rules::default_down());
        let mut state = State::default();
        assert_eq!(hpa.decide(&mut state, 0, 2, &ok(2)).desired, 2);
        // A spike: the window still holds 2.
        assert_eq!(hpa.decide(&mut state, 15_000, 2, &ok(8)).desired, 2);
        assert_eq!(hpa.decide(&mut state, 30_000, 2, &ok(8)).desired, 2);
        // Once every recommendation in the last minute says 8, scale, as fast as the default
        // rate limit allows: max(2 + 4, 2 x 2) = 6.
        assert_eq!(hpa.decide(&mut state, 61_000, 2, &ok(8)).desired, 6);
    }

    #[test]
    fn rate_policies_select_min_max_and_disabled() {
        // The docs' example: 4 pods or 10 % per minute, down.
        let down = |select| Rules {
            window_ms: 0,
            select,
            policies: vec![
                RatePolicy {
                    kind: ScalingPolicyType::Pods,
                    value: 4,
                    period_ms: 60_000,
                },
                RatePolicy {
                    kind: ScalingPolicyType::Percent,
                    value: 10,
                    period_ms: 60_000,
                },
            ],
        };
        let decide = |select| {
            let hpa = with_behavior(1, 100, Rules::default_up(), down(select));
            hpa.decide(&mut State::default(), 0, 80, &ok(10)).desired
        };
        // Max change: 80 - 8 = 72 vs 80 - 4 = 76 -> 72; min change: 76.
        assert_eq!(decide(SelectPolicy::Max), 72);
        assert_eq!(decide(SelectPolicy::Min), 76);
        assert_eq!(decide(SelectPolicy::Disabled), 80);
        // From 9: 4 pods (5) is a larger change than floor(9 x 0.9) = 8.
        let hpa = with_behavior(1, 100, Rules::default_up(), down(SelectPolicy::Max));
        assert_eq!(hpa.decide(&mut State::default(), 0, 9, &ok(1)).desired, 5);
    }

    #[test]
    fn legacy_normalization_keeps_the_max_of_five_minutes_and_caps_growth() {
        let hpa = Hpa {
            min: 1,
            max: 50,
            tolerance: TOL,
            normalization: Normalization::Legacy,
        };
        let mut state = State::default();
        assert_eq!(hpa.decide(&mut state, 0, 3, &ok(20)).desired, 6, "2 x 3");
        assert_eq!(
            hpa.decide(&mut state, 0, 1, &ok(20)).desired,
            4,
            "at least 4"
        );
        // The first decision after a start keeps the count it found for the window.
        let mut state = State::default();
        assert_eq!(hpa.decide(&mut state, 0, 5, &ok(2)).desired, 5);
        assert_eq!(hpa.decide(&mut state, 60_000, 5, &ok(2)).desired, 5);
        assert_eq!(hpa.decide(&mut state, 300_001, 5, &ok(2)).desired, 2);
    }
}
