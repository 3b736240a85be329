//! Structured logs: one JSON object per line (`timestamp`, `level`, `event`, `request_id` where a
//! request is involved, and the event's fields), to stdout and optionally to a file; and the
//! `logs search` command that filters such files.

use std::collections::BTreeMap;
use std::fs::OpenOptions;
use std::io::{BufRead, Write};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::SystemTime;

use anyhow::Context;
use serde_json::Value;
use tracing_subscriber::EnvFilter;

mod writer;

/// Picks an even share of events, `ratio` of them (0 none, 1 all), deterministically: the n-th
/// event is taken when `floor(n * ratio)` steps up, so 0.25 takes every fourth.
#[derive(Debug)]
pub struct Sampler {
    ratio: f64,
    seen: AtomicU64,
}

impl Sampler {
    /// A sampler taking `ratio` (within 0..=1) of the events.
    pub fn new(ratio: f64) -> Sampler {
        Sampler {
            ratio,
            seen: AtomicU64::new(0),
        }
    }

    /// Whether this event is one of the share.
    pub fn take(&self) -> bool {
        if self.ratio >= 1.0 {
            return true;
        }
        let n = self.seen.fetch_add(1, Ordering::Relaxed) as f64;
        ((n + 1.0) * self.ratio).floor() > (n * self.ratio).floor()
    }
}

/// Keeps the background log writer writing; drop it last, at exit.
pub struct LogGuards {
    _writer: writer::WriterGuard,
}

/// Installs the JSON-lines subscriber writing to stdout and, when given, to `file`.
pub fn init(level: &str, file: Option<&Path>) -> anyhow::Result<LogGuards> {
    let filter = EnvFilter::try_new(level)
        .with_context(|| format!("logging.level: '{level}' is not a level or filter directive"))?;
    let mut outputs: Vec<Box<dyn Write + Send>> = vec![Box::new(std::io::stdout())];
    if let Some(path) = file {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir)
                .with_context(|| format!("cannot create log directory {}", dir.display()))?;
        }
        let file = OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .with_context(|| format!("cannot open log file {}", path.display()))?;
        outputs.push(Box::new(file));
    }
    // A slow terminal or disk never stalls a request, and no line is dropped: see `writer`.
    let (lines, guard) = writer::start(outputs).context("cannot start the log writer thread")?;
    tracing_subscriber::fmt()
        .json()
        .flatten_event(true)
        .with_current_span(false)
        .with_span_list(false)
        .with_target(false)
        .with_env_filter(filter)
        .with_writer(lines)
        .init();
    Ok(LogGuards { _writer: guard })
}

/// The filters of `torchwatch logs search`.
#[derive(Debug, Default)]
pub struct Filter {
    /// Only this event.
    pub event: Option<String>,
    /// Only this level or more severe (`error` > `warn` > `info` > `debug` > `trace`).
    pub level: Option<String>,
    /// Only lines at or after this time.
    pub since: Option<SystemTime>,
    /// Only lines at or before this time.
    pub until: Option<SystemTime>,
    /// Top-level fields that must equal these values (compared as text).
    pub fields: BTreeMap<String, String>,
}

fn severity(level: &str) -> Option<u8> {
    match level.to_ascii_lowercase().as_str() {
        "trace" => Some(0),
        "debug" => Some(1),
        "info" => Some(2),
        "warn" | "warning" => Some(3),
        "error" => Some(4),
        _ => None,
    }
}

/// Parses a `--since`/`--until` value: an RFC 3339 time (`2026-11-25T10:00:00Z`) or a duration
/// before `now` (`15m`, `2h`).
pub fn parse_time(text: &str, now: SystemTime) -> Result<SystemTime, String> {
    if let Ok(time) = humantime::parse_rfc3339_weak(text) {
        return Ok(time);
    }
    humantime::parse_duration(text)
        .map(|ago| now.checked_sub(ago).unwrap_or(SystemTime::UNIX_EPOCH))
        .map_err(|_| {
            format!(
                "'{text}' is neither an RFC 3339 time (2026-11-25T10:00:00Z) nor a duration (15m)"
            )
        })
}

/// Parses `key=value` arguments.
pub fn parse_field(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .filter(|(key, _)| !key.is_empty())
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("'{text}' is not key=value"))
}

impl Filter {
    /// Checks the level name now, so a typo is an error rather than an empty result.
    pub fn validate(&self) -> Result<(), String> {
        match &self.level {
            Some(level) if severity(level).is_none() => Err(format!(
                "--level '{level}' is not one of trace, debug, info, warn, error"
            )),
            _ => Ok(()),
        }
    }

    /// True when a parsed log line passes every filter.
    pub fn matches(&self, line: &Value) -> bool {
        let text = |key: &str| line.get(key).map(value_text);
        if let Some(event) = &self.event
            && text("event").as_deref() != Some(event)
        {
            return false;
        }
        if let Some(minimum) = self.level.as_deref().and_then(severity) {
            let level = text("level").as_deref().and_then(severity);
            if level.is_none_or(|l| l < minimum) {
                return false;
            }
        }
        if self.since.is_some() || self.until.is_some() {
            let Some(time) = text("timestamp").and_then(|t| humantime::parse_rfc3339_weak(&t).ok())
            else {
                return false;
            };
            if self.since.is_some_and(|since| time < since)
                || self.until.is_some_and(|until| time > until)
            {
                return false;
            }
        }
        self.fields
            .iter()
            .all(|(key, want)| text(key).as_deref() == Some(want.as_str()))
    }
}

fn value_text(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Prints the lines of `reader` that match; lines that are not JSON objects are skipped.
/// Returns how many matched.
pub fn search(reader: impl BufRead, filter: &Filter, out: &mut impl Write) -> anyhow::Result<u64> {
    let mut matched = 0;
    for line in reader.lines() {
        let line = line.context("cannot read the log")?;
        let Ok(parsed) = serde_json::from_str::<Value>(&line) else {
            continue;
        };
        if parsed.is_object() && filter.matches(&parsed) {
            writeln!(out, "{line}")?;
            matched += 1;
        }
    }
    Ok(matched)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const LOG: &str = r#"{"timestamp":"2026-11-25T10:00:00.000001Z","level":"INFO","event":"request_received","request_id":"a"}
not json
{"timestamp":"2026-11-25T10:00:01Z","level":"WARN","event":"error_occurred","request_id":"a","status":400}
{"timestamp":"2026-11-25T10:05:00Z","level":"INFO","event":"response_sent","request_id":"b","status":200}
"#;

    fn run(filter: Filter) -> Vec<String> {
        let mut out = Vec::new();
        search(LOG.as_bytes(), &filter, &mut out).unwrap();
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn the_sampler_takes_an_even_share() {
        let taken = |ratio: f64| -> Vec<usize> {
            let sampler = Sampler::new(ratio);
            (0..12).filter(|_| sampler.take()).collect()
        };
        assert_eq!(taken(0.25), [3, 7, 11]);
        assert_eq!(taken(0.5), [1, 3, 5, 7, 9, 11]);
        assert_eq!(taken(1.0).len(), 12);
        assert!(taken(0.0).is_empty());
    }

    #[test]
    fn filters_by_event_level_time_and_fields() {
        let by_event = run(Filter {
            event: Some("response_sent".into()),
            ..Filter::default()
        });
        assert_eq!(by_event.len(), 1);
        assert!(by_event[0].contains(r#""request_id":"b""#));

        let warnings = run(Filter {
            level: Some("warn".into()),
            ..Filter::default()
        });
        assert_eq!(warnings.len(), 1);

        let now = SystemTime::now();
        let window = run(Filter {
            since: Some(parse_time("2026-11-25T10:00:00.5Z", now).unwrap()),
            until: Some(parse_time("2026-11-25T10:01:00Z", now).unwrap()),
            ..Filter::default()
        });
        assert_eq!(window.len(), 1);
        assert!(window[0].contains("error_occurred"));

        let fields = BTreeMap::from([
            ("request_id".into(), "a".into()),
            ("status".into(), "400".into()),
        ]);
        assert_eq!(
            run(Filter {
                fields,
                ..Filter::default()
            })
            .len(),
            1
        );
    }

    #[test]
    fn relative_times_count_back_from_now() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(3600);
        assert_eq!(
            parse_time("15m", now).unwrap(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(2700)
        );
        assert!(parse_time("yesterday", now).is_err());
    }

    #[test]
    fn unknown_level_is_an_error() {
        let filter = Filter {
            level: Some("loud".into()),
            ..Filter::default()
        };
        assert!(filter.validate().unwrap_err().contains("'loud'"));
    }
}
