//! The notifier's self-metrics.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    receiver: String,
    integration: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct IntegrationLabel {
    integration: String,
}

#[derive(Clone)]
struct DurationBuckets;

impl MetricConstructor<Histogram> for DurationBuckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new([
            0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
        ])
    }
}

/// Handles the dispatcher records into.
#[derive(Clone)]
pub struct NotifyMetrics {
    outcomes: Family<OutcomeLabels, Counter>,
    durations: Family<IntegrationLabel, Histogram, DurationBuckets>,
    /// Alerts dropped because the dispatcher's queue was full.
    pub dropped: Counter,
    /// Alerts dropped from an Alertmanager's queue on overflow (the oldest go).
    pub alertmanager_dropped: Counter,
}

impl NotifyMetrics {
    pub(super) fn new() -> NotifyMetrics {
        NotifyMetrics {
            outcomes: Family::default(),
            durations: Family::new_with_constructor(DurationBuckets),
            dropped: Counter::default(),
            alertmanager_dropped: Counter::default(),
        }
    }

    pub(super) fn register(&self, registry: &mut Registry) {
        registry.register(
            "torchwatch_notifications",
            "Notification attempts by receiver, integration and outcome (success, retry, failure)",
            self.outcomes.clone(),
        );
        registry.register(
            "torchwatch_notification_duration_seconds",
            "Duration of one notification attempt",
            self.durations.clone(),
        );
        registry.register(
            "torchwatch_notification_alerts_dropped",
            "Alerts dropped because the notification queue was full",
            self.dropped.clone(),
        );
        registry.register(
            "torchwatch_notification_alertmanager_alerts_dropped",
            "Alerts dropped from an Alertmanager's send queue on overflow, the oldest first",
            self.alertmanager_dropped.clone(),
        );
    }

    /// Counts one attempt's outcome.
    pub fn outcome(&self, receiver: &str, integration: &str, outcome: &str) {
        self.outcomes
            .get_or_create(&OutcomeLabels {
                receiver: receiver.into(),
                integration: integration.into(),
                outcome: outcome.into(),
            })
            .inc();
    }

    /// Records one attempt's duration.
    pub fn observe_duration(&self, integration: &str, seconds: f64) {
        self.durations
            .get_or_create(&IntegrationLabel {
                integration: integration.into(),
            })
            .observe(seconds);
    }
}

/// The silences and what they mute, read at scrape time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SilenceCounts {
    pub active: u64,
    pub pending: u64,
    /// Expired and still kept (the retention).
    pub expired: u64,
    /// Firing alerts an active silence mutes now.
    pub silenced_alerts: u64,
}

/// Something that can count the silences at scrape time (the notifier's API).
pub trait SilenceSource: Send + Sync + 'static {
    fn counts(&self) -> SilenceCounts;
}

/// Encodes `torchwatch_notification_silences` and `torchwatch_notification_alerts_silenced`.
pub struct SilenceCollector(pub Box<dyn SilenceSource>);

impl std::fmt::Debug for SilenceCollector {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SilenceCollector")
    }
}

impl prometheus_client::collector::Collector for SilenceCollector {
    fn encode(
        &self,
        mut encoder: prometheus_client::encoding::DescriptorEncoder,
    ) -> std::fmt::Result {
        let counts = self.0.counts();
        let gauge = prometheus_client::metrics::MetricType::Gauge;
        super::family(
            &mut encoder,
            "torchwatch_notification_silences",
            "Silences by state (active, pending, expired and still kept)",
            gauge,
            [
                ("active", counts.active),
                ("pending", counts.pending),
                ("expired", counts.expired),
            ],
            |e, (state, n)| super::gauge(e, &[("state", state)], n as f64),
        )?;
        super::family(
            &mut encoder,
            "torchwatch_notification_alerts_silenced",
            "Firing alerts an active silence mutes",
            gauge,
            [counts.silenced_alerts],
            |e, n| super::gauge(e, &[], n as f64),
        )
    }
}
