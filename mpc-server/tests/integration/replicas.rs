//! Two `mpc-server` replicas on one PostgreSQL database behind nginx
//! (issue 13, item 4; PROTOCOL.md §18.5, "Client address" and "Rate
//! limits").
//!
//! nginx (the Debian package; `scripts/nginx.sh`) runs as this test's child
//! on loopback. Its upstream connections leave from 127.0.0.2, the only
//! address in the replicas' `MPC_TRUSTED_PROXIES`, and carry
//! `X-Forwarded-For: $proxy_add_x_forwarded_for` (whatever the client sent,
//! then the address nginx saw). Test clients take distinct loopback source
//! addresses (127.0.0.10, .11, ...) by binding before they connect.
//!
//! - [`forwarded_addresses_have_their_own_buckets`]: behind the trusted
//!   proxy, two users from two addresses have separate per-address buckets
//!   (REST requests per address, failed token checks per address), and a
//!   client behind the proxy cannot pick its bucket with a header of its
//!   own; a direct (untrusted) peer's `X-Forwarded-For` / `Forwarded` are
//!   ignored. These buckets are per process, so each replica is checked
//!   through a front that reaches only it; a third front, to the first
//!   replica, names the client in RFC 7239 `Forwarded` instead.
//! - [`keygen_rate_holds_across_replicas`],
//!   [`sign_rate_holds_across_replicas`] and
//!   [`key_quota_holds_across_replicas`]: limits whose state is in the
//!   database refuse exactly at the limit (4110, 4108) while nginx spreads
//!   the sessions round robin over both replicas, not at twice the limit;
//!   the key quota also when keygens race on both replicas at once.
//!
//! Needs PostgreSQL (`MPC_TEST_POSTGRES_URL`, `scripts/postgres.sh`) and
//! nginx (`MPC_NGINX`, else `nginx` on `PATH`, else `/usr/sbin/nginx`).
//! `scripts/test.sh` provides both. Under CI (`CI=true`) a missing one fails
//! the test. Elsewhere a missing nginx skips it with the reason printed;
//! PostgreSQL, as in the other tests, is skipped only with
//! `MPC_TEST_POSTGRES=skip`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use mpc_core::Prehash;
use mpc_transport_ws::{Client, CloseCode, TransportError};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// nginx's source address towards the replicas: the trusted proxy.
const PROXY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);
/// Two honest users' addresses.
const ALICE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 10);
const BOB: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);
/// Clients that connect to a replica directly (untrusted peers) and forge
/// forwarded headers.
const MALLORY: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 12);
const EVE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 13);
/// Two users behind the front that writes RFC 7239 `Forwarded`.
const CAROL: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 20);
const DAVE: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 21);

/// `MPC_RATE_LIMIT_IP_PER_MINUTE` of the per-address test: the burst of
/// REST requests per address (one more every 20 s after it).
const REST_PER_IP: usize = 3;
/// `MPC_AUTH_FAILURES_PER_IP_PER_MINUTE` of the per-address test.
const AUTH_FAILURES_PER_IP: usize = 2;

/// Whether this run is CI, where a missing prerequisite is a failure.
fn in_ci() -> bool {
    std::env::var("CI").is_ok_and(|value| value == "true" || value == "1")
}

/// The nginx binary, or `None` (after printing why) when this test is to
/// be skipped. `scripts/test.sh` may still be installing nginx in the
/// background: it names the install's lock in `MPC_NGINX_LOCK`, which is
/// held until the install ends.
fn nginx_binary() -> Option<PathBuf> {
    if let Ok(lock) = std::env::var("MPC_NGINX_LOCK") {
        // `flock -w` bounds the wait; a failure here only means the lookup
        // below may not find nginx, which then fails or skips as usual.
        let _ = Command::new("flock")
            .args(["-s", "-w", "600", &lock, "true"])
            .status();
    }
    let from_env = std::env::var_os("MPC_NGINX").map(PathBuf::from);
    let on_path = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("nginx"))
            .find(|candidate| candidate.is_file())
    });
    let found = from_env
        .clone()
        .or(on_path)
        .or_else(|| Some(PathBuf::from("/usr/sbin/nginx")))
        .filter(|path| path.is_file());
    if found.is_none() {
        let reason = match from_env {
            Some(path) => format!("MPC_NGINX={} is not a file", path.display()),
            None => "no nginx binary (MPC_NGINX, PATH, /usr/sbin/nginx): \
                     run `bash scripts/nginx.sh install`"
                .to_owned(),
        };
        assert!(!in_ci(), "CI must run the replica test: {reason}");
        eprintln!("replica test skipped: {reason}");
    }
    found
}

/// nginx and PostgreSQL, or `None` (after printing why) to skip.
fn prerequisites() -> Option<PathBuf> {
    if postgres_url().is_none() {
        assert!(
            !in_ci(),
            "CI must run the replica test: MPC_TEST_POSTGRES_URL is not set \
             (scripts/postgres.sh start)"
        );
        if skip_postgres() {
            return None;
        }
    }
    nginx_binary()
}

/// Where a front sends WebSocket upgrades and REST requests.
struct FrontSpec {
    /// `host:port` of each replica's WebSocket listener (round robin).
    ws: Vec<String>,
    /// `host:port` of each replica's REST listener (round robin).
    rest: Vec<String>,
    /// Names the client in RFC 7239 `Forwarded: for=` only, dropping the
    /// client's own `X-Forwarded-For` and `Forwarded`, instead of
    /// appending to `X-Forwarded-For`.
    rfc7239: bool,
}

impl FrontSpec {
    /// A front over `replicas`, in this order.
    fn over(replicas: &[&TestServer]) -> Self {
        let host = |url: &str| url.split_once("://").unwrap().1.to_owned();
        Self {
            ws: replicas.iter().map(|r| host(&r.ws_url)).collect(),
            rest: replicas.iter().map(|r| host(&r.rest_url)).collect(),
            rfc7239: false,
        }
    }

    /// This front, naming the client in `Forwarded` only.
    fn rfc7239(self) -> Self {
        Self {
            rfc7239: true,
            ..self
        }
    }
}

/// nginx as a child process, killed when dropped, also when the test
/// panics.
struct Nginx {
    child: Child,
    dir: tempfile::TempDir,
    /// The port of each front, in the order of the specs.
    ports: Vec<u16>,
}

impl Drop for Nginx {
    fn drop(&mut self) {
        // One process (`master_process off`): SIGKILL leaves nothing behind.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Nginx {
    /// Starts nginx with one front (a listener on 127.0.0.1) per spec:
    /// `/v1/session` goes to the spec's WebSocket upstream, everything else
    /// to its REST upstream. Returns once every front accepts connections.
    fn start(binary: &Path, fronts: &[FrontSpec]) -> Self {
        let mut last_log = String::new();
        // A port picked free can be taken before nginx binds it: retry.
        for _ in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let ports: Vec<u16> = {
                let listeners: Vec<_> = fronts
                    .iter()
                    .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
                    .collect();
                listeners
                    .iter()
                    .map(|l| l.local_addr().unwrap().port())
                    .collect()
            };
            let conf = dir.path().join("nginx.conf");
            std::fs::write(&conf, nginx_conf(dir.path(), fronts, &ports)).unwrap();
            let log = dir.path().join("error.log");
            let child = Command::new(binary)
                .arg("-p")
                .arg(dir.path())
                .arg("-c")
                .arg(&conf)
                .arg("-e")
                .arg(&log)
                .args(["-g", "daemon off;"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot run {}: {e}", binary.display()));
            let mut nginx = Self { child, dir, ports };
            if nginx.wait_listening() {
                return nginx;
            }
            last_log = std::fs::read_to_string(&log).unwrap_or_default();
            drop(nginx);
        }
        panic!("nginx did not start; its error log:\n{last_log}");
    }

    /// Whether nginx has bound its ports (it writes its pid file after)
    /// and every front accepts a connection (bounded: 10 s); false if
    /// nginx exited.
    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(10);
        let pid = self.dir.path().join("nginx.pid");
        while Instant::now() < deadline {
            if self.child.try_wait().unwrap().is_some() {
                return false;
            }
            let up = pid.exists()
                && self
                    .ports
                    .iter()
                    .all(|port| std::net::TcpStream::connect(("127.0.0.1", *port)).is_ok());
            if up {
                return true;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The address of front `i`.
    fn front(&self, i: usize) -> SocketAddr {
        SocketAddr::from((Ipv4Addr::LOCALHOST, self.ports[i]))
    }

    /// nginx's error log so far (for failure messages).
    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default()
    }
}

/// The configuration: one process, every path inside `dir`, no access log.
fn nginx_conf(dir: &Path, fronts: &[FrontSpec], ports: &[u16]) -> String {
    let dir = dir.display();
    // Each location repeats every proxy_set_header: a location that sets
    // one inherits none from the levels above.
    let append = "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;";
    // An empty value drops the header.
    let rfc7239 = "proxy_set_header X-Forwarded-For \"\"; \
                   proxy_set_header Forwarded \"for=$remote_addr\";";
    let mut conf = format!(
        "master_process off;\n\
         pid {dir}/nginx.pid;\n\
         error_log {dir}/error.log warn;\n\
         events {{ worker_connections 512; }}\n\
         http {{\n\
         access_log off;\n\
         client_body_temp_path {dir}/client_body;\n\
         proxy_temp_path {dir}/proxy;\n\
         fastcgi_temp_path {dir}/fastcgi;\n\
         uwsgi_temp_path {dir}/uwsgi;\n\
         scgi_temp_path {dir}/scgi;\n\
         map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}\n\
         proxy_bind {PROXY};\n\
         proxy_http_version 1.1;\n\
         proxy_buffering off;\n\
         proxy_read_timeout 120s;\n"
    );
    for (i, (front, port)) in fronts.iter().zip(ports).enumerate() {
        let forwarded = if front.rfc7239 { rfc7239 } else { append };
        let servers = |addrs: &[String]| {
            addrs
                .iter()
                .map(|addr| format!("server {addr};"))
                .collect::<Vec<_>>()
                .join(" ")
        };
        conf += &format!(
            "upstream ws{i} {{ {} }}\n\
             upstream rest{i} {{ {} }}\n\
             server {{\n\
             listen 127.0.0.1:{port};\n\
             location = /v1/session {{\n\
             proxy_pass http://ws{i};\n\
             proxy_set_header Upgrade $http_upgrade;\n\
             proxy_set_header Connection $connection_upgrade;\n\
             {forwarded}\n\
             }}\n\
             location / {{ proxy_pass http://rest{i}; {forwarded} }}\n\
             }}\n",
            servers(&front.ws),
            servers(&front.rest),
        );
    }
    conf + "}\n"
}

/// Two replicas on one fresh PostgreSQL database, trusting nginx's address,
/// with `env` on top. The second starts once the first has migrated the
/// database.
async fn replicas(env: &[(&str, &str)]) -> [TestServer; 2] {
    let db = Db::postgres().await;
    let start = || {
        let mut launch = Launch::new(&db).env("MPC_TRUSTED_PROXIES", &format!("{PROXY}/32"));
        for (key, value) in env {
            launch = launch.env(key, value);
        }
        launch.start()
    };
    let first = start();
    [first, start()]
}

/// A REST client whose connections leave from `from` (never through a
/// proxy from the environment).
fn rest_client(from: Ipv4Addr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(IpAddr::V4(from))
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

/// `GET /v1/keys` as `subject` from `from` to `to`, with `headers`: the
/// status.
async fn list_keys(from: Ipv4Addr, to: SocketAddr, subject: &str, headers: &[(&str, &str)]) -> u16 {
    let mut request = rest_client(from)
        .get(format!("http://{to}/v1/keys"))
        .bearer_auth(token(subject));
    for (name, value) in headers {
        request = request.header(*name, *value);
    }
    request.send().await.unwrap().status().as_u16()
}

/// A WebSocket upgrade request from `from` to `to` with `token` and
/// `headers`: the status of the answer (101 when upgraded). The connection
/// is dropped after the answer's head.
async fn upgrade(from: Ipv4Addr, to: SocketAddr, token: &str, headers: &[(&str, &str)]) -> u16 {
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    let mut stream = socket.connect(to).await.unwrap();
    let mut head = format!(
        "GET /v1/session HTTP/1.1\r\nHost: {to}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
         Authorization: Bearer {token}\r\n"
    );
    for (name, value) in headers {
        head += &format!("{name}: {value}\r\n");
    }
    head += "\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    let mut buf = [0u8; 1024];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.len() < 16 * 1024 {
        let n = stream.read(&mut buf).await.unwrap();
        assert!(n > 0, "connection closed before an answer: {answer:?}");
        answer.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text.split(' ').nth(1).unwrap_or_default();
    status
        .parse()
        .unwrap_or_else(|_| panic!("no status in {text:?}"))
}

/// The per-address rules of one replica, reached through `front` (nginx,
/// trusted) and `direct` (its own listeners, where the test is an untrusted
/// peer). `name` labels assertion messages.
async fn per_address_rules(
    name: &str,
    front: SocketAddr,
    direct_rest: SocketAddr,
    direct_ws: SocketAddr,
) {
    // REST requests per address, through the proxy: Alice spends her
    // address's burst; Bob, from another address, is not affected. With
    // nginx's address as the client (no trusted proxy) Bob would share
    // Alice's empty bucket.
    for i in 0..REST_PER_IP {
        let status = list_keys(ALICE, front, "alice", &[]).await;
        assert_eq!(status, 200, "{name}: Alice's request {i} through nginx");
    }
    let status = list_keys(ALICE, front, "alice", &[]).await;
    assert_eq!(status, 429, "{name}: Alice over her address's limit");
    let status = list_keys(BOB, front, "bob", &[]).await;
    assert_eq!(status, 200, "{name}: Bob has his own bucket");
    // A header Alice sends herself is kept left of the address nginx
    // appends, and the server reads from the right: she cannot move to a
    // fresh bucket, nor into Bob's.
    for forged in ["198.51.100.7", "127.0.0.11"] {
        let status = list_keys(ALICE, front, "alice", &[("x-forwarded-for", forged)]).await;
        assert_eq!(status, 429, "{name}: Alice forging {forged} through nginx");
        let forwarded = format!("for={forged}");
        let status = list_keys(ALICE, front, "alice", &[("forwarded", &forwarded)]).await;
        assert_eq!(status, 429, "{name}: Alice forging Forwarded {forged}");
    }

    // Directly, an untrusted peer's forwarded headers are ignored: Mallory
    // names a fresh address in each request and still spends one bucket,
    // her own.
    for i in 0..REST_PER_IP {
        let forged = format!("198.51.100.{}", 100 + i);
        let forwarded = format!("for={forged}");
        let headers = [
            ("x-forwarded-for", forged.as_str()),
            ("forwarded", &forwarded),
        ];
        let status = list_keys(MALLORY, direct_rest, "mallory", &headers).await;
        assert_eq!(status, 200, "{name}: Mallory's request {i}");
    }
    let headers = [
        ("x-forwarded-for", "198.51.100.200"),
        ("forwarded", "for=198.51.100.201"),
    ];
    let status = list_keys(MALLORY, direct_rest, "mallory", &headers).await;
    assert_eq!(
        status, 429,
        "{name}: Mallory's forged addresses were believed"
    );
    // And naming Alice's address does not put Eve into Alice's empty bucket.
    let headers = [
        ("x-forwarded-for", "127.0.0.10"),
        ("forwarded", "for=127.0.0.10"),
    ];
    let status = list_keys(EVE, direct_rest, "eve", &headers).await;
    assert_eq!(status, 200, "{name}: Eve landed in Alice's bucket");

    // Failed token checks per address at the WebSocket upgrade (a separate
    // code path: the upgrade handler reads the address itself).
    for i in 0..AUTH_FAILURES_PER_IP {
        assert_eq!(
            upgrade(ALICE, front, "bad", &[]).await,
            401,
            "{name}: failure {i}"
        );
    }
    // Over the budget a bad token from the address gets 429; a valid one
    // still passes (honest users behind one address are not locked out).
    assert_eq!(
        upgrade(ALICE, front, "bad", &[]).await,
        429,
        "{name}: Alice blocked"
    );
    let status = upgrade(ALICE, front, &token("alice"), &[]).await;
    assert_eq!(status, 101, "{name}: Alice's valid token");
    assert_eq!(
        upgrade(BOB, front, "bad", &[]).await,
        401,
        "{name}: Bob's own budget"
    );
    assert_eq!(
        upgrade(BOB, front, &token("bob"), &[]).await,
        101,
        "{name}: Bob upgrades"
    );
    // Directly, Mallory's fresh forged addresses share her own budget.
    for i in 0..=AUTH_FAILURES_PER_IP {
        let forged = format!("203.0.113.{i}");
        let forwarded = format!("for={forged}");
        let headers = [
            ("x-forwarded-for", forged.as_str()),
            ("forwarded", &forwarded),
        ];
        let want = if i < AUTH_FAILURES_PER_IP { 401 } else { 429 };
        let status = upgrade(MALLORY, direct_ws, "bad", &headers).await;
        assert_eq!(status, want, "{name}: Mallory's upgrade {i}");
    }
}

/// Through a trusted proxy that writes `Forwarded: for=` (and drops what
/// the client sent of it and of `X-Forwarded-For`): two users, two buckets.
async fn rfc7239_front(front: SocketAddr) {
    for i in 0..REST_PER_IP {
        let status = list_keys(CAROL, front, "carol", &[]).await;
        assert_eq!(status, 200, "Carol's request {i} through Forwarded");
    }
    let forged = [
        ("x-forwarded-for", "198.51.100.9"),
        ("forwarded", "for=198.51.100.9"),
    ];
    for headers in [&[][..], &forged[..]] {
        let status = list_keys(CAROL, front, "carol", headers).await;
        assert_eq!(
            status, 429,
            "Carol over her address's limit, headers {headers:?}"
        );
    }
    let status = list_keys(DAVE, front, "dave", &[]).await;
    assert_eq!(status, 200, "Dave has his own bucket behind Forwarded");
}

fn socket_addr(url: &str) -> SocketAddr {
    url.split_once("://").unwrap().1.parse().unwrap()
}

/// Behind nginx with the trusted proxy setting, two users from two
/// addresses have separate buckets; an untrusted peer's forwarded headers
/// are ignored. On each replica: these buckets are per process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn forwarded_addresses_have_their_own_buckets() {
    let Some(binary) = prerequisites() else {
        return;
    };
    bounded(async {
        let per_ip = REST_PER_IP.to_string();
        let failures = AUTH_FAILURES_PER_IP.to_string();
        let servers = replicas(&[
            ("MPC_RATE_LIMIT_IP_PER_MINUTE", &per_ip),
            ("MPC_AUTH_FAILURES_PER_IP_PER_MINUTE", &failures),
        ])
        .await;
        // One front per replica, and one more to the first that names the
        // client in `Forwarded` instead of `X-Forwarded-For`.
        let fronts = [
            FrontSpec::over(&[&servers[0]]),
            FrontSpec::over(&[&servers[1]]),
            FrontSpec::over(&[&servers[0]]).rfc7239(),
        ];
        let nginx = Nginx::start(&binary, &fronts);
        for (i, server) in servers.iter().enumerate() {
            per_address_rules(
                &format!("replica {i}"),
                nginx.front(i),
                socket_addr(&server.rest_url),
                socket_addr(&server.ws_url),
            )
            .await;
        }
        rfc7239_front(nginx.front(2)).await;
        drop(nginx);
    })
    .await;
}

/// `series` on each replica once their sum is `total`. Sessions are
/// counted as they end on the server, which may be just after the client
/// returned: polled, bounded (100 reads, 50 ms apart).
async fn per_replica(servers: &[TestServer; 2], series: &str, total: u64) -> [u64; 2] {
    let mut counts = [0; 2];
    for _ in 0..100 {
        for (count, server) in counts.iter_mut().zip(servers) {
            *count = server.metric(series).await;
        }
        if counts.iter().sum::<u64>() == total {
            return counts;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series}: {counts:?} on the replicas, want {total} in all");
}

/// A WebSocket client of `subject` through front `i` of `nginx`.
fn client_via(nginx: &Nginx, i: usize, subject: &str) -> Client {
    Client::new(format!("ws://{}/v1/session", nginx.front(i)))
        .with_bearer_token(token(subject))
        .with_config(client_config())
}

/// Sessions (`attempt`) that must each be refused with `code`, until both
/// replicas have refused one (`series` counts the refusals): at most 6.
async fn refused_by_both<F, Fut, T>(servers: &[TestServer; 2], code: u16, series: &str, attempt: F)
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, TransportError>>,
{
    for n in 1..=6 {
        let Err(error) = attempt().await else {
            panic!("a session over the limit ran");
        };
        assert_eq!(error.close_code(), Some(CloseCode(code)), "{error}");
        let counts = per_replica(servers, series, n).await;
        if counts.iter().all(|count| *count > 0) {
            return;
        }
    }
    panic!("nginx did not spread the refused sessions over both replicas");
}

/// `MPC_KEYGEN_RATE_PER_HOUR` (state in `rate_buckets`, PROTOCOL.md §18.5)
/// holds across replicas: with nginx alternating the sessions between
/// them, one subject gets exactly the limit, then 4110 on either replica.
/// Per-process buckets would allow twice the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keygen_rate_holds_across_replicas() {
    const LIMIT: u64 = 3;
    let Some(binary) = prerequisites() else {
        return;
    };
    bounded(async {
        let servers = replicas(&[("MPC_KEYGEN_RATE_PER_HOUR", &LIMIT.to_string())]).await;
        let nginx = Nginx::start(&binary, &[FrontSpec::over(&[&servers[0], &servers[1]])]);
        let client = client_via(&nginx, 0, "rate-user");
        for i in 0..LIMIT {
            client
                .keygen()
                .await
                .unwrap_or_else(|e| panic!("keygen {i} within the limit: {e}\n{}", nginx.log()));
        }
        let ok = r#"mpc_sessions_total{protocol="keygen",outcome="ok"}"#;
        let counts = per_replica(&servers, ok, LIMIT).await;
        assert!(
            counts.iter().all(|c| *c > 0),
            "keygens not spread: {counts:?}"
        );
        let refused = r#"mpc_sessions_total{protocol="keygen",outcome="rejected"}"#;
        refused_by_both(&servers, 4110, refused, || client.keygen()).await;
        // Another subject has its own bucket.
        client_via(&nginx, 0, "other-user").keygen().await.unwrap();
    })
    .await;
}

/// `MPC_SIGN_RATE_PER_MINUTE` holds across replicas: on PostgreSQL its
/// state is in the database (an unlogged table, PROTOCOL.md §18.5), so with
/// nginx alternating the sessions one subject gets exactly the limit, then
/// 4110 on either replica; per-process buckets would allow twice the limit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sign_rate_holds_across_replicas() {
    const LIMIT: u64 = 3;
    let Some(binary) = prerequisites() else {
        return;
    };
    bounded(async {
        let servers = replicas(&[("MPC_SIGN_RATE_PER_MINUTE", &LIMIT.to_string())]).await;
        let nginx = Nginx::start(&binary, &[FrontSpec::over(&[&servers[0], &servers[1]])]);
        let client = client_via(&nginx, 0, "signing-user");
        let share = client.keygen().await.unwrap();
        for i in 0..LIMIT {
            let message = format!("within the limit {i}");
            sign_and_verify(&client, &share, message.as_bytes()).await;
        }
        let ok = r#"mpc_sessions_total{protocol="sign",outcome="ok"}"#;
        let counts = per_replica(&servers, ok, LIMIT).await;
        assert!(
            counts.iter().all(|c| *c > 0),
            "signatures not spread: {counts:?}"
        );
        let refused = r#"mpc_sessions_total{protocol="sign",outcome="rejected"}"#;
        let prehash = Prehash::sha256(b"over the limit");
        refused_by_both(&servers, 4110, refused, || client.sign(&share, prehash)).await;
        // Another subject has its own bucket.
        let other = client_via(&nginx, 0, "other-signer");
        let theirs = other.keygen().await.unwrap();
        sign_and_verify(&other, &theirs, b"another subject").await;
    })
    .await;
}

/// `MPC_MAX_KEYS_PER_OWNER` (counted in the database) holds across
/// replicas: sequentially through nginx, then with keygens racing on both
/// replicas at once, where each replica's fast check at the opening lets
/// them all in and the storing transaction refuses the extra ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn key_quota_holds_across_replicas() {
    const QUOTA: usize = 2;
    let Some(binary) = prerequisites() else {
        return;
    };
    bounded(async {
        let servers = replicas(&[
            ("MPC_MAX_KEYS_PER_OWNER", &QUOTA.to_string()),
            // Racing keygens of one owner on one replica are not refused
            // as half-open before they reach the quota.
            ("MPC_MAX_HALF_OPEN_PER_OWNER", "8"),
        ])
        .await;
        let nginx = Nginx::start(&binary, &[FrontSpec::over(&[&servers[0], &servers[1]])]);

        // Sequential: the quota, then 4108 on either replica.
        let client = client_via(&nginx, 0, "quota-user");
        for i in 0..QUOTA {
            client
                .keygen()
                .await
                .unwrap_or_else(|e| panic!("keygen {i} within the quota: {e}\n{}", nginx.log()));
        }
        let ok = r#"mpc_sessions_total{protocol="keygen",outcome="ok"}"#;
        let counts = per_replica(&servers, ok, QUOTA as u64).await;
        assert!(
            counts.iter().all(|c| *c > 0),
            "keygens not spread: {counts:?}"
        );
        let refused = r#"mpc_admission_refusals_total{reason="key_quota"}"#;
        refused_by_both(&servers, 4108, refused, || client.keygen()).await;

        // Racing: twice the quota at once, spread over both replicas.
        let rejected = r#"mpc_sessions_total{protocol="keygen",outcome="rejected"}"#;
        let before = [
            servers[0].metric(ok).await + servers[0].metric(rejected).await,
            servers[1].metric(ok).await + servers[1].metric(rejected).await,
        ];
        let rejected_before = servers[0].metric(rejected).await + servers[1].metric(rejected).await;
        let client = client_via(&nginx, 0, "racing-user");
        let keygens = (0..2 * QUOTA).map(|_| {
            let client = client.clone();
            tokio::spawn(async move { client.keygen().await })
        });
        let mut stored = 0;
        for keygen in keygens.collect::<Vec<_>>() {
            match keygen.await.unwrap() {
                Ok(_) => stored += 1,
                Err(e) => assert_eq!(e.close_code(), Some(CloseCode(4108)), "{e}"),
            }
        }
        assert_eq!(stored, QUOTA, "keys stored by racing keygens");
        let oks = per_replica(&servers, ok, 2 * QUOTA as u64).await;
        let refusals = per_replica(&servers, rejected, rejected_before + QUOTA as u64).await;
        let ran = [
            oks[0] + refusals[0] - before[0],
            oks[1] + refusals[1] - before[1],
        ];
        assert!(
            ran.iter().all(|c| *c > 0),
            "racing keygens not spread: {ran:?}"
        );
    })
    .await;
}
