//! Connection hygiene of the real binary on both listeners (PROTOCOL.md
//! §18.5): slow-loris and idle sockets are closed while `/healthz` keeps
//! answering, one address cannot hold more than its share of a listener's
//! connections, and no request adds a metric series.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::time::Duration;

use common::*;

/// Slack over the header-read timeout for the server to close a socket:
/// a generous bound on a loaded 2-core CI machine, not a timing target.
const CLOSE_MARGIN: Duration = Duration::from_secs(4);

fn host_port(url: &str) -> String {
    url.split_once("://").unwrap().1.to_owned()
}

/// Reads `stream` until the server closes it (end of stream or reset);
/// returns what it sent and how long that took. Bounded by 60 s.
async fn until_closed(mut stream: tokio::net::TcpStream) -> (Vec<u8>, Duration) {
    use tokio::io::AsyncReadExt;
    let started = std::time::Instant::now();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(60), async {
        let mut buf = [0u8; 1024];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => answer.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await;
    assert!(read.is_ok(), "the server never closed the socket");
    (answer, started.elapsed())
}

/// A socket to `addr` that sent `bytes` (possibly none).
async fn open_socket(addr: &str, bytes: &[u8]) -> tokio::net::TcpStream {
    use tokio::io::AsyncWriteExt;
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    stream
}

/// Slow-loris and idle sockets against a server with a 1 s header-read
/// timeout and 256 file descriptors (its connection cap clamped to 96 per
/// listener): partial request lines are closed within the timeout on both
/// listeners; with 600 idle or partial sockets open at once (300 per
/// listener, more than the descriptors), `/healthz` still answers (a
/// bounded poll: 12 tries of at most 5 s; it answers once the sockets
/// ahead of it in the backlog have timed out, about 3 s), every flood
/// socket is closed by the server, no accept fails, and a WebSocket
/// session (an upgrade through the capped listener) still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_loris_sockets_are_closed_and_health_keeps_answering() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .wrapped(&["prlimit", "--nofile=256:256", "--"])
            .env("MPC_HEADER_READ_TIMEOUT", "1")
            .start();
        let ws = host_port(&server.ws_url);
        let rest = host_port(&server.rest_url);
        let timeout = Duration::from_secs(1);
        for addr in [&ws, &rest] {
            for partial in [&b"GET /heal"[..], b"GET /healthz HTTP/1.1\r\nHost: x\r\n"] {
                let (answer, waited) = until_closed(open_socket(addr, partial).await).await;
                let answer = String::from_utf8_lossy(&answer);
                assert!(
                    waited < timeout + CLOSE_MARGIN,
                    "{addr}: partial request held {waited:?}"
                );
                assert!(!answer.contains(" 200 "), "{addr}: answered {answer}");
            }
        }

        let mut flood = Vec::new();
        for i in 0..300 {
            for addr in [&ws, &rest] {
                let partial: &[u8] = if i % 2 == 0 {
                    b"GET / HTTP/1.1\r\n"
                } else {
                    b""
                };
                flood.push(open_socket(addr, partial).await);
            }
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(5))
            .build()
            .unwrap();
        let mut answered = false;
        for _ in 0..12 {
            let response = http
                .get(format!("{}/healthz", server.rest_url))
                .send()
                .await;
            if response.is_ok_and(|r| r.status() == reqwest::StatusCode::OK) {
                answered = true;
                break;
            }
        }
        assert!(answered, "/healthz never answered during the flood");
        let closed = futures_util::future::join_all(flood.into_iter().map(until_closed)).await;
        assert_eq!(closed.len(), 600);

        let client = server.client("carl");
        let key = client.keygen().await.unwrap();
        sign_and_verify(&client, &key, b"after the flood").await;
        let logs = server.logs().join("\n");
        assert!(
            logs.contains("connection cap per listener lowered") && logs.contains("\"cap\":96"),
            "{logs}"
        );
        assert!(!logs.contains("accept failed"), "{logs}");
    })
    .await;
}

/// The metric series (name and labels, without the value) of `/metrics`.
async fn metric_series(http: &reqwest::Client, rest_url: &str) -> Vec<String> {
    let text = http
        .get(format!("{rest_url}/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            line.rsplit_once(' ')
                .map_or(line, |(series, _)| series)
                .to_owned()
        })
        .collect()
}

/// Requests with unique methods (60 characters each) and unique paths
/// (unmatched ones, and matched ones with unique key ids) add no metric
/// series: a second round of 300 new unique requests leaves the set of
/// series exactly as the first left it, and no label carries a method or
/// path that was sent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unique_methods_and_paths_add_no_metric_series() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        let http = reqwest::Client::new();
        let base = server.rest_url.clone();
        let bearer = token("mona");
        let round = |tag: &'static str| {
            let http = http.clone();
            let base = base.clone();
            let bearer = bearer.clone();
            async move {
                for i in 0..100 {
                    let unique = format!("{tag}{i:03}{}", "Z".repeat(56));
                    let method = reqwest::Method::from_bytes(unique.as_bytes()).unwrap();
                    let key_id = format!("{unique:0>64}").to_lowercase().replace('z', "f");
                    for (method, path) in [
                        (method, "/healthz".to_owned()),
                        (reqwest::Method::GET, format!("/{unique}")),
                        (reqwest::Method::GET, format!("/v1/keys/{key_id}/audit")),
                    ] {
                        let response = http
                            .request(method, format!("{base}{path}"))
                            .bearer_auth(&bearer)
                            .send()
                            .await
                            .unwrap();
                        assert!(!response.status().is_success(), "{path}");
                    }
                }
            }
        };
        metric_series(&http, &base).await;
        round("A").await;
        let first = metric_series(&http, &base).await;
        round("B").await;
        let second = metric_series(&http, &base).await;
        assert_eq!(first, second, "unique requests added series");
        let requests: Vec<_> = second
            .iter()
            .filter(|s| s.starts_with("mpc_http_requests"))
            .collect();
        assert!(requests.len() <= 8, "{requests:#?}");
        assert!(
            second
                .iter()
                .all(|s| !s.contains("ZZZ") && !s.contains("fff")),
            "{second:#?}"
        );
        for want in [
            r#"method="other",route="/healthz",status="405""#,
            r#"method="GET",route="unmatched",status="404""#,
            r#"method="GET",route="/v1/keys/{key_id}/audit",status="404""#,
        ] {
            assert!(
                second.iter().any(|s| s.contains(want)),
                "{want}: {second:#?}"
            );
        }
        // Probes and scrapes are not logged at info level; API requests are.
        let logs = server.logs();
        assert!(
            logs.iter()
                .any(|l| l.contains("\"request\"") && l.contains("/v1/keys/{key_id}/audit")),
            "{logs:#?}"
        );
        assert!(
            !logs
                .iter()
                .any(|l| l.contains("\"request\"") && l.contains("/metrics")),
            "{logs:#?}"
        );
    })
    .await;
}

/// `GET /healthz` on a fresh connection from `source`: its status, or
/// `None` when the connection was refused or closed without an answer.
async fn health_from(rest_url: &str, source: &str) -> Option<u16> {
    let http = reqwest::Client::builder()
        .local_address(source.parse::<std::net::IpAddr>().unwrap())
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    let response = http.get(format!("{rest_url}/healthz")).send().await.ok()?;
    Some(response.status().as_u16())
}

/// One address may hold only `MPC_MAX_CONNECTIONS_PER_IP` of a listener's
/// connections. With 4 idle sockets open from 127.0.0.1 (and a header-read
/// timeout of 120 s, longer than `until_closed`'s 60 s bound, so that only
/// the cap can close anything), a 5th from 127.0.0.1 is closed by the server
/// without an answer, while 127.0.0.3 is served; once one of the 4 closes,
/// 127.0.0.1 is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_hold_a_listeners_connections() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_MAX_CONNECTIONS_PER_IP", "4")
            .env("MPC_HEADER_READ_TIMEOUT", "120")
            .env("MPC_IDLE_TIMEOUT", "120")
            .start();
        let rest = host_port(&server.rest_url);
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(open_socket(&rest, b"GET /healthz HTTP/1.1\r\n").await);
        }
        // The listener accepts in order: the 4 are counted before the 5th.
        let (answer, _) = until_closed(open_socket(&rest, b"").await).await;
        assert!(answer.is_empty(), "answered: {answer:?}");
        assert_eq!(health_from(&server.rest_url, "127.0.0.1").await, None);
        assert_eq!(health_from(&server.rest_url, "127.0.0.3").await, Some(200));

        drop(held.pop());
        let mut served = false;
        for _ in 0..100 {
            if health_from(&server.rest_url, "127.0.0.1").await == Some(200) {
                served = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            served,
            "127.0.0.1 was not served after one of its sockets closed"
        );
    })
    .await;
}
