//! PromQL evaluation over a [`Queryable`] with Prometheus 2.x semantics:
//! inclusive range boundaries, a lookback window for instant selectors and
//! staleness markers that end a series.

mod aggregate;
mod binary;
mod eval;
mod functions;

use crate::storage::{Labels, Queryable, SeriesPoints};
use promql_parser::parser::value::ValueType;
use promql_parser::parser::{self, Expr};
use std::fmt;
use std::sync::Once;

pub use eval::selector_matchers;

/// One element of an instant vector.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The element's labels.
    pub labels: Labels,
    /// Its value.
    pub v: f64,
}

/// The result of evaluating an expression at one instant.
#[derive(Clone, Debug)]
pub enum Value {
    /// A single number.
    Scalar(f64),
    /// A string literal.
    String(String),
    /// An instant vector.
    Vector(Vec<Sample>),
    /// A range vector (matrix selector or subquery at the top level).
    Matrix(Vec<SeriesPoints>),
}

impl Value {
    /// The type name Prometheus' API uses (`resultType`).
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Scalar(_) => "scalar",
            Value::String(_) => "string",
            Value::Vector(_) => "vector",
            Value::Matrix(_) => "matrix",
        }
    }
}

/// An evaluation or parse error; the message follows Prometheus' wording.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Error(pub String);

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

/// Engine settings.
#[derive(Clone, Copy, Debug)]
pub struct Engine {
    /// How far back an instant selector looks for a sample (ms); Prometheus' 5 m.
    pub lookback_ms: i64,
    /// Step of a subquery written without one (`x[5m:]`), ms: the evaluation interval.
    pub default_subquery_step_ms: i64,
}

impl Default for Engine {
    fn default() -> Self {
        Self {
            lookback_ms: 5 * 60 * 1000,
            default_subquery_step_ms: 60 * 1000,
        }
    }
}

/// Parses a PromQL expression. Prometheus 2.x's `holt_winters` is accepted as
/// the older name of `double_exponential_smoothing`, so 2.x rule files load.
pub fn parse(query: &str) -> Result<Expr, Error> {
    static REGISTER: Once = Once::new();
    REGISTER.call_once(|| {
        let holt_winters = parser::Function::new(
            "holt_winters",
            vec![ValueType::Matrix, ValueType::Scalar, ValueType::Scalar],
            0,
            ValueType::Vector,
            false,
        );
        // Only fails when the name is already registered, which is the goal.
        let _ = parser::register_extra_functions(vec![holt_winters]);
    });
    parser::parse(query).map_err(Error)
}

impl Engine {
    /// Evaluates `expr` at `t` (ms).
    pub fn instant(&self, db: &dyn Queryable, expr: &Expr, t: i64) -> Result<Value, Error> {
        eval::Evaluator::new(self, db, t, t).eval(expr, t)
    }

    /// Evaluates `expr` at every step from `start` to `end` (ms, inclusive) and
    /// returns one series per label set, as Prometheus' range queries do.
    pub fn range(
        &self,
        db: &dyn Queryable,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
    ) -> Result<Vec<SeriesPoints>, Error> {
        if step <= 0 {
            return Err(Error("zero or negative query resolution step widths are not accepted. Try a positive integer".into()));
        }
        let evaluator = eval::Evaluator::new(self, db, start, end);
        let mut series = eval::SeriesBuilder::default();
        let mut t = start;
        while t <= end {
            let value = evaluator.eval(expr, t)?;
            series.add(value, t).map_err(|other| {
                Error(format!(
                    "invalid expression type \"{}\" for range query, must be Scalar or instant Vector",
                    if other == "matrix" { "range vector" } else { other }
                ))
            })?;
            t += step;
        }
        let mut series = series.finish();
        series.sort_by(|a, b| a.labels.cmp(&b.labels));
        Ok(series)
    }
}
