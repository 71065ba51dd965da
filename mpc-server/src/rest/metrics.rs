//! Prometheus metrics: WebSocket sessions by protocol and outcome, their
//! durations and bytes, open sessions, REST requests, webhook deliveries,
//! failed OT-setup tree proofs and their alerts (PROTOCOL.md §5.3),
//! sessions refused by admission rules (§18.5).

use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;

/// Labels of a finished WebSocket session.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SessionLabels {
    protocol: String,
    outcome: String,
}

/// Labels of a protocol's byte counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByteLabels {
    protocol: String,
    direction: String,
}

/// Labels of a REST request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: String,
    route: String,
    status: String,
}

/// Labels of a protocol duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: String,
}

/// Labels of a PPRF proof failure: the operation (`keygen` or `refresh`).
/// Never the owner or key (unbounded label values); the warning log names
/// them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: String,
}

/// Labels of a refused admission: the rule, from a closed set
/// ([`crate::admission`]).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

fn duration_histogram() -> Histogram {
    // 1 ms .. ~65 s.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the server exports.
pub struct Metrics {
    registry: Registry,
    sessions: Family<SessionLabels, Counter>,
    session_seconds: Family<ProtocolLabel, Histogram, fn() -> Histogram>,
    session_bytes: Family<ByteLabels, Counter>,
    open_sessions: Gauge,
    requests: Family<RequestLabels, Counter>,
    webhooks_delivered: Counter,
    webhooks_failed: Counter,
    pprf_failures: Family<OperationLabel, Counter>,
    pprf_alerts: Family<OperationLabel, Counter>,
    admission_refusals: Family<ReasonLabel, Counter>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every metric at zero.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("mpc");
        let sessions = Family::<SessionLabels, Counter>::default();
        registry.register(
            "sessions",
            "WebSocket sessions by protocol and outcome",
            sessions.clone(),
        );
        let session_seconds: Family<ProtocolLabel, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(duration_histogram);
        registry.register(
            "session_duration_seconds",
            "Duration of successful WebSocket sessions",
            session_seconds.clone(),
        );
        let session_bytes = Family::<ByteLabels, Counter>::default();
        registry.register(
            "session_bytes",
            "Bytes of binary frames of successful sessions, by direction",
            session_bytes.clone(),
        );
        let open_sessions = Gauge::default();
        registry.register(
            "open_sessions",
            "WebSocket sessions open now",
            open_sessions.clone(),
        );
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "http_requests",
            "REST requests by route and status",
            requests.clone(),
        );
        let webhooks_delivered = Counter::default();
        registry.register(
            "webhooks_delivered",
            "Webhook events delivered",
            webhooks_delivered.clone(),
        );
        let webhooks_failed = Counter::default();
        registry.register(
            "webhook_failures",
            "Failed webhook delivery attempts",
            webhooks_failed.clone(),
        );
        let pprf_failures = Family::<OperationLabel, Counter>::default();
        registry.register(
            "pprf_proof_failures",
            "OT-setup GGM-tree (PPRF) proof failures of a client's trees, by operation",
            pprf_failures.clone(),
        );
        let pprf_alerts = Family::<OperationLabel, Counter>::default();
        registry.register(
            "pprf_failure_alerts",
            "PPRF proof failures at or past the per-key-and-owner threshold (PROTOCOL.md 5.3)",
            pprf_alerts.clone(),
        );
        let admission_refusals = Family::<ReasonLabel, Counter>::default();
        registry.register(
            "admission_refusals",
            "WebSocket sessions refused before any protocol work, by rule (PROTOCOL.md 18.5)",
            admission_refusals.clone(),
        );
        Self {
            registry,
            admission_refusals,
            pprf_failures,
            pprf_alerts,
            sessions,
            session_seconds,
            session_bytes,
            open_sessions,
            requests,
            webhooks_delivered,
            webhooks_failed,
        }
    }

    /// Counts a finished session: `outcome` is `ok` or the failure kind.
    pub fn session_finished(&self, protocol: &str, outcome: &str) {
        self.sessions
            .get_or_create(&SessionLabels {
                protocol: protocol.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Records a successful session's duration and bytes.
    pub fn session_succeeded(&self, protocol: &str, elapsed: Duration, sent: u64, received: u64) {
        let label = ProtocolLabel {
            protocol: protocol.to_owned(),
        };
        self.session_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        for (direction, bytes) in [("sent", sent), ("received", received)] {
            self.session_bytes
                .get_or_create(&ByteLabels {
                    protocol: protocol.to_owned(),
                    direction: direction.to_owned(),
                })
                .inc_by(bytes);
        }
    }

    /// The open-sessions gauge (incremented and decremented by the session
    /// slots).
    #[must_use]
    pub fn open_sessions(&self) -> &Gauge {
        &self.open_sessions
    }

    /// Counts a REST request.
    pub fn request(&self, method: &str, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method: method.to_owned(),
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// Sets the webhook counters from the deliverer's totals.
    pub fn webhooks(&self, delivered: u64, failed: u64) {
        let bump = |counter: &Counter, total: u64| {
            let now = counter.get();
            if total > now {
                counter.inc_by(total - now);
            }
        };
        bump(&self.webhooks_delivered, delivered);
        bump(&self.webhooks_failed, failed);
    }

    /// Counts a failed PPRF proof in `operation`.
    pub fn pprf_proof_failed(&self, operation: &str) {
        self.pprf_failures
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Counts a PPRF proof failure at or past the threshold (an alert).
    pub fn pprf_failure_alert(&self, operation: &str) {
        self.pprf_alerts
            .get_or_create(&OperationLabel {
                operation: operation.to_owned(),
            })
            .inc();
    }

    /// Counts a session refused by an admission rule ([`crate::admission`]).
    pub(crate) fn admission_refused(&self, reason: &'static str) {
        self.admission_refusals
            .get_or_create(&ReasonLabel { reason })
            .inc();
    }

    /// The text exposition format.
    #[must_use]
    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
