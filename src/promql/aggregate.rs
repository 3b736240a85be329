//! Aggregation operators, following Prometheus 2.x's `aggregation`.

use super::eval::Evaluator;
use super::{Error, Sample, Value};
use crate::storage::{Labels, METRIC_NAME, is_valid_label_name};
use promql_parser::parser::token::*;
use promql_parser::parser::{AggregateExpr, LabelModifier};
use std::collections::HashMap;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Sum,
    Avg,
    Min,
    Max,
    Count,
    Group,
    Stddev,
    Stdvar,
    TopK,
    BottomK,
    Quantile,
    CountValues,
}

struct Group {
    labels: Labels,
    value: f64,
    mean: f64,
    count: f64,
    members: Vec<Sample>,
}

pub(super) fn eval(ev: &Evaluator, a: &AggregateExpr, t: i64) -> Result<Value, Error> {
    let op = match a.op.id() {
        T_SUM => Op::Sum,
        T_AVG => Op::Avg,
        T_MIN => Op::Min,
        T_MAX => Op::Max,
        T_COUNT => Op::Count,
        T_GROUP => Op::Group,
        T_STDDEV => Op::Stddev,
        T_STDVAR => Op::Stdvar,
        T_TOPK => Op::TopK,
        T_BOTTOMK => Op::BottomK,
        T_QUANTILE => Op::Quantile,
        T_COUNT_VALUES => Op::CountValues,
        other => {
            return Err(Error(format!(
                "aggregation {} is not supported",
                promql_parser::parser::token::TokenType::new(other)
            )));
        }
    };
    let (without, mut grouping): (bool, Vec<String>) = match &a.modifier {
        Some(LabelModifier::Include(l)) => (false, l.labels.clone()),
        Some(LabelModifier::Exclude(l)) => (true, l.labels.clone()),
        None => (false, Vec::new()),
    };
    let mut k = 0usize;
    let mut q = 0.0;
    let mut value_label = String::new();
    if let Some(param) = &a.param {
        match op {
            Op::TopK | Op::BottomK => {
                let f = ev.eval_scalar(param, t)?;
                if !(f > -9.223_372_036_854_776e18 && f < 9.223_372_036_854_776e18) {
                    return Err(Error(format!("Scalar value {f} overflows int64")));
                }
                if f < 1.0 {
                    return Ok(Value::Vector(Vec::new()));
                }
                k = f as usize;
            }
            Op::Quantile => q = ev.eval_scalar(param, t)?,
            Op::CountValues => {
                value_label = match ev.eval(param, t)? {
                    Value::String(s) => s,
                    other => {
                        return Err(Error(format!(
                            "expected string parameter, got {}",
                            other.type_name()
                        )));
                    }
                };
                if !is_valid_label_name(&value_label) {
                    return Err(Error(format!("invalid label name {value_label:?}")));
                }
                if !without {
                    grouping.push(value_label.clone());
                }
            }
            _ => {}
        }
    }
    let input = ev.eval_vector(&a.expr, t)?;
    let mut groups: Vec<Group> = Vec::new();
    let mut index: HashMap<Vec<(String, String)>, usize> = HashMap::new();
    for mut s in input {
        if op == Op::CountValues {
            let mut b = s.labels.builder();
            b.set(&value_label, &crate::gofmt::plain(s.v));
            s.labels = b.build();
        }
        let key: Vec<(String, String)> = s
            .labels
            .iter()
            .filter(|l| {
                let listed = grouping.contains(&l.name);
                if without {
                    !listed && l.name != METRIC_NAME
                } else {
                    listed
                }
            })
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect();
        let Some(&gi) = index.get(&key) else {
            let labels = if without {
                let mut b = s.labels.builder();
                for n in &grouping {
                    b.delete(n);
                }
                b.delete(METRIC_NAME);
                b.build()
            } else {
                Labels::from_pairs(key.iter().cloned())
            };
            index.insert(key, groups.len());
            groups.push(Group {
                labels,
                value: match op {
                    Op::Stddev | Op::Stdvar => 0.0,
                    Op::Group => 1.0,
                    _ => s.v,
                },
                mean: s.v,
                count: 1.0,
                members: if matches!(op, Op::TopK | Op::BottomK | Op::Quantile) {
                    vec![s]
                } else {
                    Vec::new()
                },
            });
            continue;
        };
        let g = &mut groups[gi];
        match op {
            Op::Sum => g.value += s.v,
            Op::Avg => {
                g.count += 1.0;
                if g.mean.is_infinite() {
                    if s.v.is_infinite() && (g.mean > 0.0) == (s.v > 0.0) {
                        continue;
                    }
                    if !s.v.is_infinite() && !s.v.is_nan() {
                        continue;
                    }
                }
                // Dividing each term first avoids overflow, as Prometheus does.
                g.mean += s.v / g.count - g.mean / g.count;
            }
            Op::Group => {}
            Op::Max => {
                if g.value < s.v || g.value.is_nan() {
                    g.value = s.v;
                }
            }
            Op::Min => {
                if g.value > s.v || g.value.is_nan() {
                    g.value = s.v;
                }
            }
            Op::Count | Op::CountValues => g.count += 1.0,
            Op::Stddev | Op::Stdvar => {
                g.count += 1.0;
                let delta = s.v - g.mean;
                g.mean += delta / g.count;
                g.value += delta * (s.v - g.mean);
            }
            Op::TopK | Op::BottomK | Op::Quantile => g.members.push(s),
        }
    }
    let mut out = Vec::with_capacity(groups.len());
    for mut g in groups {
        let v = match op {
            Op::Avg => g.mean,
            Op::Count | Op::CountValues => g.count,
            Op::Stdvar => g.value / g.count,
            Op::Stddev => (g.value / g.count).sqrt(),
            Op::Quantile => {
                let mut values: Vec<f64> = g.members.iter().map(|s| s.v).collect();
                quantile(q, &mut values)
            }
            Op::TopK | Op::BottomK => {
                // NaN ranks below every number for both, as in Prometheus' heaps.
                let top = op == Op::TopK;
                g.members.sort_by(|a, b| {
                    let (a, b) = (a.v, b.v);
                    match (a.is_nan(), b.is_nan()) {
                        (true, true) => std::cmp::Ordering::Equal,
                        (true, false) => std::cmp::Ordering::Greater,
                        (false, true) => std::cmp::Ordering::Less,
                        _ if top => b.total_cmp(&a),
                        _ => a.total_cmp(&b),
                    }
                });
                g.members.truncate(k);
                out.extend(g.members);
                continue;
            }
            _ => g.value,
        };
        out.push(Sample {
            labels: g.labels,
            v,
        });
    }
    Ok(Value::Vector(out))
}

/// Prometheus' `quantile`: linear interpolation between the closest ranks.
pub(super) fn quantile(q: f64, values: &mut [f64]) -> f64 {
    if values.is_empty() || q.is_nan() {
        return f64::NAN;
    }
    if q < 0.0 {
        return f64::NEG_INFINITY;
    }
    if q > 1.0 {
        return f64::INFINITY;
    }
    // Go sorts NaN first (its Less treats NaN as smallest).
    values.sort_by(|a, b| match (a.is_nan(), b.is_nan()) {
        (true, true) => std::cmp::Ordering::Equal,
        (true, false) => std::cmp::Ordering::Less,
        (false, true) => std::cmp::Ordering::Greater,
        _ => a.total_cmp(b),
    });
    let n = values.len() as f64;
    let rank = q * (n - 1.0);
    let lower = rank.floor().max(0.0);
    let upper = (lower + 1.0).min(n - 1.0);
    let weight = rank - rank.floor();
    values[lower as usize] * (1.0 - weight) + values[upper as usize] * weight
}
