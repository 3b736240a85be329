//! Binary operators: arithmetic, comparison and set operators with vector
//! matching, following Prometheus 2.x's `VectorBinop`.

use super::eval::{Evaluator, check_unique};
use super::{Error, Sample, Value};
use crate::storage::{Labels, METRIC_NAME};
use promql_parser::parser::token::*;
use promql_parser::parser::{BinModifier, BinaryExpr, LabelModifier, VectorMatchCardinality};
use std::collections::{HashMap, HashSet};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Op {
    Add,
    Sub,
    Mul,
    Div,
    Mod,
    Pow,
    Atan2,
    Eq,
    Ne,
    Gt,
    Lt,
    Ge,
    Le,
    And,
    Or,
    Unless,
}

impl Op {
    fn from_token(id: TokenId) -> Result<Op, Error> {
        Ok(match id {
            T_ADD => Op::Add,
            T_SUB => Op::Sub,
            T_MUL => Op::Mul,
            T_DIV => Op::Div,
            T_MOD => Op::Mod,
            T_POW => Op::Pow,
            T_ATAN2 => Op::Atan2,
            T_EQLC => Op::Eq,
            T_NEQ => Op::Ne,
            T_GTR => Op::Gt,
            T_LSS => Op::Lt,
            T_GTE => Op::Ge,
            T_LTE => Op::Le,
            T_LAND => Op::And,
            T_LOR => Op::Or,
            T_LUNLESS => Op::Unless,
            other => {
                return Err(Error(format!(
                    "binary operator {} is not supported",
                    promql_parser::parser::token::TokenType::new(other)
                )));
            }
        })
    }

    fn is_comparison(self) -> bool {
        matches!(self, Op::Eq | Op::Ne | Op::Gt | Op::Lt | Op::Ge | Op::Le)
    }

    fn is_set(self) -> bool {
        matches!(self, Op::And | Op::Or | Op::Unless)
    }

    /// Result value and whether the element is kept (comparisons filter).
    fn apply(self, l: f64, r: f64) -> (f64, bool) {
        match self {
            Op::Add => (l + r, true),
            Op::Sub => (l - r, true),
            Op::Mul => (l * r, true),
            Op::Div => (l / r, true),
            Op::Mod => (l % r, true),
            Op::Pow => (l.powf(r), true),
            Op::Atan2 => (l.atan2(r), true),
            Op::Eq => (l, l == r),
            Op::Ne => (l, l != r),
            Op::Gt => (l, l > r),
            Op::Lt => (l, l < r),
            Op::Ge => (l, l >= r),
            Op::Le => (l, l <= r),
            Op::And | Op::Or | Op::Unless => unreachable!("set operators never reach apply"),
        }
    }
}

pub(super) fn eval(ev: &Evaluator, b: &BinaryExpr, t: i64) -> Result<Value, Error> {
    let op = Op::from_token(b.op.id())?;
    let return_bool = b.modifier.as_ref().is_some_and(|m| m.return_bool);
    let lhs = ev.eval(&b.lhs, t)?;
    let rhs = ev.eval(&b.rhs, t)?;
    let out = match (lhs, rhs) {
        (Value::Scalar(l), Value::Scalar(r)) => {
            let (v, keep) = op.apply(l, r);
            return Ok(Value::Scalar(if op.is_comparison() {
                if keep { 1.0 } else { 0.0 }
            } else {
                v
            }));
        }
        (Value::Vector(l), Value::Scalar(r)) => vector_scalar(op, l, r, false, return_bool),
        (Value::Scalar(l), Value::Vector(r)) => vector_scalar(op, r, l, true, return_bool),
        (Value::Vector(l), Value::Vector(r)) => {
            let default = BinModifier {
                card: if op.is_set() {
                    VectorMatchCardinality::ManyToMany
                } else {
                    VectorMatchCardinality::OneToOne
                },
                matching: None,
                return_bool: false,
                fill_values: Default::default(),
            };
            let modifier = b.modifier.as_ref().unwrap_or(&default);
            if modifier.fill_values.lhs.is_some() || modifier.fill_values.rhs.is_some() {
                return Err(Error(
                    "fill modifiers are experimental and not supported".into(),
                ));
            }
            let matching = Matching::new(modifier);
            match op {
                Op::And => and_unless(l, r, &matching, true),
                Op::Unless => and_unless(l, r, &matching, false),
                Op::Or => or(l, r, &matching),
                _ => vector_vector(op, l, r, &matching, &modifier.card, return_bool)?,
            }
        }
        (l, r) => {
            return Err(Error(format!(
                "binary expression must contain only scalar and instant vector types, got {} and {}",
                l.type_name(),
                r.type_name()
            )));
        }
    };
    check_unique(&out)?;
    Ok(Value::Vector(out))
}

/// Arithmetic drops the metric name; Prometheus 2.x keeps it for `atan2`.
fn drops_name(op: Op) -> bool {
    matches!(
        op,
        Op::Add | Op::Sub | Op::Mul | Op::Div | Op::Mod | Op::Pow
    )
}

fn vector_scalar(
    op: Op,
    vector: Vec<Sample>,
    scalar: f64,
    swap: bool,
    return_bool: bool,
) -> Vec<Sample> {
    let mut out = Vec::with_capacity(vector.len());
    for s in vector {
        let (l, r) = if swap { (scalar, s.v) } else { (s.v, scalar) };
        let (mut v, mut keep) = op.apply(l, r);
        // A comparison always yields the vector's value, even from the right side.
        if op.is_comparison() && swap {
            v = r;
        }
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
            keep = true;
        }
        if keep {
            let labels = if drops_name(op) || return_bool {
                s.labels.without_metric_name()
            } else {
                s.labels
            };
            out.push(Sample { labels, v });
        }
    }
    out
}

/// `on(...)` / `ignoring(...)` resolved once per operation.
struct Matching<'m> {
    on: bool,
    names: &'m [String],
}

impl<'m> Matching<'m> {
    fn new(modifier: &'m BinModifier) -> Self {
        match &modifier.matching {
            Some(LabelModifier::Include(l)) => Matching {
                on: true,
                names: &l.labels,
            },
            Some(LabelModifier::Exclude(l)) => Matching {
                on: false,
                names: &l.labels,
            },
            None => Matching {
                on: false,
                names: &[],
            },
        }
    }

    /// The match-group key: the `on` labels, or everything but the `ignoring`
    /// labels and the metric name.
    fn signature(&self, labels: &Labels) -> Vec<(String, String)> {
        labels
            .iter()
            .filter(|l| {
                let listed = self.names.contains(&l.name);
                if self.on {
                    listed
                } else {
                    !listed && l.name != METRIC_NAME
                }
            })
            .map(|l| (l.name.clone(), l.value.clone()))
            .collect()
    }

    fn matched_labels(&self, labels: &Labels) -> Labels {
        Labels::from_pairs(self.signature(labels))
    }
}

fn and_unless(lhs: Vec<Sample>, rhs: Vec<Sample>, m: &Matching, keep_matched: bool) -> Vec<Sample> {
    let right: HashSet<_> = rhs.iter().map(|s| m.signature(&s.labels)).collect();
    lhs.into_iter()
        .filter(|s| right.contains(&m.signature(&s.labels)) == keep_matched)
        .collect()
}

fn or(lhs: Vec<Sample>, rhs: Vec<Sample>, m: &Matching) -> Vec<Sample> {
    let left: HashSet<_> = lhs.iter().map(|s| m.signature(&s.labels)).collect();
    let mut out = lhs;
    out.extend(
        rhs.into_iter()
            .filter(|s| !left.contains(&m.signature(&s.labels))),
    );
    out
}

fn vector_vector(
    op: Op,
    lhs: Vec<Sample>,
    rhs: Vec<Sample>,
    m: &Matching,
    card: &VectorMatchCardinality,
    return_bool: bool,
) -> Result<Vec<Sample>, Error> {
    let (include, one_to_many): (&[String], bool) = match card {
        VectorMatchCardinality::ManyToOne(l) => (&l.labels, false),
        VectorMatchCardinality::OneToMany(l) => (&l.labels, true),
        _ => (&[], false),
    };
    let one_to_one = matches!(card, VectorMatchCardinality::OneToOne);
    // The "one" side goes to the right, as Prometheus swaps for group_right.
    let (many, one) = if one_to_many { (rhs, lhs) } else { (lhs, rhs) };
    let mut one_side: HashMap<Vec<(String, String)>, Sample> = HashMap::with_capacity(one.len());
    for s in one {
        let sig = m.signature(&s.labels);
        if let Some(dup) = one_side.get(&sig) {
            let side = if one_to_many { "left" } else { "right" };
            return Err(Error(format!(
                "found duplicate series for the match group {} on the {side} hand-side of the operation: [{}, {}];many-to-many matching not allowed: matching labels must be unique on one side",
                m.matched_labels(&s.labels),
                s.labels,
                dup.labels
            )));
        }
        one_side.insert(sig, s);
    }
    let mut matched: HashMap<Vec<(String, String)>, HashSet<Labels>> = HashMap::new();
    let mut out = Vec::new();
    for s in many {
        let sig = m.signature(&s.labels);
        let Some(r) = one_side.get(&sig) else {
            continue;
        };
        let (l, rv) = if one_to_many { (r.v, s.v) } else { (s.v, r.v) };
        let (mut v, keep) = op.apply(l, rv);
        if return_bool {
            v = if keep { 1.0 } else { 0.0 };
        } else if !keep {
            continue;
        }
        let mut b = s.labels.builder();
        if drops_name(op) || return_bool {
            b.delete(METRIC_NAME);
        }
        if one_to_one {
            if m.on {
                b.keep(m.names);
            } else {
                for n in m.names {
                    b.delete(n);
                }
            }
        }
        for name in include {
            b.set(name, r.labels.get(name));
        }
        let labels = b.build();
        let entry = matched.entry(sig);
        let exists = matches!(entry, std::collections::hash_map::Entry::Occupied(_));
        let inserted = entry.or_default();
        if one_to_one {
            if exists {
                return Err(Error("multiple matches for labels: many-to-one matching must be explicit (group_left/group_right)".into()));
            }
        } else if !inserted.insert(labels.clone()) {
            return Err(Error("multiple matches for matching labels; many-to-one matching must be explicit (group_left/group_right)".into()));
        }
        if one_to_one {
            inserted.insert(labels.clone());
        }
        out.push(Sample { labels, v });
    }
    Ok(out)
}
