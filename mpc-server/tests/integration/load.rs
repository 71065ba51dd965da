//! A small load test on the real binary: 50 concurrent signing sessions
//! (and 50 concurrent key generations before them) all succeed, every
//! signature verifies, and the server's open-session count returns to
//! zero afterwards.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use common::*;
use mpc_core::Prehash;

const SESSIONS: usize = 50;

async fn open_sessions(rest_url: &str) -> u64 {
    let text = reqwest::get(format!("{rest_url}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix("mpc_open_sessions "))
        .expect("no mpc_open_sessions metric")
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_signing_sessions() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db).start();
        // One user per session: the per-owner session limit is not the
        // subject here.
        let clients: Vec<_> = (0..SESSIONS)
            .map(|i| server.client(&format!("load-{i}")))
            .collect();
        let keygens = clients.iter().map(|client| client.keygen());
        let shares: Vec<_> = futures_util::future::join_all(keygens)
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();
        let signs = clients
            .iter()
            .zip(&shares)
            .enumerate()
            .map(|(i, (client, share))| {
                let prehash = Prehash::sha256(format!("load {i}").as_bytes());
                async move { (prehash, client.sign(share, prehash).await) }
            });
        let results = futures_util::future::join_all(signs).await;
        for ((prehash, result), share) in results.iter().zip(&shares) {
            let out = result.as_ref().unwrap();
            verify_with_libsecp(&share.public_key(), prehash, out);
        }
        // Sessions close just after the clients return: wait (bounded) for
        // the count to drain.
        let mut open = u64::MAX;
        for _ in 0..400 {
            open = open_sessions(&server.rest_url).await;
            if open == 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(25)).await;
        }
        assert_eq!(open, 0, "sessions left open");
        let metrics = reqwest::get(format!("{}/metrics", server.rest_url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(
            metrics.contains(&format!(
                "mpc_sessions_total{{protocol=\"sign\",outcome=\"ok\"}} {SESSIONS}"
            )),
            "{metrics}"
        );
    })
    .await;
}
