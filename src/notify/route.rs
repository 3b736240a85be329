//! The routing tree: which routes, and so which receivers and groups, an alert goes to.

use super::matcher::{from_maps, parse_matchers};
use crate::config::RouteConfig;
use crate::storage::Labels;
use promql_parser::label::Matcher;
use std::time::Duration;

/// A route with its inherited settings resolved.
#[derive(Clone, Debug)]
pub(super) struct Route {
    /// Alertmanager's route key: `{}` for the root, `{}/{matchers}` below.
    pub(super) key: String,
    pub(super) receiver: String,
    pub(super) matchers: Vec<Matcher>,
    pub(super) continue_: bool,
    /// `None`: group by every label (`...`).
    pub(super) group_by: Option<Vec<String>>,
    pub(super) group_wait: Duration,
    pub(super) group_interval: Duration,
    pub(super) repeat_interval: Duration,
    /// Names of the time intervals in which this route sends nothing (not inherited).
    pub(super) mute_time_intervals: Vec<String>,
    /// Names of the time intervals outside which this route sends nothing (not inherited).
    pub(super) active_time_intervals: Vec<String>,
    pub(super) children: Vec<Route>,
}

/// Builds a route and its children; `receivers` and `intervals` are the names defined.
pub(super) fn build_route(
    config: &RouteConfig,
    parent: Option<&Route>,
    receivers: &[String],
    intervals: &[String],
) -> Result<Route, String> {
    let ms = |d: Option<crate::config::PromDuration>, inherited: Option<Duration>, default: u64| {
        d.map(|d| Duration::from_millis(d.millis() as u64))
            .or(inherited)
            .unwrap_or(Duration::from_secs(default))
    };
    let mut matchers = Vec::new();
    for text in &config.matchers {
        matchers.extend(parse_matchers(text).map_err(|e| format!("notify.route: {e}"))?);
    }
    matchers.extend(
        from_maps(&config.match_, &config.match_re).map_err(|e| format!("notify.route: {e}"))?,
    );
    for name in config
        .mute_time_intervals
        .iter()
        .chain(&config.active_time_intervals)
    {
        if !intervals.contains(name) {
            return Err(format!(
                "notify.route: time interval {name:?} is not defined under time_intervals"
            ));
        }
    }
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
        Some(p) => {
            // The older match/match_re maps join the key as the matchers they stand for.
            let older = config
                .match_
                .iter()
                .map(|(n, v)| format!("{n}={v:?}"))
                .chain(config.match_re.iter().map(|(n, v)| format!("{n}=~{v:?}")));
            let all: Vec<String> = config.matchers.iter().cloned().chain(older).collect();
            format!("{}/{{{}}}", p.key, all.join(","))
        }
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
        mute_time_intervals: config.mute_time_intervals.clone(),
        active_time_intervals: config.active_time_intervals.clone(),
        children: Vec::new(),
    };
    for child in &config.routes {
        let built = build_route(child, Some(&route), receivers, intervals)?;
        route.children.push(built);
    }
    Ok(route)
}

impl Route {
    /// Alertmanager's matching: the deepest matching routes, children in order,
    /// stopping at the first match unless it says `continue`.
    pub(super) fn matching<'r>(&'r self, labels: &Labels, out: &mut Vec<&'r Route>) -> bool {
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

    pub(super) fn group_labels(&self, labels: &Labels) -> Labels {
        match &self.group_by {
            None => labels.clone(),
            Some(names) => {
                Labels::from_pairs(names.iter().map(|n| (n.clone(), labels.get(n).to_string())))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NotifyConfig;
    use crate::notify::Plan;

    #[test]
    pub(super) fn routes_match_like_alertmanager() {
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
}
