//! Schemas of Prometheus rule files and of promtool's rule unit-test files.
//! Positions are kept (`Spanned`) so errors can name file:line:column.

use super::duration::PromDuration;
use serde::{Deserialize, Deserializer};
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
