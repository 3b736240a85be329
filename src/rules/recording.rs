//! Recording rules: an expression's result written back as new series.

use super::RuleError;
use crate::promql::Sample;
use crate::storage::METRIC_NAME;
use promql_parser::parser::Expr;
use std::collections::{BTreeMap, HashSet};

/// A recording rule.
#[derive(Debug)]
pub struct RecordingRule {
    /// `record:` name.
    pub name: String,
    /// `expr:` as written.
    pub expr_text: String,
    pub(super) expr: Expr,
    /// Labels set on every result (group labels merged in).
    pub labels: BTreeMap<String, String>,
}

impl RecordingRule {
    /// Prometheus' `RecordingRule.Eval`: the query's result renamed and relabelled; a
    /// result with two series of one labelset, or more than `limit`, is an error.
    pub(super) fn eval(&self, result: Vec<Sample>, limit: usize) -> Result<Vec<Sample>, RuleError> {
        let mut out = Vec::with_capacity(result.len());
        let mut seen = HashSet::with_capacity(result.len());
        for s in result {
            let mut b = s.labels.builder();
            b.set(METRIC_NAME, &self.name);
            for (k, v) in &self.labels {
                b.set(k, v);
            }
            let labels = b.build();
            if !seen.insert(labels.clone()) {
                return Err(RuleError(
                    "vector contains metrics with the same labelset after applying rule labels"
                        .into(),
                ));
            }
            out.push(Sample { labels, v: s.v });
        }
        if limit > 0 && out.len() > limit {
            return Err(RuleError(format!(
                "exceeded limit of {limit} with {} series",
                out.len()
            )));
        }
        Ok(out)
    }
}
