//! PromQL functions, following Prometheus 2.x's `functions.go` (Kahan sums,
//! extrapolation, bucket interpolation) so results agree to float precision.

use super::aggregate::quantile;
use super::eval::{Evaluator, RangeArg, check_unique, expr_kind};
use super::{Error, Sample, Value};
use crate::storage::{Labels, METRIC_NAME, Point, is_valid_label_name};
use chrono::{DateTime, Datelike, Timelike};
use promql_parser::label::MatchOp;
use promql_parser::parser::{Call, Expr};

pub(super) fn eval(ev: &Evaluator, call: &Call, t: i64) -> Result<Value, Error> {
    let name = call.func.name;
    let args = &call.args.args;
    let arg = |i: usize| -> Result<&Expr, Error> {
        args.get(i)
            .map(|a| a.as_ref())
            .ok_or_else(|| Error(format!("missing argument {} of {name}()", i + 1)))
    };
    let scalar_arg = |i: usize| -> Result<f64, Error> { ev.eval_scalar(arg(i)?, t) };
    let string_arg = |i: usize| -> Result<String, Error> {
        match ev.eval(arg(i)?, t)? {
            Value::String(s) => Ok(s),
            other => Err(Error(format!(
                "expected string argument {} of {name}(), got {}",
                i + 1,
                other.type_name()
            ))),
        }
    };
    let out = match name {
        "time" => return Ok(Value::Scalar(t as f64 / 1000.0)),
        "pi" => return Ok(Value::Scalar(std::f64::consts::PI)),
        "vector" => vec![Sample {
            labels: Labels::default(),
            v: scalar_arg(0)?,
        }],
        "scalar" => {
            let v = ev.eval_vector(arg(0)?, t)?;
            return Ok(Value::Scalar(if v.len() == 1 { v[0].v } else { f64::NAN }));
        }
        "timestamp" => timestamp(ev, arg(0)?, t)?,
        "abs" | "ceil" | "floor" | "exp" | "sqrt" | "ln" | "log2" | "log10" | "sgn" | "acos"
        | "acosh" | "asin" | "asinh" | "atan" | "atanh" | "cos" | "cosh" | "sin" | "sinh"
        | "tan" | "tanh" | "deg" | "rad" => {
            let f = math_fn(name);
            map_values(ev.eval_vector(arg(0)?, t)?, f)
        }
        "round" => {
            let to_nearest = if args.len() > 1 { scalar_arg(1)? } else { 1.0 };
            // Dividing by the inverse keeps results like 0.1 exact, as Prometheus does.
            let inverse = 1.0 / to_nearest;
            map_values(ev.eval_vector(arg(0)?, t)?, |v| {
                (v * inverse + 0.5).floor() / inverse
            })
        }
        "clamp" => {
            let (min, max) = (scalar_arg(1)?, scalar_arg(2)?);
            if max < min {
                Vec::new()
            } else {
                map_values(ev.eval_vector(arg(0)?, t)?, |v| go_max(min, go_min(max, v)))
            }
        }
        "clamp_min" => {
            let min = scalar_arg(1)?;
            map_values(ev.eval_vector(arg(0)?, t)?, |v| go_max(v, min))
        }
        "clamp_max" => {
            let max = scalar_arg(1)?;
            map_values(ev.eval_vector(arg(0)?, t)?, |v| go_min(v, max))
        }
        "day_of_month" | "day_of_week" | "day_of_year" | "days_in_month" | "hour" | "minute"
        | "month" | "year" => {
            let input = match args.first() {
                Some(a) => ev.eval_vector(a, t)?,
                None => vec![Sample {
                    labels: Labels::default(),
                    v: t as f64 / 1000.0,
                }],
            };
            map_values(input, |v| date_part(name, v))
        }
        "label_replace" => label_replace(
            ev.eval_vector(arg(0)?, t)?,
            &string_arg(1)?,
            &string_arg(2)?,
            &string_arg(3)?,
            &string_arg(4)?,
        )?,
        "label_join" => {
            let dst = string_arg(1)?;
            let sep = string_arg(2)?;
            let mut sources = Vec::new();
            for i in 3..args.len() {
                let src = string_arg(i)?;
                if !is_valid_label_name(&src) {
                    return Err(Error(format!(
                        "invalid source label name in label_join(): {src}"
                    )));
                }
                sources.push(src);
            }
            if !is_valid_label_name(&dst) {
                return Err(Error(format!(
                    "invalid destination label name in label_join(): {dst}"
                )));
            }
            ev.eval_vector(arg(0)?, t)?
                .into_iter()
                .map(|s| {
                    let joined: Vec<&str> = sources.iter().map(|n| s.labels.get(n)).collect();
                    let mut b = s.labels.builder();
                    b.set(&dst, &joined.join(&sep));
                    Sample {
                        labels: b.build(),
                        v: s.v,
                    }
                })
                .collect()
        }
        "sort" | "sort_desc" => {
            let mut v = ev.eval_vector(arg(0)?, t)?;
            let desc = name == "sort_desc";
            // Go's comparator puts NaN first in both directions.
            v.sort_by(|a, b| match (a.v.is_nan(), b.v.is_nan()) {
                (true, true) => std::cmp::Ordering::Equal,
                (true, false) => std::cmp::Ordering::Less,
                (false, true) => std::cmp::Ordering::Greater,
                _ if desc => b.v.total_cmp(&a.v),
                _ => a.v.total_cmp(&b.v),
            });
            return Ok(Value::Vector(v));
        }
        "absent" => {
            if ev.eval_vector(arg(0)?, t)?.is_empty() {
                vec![Sample {
                    labels: absent_labels(arg(0)?),
                    v: 1.0,
                }]
            } else {
                Vec::new()
            }
        }
        "histogram_quantile" => histogram_quantile(scalar_arg(0)?, ev.eval_vector(arg(1)?, t)?),
        _ => return range_function(ev, call, t),
    };
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

/// A range function's work on one series: its points and the window.
type RangeFn = dyn Fn(&[Point], &RangeArg) -> Option<f64>;

/// Functions over a range vector: evaluated per series of the window.
fn range_function(ev: &Evaluator, call: &Call, t: i64) -> Result<Value, Error> {
    let name = call.func.name;
    let args = &call.args.args;
    // Scalar parameters come before the range (quantile_over_time) or after it.
    let range_index = args
        .iter()
        .position(|a| matches!(expr_kind(a), "range vector") || is_range_expr(a))
        .ok_or_else(|| Error(format!("function {name}() is not supported")))?;
    let params: Vec<f64> = args
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != range_index)
        .map(|(_, a)| ev.eval_scalar(a, t))
        .collect::<Result<_, _>>()?;
    let ra = ev.range_arg(&args[range_index], t)?;
    if name == "absent_over_time" {
        return Ok(Value::Vector(if ra.series.is_empty() {
            vec![Sample {
                labels: absent_labels(&args[range_index]),
                v: 1.0,
            }]
        } else {
            Vec::new()
        }));
    }
    let f: Box<RangeFn> = match name {
        "rate" => Box::new(|p, ra| extrapolated_rate(p, ra, true, true)),
        "increase" => Box::new(|p, ra| extrapolated_rate(p, ra, true, false)),
        "delta" => Box::new(|p, ra| extrapolated_rate(p, ra, false, false)),
        "irate" => Box::new(|p, _| instant_value(p, true)),
        "idelta" => Box::new(|p, _| instant_value(p, false)),
        "deriv" => Box::new(|p, _| (p.len() >= 2).then(|| linear_regression(p, p[0].t).0)),
        "predict_linear" => {
            let horizon = param(&params, 0, name)?;
            Box::new(move |p, _| {
                (p.len() >= 2).then(|| {
                    let (slope, intercept) = linear_regression(p, t);
                    slope * horizon + intercept
                })
            })
        }
        "avg_over_time" => Box::new(|p, _| Some(avg(p))),
        "sum_over_time" => Box::new(|p, _| {
            let (sum, c) = kahan(p.iter().map(|x| x.v));
            Some(if sum.is_infinite() { sum } else { sum + c })
        }),
        "count_over_time" => Box::new(|p, _| Some(p.len() as f64)),
        "min_over_time" => Box::new(|p, _| {
            Some(
                p.iter()
                    .fold(p[0].v, |m, x| if x.v < m || m.is_nan() { x.v } else { m }),
            )
        }),
        "max_over_time" => Box::new(|p, _| {
            Some(
                p.iter()
                    .fold(p[0].v, |m, x| if x.v > m || m.is_nan() { x.v } else { m }),
            )
        }),
        "last_over_time" => Box::new(|p, _| p.last().map(|x| x.v)),
        "present_over_time" => Box::new(|_, _| Some(1.0)),
        "stddev_over_time" => Box::new(|p, _| Some(variance(p).sqrt())),
        "stdvar_over_time" => Box::new(|p, _| Some(variance(p))),
        "quantile_over_time" => {
            let q = param(&params, 0, name)?;
            Box::new(move |p, _| {
                let mut values: Vec<f64> = p.iter().map(|x| x.v).collect();
                Some(quantile(q, &mut values))
            })
        }
        "changes" => Box::new(|p, _| {
            Some(
                p.windows(2)
                    .filter(|w| w[0].v != w[1].v && !(w[0].v.is_nan() && w[1].v.is_nan()))
                    .count() as f64,
            )
        }),
        "resets" => Box::new(|p, _| Some(p.windows(2).filter(|w| w[1].v < w[0].v).count() as f64)),
        "holt_winters" | "double_exponential_smoothing" => {
            let (sf, tf) = (param(&params, 0, name)?, param(&params, 1, name)?);
            if sf <= 0.0 || sf >= 1.0 {
                return Err(Error(format!(
                    "invalid smoothing factor. Expected: 0 < sf < 1, got: {sf:.6}"
                )));
            }
            if tf <= 0.0 || tf >= 1.0 {
                return Err(Error(format!(
                    "invalid trend factor. Expected: 0 < tf < 1, got: {tf:.6}"
                )));
            }
            Box::new(move |p, _| holt_winters(p, sf, tf))
        }
        other => {
            return Err(Error(format!(
                "function {other}() is not supported by torchwatch"
            )));
        }
    };
    let keep_name = name == "last_over_time";
    let mut out = Vec::with_capacity(ra.series.len());
    for s in &ra.series {
        if let Some(v) = f(&s.points, &ra) {
            let labels = if keep_name {
                s.labels.clone()
            } else {
                s.labels.without_metric_name()
            };
            out.push(Sample { labels, v });
        }
    }
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

fn is_range_expr(e: &Expr) -> bool {
    match e {
        Expr::Paren(p) => is_range_expr(&p.expr),
        Expr::MatrixSelector(_) | Expr::Subquery(_) => true,
        _ => false,
    }
}

fn param(params: &[f64], i: usize, name: &str) -> Result<f64, Error> {
    params
        .get(i)
        .copied()
        .ok_or_else(|| Error(format!("missing scalar argument of {name}()")))
}

fn map_values(v: Vec<Sample>, f: impl Fn(f64) -> f64) -> Vec<Sample> {
    v.into_iter()
        .map(|s| Sample {
            labels: s.labels.without_metric_name(),
            v: f(s.v),
        })
        .collect()
}

/// Go's `math.Max`: NaN wins.
fn go_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

/// Go's `math.Min`: NaN wins.
fn go_min(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.min(b)
    }
}

fn math_fn(name: &str) -> fn(f64) -> f64 {
    match name {
        "abs" => f64::abs,
        "ceil" => f64::ceil,
        "floor" => f64::floor,
        "exp" => f64::exp,
        "sqrt" => f64::sqrt,
        "ln" => f64::ln,
        "log2" => f64::log2,
        "log10" => f64::log10,
        "sgn" => |v: f64| {
            if v < 0.0 {
                -1.0
            } else if v > 0.0 {
                1.0
            } else {
                v
            }
        },
        "acos" => f64::acos,
        "acosh" => f64::acosh,
        "asin" => f64::asin,
        "asinh" => f64::asinh,
        "atan" => f64::atan,
        "atanh" => f64::atanh,
        "cos" => f64::cos,
        "cosh" => f64::cosh,
        "sin" => f64::sin,
        "sinh" => f64::sinh,
        "tan" => f64::tan,
        "tanh" => f64::tanh,
        "deg" => |v: f64| v * 180.0 / std::f64::consts::PI,
        "rad" => |v: f64| v * std::f64::consts::PI / 180.0,
        _ => unreachable!("math_fn is only called with the names matched above"),
    }
}

fn date_part(name: &str, v: f64) -> f64 {
    if !v.is_finite() {
        return f64::NAN;
    }
    let Some(dt) = DateTime::from_timestamp(v as i64, 0) else {
        return f64::NAN;
    };
    (match name {
        "day_of_month" => dt.day(),
        "day_of_week" => dt.weekday().num_days_from_sunday(),
        "day_of_year" => dt.ordinal(),
        "days_in_month" => {
            let (y, m) = (dt.year(), dt.month());
            let next = if m == 12 {
                chrono::NaiveDate::from_ymd_opt(y + 1, 1, 1)
            } else {
                chrono::NaiveDate::from_ymd_opt(y, m + 1, 1)
            };
            let first = chrono::NaiveDate::from_ymd_opt(y, m, 1);
            match (first, next) {
                (Some(a), Some(b)) => (b - a).num_days() as u32,
                _ => return f64::NAN,
            }
        }
        "hour" => dt.hour(),
        "minute" => dt.minute(),
        "month" => dt.month(),
        _ => return dt.year() as f64,
    }) as f64
}

/// `timestamp()`: a selector's own sample times; anything else gets the
/// evaluation time, as in Prometheus.
fn timestamp(ev: &Evaluator, arg: &Expr, t: i64) -> Result<Vec<Sample>, Error> {
    let inner = match arg {
        Expr::Paren(p) => p.expr.as_ref(),
        other => other,
    };
    Ok(match inner {
        Expr::VectorSelector(vs) => ev
            .instant_selector(vs, t)
            .into_iter()
            .map(|(labels, p)| Sample {
                labels: labels.without_metric_name(),
                v: p.t as f64 / 1000.0,
            })
            .collect(),
        _ => map_values(ev.eval_vector(arg, t)?, |_| t as f64 / 1000.0),
    })
}

fn label_replace(
    input: Vec<Sample>,
    dst: &str,
    replacement: &str,
    src: &str,
    regex: &str,
) -> Result<Vec<Sample>, Error> {
    let re = regex::Regex::new(&format!("^(?:{regex})$")).map_err(|_| {
        Error(format!(
            "invalid regular expression in label_replace(): {regex}"
        ))
    })?;
    if !is_valid_label_name(dst) {
        return Err(Error(format!(
            "invalid destination label name in label_replace(): {dst}"
        )));
    }
    Ok(input
        .into_iter()
        .map(|s| match re.captures(s.labels.get(src)) {
            None => s,
            Some(caps) => {
                let mut expanded = String::new();
                caps.expand(replacement, &mut expanded);
                let mut b = s.labels.builder();
                b.set(dst, &expanded);
                Sample {
                    labels: b.build(),
                    v: s.v,
                }
            }
        })
        .collect())
}

/// Labels `absent()` reports: the selector's equality matchers, minus names
/// matched more than once or by other operators.
fn absent_labels(arg: &Expr) -> Labels {
    let vs = match arg {
        Expr::VectorSelector(vs) => vs,
        Expr::MatrixSelector(ms) => &ms.vs,
        _ => return Labels::default(),
    };
    let mut pairs: Vec<(String, String)> = Vec::new();
    let mut dropped: Vec<String> = Vec::new();
    for m in &vs.matchers.matchers {
        if m.name == METRIC_NAME {
            continue;
        }
        if matches!(m.op, MatchOp::Equal) && !pairs.iter().any(|(n, _)| *n == m.name) {
            pairs.push((m.name.clone(), m.value.clone()));
        } else {
            dropped.push(m.name.clone());
        }
    }
    pairs.retain(|(n, _)| !dropped.contains(n));
    Labels::from_pairs(pairs)
}

fn histogram_quantile(q: f64, input: Vec<Sample>) -> Vec<Sample> {
    let mut groups: Vec<(Labels, Vec<(f64, f64)>)> = Vec::new();
    let mut index: std::collections::HashMap<Labels, usize> = Default::default();
    for s in input {
        let Ok(upper) = s.labels.get("le").parse::<f64>() else {
            continue;
        };
        let mut key = s.labels.builder();
        key.delete("le");
        let key = key.build();
        let i = match index.get(&key) {
            Some(&i) => i,
            None => {
                groups.push((key.without_metric_name(), Vec::new()));
                index.insert(key, groups.len() - 1);
                groups.len() - 1
            }
        };
        groups[i].1.push((upper, s.v));
    }
    groups
        .into_iter()
        .map(|(labels, mut buckets)| Sample {
            labels,
            v: bucket_quantile(q, &mut buckets),
        })
        .collect()
}

/// Prometheus 2.x's `bucketQuantile` over (upper bound, cumulative count).
fn bucket_quantile(q: f64, buckets: &mut [(f64, f64)]) -> f64 {
    if q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
    if !buckets.last().is_some_and(|b| b.0 == f64::INFINITY) {
        return f64::NAN;
    }
    // Buckets with the same bound (e.g. from two scrapes of renamed series) add up.
    let mut merged: Vec<(f64, f64)> = Vec::with_capacity(buckets.len());
    for &(upper, count) in buckets.iter() {
        match merged.last_mut() {
            Some(last) if last.0 == upper => last.1 += count,
            _ => merged.push((upper, count)),
        }
    }
    let mut max = f64::NEG_INFINITY;
    for b in merged.iter_mut() {
        if b.1 > max {
            max = b.1;
        } else if b.1 < max {
            b.1 = max;
        }
    }
    if merged.len() < 2 {
        return f64::NAN;
    }
    let observations = merged[merged.len() - 1].1;
    if observations == 0.0 {
        return f64::NAN;
    }
    let mut rank = q * observations;
    let n = merged.len() - 1;
    let b = merged[..n].partition_point(|b| b.1 < rank);
    if b == n {
        return merged[n - 1].0;
    }
    if b == 0 && merged[0].0 <= 0.0 {
        return merged[0].0;
    }
    let (mut start, end, mut count) = (0.0, merged[b].0, merged[b].1);
    if b > 0 {
        start = merged[b - 1].0;
        count -= merged[b - 1].1;
        rank -= merged[b - 1].1;
    }
    start + (end - start) * (rank / count)
}

/// Neumaier-compensated sum; returns (sum, compensation).
fn kahan(values: impl Iterator<Item = f64>) -> (f64, f64) {
    let (mut sum, mut c) = (0.0, 0.0);
    for v in values {
        (sum, c) = kahan_inc(v, sum, c);
    }
    (sum, c)
}

fn kahan_inc(inc: f64, sum: f64, c: f64) -> (f64, f64) {
    let t = sum + inc;
    let c = if sum.abs() >= inc.abs() {
        c + ((sum - t) + inc)
    } else {
        c + ((inc - t) + sum)
    };
    (t, c)
}

fn avg(points: &[Point]) -> f64 {
    let (mut mean, mut count, mut c) = (0.0f64, 0.0, 0.0);
    for p in points {
        count += 1.0;
        if mean.is_infinite() {
            if p.v.is_infinite() && (mean > 0.0) == (p.v > 0.0) {
                continue;
            }
            if !p.v.is_infinite() && !p.v.is_nan() {
                continue;
            }
        }
        (mean, c) = kahan_inc(p.v / count - mean / count, mean, c);
    }
    if mean.is_infinite() { mean } else { mean + c }
}

fn variance(points: &[Point]) -> f64 {
    let (mut count, mut mean, mut c_mean, mut aux, mut c_aux) = (0.0, 0.0, 0.0, 0.0, 0.0);
    for p in points {
        count += 1.0;
        let delta = p.v - (mean + c_mean);
        (mean, c_mean) = kahan_inc(delta / count, mean, c_mean);
        (aux, c_aux) = kahan_inc(delta * (p.v - (mean + c_mean)), aux, c_aux);
    }
    (aux + c_aux) / count
}

/// `rate`, `increase` and `delta`: Prometheus' extrapolation to the window edges.
fn extrapolated_rate(p: &[Point], ra: &RangeArg, is_counter: bool, is_rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (first, last) = (p[0], p[p.len() - 1]);
    let range_start = ra.end - ra.range_ms;
    let mut result = last.v - first.v;
    if is_counter {
        let mut previous = 0.0;
        for x in p {
            if x.v < previous {
                result += previous;
            }
            previous = x.v;
        }
    }
    let mut to_start = (first.t - range_start) as f64 / 1000.0;
    let to_end = (ra.end - last.t) as f64 / 1000.0;
    let sampled = (last.t - first.t) as f64 / 1000.0;
    let average_step = sampled / (p.len() - 1) as f64;
    if is_counter && result > 0.0 && first.v >= 0.0 {
        // A counter cannot go below zero: don't extrapolate past that point.
        let to_zero = sampled * (first.v / result);
        if to_zero < to_start {
            to_start = to_zero;
        }
    }
    let threshold = average_step * 1.1;
    let mut interval = sampled;
    interval += if to_start < threshold {
        to_start
    } else {
        average_step / 2.0
    };
    interval += if to_end < threshold {
        to_end
    } else {
        average_step / 2.0
    };
    result *= interval / sampled;
    if is_rate {
        result /= ra.range_ms as f64 / 1000.0;
    }
    Some(result)
}

/// `irate` and `idelta`: from the last two points.
fn instant_value(p: &[Point], is_rate: bool) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (previous, last) = (p[p.len() - 2], p[p.len() - 1]);
    let mut result = if is_rate && last.v < previous.v {
        last.v
    } else {
        last.v - previous.v
    };
    let interval = last.t - previous.t;
    if interval == 0 {
        return None;
    }
    if is_rate {
        result /= interval as f64 / 1000.0;
    }
    Some(result)
}

/// Least-squares slope and intercept at `intercept_time` (ms).
fn linear_regression(p: &[Point], intercept_time: i64) -> (f64, f64) {
    let init = p[0].v;
    if p.iter().all(|x| x.v == init) {
        return if init.is_infinite() {
            (f64::NAN, f64::NAN)
        } else {
            (0.0, init)
        };
    }
    let n = p.len() as f64;
    let (mut sx, mut cx, mut sy, mut cy, mut sxy, mut cxy, mut sx2, mut cx2) =
        (0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    for q in p {
        let x = (q.t - intercept_time) as f64 / 1000.0;
        (sx, cx) = kahan_inc(x, sx, cx);
        (sy, cy) = kahan_inc(q.v, sy, cy);
        (sxy, cxy) = kahan_inc(x * q.v, sxy, cxy);
        (sx2, cx2) = kahan_inc(x * x, sx2, cx2);
    }
    let (sx, sy, sxy, sx2) = (sx + cx, sy + cy, sxy + cxy, sx2 + cx2);
    let cov_xy = sxy - sx * sy / n;
    let var_x = sx2 - sx * sx / n;
    let slope = cov_xy / var_x;
    (slope, sy / n - slope * sx / n)
}

fn holt_winters(p: &[Point], sf: f64, tf: f64) -> Option<f64> {
    if p.len() < 2 {
        return None;
    }
    let (mut s0, mut s1, mut b) = (0.0, p[0].v, p[1].v - p[0].v);
    for (i, x) in p.iter().enumerate().skip(1) {
        if i > 1 {
            b = tf * (s1 - s0) + (1.0 - tf) * b;
        }
        let y = (1.0 - sf) * (s1 + b);
        (s0, s1) = (s1, sf * x.v + y);
    }
    Some(s1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_quantile_interpolates_like_prometheus() {
        let mut b = vec![
            (0.1, 10.0),
            (0.5, 50.0),
            (f64::INFINITY, 100.0),
            (1.0, 90.0),
        ];
        // rank 50 lands at the top of the 0.5 bucket.
        assert_eq!(bucket_quantile(0.5, &mut b.clone()), 0.5);
        // rank 95 is past the last finite bucket: its bound.
        assert_eq!(bucket_quantile(0.95, &mut b.clone()), 1.0);
        assert!((bucket_quantile(0.3, &mut b) - 0.3).abs() < 1e-12);
    }

    #[test]
    fn rate_extrapolates_to_the_window() {
        let p: Vec<Point> = (0..5)
            .map(|i| Point {
                t: 15_000 + i * 15_000,
                v: 10.0 * i as f64,
            })
            .collect();
        let ra = RangeArg {
            series: Vec::new(),
            range_ms: 75_000,
            end: 75_000,
        };
        // 40 over 60 s sampled, extended by 15 s at the start (to zero: 0 s) and 0 at the end.
        let rate = extrapolated_rate(&p, &ra, true, true).unwrap();
        assert!((rate - 40.0 / 60.0 * 60.0 / 75.0).abs() < 1e-12, "{rate}");
    }
}
