//! A load generator for a running `mpc-server`, on loopback only.
//!
//! N concurrent clients each run one keygen (16 at a time), then all sign
//! in a loop in the same window of T seconds; the run stops by itself at the deadline (or after
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
//! `--compute-bound` connects to nothing: it runs both parties' halves of
//! signatures in-process on one thread per core (or `--threads`) for
//! `--seconds` and reports signatures/s: the most any server and load
//! generator sharing these cores could reach (`scripts/load.sh` reports
//! each run as a fraction of it).
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
    /// The server's process id, to sample its resident memory and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Measure the compute bound instead: both parties' signing in-process,
    /// no server.
    #[arg(long)]
    compute_bound: bool,
    /// Threads: with `--compute-bound`, the signing threads; otherwise the
    /// load generator's async workers (default: one per core).
    #[arg(long)]
    threads: Option<usize>,
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

/// Both parties' signing in-process on `--threads` threads for
/// `--seconds`: signatures per second.
fn compute_bound(args: &Args) -> Result<(), String> {
    use mpc_core::local::run_pair;
    use mpc_core::wire::Role;
    use mpc_core::Dkg;
    use rand_core::OsRng;

    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}"));
    }
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .clamp(1, MAX_CLIENTS);
    let deadline = Duration::from_secs(args.seconds);
    let counts = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..threads)
            .map(|i| {
                scope.spawn(move || {
                    let context = format!("compute-bound {i}");
                    let (a, b, _) = run_pair(
                        &mut OsRng,
                        &mut Dkg::new(Role::A, context.as_bytes()),
                        &mut Dkg::new(Role::B, context.as_bytes()),
                    )
                    .map_err(|e| format!("keygen: {e}"))?;
                    let started = Instant::now();
                    let mut n = 0u64;
                    while started.elapsed() < deadline {
                        let prehash = Prehash::sha256(format!("{context} {n}").as_bytes());
                        run_pair(
                            &mut OsRng,
                            &mut Sign::new(&a, prehash),
                            &mut Sign::new(&b, prehash),
                        )
                        .map_err(|e| format!("sign: {e}"))?;
                        n += 1;
                    }
                    Ok::<_, String>((n, started.elapsed().as_secs_f64()))
                })
            })
            .collect();
        workers
            .into_iter()
            .map(|worker| worker.join().map_err(|_| "a worker panicked".to_owned())?)
            .collect::<Result<Vec<_>, String>>()
    })?;
    // Each thread's rate over its own signing time, summed.
    let per_second: f64 = counts
        .iter()
        .map(|(n, seconds)| *n as f64 / seconds.max(f64::MIN_POSITIVE))
        .sum();
    let signatures: u64 = counts.iter().map(|(n, _)| n).sum();
    eprintln!("compute bound        {per_second:.1} signatures / s ({threads} threads, both parties in-process)");
    println!(
        "{}",
        serde_json::json!({
            "mode": "compute_bound",
            "threads": threads,
            "seconds": args.seconds,
            "signatures": signatures,
            "signatures_per_second": per_second,
        })
    );
    Ok(())
}

fn run(args: &Args) -> Result<(), String> {
    if args.compute_bound {
        return compute_bound(args);
    }
    check_loopback(&args.server)?;
    if args.clients == 0 || args.clients > MAX_CLIENTS {
        return Err(format!("--clients must be 1..={MAX_CLIENTS}"));
    }
    if args.seconds == 0 || args.seconds > MAX_SECONDS {
        return Err(format!("--seconds must be 1..={MAX_SECONDS}"));
    }
    let secret = hs256_secret(
        args.jwt_secret_file.as_deref(),
        args.dev_data_dir.as_deref(),
    )?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    let runtime = runtime.enable_all().build().map_err(|e| e.to_string())?;
    let run_id = format!("{:x}", std::process::id());
    let mut config = TransportConfig::default();
    config.session_timeout = Duration::from_secs(120);
    config.message_timeout = Duration::from_secs(60);

    let memory = args.server_pid.map(MemorySampler::start);
    let cpu_marker = memory.as_ref().map(MemorySampler::marker);
    let started = Instant::now();
    let total = Arc::new(AtomicU64::new(0));
    // Every client signs in the same window: keygens first (a few at a
    // time), then all start signing together.
    let keygens = Arc::new(tokio::sync::Semaphore::new(KEYGENS_AT_ONCE));
    let barrier = Arc::new(tokio::sync::Barrier::new(args.clients));
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
            let run = ClientRun {
                index: i,
                seconds: args.seconds,
                max: args.max_signatures.unwrap_or(u64::MAX),
                total: Arc::clone(&total),
                keygens: Arc::clone(&keygens),
                barrier: Arc::clone(&barrier),
                cpu_marker: cpu_marker.clone(),
            };
            tasks.push(tokio::spawn(client_loop(client, run)));
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

/// Keygens run at once before the signing window (so that hundreds of
/// clients do not all time out in their keygens).
const KEYGENS_AT_ONCE: usize = 16;

/// One client's part of the run.
struct ClientRun {
    index: usize,
    seconds: u64,
    max: u64,
    total: Arc<AtomicU64>,
    keygens: Arc<tokio::sync::Semaphore>,
    barrier: Arc<tokio::sync::Barrier>,
    cpu_marker: Option<CpuMarker>,
}

async fn client_loop(client: Client, run: ClientRun) -> Samples {
    let ClientRun {
        index,
        seconds,
        max,
        total,
        keygens,
        barrier,
        cpu_marker,
    } = run;
    let mut samples = Samples::default();
    let keygen = {
        let _turn = keygens.acquire().await;
        let start = Instant::now();
        let keygen = client.keygen().await;
        if keygen.is_ok() {
            samples.keygen_ms.push(start.elapsed().as_secs_f64() * 1e3);
        }
        keygen
    };
    // Every client reaches the barrier, a failed one too.
    if barrier.wait().await.is_leader() {
        if let Some(marker) = &cpu_marker {
            marker.mark();
        }
    }
    let share = match keygen {
        Ok(share) => share,
        Err(e) => {
            samples.errors.push(format!("keygen: {e}"));
            return samples;
        }
    };
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
        "server_cpu_user_cores": memory.map(|m| m.user_cores),
        "server_cpu_sys_cores": memory.map(|m| m.sys_cores),
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
        eprintln!(
            "server CPU           {:.2} cores on average ({:.2} user, {:.2} system)",
            m.cpu_cores, m.user_cores, m.sys_cores
        );
    }
    println!("{json}");
}

/// What the server used during the run.
#[derive(Clone, Copy)]
struct ServerUse {
    rss_idle_kib: u64,
    rss_peak_kib: u64,
    cpu_cores: f64,
    user_cores: f64,
    sys_cores: f64,
}

/// Samples a process's resident set size from `/proc` every 50 ms, and its
/// CPU time at the start of the signing window ([`CpuMarker`]; the
/// sampler's start if never marked) and at the end.
struct MemorySampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
    idle: u64,
    pid: u32,
    ticks: (u64, u64),
    started: Instant,
    marked: Arc<std::sync::OnceLock<((u64, u64), Instant)>>,
}

/// Marks the start of the signing window for the CPU figures.
#[derive(Clone)]
struct CpuMarker {
    pid: u32,
    marked: Arc<std::sync::OnceLock<((u64, u64), Instant)>>,
}

impl CpuMarker {
    fn mark(&self) {
        if let Some(ticks) = cpu_ticks(self.pid) {
            let _ = self.marked.set((ticks, Instant::now()));
        }
    }
}

/// User and system CPU time of a process, in clock ticks (`/proc/<pid>/stat`
/// fields 14 and 15; Linux's tick is 1/100 s).
fn cpu_ticks(pid: u32) -> Option<(u64, u64)> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may hold spaces: count fields after its ')'.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some((utime, stime))
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
            ticks: cpu_ticks(pid).unwrap_or((0, 0)),
            started: Instant::now(),
            marked: Arc::default(),
        }
    }

    fn marker(&self) -> CpuMarker {
        CpuMarker {
            pid: self.pid,
            marked: Arc::clone(&self.marked),
        }
    }

    /// Idle and peak RSS (KiB), and the server's average CPU use in cores.
    fn finish(self) -> ServerUse {
        self.stop.store(true, Ordering::Relaxed);
        let peak = self.handle.join().unwrap_or(0);
        let (start, at) = self
            .marked
            .get()
            .copied()
            .unwrap_or((self.ticks, self.started));
        let (user, sys) = cpu_ticks(self.pid).unwrap_or(start);
        let cores = |ticks: u64| ticks as f64 / 100.0 / at.elapsed().as_secs_f64();
        let user_cores = cores(user.saturating_sub(start.0));
        let sys_cores = cores(sys.saturating_sub(start.1));
        ServerUse {
            rss_idle_kib: self.idle,
            rss_peak_kib: peak.max(self.idle),
            cpu_cores: user_cores + sys_cores,
            user_cores,
            sys_cores,
        }
    }
}
