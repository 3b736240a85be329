//! The tree-walking evaluator.

use super::{
    CANCELED, Engine, Error, Limits, Sample, TIMED_OUT, TOO_MANY_SAMPLES, Value, aggregate, binary,
    functions,
};
use crate::storage::{Labels, METRIC_NAME, Point, Queryable, SeriesPoints, is_stale};
use promql_parser::label::{MatchOp, Matcher};
use promql_parser::parser::{AtModifier, Expr, Offset, VectorSelector};
use std::cell::Cell;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Collects instant results step by step into one series per label set
/// (range queries, subqueries).
#[derive(Default)]
pub(super) struct SeriesBuilder {
    series: Vec<SeriesPoints>,
    index: HashMap<Labels, usize>,
}

impl SeriesBuilder {
    /// Adds the result at `t`: a vector, or a scalar as one label-less series.
    /// Any other type is refused with its type name.
    pub fn add(&mut self, value: Value, t: i64) -> Result<(), &'static str> {
        let samples = match value {
            Value::Scalar(v) => vec![Sample {
                labels: Labels::default(),
                v,
            }],
            Value::Vector(v) => v,
            other => return Err(other.type_name()),
        };
        for s in samples {
            let i = match self.index.get(&s.labels) {
                Some(&i) => i,
                None => {
                    self.series.push(SeriesPoints {
                        labels: s.labels.clone(),
                        points: Vec::new(),
                    });
                    self.index.insert(s.labels, self.series.len() - 1);
                    self.series.len() - 1
                }
            };
            self.series[i].points.push(Point { t, v: s.v });
        }
        Ok(())
    }

    pub fn finish(self) -> Vec<SeriesPoints> {
        self.series
    }
}

/// A range argument of a function: the series and the window they were cut to.
pub(super) struct RangeArg {
    pub series: Vec<SeriesPoints>,
    /// Window length in ms.
    pub range_ms: i64,
    /// End of the window (ms): evaluation time, `@` and `offset` applied.
    pub end: i64,
}

pub(super) struct Evaluator<'a> {
    pub engine: &'a Engine,
    db: &'a dyn Queryable,
    /// `start()` and `end()` of the query, for the `@` modifier.
    query_start: i64,
    query_end: i64,
    limits: &'a Limits,
    /// Samples loaded for the step being evaluated (Prometheus' `currentSamples`).
    samples: Cell<usize>,
}

pub(super) fn duration_ms(d: &Duration) -> i64 {
    d.as_millis() as i64
}

fn offset_ms(offset: &Option<Offset>) -> i64 {
    match offset {
        None => 0,
        Some(Offset::Pos(d)) => duration_ms(d),
        Some(Offset::Neg(d)) => -duration_ms(d),
    }
}

fn system_time_ms(t: &SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => duration_ms(&d),
        Err(e) => -duration_ms(&e.duration()),
    }
}

/// The matchers of a selector with its metric name folded in; one set per
/// `or` alternative.
pub fn selector_matchers(vs: &VectorSelector) -> Vec<Vec<Matcher>> {
    let name = vs
        .name
        .as_ref()
        .map(|n| Matcher::new(MatchOp::Equal, METRIC_NAME, n));
    let with_name = |ms: &[Matcher]| -> Vec<Matcher> {
        let mut out: Vec<Matcher> = name.iter().cloned().collect();
        out.extend(ms.iter().cloned());
        out
    };
    if vs.matchers.or_matchers.is_empty() {
        vec![with_name(&vs.matchers.matchers)]
    } else {
        vs.matchers
            .or_matchers
            .iter()
            .map(|group| with_name(group))
            .collect()
    }
}

/// Fails when two elements share a label set, as Prometheus does after every
/// function, operator and aggregation.
pub(super) fn check_unique(samples: &[Sample]) -> Result<(), Error> {
    let mut seen = HashSet::with_capacity(samples.len());
    for s in samples {
        if !seen.insert(&s.labels) {
            return Err(Error(
                "vector cannot contain metrics with the same labelset".into(),
            ));
        }
    }
    Ok(())
}

impl<'a> Evaluator<'a> {
    pub fn new(
        engine: &'a Engine,
        db: &'a dyn Queryable,
        query_start: i64,
        query_end: i64,
        limits: &'a Limits,
    ) -> Self {
        Self {
            engine,
            db,
            query_start,
            query_end,
            limits,
            samples: Cell::new(0),
        }
    }

    /// Stops an evaluation whose deadline passed or whose client went away; checked at every
    /// node and subquery step, so a runaway query ends within moments.
    fn check(&self) -> Result<(), Error> {
        if self
            .limits
            .cancelled
            .as_ref()
            .is_some_and(|c| c.load(Ordering::Relaxed))
        {
            return Err(Error(CANCELED.into()));
        }
        if self
            .limits
            .deadline
            .is_some_and(|d| std::time::Instant::now() >= d)
        {
            return Err(Error(TIMED_OUT.into()));
        }
        Ok(())
    }

    /// Counts `n` samples loaded; more than `max_samples` in one step is an error.
    pub(super) fn load(&self, n: usize) -> Result<(), Error> {
        let total = self.samples.get().saturating_add(n);
        self.samples.set(total);
        if self.limits.max_samples > 0 && total > self.limits.max_samples {
            return Err(Error(TOO_MANY_SAMPLES.into()));
        }
        Ok(())
    }

    /// A new top-level step: the samples of the last one are released.
    pub(super) fn next_step(&self) {
        self.samples.set(0);
    }

    fn reference_time(&self, at: &Option<AtModifier>, offset: &Option<Offset>, t: i64) -> i64 {
        let base = match at {
            None => t,
            Some(AtModifier::Start) => self.query_start,
            Some(AtModifier::End) => self.query_end,
            Some(AtModifier::At(time)) => system_time_ms(time),
        };
        base - offset_ms(offset)
    }

    fn select(&self, vs: &VectorSelector, mint: i64, maxt: i64) -> Vec<SeriesPoints> {
        let groups = selector_matchers(vs);
        if groups.len() == 1 {
            return self.db.select(&groups[0], mint, maxt);
        }
        let mut seen = HashSet::new();
        let mut out = Vec::new();
        for g in &groups {
            for s in self.db.select(g, mint, maxt) {
                if seen.insert(s.labels.clone()) {
                    out.push(s);
                }
            }
        }
        out
    }

    /// Latest non-stale point of each series within the lookback window.
    pub fn instant_selector(&self, vs: &VectorSelector, t: i64) -> Vec<(Labels, Point)> {
        let reference = self.reference_time(&vs.at, &vs.offset, t);
        let mint = reference - self.engine.lookback_ms;
        let groups = selector_matchers(vs);
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for g in &groups {
            for (labels, point) in self.db.select_latest(g, mint, reference) {
                if !is_stale(point.v) && (groups.len() == 1 || seen.insert(labels.clone())) {
                    out.push((labels, point));
                }
            }
        }
        out
    }

    /// Evaluates a matrix selector or subquery argument at `t`.
    pub fn range_arg(&self, expr: &Expr, t: i64) -> Result<RangeArg, Error> {
        match expr {
            Expr::Paren(p) => self.range_arg(&p.expr, t),
            Expr::MatrixSelector(ms) => {
                let end = self.reference_time(&ms.vs.at, &ms.vs.offset, t);
                let range_ms = duration_ms(&ms.range);
                let mut series = self.select(&ms.vs, end - range_ms, end);
                for s in &mut series {
                    s.points.retain(|p| !is_stale(p.v));
                }
                series.retain(|s| !s.points.is_empty());
                self.load(series.iter().map(|s| s.points.len()).sum())?;
                Ok(RangeArg {
                    series,
                    range_ms,
                    end,
                })
            }
            Expr::Subquery(sq) => {
                let end = self.reference_time(&sq.at, &sq.offset, t);
                let range_ms = duration_ms(&sq.range);
                let step = sq
                    .step
                    .as_ref()
                    .map(duration_ms)
                    .filter(|s| *s > 0)
                    .unwrap_or(self.engine.default_subquery_step_ms);
                let series = self.subquery(&sq.expr, end - range_ms, end, step)?;
                self.load(series.iter().map(|s| s.points.len()).sum())?;
                Ok(RangeArg {
                    series,
                    range_ms,
                    end,
                })
            }
            other => Err(Error(format!(
                "expected a range vector argument, got {}",
                expr_kind(other)
            ))),
        }
    }

    /// Evaluates `expr` at every step-aligned time in `[mint, maxt]`.
    fn subquery(
        &self,
        expr: &Expr,
        mint: i64,
        maxt: i64,
        step: i64,
    ) -> Result<Vec<SeriesPoints>, Error> {
        // Prometheus aligns subquery steps to absolute multiples of the step
        // (Go's truncating division, then one step up when that fell short).
        let mut start = step * (mint / step);
        if start < mint {
            start += step;
        }
        let mut series = SeriesBuilder::default();
        let mut ts = start;
        while ts <= maxt {
            series.add(self.eval(expr, ts)?, ts).map_err(|other| {
                Error(format!(
                    "subquery is only allowed on instant vector, got {other} instead"
                ))
            })?;
            ts += step;
        }
        Ok(series.finish())
    }

    pub fn eval_vector(&self, expr: &Expr, t: i64) -> Result<Vec<Sample>, Error> {
        match self.eval(expr, t)? {
            Value::Vector(v) => Ok(v),
            other => Err(Error(format!(
                "expected instant vector, got {}",
                other.type_name()
            ))),
        }
    }

    pub fn eval_scalar(&self, expr: &Expr, t: i64) -> Result<f64, Error> {
        match self.eval(expr, t)? {
            Value::Scalar(v) => Ok(v),
            other => Err(Error(format!("expected scalar, got {}", other.type_name()))),
        }
    }

    pub fn eval(&self, expr: &Expr, t: i64) -> Result<Value, Error> {
        self.check()?;
        match expr {
            Expr::NumberLiteral(n) => Ok(Value::Scalar(n.val)),
            Expr::StringLiteral(s) => Ok(Value::String(s.val.clone())),
            Expr::Paren(p) => self.eval(&p.expr, t),
            Expr::VectorSelector(vs) => {
                let samples: Vec<Sample> = self
                    .instant_selector(vs, t)
                    .into_iter()
                    .map(|(labels, p)| Sample { labels, v: p.v })
                    .collect();
                self.load(samples.len())?;
                Ok(Value::Vector(samples))
            }
            Expr::MatrixSelector(_) | Expr::Subquery(_) => {
                Ok(Value::Matrix(self.range_arg(expr, t)?.series))
            }
            Expr::Unary(u) => match self.eval(&u.expr, t)? {
                Value::Scalar(v) => Ok(Value::Scalar(-v)),
                Value::Vector(v) => {
                    let out: Vec<Sample> = v
                        .into_iter()
                        .map(|s| Sample {
                            labels: s.labels.without_metric_name(),
                            v: -s.v,
                        })
                        .collect();
                    check_unique(&out)?;
                    Ok(Value::Vector(out))
                }
                other => Err(Error(format!(
                    "unary expression only allowed on expressions of type scalar or instant vector, got {}",
                    other.type_name()
                ))),
            },
            Expr::Binary(b) => binary::eval(self, b, t),
            Expr::Aggregate(a) => aggregate::eval(self, a, t),
            Expr::Call(c) => functions::eval(self, c, t),
            Expr::Extension(_) => Err(Error("extension expressions are not supported".into())),
        }
    }
}

pub(super) fn expr_kind(expr: &Expr) -> &'static str {
    match expr {
        Expr::NumberLiteral(_) => "scalar",
        Expr::StringLiteral(_) => "string",
        Expr::MatrixSelector(_) | Expr::Subquery(_) => "range vector",
        _ => "instant vector",
    }
}
