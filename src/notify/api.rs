//! Alertmanager's v2 API over the in-process notifier (`api/v2/openapi.yaml` of Alertmanager
//! 0.25): alerts, alert groups, receivers, status and silences, JSON as Alertmanager writes it,
//! so `amtool` and Grafana's Alertmanager datasource work unchanged. The HTTP layer only maps
//! requests onto these calls.

use super::alertmanager::valid_until;
use super::matcher::parse_matcher;
use super::silence::{SetError, Silence, SilenceMatcher, SilenceState, Silences};
use super::{Alert, AlertSink, Condition, Plan};
use crate::clock::{now_ms, rfc3339};
use crate::storage::Labels;
use promql_parser::label::{MatchOp, Matcher};
use serde::Deserialize;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

/// What the dispatcher reported lately: each alert and when it was last reported (Unix ms).
pub(super) type Seen = Arc<Vec<(Alert, i64)>>;

/// Publishes the dispatcher's current alerts for the API (a snapshot: readers never hold up
/// the dispatcher).
pub(super) fn publish(view: &watch::Sender<Seen>, current: &HashMap<u64, (Alert, Instant)>) {
    let now = now_ms();
    view.send_replace(Arc::new(
        current
            .values()
            .map(|(a, at)| (a.clone(), now - at.elapsed().as_millis() as i64))
            .collect(),
    ));
}

/// Go's zero time, which Alertmanager's clients send for "unset".
const GO_ZERO_MS: i64 = -62_135_596_800_000;

/// An answer other than 200: the status and Alertmanager's body (a JSON string for its own
/// errors, `{code, message}` for malformed requests as go-openapi writes them, or none).
#[derive(Debug, PartialEq)]
pub struct AmError {
    pub status: u16,
    pub body: Option<Value>,
}

impl AmError {
    fn bad_request(message: impl Into<String>) -> AmError {
        AmError {
            status: 400,
            body: Some(Value::String(message.into())),
        }
    }

    fn not_found(body: Option<Value>) -> AmError {
        AmError { status: 404, body }
    }

    /// A body that does not parse: 422 for a missing required field, 400 otherwise, as
    /// go-openapi answers.
    fn body(e: &serde_json::Error) -> AmError {
        let text = e.to_string();
        let (status, code) = match text.strip_prefix("missing field `") {
            Some(_) => (422, 602),
            None => (400, 400),
        };
        AmError {
            status,
            body: Some(json!({"code": code, "message": format!("parsing body failed: {text}")})),
        }
    }
}

/// The API's view of the notifier; cheap to clone.
#[derive(Clone)]
pub struct AlertmanagerApi {
    sink: AlertSink,
    silences: Arc<Silences>,
    plans: watch::Receiver<Arc<Plan>>,
    started_ms: i64,
    /// Posted alerts still firing, with the `endsAt` at which they resolve unless re-posted.
    posted: Arc<Mutex<HashMap<u64, (Alert, i64)>>>,
}

/// The filters of `GET /api/v2/alerts` and `/alerts/groups`.
struct AlertFilter {
    matchers: Vec<Matcher>,
    active: bool,
    silenced: bool,
    inhibited: bool,
    receiver: Option<regex::Regex>,
}

/// One alert's status: state, silences and inhibiting alerts.
struct Status {
    silenced_by: Vec<String>,
    inhibited_by: Vec<String>,
}

impl Status {
    fn state(&self) -> &'static str {
        if self.silenced_by.is_empty() && self.inhibited_by.is_empty() {
            "active"
        } else {
            "suppressed"
        }
    }
}

/// go-openapi's `swag.ConvertBool`: these words are true, anything else false.
fn truthy(value: &str) -> bool {
    matches!(
        value.to_ascii_lowercase().as_str(),
        "true" | "1" | "yes" | "ok" | "y" | "on" | "selected" | "checked" | "t" | "enabled"
    )
}

/// The `filter` parameters (Alertmanager matchers); empty ones are absent, as go-openapi binds.
fn filters(params: &[(String, String)]) -> Result<Vec<Matcher>, AmError> {
    params
        .iter()
        .filter(|(k, v)| k == "filter" && !v.is_empty())
        .map(|(_, v)| parse_matcher(v).map_err(AmError::bad_request))
        .collect()
}

fn param<'a>(params: &'a [(String, String)], name: &str) -> Option<&'a str> {
    params
        .iter()
        .rev()
        .find(|(k, v)| k == name && !v.is_empty())
        .map(|(_, v)| v.as_str())
}

impl AlertFilter {
    fn parse(params: &[(String, String)]) -> Result<AlertFilter, AmError> {
        let flag = |name| param(params, name).is_none_or(truthy);
        let receiver = param(params, "receiver")
            .map(|r| {
                regex::Regex::new(&format!("^(?:{r})$")).map_err(|e| {
                    AmError::bad_request(format!("failed to parse receiver param: {e}"))
                })
            })
            .transpose()?;
        Ok(AlertFilter {
            matchers: filters(params)?,
            active: flag("active"),
            silenced: flag("silenced"),
            inhibited: flag("inhibited"),
            receiver,
        })
    }

    /// Alertmanager's `alertFilter` (the alert is still valid; its state is asked for) and
    /// `matchFilterLabels`, where an empty value matches an absent label.
    fn keeps(&self, labels: &Labels, status: &Status) -> bool {
        if !self.active && status.state() == "active"
            || !self.silenced && !status.silenced_by.is_empty()
            || !self.inhibited && !status.inhibited_by.is_empty()
        {
            return false;
        }
        self.matchers.iter().all(|m| {
            let present = labels.iter().any(|l| l.name == m.name);
            let negative = matches!(m.op, MatchOp::NotEqual | MatchOp::NotRe(_));
            (m.value.is_empty() && present == negative) || m.is_match(labels.get(&m.name))
        })
    }
}

impl AlertmanagerApi {
    /// The API over the dispatcher behind `sink`; posted alerts that are not re-posted resolve
    /// at their `endsAt` (checked every second until `stop`).
    pub fn new(
        sink: AlertSink,
        silences: Arc<Silences>,
        plans: watch::Receiver<Arc<Plan>>,
        mut stop: watch::Receiver<bool>,
    ) -> AlertmanagerApi {
        let api = AlertmanagerApi {
            sink,
            silences,
            plans,
            started_ms: now_ms(),
            posted: Arc::default(),
        };
        let resolver = api.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => resolver.resolve_timed_out(now_ms()),
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        });
        api
    }

    fn resolve_timed_out(&self, now: i64) {
        let mut posted = crate::sync::lock(&self.posted);
        let due: Vec<u64> = posted
            .iter()
            .filter(|(_, (_, ends))| *ends <= now)
            .map(|(fp, _)| *fp)
            .collect();
        let resolved: Vec<Alert> = due
            .iter()
            .filter_map(|fp| posted.remove(fp))
            .map(|(mut a, ends)| {
                a.ends_at = Some(ends);
                a
            })
            .collect();
        drop(posted);
        if !resolved.is_empty() {
            self.sink.submit(resolved);
        }
    }

    /// One alert's status now: the active silences and the inhibition rule that mute it.
    fn status(&self, plan: &Plan, alert: &Alert, firing: &[&Alert], now: i64) -> Status {
        Status {
            silenced_by: self.silences.silenced_by(&alert.labels, now),
            inhibited_by: plan
                .inhibited_by(alert, firing.iter().copied())
                .map(|fp| vec![format!("{fp:016x}")])
                .unwrap_or_default(),
        }
    }

    /// The alerts the API shows: reported lately and still valid, with their status.
    fn current(&self, plan: &Plan, now: i64) -> Vec<(Alert, i64, Status)> {
        let seen = self.sink.seen.borrow().clone();
        let valid: Vec<&(Alert, i64)> = seen
            .iter()
            .filter(|(a, at)| valid_until(a, *at) >= now)
            .collect();
        let firing: Vec<&Alert> = valid.iter().map(|(a, _)| a).collect();
        valid
            .iter()
            .map(|(a, at)| (a.clone(), *at, self.status(plan, a, &firing, now)))
            .collect()
    }

    /// `GET /api/v2/alerts`.
    pub fn alerts(&self, params: &[(String, String)]) -> Result<Value, AmError> {
        let filter = AlertFilter::parse(params)?;
        let plan = self.plans.borrow().clone();
        let now = now_ms();
        let mut out: Vec<(u64, Value)> = self
            .current(&plan, now)
            .into_iter()
            .filter_map(|(alert, at, status)| {
                let receivers = plan.receivers_for(&alert.labels);
                let wanted = filter
                    .receiver
                    .as_ref()
                    .is_none_or(|r| receivers.iter().any(|n| r.is_match(n)));
                (wanted && filter.keeps(&alert.labels, &status)).then(|| {
                    let fp = alert.fingerprint();
                    (fp, gettable(&alert, at, &receivers, &status))
                })
            })
            .collect();
        out.sort_by_key(|(fp, _)| *fp);
        Ok(Value::Array(out.into_iter().map(|(_, v)| v).collect()))
    }

    /// `GET /api/v2/alerts/groups`: the aggregation groups the routing tree forms, as the
    /// dispatcher does, each with its alerts that pass the filters.
    pub fn groups(&self, params: &[(String, String)]) -> Result<Value, AmError> {
        let filter = AlertFilter::parse(params)?;
        let plan = self.plans.borrow().clone();
        let Some(root) = &plan.root else {
            return Ok(json!([]));
        };
        let mut groups: BTreeMap<(Labels, String, String), Vec<Value>> = BTreeMap::new();
        for (alert, at, status) in self.current(&plan, now_ms()) {
            if !filter.keeps(&alert.labels, &status) {
                continue;
            }
            let mut routes = Vec::new();
            root.matching(&alert.labels, &mut routes);
            let receivers: Vec<String> = routes.iter().map(|r| r.receiver.clone()).collect();
            for route in routes {
                if filter
                    .receiver
                    .as_ref()
                    .is_some_and(|r| !r.is_match(&route.receiver))
                {
                    continue;
                }
                groups
                    .entry((
                        route.group_labels(&alert.labels),
                        route.receiver.clone(),
                        route.key.clone(),
                    ))
                    .or_default()
                    .push(gettable(&alert, at, &receivers, &status));
            }
        }
        Ok(groups
            .into_iter()
            .map(|((labels, receiver, _), alerts)| {
                json!({"labels": super::message::label_map(&labels), "receiver": {"name": receiver}, "alerts": alerts})
            })
            .collect())
    }

    /// `POST /api/v2/alerts`: alerts from other Prometheus servers, into the dispatcher. Valid
    /// alerts are taken even when others are refused, as Alertmanager does.
    pub fn post_alerts(&self, body: &[u8]) -> Result<(), AmError> {
        let posted: Vec<PostableAlert> =
            serde_json::from_slice(body).map_err(|e| AmError::body(&e))?;
        let now = now_ms();
        let resolve_timeout = self.plans.borrow().resolve_timeout;
        let mut errors = Vec::new();
        let mut alerts = Vec::new();
        for p in posted {
            match p.into_alert(now, resolve_timeout) {
                Ok(alert) => alerts.push(alert),
                Err(e) => errors.push(e),
            }
        }
        {
            let mut tracked = crate::sync::lock(&self.posted);
            for (alert, ends) in &alerts {
                match alert.ends_at {
                    None => tracked.insert(alert.fingerprint(), (alert.clone(), *ends)),
                    Some(_) => tracked.remove(&alert.fingerprint()),
                };
            }
        }
        if !alerts.is_empty() {
            self.sink
                .submit(alerts.into_iter().map(|(a, _)| a).collect());
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(AmError::bad_request(errors.join("; ")))
        }
    }

    /// `GET /api/v2/receivers`.
    pub fn receivers(&self) -> Value {
        let plan = self.plans.borrow().clone();
        let mut names: Vec<&String> = plan.receivers.keys().collect();
        names.sort();
        names.into_iter().map(|n| json!({"name": n})).collect()
    }

    /// `GET /api/v2/status`. torchwatch is a single instance: clustering is `disabled`.
    pub fn status_json(&self) -> Value {
        let plan = self.plans.borrow().clone();
        json!({
            "cluster": {"status": "disabled", "peers": []},
            "versionInfo": {
                "version": env!("CARGO_PKG_VERSION"),
                "revision": "unknown",
                "branch": "unknown",
                "buildUser": "torchwatch",
                "buildDate": "unknown",
                "goVersion": "none (torchwatch)",
            },
            "config": {"original": original_config(&plan)},
            "uptime": rfc3339(self.started_ms),
        })
    }

    /// `GET /api/v2/silences`: a silence passes a filter when it has a matcher with the same
    /// name, operator and value (Alertmanager's `CheckSilenceMatchesFilterLabels`).
    pub fn list_silences(&self, params: &[(String, String)]) -> Result<Value, AmError> {
        let filter = filters(params)?;
        let now = now_ms();
        let mut silences: Vec<Silence> = self
            .silences
            .all(now)
            .into_iter()
            .filter(|s| {
                filter.iter().all(|f| {
                    s.matchers
                        .iter()
                        .any(|m| m.name == f.name && m.value == f.value && same_op(m, &f.op))
                })
            })
            .collect();
        // Active first (next to end first), then pending (next to start first), then expired
        // (most recently ended first), as Alertmanager's SortSilences.
        let order = |s: &Silence| match s.state(now) {
            SilenceState::Active => (0, s.ends_at),
            SilenceState::Pending => (1, s.starts_at),
            SilenceState::Expired => (2, -s.ends_at),
        };
        silences.sort_by_key(order);
        Ok(silences.iter().map(|s| gettable_silence(s, now)).collect())
    }

    /// `GET /api/v2/silence/{id}`.
    pub fn get_silence(&self, id: &str) -> Result<Value, AmError> {
        let now = now_ms();
        self.silences
            .get(id, now)
            .map(|s| gettable_silence(&s, now))
            .ok_or(AmError::not_found(None))
    }

    /// `POST /api/v2/silences`: creates, or updates when `id` is given; `{silenceID}`.
    pub fn post_silence(&self, body: &[u8]) -> Result<Value, AmError> {
        let posted: PostableSilence =
            serde_json::from_slice(body).map_err(|e| AmError::body(&e))?;
        let time = |field: &str, text: &str| {
            parse_time(text).ok_or_else(|| {
                AmError::bad_request(format!(
                    "failed to convert API silence to internal silence: {field}: {text:?} is not an RFC 3339 time"
                ))
            })
        };
        let silence = Silence {
            id: posted.id.unwrap_or_default(),
            matchers: posted.matchers,
            starts_at: time("startsAt", &posted.starts_at)?,
            ends_at: time("endsAt", &posted.ends_at)?,
            updated_at: 0,
            created_by: posted.created_by,
            comment: posted.comment,
        };
        match self.silences.set(silence, now_ms()) {
            Ok(id) => Ok(json!({"silenceID": id})),
            Err(SetError::NotFound) => Err(AmError::not_found(Some(Value::String(
                SetError::NotFound.to_string(),
            )))),
            Err(e) => Err(AmError::bad_request(e.to_string())),
        }
    }

    /// `DELETE /api/v2/silence/{id}`: expires it.
    pub fn expire_silence(&self, id: &str) -> Result<(), AmError> {
        if self.silences.expire(id, now_ms()) {
            Ok(())
        } else {
            Err(AmError::not_found(None))
        }
    }
}

fn same_op(m: &SilenceMatcher, op: &MatchOp) -> bool {
    match op {
        MatchOp::Equal => !m.is_regex && m.is_equal,
        MatchOp::NotEqual => !m.is_regex && !m.is_equal,
        MatchOp::Re(_) => m.is_regex && m.is_equal,
        MatchOp::NotRe(_) => m.is_regex && !m.is_equal,
    }
}

/// `gettableAlert`.
fn gettable(alert: &Alert, at: i64, receivers: &[String], status: &Status) -> Value {
    json!({
        "labels": super::message::label_map(&alert.labels),
        "annotations": alert.annotations,
        "startsAt": rfc3339(alert.starts_at),
        "endsAt": rfc3339(valid_until(alert, at)),
        "updatedAt": rfc3339(at),
        "generatorURL": alert.generator_url,
        "fingerprint": format!("{:016x}", alert.fingerprint()),
        "receivers": receivers.iter().map(|r| json!({"name": r})).collect::<Vec<_>>(),
        "status": {
            "state": status.state(),
            "silencedBy": status.silenced_by,
            "inhibitedBy": status.inhibited_by,
        },
    })
}

/// `gettableSilence`.
fn gettable_silence(s: &Silence, now: i64) -> Value {
    json!({
        "id": s.id,
        "status": {"state": s.state(now).as_str()},
        "updatedAt": rfc3339(s.updated_at),
        "matchers": s.matchers,
        "startsAt": rfc3339(s.starts_at),
        "endsAt": rfc3339(s.ends_at),
        "createdBy": s.created_by,
        "comment": s.comment,
    })
}

/// RFC 3339 as Unix ms; Go's zero time is `Some(GO_ZERO_MS)`.
fn parse_time(text: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// `postableSilence`; every field but `id` is required.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableSilence {
    id: Option<String>,
    matchers: Vec<SilenceMatcher>,
    starts_at: String,
    ends_at: String,
    created_by: String,
    comment: String,
}

/// `postableAlert`.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct PostableAlert {
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    starts_at: Option<String>,
    ends_at: Option<String>,
    #[serde(default, rename = "generatorURL")]
    generator_url: String,
}

impl PostableAlert {
    /// The alert as the dispatcher takes it, and its `endsAt`; Alertmanager's defaults
    /// (`startsAt` now, `endsAt` now + `global.resolve_timeout`) and `Validate` messages.
    fn into_alert(self, now: i64, resolve_timeout: Duration) -> Result<(Alert, i64), String> {
        let time = |t: &Option<String>, field: &str| match t.as_deref() {
            None | Some("") => Ok(None),
            Some(text) => match parse_time(text) {
                Some(GO_ZERO_MS) => Ok(None),
                Some(ms) => Ok(Some(ms)),
                None => Err(format!("{field}: {text:?} is not an RFC 3339 time")),
            },
        };
        let ends_at = time(&self.ends_at, "endsAt")?;
        let starts_at = time(&self.starts_at, "startsAt")?
            .or(ends_at)
            .unwrap_or(now);
        let ends_at = ends_at.unwrap_or(now + resolve_timeout.as_millis() as i64);
        if ends_at < starts_at {
            return Err("start time must be before end time".into());
        }
        fn invalid_name<'a>(mut names: impl Iterator<Item = &'a String>) -> Option<String> {
            names
                .find(|n| !super::silence::valid_label_name(n))
                .map(|n| format!("invalid name {n:?}"))
        }
        // Empty labels are no labels, as Alertmanager's removeEmptyLabels.
        let labels: Vec<(&String, &String)> =
            self.labels.iter().filter(|(_, v)| !v.is_empty()).collect();
        if let Some(e) = invalid_name(labels.iter().map(|(n, _)| *n)) {
            return Err(format!("invalid label set: {e}"));
        }
        if labels.is_empty() {
            return Err("at least one label pair required".into());
        }
        if let Some(e) = invalid_name(self.annotations.keys()) {
            return Err(format!("invalid annotations: {e}"));
        }
        let alert = Alert {
            labels: Labels::from_pairs(labels.into_iter().map(|(n, v)| (n.clone(), v.clone()))),
            annotations: self.annotations,
            starts_at,
            ends_at: (ends_at <= now).then_some(ends_at),
            generator_url: self.generator_url,
            value: f64::NAN,
            condition: Condition::default(),
            // Forwarded on to Alertmanagers, it stays valid as long as an evaluation's would.
            group_interval_ms: 0,
        };
        Ok((alert, ends_at))
    }
}

/// The notification plan as Alertmanager-style YAML for `config.original` (the routing tree,
/// inhibition rules and receivers; integrations by kind only, so no secret shows).
fn original_config(plan: &Plan) -> String {
    fn strings(items: impl Iterator<Item = String>) -> String {
        let quoted: Vec<String> = items
            .map(|s| Value::String(s).to_string())
            .collect::<Vec<_>>();
        format!("[{}]", quoted.join(", "))
    }
    fn duration(d: Duration) -> String {
        crate::config::PromDuration(d.as_millis() as i64).to_string()
    }
    fn route(out: &mut String, r: &super::route::Route, indent: &str, first: &str) {
        out.push_str(&format!(
            "{first}receiver: {}\n",
            Value::String(r.receiver.clone())
        ));
        let group_by = match &r.group_by {
            None => strings(std::iter::once("...".to_string())),
            Some(names) => strings(names.iter().cloned()),
        };
        out.push_str(&format!("{indent}group_by: {group_by}\n"));
        if !r.matchers.is_empty() {
            let matchers = strings(r.matchers.iter().map(|m| m.to_string()));
            out.push_str(&format!("{indent}matchers: {matchers}\n"));
        }
        if r.continue_ {
            out.push_str(&format!("{indent}continue: true\n"));
        }
        out.push_str(&format!(
            "{indent}group_wait: {}\n{indent}group_interval: {}\n{indent}repeat_interval: {}\n",
            duration(r.group_wait),
            duration(r.group_interval),
            duration(r.repeat_interval)
        ));
        if !r.children.is_empty() {
            out.push_str(&format!("{indent}routes:\n"));
            let child_indent = format!("{indent}    ");
            for child in &r.children {
                route(out, child, &child_indent, &format!("{indent}  - "));
            }
        }
    }
    let mut out = String::new();
    if let Some(root) = &plan.root {
        out.push_str("route:\n");
        route(&mut out, root, "  ", "  ");
    }
    if !plan.inhibitions.is_empty() {
        out.push_str("inhibit_rules:\n");
        for rule in &plan.inhibitions {
            let ms = |m: &[Matcher]| strings(m.iter().map(|m| m.to_string()));
            out.push_str(&format!(
                "  - source_matchers: {}\n    target_matchers: {}\n    equal: {}\n",
                ms(&rule.source),
                ms(&rule.target),
                strings(rule.equal.iter().cloned())
            ));
        }
    }
    let mut receivers: Vec<_> = plan.receivers.values().collect();
    receivers.sort_by(|a, b| a.name.cmp(&b.name));
    out.push_str(if receivers.is_empty() {
        "receivers: []\n"
    } else {
        "receivers:\n"
    });
    for r in receivers {
        out.push_str(&format!("  - name: {}\n", Value::String(r.name.clone())));
        let mut kinds: BTreeMap<&str, Vec<bool>> = BTreeMap::new();
        for i in &r.integrations {
            kinds
                .entry(i.integration())
                .or_default()
                .push(i.send_resolved());
        }
        for (kind, configs) in kinds {
            out.push_str(&format!("    {kind}_configs:\n"));
            for send_resolved in configs {
                out.push_str(&format!("      - send_resolved: {send_resolved}\n"));
            }
        }
    }
    out
}

impl crate::metrics::SilenceSource for AlertmanagerApi {
    fn counts(&self) -> crate::metrics::SilenceCounts {
        let now = now_ms();
        let silences = self.silences.all(now);
        let count = |state| silences.iter().filter(|s| s.state(now) == state).count() as u64;
        let plan = self.plans.borrow().clone();
        crate::metrics::SilenceCounts {
            active: count(SilenceState::Active),
            pending: count(SilenceState::Pending),
            expired: count(SilenceState::Expired),
            silenced_alerts: self
                .current(&plan, now)
                .iter()
                .filter(|(a, _, s)| !a.resolved() && !s.silenced_by.is_empty())
                .count() as u64,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(p: &[(&str, &str)]) -> Vec<(String, String)> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn posted_alerts_get_alertmanagers_defaults_and_messages() {
        let now = 1_700_000_000_000;
        let post = |json: &str| {
            serde_json::from_str::<PostableAlert>(json)
                .unwrap()
                .into_alert(now, Duration::from_secs(300))
        };
        let (alert, ends) = post(r#"{"labels": {"alertname": "A", "empty": ""}}"#).unwrap();
        assert_eq!(alert.labels.to_string(), "{alertname=\"A\"}");
        assert_eq!(
            (alert.starts_at, alert.ends_at, ends),
            (now, None, now + 300_000)
        );
        let (resolved, _) = post(
            r#"{"labels": {"alertname": "A"}, "startsAt": "0001-01-01T00:00:00Z", "endsAt": "2023-11-14T22:13:00Z"}"#,
        )
        .unwrap();
        assert_eq!(
            resolved.starts_at,
            resolved.ends_at.unwrap(),
            "startsAt defaults to endsAt"
        );
        assert_eq!(
            post(r#"{"labels": {"1a": "x"}}"#).unwrap_err(),
            "invalid label set: invalid name \"1a\""
        );
        assert_eq!(
            post(r#"{"labels": {"a": ""}}"#).unwrap_err(),
            "at least one label pair required"
        );
        assert_eq!(
            post(r#"{"labels": {"a": "x"}, "startsAt": "2023-11-14T22:13:00Z", "endsAt": "2023-11-14T22:12:00Z"}"#)
                .unwrap_err(),
            "start time must be before end time"
        );
        assert_eq!(
            AmError::body(&serde_json::from_str::<PostableAlert>("{}").err().unwrap()).status,
            422,
            "labels are required"
        );
    }

    #[test]
    fn alert_filters_are_alertmanagers() {
        let f = AlertFilter::parse(&pairs(&[
            ("filter", "alertname=\"Hot\""),
            ("filter", "team=\"\""),
            ("silenced", "false"),
            ("receiver", ""),
        ]))
        .unwrap();
        assert!(f.active && !f.silenced && f.inhibited && f.receiver.is_none());
        let active = Status {
            silenced_by: vec![],
            inhibited_by: vec![],
        };
        let silenced = Status {
            silenced_by: vec!["id".into()],
            inhibited_by: vec![],
        };
        let hot = Labels::from_pairs([("alertname", "Hot")]);
        assert!(f.keeps(&hot, &active), "team=\"\" matches an absent team");
        assert!(!f.keeps(&hot, &silenced));
        assert!(!f.keeps(
            &Labels::from_pairs([("alertname", "Hot"), ("team", "ml")]),
            &active
        ));
        assert!(!f.keeps(&Labels::from_pairs([("alertname", "Cold")]), &active));
        assert_eq!(
            AlertFilter::parse(&pairs(&[("receiver", "(")]))
                .err()
                .unwrap()
                .status,
            400
        );
    }
}
