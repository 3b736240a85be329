//! The HTML page at `/`: rule groups, their rules' health and state, last
//! evaluation and error, and active alerts, like Prometheus' alerts and rules
//! pages. Rendered on the server; no JavaScript.

use axum::Router;
use axum::extract::State;
use axum::response::Html;
use axum::routing::get;
use std::fmt::Write as _;

use super::api::QueryApi;
use crate::clock::rfc3339;
use crate::policy::{CostStatus, PolicyStatus};
use crate::rules::{AlertState, RuleStatus};
use crate::serve::{CacheAdvice, Recommendation};

/// The `/` route.
pub fn router<S: Clone + Send + Sync + 'static>(api: QueryApi) -> Router<S> {
    Router::new().route("/", get(page)).with_state(api)
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn labels_html<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    pairs
        .into_iter()
        .map(|(k, v)| {
            format!(
                "<span class=label>{}=&quot;{}&quot;</span>",
                escape(k),
                escape(v)
            )
        })
        .collect::<Vec<_>>()
        .join(" ")
}

fn state_class(state: AlertState) -> &'static str {
    match state {
        AlertState::Firing => "firing",
        AlertState::Pending => "pending",
        AlertState::Inactive => "inactive",
    }
}

fn rule_row(out: &mut String, rule: &RuleStatus) {
    let state = if rule.kind == "alerting" {
        let s = rule.state();
        format!("<span class={}>{}</span>", state_class(s), s.as_str())
    } else {
        String::new()
    };
    let _ = write!(
        out,
        "<tr><td>{}</td><td>{}</td><td><span class={}>{}</span> {state}</td><td>{}</td><td>{:.3} ms</td><td><code>{}</code></td><td class=error>{}</td></tr>",
        escape(&rule.name),
        rule.kind,
        rule.health(),
        rule.health(),
        rule.last_evaluation
            .map(rfc3339)
            .unwrap_or_else(|| "never".into()),
        rule.evaluation_time_s * 1000.0,
        escape(&rule.query),
        escape(rule.last_error.as_deref().unwrap_or("")),
    );
    if !rule.alerts.is_empty() {
        out.push_str("<tr><td></td><td colspan=6><table class=alerts><tr><th>labels</th><th>state</th><th>active since</th><th>value</th></tr>");
        for alert in &rule.alerts {
            let _ = write!(
                out,
                "<tr><td>{}</td><td class={}>{}</td><td>{}</td><td>{}</td></tr>",
                labels_html(
                    alert
                        .labels
                        .iter()
                        .map(|l| (l.name.as_str(), l.value.as_str()))
                ),
                state_class(alert.state),
                alert.state.as_str(),
                rfc3339(alert.active_at),
                crate::gofmt::verb_v(alert.value),
            );
        }
        out.push_str("</table></td></tr>");
    }
}

fn scale_section(out: &mut String, policies: &[PolicyStatus]) {
    out.push_str("<h2>Scale policies</h2>");
    if policies.is_empty() {
        out.push_str(
            "<p>No scale policies are loaded (see <code>policies.files</code> in the config).</p>",
        );
        return;
    }
    out.push_str("<p>JSON: <a href=\"/api/v1/scale\">/api/v1/scale</a>.</p><table><tr><th>policy</th><th>algorithm</th><th>actuator</th><th>current</th><th>desired</th><th>bounds</th><th>last decision</th><th>why</th><th>metrics</th></tr>");
    for p in policies {
        let last = p.last.as_ref();
        let count = |n: Option<u32>| n.map(|n| n.to_string()).unwrap_or_else(|| "-".into());
        let metrics: Vec<String> = last
            .map(|d| {
                d.metrics
                    .iter()
                    .map(|m| {
                        let value = m.value.map(crate::gofmt::verb_v);
                        format!(
                            "<code>{}</code> = {} (target {} {})",
                            escape(&m.query),
                            value.unwrap_or_else(|| escape(m.error.as_deref().unwrap_or("-"))),
                            m.target_type,
                            crate::gofmt::verb_v(m.target)
                        )
                    })
                    .chain(
                        d.forecast
                            .map(|f| format!("forecast {}", crate::gofmt::verb_v(f))),
                    )
                    .collect()
            })
            .unwrap_or_default();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}..{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.name),
            p.algorithm,
            p.actuator,
            count(p.current_replicas()),
            count(last.map(|d| d.desired_replicas)),
            p.min_replicas,
            p.max_replicas,
            last.map(|d| rfc3339(d.time_ms))
                .unwrap_or_else(|| "never".into()),
            escape(last.map(|d| d.reason.as_str()).unwrap_or("")),
            metrics.join("<br>"),
        );
    }
    out.push_str("</table>");
}

/// Money with four decimals: hourly figures of a small box are cents.
fn money(v: f64) -> String {
    format!("{v:.4}")
}

fn percent(v: f64) -> String {
    format!("{:.1} %", v * 100.0)
}

fn cache_table(out: &mut String, caches: &[(String, CacheAdvice)]) {
    if caches.is_empty() {
        return;
    }
    out.push_str("<table><tr><th>cache of model</th><th>capacity</th><th>measured hit ratio</th><th>estimated hit ratio by capacity (SHARDS)</th><th>recommended</th><th>±100 rule</th></tr>");
    for (model, a) in caches {
        let curve: Vec<String> = a
            .curve
            .iter()
            .map(|p| format!("{}: {}", p.capacity, percent(p.hit_ratio)))
            .collect();
        let recommended = match (a.recommended_capacity, a.recommended_by) {
            (Some(c), Some(by)) => {
                format!("{c} ({})", recommendation_words(by, a.target_hit_ratio))
            }
            _ => "-".into(),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(model),
            a.capacity,
            a.measured_hit_ratio
                .map(percent)
                .unwrap_or_else(|| "-".into()),
            if curve.is_empty() {
                format!(
                    "waiting for sampled lookups ({} so far)",
                    a.sampled_references
                )
            } else {
                curve.join(", ")
            },
            recommended,
            a.naive_capacity,
        );
    }
    out.push_str("</table>");
}

fn recommendation_words(by: Recommendation, target: f64) -> String {
    match by {
        Recommendation::Target => format!("reaches {}", percent(target)),
        Recommendation::Knee => format!("{} is out of reach: the curve's knee", percent(target)),
    }
}

fn cost_section(
    out: &mut String,
    policies: &[CostStatus],
    scale: &[PolicyStatus],
    caches: &[(String, CacheAdvice)],
) {
    out.push_str("<h2>Cost</h2>");
    if policies.is_empty() {
        out.push_str(
            "<p>No cost policies are loaded (see <code>cost_policies:</code> in a policy file).</p>",
        );
    } else {
        out.push_str("<p>JSON: <a href=\"/api/v1/cost\">/api/v1/cost</a>; report: <code>torchwatch cost report</code>.</p><table><tr><th>policy</th><th>per hour</th><th>idle</th><th>efficiency</th><th>per 1,000 inferences</th><th>CPU cores used / allocated / recommended</th><th>memory GiB used / allocated / recommended</th><th>advice</th><th>saving per hour</th><th>last evaluation</th></tr>");
    }
    let gib = |b: f64| format!("{:.2}", b / (1024.0 * 1024.0 * 1024.0));
    for p in policies {
        let Some(r) = &p.last else {
            let _ = write!(
                out,
                "<tr><td>{}</td><td colspan=9 class=err>{}</td></tr>",
                escape(&p.name),
                escape(p.error.as_deref().unwrap_or("not evaluated yet"))
            );
            continue;
        };
        let advice = r.right_sizing.as_ref();
        let (cpu_rec, memory_rec, saving, words) = match advice {
            Some(a) => (
                format!("{:.2}", a.recommended.cpu_cores),
                gib(a.recommended.memory_bytes),
                format!("{} ({:.1} %)", money(a.savings_hourly), a.savings_percent),
                format!(
                    "CPU {} ({} mean use), memory {} ({} mean use)",
                    a.cpu.advice.as_str(),
                    percent(a.cpu.mean_utilisation),
                    a.memory.advice.as_str(),
                    percent(a.memory.mean_utilisation)
                ),
            ),
            None => (
                "-".into(),
                "-".into(),
                "-".into(),
                escape(r.right_sizing_pending.as_deref().unwrap_or("")),
            ),
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{} ({})</td><td>{}</td><td>{}</td><td>{:.2} / {:.2} / {}</td><td>{} / {} / {}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&p.name),
            money(r.costs.hourly.total),
            money(r.costs.idle_hourly.total),
            percent(r.costs.idle_share),
            percent(r.costs.efficiency.total),
            r.cost_per_1k_inferences
                .map(money)
                .unwrap_or_else(|| "-".into()),
            r.used.cpu_cores,
            r.allocated.cpu_cores,
            cpu_rec,
            gib(r.used.memory_bytes),
            gib(r.allocated.memory_bytes),
            memory_rec,
            words,
            saving,
            rfc3339(r.time_ms),
        );
    }
    if !policies.is_empty() {
        out.push_str("</table>");
    }
    let priced: Vec<&PolicyStatus> = scale
        .iter()
        .filter(|p| p.price_per_replica_hour.is_some())
        .collect();
    if !priced.is_empty() {
        out.push_str("<table><tr><th>scale policy</th><th>replicas</th><th>price per replica-hour</th><th>per hour</th></tr>");
        for p in priced {
            let _ = write!(
                out,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&p.name),
                p.current_replicas()
                    .map(|n| n.to_string())
                    .unwrap_or_else(|| "-".into()),
                p.price_per_replica_hour.map(money).unwrap_or_default(),
                p.hourly_cost().map(money).unwrap_or_else(|| "-".into()),
            );
        }
        out.push_str("</table>");
    }
    cache_table(out, caches);
}

async fn page(State(api): State<QueryApi>) -> Html<String> {
    let groups = api.rules.snapshot();
    let alerts = groups.iter().flat_map(|g| &g.rules).flat_map(|r| &r.alerts);
    let firing = alerts
        .clone()
        .filter(|a| a.state == AlertState::Firing)
        .count();
    let pending = alerts.filter(|a| a.state == AlertState::Pending).count();
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=utf-8><title>torchwatch rules and alerts</title><style>\
         body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse;margin-bottom:1em}\
         td,th{border:1px solid #ccc;padding:3px 6px;text-align:left;vertical-align:top}\
         .firing{color:#fff;background:#c0392b}.pending{background:#f1c40f}.inactive,.ok{color:#1e8449}\
         .err,.error{color:#c0392b}.unknown{color:#888}.label{background:#eef;padding:0 3px;margin:1px}\
         code{white-space:pre-wrap}</style></head><body><h1>torchwatch</h1>",
    );
    let _ = write!(
        out,
        "<p>{} rule groups, {} rules; <b>{firing}</b> alerts firing, <b>{pending}</b> pending. JSON: <a href=\"/api/v1/rules\">/api/v1/rules</a>, <a href=\"/api/v1/alerts\">/api/v1/alerts</a>; metrics: <a href=\"/metrics\">/metrics</a>.</p>",
        groups.len(),
        groups.iter().map(|g| g.rules.len()).sum::<usize>()
    );
    for g in &groups {
        let _ = write!(
            out,
            "<h2>{}</h2><p>{} · every {}s{}</p><table><tr><th>rule</th><th>type</th><th>health / state</th><th>last evaluation</th><th>took</th><th>expression</th><th>last error</th></tr>",
            escape(&g.name),
            escape(&g.file),
            g.interval_s,
            if g.limit > 0 {
                format!(" · limit {}", g.limit)
            } else {
                String::new()
            }
        );
        for rule in &g.rules {
            rule_row(&mut out, rule);
        }
        out.push_str("</table>");
    }
    if groups.is_empty() {
        out.push_str(
            "<p>No rule files are loaded (see <code>rules.files</code> in the config).</p>",
        );
    }
    let scale = api.scale.snapshot();
    scale_section(&mut out, &scale);
    cost_section(&mut out, &api.cost.snapshot(), &scale, &api.cache_advice());
    out.push_str("</body></html>");
    Html(out)
}
