//! `torchwatch query instant|range URL EXPR`, as promtool's: asks any Prometheus-compatible query
//! API (torchwatch's own, Prometheus, Thanos, Mimir) and prints the result the way promtool does
//! (`series => value @[unix seconds]`).

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// Asks `base`'s `/api/v1/{endpoint}` with `params`; the `data` of a success.
pub async fn fetch(base: &str, endpoint: &str, params: &[(&str, String)]) -> anyhow::Result<Value> {
    let url = format!("{}/api/v1/{endpoint}", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(120))
        .build()
        .context("cannot build the HTTP client")?;
    let answer = client
        .post(&url)
        .form(params)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}"))?;
    let status = answer.status();
    let body: Value = answer
        .json()
        .await
        .with_context(|| format!("{url} answered {status} without JSON"))?;
    if body["status"] != "success" {
        anyhow::bail!(
            "{url} answered {status}: {}: {}",
            body["errorType"].as_str().unwrap_or("error"),
            body["error"].as_str().unwrap_or("no message")
        );
    }
    Ok(body["data"].clone())
}

fn series(metric: &Value) -> String {
    let Some(labels) = metric.as_object() else {
        return "{}".into();
    };
    let name = labels.get("__name__").and_then(Value::as_str).unwrap_or("");
    let pairs: Vec<String> = labels
        .iter()
        .filter(|(k, _)| *k != "__name__")
        .map(|(k, v)| format!("{k}={:?}", v.as_str().unwrap_or("")))
        .collect();
    format!("{name}{{{}}}", pairs.join(", "))
}

fn point(p: &Value) -> String {
    format!(
        "{} @[{}]",
        p[1].as_str().unwrap_or("?"),
        p[0].as_f64()
            .map_or_else(|| "?".into(), crate::gofmt::plain)
    )
}

/// A time flag: Unix seconds or RFC 3339, as the query API takes them.
pub fn seconds(text: &str) -> Result<f64, String> {
    text.parse::<f64>()
        .ok()
        .or_else(|| {
            chrono::DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| t.timestamp_millis() as f64 / 1000.0)
        })
        .ok_or_else(|| format!("{text:?} is neither Unix seconds nor RFC 3339"))
}

/// promtool's range defaults: the last 5 minutes up to now, and a step giving about 250 points.
pub fn range_params(
    start: Option<&str>,
    end: Option<&str>,
    step: Option<&str>,
    now_s: f64,
) -> Result<(f64, f64, String), String> {
    let end = end.map(seconds).transpose()?.unwrap_or(now_s);
    let start = start.map(seconds).transpose()?.unwrap_or(end - 300.0);
    if start > end {
        return Err("--start must not be after --end".into());
    }
    let step = match step {
        Some(s) => s.to_string(),
        None => format!("{}s", ((end - start) / 250.0).floor().max(1.0)),
    };
    Ok((start, end, step))
}

/// A query result (`resultType` and `result`) as promtool prints it.
pub fn render(data: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    match data["resultType"].as_str() {
        Some("vector") => {
            for s in data["result"].as_array().unwrap_or(&empty) {
                let _ = writeln!(out, "{} => {}", series(&s["metric"]), point(&s["value"]));
            }
        }
        Some("matrix") => {
            for s in data["result"].as_array().unwrap_or(&empty) {
                let _ = writeln!(out, "{} =>", series(&s["metric"]));
                for p in s["values"].as_array().unwrap_or(&empty) {
                    let _ = writeln!(out, "{}", point(p));
                }
            }
        }
        Some("scalar") => {
            let _ = writeln!(out, "scalar: {}", point(&data["result"]));
        }
        Some("string") => {
            let _ = writeln!(out, "string: {}", point(&data["result"]));
        }
        _ => {
            let _ = writeln!(out, "{data}");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn renders_like_promtool() {
        let vector = json!({"resultType": "vector", "result": [
            {"metric": {"__name__": "up", "job": "tw", "instance": "a"}, "value": [1700000000.5, "1"]}
        ]});
        assert_eq!(
            render(&vector),
            "up{instance=\"a\", job=\"tw\"} => 1 @[1700000000.5]\n"
        );
        let matrix = json!({"resultType": "matrix", "result": [
            {"metric": {"job": "tw"}, "values": [[10, "1"], [20, "2"]]}
        ]});
        assert_eq!(render(&matrix), "{job=\"tw\"} =>\n1 @[10]\n2 @[20]\n");
        let scalar = json!({"resultType": "scalar", "result": [5, "3.5"]});
        assert_eq!(render(&scalar), "scalar: 3.5 @[5]\n");
    }

    #[test]
    fn range_defaults_are_promtools() {
        let (start, end, step) = range_params(None, None, None, 1000.0).unwrap();
        assert_eq!((start, end, step.as_str()), (700.0, 1000.0, "1s"));
        let (start, _, step) =
            range_params(Some("2023-11-14T22:13:20Z"), Some("1700010000"), None, 0.0).unwrap();
        assert_eq!((start, step.as_str()), (1_700_000_000.0, "40s"));
        assert!(range_params(Some("soon"), None, None, 0.0).is_err());
    }
}
