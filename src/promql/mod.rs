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
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Once};

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
    check_number_durations(query)?;
    parser::parse(query).map_err(Error)
}

/// promql-parser 0.11 turns a plain number written as a duration (`x[1e30]`, `x[5m:NaN]`,
/// `x offset Inf`) into a `Duration` with `from_secs_f64`, which panics on what a `Duration`
/// cannot hold, so such numbers are refused before the parser sees them.
fn check_number_durations(query: &str) -> Result<(), Error> {
    use lrpar::{Lexeme, Lexer, NonStreamingLexer};
    use parser::token::{T_ADD, T_COLON, T_LEFT_BRACKET, T_NUMBER, T_OFFSET, T_SUB};
    // A query the lexer refuses gets the parser's own message.
    let Ok(lexer) = parser::lexer(query) else {
        return Ok(());
    };
    let tokens: Vec<_> = lexer.iter().filter_map(Result::ok).collect();
    for (i, token) in tokens.iter().enumerate() {
        if token.tok_id() != T_NUMBER {
            continue;
        }
        let before = |n: usize| i.checked_sub(n).map(|j| tokens[j].tok_id());
        let is_duration = matches!(before(1), Some(T_LEFT_BRACKET | T_COLON | T_OFFSET))
            || (matches!(before(1), Some(T_ADD | T_SUB)) && before(2) == Some(T_OFFSET));
        if !is_duration {
            continue;
        }
        let text = lexer.span_str(token.span());
        let fits = promql_parser::util::parse_str_radix(text)
            .is_ok_and(|seconds| std::time::Duration::try_from_secs_f64(seconds).is_ok());
        if !fits {
            return Err(Error(format!("duration out of range: {text}")));
        }
    }
    Ok(())
}

/// Prometheus' messages for a query stopped by its limits.
pub const TIMED_OUT: &str = "query timed out in expression evaluation";
/// The client went away or the process is stopping.
pub const CANCELED: &str = "query was canceled in expression evaluation";
/// More than `max_samples` loaded at once.
pub const TOO_MANY_SAMPLES: &str =
    "query processing would load too many samples into memory in query execution";

/// What bounds one evaluation: Prometheus' `query.timeout` as a deadline, a flag that cancels it
/// (the client left, or shutdown), and `query.max-samples` (0 = none) held at once in a step.
#[derive(Clone, Debug, Default)]
pub struct Limits {
    /// When the evaluation gives up.
    pub deadline: Option<std::time::Instant>,
    /// Set to stop the evaluation at its next step.
    pub cancelled: Option<Arc<AtomicBool>>,
    /// Most samples one step may load.
    pub max_samples: usize,
}

impl Engine {
    /// Evaluates `expr` at `t` (ms).
    pub fn instant(&self, db: &dyn Queryable, expr: &Expr, t: i64) -> Result<Value, Error> {
        self.instant_limited(db, expr, t, &Limits::default())
    }

    /// [`Engine::instant`] within `limits`.
    pub fn instant_limited(
        &self,
        db: &dyn Queryable,
        expr: &Expr,
        t: i64,
        limits: &Limits,
    ) -> Result<Value, Error> {
        eval::Evaluator::new(self, db, t, t, limits).eval(expr, t)
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
        self.range_limited(db, expr, start, end, step, &Limits::default())
    }

    /// [`Engine::range`] within `limits`; the result's points count against `max_samples` too.
    pub fn range_limited(
        &self,
        db: &dyn Queryable,
        expr: &Expr,
        start: i64,
        end: i64,
        step: i64,
        limits: &Limits,
    ) -> Result<Vec<SeriesPoints>, Error> {
        if step <= 0 {
            return Err(Error("zero or negative query resolution step widths are not accepted. Try a positive integer".into()));
        }
        let evaluator = eval::Evaluator::new(self, db, start, end, limits);
        let mut series = eval::SeriesBuilder::default();
        let mut result_points = 0usize;
        let mut t = start;
        while t <= end {
            evaluator.next_step();
            let value = evaluator.eval(expr, t)?;
            result_points += match &value {
                Value::Vector(v) => v.len(),
                _ => 1,
            };
            evaluator.load(result_points)?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{Storage, StorageOptions};
    use std::time::{Duration, Instant};

    #[test]
    fn numbers_as_durations_past_what_a_duration_holds_are_errors() {
        // The promql fuzz target's crash: a subquery range of 71 digits.
        let huge = format!("countr_time(temperatGre[74{}0:45s])", "1".repeat(68));
        for query in [
            huge.as_str(),
            "up[1e30]",
            "up[5m:1e30]",
            "up offset 1e30",
            "up offset -1e30",
        ] {
            match parse(query) {
                Err(Error(message)) => assert!(
                    message.starts_with("duration out of range"),
                    "{query}: {message}"
                ),
                Ok(expr) => panic!("{query} parsed as {expr}"),
            }
        }
        // The lexer refuses these before a duration is made; they must stay errors, not panics.
        for query in [
            "up[NaN]",
            "up[5m:Inf]",
            "up offset Inf",
            "up[0xffffffffffffffffffff]",
        ] {
            assert!(parse(query).is_err(), "{query}");
        }
        // Numbers that fit stay durations, and other numbers stay numbers.
        assert_eq!(
            parse("up[300]").map(|e| e.to_string()).ok().as_deref(),
            Some("up[5m]")
        );
        assert_eq!(
            parse("up offset 60").map(|e| e.to_string()).ok().as_deref(),
            Some("up offset 1m")
        );
        assert!(parse("up > 1e30").is_ok());
    }

    fn store() -> Storage {
        let storage = Storage::new(StorageOptions {
            retention_ms: i64::MAX / 4,
            max_series: 1000,
        });
        let mut appender = storage.appender();
        for i in 0..10 {
            let labels = Labels::from_pairs([("__name__", "up"), ("i", &i.to_string())]);
            for t in 0..100 {
                appender.append(&labels, t * 1000, 1.0).unwrap();
            }
        }
        drop(appender);
        storage
    }

    #[test]
    fn a_runaway_subquery_stops_at_its_deadline_or_when_cancelled() {
        let db = store();
        let engine = Engine::default();
        // About 3e10 subquery steps: without the limits this would run for hours.
        let expr = parse("sum_over_time(up[1y:1ms])").unwrap();
        let limits = Limits {
            deadline: Some(Instant::now() + Duration::from_millis(50)),
            ..Limits::default()
        };
        let err = engine
            .instant_limited(&db.view(), &expr, 100_000, &limits)
            .unwrap_err();
        assert_eq!(err.0, TIMED_OUT);
        let flag = Arc::new(AtomicBool::new(false));
        let limits = Limits {
            cancelled: Some(flag.clone()),
            ..Limits::default()
        };
        let stopper = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            flag.store(true, std::sync::atomic::Ordering::Relaxed);
        });
        let err = engine
            .instant_limited(&db.view(), &expr, 100_000, &limits)
            .unwrap_err();
        stopper.join().unwrap();
        assert_eq!(err.0, CANCELED);
    }

    #[test]
    fn samples_held_in_a_step_are_bounded() {
        let db = store();
        let engine = Engine::default();
        let limits = |max_samples| Limits {
            max_samples,
            ..Limits::default()
        };
        // 10 series × 61 points in the minute up to t=99s.
        let expr = parse("count_over_time(up[1m])").unwrap();
        let ok = engine.instant_limited(&db.view(), &expr, 99_000, &limits(610));
        assert!(ok.is_ok(), "{ok:?}");
        let err = engine
            .instant_limited(&db.view(), &expr, 99_000, &limits(609))
            .unwrap_err();
        assert_eq!(err.0, TOO_MANY_SAMPLES);
        // A range query releases each step's samples but holds its result: 10 series × 11 steps.
        let up = parse("up").unwrap();
        let ok = engine.range_limited(&db.view(), &up, 0, 10_000, 1000, &limits(120));
        assert!(ok.is_ok(), "{ok:?}");
        let err = engine
            .range_limited(&db.view(), &up, 0, 10_000, 1000, &limits(100))
            .unwrap_err();
        assert_eq!(err.0, TOO_MANY_SAMPLES);
    }
}
