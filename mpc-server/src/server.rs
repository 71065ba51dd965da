//! The server: shared state, the WebSocket route, the listeners and
//! graceful shutdown.
//!
//! Embedding: build a [`Server`] from a [`ServerConfig`], then either mount
//! [`Server::ws_router`] (and [`Server::rest_router`]) in your own axum
//! application, or call [`Server::run`] with listeners.

use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::ws::WebSocketUpgrade;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mpc_transport_ws::{serve, TransportConfig};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info, warn, Instrument};

use crate::admission::SlotRefused;
use crate::auth::Authenticator;
use crate::config::ServerConfig;
use crate::vault::{Vault, VaultError};

/// Milliseconds since the Unix epoch (the storage layer's timestamps).
#[must_use]
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Why the server could not start or stopped.
#[non_exhaustive]
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// The database could not be opened, migrated, or does not match the
    /// master key.
    #[error("storage: {0}")]
    Storage(#[from] VaultError),
    /// The authentication configuration is unusable.
    #[error("authentication: {0}")]
    Auth(#[from] crate::auth::AuthConfigError),
    /// The configuration is incomplete or inconsistent.
    #[error("configuration: {0}")]
    Config(String),
    /// A listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Counts open WebSocket sessions, in total and per owner.
#[derive(Default)]
pub(crate) struct SessionCounter {
    open: AtomicUsize,
    per_owner: Mutex<std::collections::HashMap<String, usize>>,
}

/// One open session; decrements the counters on drop.
pub(crate) struct SessionSlot {
    state: Arc<AppState>,
    owner: String,
}

impl Drop for SessionSlot {
    fn drop(&mut self) {
        let counter = &self.state.sessions;
        counter.open.fetch_sub(1, Ordering::SeqCst);
        self.state.metrics.open_sessions().dec();
        let mut per_owner = counter
            .per_owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(count) = per_owner.get_mut(&self.owner) {
            *count -= 1;
            if *count == 0 {
                per_owner.remove(&self.owner);
            }
        }
    }
}

/// State shared by every session and request.
pub struct AppState {
    pub(crate) vault: Vault,
    pub(crate) auth: Authenticator,
    pub(crate) transport: TransportConfig,
    pub(crate) max_sessions: usize,
    pub(crate) max_sessions_per_owner: usize,
    /// How long a refresh lease runs without renewal (PROTOCOL.md §18.1).
    pub(crate) refresh_lease: Duration,
    /// Per-key step locks, ban cancellation and pending bans
    /// ([`crate::bans`]).
    pub(crate) key_guards: crate::bans::KeyGuards,
    pub(crate) sessions: SessionCounter,
    pub(crate) metrics: crate::rest::metrics::Metrics,
    pub(crate) rest: crate::rest::RestConfig,
    pub(crate) limiters: crate::rest::limits::Limiters,
    /// WebSocket operation limits and trusted proxies ([`crate::rate_limits`]).
    pub(crate) rate_limiters: crate::rate_limits::RateLimiters,
    /// Failed GGM-tree proofs per key and owner ([`crate::pprf`]).
    pub(crate) pprf_failures: crate::pprf::PprfFailures,
    /// Quotas, sessions in progress, upgrades per address
    /// ([`crate::admission`]).
    pub(crate) admission: crate::admission::Admission,
    webhook: Option<crate::webhook::WebhookConfig>,
    connections: crate::listener::ConnectionLimits,
    pending_key_max_age: Duration,
    pub(crate) webhook_stats: Mutex<Option<Arc<crate::webhook::DeliveryStats>>>,
    shutdown: watch::Receiver<bool>,
    shutdown_tx: watch::Sender<bool>,
}

impl AppState {
    fn take_slot(self: &Arc<Self>, owner: &str) -> Result<SessionSlot, SlotRefused> {
        let mut per_owner = self
            .sessions
            .per_owner
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let limits = crate::admission::SlotLimits {
            max_sessions: self.max_sessions,
            max_per_owner: self.max_sessions_per_owner,
        };
        let used = crate::admission::SlotUse {
            open: self.sessions.open.load(Ordering::SeqCst),
            owners: per_owner.len(),
            held: per_owner.get(owner).copied().unwrap_or(0),
        };
        crate::admission::may_take_slot(limits, used)?;
        *per_owner.entry(owner.to_owned()).or_insert(0) += 1;
        self.sessions.open.fetch_add(1, Ordering::SeqCst);
        self.metrics.open_sessions().inc();
        Ok(SessionSlot {
            state: Arc::clone(self),
            owner: owner.to_owned(),
        })
    }
}

/// The server party: storage, authentication and the session handlers.
#[derive(Clone)]
pub struct Server {
    state: Arc<AppState>,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("backend", &self.state.vault.backend())
            .field("open_sessions", &self.open_sessions())
            .finish_non_exhaustive()
    }
}

impl Server {
    /// Opens the database (running migrations and checking the master key)
    /// and prepares the authenticator.
    ///
    /// # Errors
    ///
    /// [`ServerError::Storage`] (including a wrong master key),
    /// [`ServerError::Auth`].
    pub async fn new(config: ServerConfig) -> Result<Self, ServerError> {
        let auth = Authenticator::new(config.auth.clone())?;
        let vault = Vault::open(&config.database_url, config.kek.clone()).await?;
        let rate_limiters = crate::rate_limits::RateLimiters::new(
            &config.rate_limits,
            config.rest.limits.sensitive_per_subject_per_hour,
            vault.store().backend(),
        );
        let (shutdown_tx, shutdown) = watch::channel(false);
        let key_guards = crate::bans::KeyGuards::new(vault.clone());
        let state = AppState {
            vault,
            auth,
            transport: crate::compute::with_pool(config.transport.clone(), config.compute_threads),
            max_sessions: config.max_sessions,
            max_sessions_per_owner: config.max_sessions_per_owner,
            refresh_lease: config.refresh_lease,
            key_guards,
            sessions: SessionCounter::default(),
            metrics: crate::rest::metrics::Metrics::new(),
            limiters: crate::rest::limits::Limiters::new(config.rest.limits),
            rate_limiters,
            pprf_failures: crate::pprf::PprfFailures::new(config.pprf_failure_threshold),
            admission: crate::admission::Admission::new(config.admission),
            rest: config.rest.clone(),
            webhook: config.webhook.clone(),
            connections: config.connections,
            pending_key_max_age: config.pending_key_max_age,
            webhook_stats: Mutex::new(None),
            shutdown,
            shutdown_tx,
        };
        Ok(Self {
            state: Arc::new(state),
        })
    }

    /// The storage facade.
    #[must_use]
    pub fn vault(&self) -> &Vault {
        &self.state.vault
    }

    /// WebSocket sessions open right now.
    #[must_use]
    pub fn open_sessions(&self) -> usize {
        self.state.sessions.open.load(Ordering::SeqCst)
    }

    /// The WebSocket endpoint, at `/` and `/v1/session`, with the state
    /// attached: mount it in an axum application as is, served with
    /// `into_make_service_with_connect_info::<SocketAddr>()` (the per-address
    /// limits need the peer's address; without it every upgrade fails).
    pub fn ws_router(&self) -> Router {
        Router::new()
            .route("/", get(ws_session))
            .route("/v1/session", get(ws_session))
            .with_state(Arc::clone(&self.state))
    }

    /// The REST service ([`crate::rest`]), state attached. Serve it with
    /// `into_make_service_with_connect_info::<SocketAddr>()` (or insert
    /// `ConnectInfo<SocketAddr>` into each request) so that the per-IP rate
    /// limit applies.
    pub fn rest_router(&self) -> Router {
        crate::rest::router(Arc::clone(&self.state))
    }

    /// The metrics registry (e.g. to export from an embedding service).
    #[must_use]
    pub fn metrics(&self) -> &crate::rest::metrics::Metrics {
        &self.state.metrics
    }

    /// Serves the WebSocket endpoint on `ws` and the REST endpoints on
    /// `rest` ([`crate::listener`]: timeouts and a connection cap) until
    /// `shutdown` completes; then stops accepting, lets open requests and
    /// sessions finish (each session is bounded by the session timeout) and
    /// returns.
    ///
    /// # Errors
    ///
    /// [`ServerError::Config`] if the webhook deliverer cannot start.
    pub async fn run(
        self,
        ws: TcpListener,
        rest: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServerError> {
        let state = Arc::clone(&self.state);
        let ws_app = self.ws_router();
        let rest_app = self.rest_router();
        let deliverer = match state.webhook.clone() {
            Some(webhook) => {
                let (handle, stats) =
                    crate::webhook::spawn(state.vault.clone(), webhook, state.shutdown.clone())
                        .map_err(|e| ServerError::Config(e.to_string()))?;
                *state
                    .webhook_stats
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(stats);
                Some(handle)
            }
            None => None,
        };
        let reaper = crate::vault::spawn_reaper(
            state.vault.clone(),
            state.pending_key_max_age,
            state.shutdown.clone(),
        );
        let stopper = {
            let state = Arc::clone(&state);
            tokio::spawn(async move {
                shutdown.await;
                info!("shutting down: no new sessions");
                state.shutdown_tx.send_replace(true);
            })
        };
        let limits = state.connections;
        let file_limit = crate::listener::open_file_limit();
        let cap = crate::listener::per_listener_cap(limits.max_connections, 2, file_limit);
        if cap < limits.max_connections {
            warn!(
                configured = limits.max_connections,
                cap,
                open_file_limit = file_limit,
                "connection cap per listener lowered to fit the open-file limit"
            );
        }
        let settings = |name| crate::listener::ListenerSettings {
            name,
            header_read_timeout: limits.header_read_timeout,
            idle_timeout: limits.idle_timeout,
            max_connections: cap,
            max_connections_per_ip: limits.max_connections_per_ip.min(cap),
            trusted_proxies: state.rate_limiters.trusted_proxies.clone(),
        };
        let ws_server = crate::listener::serve(ws, ws_app, settings("ws"), state.shutdown.clone());
        let rest_server =
            crate::listener::serve(rest, rest_app, settings("rest"), state.shutdown.clone());
        tokio::join!(ws_server, rest_server);
        stopper.abort();
        // Upgraded connections outlive the listeners' graceful shutdown:
        // wait for them, bounded by the longest a session may take.
        let drain = state.transport.session_timeout + state.transport.close_timeout * 2;
        let deadline = tokio::time::Instant::now() + drain;
        while self.open_sessions() > 0 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if self.open_sessions() > 0 {
            warn!(open = self.open_sessions(), "sessions still open at exit");
        }
        let _ = reaper.await;
        if let Some(deliverer) = deliverer {
            // It watches the same shutdown signal; undelivered events stay
            // in the outbox for the next start.
            let _ = deliverer.await;
        }
        Ok(())
    }
}

/// A failed session's outcome label for metrics.
fn outcome_of(error: &mpc_transport_ws::TransportError) -> &'static str {
    use mpc_transport_ws::TransportError as E;
    match error {
        e if e.is_ban() => "ban",
        E::Protocol { .. } => "abort",
        E::Timeout { .. } => "timeout",
        E::Rejected { .. } => "rejected",
        E::RejectedByPeer { .. } => "peer_failed",
        E::Violation { .. } | E::OpeningInvalid { .. } => "violation",
        _ => "disconnected",
    }
}

/// The WebSocket upgrade: the client address's open sessions are counted
/// (429 beyond `MPC_MAX_UPGRADES_PER_IP`), the bearer token is checked
/// before the upgrade (401 without a valid one, 429 after too many failures
/// from the client's address), the session slot is taken (503 when the
/// server is full, 429 when the owner has too many open sessions or its
/// fair share of a nearly full server: PROTOCOL.md §18.5). Without a known
/// peer (an embedding application serving without connect info) the
/// per-address rules do not apply.
async fn ws_session(
    ws: WebSocketUpgrade,
    headers: HeaderMap,
    crate::client_addr::PeerAddr(peer): crate::client_addr::PeerAddr,
    State(state): State<Arc<AppState>>,
) -> Response {
    if *state.shutdown.borrow() {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    // Per-address limits count by `limit_key` (an IPv6 /64).
    let ip = peer.map(|peer| {
        crate::client_addr::limit_key(crate::client_addr::client_ip(&state, peer, &headers))
    });
    let upgrade = match ip {
        Some(ip) => match state.admission.open_upgrade(&state.metrics, ip) {
            Some(ticket) => Some(ticket),
            None => return StatusCode::TOO_MANY_REQUESTS.into_response(),
        },
        None => None,
    };
    let claims = match crate::rate_limits::authenticate_upgrade(&state, peer, &headers) {
        Ok(claims) => claims,
        Err(response) => return *response,
    };
    let owner = claims.subject;
    let slot = match state.take_slot(&owner) {
        Ok(slot) => slot,
        Err(SlotRefused::ServerFull) => return StatusCode::SERVICE_UNAVAILABLE.into_response(),
        Err(SlotRefused::OwnerFull | SlotRefused::FairShare) => {
            return StatusCode::TOO_MANY_REQUESTS.into_response()
        }
    };
    let config = state.transport.clone();
    ws.max_message_size(config.max_message_bytes)
        .max_frame_size(config.max_frame_bytes)
        .read_buffer_size(mpc_transport_ws::READ_CHUNK_BYTES)
        .on_upgrade(move |socket| {
            let span = tracing::info_span!("session", owner = %owner);
            async move {
                let state = Arc::clone(&slot.state);
                let started = tokio::time::Instant::now();
                let mut operation = "unknown";
                let result = serve(socket, config, |session| {
                    debug!(session = %session.opening().session, "opened");
                    operation = session.opening().operation.name();
                    crate::admission::handle(Arc::clone(&state), owner, ip, session)
                })
                .await;
                match result {
                    Ok(traffic) => {
                        info!(operation, "session finished");
                        state.metrics.session_finished(operation, "ok");
                        state.metrics.session_succeeded(
                            operation,
                            started.elapsed(),
                            u64::try_from(traffic.bytes_sent).unwrap_or(u64::MAX),
                            u64::try_from(traffic.bytes_received).unwrap_or(u64::MAX),
                        );
                    }
                    Err(e) => {
                        info!(operation, error = %e, "session failed");
                        state.metrics.session_finished(operation, outcome_of(&e));
                    }
                }
                drop(slot);
                drop(upgrade);
            }
            .instrument(span)
        })
}
