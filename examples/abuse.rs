//! An abuse run against a live `mpc-server`, on loopback only: honest
//! clients sign while abusive ones misbehave, and the run reports whether
//! the honest ones were still served.
//!
//! M honest users each make a key first; then, for T seconds, they sign in a
//! loop (every signature verified with libsecp256k1) while these patterns
//! run, each bounded by its count and by the window:
//!
//! | pattern | flag (0 = off) | what it does |
//! |---|---|---|
//! | slow-loris | `--slow-loris` | sockets sending a partial request line, then nothing (WebSocket and REST port in turn) |
//! | idle sockets | `--idle-sockets` | sockets sending nothing (both ports in turn) |
//! | unique methods / paths | `--unique-requests` | REST requests with unique 200-character methods or unique paths; `/metrics` is read before and after |
//! | half-open keygens | `--half-open` | keygens that send the opening and the client's first message, then hold (over `--half-open-users` users) |
//! | keygen spam | `--keygen-spam` | one user running keygens back to back |
//! | slot hogging | `--slot-hog` | upgrades held open without a word (over `--hog-users` users) |
//!
//! The abusive sockets are bound to `--abuse-source` (default `127.0.0.2`,
//! on Linux all of 127/8 is loopback), so the server's per-IP limits see
//! them apart from the honest clients on 127.0.0.1; the keygen spam runs
//! through the ordinary client, from the default address. The run reports
//! the honest clients' success rate and latency (p50, p99), whether
//! `/healthz` answered throughout, how many metric series appeared (and how
//! many name an abusive method or path), and per pattern what the server
//! answered (`http 429`, `close 4110`, `closed by server`, `held until end`,
//! ...): a table on stderr, one JSON object on stdout.
//!
//! ```sh
//! MPC_HEADER_READ_TIMEOUT=5 MPC_IDLE_TIMEOUT=10 \
//!     cargo run --release --bin mpc-server -- --dev &
//! cargo run --release --example abuse -- --dev-data-dir ./mpc-data \
//!     --honest-clients 8 --seconds 20
//! ```
//!
//! The tokens are signed with the server's HS256 secret, found as
//! `loadgen` finds it (`--jwt-secret-file`, `$MPC_JWT_SECRET` or
//! `--dev-data-dir`).
#![allow(clippy::print_stdout, clippy::print_stderr)]

#[path = "abuse/patterns.rs"]
mod patterns;

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use mpc_core::{KeyShare, Prehash, SignatureOutput};
use mpc_examples::{check_loopback, hs256_secret, is_loopback_host, percentile};
use mpc_server::auth::TokenBuilder;
use mpc_transport_ws::{Client, TransportConfig};
use patterns::{error_label, Tally, Target};
use serde_json::{json, Value};
use tokio::time::Instant;

/// Hard bounds, so that a typo cannot start an endless or huge run.
const MAX_CLIENTS: usize = 256;
const MAX_SECONDS: u64 = 600;
const MAX_PER_PATTERN: usize = 2000;
/// How often `/healthz` is asked, and how long one answer may take.
const HEALTH_EVERY: Duration = Duration::from_millis(100);
const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);
/// How long after the window the run waits for its tasks to end.
const GRACE: Duration = Duration::from_secs(30);

#[derive(Parser, Debug)]
#[command(about = "Abuse run against mpc-server (loopback only)")]
struct Args {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, env = "MPC_SERVER", default_value = "ws://127.0.0.1:8080")]
    server: String,
    /// REST base URL of the server (loopback only).
    #[arg(long, env = "MPC_REST", default_value = "http://127.0.0.1:3001")]
    rest: String,
    /// Honest users, each signing in a loop with its own key (at most 256).
    #[arg(long, default_value_t = 4)]
    honest_clients: usize,
    /// Seconds of the abuse window, during which the honest users sign
    /// (at most 600).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Loopback address the abusive sockets are bound to.
    #[arg(long, default_value_t = IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))]
    abuse_source: IpAddr,
    /// Slow-loris sockets (at most 2000 per pattern).
    #[arg(long, default_value_t = 100)]
    slow_loris: usize,
    /// Idle sockets.
    #[arg(long, default_value_t = 100)]
    idle_sockets: usize,
    /// REST requests with a unique method or path.
    #[arg(long, default_value_t = 1000)]
    unique_requests: usize,
    /// Half-open keygen sessions.
    #[arg(long, default_value_t = 100)]
    half_open: usize,
    /// Users the half-open keygens are spread over.
    #[arg(long, default_value_t = 4)]
    half_open_users: usize,
    /// Most keygens of the keygen-spamming user.
    #[arg(long, default_value_t = 200)]
    keygen_spam: usize,
    /// Upgrade attempts of the slot-hogging users.
    #[arg(long, default_value_t = 300)]
    slot_hog: usize,
    /// Users the slot hogging is spread over.
    #[arg(long, default_value_t = 1)]
    hog_users: usize,
    /// File holding the server's HS256 secret.
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,
    /// The server's dev-mode data directory (reads `dev-secrets.json`).
    #[arg(long)]
    dev_data_dir: Option<PathBuf>,
    /// Token audience.
    #[arg(long, env = "MPC_JWT_AUDIENCE", default_value = "mpc-server")]
    audience: String,
}

/// What the honest users saw.
#[derive(Default)]
struct Honest {
    keygens_ok: usize,
    attempts: u64,
    sign_ms: Vec<f64>,
    verified: u64,
    errors: BTreeMap<String, u64>,
}

/// What `/healthz` answered during the window.
#[derive(Default)]
struct Health {
    probes: u64,
    failed: u64,
    ms: Vec<f64>,
}

/// The abuse patterns' tallies, by name.
type Patterns = Vec<(&'static str, usize, Arc<Tally>)>;

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{}", json!({ "error": message }));
            ExitCode::FAILURE
        }
    }
}

fn check_args(args: &Args) -> Result<(), String> {
    check_loopback(&args.server)?;
    check_loopback(&args.rest)?;
    if !args.abuse_source.is_loopback() {
        return Err(format!(
            "--abuse-source {} is not loopback",
            args.abuse_source
        ));
    }
    if args.honest_clients == 0 || args.honest_clients > MAX_CLIENTS {
        return Err(format!("--honest-clients must be 1..={MAX_CLIENTS}"));
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}"));
    }
    let counts = [
        args.slow_loris,
        args.idle_sockets,
        args.unique_requests,
        args.half_open,
        args.keygen_spam,
        args.slot_hog,
    ];
    if counts.iter().any(|&n| n > MAX_PER_PATTERN) {
        return Err(format!(
            "a pattern's count must be at most {MAX_PER_PATTERN}"
        ));
    }
    if args.half_open_users == 0 || args.hog_users == 0 {
        return Err("--half-open-users and --hog-users must be at least 1".into());
    }
    Ok(())
}

/// The loopback socket address of a checked `ws://` or `http://` URL.
async fn socket_addr(url: &str) -> Result<SocketAddr, String> {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = if authority
        .rsplit_once(':')
        .is_some_and(|(_, port)| !port.is_empty() && port.chars().all(|c| c.is_ascii_digit()))
    {
        authority.to_owned()
    } else {
        format!("{authority}:80")
    };
    let mut addrs = tokio::net::lookup_host(&authority)
        .await
        .map_err(|e| format!("{authority}: {e}"))?;
    addrs
        .find(|addr| is_loopback_host(&addr.ip().to_string()))
        .ok_or_else(|| format!("{authority} has no loopback address"))
}

fn run(args: &Args) -> Result<(), String> {
    check_args(args)?;
    let secret = hs256_secret(
        args.jwt_secret_file.as_deref(),
        args.dev_data_dir.as_deref(),
    )?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let run_id = format!("{:x}", std::process::id());
    let token = |who: String| {
        TokenBuilder::new(format!("abuse-{run_id}-{who}"), &args.audience)
            .expires_in(args.seconds + 3600)
            .sign_hs256(secret.as_bytes())
            .map_err(|e| e.to_string())
    };
    let mut config = TransportConfig::default();
    config.session_timeout = Duration::from_secs(60);
    config.message_timeout = Duration::from_secs(30);
    let honest_clients = (0..args.honest_clients)
        .map(|i| {
            Ok(Client::new(args.server.clone())
                .with_bearer_token(token(format!("honest-{i}"))?)
                .with_config(config.clone()))
        })
        .collect::<Result<Vec<_>, String>>()?;
    let spammer = Client::new(args.server.clone())
        .with_bearer_token(token("keygen-spam".into())?)
        .with_config(config.clone());
    let half_open_tokens = (0..args.half_open_users)
        .map(|i| token(format!("half-open-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let hog_tokens = (0..args.hog_users)
        .map(|i| token(format!("hog-{i}")))
        .collect::<Result<Vec<_>, _>>()?;
    let marker = patterns::fresh_marker();

    runtime.block_on(async {
        let http = reqwest::Client::builder()
            .timeout(HEALTH_TIMEOUT)
            .build()
            .map_err(|e| e.to_string())?;
        let mut target = Target {
            ws_url: args.server.clone(),
            ws_addr: socket_addr(&args.server).await?,
            rest_url: args.rest.trim_end_matches('/').to_owned(),
            rest_addr: socket_addr(&args.rest).await?,
            source: args.abuse_source,
            until: Instant::now(),
        };
        if target.ws_addr.is_ipv4() != args.abuse_source.is_ipv4() {
            return Err("--abuse-source must be of the server's address family".into());
        }

        // The honest users' keys, before any abuse.
        let mut honest = Honest::default();
        let keygens: Vec<_> = honest_clients
            .iter()
            .map(|client| {
                let client = client.clone();
                tokio::spawn(async move { client.keygen().await })
            })
            .collect();
        let mut shares = Vec::new();
        for (client, keygen) in honest_clients.into_iter().zip(keygens) {
            match keygen.await.map_err(|e| e.to_string())? {
                Ok(share) => shares.push((client, share)),
                Err(e) => {
                    *honest
                        .errors
                        .entry(format!("keygen: {}", error_label(&e)))
                        .or_insert(0) += 1
                }
            }
        }
        honest.keygens_ok = shares.len();
        let before = metrics(&http, &target.rest_url).await?;

        let started = Instant::now();
        target.until = started + Duration::from_secs(args.seconds);
        let until = target.until;
        let mut patterns: Patterns = Vec::new();
        let mut tasks = Vec::new();
        let mut add = |name: &'static str, count: usize| {
            let tally = Arc::new(Tally::default());
            patterns.push((name, count, Arc::clone(&tally)));
            (count > 0).then_some(tally)
        };
        if let Some(tally) = add("slow_loris", args.slow_loris) {
            tasks.push(tokio::spawn(patterns::raw_sockets(
                target.clone(),
                args.slow_loris,
                true,
                tally,
            )));
        }
        if let Some(tally) = add("idle_sockets", args.idle_sockets) {
            tasks.push(tokio::spawn(patterns::raw_sockets(
                target.clone(),
                args.idle_sockets,
                false,
                tally,
            )));
        }
        if let Some(tally) = add("unique_requests", args.unique_requests) {
            tasks.push(tokio::spawn(patterns::unique_requests(
                target.clone(),
                args.unique_requests,
                marker.clone(),
                tally,
            )));
        }
        if let Some(tally) = add("half_open_keygens", args.half_open) {
            tasks.push(tokio::spawn(patterns::half_open_keygens(
                target.clone(),
                args.half_open,
                half_open_tokens,
                tally,
            )));
        }
        if let Some(tally) = add("keygen_spam", args.keygen_spam) {
            tasks.push(tokio::spawn(patterns::keygen_spam(
                spammer,
                args.keygen_spam,
                until,
                tally,
            )));
        }
        if let Some(tally) = add("slot_hog", args.slot_hog) {
            tasks.push(tokio::spawn(patterns::slot_hog(
                target.clone(),
                args.slot_hog,
                hog_tokens,
                tally,
            )));
        }
        let signers: Vec<_> = shares
            .into_iter()
            .enumerate()
            .map(|(i, (client, share))| tokio::spawn(sign_loop(client, share, i, until)))
            .collect();
        let health = tokio::spawn(probe_health(http.clone(), target.rest_url.clone(), until));

        let joined = tokio::time::timeout_at(until + GRACE, async {
            for signer in signers {
                let part = signer.await.map_err(|e| e.to_string())?;
                honest.attempts += part.attempts;
                honest.verified += part.verified;
                honest.sign_ms.extend(part.sign_ms);
                for (kind, n) in part.errors {
                    *honest.errors.entry(kind).or_insert(0) += n;
                }
            }
            let health = health.await.map_err(|e| e.to_string())?;
            for task in tasks {
                task.await.map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(health)
        })
        .await;
        let health =
            joined.map_err(|_| "the run's tasks did not end within the grace period")??;
        let window = started.elapsed().as_secs_f64();
        let after = metrics(&http, &target.rest_url).await?;
        report(
            args, &honest, &health, window, &before, &after, &marker, &patterns,
        );
        Ok(())
    })
}

/// Signs in a loop until `until`, verifying every signature.
async fn sign_loop(client: Client, share: KeyShare, index: usize, until: Instant) -> Honest {
    let mut part = Honest::default();
    let mut n = 0u64;
    while Instant::now() < until {
        let prehash = Prehash::sha256(format!("abuse run {index} {n}").as_bytes());
        n += 1;
        part.attempts += 1;
        let begin = Instant::now();
        match client.sign(&share, prehash).await {
            Ok(signed) => {
                part.sign_ms.push(begin.elapsed().as_secs_f64() * 1e3);
                if verifies(&share, &prehash, &signed) {
                    part.verified += 1;
                } else {
                    *part
                        .errors
                        .entry("signature does not verify".into())
                        .or_insert(0) += 1;
                }
            }
            Err(e) => {
                *part
                    .errors
                    .entry(format!("sign: {}", error_label(&e)))
                    .or_insert(0) += 1;
                // Not a tight loop against a refusing server.
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    part
}

/// Checks the signature with libsecp256k1, independently of `mpc-core`.
fn verifies(share: &KeyShare, prehash: &Prehash, signed: &SignatureOutput) -> bool {
    let secp = secp256k1::Secp256k1::verification_only();
    let Ok(public_key) = secp256k1::PublicKey::from_slice(&share.public_key().to_sec1_bytes())
    else {
        return false;
    };
    let message = secp256k1::Message::from_digest(*prehash.as_bytes());
    let Ok(signature) = secp256k1::ecdsa::Signature::from_compact(&signed.signature.to_bytes())
    else {
        return false;
    };
    secp.verify_ecdsa(&message, &signature, &public_key).is_ok()
}

/// Asks `/healthz` every 100 ms until `until`.
async fn probe_health(http: reqwest::Client, rest_url: String, until: Instant) -> Health {
    let mut health = Health::default();
    let url = format!("{rest_url}/healthz");
    while Instant::now() < until {
        let begin = Instant::now();
        health.probes += 1;
        match http.get(&url).send().await {
            Ok(response) if response.status().is_success() => {
                health.ms.push(begin.elapsed().as_secs_f64() * 1e3);
            }
            _ => health.failed += 1,
        }
        tokio::time::sleep_until(begin + HEALTH_EVERY).await;
    }
    health
}

/// The `/metrics` text.
async fn metrics(http: &reqwest::Client, rest_url: &str) -> Result<String, String> {
    let response = http
        .get(format!("{rest_url}/metrics"))
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    response
        .text()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))
}

/// Sample lines (series) of an exposition text.
fn series(text: &str) -> impl Iterator<Item = &str> {
    text.lines()
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
}

#[allow(clippy::too_many_arguments)]
fn report(
    args: &Args,
    honest: &Honest,
    health: &Health,
    window: f64,
    before: &str,
    after: &str,
    marker: &str,
    patterns: &Patterns,
) {
    let mut sign = honest.sign_ms.clone();
    sign.sort_by(f64::total_cmp);
    let mut health_ms = health.ms.clone();
    health_ms.sort_by(f64::total_cmp);
    let ok = sign.len() as u64;
    let success_rate = if honest.attempts == 0 {
        0.0
    } else {
        honest.verified as f64 / honest.attempts as f64
    };
    let series_before = series(before).count();
    let series_after = series(after).count();
    let marked = series(after).filter(|line| line.contains(marker)).count();
    let mut pattern_json = serde_json::Map::new();
    for (name, count, tally) in patterns {
        let ended = tally.ended_after();
        pattern_json.insert(
            (*name).to_owned(),
            json!({
                "count": count,
                "outcomes": tally.outcomes(),
                "server_ended": ended.len(),
                "server_ended_p50_s": percentile(&ended, 50.0),
                "server_ended_max_s": ended.last().copied().unwrap_or(0.0),
                "server_did_protocol_work": tally.server_worked.load(std::sync::atomic::Ordering::Relaxed),
                "most_open_at_once": tally.most_open.load(std::sync::atomic::Ordering::Relaxed),
            }),
        );
    }
    let json: Value = json!({
        "seconds": args.seconds,
        "window_seconds": window,
        "honest": {
            "clients": args.honest_clients,
            "keygens_ok": honest.keygens_ok,
            "attempts": honest.attempts,
            "signatures": ok,
            "verified": honest.verified,
            "success_rate": success_rate,
            "p50_ms": percentile(&sign, 50.0),
            "p99_ms": percentile(&sign, 99.0),
            "errors": honest.errors,
        },
        "healthz": {
            "probes": health.probes,
            "failed": health.failed,
            "p99_ms": percentile(&health_ms, 99.0),
            "max_ms": health_ms.last().copied().unwrap_or(0.0),
        },
        "metrics": {
            "series_before": series_before,
            "series_after": series_after,
            "series_naming_abusive_requests": marked,
            "bytes_before": before.len(),
            "bytes_after": after.len(),
        },
        "patterns": pattern_json,
    });
    eprintln!(
        "honest clients       {} ({} keys made)",
        args.honest_clients, honest.keygens_ok
    );
    eprintln!(
        "honest signatures    {} of {} attempts verified ({:.1}%)",
        honest.verified,
        honest.attempts,
        success_rate * 100.0
    );
    eprintln!(
        "honest p50 / p99     {:.1} / {:.1} ms",
        percentile(&sign, 50.0),
        percentile(&sign, 99.0)
    );
    for (kind, n) in &honest.errors {
        eprintln!("honest error         {n} x {kind}");
    }
    eprintln!(
        "/healthz             {} probes, {} failed, max {:.1} ms",
        health.probes,
        health.failed,
        health_ms.last().copied().unwrap_or(0.0)
    );
    eprintln!(
        "metric series        {series_before} -> {series_after} ({marked} naming an abusive request), {} -> {} bytes",
        before.len(),
        after.len()
    );
    for (name, count, tally) in patterns {
        if *count == 0 {
            continue;
        }
        let ended = tally.ended_after();
        let outcomes: Vec<String> = tally
            .outcomes()
            .iter()
            .map(|(label, n)| format!("{n} {label}"))
            .collect();
        eprintln!("{name:<20} {count}: {}", outcomes.join(", "));
        if !ended.is_empty() {
            eprintln!(
                "{:<20} server ended {} after p50 {:.1} s, max {:.1} s",
                "",
                ended.len(),
                percentile(&ended, 50.0),
                ended.last().copied().unwrap_or(0.0)
            );
        }
    }
    println!("{json}");
}
