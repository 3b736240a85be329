//! `torchwatch cost report`: a running torchwatch's `/api/v1/cost` as a table a person reads at a
//! glance, or as the JSON itself. It reads the server rather than evaluating the policies itself,
//! so the figures are the ones `/metrics`, the alerts and the status page show.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use serde_json::Value;

/// The base URL of the torchwatch a config file describes: its `server.listen`, with an
/// unspecified address (`0.0.0.0`, `::`) reached over loopback.
pub fn url_of(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        ip if ip.is_unspecified() && ip.is_ipv4() => "127.0.0.1".parse().expect("literal"),
        ip if ip.is_unspecified() => "::1".parse().expect("literal"),
        ip => ip,
    };
    format!("http://{}", SocketAddr::new(ip, listen.port()))
}

/// Fetches `/api/v1/cost` from `base`; the `data` member of the answer.
pub async fn fetch(base: &str) -> anyhow::Result<Value> {
    let url = format!("{}/api/v1/cost", base.trim_end_matches('/'));
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let answer = client
        .get(&url)
        .send()
        .await
        .with_context(|| format!("cannot reach {url}; is torchwatch serving there?"))?;
    let status = answer.status();
    let text = answer
        .text()
        .await
        .with_context(|| format!("{url}: the answer broke off"))?;
    let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
    anyhow::ensure!(
        status.is_success(),
        "{url} answered {status}: {}",
        body["error"]
            .as_str()
            .unwrap_or("not torchwatch's cost API (an older version?)")
    );
    let data = &body["data"];
    anyhow::ensure!(
        data.is_object(),
        "{url} answered {status} without the cost API's data"
    );
    Ok(data.clone())
}

fn num(v: &Value) -> Option<f64> {
    v.as_f64()
}

fn fixed(v: &Value, decimals: usize) -> String {
    num(v).map_or_else(|| "-".into(), |n| format!("{n:.decimals$}"))
}

/// A share as a percentage with one decimal.
fn pct(v: &Value) -> String {
    percent(v, 1)
}

fn percent(v: &Value, decimals: usize) -> String {
    num(v).map_or_else(|| "-".into(), |n| format!("{:.decimals$} %", n * 100.0))
}

fn gib(v: &Value) -> Value {
    num(v).map_or(Value::Null, |b| (b / (1024.0 * 1024.0 * 1024.0)).into())
}

/// Renders the `data` of `/api/v1/cost` as text.
pub fn render(data: &Value) -> String {
    let mut out = String::new();
    let empty = Vec::new();
    let policies = data["policies"].as_array().unwrap_or(&empty);
    if policies.is_empty() {
        out.push_str("No cost policies are loaded (add cost_policies: to a policy file).\n");
    }
    for p in policies {
        let _ = writeln!(
            out,
            "cost policy {} ({}, every {}s)",
            p["name"].as_str().unwrap_or("?"),
            p["file"].as_str().unwrap_or("?"),
            p["interval_s"]
        );
        let last = &p["last"];
        if last.is_null() {
            let why = p["error"].as_str().unwrap_or("not evaluated yet");
            let _ = writeln!(out, "  no figures: {why}\n");
            continue;
        }
        let sizing = &last["right_sizing"];
        let recommended = &sizing["recommended"];
        let _ = writeln!(
            out,
            "  {:<14} {:>10} {:>10} {:>12} {:>10} {:>10} {:>11}  advice",
            "", "allocated", "used", "recommended", "per hour", "idle/h", "efficiency"
        );
        let rows = [
            ("CPU cores", "cpu_cores", "cpu", 2, false),
            ("memory GiB", "memory_bytes", "memory", 2, true),
            ("GPUs", "gpus", "gpu", 2, false),
        ];
        for (label, field, resource, decimals, bytes) in rows {
            let none = |side: &str| num(&last[side][field]).unwrap_or(0.0) == 0.0;
            if resource == "gpu" && none("allocated") && none("used") {
                continue;
            }
            let scaled = |v: &Value| if bytes { gib(v) } else { v.clone() };
            let recommendation = match resource {
                "gpu" => Value::Null,
                _ => scaled(&recommended[field]),
            };
            let advice = &sizing[resource];
            let advice = if advice.is_null() {
                String::new()
            } else {
                format!(
                    "{} (mean use {})",
                    advice["advice"].as_str().unwrap_or("?"),
                    pct(&advice["mean_utilisation"])
                )
            };
            let _ = writeln!(
                out,
                "  {:<14} {:>10} {:>10} {:>12} {:>10} {:>10} {:>11}  {advice}",
                label,
                fixed(&scaled(&last["allocated"][field]), decimals),
                fixed(&scaled(&last["used"][field]), decimals),
                fixed(&recommendation, decimals),
                fixed(&last["costs"]["hourly"][resource], 4),
                fixed(&last["costs"]["idle_hourly"][resource], 4),
                pct(&last["costs"]["efficiency"][resource]),
            );
        }
        let _ = writeln!(
            out,
            "  {:<14} {:>10} {:>10} {:>12} {:>10} {:>10} {:>11}",
            "total",
            "",
            "",
            "",
            fixed(&last["costs"]["hourly"]["total"], 4),
            fixed(&last["costs"]["idle_hourly"]["total"], 4),
            pct(&last["costs"]["efficiency"]["total"]),
        );
        let _ = writeln!(
            out,
            "  idle share {}; per 1,000 inferences {} (at {} inferences/s)",
            pct(&last["costs"]["idle_share"]),
            fixed(&last["cost_per_1k_inferences"], 6),
            fixed(&last["inferences_per_second"], 2),
        );
        if sizing.is_null() {
            let _ = writeln!(
                out,
                "  right-sizing: waiting for history: {}",
                last["right_sizing_pending"].as_str().unwrap_or("?")
            );
        } else {
            let _ = writeln!(
                out,
                "  right-sizing over {} points: {} per hour instead of {}, saving {} ({:.1} %)",
                sizing["points"],
                fixed(&sizing["recommended_hourly"], 4),
                fixed(&sizing["current_hourly"], 4),
                fixed(&sizing["savings_hourly"], 4),
                num(&sizing["savings_percent"]).unwrap_or(0.0),
            );
        }
        out.push('\n');
    }
    for c in data["caches"].as_array().unwrap_or(&empty) {
        let curve: Vec<String> = c["curve"]
            .as_array()
            .unwrap_or(&empty)
            .iter()
            .map(|p| format!("{} {}", p["capacity"], pct(&p["hit_ratio"])))
            .collect();
        let _ = writeln!(
            out,
            "cache of {}: capacity {}, measured hit ratio {}",
            c["model"].as_str().unwrap_or("?"),
            c["capacity"],
            pct(&c["measured_hit_ratio"]),
        );
        if curve.is_empty() {
            let _ = writeln!(
                out,
                "  estimate: waiting for sampled lookups ({} so far)",
                c["sampled_references"]
            );
        } else {
            let why = match c["recommended_by"].as_str() {
                Some("target") => format!("reaches the target {}", pct(&c["target_hit_ratio"])),
                _ => format!(
                    "the target {} is out of reach: the curve's knee",
                    pct(&c["target_hit_ratio"])
                ),
            };
            let _ = writeln!(
                out,
                "  estimated hit ratio by capacity (SHARDS, sampling {}): {}",
                percent(&c["sampling_rate"], 2),
                curve.join(", ")
            );
            let _ = writeln!(
                out,
                "  recommended capacity {} ({why}); the tutorial's +-100 rule says {}",
                c["recommended_capacity"], c["naive_capacity"]
            );
        }
    }
    let scale = data["scale_policies"].as_array().unwrap_or(&empty);
    if !scale.is_empty() {
        out.push('\n');
    }
    for s in scale {
        let _ = writeln!(
            out,
            "scale policy {}: replicas {} x {} = {} per hour",
            s["policy"].as_str().unwrap_or("?"),
            s["current_replicas"],
            fixed(&s["price_per_replica_hour"], 4),
            fixed(&s["hourly_cost"], 4),
        );
    }
    out
}
