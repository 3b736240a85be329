//! Notifications, Alertmanager's model in-process: alerts from the rule engine are routed
//! through a tree of label matchers (`route`) into aggregation groups (`dispatch`), and each
//! group notifies its receiver after `group_wait`, on changes every `group_interval`, and again
//! after `repeat_interval`. Each integration of a receiver runs its own stages (`stages`):
//! mute (`inhibit`), dedup against the notification log (`nflog`), retry. Sends never block
//! rule evaluation.

mod alertmanager;
mod api;
mod dispatch;
mod email;
mod inhibit;
mod integration;
mod matcher;
mod message;
mod nflog;
mod route;
mod silence;
mod slack;
mod stages;
mod timeinterval;
mod webhook;

use crate::config::NotifyConfig;
use crate::storage::Labels;
use crate::template::TemplateSet;
use email::Email;
use inhibit::Inhibition;
use integration::BuildContext;
use route::Route;
use route::build_route;
use slack::Slack;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use timeinterval::TimeIntervals;
use tokio::time::Instant;
use webhook::Webhook;

pub use alertmanager::{Alertmanager, RESEND_DELAY};
pub use api::{AlertmanagerApi, AmError};
pub use dispatch::{AlertSink, start};
pub use integration::{Notifier, Receiver, SendError, SendFuture, post_json, secret_url};
pub use message::{Alert, Condition, Message};
pub use silence::{SetError, Silence, SilenceMatcher, SilenceState, Silences};

/// The routing tree, receivers and inhibition rules built from `notify:`; checked before use.
pub struct Plan {
    root: Option<Route>,
    receivers: HashMap<String, Arc<Receiver>>,
    inhibitions: Vec<Inhibition>,
    alertmanagers: Vec<Arc<Alertmanager>>,
    time_intervals: TimeIntervals,
    /// How long an alert posted without `endsAt` stays firing (`global.resolve_timeout`, 5m).
    resolve_timeout: Duration,
}

impl Plan {
    /// Whether any inhibition rule mutes `alert` given the alerts firing now.
    fn muted(&self, alert: &Alert, current: &HashMap<u64, (Alert, Instant)>) -> bool {
        self.inhibited_by(alert, current.values().map(|(a, _)| a))
            .is_some()
    }

    /// Whether `route` sends nothing now: inside one of its mute intervals, or outside all of
    /// its active ones (Alertmanager's time-mute and time-active stages).
    fn time_muted(&self, route: &Route, now: chrono::DateTime<chrono::Utc>) -> bool {
        self.time_intervals.any_on(&route.mute_time_intervals, now)
            || (!route.active_time_intervals.is_empty()
                && !self
                    .time_intervals
                    .any_on(&route.active_time_intervals, now))
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
    /// Builds the tree, the receivers (their templates compiled) and the inhibition rules;
    /// secrets are read now, so a missing one fails the start or the reload.
    pub fn build(config: &NotifyConfig, client: &reqwest::Client) -> Result<Plan, String> {
        // Paths are already relative to the file that names them.
        let templates = TemplateSet::load(&config.templates, std::path::Path::new(""))?;
        let context = BuildContext {
            client,
            templates: &templates,
            global: &config.global,
            origin: config.origin,
        };
        let mut receivers = HashMap::new();
        for r in &config.receivers {
            let mut integrations: Vec<Arc<dyn Notifier>> = Vec::new();
            for w in &r.webhook_configs {
                integrations.push(Arc::new(Webhook::new(w, &context, &r.name)?));
            }
            for c in &r.slack_configs {
                integrations.push(Arc::new(Slack::new(c, &context, &r.name)?));
            }
            for c in &r.email_configs {
                integrations.push(Arc::new(Email::new(c, &context, &r.name)?));
            }
            let receiver = Arc::new(Receiver {
                name: r.name.clone(),
                integrations,
            });
            if receivers.insert(r.name.clone(), receiver).is_some() {
                return Err(format!("notify.receivers: {:?} is defined twice", r.name));
            }
        }
        let time_intervals =
            TimeIntervals::build(&config.time_intervals, &config.mute_time_intervals)?;
        let names: Vec<String> = receivers.keys().cloned().collect();
        let root = config
            .route
            .as_ref()
            .map(|r| build_route(r, None, &names, &time_intervals.names()))
            .transpose()?;
        let inhibitions = config
            .inhibit_rules
            .iter()
            .enumerate()
            .map(|(i, rule)| {
                Inhibition::build(rule).map_err(|e| format!("notify.inhibit_rules[{i}]: {e}"))
            })
            .collect::<Result<Vec<_>, String>>()?;
        let alertmanagers = config
            .alertmanagers
            .iter()
            .enumerate()
            .map(|(i, a)| Alertmanager::new(a, i, client).map(Arc::new))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Plan {
            root,
            receivers,
            inhibitions,
            alertmanagers,
            time_intervals,
            resolve_timeout: config
                .global
                .resolve_timeout
                .map_or(Duration::from_secs(300), |d| {
                    Duration::from_millis(d.millis() as u64)
                }),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
}
