//! Configuration: flags and `MPC_*` environment variables for settings,
//! environment variables or files (never flags) for secrets.
//!
//! | setting | flag | environment | default |
//! |---|---|---|---|
//! | WebSocket address | `--ws-addr` | `MPC_WS_ADDR` | `127.0.0.1:8080` |
//! | REST address | `--rest-addr` | `MPC_REST_ADDR` | `127.0.0.1:3001` |
//! | data directory | `--data-dir` | `MPC_DATA_DIR` | `./mpc-data` |
//! | database URL (secret) | — | `MPC_DATABASE_URL` or `MPC_DATABASE_URL_FILE` | SQLite in the data directory |
//! | master key (secret) | — | `MPC_MASTER_KEY` (64 hex) or `MPC_MASTER_KEY_FILE` | none (dev mode: generated) |
//! | JWT algorithm | `--jwt-algorithm` | `MPC_JWT_ALGORITHM` | `HS256` |
//! | JWT HS256 secret (secret) | — | `MPC_JWT_SECRET` or `MPC_JWT_SECRET_FILE` | none (dev mode: generated) |
//! | JWT public keys (ES256/EdDSA) | `--jwt-public-keys` | `MPC_JWT_PUBLIC_KEYS` (PEM file path) | none |
//! | JWT audience | `--jwt-audience` | `MPC_JWT_AUDIENCE` | `mpc-server` |
//! | JWT issuer | `--jwt-issuer` | `MPC_JWT_ISSUER` | not checked |
//! | longest token lifetime (s): `exp` further ahead is refused | `--jwt-max-lifetime` | `MPC_JWT_MAX_LIFETIME` | 86400 |
//! | step-up: how recent `auth_time` must be (s) | `--step-up-max-age` | `MPC_STEP_UP_MAX_AGE` | 300 |
//! | step-up: tokens must carry `mpc_op` and `mpc_key_id` | `--step-up-require-binding` | `MPC_STEP_UP_REQUIRE_BINDING` | false |
//! | longest a REST request may take (s) | `--request-timeout` | `MPC_REQUEST_TIMEOUT` | 30 |
//! | recovery public key for backups (SEC1 compressed, hex) | `--backup-recovery-key` | `MPC_BACKUP_RECOVERY_KEY` | none (no server-chosen backups) |
//! | a backup request may name its own recovery key (counts as an export) | `--backup-allow-request-key` | `MPC_BACKUP_ALLOW_REQUEST_KEY` | false |
//! | open sessions, total / per owner (and a fair share of a nearly full server, PROTOCOL.md §18.5) | `--max-sessions`, `--max-sessions-per-owner` | `MPC_MAX_SESSIONS`, `MPC_MAX_SESSIONS_PER_OWNER` | 256 / 16 |
//! | keys per owner, not revoked (pending included); beyond: 4108 | `--max-keys-per-owner` | `MPC_MAX_KEYS_PER_OWNER` | 100 |
//! | unused presignatures per owner (all schemes and keys); beyond: 4109 | `--max-presignatures-per-owner` | `MPC_MAX_PRESIGNATURES_PER_OWNER` | 1000 |
//! | keygen + refresh sessions in progress per owner / per client IP, per process; beyond: 4111 | `--max-half-open-per-owner`, `--max-half-open-per-ip` | `MPC_MAX_HALF_OPEN_PER_OWNER`, `MPC_MAX_HALF_OPEN_PER_IP` | 2 / 8 |
//! | open WebSocket sessions per client IP, per process; beyond: 429 | `--max-upgrades-per-ip` | `MPC_MAX_UPGRADES_PER_IP` | 64 |
//! | session / message timeout (s) | `--session-timeout`, `--message-timeout` | `MPC_SESSION_TIMEOUT`, `MPC_MESSAGE_TIMEOUT` | 120 / 30 |
//! | refresh lease (s); must exceed the session timeout + 2 × the close timeout (2 s) | `--refresh-lease` | `MPC_REFRESH_LEASE` | session timeout + 60 |
//! | age (s) at which an unconfirmed (pending) key is deleted; must exceed the session timeout + 2 × the close timeout (2 s) | `--pending-key-max-age` | `MPC_PENDING_KEY_MAX_AGE` | 604800 (7 days) |
//! | failed GGM-tree (PPRF) proofs per key and owner before each further one alerts (PROTOCOL.md §5.3) | `--pprf-failure-threshold` | `MPC_PPRF_FAILURE_THRESHOLD` | 3 |
//! | longest wait for a complete request line and headers, also for a keep-alive connection's next request (s) | `--header-read-timeout` | `MPC_HEADER_READ_TIMEOUT` | 10 |
//! | a connection moving no byte for this long is closed (s) | `--idle-timeout` | `MPC_IDLE_TIMEOUT` | 60 |
//! | open connections per listener; lowered to fit the open-file limit (`RLIMIT_NOFILE`, less an eighth, at least 64, for the database, logs and webhooks), which the binary raises towards what the cap needs within the hard limit | `--max-connections` | `MPC_MAX_CONNECTIONS` | 4096 |
//! | open connections per listener from one client address (an IPv6 /64; trusted proxies exempt); beyond it a new connection is closed at once | `--max-connections-per-ip` | `MPC_MAX_CONNECTIONS_PER_IP` | 256 |
//! | protocol steps run at once in a compute pool off the async workers (0: inline on the async workers, measured faster; crate::compute) | `--compute-threads` | `MPC_COMPUTE_THREADS` | 0 |
//! | keygen sessions per hour per token subject (0: no limit; PROTOCOL.md §18.5) | `--keygen-rate-per-hour` | `MPC_KEYGEN_RATE_PER_HOUR` | 20 |
//! | signing sessions (sign, presign, online sign, Schnorr forms) per minute per subject (0: no limit) | `--sign-rate-per-minute` | `MPC_SIGN_RATE_PER_MINUTE` | 600 |
//! | refresh sessions per hour per subject (0: no limit) | `--refresh-rate-per-hour` | `MPC_REFRESH_RATE_PER_HOUR` | 60 |
//! | failed token checks at the WebSocket upgrade per minute per client address, then 429 (0: no limit) | `--auth-failures-per-ip-per-minute` | `MPC_AUTH_FAILURES_PER_IP_PER_MINUTE` | 30 |
//! | REST requests per minute per subject / per client address (per process) | `--rate-limit-per-minute`, `--rate-limit-ip-per-minute` | `MPC_RATE_LIMIT_PER_MINUTE`, `MPC_RATE_LIMIT_IP_PER_MINUTE` | 600 / 1200 |
//! | backup, export and revoke requests per hour per subject | `--sensitive-rate-limit-per-hour` | `MPC_SENSITIVE_RATE_LIMIT_PER_HOUR` | 10 |
//! | reverse proxies whose `X-Forwarded-For` / `Forwarded` name the client (comma-separated CIDRs or addresses) | `--trusted-proxies` | `MPC_TRUSTED_PROXIES` | none |
//! | log format | `--log-format` | `MPC_LOG_FORMAT` | `text` (or `json`) |
//! | webhook URL (events are POSTed here, signed) | `--webhook-url` | `MPC_WEBHOOK_URL` | none (no delivery) |
//! | webhook secret (secret) | — | `MPC_WEBHOOK_SECRET` or `MPC_WEBHOOK_SECRET_FILE` | none (required with a URL) |
//! | webhook first retry delay (ms), doubling up to 5 min | `--webhook-retry-base-ms` | `MPC_WEBHOOK_RETRY_BASE_MS` | 1000 |
//! | webhook requests in flight at once, one key each (crate::webhook: order and delay bounds) | `--webhook-concurrency` | `MPC_WEBHOOK_CONCURRENCY` | 16 |
//! | webhook request timeout (s) | `--webhook-timeout` | `MPC_WEBHOOK_TIMEOUT` | 10 |
//! | webhook outbox poll interval (ms) | `--webhook-poll-interval-ms` | `MPC_WEBHOOK_POLL_INTERVAL_MS` | 1000 |
//!
//! Zero: the rate limits (`MPC_*_RATE_*`, `MPC_AUTH_FAILURES_PER_IP_PER_MINUTE`)
//! are off at 0; the quotas and the session, half-open and upgrade limits
//! take 0 as 1 (they cannot be switched off, only set very high).
//! `MPC_TRUSTED_PROXIES` must name proxies only, never a client network:
//! a client inside a trusted range names itself in the forwarded header.
//! The proxies must set or overwrite `X-Forwarded-For` (nginx:
//! `proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for` or
//! `$remote_addr`), which the server reads before `Forwarded`.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use mpc_transport_ws::TransportConfig;
use zeroize::Zeroizing;

use crate::auth::{AuthConfig, JwtAlgorithm, VerificationKey};
use crate::seal::{Kek, LocalKek};

/// Default of `MPC_PENDING_KEY_MAX_AGE`, in seconds: 7 days, so that a
/// requester whose keygen outcome was lost has a week to sign (which
/// activates the key) or back up the server share (PROTOCOL.md §18.3).
pub const DEFAULT_PENDING_KEY_MAX_AGE: u64 = 7 * 24 * 60 * 60;

/// Command-line flags (each also read from its `MPC_*` variable). `--help`
/// names each variable but never prints its value (`hide_env_values`): a
/// value such as `MPC_WEBHOOK_URL` may carry credentials.
#[derive(Debug, Clone, Parser)]
#[command(
    name = "mpc-server",
    version,
    about = "Two-party ECDSA server party (P2)"
)]
pub struct Cli {
    /// Address of the WebSocket listener.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_WS_ADDR",
        default_value = "127.0.0.1:8080"
    )]
    pub ws_addr: SocketAddr,
    /// Address of the REST listener.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_REST_ADDR",
        default_value = "127.0.0.1:3001"
    )]
    pub rest_addr: SocketAddr,
    /// Directory for the embedded SQLite database (and dev-mode secrets).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_DATA_DIR",
        default_value = "./mpc-data"
    )]
    pub data_dir: PathBuf,
    /// JWT algorithm: HS256, ES256 or EdDSA.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_JWT_ALGORITHM",
        default_value = "HS256"
    )]
    pub jwt_algorithm: JwtAlgorithm,
    /// PEM file with the token issuer's public key(s), for ES256 / EdDSA.
    #[arg(long, hide_env_values = true, env = "MPC_JWT_PUBLIC_KEYS")]
    pub jwt_public_keys: Option<PathBuf>,
    /// Required `aud` claim.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_JWT_AUDIENCE",
        default_value = "mpc-server"
    )]
    pub jwt_audience: String,
    /// Required `iss` claim, if set.
    #[arg(long, hide_env_values = true, env = "MPC_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// Longest accepted token lifetime, in seconds: a token whose `exp` is
    /// further ahead is refused.
    #[arg(long, hide_env_values = true, env = "MPC_JWT_MAX_LIFETIME", default_value_t = crate::auth::DEFAULT_MAX_TOKEN_LIFETIME_SECONDS)]
    pub jwt_max_lifetime: u64,
    /// Most WebSocket sessions open at once.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_MAX_SESSIONS",
        default_value_t = 256
    )]
    pub max_sessions: usize,
    /// Most WebSocket sessions one owner may have open at once.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_MAX_SESSIONS_PER_OWNER",
        default_value_t = 16
    )]
    pub max_sessions_per_owner: usize,
    /// Quotas and per-address limits (PROTOCOL.md §18.5).
    #[command(flatten)]
    pub admission: crate::admission::AdmissionArgs,
    /// Longest a WebSocket session may take, in seconds.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_SESSION_TIMEOUT",
        default_value_t = 120
    )]
    pub session_timeout: u64,
    /// Longest wait for the peer's next message, in seconds.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_MESSAGE_TIMEOUT",
        default_value_t = 30
    )]
    pub message_timeout: u64,
    /// How long a key's refresh lease runs without renewal, in seconds
    /// (PROTOCOL.md §18.1); must exceed the session timeout. Default: the
    /// session timeout plus 60.
    #[arg(long, hide_env_values = true, env = "MPC_REFRESH_LEASE")]
    pub refresh_lease: Option<u64>,
    /// Longest a REST request may take, in seconds.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_REQUEST_TIMEOUT",
        default_value_t = 30
    )]
    pub request_timeout: u64,
    /// How recent (seconds) the second factor (`auth_time`) must be for
    /// backup, export and revoke.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_STEP_UP_MAX_AGE",
        default_value_t = 300
    )]
    pub step_up_max_age: u64,
    /// Require step-up tokens to name their operation (`mpc_op`) and key
    /// (`mpc_key_id`).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_STEP_UP_REQUIRE_BINDING",
        default_value_t = false
    )]
    pub step_up_require_binding: bool,
    /// Recovery public key for backups (SEC1 compressed, hex).
    #[arg(long, hide_env_values = true, env = "MPC_BACKUP_RECOVERY_KEY")]
    pub backup_recovery_key: Option<String>,
    /// Let a backup request name its own recovery key.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_BACKUP_ALLOW_REQUEST_KEY",
        default_value_t = false
    )]
    pub backup_allow_request_key: bool,
    /// REST requests per minute per token subject.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_RATE_LIMIT_PER_MINUTE",
        default_value_t = 600
    )]
    pub rate_limit_per_minute: u32,
    /// REST requests per minute per client IP.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_RATE_LIMIT_IP_PER_MINUTE",
        default_value_t = 1200
    )]
    pub rate_limit_ip_per_minute: u32,
    /// Backup, export and revoke requests per hour per token subject.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_SENSITIVE_RATE_LIMIT_PER_HOUR",
        default_value_t = 10
    )]
    pub sensitive_rate_limit_per_hour: u32,
    /// Webhook delivery.
    #[command(flatten)]
    pub webhook: crate::webhook::WebhookArgs,
    /// Age in seconds at which a key whose keygen the client never
    /// confirmed (status `pending`) is deleted with its share; must exceed
    /// the session timeout plus twice the close timeout (PROTOCOL.md
    /// §18.3). Default: 7 days.
    #[arg(long, hide_env_values = true, env = "MPC_PENDING_KEY_MAX_AGE", default_value_t = DEFAULT_PENDING_KEY_MAX_AGE)]
    pub pending_key_max_age: u64,
    /// Failed GGM-tree (PPRF) proofs in key generation or refresh, per key
    /// and owner, from which on each failure logs a warning and counts an
    /// alert (PROTOCOL.md §5.3). Counted in memory, per process.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_PPRF_FAILURE_THRESHOLD",
        default_value_t = 3
    )]
    pub pprf_failure_threshold: u64,
    /// Connection timeouts and cap of both listeners.
    #[command(flatten)]
    pub connections: crate::listener::ConnectionArgs,
    /// The compute pool (`--compute-threads`).
    #[command(flatten)]
    pub compute: crate::compute::ComputeArgs,
    /// Rate limits of WebSocket operations; trusted proxies.
    #[command(flatten)]
    pub rate_limits: crate::rate_limits::RateLimitArgs,
    /// Log format.
    #[arg(long, hide_env_values = true, env = "MPC_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
    /// Print the REST API's OpenAPI document and exit.
    #[arg(long)]
    pub print_openapi: bool,
    /// Development mode: generates (and keeps in the data directory) a JWT
    /// secret and a master key when none is configured, and prints a token
    /// for the user `demo`. Never use it in production.
    #[arg(long)]
    pub dev: bool,
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

/// Where secrets come from: the process environment in the binary, a map in
/// tests.
pub trait SecretSource {
    /// The value of variable `name`, if set.
    fn var(&self, name: &str) -> Option<String>;
}

/// The process environment.
#[derive(Debug, Clone, Copy, Default)]
pub struct ProcessEnv;

impl SecretSource for ProcessEnv {
    fn var(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

impl<S: std::hash::BuildHasher> SecretSource for std::collections::HashMap<String, String, S> {
    fn var(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// Reads secret `name` from the variable `name` or from the file named by
/// `name_FILE` (whitespace trimmed at the end). Setting both is an error.
///
/// # Errors
///
/// A message naming the variables (never the value) if both are set or the
/// file cannot be read.
pub fn read_secret(
    source: &dyn SecretSource,
    name: &str,
) -> Result<Option<Zeroizing<String>>, String> {
    let file_var = format!("{name}_FILE");
    match (source.var(name), source.var(&file_var)) {
        (Some(_), Some(_)) => Err(format!("set {name} or {file_var}, not both")),
        (Some(value), None) => Ok(Some(Zeroizing::new(value))),
        (None, Some(path)) => {
            let text = Zeroizing::new(
                std::fs::read_to_string(&path)
                    .map_err(|e| format!("{file_var}: cannot read {path}: {e}"))?,
            );
            Ok(Some(Zeroizing::new(text.trim_end().to_owned())))
        }
        (None, None) => Ok(None),
    }
}

/// Everything a [`Server`](crate::Server) needs.
#[derive(Clone)]
pub struct ServerConfig {
    /// WebSocket listener address.
    pub ws_addr: SocketAddr,
    /// REST listener address.
    pub rest_addr: SocketAddr,
    /// `sqlite://...` or `postgres://...`.
    pub database_url: String,
    /// Token verification.
    pub auth: AuthConfig,
    /// The key-encryption key for shares and presignatures at rest.
    pub kek: Arc<dyn Kek>,
    /// Transport limits and timeouts.
    pub transport: TransportConfig,
    /// Most WebSocket sessions open at once.
    pub max_sessions: usize,
    /// Most WebSocket sessions one owner may have open at once.
    pub max_sessions_per_owner: usize,
    /// Quotas and per-address limits (PROTOCOL.md §18.5).
    pub admission: crate::admission::AdmissionLimits,
    /// REST settings.
    pub rest: crate::rest::RestConfig,
    /// Webhook delivery, if configured.
    pub webhook: Option<crate::webhook::WebhookConfig>,
    /// How long a key's refresh lease runs without renewal (PROTOCOL.md
    /// §18.1). Longer than `transport.session_timeout`, so that a live
    /// refresh session never loses it; after a crash the next refresh of
    /// the key waits at most this long.
    pub refresh_lease: Duration,
    /// Age at which a pending (unconfirmed) key is deleted (PROTOCOL.md
    /// §18.3).
    pub pending_key_max_age: Duration,
    /// PPRF proof failures per key and owner from which each alerts
    /// (PROTOCOL.md §5.3; at least 1).
    pub pprf_failure_threshold: u64,
    /// Connection timeouts and cap of both listeners.
    pub connections: crate::listener::ConnectionLimits,
    /// Protocol steps run at once in the compute pool; 0 (the default)
    /// runs them inline on the async workers.
    pub compute_threads: usize,
    /// Rate limits of WebSocket operations; trusted proxies.
    pub rate_limits: crate::rate_limits::RateLimitConfig,
}

impl fmt::Debug for ServerConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.redacted())
    }
}

impl ServerConfig {
    /// Builds the configuration from flags and secrets.
    ///
    /// # Errors
    ///
    /// A message saying what is missing or wrong (no secret values in it):
    /// no JWT secret or public keys, no master key, both a variable and its
    /// `_FILE` set, an unreadable file, a malformed master key.
    pub fn from_cli(cli: &Cli, source: &dyn SecretSource) -> Result<Self, String> {
        let key = match cli.jwt_algorithm {
            JwtAlgorithm::Hs256 => {
                let secret = read_secret(source, "MPC_JWT_SECRET")?.ok_or(
                    "no token verification key: set MPC_JWT_SECRET (or MPC_JWT_SECRET_FILE) \
                     for HS256, or MPC_JWT_ALGORITHM=ES256/EdDSA with MPC_JWT_PUBLIC_KEYS, \
                     or run with --dev",
                )?;
                VerificationKey::Hs256Secret(Zeroizing::new(secret.as_bytes().to_vec()))
            }
            algorithm => {
                let path = cli.jwt_public_keys.as_ref().ok_or(
                    "MPC_JWT_ALGORITHM is ES256/EdDSA but MPC_JWT_PUBLIC_KEYS (a PEM file) is not set",
                )?;
                let pem = std::fs::read(path).map_err(|e| {
                    format!("MPC_JWT_PUBLIC_KEYS: cannot read {}: {e}", path.display())
                })?;
                if algorithm == JwtAlgorithm::Es256 {
                    VerificationKey::Es256Pem(pem)
                } else {
                    VerificationKey::EdDsaPem(pem)
                }
            }
        };
        let master = read_secret(source, "MPC_MASTER_KEY")?.ok_or(
            "no master key: set MPC_MASTER_KEY (64 hex characters) or MPC_MASTER_KEY_FILE, \
             or run with --dev",
        )?;
        let kek = LocalKek::from_hex(&master).map_err(|e| format!("MPC_MASTER_KEY: {e}"))?;
        let database_url = match read_secret(source, "MPC_DATABASE_URL")? {
            Some(url) => url.to_string(),
            None => sqlite_url(&cli.data_dir),
        };
        let recovery_key = match &cli.backup_recovery_key {
            Some(text) => Some(
                hex::decode(text.trim())
                    .ok()
                    .and_then(|bytes| k256::PublicKey::from_sec1_bytes(&bytes).ok())
                    .ok_or("MPC_BACKUP_RECOVERY_KEY is not a SEC1 secp256k1 public key in hex")?,
            ),
            None => None,
        };
        let rest = crate::rest::RestConfig {
            step_up_max_age: Duration::from_secs(cli.step_up_max_age),
            step_up_require_binding: cli.step_up_require_binding,
            recovery_key,
            allow_request_recovery_key: cli.backup_allow_request_key,
            limits: crate::rest::RateLimits {
                per_subject_per_minute: cli.rate_limit_per_minute,
                per_ip_per_minute: cli.rate_limit_ip_per_minute,
                sensitive_per_subject_per_hour: cli.sensitive_rate_limit_per_hour,
            },
            request_timeout: Duration::from_secs(cli.request_timeout.max(1)),
        };
        let webhook = cli.webhook.config(source)?;
        let mut transport = TransportConfig::default();
        let session_timeout = cli.session_timeout.max(1);
        transport.session_timeout = Duration::from_secs(session_timeout);
        transport.message_timeout =
            Duration::from_secs(cli.message_timeout.clamp(1, session_timeout));
        let refresh_lease = refresh_lease(cli.refresh_lease, &transport)?;
        let pending_key_max_age = pending_key_max_age(cli.pending_key_max_age, &transport)?;
        Ok(Self {
            ws_addr: cli.ws_addr,
            rest_addr: cli.rest_addr,
            database_url,
            auth: AuthConfig {
                audience: cli.jwt_audience.clone(),
                issuer: cli.jwt_issuer.clone(),
                leeway_seconds: crate::auth::DEFAULT_LEEWAY_SECONDS,
                max_lifetime_seconds: cli.jwt_max_lifetime,
                key,
            },
            kek: Arc::new(kek),
            transport,
            max_sessions: cli.max_sessions.max(1),
            max_sessions_per_owner: cli.max_sessions_per_owner.max(1),
            admission: (&cli.admission).into(),
            rest,
            webhook,
            refresh_lease,
            pending_key_max_age,
            pprf_failure_threshold: cli.pprf_failure_threshold.max(1),
            connections: (&cli.connections).into(),
            compute_threads: cli.compute.threads(),
            rate_limits: cli.rate_limits.to_config()?,
        })
    }

    /// A one-line description with every secret redacted, for the start-up
    /// log.
    #[must_use]
    pub fn redacted(&self) -> String {
        format!(
            "ws={} rest={} database={} jwt={}(aud={}, iss={}) kek={} sessions={}/{} per owner \
             timeouts={}s/{}s webhook={} backup_key={} pending_key_max_age={}s compute_threads={}",
            self.ws_addr,
            self.rest_addr,
            redact_url(&self.database_url),
            algorithm_name(&self.auth.key),
            self.auth.audience,
            self.auth.issuer.as_deref().unwrap_or("-"),
            self.kek.id(),
            self.max_sessions,
            self.max_sessions_per_owner,
            self.transport.session_timeout.as_secs(),
            self.transport.message_timeout.as_secs(),
            self.webhook.as_ref().map_or_else(
                || "-".to_owned(),
                crate::webhook::WebhookConfig::url_for_log
            ),
            if self.rest.recovery_key.is_some() {
                "configured"
            } else {
                "-"
            },
            self.pending_key_max_age.as_secs(),
            self.compute_threads,
        )
    }
}

/// The longest a session's handler can run: the session timeout, then up to
/// the close timeout each for sending the last frame and for the closing
/// handshake (mpc-transport-ws). Rules that must outlive a live session
/// (a refresh's lease, a pending key's age) are checked against it.
fn longest_session(transport: &TransportConfig) -> Duration {
    transport.session_timeout + transport.close_timeout * 2
}

/// `MPC_REFRESH_LEASE` as a duration (default: the session timeout + 60 s),
/// if it exceeds [`longest_session`]: a shorter lease could expire under a
/// refresh that is still running, and a second refresh of the same key
/// could then take it over (PROTOCOL.md §18.1).
fn refresh_lease(seconds: Option<u64>, transport: &TransportConfig) -> Result<Duration, String> {
    let longest = longest_session(transport);
    let Some(seconds) = seconds else {
        return Ok(transport.session_timeout + Duration::from_secs(60));
    };
    let lease = Duration::from_secs(seconds);
    if lease > longest {
        Ok(lease)
    } else {
        Err(format!(
            "MPC_REFRESH_LEASE ({seconds} s) must exceed MPC_SESSION_TIMEOUT plus twice the \
             close timeout ({longest:?}): a live refresh would lose its lease"
        ))
    }
}

/// `MPC_PENDING_KEY_MAX_AGE` as a duration, if it exceeds
/// [`longest_session`]: a shorter age would let the reaper delete a key
/// during its own keygen, before the activation that tells the client it
/// exists (PROTOCOL.md §18.3).
fn pending_key_max_age(seconds: u64, transport: &TransportConfig) -> Result<Duration, String> {
    let longest_keygen = longest_session(transport);
    let age = Duration::from_secs(seconds);
    if age > longest_keygen {
        Ok(age)
    } else {
        Err(format!(
            "MPC_PENDING_KEY_MAX_AGE ({seconds} s) must exceed MPC_SESSION_TIMEOUT plus twice \
             the close timeout ({longest_keygen:?}): a key could be deleted during its own keygen"
        ))
    }
}

fn algorithm_name(key: &VerificationKey) -> &'static str {
    match key {
        VerificationKey::Hs256Secret(_) => "HS256",
        VerificationKey::Es256Pem(_) => "ES256",
        VerificationKey::EdDsaPem(_) => "EdDSA",
    }
}

/// The default database: `mpc.db` in the data directory.
#[must_use]
pub fn sqlite_url(data_dir: &Path) -> String {
    format!("sqlite://{}", data_dir.join("mpc.db").display())
}

/// `url` fit for a log line: the user info's password, every query
/// parameter's value and any fragment replaced by `***` (a PostgreSQL URL
/// may carry `?password=...`, a webhook URL a token in its query). Text
/// that is not a `scheme:` URL (e.g. a libpq `key=value` string) is
/// replaced whole: it cannot be told apart from a secret.
#[must_use]
pub fn redact_url(url: &str) -> String {
    let url = url.trim();
    let Some((scheme, rest)) = url.split_once(':') else {
        return "***".to_owned();
    };
    let valid_scheme = scheme
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !valid_scheme {
        return "***".to_owned();
    }
    let mut out = format!("{scheme}:");
    let rest = match rest.strip_prefix("//") {
        Some(hierarchical) => {
            out.push_str("//");
            // The last '@' ends the user info even when an unencoded '@',
            // '/', '?' or '#' sits in the password: over-redacting a host
            // or path is harmless, a leaked password is not.
            match hierarchical.rsplit_once('@') {
                Some((userinfo, host)) => {
                    let user = userinfo.split(':').next().unwrap_or_default();
                    let user = if user.contains(['/', '?', '#']) {
                        "***"
                    } else {
                        user
                    };
                    out.push_str(&format!("{user}:***@"));
                    host
                }
                None => hierarchical,
            }
        }
        None => rest,
    };
    let (rest, fragment) = match rest.split_once('#') {
        Some((rest, _)) => (rest, "#***"),
        None => (rest, ""),
    };
    let (rest, query) = match rest.split_once('?') {
        Some((rest, query)) => (rest, Some(query)),
        None => (rest, None),
    };
    out.push_str(rest);
    if let Some(query) = query {
        let redacted: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((name, _)) => format!("{name}=***"),
                None if pair.is_empty() => String::new(),
                None => "***".to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&redacted.join("&"));
    }
    out.push_str(fragment);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cli(args: &[&str]) -> Cli {
        let mut all = vec!["mpc-server"];
        all.extend_from_slice(args);
        Cli::try_parse_from(all).unwrap()
    }

    fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    const KEY_HEX: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f";

    #[test]
    fn refuses_to_start_without_auth_or_master_key() {
        let error = ServerConfig::from_cli(&cli(&[]), &env(&[])).err().unwrap();
        assert!(error.contains("MPC_JWT_SECRET"), "{error}");
        let error = ServerConfig::from_cli(
            &cli(&[]),
            &env(&[("MPC_JWT_SECRET", "0123456789abcdef0123456789abcdef")]),
        )
        .err()
        .unwrap();
        assert!(error.contains("MPC_MASTER_KEY"), "{error}");
        let error = ServerConfig::from_cli(&cli(&["--jwt-algorithm", "ES256"]), &env(&[]))
            .err()
            .unwrap();
        assert!(error.contains("MPC_JWT_PUBLIC_KEYS"), "{error}");
    }

    #[test]
    fn secrets_from_files_and_redacted_in_the_log_line() {
        let dir = tempfile::tempdir().unwrap();
        let key_file = dir.path().join("master");
        std::fs::write(&key_file, format!("{KEY_HEX}\n")).unwrap();
        let secret = "a-long-enough-shared-secret-of-32+bytes";
        let config = ServerConfig::from_cli(
            &cli(&["--ws-addr", "127.0.0.1:9000"]),
            &env(&[
                ("MPC_JWT_SECRET", secret),
                ("MPC_MASTER_KEY_FILE", key_file.to_str().unwrap()),
                ("MPC_DATABASE_URL", "postgres://mpc:hunter2@db:5432/mpc"),
            ]),
        )
        .unwrap();
        assert_eq!(config.ws_addr.port(), 9000);
        let line = config.redacted();
        for secret in [secret, KEY_HEX, "hunter2"] {
            assert!(!line.contains(secret), "{line}");
            assert!(!format!("{config:?}").contains(secret));
        }
        assert!(line.contains("postgres://mpc:***@db:5432/mpc"), "{line}");
    }

    #[test]
    fn refresh_lease_outlives_the_session() {
        let secrets = env(&[
            ("MPC_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("MPC_MASTER_KEY", KEY_HEX),
        ]);
        let config = ServerConfig::from_cli(&cli(&["--session-timeout", "30"]), &secrets).unwrap();
        assert_eq!(config.refresh_lease, Duration::from_secs(90));
        // The handler of a 30 s session can run 30 s + 2 × 2 s (close timeout).
        let args = ["--session-timeout", "30", "--refresh-lease", "35"];
        let config = ServerConfig::from_cli(&cli(&args), &secrets).unwrap();
        assert_eq!(config.refresh_lease, Duration::from_secs(35));
        for lease in ["34", "31", "30", "5"] {
            let args = ["--session-timeout", "30", "--refresh-lease", lease];
            let error = ServerConfig::from_cli(&cli(&args), &secrets).err().unwrap();
            assert!(error.contains("MPC_REFRESH_LEASE"), "{error}");
        }
    }

    #[test]
    fn help_never_prints_environment_values() {
        use clap::CommandFactory;
        let command = Cli::command();
        let mut with_env = 0;
        for arg in command.get_arguments() {
            if arg.get_env().is_some() {
                with_env += 1;
                assert!(arg.is_hide_env_values_set(), "{}", arg.get_id());
            }
        }
        assert!(with_env > 20, "{with_env}");
    }

    #[test]
    fn pending_keys_outlive_their_keygen() {
        let secrets = env(&[
            ("MPC_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
            ("MPC_MASTER_KEY", KEY_HEX),
        ]);
        let config = ServerConfig::from_cli(&cli(&[]), &secrets).unwrap();
        assert_eq!(
            config.pending_key_max_age,
            Duration::from_secs(7 * 24 * 60 * 60)
        );
        // The handler runs at most session timeout + 2 x close timeout (2 s).
        let args = ["--session-timeout", "30", "--pending-key-max-age", "35"];
        let config = ServerConfig::from_cli(&cli(&args), &secrets).unwrap();
        assert_eq!(config.pending_key_max_age, Duration::from_secs(35));
        for age in ["34", "30", "1", "0"] {
            let args = ["--session-timeout", "30", "--pending-key-max-age", age];
            let error = ServerConfig::from_cli(&cli(&args), &secrets).err().unwrap();
            assert!(error.contains("MPC_PENDING_KEY_MAX_AGE"), "{error}");
        }
        // The default session timeout (120 s) applies too.
        let args = ["--pending-key-max-age", "124"];
        assert!(ServerConfig::from_cli(&cli(&args), &secrets).is_err());
    }

    #[test]
    fn redact_url_hides_passwords_query_values_and_fragments() {
        for (url, want) in [
            (
                "postgres://mpc@db/mpc?password=hunter2&sslmode=require",
                "postgres://mpc:***@db/mpc?password=***&sslmode=***",
            ),
            (
                "postgres://mpc:hun@ter2/x@db:5432/mpc",
                "postgres://mpc:***@db:5432/mpc",
            ),
            (
                "https://user:pw@hooks.example/in?token=t0k3n#frag",
                "https://user:***@hooks.example/in?token=***#***",
            ),
            ("sqlite:///data/mpc.db", "sqlite:///data/mpc.db"),
            ("sqlite:mpc.db?key=k3y", "sqlite:mpc.db?key=***"),
            ("postgres://u:pa?ss#w@db/x", "postgres://u:***@db/x"),
            ("https://h/p?x=a@b", "https://***:***@b"),
            ("host=db password=hunter2", "***"),
            ("", "***"),
        ] {
            assert_eq!(redact_url(url), want, "{url}");
        }
    }

    #[test]
    fn the_log_line_hides_the_webhook_url_credentials_and_query() {
        let config = ServerConfig::from_cli(
            &cli(&[
                "--webhook-url",
                "https://hook:pw5ecret@hooks.example/p4th?token=t0k3n",
            ]),
            &env(&[
                ("MPC_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("MPC_MASTER_KEY", KEY_HEX),
                ("MPC_WEBHOOK_SECRET", "whsec-value"),
                ("MPC_DATABASE_URL", "postgres://mpc@db/mpc?password=hunter2"),
            ]),
        )
        .unwrap();
        let line = config.redacted();
        for secret in ["pw5ecret", "t0k3n", "p4th", "whsec-value", "hunter2"] {
            assert!(!line.contains(secret), "{line}");
            assert!(!format!("{config:?}").contains(secret));
        }
        assert!(line.contains("https://hooks.example"), "{line}");
    }

    #[test]
    fn both_variable_and_file_is_an_error() {
        let error = read_secret(
            &env(&[("MPC_MASTER_KEY", "x"), ("MPC_MASTER_KEY_FILE", "/y")]),
            "MPC_MASTER_KEY",
        )
        .unwrap_err();
        assert!(error.contains("not both"));
        assert!(read_secret(&env(&[]), "MPC_MASTER_KEY").unwrap().is_none());
    }

    #[test]
    fn malformed_master_key_is_refused_without_echoing_it() {
        let error = ServerConfig::from_cli(
            &cli(&[]),
            &env(&[
                ("MPC_JWT_SECRET", "0123456789abcdef0123456789abcdef"),
                ("MPC_MASTER_KEY", "zz-not-hex-secretish"),
            ]),
        )
        .err()
        .unwrap();
        assert!(error.starts_with("MPC_MASTER_KEY"), "{error}");
        assert!(!error.contains("zz-not-hex-secretish"));
    }
}
