//! Prometheus-format rule files, laid out as Prometheus' `rules/`: loading and validation
//! (`loader`), recording and alerting rules (`recording`, `alerting`), group evaluation with
//! staleness markers and saved alert state (`group`), the groups on their timers (`manager`).
//! `unittest` runs promtool's rule unit-test format over the same evaluation.

mod alerting;
mod datasource;
mod group;
mod loader;
mod manager;
mod recording;
mod unittest;

pub use alerting::{
    Alert, AlertState, AlertingRule, RESOLVED_RETENTION_MS, ShortForm, TemplateContext,
};
pub use datasource::{LocalQuery, QueryFn, RemoteQuery};
pub use group::{Group, GroupOutcome};
pub(crate) use loader::parse_file;
pub use loader::{Duplicate, LoadErrors, expand_globs, load_file, load_files};
pub use manager::{GroupStatus, RuleContext, RuleManager, RuleStatus, load_all};
pub use recording::RecordingRule;
pub use unittest::run_test_files;

use crate::storage::Labels;
use promql_parser::parser::Expr;
use std::collections::HashSet;

/// A rule evaluation error, reported per rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct RuleError(pub String);

/// Either kind of rule.
#[derive(Debug)]
pub enum RuleKind {
    /// Writes its result as new series.
    Recording(RecordingRule),
    /// Raises alerts.
    Alerting(AlertingRule),
}

/// A rule with its evaluation bookkeeping.
#[derive(Debug)]
pub struct Rule {
    /// The rule itself.
    pub kind: RuleKind,
    /// Error of the last evaluation.
    pub last_error: Option<String>,
    /// When it was last evaluated (ms).
    pub last_evaluation: Option<i64>,
    /// How long the last evaluation took.
    pub last_duration: std::time::Duration,
    /// Series written last time, to mark them stale when they disappear.
    previous_series: HashSet<Labels>,
}

impl Rule {
    /// The record or alert name.
    pub fn name(&self) -> &str {
        match &self.kind {
            RuleKind::Recording(r) => &r.name,
            RuleKind::Alerting(a) => &a.name,
        }
    }

    fn same_kind_and_labels(&self, other: &Rule) -> bool {
        match (&self.kind, &other.kind) {
            (RuleKind::Recording(a), RuleKind::Recording(b)) => a.labels == b.labels,
            (RuleKind::Alerting(a), RuleKind::Alerting(b)) => a.labels == b.labels,
            _ => false,
        }
    }

    fn expr(&self) -> (&Expr, &str) {
        match &self.kind {
            RuleKind::Recording(r) => (&r.expr, &r.expr_text),
            RuleKind::Alerting(a) => (&a.expr, &a.expr_text),
        }
    }
}
