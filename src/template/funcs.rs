//! Template functions: Go's builtins, Prometheus' rule-template functions and
//! Alertmanager's `DefaultFuncs`, with Go's argument checks and messages.

use super::value::{ListKind, MapKind, Value, format_go, print};
use crate::gofmt;
use std::fmt::Write as _;
use std::rc::Rc;

/// Which function map a template is parsed with.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum FuncSet {
    /// Prometheus' rule templates (annotations, labels).
    Prometheus,
    /// Alertmanager's notification templates.
    Alertmanager,
}

const BUILTINS: &[&str] = &[
    "and", "or", "not", "len", "index", "slice", "print", "printf", "println", "html", "js",
    "urlquery", "eq", "ne", "lt", "le", "gt", "ge", "call",
];

const PROMETHEUS: &[&str] = &[
    "humanize",
    "humanize1024",
    "humanizeDuration",
    "humanizePercentage",
    "humanizeTimestamp",
    "toUpper",
    "toLower",
    "title",
    "reReplaceAll",
    "match",
    "stripPort",
    "stripDomain",
    "safeHtml",
];

const ALERTMANAGER: &[&str] = &[
    "toUpper",
    "toLower",
    "title",
    "trimSpace",
    "join",
    "match",
    "safeHtml",
    "safeUrl",
    "urlUnescape",
    "reReplaceAll",
    "stringSlice",
    "date",
    "tz",
    "since",
    "humanizeDuration",
    "toJson",
];

impl FuncSet {
    pub fn has(self, name: &str) -> bool {
        BUILTINS.contains(&name)
            || match self {
                FuncSet::Prometheus => PROMETHEUS.contains(&name),
                FuncSet::Alertmanager => ALERTMANAGER.contains(&name),
            }
    }
}

fn arity(name: &str, args: &[Value], n: usize) -> Result<(), String> {
    if args.len() == n {
        Ok(())
    } else {
        Err(format!(
            "wrong number of args for {name}: want {n} got {}",
            args.len()
        ))
    }
}

/// A `string` parameter: Go refuses other types before calling.
fn string_arg(v: &Value) -> Result<&str, String> {
    v.as_str().ok_or_else(|| {
        format!(
            "wrong type for value; expected string; got {}",
            v.type_name()
        )
    })
}

fn strings_arg(v: &Value) -> Result<Vec<&str>, String> {
    match v {
        Value::List(ListKind::Strings, items) => {
            Ok(items.iter().filter_map(Value::as_str).collect())
        }
        other => Err(format!(
            "wrong type for value; expected []string; got {}",
            other.type_name()
        )),
    }
}

fn time_arg(v: &Value) -> Result<chrono::DateTime<chrono_tz::Tz>, String> {
    match v {
        Value::Time(t) => Ok(*t),
        other => Err(format!(
            "wrong type for value; expected time.Time; got {}",
            other.type_name()
        )),
    }
}

/// Prometheus' `convertToFloat`.
fn float_arg(v: &Value) -> Result<f64, String> {
    match v {
        Value::Float(f) => Ok(*f),
        Value::Int(i) => Ok(*i as f64),
        Value::Duration(d) => Ok(*d as f64 / 1e9),
        Value::Str(s) => s
            .parse::<f64>()
            .map_err(|_| format!("strconv.ParseFloat: parsing {s:?}: invalid syntax")),
        other => Err(format!("can't convert {} to float", other.type_name())),
    }
}

/// `fmt.Sprint(args...)`: spaces only between operands that are not strings.
pub(super) fn sprint(args: &[Value]) -> String {
    let mut out = String::new();
    for (i, a) in args.iter().enumerate() {
        if i > 0 && a.as_str().is_none() && args[i - 1].as_str().is_none() {
            out.push(' ');
        }
        out.push_str(&sprint_one(a));
    }
    out
}

/// One operand as fmt prints it: a nil interface is `<nil>`.
fn sprint_one(v: &Value) -> String {
    match v {
        Value::Nil => "<nil>".into(),
        other => print(other),
    }
}

/// What `html`, `js` and `urlquery` escape: a lone string as is, else `fmt.Sprint`.
fn escaper_input(args: &[Value]) -> String {
    match args {
        [one] if one.as_str().is_some() => one.as_str().unwrap_or_default().to_string(),
        _ => sprint(args),
    }
}

/// Calls `name` (any function but `and`/`or`, which the executor evaluates
/// lazily) with evaluated arguments.
pub(super) fn call(set: FuncSet, name: &str, args: &[Value]) -> Result<Value, String> {
    let s = |s: String| Value::Str(Rc::from(s));
    Ok(match name {
        "not" => {
            arity(name, args, 1)?;
            Value::Bool(!args[0].truthy())
        }
        "eq" => {
            let (first, rest) = args
                .split_first()
                .ok_or("missing argument for comparison")?;
            if rest.is_empty() {
                return Err("missing argument for comparison".into());
            }
            let mut truth = false;
            for other in rest {
                if equal(first, other)? {
                    truth = true;
                    break;
                }
            }
            Value::Bool(truth)
        }
        "ne" => {
            arity(name, args, 2)?;
            Value::Bool(!equal(&args[0], &args[1])?)
        }
        "lt" | "le" | "gt" | "ge" => {
            arity(name, args, 2)?;
            let lt = less(&args[0], &args[1])?;
            Value::Bool(match name {
                "lt" => lt,
                "le" => lt || equal(&args[0], &args[1])?,
                "gt" => !lt && !equal(&args[0], &args[1])?,
                _ => !lt,
            })
        }
        "len" => {
            arity(name, args, 1)?;
            Value::Int(match &args[0] {
                Value::Str(v) | Value::Html(v) => v.len(),
                Value::List(_, l) => l.len(),
                Value::Map(_, m) => m.len(),
                other => return Err(format!("len of type {}", other.type_name())),
            } as i64)
        }
        "index" => {
            let (item, indexes) = args
                .split_first()
                .ok_or("wrong number of args for index: want at least 1 got 0")?;
            let mut item = item.clone();
            for ix in indexes {
                item = index(&item, ix)?;
            }
            item
        }
        "slice" => slice(args)?,
        "print" => s(sprint(args)),
        "println" => {
            let words: Vec<String> = args.iter().map(sprint_one).collect();
            s(words.join(" ") + "\n")
        }
        "printf" => {
            let (format, rest) = args
                .split_first()
                .ok_or("wrong number of args for printf: want at least 1 got 0")?;
            s(sprintf(string_arg(format)?, rest))
        }
        "html" => s(html_escape(&escaper_input(args))),
        "js" => s(js_escape(&escaper_input(args))),
        "urlquery" => s(query_escape(&escaper_input(args))),
        "call" => {
            let target = args.first().map_or("<nil>", Value::type_name);
            return Err(format!("non-function of type {target}"));
        }
        "toUpper" => {
            arity(name, args, 1)?;
            s(string_arg(&args[0])?.to_uppercase())
        }
        "toLower" => {
            arity(name, args, 1)?;
            s(string_arg(&args[0])?.to_lowercase())
        }
        "title" => {
            arity(name, args, 1)?;
            s(title(string_arg(&args[0])?, set == FuncSet::Alertmanager))
        }
        "trimSpace" => {
            arity(name, args, 1)?;
            s(string_arg(&args[0])?.trim().to_string())
        }
        "join" => {
            arity(name, args, 2)?;
            let sep = string_arg(&args[0])?;
            s(strings_arg(&args[1])?.join(sep))
        }
        "match" => {
            arity(name, args, 2)?;
            let re = regex::Regex::new(string_arg(&args[0])?).map_err(|e| e.to_string())?;
            Value::Bool(re.is_match(string_arg(&args[1])?))
        }
        "reReplaceAll" => {
            arity(name, args, 3)?;
            let re = regex::Regex::new(string_arg(&args[0])?).map_err(|e| e.to_string())?;
            let repl = string_arg(&args[1])?;
            s(re.replace_all(string_arg(&args[2])?, repl).into_owned())
        }
        "safeHtml" => {
            arity(name, args, 1)?;
            Value::Html(Rc::from(string_arg(&args[0])?))
        }
        "safeUrl" => {
            arity(name, args, 1)?;
            Value::str(string_arg(&args[0])?)
        }
        "urlUnescape" => {
            arity(name, args, 1)?;
            let text = string_arg(&args[0])?.replace('+', " ");
            s(percent_encoding::percent_decode_str(&text)
                .decode_utf8()
                .map_err(|e| e.to_string())?
                .into_owned())
        }
        "stringSlice" => {
            for a in args {
                string_arg(a)?;
            }
            Value::List(ListKind::Strings, args.iter().cloned().collect())
        }
        "date" => {
            arity(name, args, 2)?;
            s(format_go(&time_arg(&args[1])?, string_arg(&args[0])?))
        }
        "tz" => {
            arity(name, args, 2)?;
            let zone = string_arg(&args[0])?;
            let t = time_arg(&args[1])?;
            // Go's LoadLocation: "" and "UTC" are UTC, else an IANA name.
            let zone: chrono_tz::Tz = match zone {
                "" | "UTC" => chrono_tz::Tz::UTC,
                "Local" => {
                    return Err(
                        "unknown time zone Local: it depends on the machine; name the zone".into(),
                    );
                }
                name => name
                    .parse()
                    .map_err(|_| format!("unknown time zone {name}"))?,
            };
            Value::Time(t.with_timezone(&zone))
        }
        "since" => {
            arity(name, args, 1)?;
            let t = time_arg(&args[0])?;
            let nanos = (chrono::Utc::now() - t.to_utc())
                .num_nanoseconds()
                .unwrap_or(i64::MAX);
            Value::Duration(nanos)
        }
        "toJson" => {
            arity(name, args, 1)?;
            s(to_json(&args[0]).to_string())
        }
        "humanize" => {
            arity(name, args, 1)?;
            s(humanize(
                float_arg(&args[0])?,
                1000.0,
                &["", "k", "M", "G", "T", "P", "E", "Z", "Y"],
                &["", "m", "u", "n", "p", "f", "a", "z", "y"],
            ))
        }
        "humanize1024" => {
            arity(name, args, 1)?;
            let v = float_arg(&args[0])?;
            s(if v.abs() <= 1.0 || !v.is_finite() {
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
            arity(name, args, 1)?;
            s(humanize_duration(float_arg(&args[0])?))
        }
        "humanizePercentage" => {
            arity(name, args, 1)?;
            s(format!("{}%", gofmt::g(float_arg(&args[0])? * 100.0, 4)))
        }
        "humanizeTimestamp" => {
            arity(name, args, 1)?;
            let v = float_arg(&args[0])?;
            s(if !v.is_finite() {
                gofmt::g(v, 4)
            } else {
                let secs = v.trunc() as i64;
                let nanos = ((v - v.trunc()) * 1e9).round() as u32;
                match chrono::DateTime::from_timestamp(secs, nanos) {
                    Some(t) => super::value::time_string(&t.with_timezone(&chrono_tz::Tz::UTC)),
                    None => gofmt::verb_v(v),
                }
            })
        }
        "stripPort" => {
            arity(name, args, 1)?;
            let v = string_arg(&args[0])?;
            s(match v.rsplit_once(':') {
                Some((host, port)) if port.chars().all(|c| c.is_ascii_digit()) => host
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .to_string(),
                _ => v.to_string(),
            })
        }
        "stripDomain" => {
            arity(name, args, 1)?;
            let v = string_arg(&args[0])?;
            let (host, port) = match v.rsplit_once(':') {
                Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) => (h, format!(":{p}")),
                _ => (v, String::new()),
            };
            let short = if host.parse::<std::net::IpAddr>().is_ok() {
                host
            } else {
                host.split('.').next().unwrap_or_default()
            };
            s(format!("{short}{port}"))
        }
        other => return Err(format!("function {other:?} not defined")),
    })
}

#[derive(PartialEq)]
enum BasicKind {
    Bool,
    Int,
    Float,
    Str,
    Other,
}

fn basic_kind(v: &Value) -> BasicKind {
    match v {
        Value::Bool(_) => BasicKind::Bool,
        Value::Int(_) | Value::Duration(_) => BasicKind::Int,
        Value::Float(_) => BasicKind::Float,
        Value::Str(_) | Value::Html(_) => BasicKind::Str,
        _ => BasicKind::Other,
    }
}

/// Go's `eq` for two operands: basic kinds must match; nil equals only nil;
/// other values compare by content where Go can compare them.
fn equal(a: &Value, b: &Value) -> Result<bool, String> {
    let (ka, kb) = (basic_kind(a), basic_kind(b));
    if ka != kb {
        if matches!(a, Value::Nil) || matches!(b, Value::Nil) {
            return Ok(false);
        }
        return Err("incompatible types for comparison".into());
    }
    Ok(match (a, b) {
        (Value::Bool(x), Value::Bool(y)) => x == y,
        (Value::Int(x) | Value::Duration(x), Value::Int(y) | Value::Duration(y)) => x == y,
        (Value::Float(x), Value::Float(y)) => x == y,
        (x, y) if ka == BasicKind::Str => x.as_str() == y.as_str(),
        (Value::Nil, Value::Nil) => true,
        (Value::Time(x), Value::Time(y)) => x == y,
        (Value::List(..) | Value::Map(..), _) | (_, Value::List(..) | Value::Map(..)) => {
            return Err(format!("non-comparable type {}", a.type_name()));
        }
        (Value::Struct(x), Value::Struct(y)) if x.type_name == y.type_name => {
            return Err(format!("non-comparable type {}", a.type_name()));
        }
        _ => return Err("incompatible types for comparison".into()),
    })
}

/// Go's `lt`: ordered basic kinds only, of the same kind.
fn less(a: &Value, b: &Value) -> Result<bool, String> {
    let (ka, kb) = (basic_kind(a), basic_kind(b));
    if matches!(ka, BasicKind::Other | BasicKind::Bool)
        || matches!(kb, BasicKind::Other | BasicKind::Bool)
    {
        return Err("invalid type for comparison".into());
    }
    if ka != kb {
        return Err("incompatible types for comparison".into());
    }
    Ok(match (a, b) {
        (Value::Int(x) | Value::Duration(x), Value::Int(y) | Value::Duration(y)) => x < y,
        (Value::Float(x), Value::Float(y)) => x < y,
        (x, y) => x.as_str() < y.as_str(),
    })
}

fn int_index(v: &Value) -> Result<i64, String> {
    match v {
        Value::Int(i) | Value::Duration(i) => Ok(*i),
        other => Err(format!(
            "cannot index slice/array with type {}",
            other.type_name()
        )),
    }
}

fn index(item: &Value, ix: &Value) -> Result<Value, String> {
    match item {
        Value::List(_, l) => {
            let i = int_index(ix)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| l.get(i))
                .cloned()
                .ok_or_else(|| format!("error calling index: index out of range: {i}"))
        }
        Value::Str(s) | Value::Html(s) => {
            let i = int_index(ix)?;
            usize::try_from(i)
                .ok()
                .and_then(|i| s.as_bytes().get(i))
                .map(|b| Value::Int(i64::from(*b)))
                .ok_or_else(|| format!("error calling index: index out of range: {i}"))
        }
        Value::Map(_, m) => {
            let key = string_arg(ix)?;
            Ok(Value::str(m.get(key).map_or("", String::as_str)))
        }
        Value::Nil => Err("error calling index: index of untyped nil".into()),
        other => Err(format!(
            "error calling index: can't index item of type {}",
            other.type_name()
        )),
    }
}

fn slice(args: &[Value]) -> Result<Value, String> {
    let (item, idx) = args
        .split_first()
        .ok_or("wrong number of args for slice: want at least 1 got 0")?;
    let len = match item {
        Value::List(_, l) => l.len(),
        Value::Str(s) => s.len(),
        other => return Err(format!("can't slice item of type {}", other.type_name())),
    };
    if idx.len() > 2 {
        return Err("too many slice indexes".into());
    }
    let mut bounds = [0, len];
    for (i, v) in idx.iter().enumerate() {
        let n = int_index(v)?;
        bounds[i] = usize::try_from(n)
            .ok()
            .filter(|&n| n <= len)
            .ok_or_else(|| format!("index out of range: {n}"))?;
    }
    if bounds[0] > bounds[1] {
        return Err(format!(
            "invalid slice index: {} > {}",
            bounds[0], bounds[1]
        ));
    }
    Ok(match item {
        Value::List(kind, l) => {
            Value::List(*kind, l[bounds[0]..bounds[1]].iter().cloned().collect())
        }
        Value::Str(s) => Value::str(
            s.get(bounds[0]..bounds[1])
                .ok_or("slice bounds cut a UTF-8 character")?,
        ),
        _ => Value::Nil,
    })
}

/// `strings.Title` (Prometheus) uppercases each word's first letter;
/// `cases.Title` (Alertmanager) also lowercases the rest of the word.
fn title(s: &str, lower_rest: bool) -> String {
    let mut out = String::with_capacity(s.len());
    let mut at_start = true;
    for c in s.chars() {
        if at_start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else if lower_rest && !at_start {
            out.extend(c.to_lowercase());
        } else {
            out.push(c);
        }
        at_start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

/// Go's `template.HTMLEscapeString`.
pub(super) fn html_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '&' => out.push_str("&amp;"),
            '\'' => out.push_str("&#39;"),
            '"' => out.push_str("&#34;"),
            '\0' => out.push('\u{FFFD}'),
            c => out.push(c),
        }
    }
    out
}

/// Go's `template.JSEscapeString`.
fn js_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\'' => out.push_str("\\'"),
            '"' => out.push_str("\\\""),
            '<' => out.push_str("\\u003C"),
            '>' => out.push_str("\\u003E"),
            '&' => out.push_str("\\u0026"),
            '=' => out.push_str("\\u003D"),
            c if (c as u32) < 0x20 || c.is_control() => {
                let _ = write!(out, "\\u{:04X}", c as u32);
            }
            c => out.push(c),
        }
    }
    out
}

/// Go's `url.QueryEscape`.
pub(super) fn query_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b' ' => out.push('+'),
            b => {
                let _ = write!(out, "%{b:02X}");
            }
        }
    }
    out
}

/// `json.Marshal` of a template value.
fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) | Value::Duration(i) => J::from(*i),
        Value::Float(f) => serde_json::Number::from_f64(*f).map_or(J::Null, J::Number),
        Value::Str(s) | Value::Html(s) => J::String(s.to_string()),
        Value::Time(t) => J::String(t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true)),
        Value::List(_, l) => J::Array(l.iter().map(to_json).collect()),
        Value::Map(_, m) => J::Object(
            m.iter()
                .map(|(k, v)| (k.clone(), J::String(v.clone())))
                .collect(),
        ),
        Value::Struct(s) => J::Object(
            s.fields
                .iter()
                .map(|(k, v)| (json_name(k), to_json(v)))
                .collect(),
        ),
    }
}

/// Alertmanager's JSON tags: the Go field name with a lower-case first letter
/// (`ExternalURL` → `externalURL`).
fn json_name(field: &str) -> String {
    let mut chars = field.chars();
    chars
        .next()
        .map(|c| c.to_lowercase().chain(chars).collect())
        .unwrap_or_default()
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

/// fmt's message for a verb that does not fit its operand: `%!d(string=x)`.
fn bad_verb(verb: char, arg: &Value) -> String {
    match arg {
        Value::Nil => format!("%!{verb}(<nil>)"),
        other => format!("%!{verb}({}={})", other.type_name(), sprint_one(other)),
    }
}

/// `fmt.Sprintf` for the verbs templates use: %v %s %q %d %f %F %e %g %x %X
/// %t %c %%, with width, precision and the `-`, `+`, `0` flags.
pub(super) fn sprintf(format: &str, args: &[Value]) -> String {
    let mut out = String::new();
    let mut chars = format.chars().peekable();
    let mut next = 0usize;
    while let Some(c) = chars.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let (mut minus, mut plus, mut zero) = (false, false, false);
        while let Some(&f) = chars.peek() {
            match f {
                '-' => minus = true,
                '+' => plus = true,
                '0' => zero = true,
                ' ' | '#' => {}
                _ => break,
            }
            chars.next();
        }
        let mut width = String::new();
        while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            chars.next();
        }
        let mut precision: Option<usize> = None;
        if chars.peek() == Some(&'.') {
            chars.next();
            let mut p = String::new();
            while let Some(&d) = chars.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                chars.next();
            }
            precision = Some(p.parse().unwrap_or(0));
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
        let sign = |s: String, positive: bool| if plus && positive { format!("+{s}") } else { s };
        let numeric = matches!(arg, Value::Int(_) | Value::Float(_));
        let text = match (verb, arg) {
            ('v', Value::Float(f)) => match precision {
                Some(p) => gofmt::g(*f, p.max(1)),
                None => sign(gofmt::verb_v(*f), *f >= 0.0),
            },
            ('v', other) => sign_value(other, plus),
            ('s', other) if !numeric && !matches!(other, Value::Bool(_)) => {
                let s = sprint_one(other);
                match precision {
                    Some(p) => s.chars().take(p).collect(),
                    None => s,
                }
            }
            ('q', other) if other.as_str().is_some() => {
                crate::storage::quote(other.as_str().unwrap_or_default())
            }
            ('q', Value::Int(i)) => {
                format!("'{}'", char::from_u32(*i as u32).unwrap_or('\u{FFFD}'))
            }
            ('d', Value::Int(i) | Value::Duration(i)) => sign(i.to_string(), *i >= 0),
            ('c', Value::Int(i)) => char::from_u32(*i as u32).unwrap_or('\u{FFFD}').to_string(),
            ('t', Value::Bool(b)) => b.to_string(),
            ('f' | 'F', Value::Float(f)) => sign(
                special_or(*f, || format!("{:.*}", precision.unwrap_or(6), f)),
                *f >= 0.0,
            ),
            ('e', Value::Float(f)) => {
                sign(gofmt::exponent_fixed(*f, precision.unwrap_or(6)), *f >= 0.0)
            }
            ('g', Value::Float(f)) => sign(
                match precision {
                    Some(p) => gofmt::g(*f, p.max(1)),
                    None => gofmt::verb_v(*f),
                },
                *f >= 0.0,
            ),
            ('x', Value::Int(i)) => format!("{i:x}"),
            ('X', Value::Int(i)) => format!("{i:X}"),
            ('x', other) if other.as_str().is_some() => other
                .as_str()
                .unwrap_or_default()
                .bytes()
                .map(|b| format!("{b:02x}"))
                .collect(),
            ('X', other) if other.as_str().is_some() => other
                .as_str()
                .unwrap_or_default()
                .bytes()
                .map(|b| format!("{b:02X}"))
                .collect(),
            (verb, other) => bad_verb(verb, other),
        };
        let width: usize = width.parse().unwrap_or(0);
        let len = text.chars().count();
        if len >= width {
            out.push_str(&text);
        } else if minus {
            out.push_str(&text);
            out.extend(std::iter::repeat_n(' ', width - len));
        } else if zero && numeric {
            let (sign, digits) = match text.strip_prefix(['-', '+']) {
                Some(d) => (&text[..1], d),
                None => ("", text.as_str()),
            };
            out.push_str(sign);
            out.extend(std::iter::repeat_n('0', width - len));
            out.push_str(digits);
        } else {
            out.extend(std::iter::repeat_n(' ', width - len));
            out.push_str(&text);
        }
    }
    if next < args.len() {
        let extra: Vec<String> = args[next..]
            .iter()
            .map(|a| format!("{}={}", a.type_name(), sprint_one(a)))
            .collect();
        let _ = write!(out, "%!(EXTRA {})", extra.join(", "));
    }
    out
}

fn sign_value(v: &Value, plus: bool) -> String {
    match v {
        Value::Int(i) if plus && *i >= 0 => format!("+{i}"),
        other => sprint_one(other),
    }
}

fn special_or(f: f64, finite: impl FnOnce() -> String) -> String {
    if f.is_finite() {
        finite()
    } else {
        gofmt::verb_v(f)
    }
}

/// `KV` helper for the executor's method calls.
pub(super) fn kv(m: std::collections::BTreeMap<String, String>) -> Value {
    Value::Map(MapKind::Kv, Rc::new(m))
}
