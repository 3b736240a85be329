//! Scale policies: how many replicas (or model instances) a workload should have, decided over
//! PromQL on a timer, and carried out by an actuator.
//!
//! [`ScalePolicy::decide`] is the one implementation of every algorithm; `serve` runs it from
//! [`ScaleManager`] over the live store and `scale simulate` runs it over a simulated one.
//! `hpa` is Kubernetes' arithmetic, `forecast` the predictive policy's history and forecasters,
//! `actuator` what acts on a decision.

mod actuator;
pub mod cost;
mod cost_manager;
mod forecast;
pub mod hpa;
mod manager;
pub mod simulate;

use std::path::{Path, PathBuf};

use promql_parser::parser::Expr;
use serde::Serialize;

use crate::config::{
    ActuatorConfig, Algorithm, BehaviorConfig, Combine, ForecastModel, PolicyFile,
    ScalePolicyConfig, ScalingRulesConfig, SelectPolicy, TargetType,
};
use crate::rules::QueryFn;

pub use actuator::{Actuator, Models};
pub use cost::{CostPolicy, CostReport};
pub use cost_manager::{CostManager, CostStatus};
pub use forecast::History;
pub use manager::{PolicyContext, PolicyStatus, ScaleManager};

use hpa::{Hpa, Normalization, Proposal, RatePolicy, Rules, Target, Tolerance};

/// A loaded, validated scale policy. Its mutable side is [`PolicyState`].
#[derive(Debug, Clone)]
pub struct ScalePolicy {
    /// Unique name.
    pub name: String,
    /// The file it came from.
    pub file: PathBuf,
    /// How often it decides, ms.
    pub interval_ms: i64,
    /// Fewest replicas.
    pub min: u32,
    /// Most replicas.
    pub max: u32,
    /// How it decides.
    pub algorithm: Algorithm,
    metrics: Vec<Metric>,
    hpa: Hpa,
    step: Option<Step>,
    predictive: Option<Predictive>,
    replicas_query: Option<Query>,
    /// What carries decisions out, as configured.
    pub actuator: ActuatorConfig,
    /// What one replica costs per hour.
    pub price_per_replica_hour: Option<f64>,
}

/// Everything one or more policy files define.
#[derive(Debug, Clone, Default)]
pub struct Policies {
    /// `scale_policies:`.
    pub scale: Vec<ScalePolicy>,
    /// `cost_policies:`.
    pub cost: Vec<CostPolicy>,
}

#[derive(Debug, Clone)]
struct Query {
    text: String,
    expr: Expr,
}

#[derive(Debug, Clone)]
struct Metric {
    query: Query,
    target: Target,
}

#[derive(Debug, Clone)]
struct Step {
    query: Query,
    up_threshold: f64,
    down_threshold: f64,
    up_by: u32,
    down_by: u32,
}

#[derive(Debug, Clone)]
struct Predictive {
    model: ForecastModel,
    params: forecast::Params,
    history_ms: i64,
    resolution_ms: i64,
    lead_ms: i64,
    combine: Combine,
}

/// What a policy remembers between decisions; carried over a reload when the policy keeps its
/// name.
#[derive(Debug, Clone, Default)]
pub struct PolicyState {
    hpa: hpa::State,
    history: Option<History>,
    /// The count the actuator last carried out (or, recommending only, the last decision).
    applied: Option<u32>,
    /// The last decision.
    pub last: Option<Decision>,
}

/// How many replicas there are now: `current` exist, `ready` of them serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Replicas {
    /// Replicas that exist or are starting.
    pub current: u32,
    /// Replicas serving.
    pub ready: u32,
}

/// One decision, as the API, the status page, the logs and the metrics show it.
#[derive(Debug, Clone, Serialize)]
pub struct Decision {
    /// When, ms.
    pub time_ms: i64,
    /// Replicas before.
    pub current_replicas: u32,
    /// Replicas serving before.
    pub ready_replicas: u32,
    /// Replicas wanted.
    pub desired_replicas: u32,
    /// Why.
    pub reason: String,
    /// Each metric's value against its target.
    pub metrics: Vec<Reading>,
    /// The forecast of the first metric, when the policy is predictive and has enough history.
    pub forecast: Option<f64>,
}

/// One metric at one decision.
#[derive(Debug, Clone, Serialize)]
pub struct Reading {
    /// The PromQL.
    pub query: String,
    /// Its value; absent when the query failed or returned nothing.
    pub value: Option<f64>,
    /// `average_value`, `value`, `utilization` or `threshold` (step).
    pub target_type: &'static str,
    /// The target (for step: the scale-up threshold).
    pub target: f64,
    /// Why there is no value.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Decision {
    /// `up`, `down` or `none`.
    pub fn direction(&self) -> &'static str {
        match self.desired_replicas.cmp(&self.current_replicas) {
            std::cmp::Ordering::Greater => "up",
            std::cmp::Ordering::Less => "down",
            std::cmp::Ordering::Equal => "none",
        }
    }
}

fn target_type(target: Target) -> &'static str {
    match target {
        Target::AverageValue(_) => "average_value",
        Target::Value(_) => "value",
        Target::Utilization(_) => "utilization",
    }
}

/// Runs `query` at `now` and sums the vector; an empty result is an error, as a missing metric
/// is to HPA.
fn value_of(query: &dyn QueryFn, q: &Query, now: i64) -> Result<f64, String> {
    let samples = query.query(&q.expr, &q.text, now).map_err(|e| e.0)?;
    if samples.is_empty() {
        return Err("the query returned no samples".into());
    }
    let sum: f64 = samples.iter().map(|s| s.v).sum();
    if sum.is_nan() {
        return Err("the query returned NaN".into());
    }
    Ok(sum)
}

impl ScalePolicy {
    /// `hpa`, `step` or `predictive`.
    pub fn algorithm_name(&self) -> &'static str {
        match self.algorithm {
            Algorithm::Hpa => "hpa",
            Algorithm::Step => "step",
            Algorithm::Predictive => "predictive",
        }
    }

    /// The replica count to start from: read through `replicas_query` when the policy has one,
    /// else `fallback` (the count the actuator itself knows, such as model instances), else what
    /// the actuator last carried out (at first `min_replicas`).
    pub fn replicas(
        &self,
        state: &PolicyState,
        query: &dyn QueryFn,
        now: i64,
        fallback: Option<Replicas>,
    ) -> Result<Replicas, String> {
        if let Some(q) = &self.replicas_query {
            let n = value_of(query, q, now).map_err(|e| format!("replicas_query: {e}"))?;
            let n = n.round().clamp(0.0, f64::from(u32::MAX)) as u32;
            return Ok(Replicas {
                current: n,
                ready: n,
            });
        }
        Ok(fallback.unwrap_or_else(|| {
            let n = state.applied.unwrap_or(self.min);
            Replicas {
                current: n,
                ready: n,
            }
        }))
    }

    /// One decision at `now` (ms) with `replicas` as they are. Records what HPA records; call
    /// [`ScalePolicy::carried_out`] once the actuator made the change.
    pub fn decide(
        &self,
        state: &mut PolicyState,
        now: i64,
        query: &dyn QueryFn,
        replicas: Replicas,
    ) -> Decision {
        let current = replicas.current;
        let mut readings = Vec::new();
        let mut forecast = None;
        let outcome = match self.algorithm {
            Algorithm::Step => {
                let step = self
                    .step
                    .as_ref()
                    .expect("validated: step policies have step");
                let value = value_of(query, &step.query, now);
                readings.push(Reading {
                    query: step.query.text.clone(),
                    value: value.as_ref().ok().copied(),
                    target_type: "threshold",
                    target: step.up_threshold,
                    error: value.as_ref().err().cloned(),
                });
                step_outcome(step, self.min, self.max, current, value)
            }
            Algorithm::Hpa | Algorithm::Predictive => {
                let mut proposals: Vec<(String, Proposal)> = Vec::new();
                for (i, metric) in self.metrics.iter().enumerate() {
                    let value = value_of(query, &metric.query, now);
                    readings.push(Reading {
                        query: metric.query.text.clone(),
                        value: value.as_ref().ok().copied(),
                        target_type: target_type(metric.target),
                        target: metric.target.value(),
                        error: value.as_ref().err().cloned(),
                    });
                    let proposal = value.map(|v| {
                        hpa::proposal(
                            metric.target,
                            v,
                            current,
                            replicas.ready,
                            self.hpa.tolerance,
                        )
                    });
                    proposals.push((format!("metric {i}"), proposal));
                }
                if let Some(p) = &self.predictive {
                    let history = state
                        .history
                        .get_or_insert_with(|| History::new(p.resolution_ms, p.history_ms));
                    let forecast_now = match readings[0].value {
                        Some(v) => {
                            history.observe(now, v);
                            history.forecast(p.model, &p.params, now, p.lead_ms)
                        }
                        None => Err("the first metric's query failed".into()),
                    };
                    match forecast_now {
                        Ok(f) => {
                            forecast = Some(f);
                            // The fewest replicas that keep the forecast load inside HPA's
                            // band: the scale-up the reactive proposal would make later, made
                            // ahead of time, without pushing the count to the band's low end
                            // (which would cost replicas all day).
                            let edge = self.metrics[0].target.scaled(1.0 + self.hpa.tolerance.up);
                            let exact = Tolerance { up: 0.0, down: 0.0 };
                            let proposal = hpa::proposal(edge, f, current, replicas.ready, exact);
                            // Invalid metrics stay: they still forbid scaling down.
                            if p.combine == Combine::Forecast {
                                proposals.retain(|(_, p)| p.is_err());
                            }
                            proposals.push(("forecast of metric 0".into(), Ok(proposal)));
                        }
                        // Until there is enough history the reactive proposals decide alone.
                        Err(why) => tracing::debug!(policy = %self.name, why, "no forecast yet"),
                    }
                }
                self.hpa.decide(&mut state.hpa, now, current, &proposals)
            }
        };
        let decision = Decision {
            time_ms: now,
            current_replicas: current,
            ready_replicas: replicas.ready,
            desired_replicas: outcome.desired,
            reason: outcome.reason,
            metrics: readings,
            forecast,
        };
        state.last = Some(decision.clone());
        decision
    }

    /// Records that the actuator changed the count `from` → `to` at `now`.
    pub fn carried_out(&self, state: &mut PolicyState, now: i64, from: u32, to: u32) {
        state.applied = Some(to);
        if from != to {
            self.hpa.record_scale(&mut state.hpa, now, from, to);
        }
    }

    /// The history file under `state.dir`, for predictive policies.
    fn history_file(&self, dir: &Path) -> Option<PathBuf> {
        self.predictive
            .as_ref()
            .map(|_| crate::state::file_for(dir, "scale-history", &self.name))
    }

    /// True when `history` has this policy's resolution and span.
    pub fn history_fits(&self, history: &History) -> bool {
        self.predictive
            .as_ref()
            .is_some_and(|p| history.same_shape(&History::new(p.resolution_ms, p.history_ms)))
    }

    /// Loads a saved history, when it has this policy's resolution and span.
    pub fn restore_history(&self, state: &mut PolicyState, dir: &Path) {
        let Some(path) = self.history_file(dir) else {
            return;
        };
        if let Some(saved) = crate::state::load::<History>(&path, "scale history")
            && self.history_fits(&saved)
        {
            state.history = Some(saved);
        }
    }

    /// Saves the history (predictive policies only).
    pub fn save_history(&self, state: &PolicyState, dir: &Path) -> std::io::Result<()> {
        match (self.history_file(dir), &state.history) {
            (Some(path), Some(history)) => crate::state::save(&path, history),
            _ => Ok(()),
        }
    }
}

/// The tutorial's AutoScaler: `+up_by` above the upper threshold, `-down_by` below the lower,
/// within the bounds; no change when the query fails.
fn step_outcome(
    step: &Step,
    min: u32,
    max: u32,
    current: u32,
    value: Result<f64, String>,
) -> hpa::Outcome {
    let (desired, reason) = match value {
        Err(e) => (current, format!("no change: the query failed: {e}")),
        Ok(v) if v > step.up_threshold => (
            current.saturating_add(step.up_by).min(max),
            format!("{v} above scale_up_threshold {}", step.up_threshold),
        ),
        Ok(v) if v < step.down_threshold => (
            current.saturating_sub(step.down_by).max(min),
            format!("{v} below scale_down_threshold {}", step.down_threshold),
        ),
        Ok(v) => (current, format!("{v} between the thresholds")),
    };
    hpa::Outcome { desired, reason }
}

/// `file:line:col: scale policy "name": message` (or `cost policy`).
fn located(
    file: &Path,
    at: (u64, u64),
    kind: &str,
    policy: &str,
    message: impl std::fmt::Display,
) -> String {
    format!(
        "{}:{}:{}: {kind} {policy:?}: {message}",
        file.display(),
        at.0,
        at.1
    )
}

/// Parses and validates one policy file; every problem is reported.
pub fn load_file(path: &Path) -> Result<Policies, Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| vec![format!("{}: cannot read: {e}", path.display())])?;
    parse_file(&text, path)
}

/// [`load_file`] on text already read from `path`.
pub(crate) fn parse_file(text: &str, path: &Path) -> Result<Policies, Vec<String>> {
    let origin = path.display().to_string();
    let file: PolicyFile = serde_saphyr::from_str(text).map_err(|e| {
        let message = crate::config::yaml_error(&origin, &e);
        // Name the policy the error is in, as rule errors name their group.
        let named = e
            .location()
            .and_then(|at| policy_around(text, at.line() as usize))
            .map(|(kind, name)| {
                let (place, rest) = message.split_once(": ").unwrap_or((&message, ""));
                format!("{place}: {kind} {name:?}: {rest}")
            });
        vec![named.unwrap_or(message)]
    })?;
    let mut policies = Policies::default();
    let mut errors = Vec::new();
    for entry in &file.scale_policies {
        let at = (entry.referenced.line(), entry.referenced.column());
        match build(&entry.value, path) {
            Ok(p) => policies.scale.push(p),
            Err((place, e)) => errors.push(located(
                path,
                place.unwrap_or(at),
                "scale policy",
                &entry.value.name,
                e,
            )),
        }
    }
    for entry in &file.cost_policies {
        let at = (entry.referenced.line(), entry.referenced.column());
        match cost::build(&entry.value, path) {
            Ok(p) => policies.cost.push(p),
            Err((place, e)) => errors.push(located(
                path,
                place.unwrap_or(at),
                "cost policy",
                &entry.value.name,
                e,
            )),
        }
    }
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

/// The kind and `name:` of the policy whose entry holds `line` (1-based), read off the text.
fn policy_around(text: &str, line: usize) -> Option<(&'static str, String)> {
    let mut kind = "scale policy";
    text.lines().take(line).fold(None, |found, l| {
        if l.starts_with("cost_policies:") {
            kind = "cost policy";
        } else if l.starts_with("scale_policies:") {
            kind = "scale policy";
        }
        let l = l.trim_start().trim_start_matches("- ").trim_start();
        match l.strip_prefix("name:") {
            Some(name) => Some((kind, name.trim().trim_matches(['"', '\'']).to_string())),
            None => found,
        }
    })
}

type BuildError = (Option<(u64, u64)>, String);

fn spanned_query(q: &serde_saphyr::Spanned<String>, field: &str) -> Result<Query, BuildError> {
    parse_query(
        &q.value,
        Some((q.referenced.line(), q.referenced.column())),
        field,
    )
}

fn parse_query(text: &str, at: Option<(u64, u64)>, field: &str) -> Result<Query, BuildError> {
    let expr = crate::promql::parse(text).map_err(|e| (at, format!("{field}: {}", e.0)))?;
    Ok(Query {
        text: text.to_string(),
        expr,
    })
}

fn rules(
    given: Option<&ScalingRulesConfig>,
    default: Rules,
    direction: &str,
) -> Result<Rules, BuildError> {
    let Some(given) = given else {
        return Ok(default);
    };
    let err = |m: String| (None, format!("behavior.{direction}: {m}"));
    let window_ms = given
        .stabilization_window
        .map_or(default.window_ms, |d| d.millis());
    if window_ms > 3_600_000 {
        return Err(err("stabilization_window: at most 1h, as in HPA".into()));
    }
    let policies = match &given.policies {
        None => default.policies,
        Some(list) if list.is_empty() => {
            return Err(err(
                "policies: give at least one, or leave the key out".into()
            ));
        }
        Some(list) => list
            .iter()
            .map(|p| {
                let period_ms = p.period.millis();
                if p.value == 0 || period_ms <= 0 || period_ms > 1_800_000 {
                    return Err(err(
                        "policies: value must be > 0 and period between 1s and 30m, as in HPA"
                            .into(),
                    ));
                }
                Ok(RatePolicy {
                    kind: p.kind,
                    value: p.value,
                    period_ms,
                })
            })
            .collect::<Result<_, _>>()?,
    };
    Ok(Rules {
        window_ms,
        select: given.select_policy.unwrap_or(SelectPolicy::Max),
        policies,
    })
}

fn normalization(behavior: Option<&BehaviorConfig>) -> Result<Normalization, BuildError> {
    let Some(b) = behavior else {
        return Ok(Normalization::Legacy);
    };
    Ok(Normalization::Behavior {
        up: rules(b.scale_up.as_ref(), Rules::default_up(), "scale_up")?,
        down: rules(b.scale_down.as_ref(), Rules::default_down(), "scale_down")?,
    })
}

fn build(c: &ScalePolicyConfig, file: &Path) -> Result<ScalePolicy, BuildError> {
    let plain = |m: &str| (None, m.to_string());
    if c.name.is_empty() {
        return Err(plain("name: must be set"));
    }
    if c.interval.millis() <= 0 {
        return Err(plain("interval: must be longer than 0s"));
    }
    if c.max_replicas == 0 || c.min_replicas > c.max_replicas {
        return Err(plain(
            "min_replicas and max_replicas: need 1 <= max_replicas and min_replicas <= max_replicas",
        ));
    }
    let directions = c.behavior.iter().flat_map(|b| {
        [
            ("behavior.scale_up.tolerance", b.scale_up.as_ref()),
            ("behavior.scale_down.tolerance", b.scale_down.as_ref()),
        ]
    });
    let tolerances = std::iter::once(("tolerance", Some(c.tolerance)))
        .chain(directions.map(|(name, rules)| (name, rules.and_then(|r| r.tolerance))));
    for (name, tolerance) in tolerances {
        if let Some(t) = tolerance
            && !(0.0..1.0).contains(&t)
        {
            return Err((None, format!("{name}: must be in [0, 1)")));
        }
    }
    let needs_metrics = c.algorithm != Algorithm::Step;
    if needs_metrics && c.metrics.is_empty() {
        return Err(plain(
            "metrics: hpa and predictive policies need at least one",
        ));
    }
    if !needs_metrics && !c.metrics.is_empty() {
        return Err(plain("metrics: step policies use step.query, not metrics"));
    }
    if c.step.is_some() != (c.algorithm == Algorithm::Step) {
        return Err(plain("step: give it exactly when algorithm is step"));
    }
    if c.predictive.is_some() != (c.algorithm == Algorithm::Predictive) {
        return Err(plain(
            "predictive: give it exactly when algorithm is predictive",
        ));
    }
    if c.algorithm == Algorithm::Step && c.behavior.is_some() {
        return Err(plain(
            "behavior: step policies scale by fixed steps; leave it out",
        ));
    }
    let metrics = c
        .metrics
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let query = spanned_query(&m.query, &format!("metrics[{i}].query"))?;
            let v = m.target.value;
            if !(v > 0.0 && v.is_finite()) {
                return Err((None, format!("metrics[{i}].target.value: must be > 0")));
            }
            let target = match m.target.kind {
                TargetType::AverageValue => Target::AverageValue(v),
                TargetType::Value => Target::Value(v),
                TargetType::Utilization => Target::Utilization(v),
            };
            Ok(Metric { query, target })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let step = c
        .step
        .as_ref()
        .map(|s| {
            let finite = s.scale_down_threshold.is_finite() && s.scale_up_threshold.is_finite();
            if !finite || s.scale_down_threshold >= s.scale_up_threshold {
                return Err(plain(
                    "step: scale_down_threshold must be a number below scale_up_threshold",
                ));
            }
            if s.up_by == 0 || s.down_by == 0 {
                return Err(plain("step: up_by and down_by must be at least 1"));
            }
            Ok(Step {
                query: spanned_query(&s.query, "step.query")?,
                up_threshold: s.scale_up_threshold,
                down_threshold: s.scale_down_threshold,
                up_by: s.up_by,
                down_by: s.down_by,
            })
        })
        .transpose()?;
    let predictive = c
        .predictive
        .as_ref()
        .map(|p| {
            let (resolution, season, history) =
                (p.resolution.millis(), p.season.millis(), p.history.millis());
            if resolution <= 0 || season < resolution || history < season {
                return Err(plain(
                    "predictive: need 0 < resolution <= season <= history",
                ));
            }
            if season % resolution != 0 {
                return Err(plain(
                    "predictive.season: must be a whole number of resolution steps",
                ));
            }
            if p.model == ForecastModel::HoltWinters && history < 2 * season {
                return Err(plain(
                    "predictive.history: holt_winters needs at least two seasons",
                ));
            }
            for (name, v) in [("alpha", p.alpha), ("beta", p.beta), ("gamma", p.gamma)] {
                if !(0.0..=1.0).contains(&v) {
                    return Err((None, format!("predictive.{name}: must be in [0, 1]")));
                }
            }
            Ok(Predictive {
                model: p.model,
                params: forecast::Params {
                    season_ms: season,
                    alpha: p.alpha,
                    beta: p.beta,
                    gamma: p.gamma,
                },
                history_ms: history,
                resolution_ms: resolution,
                lead_ms: p.lead_time.millis(),
                combine: p.combine,
            })
        })
        .transpose()?;
    let replicas_query = c
        .replicas_query
        .as_ref()
        .map(|q| parse_query(q, None, "replicas_query"))
        .transpose()?;
    actuator::validate(&c.actuator).map_err(|e| (None, format!("actuator: {e}")))?;
    if let Some(price) = c.price_per_replica_hour
        && !(price.is_finite() && price >= 0.0)
    {
        return Err(plain("price_per_replica_hour: must be a number >= 0"));
    }
    let tolerance =
        |rules: Option<&ScalingRulesConfig>| rules.and_then(|r| r.tolerance).unwrap_or(c.tolerance);
    let behavior = c.behavior.as_ref();
    Ok(ScalePolicy {
        name: c.name.clone(),
        file: file.to_path_buf(),
        interval_ms: c.interval.millis(),
        min: c.min_replicas,
        max: c.max_replicas,
        algorithm: c.algorithm,
        hpa: Hpa {
            min: c.min_replicas,
            max: c.max_replicas,
            tolerance: Tolerance {
                up: tolerance(behavior.and_then(|b| b.scale_up.as_ref())),
                down: tolerance(behavior.and_then(|b| b.scale_down.as_ref())),
            },
            normalization: normalization(behavior)?,
        },
        metrics,
        step,
        predictive,
        replicas_query,
        actuator: c.actuator.clone(),
        price_per_replica_hour: c.price_per_replica_hour,
    })
}

/// Loads every policy file the patterns (globs allowed) name; names must be unique across
/// them. All errors are collected.
pub fn load_all(patterns: &[String]) -> Result<Policies, String> {
    let files = crate::rules::expand_globs(patterns)?;
    load_paths(&files).map_err(|errors| errors.join("\n"))
}

fn load_paths(files: &[PathBuf]) -> Result<Policies, Vec<String>> {
    let mut policies = Policies::default();
    let mut errors = Vec::new();
    for file in files {
        match load_file(file) {
            Ok(loaded) => policies.extend(loaded),
            Err(e) => errors.extend(e),
        }
    }
    errors.extend(conflicts(&policies));
    if errors.is_empty() {
        Ok(policies)
    } else {
        Err(errors)
    }
}

impl Policies {
    fn extend(&mut self, other: Policies) {
        self.scale.extend(other.scale);
        self.cost.extend(other.cost);
    }
}

/// A name used twice within one kind of policy.
fn duplicate_names<'a>(
    kind: &str,
    named: impl Iterator<Item = (&'a str, &'a Path)>,
) -> Vec<String> {
    let mut seen: Vec<(&str, &Path)> = Vec::new();
    let mut errors = Vec::new();
    for (name, file) in named {
        if let Some((_, other)) = seen.iter().find(|(n, _)| *n == name) {
            errors.push(format!(
                "{}: {kind} {name:?}: the name is already used in {}",
                file.display(),
                other.display()
            ));
        }
        seen.push((name, file));
    }
    errors
}

/// What only shows across files: a name used twice, two policies scaling one model.
fn conflicts(policies: &Policies) -> Vec<String> {
    let mut errors = duplicate_names(
        "scale policy",
        policies
            .scale
            .iter()
            .map(|p| (p.name.as_str(), p.file.as_path())),
    );
    errors.extend(duplicate_names(
        "cost policy",
        policies
            .cost
            .iter()
            .map(|p| (p.name.as_str(), p.file.as_path())),
    ));
    let mut acted_on = std::collections::HashMap::new();
    for p in &policies.scale {
        if let Some(model) = &p.actuator.model
            && let Some(other) = acted_on.insert(model.as_str(), p.name.as_str())
        {
            errors.push(format!(
                "scale policies {other:?} and {:?} both scale model {model:?}; one policy per model",
                p.name
            ));
        }
    }
    errors
}

/// `torchwatch policies check`: prints a line per file, errors on stderr; false on any error.
pub fn check_files(paths: &[PathBuf]) -> bool {
    let mut ok = true;
    let mut all = Policies::default();
    for path in paths {
        println!("Checking {}", path.display());
        match load_file(path) {
            Ok(policies) => {
                println!(
                    "  SUCCESS: {} scale policies, {} cost policies found",
                    policies.scale.len(),
                    policies.cost.len()
                );
                all.extend(policies);
            }
            Err(errors) => {
                ok = false;
                eprintln!("  FAILED:");
                for e in errors {
                    eprintln!("{e}");
                }
            }
        }
    }
    // Names must also be unique across the files checked together.
    for e in conflicts(&all) {
        ok = false;
        eprintln!("{e}");
    }
    ok
}

#[cfg(test)]
mod tests;
