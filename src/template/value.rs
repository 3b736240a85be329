//! The values templates see, modelled on the Go types behind them so that
//! printing, truthiness, comparison and method calls behave as in Go:
//! Alertmanager's `KV`, `Pairs`, `Alerts`, `time.Time`, Prometheus' maps.

use crate::gofmt;
use chrono::{DateTime, Datelike, Offset, Timelike};
use chrono_tz::Tz;
use std::collections::BTreeMap;
use std::rc::Rc;

/// Go's type behind a map value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum MapKind {
    /// `map[string]string` (Prometheus' `.Labels`).
    Plain,
    /// Alertmanager's `template.KV`: has methods; prints as a map (0.25 has
    /// no `String` method, later versions print `a=b, c=d`).
    Kv,
}

/// Go's type behind a list value.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(super) enum ListKind {
    /// `[]string`.
    Strings,
    /// Alertmanager's `template.Alerts`: has `Firing` and `Resolved`.
    Alerts,
    /// `[]template.Alert`, what `Firing`/`Resolved` return.
    AlertSlice,
    /// Alertmanager's `template.Pairs` (of `template.Pair` structs): has methods.
    Pairs,
}

/// A struct: its Go type name and fields in declaration order.
#[derive(Debug)]
pub(super) struct Struct {
    pub type_name: &'static str,
    pub fields: Vec<(&'static str, Value)>,
}

#[derive(Debug, Clone)]
pub(super) enum Value {
    /// Go's invalid value / nil interface: prints `<no value>`.
    Nil,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(Rc<str>),
    /// html/template's `template.HTML` (`safeHtml`): not escaped in HTML text.
    Html(Rc<str>),
    /// `time.Time` in its zone (UTC unless `tz` moved it).
    Time(DateTime<Tz>),
    /// `time.Duration`, nanoseconds.
    Duration(i64),
    List(ListKind, Rc<[Value]>),
    Map(MapKind, Rc<BTreeMap<String, String>>),
    Struct(Rc<Struct>),
}

impl Value {
    pub fn str(s: &str) -> Value {
        Value::Str(Rc::from(s))
    }

    /// Go's type name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Nil => "<nil>",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Float(_) => "float64",
            Value::Str(_) => "string",
            Value::Html(_) => "template.HTML",
            Value::Time(_) => "time.Time",
            Value::Duration(_) => "time.Duration",
            Value::List(ListKind::Strings, _) => "[]string",
            Value::List(ListKind::Alerts, _) => "template.Alerts",
            Value::List(ListKind::AlertSlice, _) => "[]template.Alert",
            Value::List(ListKind::Pairs, _) => "template.Pairs",
            Value::Map(MapKind::Plain, _) => "map[string]string",
            Value::Map(MapKind::Kv, _) => "template.KV",
            Value::Struct(s) => s.type_name,
        }
    }

    /// Go's truth: false, 0, nil and empty strings, lists and maps are false.
    pub fn truthy(&self) -> bool {
        match self {
            Value::Nil => false,
            Value::Bool(b) => *b,
            Value::Int(n) | Value::Duration(n) => *n != 0,
            Value::Float(f) => *f != 0.0,
            Value::Str(s) | Value::Html(s) => !s.is_empty(),
            Value::List(_, l) => !l.is_empty(),
            Value::Map(_, m) => !m.is_empty(),
            Value::Time(_) | Value::Struct(_) => true,
        }
    }

    /// The string inside a string-kind value.
    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) | Value::Html(s) => Some(s),
            _ => None,
        }
    }
}

/// `fmt.Sprint(v)` for one value: what an action prints.
pub(super) fn print(v: &Value) -> String {
    let mut out = String::new();
    write_value(&mut out, v, false);
    out
}

fn write_value(out: &mut String, v: &Value, nested: bool) {
    match v {
        // Inside a struct or list fmt prints a nil interface as <nil>.
        Value::Nil => out.push_str(if nested { "<nil>" } else { "<no value>" }),
        Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Value::Int(n) => out.push_str(&n.to_string()),
        Value::Float(f) => out.push_str(&gofmt::verb_v(*f)),
        Value::Str(s) | Value::Html(s) => out.push_str(s),
        Value::Time(t) => out.push_str(&time_string(t)),
        Value::Duration(d) => out.push_str(&duration_string(*d)),
        Value::List(_, items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, item, true);
            }
            out.push(']');
        }
        Value::Map(_, m) => {
            out.push_str("map[");
            for (i, (k, v)) in m.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                out.push_str(k);
                out.push(':');
                out.push_str(v);
            }
            out.push(']');
        }
        Value::Struct(s) => {
            out.push('{');
            for (i, (_, f)) in s.fields.iter().enumerate() {
                if i > 0 {
                    out.push(' ');
                }
                write_value(out, f, true);
            }
            out.push('}');
        }
    }
}

/// `KV.SortedPairs`: `alertname` first, then the other names sorted.
pub(super) fn sorted_pairs(m: &BTreeMap<String, String>) -> Vec<(&str, &str)> {
    let mut pairs: Vec<(&str, &str)> = Vec::with_capacity(m.len());
    if let Some(v) = m.get("alertname") {
        pairs.push(("alertname", v));
    }
    pairs.extend(
        m.iter()
            .filter(|(k, _)| *k != "alertname")
            .map(|(k, v)| (k.as_str(), v.as_str())),
    );
    pairs
}

/// Go's `time.Time.String()`: `2006-01-02 15:04:05.999999999 +0000 UTC`.
pub(super) fn time_string(t: &DateTime<Tz>) -> String {
    format_go(t, "2006-01-02 15:04:05.999999999 -0700 MST")
}

/// Go's `time.Duration.String()`: `1h2m3.5s`, `1.5ms`, `0s`.
pub(super) fn duration_string(d: i64) -> String {
    if d == 0 {
        return "0s".into();
    }
    let neg = d < 0;
    let u = d.unsigned_abs();
    let sign = if neg { "-" } else { "" };
    if u < 1_000_000_000 {
        let (unit, scale) = if u < 1_000 {
            ("ns", 1)
        } else if u < 1_000_000 {
            ("µs", 1_000)
        } else {
            ("ms", 1_000_000)
        };
        return format!("{sign}{}{unit}", fraction(u, scale));
    }
    let secs = u / 1_000_000_000;
    let nanos = u % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let sec = fraction(s * 1_000_000_000 + nanos, 1_000_000_000);
    if h > 0 {
        format!("{sign}{h}h{m}m{sec}s")
    } else if m > 0 {
        format!("{sign}{m}m{sec}s")
    } else {
        format!("{sign}{sec}s")
    }
}

/// `v / scale` with the fraction's trailing zeros dropped.
fn fraction(v: u64, scale: u64) -> String {
    let whole = v / scale;
    let rest = v % scale;
    if rest == 0 {
        return whole.to_string();
    }
    let width = scale.ilog10() as usize;
    let digits = format!("{rest:0width$}");
    format!("{whole}.{}", digits.trim_end_matches('0'))
}

const MONTHS: [&str; 12] = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
];
const DAYS: [&str; 7] = [
    "Sunday",
    "Monday",
    "Tuesday",
    "Wednesday",
    "Thursday",
    "Friday",
    "Saturday",
];

/// Go's `time.Time.Format(layout)`: the reference time `Mon Jan 2 15:04:05 MST 2006` spelled
/// in the layout is replaced by `t`, in `t`'s zone.
pub(super) fn format_go(t: &DateTime<Tz>, layout: &str) -> String {
    let mut out = String::with_capacity(layout.len() + 10);
    let offset = t.offset().fix().local_minus_utc();
    // Go's numeric zones: sign, hours, minutes, seconds; `Z` forms print `Z` for UTC.
    let zone = |colons: bool, seconds: bool, minutes: bool, z: bool| {
        if z && offset == 0 {
            return "Z".to_string();
        }
        let sign = if offset < 0 { '-' } else { '+' };
        let a = offset.unsigned_abs();
        let (h, m, s) = (a / 3600, (a / 60) % 60, a % 60);
        let sep = if colons { ":" } else { "" };
        let mut text = format!("{sign}{h:02}");
        if minutes {
            text.push_str(&format!("{sep}{m:02}"));
        }
        if seconds {
            text.push_str(&format!("{sep}{s:02}"));
        }
        text
    };
    let mut rest = layout;
    let hour12 = |h: u32| if h.is_multiple_of(12) { 12 } else { h % 12 };
    while !rest.is_empty() {
        // Longest tokens first, as Go's nextStdChunk prefers them.
        let tokens: &[(&str, &dyn Fn() -> String)] = &[
            ("January", &|| MONTHS[t.month0() as usize].to_string()),
            ("Jan", &|| MONTHS[t.month0() as usize][..3].to_string()),
            ("Monday", &|| {
                DAYS[t.weekday().num_days_from_sunday() as usize].to_string()
            }),
            ("Mon", &|| {
                DAYS[t.weekday().num_days_from_sunday() as usize][..3].to_string()
            }),
            ("MST", &|| t.format("%Z").to_string()),
            ("2006", &|| format!("{:04}", t.year())),
            ("-07:00:00", &|| zone(true, true, true, false)),
            ("-0700", &|| zone(false, false, true, false)),
            ("-07:00", &|| zone(true, false, true, false)),
            ("-07", &|| zone(false, false, false, false)),
            ("Z07:00:00", &|| zone(true, true, true, true)),
            ("Z0700", &|| zone(false, false, true, true)),
            ("Z07:00", &|| zone(true, false, true, true)),
            ("Z07", &|| zone(false, false, false, true)),
            ("002", &|| format!("{:03}", t.ordinal())),
            ("__2", &|| format!("{:>3}", t.ordinal())),
            ("_2", &|| format!("{:>2}", t.day())),
            ("01", &|| format!("{:02}", t.month())),
            ("02", &|| format!("{:02}", t.day())),
            ("03", &|| format!("{:02}", hour12(t.hour()))),
            ("04", &|| format!("{:02}", t.minute())),
            ("05", &|| format!("{:02}", t.second())),
            ("06", &|| format!("{:02}", t.year().rem_euclid(100))),
            ("15", &|| format!("{:02}", t.hour())),
            ("PM", &|| {
                (if t.hour() >= 12 { "PM" } else { "AM" }).to_string()
            }),
            ("pm", &|| {
                (if t.hour() >= 12 { "pm" } else { "am" }).to_string()
            }),
            ("1", &|| t.month().to_string()),
            ("2", &|| t.day().to_string()),
            ("3", &|| hour12(t.hour()).to_string()),
            ("4", &|| t.minute().to_string()),
            ("5", &|| t.second().to_string()),
        ];
        if let Some(frac) = fraction_token(rest) {
            let nanos = format!("{:09}", t.nanosecond() % 1_000_000_000);
            let digits = &nanos[..frac.digits];
            if frac.trim {
                let trimmed = digits.trim_end_matches('0');
                if !trimmed.is_empty() {
                    out.push(frac.sep);
                    out.push_str(trimmed);
                }
            } else {
                out.push(frac.sep);
                out.push_str(digits);
            }
            rest = &rest[frac.len..];
            continue;
        }
        match tokens.iter().find(|(tok, _)| rest.starts_with(tok)) {
            // "Jan"/"Mon" only count when not the start of a longer word.
            Some((tok, f)) if !word_continues(tok, rest) => {
                out.push_str(&f());
                rest = &rest[tok.len()..];
            }
            _ => {
                let c = rest.chars().next().unwrap_or_default();
                out.push(c);
                rest = &rest[c.len_utf8()..];
            }
        }
    }
    out
}

fn word_continues(tok: &str, rest: &str) -> bool {
    matches!(tok, "Jan" | "Mon")
        && rest[tok.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_lowercase())
        && !rest.starts_with("January")
        && !rest.starts_with("Monday")
}

struct Frac {
    sep: char,
    digits: usize,
    trim: bool,
    len: usize,
}

/// `.000`/`,999`: fractional seconds, only right after a seconds field in Go;
/// accepted after any digit-free position here when followed by non-digits.
fn fraction_token(rest: &str) -> Option<Frac> {
    let mut chars = rest.chars();
    let sep = chars.next()?;
    if sep != '.' && sep != ',' {
        return None;
    }
    let digit = chars.next()?;
    if digit != '0' && digit != '9' {
        return None;
    }
    let n = 1 + rest[2..].chars().take_while(|&c| c == digit).count();
    if rest[1 + n..].starts_with(|c: char| c.is_ascii_digit()) {
        return None;
    }
    Some(Frac {
        sep,
        digits: n.min(9),
        trim: digit == '9',
        len: 1 + n,
    })
}

/// A time from Unix milliseconds; `None` is Go's zero time (year 1).
pub(super) fn time_from_ms(ms: Option<i64>) -> DateTime<Tz> {
    ms.and_then(DateTime::from_timestamp_millis)
        .map_or_else(zero_time, |t| t.with_timezone(&Tz::UTC))
}

pub(super) fn zero_time() -> DateTime<Tz> {
    DateTime::from_timestamp(-62_135_596_800, 0)
        .unwrap_or_default()
        .with_timezone(&Tz::UTC)
}
