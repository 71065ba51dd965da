//! Test harness: the real `mpc-server` binary as a child process on
//! 127.0.0.1 (SQLite in a temp dir, or a fresh database on the PostgreSQL
//! that `scripts/postgres.sh` started), tokens, and a client whose share
//! storage follows PROTOCOL.md §18.1.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use mpc_core::{DerivationPath, KeyShare, Prehash, Refresh, SignatureOutput};
use mpc_server::auth::TokenBuilder;
use mpc_transport_ws::{Client, Rejection, TransportConfig};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const MASTER_KEY: &str = "5f1e2d3c4b5a69788796a5b4c3d2e1f00f1e2d3c4b5a69788796a5b4c3d2e1f0";
pub const AUDIENCE: &str = "mpc-server";

/// Every test body runs under this bound so that nothing hangs CI (a bound,
/// not a timing assertion).
pub const TEST_BOUND: Duration = Duration::from_secs(240);

pub async fn bounded<T>(future: impl std::future::Future<Output = T>) -> T {
    tokio::time::timeout(TEST_BOUND, future)
        .await
        .expect("test exceeded its time bound")
}

pub fn token(subject: &str) -> String {
    TokenBuilder::new(subject, AUDIENCE)
        .expires_in(3600)
        .sign_hs256(JWT_SECRET.as_bytes())
        .unwrap()
}

/// A fresh single-use step-up token (PROTOCOL.md §19: `amr` with `otp`, a
/// recent `auth_time`, a random `jti`), as backup, export and revoke need.
pub fn step_up_token(subject: &str) -> String {
    use rand_core::RngCore;
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let mut jti = [0u8; 16];
    rand_core::OsRng.fill_bytes(&mut jti);
    TokenBuilder::new(subject, AUDIENCE)
        .expires_in(600)
        .amr(&["pwd", "otp"])
        .auth_time(now - 10)
        .token_id(hex::encode(jti))
        .sign_hs256(JWT_SECRET.as_bytes())
        .unwrap()
}

/// Where a test server keeps its data.
pub enum Db {
    Sqlite(tempfile::TempDir),
    Postgres(String),
}

impl Db {
    pub fn sqlite() -> Self {
        Self::Sqlite(tempfile::tempdir().unwrap())
    }

    /// A fresh database on the test PostgreSQL cluster.
    pub async fn postgres() -> Self {
        let Some(admin) = postgres_url() else {
            panic!(
                "MPC_TEST_POSTGRES_URL is not set: run `eval \"$(scripts/postgres.sh start)\"` \
                 first (scripts/test.sh does), or set MPC_TEST_POSTGRES=skip"
            );
        };
        use sqlx::Connection;
        let mut conn = sqlx::PgConnection::connect(&admin).await.unwrap();
        let name = format!("mpc_srv_{}", hex::encode(rand_bytes::<6>()));
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&mut conn)
            .await
            .unwrap();
        let (base, _) = admin.rsplit_once('/').unwrap();
        Self::Postgres(format!("{base}/{name}"))
    }

    pub fn url(&self) -> String {
        match self {
            Self::Sqlite(dir) => mpc_server::config::sqlite_url(dir.path()),
            Self::Postgres(url) => url.clone(),
        }
    }

    pub fn data_dir(&self) -> Option<&std::path::Path> {
        match self {
            Self::Sqlite(dir) => Some(dir.path()),
            Self::Postgres(_) => None,
        }
    }
}

/// `None` when PostgreSQL tests are explicitly skipped.
pub fn postgres_url() -> Option<String> {
    std::env::var("MPC_TEST_POSTGRES_URL").ok()
}

pub fn skip_postgres() -> bool {
    if postgres_url().is_none() && std::env::var("MPC_TEST_POSTGRES").as_deref() == Ok("skip") {
        eprintln!("PostgreSQL half skipped (MPC_TEST_POSTGRES=skip)");
        return true;
    }
    false
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    use rand_core::{OsRng, RngCore};
    let mut bytes = [0u8; N];
    OsRng.fill_bytes(&mut bytes);
    bytes
}

/// A running `mpc-server` process.
pub struct TestServer {
    child: Child,
    pub ws_url: String,
    pub rest_url: String,
    pub stderr: Arc<Mutex<Vec<String>>>,
}

pub struct Launch<'a> {
    pub db: &'a Db,
    pub env: Vec<(String, String)>,
    pub args: Vec<String>,
    /// A program (and its arguments) that runs the server, e.g.
    /// `prlimit --nofile=256:256 --`.
    pub wrapper: Vec<String>,
}

/// The abuse limits (PROTOCOL.md §18.5) lifted: every test client
/// connects from 127.0.0.1 and most tests run many keygens, refreshes or
/// signatures in a few seconds for another purpose. The tests of a limit
/// set it again with [`Launch::env`], which replaces these.
const UNLIMITED: [(&str, &str); 6] = [
    ("MPC_KEYGEN_RATE_PER_HOUR", "0"),
    ("MPC_REFRESH_RATE_PER_HOUR", "0"),
    ("MPC_SIGN_RATE_PER_MINUTE", "0"),
    ("MPC_MAX_HALF_OPEN_PER_IP", "100000"),
    ("MPC_MAX_UPGRADES_PER_IP", "100000"),
    ("MPC_MAX_CONNECTIONS_PER_IP", "100000"),
];

impl<'a> Launch<'a> {
    pub fn new(db: &'a Db) -> Self {
        Self {
            db,
            env: [
                ("MPC_JWT_SECRET", JWT_SECRET),
                ("MPC_MASTER_KEY", MASTER_KEY),
            ]
            .into_iter()
            .chain(UNLIMITED)
            .map(|(key, value)| (key.into(), value.into()))
            .collect(),
            args: Vec::new(),
            wrapper: Vec::new(),
        }
    }

    /// Runs the server under `words` (a program and its arguments).
    pub fn wrapped(mut self, words: &[&str]) -> Self {
        self.wrapper = words.iter().map(|word| (*word).to_owned()).collect();
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.into(), value.into()));
        self
    }

    pub fn without_env(mut self, key: &str) -> Self {
        self.env.retain(|(k, _)| k != key);
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn command(&self) -> Command {
        let binary = env!("CARGO_BIN_EXE_mpc-server");
        let mut command = match self.wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        command
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("MPC_WS_ADDR", "127.0.0.1:0")
            .env("MPC_REST_ADDR", "127.0.0.1:0")
            .env("MPC_LOG_FORMAT", "json")
            .env("MPC_LOG", "info")
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        match self.db {
            Db::Sqlite(dir) => {
                command.env("MPC_DATA_DIR", dir.path());
            }
            Db::Postgres(url) => {
                command.env("MPC_DATABASE_URL", url);
                command.env("MPC_DATA_DIR", std::env::temp_dir().join("mpc-unused"));
            }
        }
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    /// Starts the server and waits for its "listening" log line.
    pub fn start(self) -> TestServer {
        self.try_start().unwrap_or_else(|(code, lines)| {
            panic!(
                "server did not start (exit {code:?}):\n{}",
                lines.join("\n")
            )
        })
    }

    /// Starts the server; `Err` with its exit code and stderr lines if it
    /// exits before listening.
    pub fn try_start(self) -> Result<TestServer, (Option<i32>, Vec<String>)> {
        let mut child = self.command().spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let (tx, rx) = mpsc::channel();
        {
            let lines = Arc::clone(&lines);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if let Some(addrs) = listening(&line) {
                        let _ = tx.send(addrs);
                    }
                    lines.lock().unwrap().push(line);
                }
            });
        }
        // Drain stdout so the child never blocks on a full pipe.
        let stdout = child.stdout.take().unwrap();
        let stdout_lines = Arc::clone(&lines);
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                stdout_lines.lock().unwrap().push(format!("stdout: {line}"));
            }
        });
        loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok((ws, rest)) => {
                    return Ok(TestServer {
                        child,
                        ws_url: format!("ws://{ws}"),
                        rest_url: format!("http://{rest}"),
                        stderr: lines,
                    })
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Some(status) = child.try_wait().unwrap() {
                        std::thread::sleep(Duration::from_millis(100));
                        let lines = lines.lock().unwrap().clone();
                        return Err((status.code(), lines));
                    }
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    let status = child.wait().unwrap();
                    let lines = lines.lock().unwrap().clone();
                    return Err((status.code(), lines));
                }
            }
        }
    }
}

fn listening(line: &str) -> Option<(String, String)> {
    let value: serde_json::Value = serde_json::from_str(line).ok()?;
    let fields = value.get("fields")?;
    if fields.get("message")?.as_str()? != "listening" {
        return None;
    }
    Some((
        fields.get("ws_addr")?.as_str()?.to_owned(),
        fields.get("rest_addr")?.as_str()?.to_owned(),
    ))
}

impl TestServer {
    pub fn client(&self, subject: &str) -> Client {
        Client::new(self.ws_url.clone())
            .with_bearer_token(token(subject))
            .with_config(client_config())
    }

    /// SIGKILL, then wait.
    pub fn kill(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Waits for the process to exit by itself (a crash point); returns
    /// whether it was killed by a signal (abort) rather than exiting.
    pub fn wait_crashed(mut self) -> bool {
        let status = self.child.wait().unwrap();
        status.code().is_none()
    }

    /// SIGTERM, then wait; the exit status.
    pub fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        self.child.wait().unwrap()
    }

    pub fn logs(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// The value of the sample `series` (name and labels exactly as the
    /// exposition writes them) in the server's `/metrics`; 0 if absent.
    pub async fn metric(&self, series: &str) -> u64 {
        let text = reqwest::get(format!("{}/metrics", self.rest_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        text.lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |value| value.trim().parse().unwrap())
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The server's `/metrics` text once it contains every line of `want`.
/// Sessions are counted as they end on the server, which may be just after
/// the client returned, so this polls (bounded: 100 reads, 50 ms apart) and
/// fails naming the first line still missing.
pub async fn metrics_containing(rest_url: &str, want: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..100 {
        text = reqwest::get(format!("{rest_url}/metrics"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if want.iter().all(|line| text.contains(line)) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let missing = want.iter().find(|line| !text.contains(*line));
    panic!("{missing:?} missing from\n{text}");
}

pub fn client_config() -> TransportConfig {
    let mut config = TransportConfig::default();
    config.message_timeout = Duration::from_secs(20);
    config.session_timeout = Duration::from_secs(60);
    config
}

pub fn verify_with_libsecp(public_key: &k256::PublicKey, prehash: &Prehash, out: &SignatureOutput) {
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::PublicKey::from_slice(&public_key.to_sec1_bytes()).unwrap();
    let msg = secp256k1::Message::from_digest(*prehash.as_bytes());
    let compact = out.signature.to_bytes();
    let sig = secp256k1::ecdsa::Signature::from_compact(&compact).unwrap();
    secp.verify_ecdsa(&msg, &sig, &pk)
        .expect("libsecp256k1 rejects the signature");
}

/// The client's share storage, following PROTOCOL.md §18.1: shares by
/// epoch and the epoch it signs with.
#[derive(Default)]
pub struct ClientShares {
    pub shares: BTreeMap<u64, Vec<u8>>,
    pub current: u64,
}

impl ClientShares {
    pub fn new(share: &KeyShare) -> Self {
        let mut shares = BTreeMap::new();
        shares.insert(share.epoch(), share.to_bytes().to_vec());
        Self {
            shares,
            current: share.epoch(),
        }
    }

    pub fn current(&self) -> KeyShare {
        KeyShare::from_bytes(&self.shares[&self.current]).unwrap()
    }

    /// Refresh with the durability hook; the state is updated as the hook
    /// goes, whatever the outcome.
    pub async fn refresh(
        state: &Arc<Mutex<Self>>,
        client: &Client,
    ) -> Result<KeyShare, mpc_transport_ws::TransportError> {
        let old = state.lock().unwrap().current();
        let hook_state = Arc::clone(state);
        let mut hook = move |refresh: &Refresh<'_>| {
            let mut shares = hook_state.lock().unwrap();
            if let Some(new) = refresh.ready_share() {
                // A leftover of a cut earlier refresh is overwritten.
                shares.shares.insert(new.epoch(), new.to_bytes().to_vec());
                if refresh.is_confirmed() {
                    shares.current = new.epoch();
                }
            }
            std::future::ready(Ok::<(), Rejection>(()))
        };
        let new = client.refresh(&old, &mut hook).await?;
        let mut shares = state.lock().unwrap();
        shares.current = new.epoch();
        shares.shares.retain(|epoch, _| *epoch >= new.epoch());
        Ok(new)
    }
}

/// Signs with the client's current epoch and checks the signature.
pub async fn sign_and_verify(client: &Client, share: &KeyShare, message: &[u8]) {
    let prehash = Prehash::sha256(message);
    let out = client.sign(share, prehash).await.unwrap();
    verify_with_libsecp(&share.public_key(), &prehash, &out);
}

pub fn path(text: &str) -> DerivationPath {
    text.parse().unwrap()
}

/// A client socket that flips the last byte of its `n`-th protocol message
/// (a malicious client: for signing, n = 3 alters `psi`, which only the
/// final signature check catches, a ban-class failure).
pub struct FlipLastByte<F> {
    pub inner: F,
    pub message: usize,
    pub seen: usize,
}

impl<F: mpc_transport_ws::Frames> mpc_transport_ws::Frames for FlipLastByte<F> {
    async fn send_binary(&mut self, mut data: Vec<u8>) -> Result<(), mpc_transport_ws::FrameError> {
        // Frame kind 2: a protocol message.
        if data.first() == Some(&2) {
            self.seen += 1;
            if self.seen == self.message {
                if let Some(last) = data.last_mut() {
                    *last ^= 1;
                }
            }
        }
        self.inner.send_binary(data).await
    }

    async fn send_ping(&mut self) -> Result<(), mpc_transport_ws::FrameError> {
        self.inner.send_ping().await
    }

    async fn recv(
        &mut self,
    ) -> Option<Result<mpc_transport_ws::Incoming, mpc_transport_ws::FrameError>> {
        self.inner.recv().await
    }

    async fn flush(&mut self) -> Result<(), mpc_transport_ws::FrameError> {
        self.inner.flush().await
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), mpc_transport_ws::FrameError> {
        self.inner.close(code, reason).await
    }
}

/// Signs as a malicious client that alters its round-3 message: the server
/// sees a ban-class failure and bans the key. Returns the client's error.
pub async fn sign_maliciously(
    client: &Client,
    share: &KeyShare,
) -> mpc_transport_ws::TransportError {
    use rand_core::OsRng;
    let prehash = Prehash::sha256(b"malicious");
    let opening = mpc_transport_ws::Opening::new(
        mpc_transport_ws::Operation::Sign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            prehash,
            path: DerivationPath::root(),
        },
        &mut OsRng,
    );
    let socket = client.connect().await.unwrap();
    let frames = FlipLastByte {
        inner: socket,
        message: 3,
        seen: 0,
    };
    let mut sign = mpc_core::Sign::new(share, prehash);
    mpc_transport_ws::run_client(frames, &opening, &mut sign, &mut OsRng, client.config())
        .await
        .unwrap_err()
}

/// The single number `sql` counts, with `$1` bound to `share`'s key id
/// (hex), read from the database directly.
pub async fn count(db: &Db, sql: &str, share: &KeyShare) -> i64 {
    use sqlx::Connection;
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&db.url()).await.unwrap();
    let n: i64 = sqlx::query_scalar(sql)
        .bind(hex::encode(share.key_id().0))
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}
