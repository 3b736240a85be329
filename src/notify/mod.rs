//! Notifications, Alertmanager's model in-process: alerts from the rule engine
//! are routed through a tree of label matchers into groups (`group_by`), and
//! each group notifies its receiver after `group_wait`, on changes every
//! `group_interval`, and again after `repeat_interval`. Sends retry with
//! exponential backoff and never block rule evaluation.

mod alertmanager;
mod email;
mod slack;
mod webhook;

use crate::clock::rfc3339;
use crate::config::{NotifyConfig, RouteConfig};
use crate::metrics::NotifyMetrics;
use crate::storage::Labels;
use promql_parser::label::Matcher;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

pub use alertmanager::{Alertmanager, RESEND_DELAY};
pub use email::Email;
pub use slack::Slack;
pub use webhook::Webhook;

/// An alert as the rule engine hands it over.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    /// Labels, `alertname` included.
    pub labels: Labels,
    /// Expanded annotations.
    pub annotations: BTreeMap<String, String>,
    /// When it started firing (ms).
    pub starts_at: i64,
    /// When it resolved (ms); `None` while firing.
    pub ends_at: Option<i64>,
    /// Link to the expression that produced it.
    pub generator_url: String,
    /// The expression's value at the last evaluation.
    pub value: f64,
    /// What the rule compares, for receivers that show it (Slack's fields).
    pub condition: Condition,
    /// How often its rule group is evaluated, ms: forwarded to Alertmanager, a firing alert
    /// stays valid for 4 × max(this, the resend delay), as Prometheus' `ValidUntil`.
    pub group_interval_ms: i64,
}

/// What an alerting rule compares: its short form's parts, or its expression.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Condition {
    /// The metric (short form) or the whole expression.
    pub metric: String,
    /// `greater_than`, ... (short form only).
    pub comparison: Option<String>,
    /// The threshold (short form only).
    pub threshold: Option<f64>,
}

impl Alert {
    /// A firing alert with `labels` and nothing else, for tests of the stages.
    #[cfg(test)]
    pub(crate) fn firing_for_test(labels: &[(&str, &str)]) -> Alert {
        Alert {
            labels: Labels::from_pairs(labels.iter().copied()),
            annotations: BTreeMap::new(),
            starts_at: 0,
            ends_at: None,
            generator_url: String::new(),
            value: 1.0,
            condition: Condition::default(),
            group_interval_ms: 15_000,
        }
    }

    /// Alertmanager's fingerprint of the alert's labels.
    pub fn fingerprint(&self) -> u64 {
        self.labels.fingerprint()
    }

    fn resolved(&self) -> bool {
        self.ends_at.is_some()
    }
}

/// What one notification carries.
#[derive(Clone, Debug)]
pub struct Message {
    /// Receiver name.
    pub receiver: String,
    /// `route-path:group-labels`, stable per group.
    pub group_key: String,
    /// The labels the group was formed by.
    pub group_labels: Labels,
    /// Alerts, firing first.
    pub alerts: Vec<Alert>,
    /// torchwatch's URL.
    pub external_url: String,
}

fn label_map(labels: &Labels) -> Value {
    Value::Object(
        labels
            .iter()
            .map(|l| (l.name.clone(), Value::String(l.value.clone())))
            .collect(),
    )
}

impl Message {
    /// `firing` when any alert fires, else `resolved`.
    pub fn status(&self) -> &'static str {
        if self.alerts.iter().any(|a| !a.resolved()) {
            "firing"
        } else {
            "resolved"
        }
    }

    /// Labels every alert shares with the same value.
    pub fn common_labels(&self) -> Labels {
        let Some(first) = self.alerts.first() else {
            return Labels::default();
        };
        Labels::from_pairs(
            first
                .labels
                .iter()
                .filter(|l| self.alerts.iter().all(|a| a.labels.get(&l.name) == l.value))
                .map(|l| (l.name.clone(), l.value.clone())),
        )
    }

    /// Annotations every alert shares with the same value.
    pub fn common_annotations(&self) -> BTreeMap<String, String> {
        let Some(first) = self.alerts.first() else {
            return BTreeMap::new();
        };
        first
            .annotations
            .iter()
            .filter(|(k, v)| {
                self.alerts
                    .iter()
                    .all(|a| a.annotations.get(*k) == Some(*v))
            })
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect()
    }

    /// What notification templates see (Alertmanager's data model).
    pub fn template_data(&self) -> crate::template::NotificationData<'_> {
        let map = |labels: &Labels| -> BTreeMap<String, String> {
            labels
                .iter()
                .map(|l| (l.name.clone(), l.value.clone()))
                .collect()
        };
        crate::template::NotificationData {
            status: self.status(),
            receiver: &self.receiver,
            group_labels: map(&self.group_labels),
            common_labels: map(&self.common_labels()),
            common_annotations: self.common_annotations(),
            external_url: &self.external_url,
            alerts: self
                .alerts
                .iter()
                .map(|a| crate::template::NotificationAlert {
                    status: if a.resolved() { "resolved" } else { "firing" },
                    labels: map(&a.labels),
                    annotations: a.annotations.clone(),
                    starts_at_ms: a.starts_at,
                    ends_at_ms: a.ends_at,
                    generator_url: &a.generator_url,
                    fingerprint: format!("{:016x}", a.fingerprint()),
                })
                .collect(),
        }
    }

    /// Alertmanager's webhook payload, version 4; `max_alerts` 0 = all.
    pub fn webhook_payload(&self, max_alerts: usize) -> Value {
        let shown = if max_alerts == 0 {
            self.alerts.len()
        } else {
            max_alerts.min(self.alerts.len())
        };
        let alerts: Vec<Value> = self.alerts[..shown]
            .iter()
            .map(|a| {
                json!({
                    "status": if a.resolved() { "resolved" } else { "firing" },
                    "labels": label_map(&a.labels),
                    "annotations": a.annotations,
                    "startsAt": rfc3339(a.starts_at),
                    "endsAt": a.ends_at.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
                    "generatorURL": a.generator_url,
                    "fingerprint": format!("{:016x}", a.fingerprint()),
                })
            })
            .collect();
        json!({
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": self.alerts.len() - shown,
            "status": self.status(),
            "receiver": self.receiver,
            "groupLabels": label_map(&self.group_labels),
            "commonLabels": label_map(&self.common_labels()),
            "commonAnnotations": self.common_annotations(),
            "externalURL": self.external_url,
            "alerts": alerts,
        })
    }
}

/// Why a send failed, and whether trying again can help.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// What went wrong (never the URL or a credential).
    pub message: String,
    /// Connection errors, timeouts, 5xx and 429 are worth retrying.
    pub retryable: bool,
    /// What a 429 or 503 asked for in `Retry-After`.
    pub retry_after: Option<Duration>,
}

impl SendError {
    fn from_reqwest(e: &reqwest::Error) -> SendError {
        // The URL may carry a token: only the kind of failure is reported.
        SendError {
            message: crate::client_error::kind(e).into(),
            retryable: e.is_timeout() || e.is_connect() || e.is_request(),
            retry_after: None,
        }
    }

    fn check_status(response: &reqwest::Response) -> Result<(), SendError> {
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let throttled = status == reqwest::StatusCode::TOO_MANY_REQUESTS
            || status == reqwest::StatusCode::SERVICE_UNAVAILABLE;
        let retry_after = throttled
            .then(|| response.headers().get(reqwest::header::RETRY_AFTER))
            .flatten()
            .and_then(|v| v.to_str().ok())
            .and_then(|v| retry_after(v, std::time::SystemTime::now()));
        Err(SendError {
            message: format!("receiver answered HTTP {status}"),
            retryable: status.is_server_error() || throttled,
            retry_after,
        })
    }
}

/// `Retry-After` as seconds or an HTTP date (RFC 9110); a date in the past means now.
fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    if let Ok(seconds) = value.trim().parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value.trim()).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

/// A receiver URL from its inline, file or environment source; the URL is a
/// secret (it often carries a token), so errors never repeat it.
pub(crate) fn secret_url(
    inline: &Option<String>,
    file: &Option<std::path::PathBuf>,
    env: &Option<String>,
    what: &str,
) -> Result<String, String> {
    let url = crate::config::resolve_secret(inline, file, env, what)?
        .ok_or_else(|| format!("{what}: give it inline, as a *_file or as an *_env variable"))?;
    reqwest::Url::parse(&url).map_err(|_| format!("{what}: not a valid URL"))?;
    Ok(url)
}

/// A configured per-attempt timeout, 10 s when absent.
fn attempt_timeout(configured: Option<crate::config::PromDuration>) -> Duration {
    configured
        .map(|d| Duration::from_millis(d.millis() as u64))
        .unwrap_or(Duration::from_secs(10))
}

/// One POST of a JSON body; 2xx is success.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    timeout: Duration,
    body: &impl serde::Serialize,
) -> Result<(), SendError> {
    let response = client
        .post(url)
        .timeout(timeout)
        .json(body)
        .send()
        .await
        .map_err(|e| SendError::from_reqwest(&e))?;
    SendError::check_status(&response)
}

/// One delivery attempt in flight.
pub type SendFuture<'a> =
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<(), SendError>> + Send + 'a>>;

/// One integration of a receiver (webhook, Slack, email, ...).
pub trait Notifier: Send + Sync {
    /// `webhook`, `slack`, ... for metrics and logs.
    fn integration(&self) -> &'static str;
    /// Whether resolved alerts are sent.
    fn send_resolved(&self) -> bool;
    /// One attempt to deliver `message`.
    fn notify<'a>(&'a self, message: &'a Message) -> SendFuture<'a>;
}

/// A named receiver and its integrations.
pub struct Receiver {
    name: String,
    integrations: Vec<Arc<dyn Notifier>>,
}

/// A route with its inherited settings resolved.
#[derive(Clone, Debug)]
struct Route {
    /// Alertmanager's route key: `{}` for the root, `{}/{matchers}` below.
    key: String,
    receiver: String,
    matchers: Vec<Matcher>,
    continue_: bool,
    /// `None`: group by every label (`...`).
    group_by: Option<Vec<String>>,
    group_wait: Duration,
    group_interval: Duration,
    repeat_interval: Duration,
    children: Vec<Route>,
}

/// One Alertmanager matcher (`name="value"`, `!=`, `=~`, `!~`; the value may be unquoted, as
/// Alertmanager allows). Parsed as a PromQL selector beside a placeholder, since PromQL
/// refuses a selector of only negative matchers (`{env!="prod"}`) that Alertmanager accepts.
fn parse_matcher(text: &str) -> Result<Matcher, String> {
    // The first operator in the text (the longer one where two start at the same place).
    let operator = ["=~", "!~", "!=", "="]
        .iter()
        .filter_map(|op| text.find(op).map(|at| (at, *op)))
        .min_by_key(|(at, op)| (*at, std::cmp::Reverse(op.len())));
    let quoted = match operator {
        Some((at, op)) if !text[at + op.len()..].trim().starts_with('"') => {
            // PromQL's string escapes: only the backslash and the quote need one here.
            let value = text[at + op.len()..]
                .trim()
                .replace('\\', "\\\\")
                .replace('"', "\\\"");
            format!("{}{op}\"{value}\"", text[..at].trim())
        }
        _ => text.to_string(),
    };
    let expr = crate::promql::parse(&format!("{{__placeholder__=\"x\", {quoted}}}"))
        .map_err(|e| format!("matcher {text:?}: {e}"))?;
    match expr {
        promql_parser::parser::Expr::VectorSelector(vs) if vs.matchers.matchers.len() == 2 => {
            Ok(vs.matchers.matchers[1].clone())
        }
        _ => Err(format!(
            "matcher {text:?}: write one matcher like severity=\"critical\""
        )),
    }
}

fn build_route(
    config: &RouteConfig,
    parent: Option<&Route>,
    receivers: &[String],
) -> Result<Route, String> {
    let ms = |d: Option<crate::config::PromDuration>, inherited: Option<Duration>, default: u64| {
        d.map(|d| Duration::from_millis(d.millis() as u64))
            .or(inherited)
            .unwrap_or(Duration::from_secs(default))
    };
    let matchers = config
        .matchers
        .iter()
        .map(|m| parse_matcher(m))
        .collect::<Result<Vec<_>, _>>()?;
    let receiver = config
        .receiver
        .clone()
        .or_else(|| parent.map(|p| p.receiver.clone()))
        .ok_or("notify.route: the root route needs a receiver")?;
    if !receivers.contains(&receiver) {
        return Err(format!(
            "notify.route: receiver {receiver:?} is not defined under notify.receivers"
        ));
    }
    let key = match parent {
        None => "{}".to_string(),
        Some(p) => format!("{}/{{{}}}", p.key, config.matchers.join(",")),
    };
    let group_by = match &config.group_by {
        Some(names) if names.iter().any(|n| n == "...") => None,
        Some(names) => Some(names.clone()),
        None => parent.map_or(Some(Vec::new()), |p| p.group_by.clone()),
    };
    let mut route = Route {
        key,
        receiver,
        matchers,
        continue_: config.continue_,
        group_by,
        group_wait: ms(config.group_wait, parent.map(|p| p.group_wait), 30),
        group_interval: ms(config.group_interval, parent.map(|p| p.group_interval), 300),
        repeat_interval: ms(
            config.repeat_interval,
            parent.map(|p| p.repeat_interval),
            4 * 3600,
        ),
        children: Vec::new(),
    };
    for child in &config.routes {
        let built = build_route(child, Some(&route), receivers)?;
        route.children.push(built);
    }
    Ok(route)
}

impl Route {
    /// Alertmanager's matching: the deepest matching routes, children in order,
    /// stopping at the first match unless it says `continue`.
    fn matching<'r>(&'r self, labels: &Labels, out: &mut Vec<&'r Route>) -> bool {
        if !self
            .matchers
            .iter()
            .all(|m| m.is_match(labels.get(&m.name)))
        {
            return false;
        }
        let before = out.len();
        for child in &self.children {
            if child.matching(labels, out) && !child.continue_ {
                break;
            }
        }
        if out.len() == before {
            out.push(self);
        }
        true
    }

    fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            None => labels.clone(),
            Some(names) => {
                Labels::from_pairs(names.iter().map(|n| (n.clone(), labels.get(n).to_string())))
            }
        }
    }
}

/// A compiled inhibition rule.
struct Inhibition {
    source: Vec<Matcher>,
    target: Vec<Matcher>,
    equal: Vec<String>,
}

fn matches_all(matchers: &[Matcher], labels: &Labels) -> bool {
    matchers.iter().all(|m| m.is_match(labels.get(&m.name)))
}

impl Inhibition {
    /// Whether a firing alert among `firing` mutes `target`.
    fn mutes<'a>(&self, target: &Alert, mut firing: impl Iterator<Item = &'a Alert>) -> bool {
        matches_all(&self.target, &target.labels)
            && firing.any(|source| {
                source.labels != target.labels
                    && matches_all(&self.source, &source.labels)
                    && self
                        .equal
                        .iter()
                        .all(|n| source.labels.get(n) == target.labels.get(n))
            })
    }
}

/// The routing tree, receivers and inhibition rules built from `notify:`; checked before use.
pub struct Plan {
    root: Option<Route>,
    receivers: HashMap<String, Arc<Receiver>>,
    inhibitions: Vec<Inhibition>,
    alertmanagers: Vec<Arc<Alertmanager>>,
}

impl Plan {
    /// Whether any inhibition rule mutes `alert` given the alerts firing now.
    fn muted(&self, alert: &Alert, current: &HashMap<u64, (Alert, Instant)>) -> bool {
        !alert.resolved()
            && self.inhibitions.iter().any(|rule| {
                rule.mutes(
                    alert,
                    current.values().map(|(a, _)| a).filter(|a| !a.resolved()),
                )
            })
    }

    /// The longest repeat interval of any route: the notification log must remember at least
    /// that long, or a restart would repeat a notification early.
    fn longest_repeat(&self) -> Duration {
        fn longest(route: &Route) -> Duration {
            route
                .children
                .iter()
                .map(longest)
                .fold(route.repeat_interval, Duration::max)
        }
        self.root.as_ref().map_or(Duration::ZERO, longest)
    }

    /// The receivers an alert with `labels` is routed to, in routing order (`amtool config
    /// routes test`); none without a `route`.
    pub fn receivers_for(&self, labels: &Labels) -> Vec<String> {
        let mut routes = Vec::new();
        if let Some(root) = &self.root {
            root.matching(labels, &mut routes);
        }
        routes.into_iter().map(|r| r.receiver.clone()).collect()
    }
}

impl Plan {
    /// Builds the tree and the receivers; secrets are read now.
    pub fn build(config: &NotifyConfig, client: &reqwest::Client) -> Result<Plan, String> {
        let mut receivers = HashMap::new();
        for r in &config.receivers {
            let mut integrations: Vec<Arc<dyn Notifier>> = Vec::new();
            for w in &r.webhook_configs {
                integrations.push(Arc::new(Webhook::new(w, client.clone(), &r.name)?));
            }
            for c in &r.slack_configs {
                integrations.push(Arc::new(Slack::new(c, client.clone(), &r.name)?));
            }
            for c in &r.email_configs {
                integrations.push(Arc::new(Email::new(c, &r.name)?));
            }
            if receivers
                .insert(
                    r.name.clone(),
                    Arc::new(Receiver {
                        name: r.name.clone(),
                        integrations,
                    }),
                )
                .is_some()
            {
                return Err(format!("notify.receivers: {:?} is defined twice", r.name));
            }
        }
        let names: Vec<String> = receivers.keys().cloned().collect();
        let root = config
            .route
            .as_ref()
            .map(|r| build_route(r, None, &names))
            .transpose()?;
        let compile = |ms: &[String]| {
            ms.iter()
                .map(|m| parse_matcher(m))
                .collect::<Result<Vec<_>, _>>()
        };
        let inhibitions = config
            .inhibit_rules
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let at = |e: String| format!("notify.inhibit_rules[{i}]: {e}");
                Ok(Inhibition {
                    source: compile(&r.source_matchers).map_err(at)?,
                    target: compile(&r.target_matchers).map_err(at)?,
                    equal: r.equal.clone(),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let alertmanagers = config
            .alertmanagers
            .iter()
            .map(|a| Alertmanager::new(a, client.clone()).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            root,
            receivers,
            inhibitions,
            alertmanagers,
        })
    }
}

/// Hands alerts from the rule engine to the dispatcher without ever blocking.
#[derive(Clone)]
pub struct AlertSink {
    sender: mpsc::Sender<Vec<Alert>>,
    metrics: NotifyMetrics,
}

impl AlertSink {
    /// Queues one evaluation's alerts; when the queue is full they are dropped and counted.
    pub fn submit(&self, alerts: Vec<Alert>) {
        let count = alerts.len() as u64;
        if self.sender.try_send(alerts).is_err() {
            self.metrics.dropped.inc_by(count);
        }
    }
}

/// What one integration was last told: the firing and resolved fingerprints, and when.
type Notified = (HashSet<u64>, HashSet<u64>, Instant);

struct Group {
    route: Route,
    receiver: Arc<Receiver>,
    labels: Labels,
    alerts: HashMap<u64, Alert>,
    next_flush: Instant,
    /// Per integration (its index in the receiver), the last notification it got: each
    /// integration is deduplicated on its own, so one that fails never re-sends the others.
    notified: HashMap<usize, Notified>,
    in_flight: bool,
}

struct Delivered {
    key: String,
    firing: HashSet<u64>,
    resolved: HashSet<u64>,
    /// Each integration notified, and whether it got the notification.
    outcomes: Vec<(usize, bool)>,
}

/// The notification log's key of one integration of a group, as Alertmanager's nflog keys
/// entries by group, receiver, integration and index.
fn log_key(group_key: &str, receiver: &str, integration: &str, index: usize) -> String {
    format!("{group_key}|{receiver}|{integration}|{index}")
}

/// A log entry as the dedup stage reads it; its time mapped onto the monotonic clock.
fn notified_from(entry: &LogEntry) -> Notified {
    let age = (crate::clock::now_ms() - entry.at).max(0) as u64;
    (
        entry.firing.iter().copied().collect(),
        entry.resolved.iter().copied().collect(),
        Instant::now()
            .checked_sub(Duration::from_millis(age))
            .unwrap_or_else(Instant::now),
    )
}

/// Alertmanager's `DedupStage.needsUpdate` for one integration: notify when something new
/// fires, when everything it was told about resolved, when something resolved and it sends
/// resolved notices, or when the repeat interval passed.
fn needs_update(
    last: Option<&Notified>,
    firing: &HashSet<u64>,
    resolved: &HashSet<u64>,
    send_resolved: bool,
    repeat: Duration,
) -> bool {
    let Some((last_firing, last_resolved, at)) = last else {
        return !firing.is_empty();
    };
    if !firing.is_subset(last_firing) {
        return true;
    }
    // All resolved: notify (whatever send_resolved says) so the log forgets the firing ones,
    // unless nothing it was told about was firing.
    if firing.is_empty() {
        return !last_firing.is_empty();
    }
    if send_resolved && !resolved.is_subset(last_resolved) {
        return true;
    }
    at.elapsed() >= repeat
}

/// Writes the notification log off the async runtime (fsync blocks): one writer task takes the
/// newest snapshot whenever it is free, so a burst of deliveries costs one write, not one each.
struct LogWriter {
    latest: watch::Sender<Option<Arc<HashMap<String, LogEntry>>>>,
}

impl LogWriter {
    fn start(file: std::path::PathBuf) -> LogWriter {
        let (latest, mut changes) = watch::channel(None::<Arc<HashMap<String, LogEntry>>>);
        tokio::spawn(async move {
            // Ends once the dispatcher is gone and its last snapshot is written.
            while changes.changed().await.is_ok() {
                let Some(log) = changes.borrow_and_update().clone() else {
                    continue;
                };
                let file = file.clone();
                let saved =
                    tokio::task::spawn_blocking(move || crate::state::save(&file, &*log)).await;
                if let Ok(Err(e)) = saved {
                    tracing::warn!(event = "state_not_saved", error = %e,
                        "cannot save the notification log");
                }
            }
        });
        LogWriter { latest }
    }

    fn save(&self, log: &HashMap<String, LogEntry>) {
        self.latest.send_replace(Some(Arc::new(log.clone())));
    }
}

/// What was last delivered for one group, as saved across restarts: the
/// firing and resolved fingerprints and when (ms).
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct LogEntry {
    firing: Vec<u64>,
    resolved: Vec<u64>,
    at: i64,
}

/// Starts the dispatcher; `plans` delivers the current routing plan (replaced
/// on reload); `log_file` keeps the notification log across restarts.
pub fn start(
    plans: watch::Receiver<Arc<Plan>>,
    external_url: String,
    queue_capacity: usize,
    log_file: Option<std::path::PathBuf>,
    metrics: NotifyMetrics,
    stop: watch::Receiver<bool>,
) -> AlertSink {
    let (sender, receiver) = mpsc::channel(queue_capacity.max(1));
    tokio::spawn(dispatch(
        plans,
        receiver,
        Dispatch {
            external_url,
            queue_capacity,
            log_file,
            metrics: metrics.clone(),
        },
        stop,
    ));
    AlertSink { sender, metrics }
}

/// The dispatcher's fixed settings.
struct Dispatch {
    external_url: String,
    /// Also the capacity of each Alertmanager's queue, as Prometheus' one setting.
    queue_capacity: usize,
    log_file: Option<std::path::PathBuf>,
    metrics: NotifyMetrics,
}

async fn dispatch(
    mut plans: watch::Receiver<Arc<Plan>>,
    mut incoming: mpsc::Receiver<Vec<Alert>>,
    settings: Dispatch,
    mut stop: watch::Receiver<bool>,
) {
    let Dispatch {
        external_url,
        queue_capacity,
        log_file,
        metrics,
    } = settings;
    let mut groups: HashMap<String, Group> = HashMap::new();
    // The notification log: what each group was last told, kept on disk so a
    // restart neither repeats a notification nor forgets a resolved one owed.
    let mut log: HashMap<String, LogEntry> = log_file
        .as_deref()
        .and_then(|f| crate::state::load(f, "notification log"))
        .unwrap_or_default();
    // Every alert the rule engine reported lately, for inhibition; one not
    // reported for 15 minutes is gone (the rule engine reports each evaluation).
    let mut current: HashMap<u64, (Alert, Instant)> = HashMap::new();
    // What each alert last went to the Alertmanagers as, and when (resolved?, at).
    let mut forwarded: HashMap<u64, (bool, Instant)> = HashMap::new();
    let log_writer = log_file.clone().map(LogWriter::start);
    // One send loop per Alertmanager of the plan in effect.
    let mut queues: Vec<Arc<alertmanager::Queue>> = Vec::new();
    let mut queues_of: Option<Arc<Plan>> = None;
    let (done_tx, mut done) = mpsc::unbounded_channel::<Delivered>();
    let mut ticker = tokio::time::interval(Duration::from_millis(50));
    loop {
        tokio::select! {
            batch = incoming.recv() => {
                let Some(batch) = batch else { return };
                let plan = plans.borrow_and_update().clone();
                // A new plan (start-up or reload) gets new Alertmanager queues.
                if !queues_of.as_ref().is_some_and(|p| Arc::ptr_eq(p, &plan)) {
                    for queue in queues.drain(..) {
                        queue.close();
                    }
                    queues = plan
                        .alertmanagers
                        .iter()
                        .map(|am| {
                            alertmanager::Queue::start(
                                am.clone(),
                                queue_capacity,
                                external_url.clone(),
                                metrics.clone(),
                            )
                        })
                        .collect();
                    queues_of = Some(plan.clone());
                }
                forward(&queues, &batch, &mut forwarded);
                let Some(root) = &plan.root else {
                    for alert in batch {
                        current.insert(alert.fingerprint(), (alert, Instant::now()));
                    }
                    continue;
                };
                for alert in batch {
                    current.insert(alert.fingerprint(), (alert.clone(), Instant::now()));
                    let mut routes = Vec::new();
                    root.matching(&alert.labels, &mut routes);
                    for route in routes {
                        let labels = route.group_labels(&alert.labels);
                        let key = format!("{}:{}", route.key, labels.to_string().replace(", ", ","));
                        let Some(receiver) = plan.receivers.get(&route.receiver) else { continue };
                        let group = groups.entry(key).or_insert_with_key(|key| Group {
                            route: route.clone(),
                            receiver: receiver.clone(),
                            labels,
                            alerts: HashMap::new(),
                            next_flush: Instant::now() + route.group_wait,
                            // Per integration; a log written before per-integration entries
                            // holds one entry per group, delivered to all of its integrations.
                            notified: receiver
                                .integrations
                                .iter()
                                .enumerate()
                                .filter_map(|(i, integration)| {
                                    let own = log_key(key, &receiver.name, integration.integration(), i);
                                    log.get(&own).or_else(|| log.get(key)).map(|e| (i, notified_from(e)))
                                })
                                .collect(),
                            in_flight: false,
                        });
                        group.alerts.insert(alert.fingerprint(), alert.clone());
                    }
                }
            }
            Some(result) = done.recv() => {
                if let Some(group) = groups.get_mut(&result.key) {
                    group.in_flight = false;
                    let now_ms = crate::clock::now_ms();
                    for &(i, ok) in &result.outcomes {
                        let Some(integration) = group.receiver.integrations.get(i).filter(|_| ok) else {
                            continue;
                        };
                        let key = log_key(&result.key, &group.receiver.name, integration.integration(), i);
                        log.insert(key, LogEntry {
                            firing: result.firing.iter().copied().collect(),
                            resolved: result.resolved.iter().copied().collect(),
                            at: now_ms,
                        });
                        group.notified.insert(i, (result.firing.clone(), result.resolved.clone(), Instant::now()));
                    }
                    if result.outcomes.iter().any(|(_, ok)| *ok) {
                        // Entries of groups gone for a day (or for their longest repeat
                        // interval, if longer) are of no use any more.
                        let keep = plans.borrow().longest_repeat().max(Duration::from_secs(24 * 3600));
                        log.retain(|_, e| e.at > now_ms - keep.as_millis() as i64);
                        if let Some(writer) = &log_writer {
                            writer.save(&log);
                        }
                    }
                    // Resolved alerts are done with once every integration got them.
                    if result.outcomes.iter().all(|(_, ok)| *ok) {
                        group.alerts.retain(|fp, a| !(a.resolved() && result.resolved.contains(fp)));
                    }
                }
                groups.retain(|_, g| g.in_flight || !g.alerts.is_empty());
            }
            _ = ticker.tick() => {
                let now = Instant::now();
                current.retain(|_, (_, seen)| now.duration_since(*seen) < Duration::from_secs(15 * 60));
                forwarded.retain(|fp, _| current.contains_key(fp));
                let plan = plans.borrow().clone();
                for (key, group) in groups.iter_mut() {
                    if group.in_flight || group.next_flush > now {
                        continue;
                    }
                    group.next_flush = now + group.route.group_interval;
                    let muted = |a: &Alert| plan.muted(a, &current);
                    flush(key, group, &muted, &external_url, &metrics, &done_tx);
                }
                groups.retain(|_, g| g.in_flight || !g.alerts.is_empty());
            }
            _ = stop.wait_for(|s| *s) => {
                for queue in &queues {
                    queue.close();
                }
                return;
            }
        }
    }
}

/// Queues for every Alertmanager what Prometheus would send now: new and
/// just-resolved alerts, and ones not re-sent for `RESEND_DELAY`.
fn forward(
    queues: &[Arc<alertmanager::Queue>],
    batch: &[Alert],
    forwarded: &mut HashMap<u64, (bool, Instant)>,
) {
    let now = Instant::now();
    let due: Vec<Alert> = batch
        .iter()
        .filter(|a| needs_sending(a, forwarded.get(&a.fingerprint()).copied(), now))
        .cloned()
        .collect();
    if due.is_empty() {
        return;
    }
    for a in &due {
        forwarded.insert(a.fingerprint(), (a.resolved(), now));
    }
    for queue in queues {
        queue.push(&due);
    }
}

/// Prometheus' `needsSending`: new, just resolved, or not sent for a resend delay. Resolved
/// alerts are re-sent too while the rules retain them (15 minutes), so an Alertmanager that
/// missed the first notice still resolves the alert.
fn needs_sending(alert: &Alert, last: Option<(bool, Instant)>, now: Instant) -> bool {
    match last {
        None => true,
        Some((was_resolved, at)) => {
            (alert.resolved() && !was_resolved) || now.duration_since(at) >= RESEND_DELAY
        }
    }
}

/// One flush of a group: Alertmanager's pipeline with dedup, retry and log per integration,
/// the integrations notified in parallel.
fn flush(
    key: &str,
    group: &mut Group,
    muted: &dyn Fn(&Alert) -> bool,
    external_url: &str,
    metrics: &NotifyMetrics,
    done: &mpsc::UnboundedSender<Delivered>,
) {
    // Muted alerts are left out, as Alertmanager's mute stage does.
    let firing: HashSet<u64> = group
        .alerts
        .iter()
        .filter(|(_, a)| !a.resolved() && !muted(a))
        .map(|(fp, _)| *fp)
        .collect();
    let resolved: HashSet<u64> = group
        .alerts
        .iter()
        .filter(|(_, a)| a.resolved())
        .map(|(fp, _)| *fp)
        .collect();
    let due: Vec<(usize, Arc<dyn Notifier>)> = group
        .receiver
        .integrations
        .iter()
        .enumerate()
        .filter(|(i, integration)| {
            needs_update(
                group.notified.get(i),
                &firing,
                &resolved,
                integration.send_resolved(),
                group.route.repeat_interval,
            )
        })
        .map(|(i, integration)| (i, integration.clone()))
        .collect();
    if due.is_empty() {
        // Nothing new: drop resolved alerts nobody was told were firing.
        group.alerts.retain(|_, a| !a.resolved());
        return;
    }
    let mut alerts: Vec<Alert> = group
        .alerts
        .values()
        .filter(|a| !muted(a))
        .cloned()
        .collect();
    alerts.sort_by(|a, b| {
        a.resolved()
            .cmp(&b.resolved())
            .then_with(|| a.labels.cmp(&b.labels))
    });
    let message = Message {
        receiver: group.receiver.name.clone(),
        group_key: key.to_string(),
        group_labels: group.labels.clone(),
        alerts,
        external_url: external_url.to_string(),
    };
    group.in_flight = true;
    let deadline = group.route.group_interval;
    let metrics = metrics.clone();
    let done = done.clone();
    let key = key.to_string();
    tokio::spawn(async move {
        let mut sends = tokio::task::JoinSet::new();
        for (i, integration) in due {
            let mut message = message.clone();
            let metrics = metrics.clone();
            sends.spawn(async move {
                if !integration.send_resolved() {
                    message.alerts.retain(|a| !a.resolved());
                    // Only resolved alerts, which it does not send: done, as Alertmanager's
                    // retry stage counts it.
                    if message.alerts.is_empty() {
                        return (i, true);
                    }
                }
                (
                    i,
                    deliver(integration.as_ref(), &message, deadline, &metrics).await,
                )
            });
        }
        let mut outcomes = Vec::new();
        while let Some(joined) = sends.join_next().await {
            // A panicking integration counts as failed; the next flush tries it again.
            outcomes.push(joined.unwrap_or((usize::MAX, false)));
        }
        let _ = done.send(Delivered {
            key,
            firing,
            resolved,
            outcomes,
        });
    });
}

/// The wait before the next attempt: the backoff with ±50 % jitter, so integrations that
/// failed together do not retry in lockstep, or longer where `Retry-After` asks for it.
fn retry_in(e: &SendError, backoff: Duration) -> Duration {
    let jittered = backoff.mul_f64(0.5 + fastrand::f64());
    // A Retry-After of 0 or in the past must not turn retries into a tight loop.
    e.retry_after.map_or(jittered, |asked| asked.max(jittered))
}

/// Sends with exponential backoff on retryable errors until `deadline` (the
/// group interval) has passed.
async fn deliver(
    integration: &dyn Notifier,
    message: &Message,
    deadline: Duration,
    metrics: &NotifyMetrics,
) -> bool {
    let give_up = Instant::now() + deadline;
    let mut backoff = Duration::from_millis(100);
    loop {
        let started = Instant::now();
        let outcome = integration.notify(message).await;
        metrics.observe_duration(integration.integration(), started.elapsed().as_secs_f64());
        let e = match outcome {
            Ok(()) => {
                metrics.outcome(&message.receiver, integration.integration(), "success");
                return true;
            }
            Err(e) => e,
        };
        let wait = retry_in(&e, backoff);
        if !e.retryable || Instant::now() + wait >= give_up {
            metrics.outcome(&message.receiver, integration.integration(), "failure");
            tracing::error!(event = "notification_failed", receiver = %message.receiver,
                integration = integration.integration(), error = %e.message,
                "notification given up");
            return false;
        }
        metrics.outcome(&message.receiver, integration.integration(), "retry");
        tracing::warn!(event = "notification_retry", receiver = %message.receiver,
            integration = integration.integration(), error = %e.message,
            retry_in_ms = wait.as_millis() as u64, "notification failed; retrying");
        tokio::time::sleep(wait).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn alert(pairs: &[(&str, &str)]) -> Alert {
        Alert::firing_for_test(pairs)
    }

    #[test]
    fn matchers_are_alertmanagers() {
        for (text, name, value, matches, misses) in [
            ("env!=\"prod\"", "env", "prod", "dev", "prod"),
            (
                "severity=critical",
                "severity",
                "critical",
                "critical",
                "warning",
            ),
            (
                "service=~\"db|cache\"",
                "service",
                "db|cache",
                "cache",
                "web",
            ),
            ("team !~ ml.*", "team", "ml.*", "web", "ml-infra"),
            ("path=\"a=~b\"", "path", "a=~b", "a=~b", "a"),
            ("dir=C:\\tmp", "dir", "C:\\tmp", "C:\\tmp", "C:"),
        ] {
            let m = parse_matcher(text).unwrap_or_else(|e| panic!("{e}"));
            assert_eq!((m.name.as_str(), m.value.as_str()), (name, value), "{text}");
            assert!(m.is_match(matches) && !m.is_match(misses), "{text}");
        }
        assert!(parse_matcher("severity").is_err());
        assert!(parse_matcher("a=\"1\", b=\"2\"").is_err());
    }

    #[test]
    fn retry_after_is_honoured_and_backoff_is_jittered() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(retry_after("7", now), Some(Duration::from_secs(7)));
        // 1,700,000,030 s: 30 s after `now`, as an HTTP date.
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:13:50 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after("Tue, 14 Nov 2023 22:13:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(retry_after("soon", now), None);
        let throttled = SendError {
            message: String::new(),
            retryable: true,
            retry_after: Some(Duration::from_secs(3)),
        };
        assert_eq!(
            retry_in(&throttled, Duration::from_millis(100)),
            Duration::from_secs(3)
        );
        let now_please = SendError {
            message: String::new(),
            retryable: true,
            retry_after: Some(Duration::ZERO),
        };
        assert!(retry_in(&now_please, Duration::from_millis(100)) >= Duration::from_millis(50));
        let failed = SendError {
            retry_after: None,
            ..throttled
        };
        let waits: Vec<Duration> = (0..50)
            .map(|_| retry_in(&failed, Duration::from_millis(100)))
            .collect();
        assert!(
            waits
                .iter()
                .all(|w| *w >= Duration::from_millis(50) && *w <= Duration::from_millis(150))
        );
        assert!(
            waits.windows(2).any(|w| w[0] != w[1]),
            "no jitter: {waits:?}"
        );
    }

    #[test]
    fn dedup_per_integration_is_alertmanagers_needs_update() {
        let set = |fps: &[u64]| fps.iter().copied().collect::<HashSet<u64>>();
        let hour = Duration::from_secs(3600);
        let now = Instant::now();
        let told = (set(&[1, 2]), set(&[]), now);
        // Never told: only firing alerts are worth a first notification.
        assert!(needs_update(None, &set(&[1]), &set(&[]), true, hour));
        assert!(!needs_update(None, &set(&[]), &set(&[1]), true, hour));
        // Something new fires.
        assert!(needs_update(
            Some(&told),
            &set(&[1, 3]),
            &set(&[]),
            false,
            hour
        ));
        // One of two resolved: only integrations that send resolved notices are told.
        assert!(needs_update(
            Some(&told),
            &set(&[1]),
            &set(&[2]),
            true,
            hour
        ));
        assert!(!needs_update(
            Some(&told),
            &set(&[1]),
            &set(&[2]),
            false,
            hour
        ));
        // All resolved: every integration, so its log forgets the firing ones.
        assert!(needs_update(
            Some(&told),
            &set(&[]),
            &set(&[1, 2]),
            false,
            hour
        ));
        let quiet = (set(&[]), set(&[1]), now);
        assert!(!needs_update(
            Some(&quiet),
            &set(&[]),
            &set(&[1]),
            true,
            hour
        ));
        // Unchanged: only after the repeat interval.
        assert!(!needs_update(
            Some(&told),
            &set(&[1, 2]),
            &set(&[]),
            true,
            hour
        ));
        let old = (set(&[1, 2]), set(&[]), now - Duration::from_secs(2));
        assert!(needs_update(
            Some(&old),
            &set(&[1, 2]),
            &set(&[]),
            true,
            Duration::from_secs(1)
        ));
    }

    #[test]
    fn forwarding_resends_firing_and_retained_resolved_alerts_each_resend_delay() {
        let now = Instant::now();
        let firing = alert(&[("alertname", "A")]);
        let mut resolved = firing.clone();
        resolved.ends_at = Some(1);
        let just = now - Duration::from_secs(1);
        let long_ago = now - RESEND_DELAY;
        assert!(needs_sending(&firing, None, now));
        assert!(!needs_sending(&firing, Some((false, just)), now));
        assert!(needs_sending(&firing, Some((false, long_ago)), now));
        assert!(
            needs_sending(&resolved, Some((false, just)), now),
            "just resolved"
        );
        assert!(!needs_sending(&resolved, Some((true, just)), now));
        assert!(
            needs_sending(&resolved, Some((true, long_ago)), now),
            "resolved and still retained: sent again"
        );
    }

    #[test]
    fn fingerprint_is_alertmanagers() {
        // Alertmanager: model.LabelSet{"alertname": "Test"}.Fingerprint() = 0x... (FNV-1a 64).
        let a = alert(&[("alertname", "Test")]);
        let mut h: u64 = 0xcbf29ce484222325;
        for b in b"alertname\xffTest\xff" {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x100000001b3);
        }
        assert_eq!(a.fingerprint(), h);
        assert_ne!(
            a.fingerprint(),
            alert(&[("alertname", "Other")]).fingerprint()
        );
    }

    #[test]
    fn the_log_remembers_at_least_the_longest_repeat_interval() {
        let config: NotifyConfig = serde_saphyr::from_str(
            "route:\n  receiver: a\n  repeat_interval: 1h\n  routes:\n    - matchers: ['x=\"1\"']\n      receiver: a\n      routes:\n        - matchers: ['y=\"1\"']\n          receiver: a\n          repeat_interval: 3d\nreceivers:\n  - name: a\n",
        )
        .unwrap();
        crate::install_tls_provider();
        let plan = Plan::build(&config, &reqwest::Client::new()).unwrap();
        assert_eq!(plan.longest_repeat(), Duration::from_secs(3 * 86_400));
    }

    #[test]
    fn routes_match_like_alertmanager() {
        let config: NotifyConfig = serde_saphyr::from_str(
            r#"
route:
  receiver: default
  group_by: [alertname]
  routes:
    - matchers: ['severity="critical"']
      receiver: pager
      continue: true
    - matchers: ['team=~"ml|data"']
      receiver: ml
      group_by: ['...']
receivers:
  - name: default
  - name: pager
  - name: ml
"#,
        )
        .unwrap();
        crate::install_tls_provider();
        let plan = Plan::build(&config, &reqwest::Client::new()).unwrap();
        let root = plan.root.unwrap();
        let routed = |pairs: &[(&str, &str)]| {
            let mut out = Vec::new();
            root.matching(&Labels::from_pairs(pairs.iter().copied()), &mut out);
            out.iter().map(|r| r.receiver.clone()).collect::<Vec<_>>()
        };
        assert_eq!(routed(&[("alertname", "A")]), ["default"]);
        assert_eq!(
            routed(&[("alertname", "A"), ("severity", "critical"), ("team", "ml")]),
            ["pager", "ml"]
        );
        assert_eq!(routed(&[("alertname", "A"), ("team", "data")]), ["ml"]);
        let ml = &root.children[1];
        assert_eq!(ml.key, "{}/{team=~\"ml|data\"}");
        let labels = Labels::from_pairs([("alertname", "A"), ("team", "ml")]);
        assert_eq!(
            ml.group_labels(&labels),
            labels,
            "... groups by every label"
        );
        assert_eq!(root.group_labels(&labels).to_string(), "{alertname=\"A\"}");
        assert_eq!(
            ml.group_wait,
            Duration::from_secs(30),
            "defaults as in Alertmanager"
        );
    }

    #[test]
    fn inhibition_needs_a_firing_source_with_equal_labels() {
        let config: NotifyConfig = serde_saphyr::from_str(
            "inhibit_rules:\n  - source_matchers: ['severity=\"critical\"']\n    target_matchers: ['severity=\"warning\"']\n    equal: [instance]\n",
        )
        .unwrap();
        crate::install_tls_provider();
        let plan = Plan::build(&config, &reqwest::Client::new()).unwrap();
        let now = Instant::now();
        let critical = alert(&[
            ("alertname", "Down"),
            ("severity", "critical"),
            ("instance", "a"),
        ]);
        let warning_a = alert(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("instance", "a"),
        ]);
        let warning_b = alert(&[
            ("alertname", "Slow"),
            ("severity", "warning"),
            ("instance", "b"),
        ]);
        let mut current: HashMap<u64, (Alert, Instant)> = [&critical, &warning_a, &warning_b]
            .into_iter()
            .map(|a| (a.fingerprint(), (a.clone(), now)))
            .collect();
        assert!(plan.muted(&warning_a, &current));
        assert!(!plan.muted(&warning_b, &current), "equal: instance differs");
        assert!(!plan.muted(&critical, &current));
        let mut resolved = critical.clone();
        resolved.ends_at = Some(1);
        current.insert(critical.fingerprint(), (resolved, now));
        assert!(
            !plan.muted(&warning_a, &current),
            "a resolved source mutes nothing"
        );
    }

    #[test]
    fn webhook_payload_has_alertmanagers_fields() {
        let mut resolved = alert(&[("alertname", "A"), ("instance", "b"), ("job", "j")]);
        resolved.ends_at = Some(2000);
        let mut firing = alert(&[("alertname", "A"), ("instance", "a"), ("job", "j")]);
        firing.annotations.insert("summary".into(), "s".into());
        let message = Message {
            receiver: "hook".into(),
            group_key: "{}:{alertname=\"A\"}".into(),
            group_labels: Labels::from_pairs([("alertname", "A")]),
            alerts: vec![firing, resolved],
            external_url: "http://tw".into(),
        };
        let p = message.webhook_payload(1);
        assert_eq!(p["version"], "4");
        assert_eq!(p["status"], "firing");
        assert_eq!(p["truncatedAlerts"], 1);
        assert_eq!(p["commonLabels"], json!({"alertname": "A", "job": "j"}));
        assert_eq!(p["commonAnnotations"], json!({}));
        assert_eq!(p["alerts"].as_array().unwrap().len(), 1);
        assert_eq!(p["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(p["alerts"][0]["fingerprint"].as_str().unwrap().len(), 16);
    }
}
