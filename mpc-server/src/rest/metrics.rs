//! Prometheus metrics: WebSocket sessions by protocol and outcome, their
//! durations and bytes, open sessions, REST requests, webhook deliveries
//! and backlog, failed OT-setup tree proofs and their alerts (PROTOCOL.md
//! §5.3), sessions refused by admission rules (§18.5).
//!
//! Every label value comes from a closed set, most enforced by the type
//! (`&'static str`): protocol names, outcomes, directions, operations,
//! admission rules, the normalized HTTP method; the REST route is its
//! template or `unmatched` and the status the server's own. No
//! client-chosen text becomes a label, so no client can add series.

use std::sync::atomic::AtomicU64;
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
    protocol: &'static str,
    outcome: &'static str,
}

/// Labels of a protocol's byte counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ByteLabels {
    protocol: &'static str,
    direction: &'static str,
}

/// Labels of a REST request. Every value comes from a closed set: the
/// method normalized (`GET` ... `OPTIONS`, `other`), the route's template
/// or `unmatched`, the status code the server itself chose.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    route: String,
    status: u16,
}

/// Labels of a protocol duration.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ProtocolLabel {
    protocol: &'static str,
}

/// Labels of a PPRF proof failure: the operation (`keygen` or `refresh`).
/// Never the owner or key (unbounded label values); the warning log names
/// them.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OperationLabel {
    operation: &'static str,
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
    webhook_backlog: Gauge,
    webhook_oldest_age: Gauge<f64, AtomicU64>,
    webhooks_in_flight: Gauge,
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
        let webhook_backlog = Gauge::default();
        registry.register(
            "webhook_backlog_events",
            "Undelivered webhook events in the outbox (all server processes)",
            webhook_backlog.clone(),
        );
        let webhook_oldest_age = Gauge::<f64, AtomicU64>::default();
        registry.register(
            "webhook_oldest_event_age_seconds",
            "Age of the oldest undelivered webhook event (0 when there is none)",
            webhook_oldest_age.clone(),
        );
        let webhooks_in_flight = Gauge::default();
        registry.register(
            "webhook_deliveries_in_flight",
            "Webhook requests in flight in this process",
            webhooks_in_flight.clone(),
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
            webhook_backlog,
            webhook_oldest_age,
            webhooks_in_flight,
        }
    }

    /// Counts a finished session: `outcome` is `ok` or the failure kind.
    pub fn session_finished(&self, protocol: &'static str, outcome: &'static str) {
        self.sessions
            .get_or_create(&SessionLabels { protocol, outcome })
            .inc();
    }

    /// Records a successful session's duration and bytes.
    pub fn session_succeeded(
        &self,
        protocol: &'static str,
        elapsed: Duration,
        sent: u64,
        received: u64,
    ) {
        let label = ProtocolLabel { protocol };
        self.session_seconds
            .get_or_create(&label)
            .observe(elapsed.as_secs_f64());
        for (direction, bytes) in [("sent", sent), ("received", received)] {
            self.session_bytes
                .get_or_create(&ByteLabels {
                    protocol,
                    direction,
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

    /// Counts a REST request. `method` and `route` must come from closed
    /// sets (a normalized method, a route template or `unmatched`): every
    /// distinct value is a series kept for the life of the process.
    pub fn request(&self, method: &'static str, route: &str, status: u16) {
        self.requests
            .get_or_create(&RequestLabels {
                method,
                route: route.to_owned(),
                status,
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

    /// Sets the webhook gauges: undelivered events, the oldest one's age
    /// in seconds, and requests in flight.
    pub fn webhook_backlog(&self, waiting: u64, oldest_age_seconds: f64, in_flight: u64) {
        let gauge = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        self.webhook_backlog.set(gauge(waiting));
        self.webhook_oldest_age.set(oldest_age_seconds);
        self.webhooks_in_flight.set(gauge(in_flight));
    }

    /// Counts a failed PPRF proof in `operation`.
    pub fn pprf_proof_failed(&self, operation: &'static str) {
        self.pprf_failures
            .get_or_create(&OperationLabel { operation })
            .inc();
    }

    /// Counts a PPRF proof failure at or past the threshold (an alert).
    pub fn pprf_failure_alert(&self, operation: &'static str) {
        self.pprf_alerts
            .get_or_create(&OperationLabel { operation })
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
