//! Schema of policy files (`policies.files`): `scale_policies:` and `cost_policies:` as written.
//! Kept apart from Prometheus rule files so those stay promtool-clean. Scale field names follow
//! the HPA v2 API in snake_case, cost prices OpenCost's; `policy` validates what types cannot say.

use super::duration::PromDuration;
use serde::Deserialize;
use serde_saphyr::Spanned;

/// One policy file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    /// Autoscaling policies.
    #[serde(default)]
    pub scale_policies: Vec<Spanned<ScalePolicyConfig>>,
    /// What serving costs, and right-sizing advice.
    #[serde(default)]
    pub cost_policies: Vec<Spanned<CostPolicyConfig>>,
}

/// One scale policy.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalePolicyConfig {
    /// Unique among all policy files.
    pub name: String,
    /// How often it decides (HPA's sync period, 15 s).
    #[serde(default = "default_interval")]
    pub interval: PromDuration,
    /// Fewest replicas.
    #[serde(default = "one")]
    pub min_replicas: u32,
    /// Most replicas.
    pub max_replicas: u32,
    /// How the desired count is computed.
    #[serde(default)]
    pub algorithm: Algorithm,
    /// For `hpa` and `predictive`: PromQL values with their targets.
    #[serde(default)]
    pub metrics: Vec<MetricConfig>,
    /// HPA's tolerance around a ratio of 1 (both directions unless `behavior` sets one).
    #[serde(default = "default_tolerance")]
    pub tolerance: f64,
    /// HPA v2 `behavior`; when absent HPA's legacy normalisation applies, as in Kubernetes.
    pub behavior: Option<BehaviorConfig>,
    /// For `step`: the tutorial's threshold scaler.
    pub step: Option<StepConfig>,
    /// For `predictive`: the forecaster.
    pub predictive: Option<PredictiveConfig>,
    /// PromQL giving the current replica count; the actuator's own count when absent.
    pub replicas_query: Option<String>,
    /// What carries the decision out; absent or empty = recommend only.
    #[serde(default)]
    pub actuator: ActuatorConfig,
    /// What one replica costs per hour; the policy then reports its hourly cost.
    pub price_per_replica_hour: Option<f64>,
}

fn default_interval() -> PromDuration {
    PromDuration(15_000)
}

fn one() -> u32 {
    1
}

fn default_tolerance() -> f64 {
    0.1
}

/// `algorithm:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Algorithm {
    /// Kubernetes' HorizontalPodAutoscaler, exactly.
    #[default]
    Hpa,
    /// The tutorial's AutoScaler: fixed steps above and below two thresholds.
    Step,
    /// A forecast of the first metric, combined with the reactive HPA proposal.
    Predictive,
}

/// One entry of `metrics:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricConfig {
    /// PromQL; a vector result is summed.
    pub query: Spanned<String>,
    /// What the value is compared with.
    pub target: TargetConfig,
}

/// `target:` of a metric.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// How the value relates to replicas.
    #[serde(rename = "type")]
    pub kind: TargetType,
    /// The target.
    pub value: f64,
}

/// HPA's metric target types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TargetType {
    /// The value per replica (HPA `AverageValue`; the query returns the total).
    AverageValue,
    /// The value as a whole (HPA `Value`).
    Value,
    /// A ratio of what replicas request, e.g. 0.7 (HPA `Utilization`, in whole percent).
    Utilization,
}

/// HPA v2 `behavior`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BehaviorConfig {
    /// Scaling up; HPA's defaults for anything left out.
    pub scale_up: Option<ScalingRulesConfig>,
    /// Scaling down; HPA's defaults for anything left out.
    pub scale_down: Option<ScalingRulesConfig>,
}

/// HPA's `HPAScalingRules`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingRulesConfig {
    /// Recommendations over this window are considered (up: min, down: max).
    pub stabilization_window: Option<PromDuration>,
    /// Which policy wins.
    pub select_policy: Option<SelectPolicy>,
    /// Rate limits.
    pub policies: Option<Vec<ScalingPolicyConfig>>,
    /// This direction's tolerance (Kubernetes 1.33's configurable tolerance).
    pub tolerance: Option<f64>,
}

/// `select_policy:`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// One rate-limit policy.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScalingPolicyConfig {
    /// `pods` or `percent`.
    #[serde(rename = "type")]
    pub kind: ScalingPolicyType,
    /// Replicas, or percent of the replicas at the period's start.
    pub value: u32,
    /// The window the change is counted over.
    pub period: PromDuration,
}

/// HPA's scaling policy types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalingPolicyType {
    /// A number of replicas.
    Pods,
    /// A percentage of the replicas.
    Percent,
}

/// `step:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepConfig {
    /// PromQL; a vector result is summed.
    pub query: Spanned<String>,
    /// Above this, add `up_by`.
    pub scale_up_threshold: f64,
    /// Below this, remove `down_by`.
    pub scale_down_threshold: f64,
    /// Replicas added per decision.
    #[serde(default = "two")]
    pub up_by: u32,
    /// Replicas removed per decision.
    #[serde(default = "one")]
    pub down_by: u32,
}

fn two() -> u32 {
    2
}

/// `predictive:`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PredictiveConfig {
    /// The forecaster.
    #[serde(default)]
    pub model: ForecastModel,
    /// Length of the load's cycle.
    #[serde(default = "one_day")]
    pub season: PromDuration,
    /// How much downsampled history is kept for the forecaster.
    #[serde(default = "two_weeks")]
    pub history: PromDuration,
    /// Spacing of the downsampled history (each point is the mean over it).
    #[serde(default = "five_minutes")]
    pub resolution: PromDuration,
    /// Provision for the load expected this far ahead (replica start-up time).
    #[serde(default = "two_minutes")]
    pub lead_time: PromDuration,
    /// How the forecast's proposal meets the reactive one.
    #[serde(default)]
    pub combine: Combine,
    /// Holt-Winters smoothing of the level. The defaults (0.95, 0.01, 0.1) forecast 10 minutes
    /// ahead best on the README's trace: close to the last value plus the season's change.
    #[serde(default = "alpha")]
    pub alpha: f64,
    /// Holt-Winters smoothing of the trend.
    #[serde(default = "beta")]
    pub beta: f64,
    /// Holt-Winters smoothing of the season.
    #[serde(default = "gamma")]
    pub gamma: f64,
}

fn one_day() -> PromDuration {
    PromDuration(86_400_000)
}
fn two_weeks() -> PromDuration {
    PromDuration(14 * 86_400_000)
}
fn five_minutes() -> PromDuration {
    PromDuration(300_000)
}
fn two_minutes() -> PromDuration {
    PromDuration(120_000)
}
fn alpha() -> f64 {
    0.95
}
fn beta() -> f64 {
    0.01
}
fn gamma() -> f64 {
    0.1
}

/// `predictive.model:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ForecastModel {
    /// Additive triple exponential smoothing over the season.
    #[default]
    HoltWinters,
    /// A least-squares line through the last hour of history, extrapolated.
    Linear,
    /// The value one season before the forecast time.
    SeasonalNaive,
    /// The mean of the last 10 samples (the tutorial's PredictiveAutoScaler).
    Mean,
}

/// `predictive.combine:`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Combine {
    /// The larger of the forecast's and the reactive HPA proposal.
    #[default]
    Max,
    /// The forecast's proposal alone.
    Forecast,
}

/// `actuator:`; at most one of the three.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ActuatorConfig {
    /// Scale this served model's instances in-process.
    pub model: Option<String>,
    /// POST `{policy, from, to, reason, time}` to a URL.
    pub webhook: Option<WebhookActuatorConfig>,
    /// Run a command; `{{ .Replicas }}`, `{{ .From }}` and `{{ .Policy }}` are substituted in
    /// each argument.
    pub command: Option<Vec<String>>,
    /// Tries per decision before it counts as failed (the next decision tries again).
    #[serde(default = "three")]
    pub attempts: u32,
    /// Longest a webhook call or command may take.
    #[serde(default = "ten_seconds")]
    pub timeout: PromDuration,
}

impl Default for ActuatorConfig {
    fn default() -> Self {
        ActuatorConfig {
            model: None,
            webhook: None,
            command: None,
            attempts: three(),
            timeout: ten_seconds(),
        }
    }
}

fn three() -> u32 {
    3
}

fn ten_seconds() -> PromDuration {
    PromDuration(10_000)
}

/// `actuator.webhook:`; the URL is a secret (it often carries a token).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookActuatorConfig {
    /// The URL (avoid: it sits in the file).
    pub url: Option<super::Secret>,
    /// File whose first line is the URL.
    pub url_file: Option<std::path::PathBuf>,
}

/// One cost policy: OpenCost's arithmetic over what is paid for and what is used.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CostPolicyConfig {
    /// Unique among all cost policies.
    pub name: String,
    /// How often it is evaluated.
    #[serde(default = "one_minute")]
    pub interval: PromDuration,
    /// Prices per hour; OpenCost's defaults for any left out.
    #[serde(default)]
    pub prices: PricesConfig,
    /// What is paid for.
    pub allocated: ResourcesConfig,
    /// What is used.
    pub used: ResourcesConfig,
    /// PromQL: inferences (samples) per second, for the cost per 1,000 inferences.
    pub inferences: Option<Spanned<Amount>>,
    /// Right-sizing advice over a window of the used resources.
    #[serde(default)]
    pub right_sizing: RightSizingConfig,
}

fn one_minute() -> PromDuration {
    PromDuration(60_000)
}

/// `prices:` (OpenCost `configs/default.json`).
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PricesConfig {
    /// Per CPU core and hour.
    pub cpu_core_hour: f64,
    /// Per GiB of memory and hour.
    pub memory_gib_hour: f64,
    /// Per GPU and hour.
    pub gpu_hour: f64,
}

impl Default for PricesConfig {
    fn default() -> Self {
        PricesConfig {
            cpu_core_hour: 0.031611,
            memory_gib_hour: 0.004237,
            gpu_hour: 0.95,
        }
    }
}

/// `allocated:` or `used:`; GPUs count as none when left out.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesConfig {
    /// CPU cores.
    pub cpu_cores: Spanned<Amount>,
    /// Memory in bytes.
    pub memory_bytes: Spanned<Amount>,
    /// GPUs.
    pub gpus: Option<Spanned<Amount>>,
}

/// A fixed number or PromQL (a vector result is summed).
#[derive(Debug, Clone, PartialEq)]
pub enum Amount {
    /// As written.
    Number(f64),
    /// Evaluated each interval.
    Query(String),
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Amount, D::Error> {
        d.deserialize_any(NumberOr {
            expected: "a number or a PromQL expression",
            word: Amount::Query,
            number: Amount::Number,
        })
    }
}

/// Visits a YAML scalar that is either a number or a string.
struct NumberOr<T> {
    expected: &'static str,
    word: fn(String) -> T,
    number: fn(f64) -> T,
}

impl<T> serde::de::Visitor<'_> for NumberOr<T> {
    type Value = T;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.expected)
    }

    fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<T, E> {
        Ok((self.word)(v.to_string()))
    }

    fn visit_f64<E: serde::de::Error>(self, v: f64) -> Result<T, E> {
        Ok((self.number)(v))
    }

    fn visit_i64<E: serde::de::Error>(self, v: i64) -> Result<T, E> {
        Ok((self.number)(v as f64))
    }

    fn visit_u64<E: serde::de::Error>(self, v: u64) -> Result<T, E> {
        Ok((self.number)(v as f64))
    }
}

/// `right_sizing:` (defaults: KRR's simple strategy, the tutorial's thresholds).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RightSizingConfig {
    /// How far back the advice looks.
    pub window: PromDuration,
    /// Spacing of the kept history (CPU: mean per step, memory: peak per step).
    pub resolution: PromDuration,
    /// The CPU percentile recommended, in (0, 1].
    pub cpu_percentile: f64,
    /// `max`, or a percentile in (0, 1].
    pub memory: MemoryStatistic,
    /// Added on top of the statistic (0.15 = +15 %).
    pub margin: f64,
    /// Below this mean utilisation, advise less (the tutorial's 30 %).
    pub downscale_below: f64,
    /// Above this mean utilisation, advise more (the tutorial's 90 %).
    pub upscale_above: f64,
    /// Fewest history points before advising (KRR's 100).
    pub min_points: usize,
    /// Never recommend less CPU than this (VPA's 25 millicores).
    pub min_cpu_cores: f64,
    /// Never recommend less memory than this (VPA's 250 MiB).
    pub min_memory_bytes: f64,
}

impl Default for RightSizingConfig {
    fn default() -> Self {
        RightSizingConfig {
            window: PromDuration(14 * 86_400_000),
            resolution: PromDuration(300_000),
            cpu_percentile: 0.95,
            memory: MemoryStatistic::Max,
            margin: 0.15,
            downscale_below: 0.3,
            upscale_above: 0.9,
            min_points: 100,
            min_cpu_cores: 0.025,
            min_memory_bytes: 250.0 * 1024.0 * 1024.0,
        }
    }
}

/// `right_sizing.memory:`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum MemoryStatistic {
    /// The peak over the window (KRR).
    Max,
    /// A percentile in (0, 1] (VPA uses 0.9).
    Percentile(f64),
    /// A word other than `max`, refused when the policy is validated.
    Unknown,
}

impl<'de> Deserialize<'de> for MemoryStatistic {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<MemoryStatistic, D::Error> {
        d.deserialize_any(NumberOr {
            expected: "max or a percentile in (0, 1]",
            word: |w| match w.as_str() {
                "max" => MemoryStatistic::Max,
                _ => MemoryStatistic::Unknown,
            },
            number: MemoryStatistic::Percentile,
        })
    }
}
