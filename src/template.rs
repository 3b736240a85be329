//! The part of Go's text/template that Prometheus rule files use: `{{ $labels.x }}`,
//! `{{ $value | humanize }}`, `printf`, `if`/`else`/`end`, variables, trim markers.
//! Parsing is separate from execution so `rules check` reports syntax errors.

use crate::gofmt;
use std::collections::BTreeMap;
use std::fmt::Write as _;

/// Data an alert template sees.
pub struct AlertData<'a> {
    /// `$labels` / `.Labels`.
    pub labels: &'a BTreeMap<String, String>,
    /// `$externalLabels` / `.ExternalLabels`.
    pub external_labels: &'a BTreeMap<String, String>,
    /// `$externalURL` / `.ExternalURL`.
    pub external_url: &'a str,
    /// `$value` / `.Value`.
    pub value: f64,
}

/// A parsed template.
#[derive(Debug, Clone)]
pub struct Template {
    nodes: Vec<Node>,
}

#[derive(Debug, Clone)]
enum Node {
    Text(String),
    Action(Pipeline),
    If {
        cond: Pipeline,
        then: Vec<Node>,
        otherwise: Vec<Node>,
    },
}

#[derive(Debug, Clone)]
struct Pipeline {
    declare: Option<String>,
    commands: Vec<Vec<Operand>>,
}

#[derive(Debug, Clone)]
enum Operand {
    /// `$name.field.field`
    Variable(String, Vec<String>),
    /// `.Field.field` (`.` alone: empty path)
    Field(Vec<String>),
    Str(String),
    Number(f64),
    Bool(bool),
    Function(String),
    Sub(Box<Pipeline>),
}

/// A value during execution.
#[derive(Debug, Clone, PartialEq)]
enum Val {
    Str(String),
    Num(f64),
    Bool(bool),
    Map(BTreeMap<String, String>),
    Nil,
}

const FUNCTIONS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "printf",
    "toUpper",
    "toLower",
    "title",
    "reReplaceAll",
    "match",
    "stripPort",
    "stripDomain",
    "not",
    "and",
    "or",
    "eq",
    "ne",
    "lt",
    "le",
    "gt",
    "ge",
    "len",
    "index",
    "print",
    "println",
];

impl Template {
    /// Parses template text; the error says what is wrong, Go-style.
    pub fn parse(text: &str) -> Result<Template, String> {
        let tokens = split(text)?;
        let mut pos = 0;
        let (nodes, end) = parse_nodes(&tokens, &mut pos)?;
        if let Some(end) = end {
            return Err(format!("unexpected {{{{{end}}}}}"));
        }
        Ok(Template { nodes })
    }

    /// Expands the template for one alert.
    pub fn expand(&self, data: &AlertData) -> Result<String, String> {
        let fields: Vec<(&str, Val)> = vec![
            ("Labels", Val::Map(data.labels.clone())),
            ("ExternalLabels", Val::Map(data.external_labels.clone())),
            ("ExternalURL", Val::Str(data.external_url.into())),
            ("Value", Val::Num(data.value)),
        ];
        // Prometheus defines these shorthands before every alert template.
        let mut vars: Vec<(String, Val)> = fields
            .iter()
            .map(|(name, v)| {
                let var = match *name {
                    "Labels" => "$labels",
                    "ExternalLabels" => "$externalLabels",
                    "ExternalURL" => "$externalURL",
                    _ => "$value",
                };
                (var.to_string(), v.clone())
            })
            .collect();
        let mut out = String::new();
        exec(&self.nodes, &fields, &mut vars, &mut out)?;
        Ok(out)
    }

    /// Expands the template for one notification (Alertmanager's data model:
    /// `.Status`, `.Receiver`, `.GroupLabels`, `.CommonLabels`,
    /// `.CommonAnnotations`, `.ExternalURL`).
    pub fn expand_notification(&self, data: &NotificationData) -> Result<String, String> {
        let fields: Vec<(&str, Val)> = vec![
            ("Status", Val::Str(data.status.into())),
            ("Receiver", Val::Str(data.receiver.into())),
            ("GroupLabels", Val::Map(data.group_labels.clone())),
            ("CommonLabels", Val::Map(data.common_labels.clone())),
            (
                "CommonAnnotations",
                Val::Map(data.common_annotations.clone()),
            ),
            ("ExternalURL", Val::Str(data.external_url.into())),
        ];
        let mut out = String::new();
        exec(&self.nodes, &fields, &mut Vec::new(), &mut out)?;
        Ok(out)
    }
}

/// What a notification template sees.
pub struct NotificationData<'a> {
    /// `firing` or `resolved`.
    pub status: &'a str,
    /// Receiver name.
    pub receiver: &'a str,
    /// The group's labels.
    pub group_labels: BTreeMap<String, String>,
    /// Labels all alerts share.
    pub common_labels: BTreeMap<String, String>,
    /// Annotations all alerts share.
    pub common_annotations: BTreeMap<String, String>,
    /// torchwatch's URL.
    pub external_url: &'a str,
}

/// Like [`expand_or_error`] for a notification template.
pub fn expand_notification_or_error(text: &str, data: &NotificationData) -> String {
    match Template::parse(text).and_then(|t| t.expand_notification(data)) {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

/// Expands `text` once; a parse or execution error is rendered the way
/// Prometheus renders it, so one bad template never fails an evaluation.
pub fn expand_or_error(text: &str, data: &AlertData) -> String {
    if !text.contains("{{") {
        return text.to_string();
    }
    match Template::parse(text).and_then(|t| t.expand(data)) {
        Ok(s) => s,
        Err(e) => format!("<error expanding template: {e}>"),
    }
}

enum Token {
    Text(String),
    Action(String),
}

fn split(text: &str) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut rest = text;
    let mut trim_next_text = false;
    while let Some(start) = rest.find("{{") {
        let mut before = &rest[..start];
        if trim_next_text {
            before = before.trim_start();
        }
        let after = &rest[start + 2..];
        let trim_before =
            after.starts_with("- ") || after.starts_with("-\t") || after.starts_with("-\n");
        if trim_before {
            before = before.trim_end();
        }
        if !before.is_empty() {
            tokens.push(Token::Text(before.to_string()));
        }
        let end = after
            .find("}}")
            .ok_or_else(|| "unclosed action".to_string())?;
        let mut inner = &after[..end];
        if trim_before {
            inner = &inner[1..];
        }
        trim_next_text = inner.ends_with(" -") || inner.ends_with("\t-") || inner.ends_with("\n-");
        if trim_next_text {
            inner = &inner[..inner.len() - 1];
        }
        let inner = inner.trim();
        if !(inner.starts_with("/*") && inner.ends_with("*/")) {
            tokens.push(Token::Action(inner.to_string()));
        }
        rest = &after[end + 2..];
    }
    let last = if trim_next_text {
        rest.trim_start()
    } else {
        rest
    };
    if !last.is_empty() {
        tokens.push(Token::Text(last.to_string()));
    }
    Ok(tokens)
}

/// Parses until `{{end}}`/`{{else}}` (returned) or the end of input.
fn parse_nodes(tokens: &[Token], pos: &mut usize) -> Result<(Vec<Node>, Option<String>), String> {
    let mut nodes = Vec::new();
    while *pos < tokens.len() {
        let token = &tokens[*pos];
        *pos += 1;
        match token {
            Token::Text(t) => nodes.push(Node::Text(t.clone())),
            Token::Action(a) => {
                let word = a.split_whitespace().next().unwrap_or("");
                match word {
                    "end" | "else" => return Ok((nodes, Some(a.clone()))),
                    "if" => nodes.push(parse_if(&a[2..], tokens, pos)?),
                    "range" | "with" | "define" | "template" | "block" | "break" | "continue" => {
                        return Err(format!(
                            "{{{{{word}}}}} is not supported in torchwatch templates"
                        ));
                    }
                    "" => return Err("missing value for command".into()),
                    _ => nodes.push(Node::Action(parse_pipeline(a)?)),
                }
            }
        }
    }
    Ok((nodes, None))
}

fn parse_if(cond: &str, tokens: &[Token], pos: &mut usize) -> Result<Node, String> {
    let cond = parse_pipeline(cond)?;
    let (then, end) = parse_nodes(tokens, pos)?;
    let otherwise = match end.as_deref() {
        Some("end") => Vec::new(),
        Some("else") => {
            let (otherwise, end) = parse_nodes(tokens, pos)?;
            if end.as_deref() != Some("end") {
                return Err("expected {{end}} after {{else}}".into());
            }
            otherwise
        }
        Some(other) if other.starts_with("else if ") => {
            vec![parse_if(&other[7..], tokens, pos)?]
        }
        _ => return Err("unexpected EOF: {{if}} without {{end}}".into()),
    };
    Ok(Node::If {
        cond,
        then,
        otherwise,
    })
}

fn parse_pipeline(text: &str) -> Result<Pipeline, String> {
    let mut words = lex_words(text)?;
    let mut declare = None;
    if words.len() >= 2 && words[0].starts_with('$') && (words[1] == ":=" || words[1] == "=") {
        declare = Some(words[0].clone());
        words.drain(..2);
    }
    let mut commands = vec![Vec::new()];
    let mut i = 0;
    while i < words.len() {
        let w = &words[i];
        if w == "|" {
            commands.push(Vec::new());
        } else if w == "(" {
            let mut depth = 1;
            let start = i + 1;
            while depth > 0 {
                i += 1;
                match words.get(i).map(String::as_str) {
                    Some("(") => depth += 1,
                    Some(")") => depth -= 1,
                    None => return Err("unclosed left paren".into()),
                    _ => {}
                }
            }
            let inner = words[start..i].join(" ");
            if let Some(cmd) = commands.last_mut() {
                cmd.push(Operand::Sub(Box::new(parse_pipeline(&inner)?)));
            }
        } else if let Some(cmd) = commands.last_mut() {
            cmd.push(parse_operand(w)?);
        }
        i += 1;
    }
    if commands.iter().any(|c| c.is_empty()) {
        return Err("missing value for command".into());
    }
    Ok(Pipeline { declare, commands })
}

fn lex_words(text: &str) -> Result<Vec<String>, String> {
    let mut words = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '"' || c == '`' {
            let start = i;
            i += 1;
            while i < chars.len() && chars[i] != c {
                if c == '"' && chars[i] == '\\' {
                    i += 1;
                }
                i += 1;
            }
            if i >= chars.len() {
                return Err("unterminated quoted string".into());
            }
            i += 1;
            words.push(chars[start..i].iter().collect());
        } else if c == '|' || c == '(' || c == ')' {
            words.push(c.to_string());
            i += 1;
        } else {
            let start = i;
            while i < chars.len() && !chars[i].is_whitespace() && !"|()".contains(chars[i]) {
                i += 1;
            }
            words.push(chars[start..i].iter().collect());
        }
    }
    Ok(words)
}

fn parse_operand(w: &str) -> Result<Operand, String> {
    if let Some(body) = w.strip_prefix('"') {
        let body = body.strip_suffix('"').unwrap_or(body);
        return Ok(Operand::Str(unescape(body)));
    }
    if let Some(body) = w.strip_prefix('`') {
        return Ok(Operand::Str(body.trim_end_matches('`').to_string()));
    }
    if w.starts_with('$') {
        let mut parts = w.split('.');
        let name = parts.next().unwrap_or_default().to_string();
        return Ok(Operand::Variable(name, parts.map(str::to_string).collect()));
    }
    if let Some(path) = w.strip_prefix('.') {
        if path.is_empty() {
            return Ok(Operand::Field(Vec::new()));
        }
        return Ok(Operand::Field(
            path.split('.').map(str::to_string).collect(),
        ));
    }
    if w == "true" || w == "false" {
        return Ok(Operand::Bool(w == "true"));
    }
    if let Ok(n) = w.parse::<f64>() {
        return Ok(Operand::Number(n));
    }
    if FUNCTIONS.contains(&w) {
        return Ok(Operand::Function(w.to_string()));
    }
    Err(format!("function {w:?} not defined"))
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some('n') => out.push('\n'),
                Some('t') => out.push('\t'),
                Some(other) => out.push(other),
                None => {}
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn exec(
    nodes: &[Node],
    data: &[(&str, Val)],
    vars: &mut Vec<(String, Val)>,
    out: &mut String,
) -> Result<(), String> {
    for node in nodes {
        match node {
            Node::Text(t) => out.push_str(t),
            Node::Action(p) => {
                let v = eval_pipeline(p, data, vars)?;
                if p.declare.is_none() {
                    out.push_str(&print(&v));
                }
            }
            Node::If {
                cond,
                then,
                otherwise,
            } => {
                let v = eval_pipeline(cond, data, vars)?;
                let depth = vars.len();
                exec(if truthy(&v) { then } else { otherwise }, data, vars, out)?;
                vars.truncate(depth);
            }
        }
    }
    Ok(())
}

fn eval_pipeline(
    p: &Pipeline,
    data: &[(&str, Val)],
    vars: &mut Vec<(String, Val)>,
) -> Result<Val, String> {
    let mut previous: Option<Val> = None;
    for cmd in &p.commands {
        previous = Some(eval_command(cmd, previous.take(), data, vars)?);
    }
    let v = previous.unwrap_or(Val::Nil);
    if let Some(name) = &p.declare {
        vars.push((name.clone(), v.clone()));
    }
    Ok(v)
}

fn eval_command(
    cmd: &[Operand],
    piped: Option<Val>,
    data: &[(&str, Val)],
    vars: &mut Vec<(String, Val)>,
) -> Result<Val, String> {
    let Operand::Function(name) = &cmd[0] else {
        if cmd.len() > 1 || piped.is_some() {
            return Err("can't give argument to non-function".into());
        }
        return eval_operand(&cmd[0], data, vars);
    };
    let mut args = Vec::with_capacity(cmd.len());
    for op in &cmd[1..] {
        args.push(eval_operand(op, data, vars)?);
    }
    args.extend(piped);
    call(name, &args)
}

fn eval_operand(
    op: &Operand,
    data: &[(&str, Val)],
    vars: &mut Vec<(String, Val)>,
) -> Result<Val, String> {
    Ok(match op {
        Operand::Str(s) => Val::Str(s.clone()),
        Operand::Number(n) => Val::Num(*n),
        Operand::Bool(b) => Val::Bool(*b),
        Operand::Sub(p) => eval_pipeline(p, data, vars)?,
        Operand::Function(name) => call(name, &[])?,
        Operand::Variable(name, path) => {
            let v = vars
                .iter()
                .rev()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("undefined variable {name:?}"))?;
            walk(v, path)?
        }
        Operand::Field(path) => {
            let Some((first, rest)) = path.split_first() else {
                return Ok(Val::Nil);
            };
            let root = data
                .iter()
                .find(|(name, _)| name == first)
                .map(|(_, v)| v.clone())
                .ok_or_else(|| format!("can't evaluate field {first}"))?;
            walk(root, rest)?
        }
    })
}

fn walk(mut v: Val, path: &[String]) -> Result<Val, String> {
    for key in path {
        v = match v {
            // A missing map key prints as "<no value>" in Go; Prometheus's
            // templates print "" because the map holds strings.
            Val::Map(m) => Val::Str(m.get(key).cloned().unwrap_or_default()),
            _ => return Err(format!("can't evaluate field {key}")),
        };
    }
    Ok(v)
}

fn truthy(v: &Val) -> bool {
    match v {
        Val::Str(s) => !s.is_empty(),
        Val::Num(n) => *n != 0.0,
        Val::Bool(b) => *b,
        Val::Map(m) => !m.is_empty(),
        Val::Nil => false,
    }
}

fn print(v: &Val) -> String {
    match v {
        Val::Str(s) => s.clone(),
        Val::Num(n) => gofmt::verb_v(*n),
        Val::Bool(b) => b.to_string(),
        Val::Map(m) => {
            let inner: Vec<String> = m.iter().map(|(k, v)| format!("{k}:{v}")).collect();
            format!("map[{}]", inner.join(" "))
        }
        Val::Nil => "<no value>".into(),
    }
}

fn number(v: &Val, function: &str) -> Result<f64, String> {
    match v {
        Val::Num(n) => Ok(*n),
        Val::Str(s) => s
            .trim()
            .parse::<f64>()
            .map_err(|_| format!("error calling {function}: can't convert {s:?} to float")),
        Val::Bool(_) | Val::Map(_) | Val::Nil => Err(format!(
            "error calling {function}: can't convert {} to float",
            print(v)
        )),
    }
}

fn string(v: &Val) -> String {
    print(v)
}

fn call(name: &str, args: &[Val]) -> Result<Val, String> {
    let arity = |n: usize| -> Result<(), String> {
        if args.len() == n {
            Ok(())
        } else {
            Err(format!(
                "wrong number of args for {name}: want {n} got {}",
                args.len()
            ))
        }
    };
    Ok(match name {
        "humanize" => {
            arity(1)?;
            Val::Str(humanize(
                number(&args[0], name)?,
                1000.0,
                &["", "k", "M", "G", "T", "P", "E", "Z", "Y"],
                &["", "m", "u", "n", "p", "f", "a", "z", "y"],
            ))
        }
        "humanize1024" => {
            arity(1)?;
            let v = number(&args[0], name)?;
            Val::Str(if v.abs() <= 1.0 || !v.is_finite() {
                gofmt::g(v, 4)
            } else {
                humanize(
                    v,
                    1024.0,
                    &["", "ki", "Mi", "Gi", "Ti", "Pi", "Ei", "Zi", "Yi"],
                    &[""],
                )
            })
        }
        "humanizeDuration" => {
            arity(1)?;
            Val::Str(humanize_duration(number(&args[0], name)?))
        }
        "humanizePercentage" => {
            arity(1)?;
            Val::Str(format!("{}%", gofmt::g(number(&args[0], name)? * 100.0, 4)))
        }
        "humanizeTimestamp" => {
            arity(1)?;
            let v = number(&args[0], name)?;
            Val::Str(if !v.is_finite() {
                gofmt::verb_v(v)
            } else {
                let secs = v.trunc() as i64;
                let nanos = ((v - v.trunc()) * 1e9).round() as u32;
                match chrono::DateTime::from_timestamp(secs, nanos) {
                    Some(t) => t.format("%Y-%m-%d %H:%M:%S%.f +0000 UTC").to_string(),
                    None => gofmt::verb_v(v),
                }
            })
        }
        "printf" => {
            let format = args
                .first()
                .map(string)
                .ok_or("wrong number of args for printf: want at least 1 got 0")?;
            Val::Str(sprintf(&format, &args[1..])?)
        }
        "print" | "println" => {
            let mut s: String = args.iter().map(string).collect::<Vec<_>>().join(" ");
            if name == "println" {
                s.push('\n');
            }
            Val::Str(s)
        }
        "toUpper" => {
            arity(1)?;
            Val::Str(string(&args[0]).to_uppercase())
        }
        "toLower" => {
            arity(1)?;
            Val::Str(string(&args[0]).to_lowercase())
        }
        "title" => {
            arity(1)?;
            let s = string(&args[0]);
            let mut out = String::with_capacity(s.len());
            let mut at_start = true;
            for c in s.chars() {
                if at_start && c.is_alphabetic() {
                    out.extend(c.to_uppercase());
                } else {
                    out.push(c);
                }
                at_start = !(c.is_alphanumeric() || c == '_' || c == '\'');
            }
            Val::Str(out)
        }
        "reReplaceAll" => {
            arity(3)?;
            let re = regex::Regex::new(&string(&args[0]))
                .map_err(|e| format!("error calling reReplaceAll: {e}"))?;
            Val::Str(
                re.replace_all(&string(&args[2]), string(&args[1]).as_str())
                    .into_owned(),
            )
        }
        "match" => {
            arity(2)?;
            let re = regex::Regex::new(&string(&args[0]))
                .map_err(|e| format!("error calling match: {e}"))?;
            Val::Bool(re.is_match(&string(&args[1])))
        }
        "stripPort" => {
            arity(1)?;
            let s = string(&args[0]);
            Val::Str(match s.rsplit_once(':') {
                Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                _ => s,
            })
        }
        "stripDomain" => {
            arity(1)?;
            let s = string(&args[0]);
            let (host, port) = match s.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => {
                    (h.to_string(), format!(":{p}"))
                }
                _ => (s.clone(), String::new()),
            };
            let short = if host.parse::<std::net::IpAddr>().is_ok() {
                host
            } else {
                host.split('.').next().unwrap_or_default().to_string()
            };
            Val::Str(short + &port)
        }
        "not" => {
            arity(1)?;
            Val::Bool(!truthy(&args[0]))
        }
        "and" => args
            .iter()
            .find(|a| !truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Nil),
        "or" => args
            .iter()
            .find(|a| truthy(a))
            .or(args.last())
            .cloned()
            .unwrap_or(Val::Nil),
        "eq" | "ne" | "lt" | "le" | "gt" | "ge" => {
            arity(2)?;
            let ord = match (&args[0], &args[1]) {
                (Val::Num(a), Val::Num(b)) => a.partial_cmp(b),
                (a, b) => Some(string(a).cmp(&string(b))),
            };
            use std::cmp::Ordering::*;
            Val::Bool(match name {
                "eq" => ord == Some(Equal),
                "ne" => ord != Some(Equal),
                "lt" => ord == Some(Less),
                "le" => matches!(ord, Some(Less | Equal)),
                "gt" => ord == Some(Greater),
                _ => matches!(ord, Some(Greater | Equal)),
            })
        }
        "len" => {
            arity(1)?;
            Val::Num(match &args[0] {
                Val::Map(m) => m.len() as f64,
                other => string(other).chars().count() as f64,
            })
        }
        "index" => {
            arity(2)?;
            match &args[0] {
                Val::Map(m) => Val::Str(m.get(&string(&args[1])).cloned().unwrap_or_default()),
                _ => return Err("error calling index: can't index item".into()),
            }
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

fn humanize(v: f64, base: f64, big: &[&str], small: &[&str]) -> String {
    if v == 0.0 || !v.is_finite() {
        return gofmt::g(v, 4);
    }
    let mut v = v;
    if v.abs() >= 1.0 {
        let mut prefix = big[0];
        for p in &big[1..] {
            if v.abs() < base {
                break;
            }
            prefix = p;
            v /= base;
        }
        return format!("{}{prefix}", gofmt::g(v, 4));
    }
    let mut prefix = small[0];
    for p in &small[1..] {
        if v.abs() >= 1.0 {
            break;
        }
        prefix = p;
        v *= base;
    }
    format!("{}{prefix}", gofmt::g(v, 4))
}

fn humanize_duration(v: f64) -> String {
    if !v.is_finite() {
        return gofmt::g(v, 4);
    }
    if v.abs() < 1.0 {
        // Sub-second: SI prefixes on seconds, as Prometheus prints them.
        let (mut v, mut prefix) = (v, "");
        for p in ["m", "u", "n", "p", "f", "a", "z", "y"] {
            if v.abs() >= 1.0 || v == 0.0 {
                break;
            }
            prefix = p;
            v *= 1000.0;
        }
        return format!("{}{prefix}s", gofmt::g(v, 4));
    }
    let sign = if v < 0.0 { "-" } else { "" };
    let v = v.abs();
    let seconds = v as i64 % 60;
    let minutes = (v as i64 / 60) % 60;
    let hours = (v as i64 / 3600) % 24;
    let days = v as i64 / 86400;
    if days != 0 {
        format!("{sign}{days}d {hours}h {minutes}m {seconds}s")
    } else if hours != 0 {
        format!("{sign}{hours}h {minutes}m {seconds}s")
    } else if minutes != 0 {
        format!("{sign}{minutes}m {seconds}s")
    } else {
        format!("{sign}{}s", gofmt::g(v, 4))
    }
}

/// `printf` with the verbs rule files use: %s %v %d %f %.Nf %g %e %q %x %%.
fn sprintf(format: &str, args: &[Val]) -> Result<String, String> {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut spec = String::new();
        while let Some(&p) = chars.peek() {
            if p.is_ascii_digit() || p == '.' || p == '-' || p == '+' || p == ' ' || p == '0' {
                spec.push(p);
                chars.next();
            } else {
                break;
            }
        }
        let Some(verb) = chars.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = args.get(next) else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        next += 1;
        let precision: Option<usize> = spec.split_once('.').and_then(|(_, p)| p.parse().ok());
        let width: usize = spec
            .split('.')
            .next()
            .unwrap_or("")
            .trim_start_matches(['-', '+', ' ', '0'])
            .parse()
            .unwrap_or(0);
        let text = match verb {
            's' | 'v' => print(arg),
            'q' => crate::storage::quote(&print(arg)),
            'd' => format!("{}", number(arg, "printf")? as i64),
            'f' | 'F' => format!("{:.*}", precision.unwrap_or(6), number(arg, "printf")?),
            'e' => gofmt::exponent_fixed(number(arg, "printf")?, precision.unwrap_or(6)),
            'g' => match precision {
                Some(p) => gofmt::g(number(arg, "printf")?, p.max(1)),
                None => gofmt::verb_v(number(arg, "printf")?),
            },
            'x' => match arg {
                Val::Num(n) => format!("{:x}", *n as i64),
                other => print(other).bytes().map(|b| format!("{b:02x}")).collect(),
            },
            other => format!("%!{other}({})", print(arg)),
        };
        if spec.starts_with('-') {
            let _ = write!(out, "{text:<width$}");
        } else {
            let _ = write!(out, "{text:>width$}");
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..].iter().map(print).collect();
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(text: &str, value: f64) -> String {
        let labels = BTreeMap::from([
            ("instance".to_string(), "host:9090".to_string()),
            ("job".to_string(), "node".to_string()),
        ]);
        let external = BTreeMap::from([("cluster".to_string(), "eu1".to_string())]);
        expand_or_error(
            text,
            &AlertData {
                labels: &labels,
                external_labels: &external,
                external_url: "http://tw",
                value,
            },
        )
    }

    #[test]
    fn variables_fields_and_pipelines() {
        assert_eq!(
            render("Instance {{ $labels.instance }} down", 0.0),
            "Instance host:9090 down"
        );
        assert_eq!(
            render("{{ .Labels.job }}/{{$externalLabels.cluster}}", 0.0),
            "node/eu1"
        );
        assert_eq!(render("{{ $value }}", 0.5), "0.5");
        assert_eq!(render("{{ $value }}", 1e6), "1e+06");
        assert_eq!(render("{{ $value | humanize }}", 1234567.0), "1.235M");
        assert_eq!(render("{{ $value | humanize }}", 0.001234), "1.234m");
        assert_eq!(render("{{ humanize1024 $value }}", 2048.0), "2ki");
        // %.4g of the value itself at or below 1, never cut to four characters.
        assert_eq!(render("{{ humanize1024 $value }}", 0.123456), "0.1235");
        assert_eq!(render("{{ humanize1024 $value }}", -0.987654), "-0.9877");
        assert_eq!(render("{{ humanize1024 $value }}", 1500.0), "1.465ki");
        assert_eq!(
            render("{{ $value | humanizePercentage }}", 0.12345),
            "12.35%"
        );
        assert_eq!(
            render("{{ $value | humanizeDuration }}", 3725.0),
            "1h 2m 5s"
        );
        assert_eq!(render("{{ $value | humanizeDuration }}", 0.0012), "1.2ms");
        assert_eq!(render("{{ printf \"%.2f\" $value }}", 1.23456), "1.23");
        assert_eq!(render("{{ $labels.job | toUpper }}", 0.0), "NODE");
        assert_eq!(
            render("{{ reReplaceAll \":.*\" \"\" $labels.instance }}", 0.0),
            "host"
        );
        assert_eq!(
            render("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}", 2.0),
            "high"
        );
        assert_eq!(
            render("{{ if gt $value 1.0 }}high{{ else }}low{{ end }}", 0.5),
            "low"
        );
        assert_eq!(render("a  {{- $labels.job -}}  b", 0.0), "anodeb");
        assert_eq!(render("{{ $x := $labels.job }}{{ $x }}", 0.0), "node");
        assert_eq!(render("{{ $labels.missing }}", 0.0), "");
    }

    #[test]
    fn errors_render_in_place() {
        assert!(render("{{ nope $value }}", 0.0).starts_with("<error expanding template: "));
        assert!(Template::parse("{{ if $value }}x").is_err());
        assert!(Template::parse("{{ $value ").is_err());
    }
}

/// The templates notification fields can call; compiled once at load.
/// (Interim: user files and `define` arrive with the Go-template engine.)
#[derive(Debug, Clone, Default)]
pub struct TemplateSet;

impl TemplateSet {
    /// Alertmanager's default templates plus the files matching `globs`.
    pub fn load(globs: &[String]) -> Result<TemplateSet, String> {
        if globs.is_empty() {
            Ok(TemplateSet)
        } else {
            Err("notify.templates: template files are not supported yet".into())
        }
    }

    /// Parses one field's text against the set.
    pub fn compile(&self, text: &str) -> Result<Template, String> {
        Template::parse(text)
    }
}
