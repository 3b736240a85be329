//! Executes parsed trees with Go's semantics: dot and variable scoping,
//! `range` over lists and maps with `else`, `break`/`continue`, lazy
//! `and`/`or`, method-like fields (`.Alerts.Firing`, `.Labels.SortedPairs`),
//! `{{template}}` calls, and limits on depth and output size.

use super::funcs::{self, FuncSet};
use super::html::Tracker;
use super::parse::{Arg, Branch, Command, Node, Pipe, Pos, Tree};
use super::value::{ListKind, MapKind, Struct, Value, format_go, print, sorted_pairs, time_string};
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

/// `{{template}}` calls nested deeper than this fail: a template calling
/// itself would otherwise exhaust the stack.
pub(super) const MAX_DEPTH: usize = 100;
/// One expansion may write at most this many bytes.
pub(super) const MAX_OUTPUT: usize = 4 << 20;

enum Flow {
    Normal,
    Break,
    Continue,
}

pub(super) struct Exec<'a> {
    pub defs: &'a BTreeMap<String, Arc<Tree>>,
    pub funcs: FuncSet,
    pub out: String,
    pub html: Option<Tracker>,
    depth: usize,
    vars: Vec<(String, Value)>,
    name: String,
    file: Arc<str>,
}

impl<'a> Exec<'a> {
    pub fn new(defs: &'a BTreeMap<String, Arc<Tree>>, funcs: FuncSet, html: bool) -> Exec<'a> {
        Exec {
            defs,
            funcs,
            out: String::new(),
            html: html.then(Tracker::default),
            depth: 0,
            vars: Vec::new(),
            name: String::new(),
            file: Arc::from(""),
        }
    }

    /// Runs `tree` with `dot`; `vars` are predeclared variables.
    pub fn run(
        &mut self,
        tree: &Tree,
        dot: &Value,
        vars: Vec<(String, Value)>,
    ) -> Result<(), String> {
        self.name = tree.name.clone();
        self.file = Arc::clone(&tree.file);
        self.vars = vec![("$".to_string(), dot.clone())];
        self.vars.extend(vars);
        self.list(&tree.root, dot)?;
        Ok(())
    }

    fn write(&mut self, text: &str) -> Result<(), String> {
        if self.out.len() + text.len() > MAX_OUTPUT {
            return Err(format!(
                "template: {}: output exceeds {} bytes; a template is expanding without bound",
                self.name, MAX_OUTPUT
            ));
        }
        self.out.push_str(text);
        Ok(())
    }

    fn at(&self, pos: &Pos, msg: String) -> String {
        format!(
            "template: {}:{}:{}: executing {:?} at <{}>: {msg}",
            self.file, pos.line, pos.col, self.name, pos.src
        )
    }

    fn list(&mut self, nodes: &[Node], dot: &Value) -> Result<Flow, String> {
        for node in nodes {
            match self.node(node, dot)? {
                Flow::Normal => {}
                flow => return Ok(flow),
            }
        }
        Ok(Flow::Normal)
    }

    fn node(&mut self, node: &Node, dot: &Value) -> Result<Flow, String> {
        match node {
            Node::Text(t) => {
                let text = match &mut self.html {
                    Some(tracker) => tracker.text(t),
                    None => t.clone(),
                };
                self.write(&text)?;
            }
            Node::Action(pipe) => {
                let v = self.pipe(pipe, dot)?;
                if pipe.decl.is_empty() {
                    let text = match &mut self.html {
                        Some(tracker) => {
                            let escaped_by = pipe.cmds.last().and_then(|c| match c.args.first() {
                                Some(Arg::Function(f)) => Some(f.as_str()),
                                _ => None,
                            });
                            tracker
                                .action(&v, escaped_by)
                                .map_err(|e| self.at(&pipe.pos, e))?
                        }
                        None => print(&v),
                    };
                    self.write(&text)?;
                }
            }
            Node::If(b) | Node::With(b) => {
                let mark = self.vars.len();
                let v = self.pipe(&b.pipe, dot)?;
                let flow = if v.truthy() {
                    let inner = if matches!(node, Node::With(_)) {
                        &v
                    } else {
                        dot
                    };
                    self.list(&b.list, inner)?
                } else {
                    self.list(&b.else_list, dot)?
                };
                self.vars.truncate(mark);
                return Ok(flow);
            }
            Node::Range(b) => return self.range(b, dot),
            Node::Template { pos, name, pipe } => {
                let tree = self
                    .defs
                    .get(name)
                    .cloned()
                    .ok_or_else(|| self.at(pos, format!("template {name:?} not defined")))?;
                let new_dot = match pipe {
                    Some(p) => self.pipe(p, dot)?,
                    None => Value::Nil,
                };
                if self.depth >= MAX_DEPTH {
                    return Err(self.at(
                        pos,
                        format!("exceeded maximum template depth ({MAX_DEPTH})"),
                    ));
                }
                self.depth += 1;
                let vars =
                    std::mem::replace(&mut self.vars, vec![("$".to_string(), new_dot.clone())]);
                let caller = std::mem::replace(&mut self.name, tree.name.clone());
                let caller_file = std::mem::replace(&mut self.file, Arc::clone(&tree.file));
                let result = self.list(&tree.root, &new_dot);
                self.name = caller;
                self.file = caller_file;
                self.vars = vars;
                self.depth -= 1;
                result?;
            }
            Node::Break => return Ok(Flow::Break),
            Node::Continue => return Ok(Flow::Continue),
        }
        Ok(Flow::Normal)
    }

    fn range(&mut self, b: &Branch, dot: &Value) -> Result<Flow, String> {
        let mark = self.vars.len();
        let v = self.pipe_value(&b.pipe, dot)?;
        let items: Vec<(Value, Value)> = match &v {
            Value::List(_, l) => l
                .iter()
                .enumerate()
                .map(|(i, e)| (Value::Int(i as i64), e.clone()))
                .collect(),
            Value::Map(_, m) => m
                .iter()
                .map(|(k, e)| (Value::str(k), Value::str(e)))
                .collect(),
            // A nil value ranges over nothing, as Go treats an invalid value.
            Value::Nil => Vec::new(),
            other => {
                return Err(self.at(
                    &b.pipe.pos,
                    format!("range can't iterate over {}", print(other)),
                ));
            }
        };
        if items.is_empty() {
            let flow = self.list(&b.else_list, dot)?;
            self.vars.truncate(mark);
            return Ok(flow);
        }
        for (key, elem) in items {
            match b.pipe.decl.as_slice() {
                [] => {}
                [e] => self.declare(e, elem.clone(), b.pipe.is_assign),
                [k, e, ..] => {
                    self.declare(k, key, b.pipe.is_assign);
                    self.declare(e, elem.clone(), b.pipe.is_assign);
                }
            }
            let flow = self.list(&b.list, &elem)?;
            self.vars.truncate(mark);
            if matches!(flow, Flow::Break) {
                break;
            }
        }
        Ok(Flow::Normal)
    }

    fn declare(&mut self, name: &str, v: Value, assign: bool) {
        if assign && let Some(slot) = self.vars.iter_mut().rev().find(|(n, _)| n == name) {
            slot.1 = v;
            return;
        }
        self.vars.push((name.to_string(), v));
    }

    /// Evaluates a pipeline and binds its declared variables to the result.
    fn pipe(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value, String> {
        let v = self.pipe_value(pipe, dot)?;
        for name in &pipe.decl {
            self.declare(name, v.clone(), pipe.is_assign);
        }
        Ok(v)
    }

    fn pipe_value(&mut self, pipe: &Pipe, dot: &Value) -> Result<Value, String> {
        let mut last: Option<Value> = None;
        for cmd in &pipe.cmds {
            last = Some(self.command(cmd, dot, last.take()).map_err(|e| {
                if e.starts_with("template: ") {
                    e
                } else {
                    self.at(&pipe.pos, e)
                }
            })?);
        }
        Ok(last.unwrap_or(Value::Nil))
    }

    fn command(
        &mut self,
        cmd: &Command,
        dot: &Value,
        last: Option<Value>,
    ) -> Result<Value, String> {
        let (first, args) = cmd.args.split_first().ok_or("empty command")?;
        match first {
            Arg::Field(path) => self.chain(dot.clone(), path, args, dot, last),
            Arg::Chain(inner, path) => {
                let receiver = self.arg(inner, dot)?;
                self.chain(receiver, path, args, dot, last)
            }
            Arg::Variable(name, path) => {
                let v = self.var(name)?;
                if path.is_empty() {
                    not_function(name, args, &last)?;
                    Ok(v)
                } else {
                    self.chain(v, path, args, dot, last)
                }
            }
            Arg::Function(name) => self.function(name, args, dot, last),
            Arg::Nil => Err("nil is not a command".into()),
            other => {
                let v = self.arg(other, dot)?;
                not_function(&print(&v), args, &last)?;
                Ok(v)
            }
        }
    }

    fn function(
        &mut self,
        name: &str,
        args: &[Arg],
        dot: &Value,
        last: Option<Value>,
    ) -> Result<Value, String> {
        if name == "and" || name == "or" {
            if args.is_empty() && last.is_none() {
                return Err(format!(
                    "wrong number of args for {name}: want at least 1 got 0"
                ));
            }
            let stop_when = name == "or";
            let mut v = Value::Nil;
            for a in args {
                v = self.arg(a, dot)?;
                if v.truthy() == stop_when {
                    return Ok(v);
                }
            }
            return Ok(last.unwrap_or(v));
        }
        let mut values = Vec::with_capacity(args.len() + 1);
        for a in args {
            values.push(self.arg(a, dot)?);
        }
        values.extend(last);
        funcs::call(self.funcs, name, &values).map_err(|e| {
            if e.starts_with("wrong number of args") || e.starts_with("wrong type") {
                e
            } else {
                format!("error calling {name}: {e}")
            }
        })
    }

    fn var(&self, name: &str) -> Result<Value, String> {
        self.vars
            .iter()
            .rev()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone())
            .ok_or_else(|| format!("undefined variable: {name}"))
    }

    fn arg(&mut self, arg: &Arg, dot: &Value) -> Result<Value, String> {
        Ok(match arg {
            Arg::Field(path) => self.chain(dot.clone(), path, &[], dot, None)?,
            Arg::Chain(inner, path) => {
                let receiver = self.arg(inner, dot)?;
                self.chain(receiver, path, &[], dot, None)?
            }
            Arg::Variable(name, path) => {
                let v = self.var(name)?;
                self.chain(v, path, &[], dot, None)?
            }
            Arg::Dot => dot.clone(),
            Arg::Nil => Value::Nil,
            Arg::Bool(b) => Value::Bool(*b),
            Arg::Int(i) => Value::Int(*i),
            Arg::Float(f) => Value::Float(*f),
            Arg::Str(s) => Value::str(s),
            Arg::Function(name) => self.function(name, &[], dot, None)?,
            Arg::Pipe(p) => self.pipe(p, dot)?,
        })
    }

    /// `.A.B.C`: every field but the last takes no arguments; the last gets
    /// the command's arguments (a method call such as `.Labels.Remove $names`).
    fn chain(
        &mut self,
        mut receiver: Value,
        path: &[String],
        args: &[Arg],
        dot: &Value,
        last: Option<Value>,
    ) -> Result<Value, String> {
        let Some((final_name, init)) = path.split_last() else {
            return Ok(receiver);
        };
        for name in init {
            receiver = self.field(&receiver, name, &[], dot, None)?;
        }
        self.field(&receiver, final_name, args, dot, last)
    }

    fn field(
        &mut self,
        receiver: &Value,
        name: &str,
        args: &[Arg],
        dot: &Value,
        last: Option<Value>,
    ) -> Result<Value, String> {
        if has_method(receiver, name) {
            let mut values = Vec::with_capacity(args.len() + 1);
            for a in args {
                values.push(self.arg(a, dot)?);
            }
            values.extend(last);
            return method(receiver, name, &values);
        }
        if !args.is_empty() || last.is_some() {
            return Err(format!(
                "{name} has arguments but cannot be invoked as function"
            ));
        }
        match receiver {
            Value::Struct(s) => s
                .fields
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("can't evaluate field {name} in type {}", s.type_name)),
            // missingkey=zero: a missing key is the element type's zero value.
            Value::Map(_, m) => Ok(Value::str(m.get(name).map_or("", String::as_str))),
            Value::Nil => Ok(Value::Nil),
            other => Err(format!(
                "can't evaluate field {name} in type {}",
                other.type_name()
            )),
        }
    }
}

fn not_function(what: &str, args: &[Arg], last: &Option<Value>) -> Result<(), String> {
    if args.is_empty() && last.is_none() {
        Ok(())
    } else {
        Err(format!("can't give argument to non-function {what}"))
    }
}

fn has_method(v: &Value, name: &str) -> bool {
    let methods: &[&str] = match v {
        Value::Map(MapKind::Kv, _) => &["SortedPairs", "Names", "Values", "Remove"],
        Value::List(ListKind::Pairs, _) => &["Names", "Values"],
        Value::List(ListKind::Alerts, _) => &["Firing", "Resolved"],
        Value::Time(_) => &[
            "Format",
            "Unix",
            "UnixMilli",
            "UnixNano",
            "UTC",
            "IsZero",
            "String",
        ],
        Value::Duration(_) => &["Seconds", "Minutes", "Hours", "Milliseconds", "String"],
        _ => &[],
    };
    methods.contains(&name)
}

fn method(v: &Value, name: &str, args: &[Value]) -> Result<Value, String> {
    let want = usize::from(matches!(name, "Remove" | "Format"));
    if args.len() != want {
        return Err(format!(
            "wrong number of args for {name}: want {want} got {}",
            args.len()
        ));
    }
    let strings = |items: Vec<&str>| {
        Value::List(
            ListKind::Strings,
            items.into_iter().map(Value::str).collect(),
        )
    };
    Ok(match (v, name) {
        (Value::Map(_, m), "SortedPairs") => pairs(sorted_pairs(m)),
        (Value::Map(_, m), "Names") => strings(sorted_pairs(m).into_iter().map(|p| p.0).collect()),
        (Value::Map(_, m), "Values") => strings(sorted_pairs(m).into_iter().map(|p| p.1).collect()),
        (Value::Map(_, m), "Remove") => {
            let Value::List(ListKind::Strings, names) = &args[0] else {
                return Err(format!(
                    "wrong type for value; expected []string; got {}",
                    args[0].type_name()
                ));
            };
            let mut rest = (**m).clone();
            for n in names.iter().filter_map(Value::as_str) {
                rest.remove(n);
            }
            funcs::kv(rest)
        }
        (Value::List(_, items), "Names" | "Values") => {
            let index = usize::from(name == "Values");
            Value::List(
                ListKind::Strings,
                items
                    .iter()
                    .map(|p| match p {
                        Value::Struct(s) => s.fields[index].1.clone(),
                        other => other.clone(),
                    })
                    .collect(),
            )
        }
        (Value::List(_, items), "Firing" | "Resolved") => {
            let want = if name == "Firing" {
                "firing"
            } else {
                "resolved"
            };
            Value::List(
                ListKind::AlertSlice,
                items
                    .iter()
                    .filter(|a| match a {
                        Value::Struct(s) => s
                            .fields
                            .first()
                            .is_some_and(|(_, v)| v.as_str() == Some(want)),
                        _ => false,
                    })
                    .cloned()
                    .collect(),
            )
        }
        (Value::Time(t), "Format") => {
            let layout = args[0].as_str().ok_or_else(|| {
                format!(
                    "wrong type for value; expected string; got {}",
                    args[0].type_name()
                )
            })?;
            Value::str(&format_go(t, layout))
        }
        (Value::Time(t), "Unix") => Value::Int(t.timestamp()),
        (Value::Time(t), "UnixMilli") => Value::Int(t.timestamp_millis()),
        (Value::Time(t), "UnixNano") => Value::Int(t.timestamp_nanos_opt().unwrap_or_default()),
        (Value::Time(t), "UTC") => Value::Time(t.with_timezone(&chrono_tz::Tz::UTC)),
        (Value::Time(t), "IsZero") => Value::Bool(*t == super::value::zero_time()),
        (Value::Time(t), "String") => Value::str(&time_string(t)),
        (Value::Duration(d), "Seconds") => Value::Float(*d as f64 / 1e9),
        (Value::Duration(d), "Minutes") => Value::Float(*d as f64 / 6e10),
        (Value::Duration(d), "Hours") => Value::Float(*d as f64 / 3.6e12),
        (Value::Duration(d), "Milliseconds") => Value::Int(d / 1_000_000),
        (other, _) => {
            return Err(format!(
                "can't evaluate field {name} in type {}",
                other.type_name()
            ));
        }
    })
}

/// `template.Pairs` from name/value pairs.
fn pairs(items: Vec<(&str, &str)>) -> Value {
    Value::List(
        ListKind::Pairs,
        items
            .into_iter()
            .map(|(n, v)| {
                Value::Struct(Rc::new(Struct {
                    type_name: "template.Pair",
                    fields: vec![("Name", Value::str(n)), ("Value", Value::str(v))],
                }))
            })
            .collect(),
    )
}
