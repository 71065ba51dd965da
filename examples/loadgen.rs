//! A load generator for a running `mpc-server`, on loopback only.
//!
//! N concurrent clients each run one keygen, then sign in a loop for T
//! seconds; the run stops by itself at the deadline (or after
//! `--max-signatures`). It prints throughput, latency percentiles, errors
//! and bytes per signature as a table on stderr and as one JSON object on
//! stdout.
//!
//! ```sh
//! cargo run --release --bin mpc-server -- --dev &        # or any server
//! cargo run --release --example loadgen -- --clients 8 --seconds 20 \
//!     --dev-data-dir ./mpc-data --server-pid $(pgrep -f 'mpc-server')
//! ```
//!
//! Each client is its own user (`loadgen-<run>-<i>`), so the server's
//! per-owner session limit does not throttle the run; the tokens are signed
//! with the server's HS256 secret: `--jwt-secret-file`, `$MPC_JWT_SECRET`,
//! or the dev-mode secrets in `--dev-data-dir`. With `--server-pid`, the
//! server's resident memory is sampled during the run.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::Parser;
use mpc_core::{Prehash, Sign};
use mpc_examples::{check_loopback, hs256_secret, percentile};
use mpc_server::auth::TokenBuilder;
use mpc_transport_ws::{Client, Operation, TransportConfig};

/// Hard bounds, so that a typo cannot start an endless or huge run.
const MAX_CLIENTS: usize = 1024;
const MAX_SECONDS: u64 = 600;

#[derive(Parser, Debug)]
#[command(about = "Load generator for mpc-server (loopback only)")]
struct Args {
    /// WebSocket URL of the server (loopback only).
    #[arg(long, env = "MPC_SERVER", default_value = "ws://127.0.0.1:8080")]
    server: String,
    /// Concurrent clients (at most 1024).
    #[arg(long, default_value_t = 8)]
    clients: usize,
    /// Seconds of signing after the keygens (at most 600).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Stop after this many signatures in total.
    #[arg(long)]
    max_signatures: Option<u64>,
    /// File holding the server's HS256 secret.
    #[arg(long)]
    jwt_secret_file: Option<PathBuf>,
    /// The server's dev-mode data directory (reads `dev-secrets.json`).
    #[arg(long)]
    dev_data_dir: Option<PathBuf>,
    /// Token audience.
    #[arg(long, env = "MPC_JWT_AUDIENCE", default_value = "mpc-server")]
    audience: String,
    /// The server's process id, to sample its resident memory.
    #[arg(long)]
    server_pid: Option<u32>,
}

#[derive(Default)]
struct Samples {
    keygen_ms: Vec<f64>,
    sign_ms: Vec<f64>,
    errors: Vec<String>,
    bytes: u64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("{}", serde_json::json!({ "error": message }));
            ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> Result<(), String> {
    check_loopback(&args.server)?;
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}"));
    }
    let secret = hs256_secret(args.jwt_secret_file.as_deref(), args.dev_data_dir.as_deref())?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    let run_id = format!("{:x}", std::process::id());
    let mut config = TransportConfig::default();
    config.session_timeout = Duration::from_secs(120);
    config.message_timeout = Duration::from_secs(60);

    let memory = args.server_pid.map(MemorySampler::start);
    let started = Instant::now();
    let total = Arc::new(AtomicU64::new(0));
    let samples = runtime.block_on(async {
        let mut tasks = Vec::with_capacity(args.clients);
        for i in 0..args.clients {
            let token = TokenBuilder::new(format!("loadgen-{run_id}-{i}"), &args.audience)
                .expires_in(args.seconds + 3600)
                .sign_hs256(secret.as_bytes())
                .map_err(|e| e.to_string())?;
            let client = Client::new(args.server.clone())
                .with_bearer_token(token)
                .with_config(config.clone());
            let total = Arc::clone(&total);
            let seconds = args.seconds;
            let max = args.max_signatures.unwrap_or(u64::MAX);
            tasks.push(tokio::spawn(async move {
                client_loop(client, i, seconds, max, total).await
            }));
        }
        let mut all = Samples::default();
        for task in tasks {
            let samples = task.await.map_err(|e| e.to_string())?;
            all.keygen_ms.extend(samples.keygen_ms);
            all.sign_ms.extend(samples.sign_ms);
            all.errors.extend(samples.errors);
            all.bytes += samples.bytes;
        }
        Ok::<_, String>(all)
    })?;
    let elapsed = started.elapsed().as_secs_f64();
    let memory = memory.map(MemorySampler::finish);
    report(args, &samples, elapsed, memory);
    Ok(())
}

async fn client_loop(
    client: Client,
    index: usize,
    seconds: u64,
    max: u64,
    total: Arc<AtomicU64>,
) -> Samples {
    let mut samples = Samples::default();
    let start = Instant::now();
    let share = match client.keygen().await {
        Ok(share) => share,
        Err(e) => {
            samples.errors.push(format!("keygen: {e}"));
            return samples;
        }
    };
    samples.keygen_ms.push(start.elapsed().as_secs_f64() * 1e3);
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let mut n = 0u64;
    while Instant::now() < deadline && total.load(Ordering::Relaxed) < max {
        let prehash = Prehash::sha256(format!("loadgen {index} {n}").as_bytes());
        n += 1;
        let operation = Operation::Sign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            prehash,
            path: mpc_core::DerivationPath::root(),
        };
        let begin = Instant::now();
        match client.run(operation, |_| Sign::new(&share, prehash)).await {
            Ok((_, traffic)) => {
                samples.sign_ms.push(begin.elapsed().as_secs_f64() * 1e3);
                samples.bytes +=
                    u64::try_from(traffic.bytes_sent + traffic.bytes_received).unwrap_or(u64::MAX);
                total.fetch_add(1, Ordering::Relaxed);
            }
            Err(e) => samples.errors.push(format!("sign: {e}")),
        }
    }
    samples
}

fn report(args: &Args, samples: &Samples, elapsed: f64, memory: Option<ServerUse>) {
    let mut sign = samples.sign_ms.clone();
    sign.sort_by(f64::total_cmp);
    let mut keygen = samples.keygen_ms.clone();
    keygen.sort_by(f64::total_cmp);
    let signing_seconds = args.seconds as f64;
    let throughput = sign.len() as f64 / signing_seconds;
    let bytes_per_signature = if sign.is_empty() {
        0
    } else {
        samples.bytes / sign.len() as u64
    };
    let mut distinct_errors: Vec<&String> = samples.errors.iter().collect();
    distinct_errors.sort();
    distinct_errors.dedup();
    let json = serde_json::json!({
        "clients": args.clients,
        "seconds": args.seconds,
        "elapsed_seconds": elapsed,
        "keygens": keygen.len(),
        "keygen_p50_ms": percentile(&keygen, 50.0),
        "signatures": sign.len(),
        "signatures_per_second": throughput,
        "p50_ms": percentile(&sign, 50.0),
        "p95_ms": percentile(&sign, 95.0),
        "p99_ms": percentile(&sign, 99.0),
        "errors": samples.errors.len(),
        "error_kinds": distinct_errors.iter().take(5).collect::<Vec<_>>(),
        "bytes_per_signature": bytes_per_signature,
        "server_rss_idle_kib": memory.map(|m| m.rss_idle_kib),
        "server_rss_peak_kib": memory.map(|m| m.rss_peak_kib),
        "server_cpu_cores": memory.map(|m| m.cpu_cores),
    });
    eprintln!("clients              {}", args.clients);
    eprintln!("signing seconds      {}", args.seconds);
    eprintln!(
        "keygens              {} (p50 {:.1} ms)",
        keygen.len(),
        percentile(&keygen, 50.0)
    );
    eprintln!("signatures           {}", sign.len());
    eprintln!("signatures / s       {throughput:.1}");
    eprintln!(
        "latency p50/p95/p99  {:.2} / {:.2} / {:.2} ms",
        percentile(&sign, 50.0),
        percentile(&sign, 95.0),
        percentile(&sign, 99.0)
    );
    eprintln!("errors               {}", samples.errors.len());
    eprintln!("bytes / signature    {bytes_per_signature} (both directions, frames incl.)");
    if let Some(m) = memory {
        eprintln!(
            "server RSS           {} KiB idle, {} KiB peak",
            m.rss_idle_kib, m.rss_peak_kib
        );
        eprintln!("server CPU           {:.2} cores on average", m.cpu_cores);
    }
    println!("{json}");
}

/// What the server used during the run.
#[derive(Clone, Copy)]
struct ServerUse {
    rss_idle_kib: u64,
    rss_peak_kib: u64,
    cpu_cores: f64,
}

/// Samples a process's resident set size from `/proc` every 50 ms, and its
/// CPU time at the start and the end.
struct MemorySampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
    idle: u64,
    pid: u32,
    ticks: u64,
    started: Instant,
}

/// User plus system CPU time of a process, in clock ticks (`/proc/<pid>/stat`
/// fields 14 and 15; Linux's tick is 1/100 s).
fn cpu_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: count fields after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl MemorySampler {
    fn start(pid: u32) -> Self {
        let idle = rss_kib(pid).unwrap_or(0);
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = Arc::clone(&stop);
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !flag.load(Ordering::Relaxed) {
                peak = peak.max(rss_kib(pid).unwrap_or(0));
                std::thread::sleep(Duration::from_millis(50));
            }
            peak
        });
        Self {
            stop,
            handle,
            idle,
            pid,
            ticks: cpu_ticks(pid).unwrap_or(0),
            started: Instant::now(),
        }
    }

    /// Idle and peak RSS (KiB), and the server's average CPU use in cores.
    fn finish(self) -> ServerUse {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.handle.join().unwrap_or(0);
        let ticks = cpu_ticks(self.pid).unwrap_or(self.ticks) - self.ticks;
        ServerUse {
            rss_idle_kib: self.idle,
            rss_peak_kib: peak.max(self.idle),
            cpu_cores: ticks as f64 / 100.0 / self.started.elapsed().as_secs_f64(),
        }
    }
}
