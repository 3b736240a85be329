//! Parsers for the Prometheus text format 0.0.4 and OpenMetrics 1.0, chosen by
//! Content-Type. Hand-written: no sample is dropped silently, and any error
//! names the line, so a bad exposition fails its scrape with a reason.

use std::fmt;

/// Which exposition format a body is in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// `text/plain; version=0.0.4` (also the fallback).
    Text,
    /// `application/openmetrics-text; version=1.0.0`.
    OpenMetrics,
}

impl Format {
    /// Picks the parser for a response's Content-Type header.
    pub fn from_content_type(content_type: Option<&str>) -> Format {
        match content_type {
            Some(ct) if ct.trim_start().starts_with("application/openmetrics-text") => {
                Format::OpenMetrics
            }
            _ => Format::Text,
        }
    }
}

/// One sample of an exposition.
#[derive(Clone, Debug, PartialEq)]
pub struct ParsedSample {
    /// Metric name (the series' `__name__`).
    pub name: String,
    /// Labels in the order written.
    pub labels: Vec<(String, String)>,
    /// The value.
    pub value: f64,
    /// Explicit timestamp in milliseconds, if the exposition gave one.
    pub timestamp_ms: Option<i64>,
}

/// Why an exposition was rejected; `line` is 1-based.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Line of the problem.
    pub line: usize,
    /// What is wrong there.
    pub message: String,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}: {}", self.line, self.message)
    }
}

impl std::error::Error for ParseError {}

/// Parses a whole exposition.
pub fn parse(body: &str, format: Format) -> Result<Vec<ParsedSample>, ParseError> {
    let mut samples = Vec::new();
    let mut saw_eof = false;
    for (i, line) in body.split('\n').enumerate() {
        let n = i + 1;
        let err = |message: String| ParseError { line: n, message };
        if saw_eof {
            if line.is_empty() && n == body.split('\n').count() {
                break;
            }
            return Err(err("content after # EOF".into()));
        }
        let line = if format == Format::Text {
            line.trim_end_matches('\r')
        } else {
            line
        };
        if line.trim().is_empty() {
            if format == Format::OpenMetrics && n != body.split('\n').count() {
                return Err(err("empty line".into()));
            }
            continue;
        }
        if let Some(comment) = line.strip_prefix('#') {
            if format == Format::OpenMetrics {
                if comment == " EOF" {
                    saw_eof = true;
                    continue;
                }
                check_openmetrics_descriptor(comment).map_err(err)?;
            } else {
                check_text_comment(comment).map_err(err)?;
            }
            continue;
        }
        samples.push(parse_sample(line, format).map_err(err)?);
    }
    if format == Format::OpenMetrics && !saw_eof {
        return Err(ParseError {
            line: body.split('\n').count(),
            message: "missing # EOF".into(),
        });
    }
    Ok(samples)
}

fn check_text_comment(comment: &str) -> Result<(), String> {
    let mut words = comment.trim_start().splitn(3, [' ', '\t']);
    match words.next() {
        Some("TYPE") => {
            let name = words.next().unwrap_or("");
            let kind = words.next().unwrap_or("").trim();
            if !is_metric_name(name) {
                return Err(format!("invalid metric name in TYPE line: {name:?}"));
            }
            if !matches!(
                kind,
                "counter" | "gauge" | "histogram" | "summary" | "untyped"
            ) {
                return Err(format!("invalid metric type {kind:?}"));
            }
            Ok(())
        }
        Some("HELP") => {
            let name = words.next().unwrap_or("");
            if !is_metric_name(name) {
                return Err(format!("invalid metric name in HELP line: {name:?}"));
            }
            Ok(())
        }
        // Any other comment is free text.
        _ => Ok(()),
    }
}

fn check_openmetrics_descriptor(comment: &str) -> Result<(), String> {
    let rest = comment
        .strip_prefix(' ')
        .ok_or("comments must be # TYPE, # HELP, # UNIT or # EOF")?;
    let mut words = rest.splitn(3, ' ');
    let keyword = words.next().unwrap_or("");
    let name = words.next().unwrap_or("");
    let quoted = name.len() >= 2 && name.starts_with('"') && name.ends_with('"');
    if !(is_metric_name(name) || quoted) {
        return Err(format!("invalid metric name {name:?} in # {keyword}"));
    }
    match keyword {
        "TYPE" => {
            let kind = words.next().unwrap_or("");
            if !matches!(
                kind,
                "counter"
                    | "gauge"
                    | "histogram"
                    | "gaugehistogram"
                    | "summary"
                    | "info"
                    | "stateset"
                    | "unknown"
            ) {
                return Err(format!("invalid metric type {kind:?}"));
            }
            Ok(())
        }
        "HELP" | "UNIT" => Ok(()),
        other => Err(format!("unknown descriptor # {other}")),
    }
}

/// `[a-zA-Z_:][a-zA-Z0-9_:]*`
fn is_metric_name(s: &str) -> bool {
    crate::storage::is_valid_metric_name(s)
}

struct Cursor<'a> {
    s: &'a str,
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn peek(&self) -> Option<char> {
        self.s[self.pos..].chars().next()
    }

    fn bump(&mut self) -> Option<char> {
        let c = self.peek()?;
        self.pos += c.len_utf8();
        Some(c)
    }

    fn eat(&mut self, c: char) -> bool {
        if self.peek() == Some(c) {
            self.pos += c.len_utf8();
            true
        } else {
            false
        }
    }

    fn skip_blanks(&mut self) -> usize {
        let start = self.pos;
        while matches!(self.peek(), Some(' ' | '\t')) {
            self.pos += 1;
        }
        self.pos - start
    }

    fn take_while(&mut self, f: impl Fn(char) -> bool) -> &'a str {
        let start = self.pos;
        while self.peek().is_some_and(&f) {
            self.bump();
        }
        &self.s[start..self.pos]
    }

    fn name(&mut self) -> &'a str {
        self.take_while(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
    }

    /// A double-quoted string. Like Prometheus' lexers, any character may follow a backslash;
    /// only `\\`, `\"` and `\n` are replaced, other escapes stay as written.
    fn quoted(&mut self) -> Result<String, String> {
        if !self.eat('"') {
            return Err("expected '\"'".into());
        }
        let mut out = String::new();
        loop {
            match self.bump() {
                None => return Err("unterminated quoted string".into()),
                Some('"') => return Ok(out),
                Some('\\') => match self.bump() {
                    Some('\\') => out.push('\\'),
                    Some('"') => out.push('"'),
                    Some('n') => out.push('\n'),
                    Some(c) => {
                        out.push('\\');
                        out.push(c);
                    }
                    None => return Err("unterminated quoted string".into()),
                },
                Some(c) => out.push(c),
            }
        }
    }
}

fn parse_sample(line: &str, format: Format) -> Result<ParsedSample, String> {
    let mut c = Cursor { s: line, pos: 0 };
    if format == Format::Text {
        c.skip_blanks();
    }
    let mut name = c.name().to_string();
    let mut labels = Vec::new();
    if c.peek() == Some('{') {
        let quoted_name = parse_labels(&mut c, &mut labels)?;
        if let Some(q) = quoted_name {
            if !name.is_empty() {
                return Err("metric name given twice".into());
            }
            name = q;
        }
    }
    if name.is_empty() {
        return Err(format!("expected a metric name at {:?}", preview(line)));
    }
    if c.skip_blanks() == 0 {
        return Err("expected a blank before the value".into());
    }
    let value_text = c.take_while(|c| c != ' ' && c != '\t');
    let value = parse_float(value_text).ok_or_else(|| format!("invalid value {value_text:?}"))?;
    let mut timestamp_ms = None;
    let blanks = c.skip_blanks();
    if blanks > 0 && c.peek().is_some_and(|ch| ch != '#') {
        let ts = c.take_while(|c| c != ' ' && c != '\t');
        timestamp_ms = Some(match format {
            Format::Text => ts
                .parse::<i64>()
                .map_err(|_| format!("invalid timestamp {ts:?}"))?,
            Format::OpenMetrics => {
                let secs = parse_float(ts)
                    .filter(|v| v.is_finite())
                    .ok_or_else(|| format!("invalid timestamp {ts:?}"))?;
                (secs * 1000.0).round() as i64
            }
        });
        c.skip_blanks();
    }
    if c.peek() == Some('#') {
        if format == Format::Text {
            return Err("unexpected '#' after the value".into());
        }
        parse_exemplar(&mut c)?;
    }
    if c.pos != line.len() {
        return Err(format!("unexpected text {:?}", preview(&line[c.pos..])));
    }
    Ok(ParsedSample {
        name,
        labels,
        value,
        timestamp_ms,
    })
}

/// Parses `{...}`; returns a metric name given as a bare quoted string.
fn parse_labels(
    c: &mut Cursor,
    labels: &mut Vec<(String, String)>,
) -> Result<Option<String>, String> {
    c.eat('{');
    let mut quoted_name = None;
    loop {
        c.skip_blanks();
        if c.eat('}') {
            return Ok(quoted_name);
        }
        let label = if c.peek() == Some('"') {
            let q = c.quoted()?;
            c.skip_blanks();
            if matches!(c.peek(), Some(',' | '}')) {
                // `{"metric.name", ...}`: the UTF-8 metric name.
                if quoted_name.is_some() || !labels.is_empty() {
                    return Err("a quoted metric name must come first".into());
                }
                quoted_name = Some(q);
                c.eat(',');
                continue;
            }
            q
        } else {
            let n = c.take_while(|c| c.is_ascii_alphanumeric() || c == '_');
            if n.is_empty() || n.starts_with(|c: char| c.is_ascii_digit()) {
                return Err(format!(
                    "invalid label name at {:?}",
                    preview(&c.s[c.pos..])
                ));
            }
            n.to_string()
        };
        c.skip_blanks();
        if !c.eat('=') {
            return Err(format!("expected '=' after label name {label:?}"));
        }
        c.skip_blanks();
        let value = c.quoted()?;
        if labels.iter().any(|(n, _)| *n == label) {
            return Err(format!("duplicate label name {label:?}"));
        }
        labels.push((label, value));
        c.skip_blanks();
        if c.eat(',') {
            continue;
        }
        if c.eat('}') {
            return Ok(quoted_name);
        }
        return Err(format!(
            "expected ',' or '}}' at {:?}",
            preview(&c.s[c.pos..])
        ));
    }
}

/// ` # {labels} value [timestamp]`: checked for syntax, then discarded (the
/// store keeps no exemplars).
fn parse_exemplar(c: &mut Cursor) -> Result<(), String> {
    c.eat('#');
    if c.skip_blanks() == 0 || c.peek() != Some('{') {
        return Err("expected ' {' to start an exemplar".into());
    }
    let mut labels = Vec::new();
    parse_labels(c, &mut labels)?;
    let runes: usize = labels
        .iter()
        .map(|(n, v)| n.chars().count() + v.chars().count())
        .sum();
    if runes > 128 {
        return Err("exemplar labels are longer than 128 characters".into());
    }
    if c.skip_blanks() == 0 {
        return Err("expected a blank before the exemplar value".into());
    }
    let v = c.take_while(|c| c != ' ' && c != '\t');
    parse_float(v).ok_or_else(|| format!("invalid exemplar value {v:?}"))?;
    if c.skip_blanks() > 0 && c.peek().is_some() {
        let ts = c.take_while(|c| c != ' ' && c != '\t');
        parse_float(ts).ok_or_else(|| format!("invalid exemplar timestamp {ts:?}"))?;
    }
    Ok(())
}

/// Go's `strconv.ParseFloat` for what expositions contain, incl. `NaN` and `±Inf`.
fn parse_float(s: &str) -> Option<f64> {
    match s {
        "NaN" | "nan" => Some(f64::NAN),
        "+Inf" | "Inf" | "inf" | "+inf" => Some(f64::INFINITY),
        "-Inf" | "-inf" => Some(f64::NEG_INFINITY),
        _ if s.is_empty()
            || s.contains(|c: char| c.is_ascii_alphabetic() && c != 'e' && c != 'E') =>
        {
            None
        }
        _ => s.parse::<f64>().ok(),
    }
}

fn preview(s: &str) -> String {
    s.chars().take(40).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(line: &str, format: Format) -> ParsedSample {
        let body = match format {
            Format::Text => format!("{line}\n"),
            Format::OpenMetrics => format!("{line}\n# EOF\n"),
        };
        let mut s = parse(&body, format).unwrap_or_else(|e| panic!("{line}: {e}"));
        assert_eq!(s.len(), 1);
        s.remove(0)
    }

    #[test]
    fn text_format_details() {
        let s = one(
            r#"a:b_c{x="1\"\\\n}",y="é",} -Inf 1700000000123"#,
            Format::Text,
        );
        assert_eq!(s.name, "a:b_c");
        assert_eq!(
            s.labels,
            vec![("x".into(), "1\"\\\n}".into()), ("y".into(), "é".into())]
        );
        assert_eq!(s.value, f64::NEG_INFINITY);
        assert_eq!(s.timestamp_ms, Some(1_700_000_000_123));
        assert!(one("x{} NaN", Format::Text).value.is_nan());
        assert_eq!(one("  x 1e3", Format::Text).value, 1000.0);
        let q = one(r#"{"my.metric", "label.x"="v"} 2"#, Format::Text);
        assert_eq!(
            (q.name.as_str(), q.labels[0].0.as_str()),
            ("my.metric", "label.x")
        );
        // Prometheus ingests unknown escapes as written (its lexer takes `\\.`).
        for format in [Format::Text, Format::OpenMetrics] {
            let s = one(r#"x{path="C:\temp\q",tab="a\tb"} 1"#, format);
            assert_eq!(
                s.labels,
                vec![
                    ("path".into(), r"C:\temp\q".into()),
                    ("tab".into(), r"a\tb".into())
                ]
            );
        }
        let body = "# HELP x some help\n# TYPE x counter\n# free comment\n\nx 1\ny 2\n";
        assert_eq!(parse(body, Format::Text).unwrap().len(), 2);
    }

    #[test]
    fn openmetrics_details() {
        let s = one(
            r#"req_total{a="b"} 3 1700000000.5 # {trace_id="abc"} 1 1700000000.1"#,
            Format::OpenMetrics,
        );
        assert_eq!(s.timestamp_ms, Some(1_700_000_000_500));
        assert!(
            parse("x 1\n", Format::OpenMetrics).is_err(),
            "# EOF is required"
        );
        assert!(parse("x 1\n# EOF\nx 2\n", Format::OpenMetrics).is_err());
        assert!(parse("x 1\n\n# EOF\n", Format::OpenMetrics).is_err());
    }

    #[test]
    fn errors_name_the_line() {
        for (body, line) in [
            ("a 1\nb{x=\"1\" 2\n", 2),
            ("a 1\nb 1 2 3\n", 2),
            ("a one\n", 1),
            ("# TYPE a countr\n", 1),
            ("a{x=\"1\",x=\"2\"} 1\n", 1),
            ("a 1 # {x=\"y\"} 1\n", 1),
            ("{} 1\n", 1),
        ] {
            let e = parse(body, Format::Text).expect_err(body);
            assert_eq!(e.line, line, "{body:?}: {e}");
        }
    }
}

#[cfg(test)]
mod properties {
    use super::*;
    use proptest::prelude::*;

    fn render_value(v: f64) -> String {
        if v.is_nan() {
            "NaN".into()
        } else if v == f64::INFINITY {
            "+Inf".into()
        } else if v == f64::NEG_INFINITY {
            "-Inf".into()
        } else {
            format!("{v:?}")
        }
    }

    fn escape(s: &str) -> String {
        s.replace('\\', "\\\\")
            .replace('"', "\\\"")
            .replace('\n', "\\n")
    }

    fn sample() -> impl Strategy<Value = ParsedSample> {
        (
            "[a-zA-Z_:][a-zA-Z0-9_:]{0,20}",
            proptest::collection::btree_map("[a-zA-Z_][a-zA-Z0-9_]{0,10}", any::<String>(), 0..4),
            prop_oneof![
                any::<f64>(),
                Just(f64::NAN),
                Just(f64::INFINITY),
                Just(f64::NEG_INFINITY)
            ],
            proptest::option::of(-1_000_000_000_000i64..10_000_000_000_000),
        )
            .prop_map(|(name, labels, value, timestamp_ms)| ParsedSample {
                name,
                labels: labels.into_iter().collect(),
                value,
                timestamp_ms,
            })
    }

    fn render(samples: &[ParsedSample], format: Format, exemplars: bool) -> String {
        let mut out = String::new();
        for s in samples {
            out.push_str(&format!("# TYPE {} untyped\n", s.name).replace(
                "untyped",
                match format {
                    Format::Text => "untyped",
                    Format::OpenMetrics => "unknown",
                },
            ));
            out.push_str(&s.name);
            if !s.labels.is_empty() {
                let inner: Vec<String> = s
                    .labels
                    .iter()
                    .map(|(n, v)| format!("{n}=\"{}\"", escape(v)))
                    .collect();
                out.push_str(&format!("{{{}}}", inner.join(",")));
            }
            out.push(' ');
            out.push_str(&render_value(s.value));
            if let Some(ts) = s.timestamp_ms {
                match format {
                    Format::Text => out.push_str(&format!(" {ts}")),
                    Format::OpenMetrics => out.push_str(&format!(" {}", ts as f64 / 1000.0)),
                }
            }
            if exemplars && format == Format::OpenMetrics {
                out.push_str(" # {trace_id=\"0af7651916cd43dd8448eb211c80319c\"} 1.5");
            }
            out.push('\n');
        }
        if format == Format::OpenMetrics {
            out.push_str("# EOF\n");
        }
        out
    }

    fn same(a: &[ParsedSample], b: &[ParsedSample]) -> bool {
        a.len() == b.len()
            && a.iter().zip(b).all(|(x, y)| {
                x.name == y.name
                    && x.labels == y.labels
                    && x.timestamp_ms == y.timestamp_ms
                    && (x.value == y.value || (x.value.is_nan() && y.value.is_nan()))
            })
    }

    proptest! {
        #[test]
        fn text_round_trips(samples in proptest::collection::vec(sample(), 0..8)) {
            let body = render(&samples, Format::Text, false);
            let parsed = parse(&body, Format::Text).map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
            prop_assert!(same(&samples, &parsed), "{body}");
        }

        #[test]
        fn openmetrics_round_trips(samples in proptest::collection::vec(sample(), 0..8), exemplars: bool) {
            let body = render(&samples, Format::OpenMetrics, exemplars);
            let parsed = parse(&body, Format::OpenMetrics).map_err(|e| TestCaseError::fail(format!("{e}\n{body}")))?;
            prop_assert!(same(&samples, &parsed), "{body}");
        }

        #[test]
        fn arbitrary_input_never_panics(body in any::<String>(), om: bool) {
            let format = if om { Format::OpenMetrics } else { Format::Text };
            if let Err(e) = parse(&body, format) {
                prop_assert!(e.line >= 1 && e.line <= body.split('\n').count());
            }
        }

        #[test]
        fn corrupting_a_valid_body_is_an_error_or_a_valid_parse(
            samples in proptest::collection::vec(sample(), 1..5),
            cut in 0usize..400,
        ) {
            let body = render(&samples, Format::Text, false);
            let cut = body.char_indices().map(|(i, _)| i).nth(cut % body.chars().count()).unwrap_or(0);
            let _ = parse(&body[..cut], Format::Text);
        }
    }
}
