//! Schemas of Prometheus rule files and of promtool's rule unit-test files.
//! Positions are kept (`Spanned`) so errors can name file:line:column.

use super::duration::PromDuration;
use serde::{Deserialize, Deserializer, Serialize};
use serde_saphyr::Spanned;
use std::collections::BTreeMap;

/// A rule file: `groups:` as in Prometheus.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleFile {
    /// Rule groups, evaluated independently.
    #[serde(default)]
    pub groups: Vec<RuleGroup>,
}

/// One rule group.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleGroup {
    /// Unique name within the file.
    pub name: Spanned<String>,
    /// Evaluation interval; the global one when absent.
    pub interval: Option<PromDuration>,
    /// At most this many series (recording) or alerts (alerting) per rule; 0 = no limit.
    #[serde(default)]
    pub limit: usize,
    /// Evaluate this far in the past, for data that arrives late.
    pub query_offset: Option<PromDuration>,
    /// Labels added to every rule's output; rule labels win.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The rules, in evaluation order.
    #[serde(default)]
    pub rules: Vec<Spanned<RuleEntry>>,
}

/// A rule as written. Which fields may appear depends on the kind, so they are
/// all optional here and `rules` validates the combination.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RuleEntry {
    /// Name of the series a recording rule writes.
    pub record: Option<Spanned<String>>,
    /// Name of the alert an alerting rule raises.
    pub alert: Option<Spanned<String>>,
    /// The PromQL expression.
    pub expr: Option<Spanned<ExprText>>,
    /// Short form, instead of `expr`: the metric (or expression) compared...
    pub metric: Option<Spanned<String>>,
    /// ...by this comparison (`greater_than`, `less_than`, `equals`, ...)...
    pub condition: Option<Spanned<String>>,
    /// ...with this number.
    pub threshold: Option<f64>,
    /// How long the condition must hold before the alert fires.
    #[serde(rename = "for")]
    pub for_: Option<PromDuration>,
    /// How long a firing alert keeps firing after the condition clears.
    pub keep_firing_for: Option<PromDuration>,
    /// Labels to add or overwrite.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Alert annotations (templates).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

/// An `expr:` value; YAML numbers (`expr: 1`) are expressions too.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprText(pub String);

impl<'de> Deserialize<'de> for ExprText {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        string_or_number(deserializer).map(ExprText)
    }
}

/// A YAML scalar used as text even when it looks like a number (`values: 1`,
/// `values: 0x10`, `expr: 1`): the scalar's own text, as Go's YAML gives a string field.
fn string_or_number<'de, D: Deserializer<'de>>(deserializer: D) -> Result<String, D::Error> {
    String::deserialize(deserializer)
}

/// A promtool unit-test file (`promtool test rules`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UnitTestFile {
    /// Rule files to load, relative to this file; globs allowed.
    #[serde(default)]
    pub rule_files: Vec<String>,
    /// How often rules are evaluated; 1m by default.
    pub evaluation_interval: Option<PromDuration>,
    /// Group names in the order they are evaluated.
    #[serde(default)]
    pub group_eval_order: Vec<String>,
    /// The test groups.
    #[serde(default)]
    pub tests: Vec<TestGroup>,
}

/// One test group: input series and expectations.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TestGroup {
    /// Spacing of input samples; the evaluation interval by default.
    pub interval: Option<PromDuration>,
    /// Input series in expanding notation.
    pub input_series: Vec<InputSeries>,
    /// Expected alerts at given times.
    pub alert_rule_test: Vec<AlertTest>,
    /// Expected query results at given times.
    pub promql_expr_test: Vec<ExprTest>,
    /// `$externalLabels` of templates.
    pub external_labels: BTreeMap<String, String>,
    /// `$externalURL` of templates.
    pub external_url: String,
    /// Shown with failures.
    pub name: String,
}

/// `series` + `values`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputSeries {
    /// A series selector with equality matchers only, e.g. `up{job="a"}`.
    pub series: String,
    /// Expanding notation: `1 2 _ stale 0+10x5 3x2 _x3`.
    #[serde(deserialize_with = "string_or_number")]
    pub values: String,
}

/// An `alert_rule_test` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AlertTest {
    /// When to look at the alerts.
    #[serde(default)]
    pub eval_time: PromDuration,
    /// Which alert.
    #[serde(default)]
    pub alertname: String,
    /// Firing alerts expected.
    #[serde(default)]
    pub exp_alerts: Vec<ExpectedAlert>,
}

/// One expected alert.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExpectedAlert {
    /// Labels besides `alertname`.
    pub exp_labels: BTreeMap<String, String>,
    /// Annotations, expanded.
    pub exp_annotations: BTreeMap<String, String>,
}

/// A `promql_expr_test` entry.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExprTest {
    /// The query.
    #[serde(deserialize_with = "string_or_number")]
    pub expr: String,
    /// When to run it.
    #[serde(default)]
    pub eval_time: PromDuration,
    /// Expected samples, in any order.
    #[serde(default)]
    pub exp_samples: Vec<ExpectedSample>,
}

/// One expected sample.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExpectedSample {
    /// Series notation: `name{a="b"}` or `{a="b"}`.
    #[serde(default)]
    pub labels: String,
    /// The value.
    pub value: f64,
}

/// A rule file as `rules export` writes it: plain Prometheus 2.x syntax (no
/// short form, group labels folded into each rule).
#[derive(Debug, Clone, Serialize)]
pub struct ExportedFile {
    /// The groups.
    pub groups: Vec<ExportedGroup>,
}

/// One exported group.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedGroup {
    /// Name.
    pub name: String,
    /// Interval, when the source set one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub interval: Option<String>,
    /// Limit, when not 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub limit: Option<usize>,
    /// Query offset (Prometheus 2.53 and later), when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub query_offset: Option<String>,
    /// The rules.
    pub rules: Vec<ExportedRule>,
}

/// One exported rule.
#[derive(Debug, Clone, Serialize)]
pub struct ExportedRule {
    /// Recording rule name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// Alert name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub alert: Option<String>,
    /// PromQL.
    pub expr: String,
    /// `for`, when set.
    #[serde(rename = "for", skip_serializing_if = "Option::is_none")]
    pub for_: Option<String>,
    /// `keep_firing_for`, when set.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keep_firing_for: Option<String>,
    /// Labels.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}
