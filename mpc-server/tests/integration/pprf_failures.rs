//! Repeated GGM-tree (PPRF) proof failures are counted per key and owner
//! and alert past the threshold (PROTOCOL.md §5.3), against the real binary.
//!
//! The attack: a client that builds its direction's OT-setup trees tampers
//! with them and retries. Each abort or success of the server's setup tells
//! it a choice bit; a retried success keeps material whose bits it guessed.
//! The server cannot stop a client from failing, but it must see the
//! pattern: each failure is counted for (owner, key) (keygen: the owner
//! alone), and from the threshold on each one logs a warning and bumps
//! `mpc_pprf_failure_alerts_total`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

use crate::common;

use std::time::Duration;

use common::*;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, Protocol, Refresh};
use mpc_transport_ws::{run_client, Client, CloseCode, Opening, Operation, TransportError};
use rand_core::OsRng;

/// Runs `operation` as a client whose third protocol message (round 3 of
/// key generation and refresh: `BotSendMsg || PprfMsg`) has its last byte,
/// the last tree's check digest, flipped.
async fn tampered<P: Protocol>(
    client: &Client,
    operation: Operation,
    build: impl FnOnce(&Opening) -> P,
) -> TransportError {
    let opening = Opening::new(operation, &mut OsRng);
    let mut protocol = build(&opening);
    let frames = FlipLastByte {
        inner: client.connect().await.unwrap(),
        message: 3,
        seen: 0,
    };
    run_client(frames, &opening, &mut protocol, &mut OsRng, client.config())
        .await
        .map(|_| ())
        .unwrap_err()
}

async fn tampered_keygen(client: &Client) -> TransportError {
    tampered(client, Operation::Keygen, |opening| {
        Dkg::new(Role::A, opening.context())
    })
    .await
}

/// A tampered refresh. The server releases the key's refresh lease just
/// after the failed session ends, so an attempt right after the previous
/// one may find it still held (4106): retried, bounded.
async fn tampered_refresh(client: &Client, share: &KeyShare) -> TransportError {
    for _ in 0..400 {
        let operation = Operation::Refresh {
            key_id: *share.key_id(),
            epoch: share.epoch(),
        };
        let error = tampered(client, operation, |opening| {
            Refresh::new(share, opening.context())
        })
        .await;
        if error.close_code() != Some(CloseCode(REFRESH_IN_PROGRESS)) {
            return error;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("the refresh lease was never released");
}

const REFRESH_IN_PROGRESS: u16 = 4106;

async fn metrics(server: &TestServer) -> String {
    reqwest::get(format!("{}/metrics", server.rest_url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Waits (bounded) until the metrics show each of `wants`.
async fn metrics_showing(server: &TestServer, wants: &[&str]) -> String {
    let mut text = String::new();
    for _ in 0..400 {
        text = metrics(server).await;
        if wants.iter().all(|want| text.contains(want)) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("metrics never showed {wants:?}:\n{text}");
}

/// The server's log lines (JSON) that contain every one of `parts`.
fn log_lines(server: &TestServer, parts: &[&str]) -> Vec<String> {
    server
        .logs()
        .into_iter()
        .filter(|line| parts.iter().all(|part| line.contains(part)))
        .collect()
}

/// Waits (bounded) until `n` log lines contain every one of `parts`.
async fn logged(server: &TestServer, parts: &[&str], n: usize) -> Vec<String> {
    for _ in 0..400 {
        let lines = log_lines(server, parts);
        if lines.len() >= n {
            return lines;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("never logged {n} lines with {parts:?}");
}

const WARNING: &str = "repeated OT-setup GGM-tree (PPRF) proof failures";

/// Keygen: two tampered attempts with threshold 2. The first is counted
/// (no alert), the second alerts: a warning naming the owner, the count
/// and the threshold, and the alert counter. The client's session ends as
/// an abort (not a ban: the setup material is discarded), and another
/// owner's honest keygen is not counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_keygen_trees_are_counted_and_alert_at_the_threshold() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_PPRF_FAILURE_THRESHOLD", "2")
            .start();
        let mallory = server.client("mallory");
        let error = tampered_keygen(&mallory).await;
        assert_eq!(
            error.close_code(),
            Some(CloseCode::PROTOCOL_ABORT),
            "{error}"
        );
        let text = metrics_showing(
            &server,
            &["mpc_pprf_proof_failures_total{operation=\"keygen\"} 1"],
        )
        .await;
        assert!(!text.contains("mpc_pprf_failure_alerts_total{"), "{text}");
        assert!(log_lines(&server, &[WARNING]).is_empty());

        let honest = server.client("alice").keygen().await.unwrap();
        assert_eq!(honest.epoch(), 0);

        let error = tampered_keygen(&mallory).await;
        assert_eq!(
            error.close_code(),
            Some(CloseCode::PROTOCOL_ABORT),
            "{error}"
        );
        metrics_showing(
            &server,
            &[
                "mpc_pprf_proof_failures_total{operation=\"keygen\"} 2",
                "mpc_pprf_failure_alerts_total{operation=\"keygen\"} 1",
            ],
        )
        .await;
        let warning = &logged(&server, &[WARNING], 1).await[0];
        for part in [
            "\"WARN\"",
            "\"owner\":\"mallory\"",
            "\"failures\":2",
            "\"threshold\":2",
            "\"operation\":\"keygen\"",
        ] {
            assert!(warning.contains(part), "{part} missing: {warning}");
        }
        // The session's own failure names the PPRF proof (the error says so).
        logged(&server, &["session failed", "(PPRF) proof failed"], 2).await;
        server.kill();
    })
    .await;
}

/// Refresh: counts are per key and owner. Two tampered refreshes of one key
/// alert (threshold 2); one of the same owner's other key does not; the
/// key survives (an abort is not a ban) and refreshes honestly afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tampered_refresh_trees_are_counted_per_key_and_owner() {
    bounded(async {
        let db = Db::sqlite();
        let server = Launch::new(&db)
            .env("MPC_PPRF_FAILURE_THRESHOLD", "2")
            .start();
        let bob = server.client("bob");
        let first = bob.keygen().await.unwrap();
        let second = bob.keygen().await.unwrap();
        let key = first.key_id().to_string();
        let other_key = second.key_id().to_string();

        for n in 1..=2 {
            let error = tampered_refresh(&bob, &first).await;
            assert_eq!(
                error.close_code(),
                Some(CloseCode::PROTOCOL_ABORT),
                "{error}"
            );
            let want = format!("mpc_pprf_proof_failures_total{{operation=\"refresh\"}} {n}");
            metrics_showing(&server, &[&want]).await;
        }
        let error = tampered_refresh(&bob, &second).await;
        assert_eq!(
            error.close_code(),
            Some(CloseCode::PROTOCOL_ABORT),
            "{error}"
        );
        let text = metrics_showing(
            &server,
            &["mpc_pprf_proof_failures_total{operation=\"refresh\"} 3"],
        )
        .await;
        assert!(
            text.contains("mpc_pprf_failure_alerts_total{operation=\"refresh\"} 1"),
            "{text}"
        );
        let warnings = logged(&server, &[WARNING], 1).await;
        assert_eq!(warnings.len(), 1, "{warnings:?}");
        assert!(warnings[0].contains(&key), "{}", warnings[0]);
        assert!(!warnings[0].contains(&other_key), "{}", warnings[0]);
        assert!(warnings[0].contains("\"owner\":\"bob\""), "{}", warnings[0]);

        // Still usable: the failed setups were discarded, nothing banned.
        sign_and_verify(&bob, &first, b"after the probes").await;
        let mut hook =
            |_: &Refresh<'_>| std::future::ready(Ok::<(), mpc_transport_ws::Rejection>(()));
        let mut refreshed = bob.refresh(&first, &mut hook).await;
        for _ in 0..400 {
            match &refreshed {
                Err(e) if e.close_code() == Some(CloseCode(REFRESH_IN_PROGRESS)) => {
                    tokio::time::sleep(Duration::from_millis(25)).await;
                    refreshed = bob.refresh(&first, &mut hook).await;
                }
                _ => break,
            }
        }
        assert_eq!(refreshed.unwrap().epoch(), 1);
        server.kill();
    })
    .await;
}

/// The counts are in memory (documented in README and PROTOCOL.md §5.3): a
/// restarted process starts from zero, so the first failure after a
/// restart does not alert even with threshold 2 and one failure before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counts_are_per_process_and_reset_by_a_restart() {
    bounded(async {
        let db = Db::sqlite();
        let launch = || Launch::new(&db).env("MPC_PPRF_FAILURE_THRESHOLD", "2");
        let server = launch().start();
        tampered_keygen(&server.client("eve")).await;
        metrics_showing(
            &server,
            &["mpc_pprf_proof_failures_total{operation=\"keygen\"} 1"],
        )
        .await;
        server.kill();
        let server = launch().start();
        tampered_keygen(&server.client("eve")).await;
        let text = metrics_showing(
            &server,
            &["mpc_pprf_proof_failures_total{operation=\"keygen\"} 1"],
        )
        .await;
        assert!(!text.contains("mpc_pprf_failure_alerts_total{"), "{text}");
        server.kill();
    })
    .await;
}
