//! The WebSocket transport's cost: key generation and signing between a
//! `mpc-transport-ws` client and server over loopback, against the same
//! protocols in-process (`mpc_core::local::run_pair`), in one run.
//!
//! Each WebSocket iteration is a whole session: TCP connect, upgrade,
//! opening, the protocol's rounds, both outcomes, close. Two runtimes:
//! - `ws_1thread`: client and server tasks on one thread, so the parties'
//!   compute is serialised as in `run_pair`; the difference to `in_process`
//!   is the transport's cost;
//! - `ws_2threads`: two worker threads, so the parties compute in parallel
//!   as on two machines; this is the latency a client sees on loopback.
//!
//! Frames and bytes per session are printed once at start.
//!
//! `cargo bench -p mpc-benches --bench transport`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyId, KeyShare, Prehash, Sign};
use mpc_transport_ws::server::accept;
use mpc_transport_ws::{serve, Client, Operation, Rejection, ServerSession, TransportConfig};
use mpc_transport_ws::{Frames, Traffic};
use rand_core::OsRng;
use tokio::runtime::{Builder, Runtime};

type Shares = Arc<Mutex<HashMap<KeyId, Arc<KeyShare>>>>;

/// The server party: keygen (its shares are dropped, to keep memory flat)
/// and signing with the shares in `shares`.
async fn handle<F: Frames>(
    mut session: ServerSession<F>,
    shares: Shares,
) -> Result<(), mpc_transport_ws::TransportError> {
    let opening = session.opening().clone();
    match opening.operation {
        Operation::Keygen => {
            let mut dkg = Dkg::new(Role::B, opening.context());
            let share = session.run(&mut dkg, &mut OsRng).await?;
            black_box(share);
        }
        Operation::Sign {
            key_id, prehash, ..
        } => {
            let share = shares.lock().unwrap().get(&key_id).cloned();
            let Some(share) = share else {
                return Err(session.reject(Rejection::NOT_FOUND).await);
            };
            session
                .run(&mut Sign::new(&share, prehash), &mut OsRng)
                .await?;
        }
        _ => return Err(session.reject(Rejection::UNSUPPORTED_OPERATION).await),
    }
    session.finish().await
}

/// Starts a server on `runtime`; returns its URL.
fn start_server(runtime: &Runtime, shares: Shares) -> String {
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                stream.set_nodelay(true).unwrap();
                let shares = shares.clone();
                tokio::spawn(async move {
                    let config = TransportConfig::default();
                    let (socket, ()) = accept(stream, &config, |_| Ok(())).await.unwrap();
                    serve(socket, config, |session| handle(session, shares))
                        .await
                        .unwrap();
                });
            }
        });
        url
    })
}

fn report(name: &str, traffic: Traffic) {
    eprintln!(
        "{name} over websocket, client side: sent {} bytes in {} frames ({} per frame), \
         received {} bytes in {} frames ({} per frame)",
        traffic.bytes_sent,
        traffic.frames_sent,
        traffic.bytes_sent / traffic.frames_sent.max(1),
        traffic.bytes_received,
        traffic.frames_received,
        traffic.bytes_received / traffic.frames_received.max(1),
    );
}

fn benches(c: &mut Criterion) {
    let one = Builder::new_current_thread().enable_all().build().unwrap();
    let two = Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();

    // One key, both shares in this process; the server's goes to both
    // servers' stores.
    let (a, b, _) = run_pair(
        &mut OsRng,
        &mut Dkg::new(Role::A, b"bench"),
        &mut Dkg::new(Role::B, b"bench"),
    )
    .unwrap();
    let (a, b) = (Arc::new(a), Arc::new(b));
    let shares: Shares = Arc::new(Mutex::new(HashMap::from([(*a.key_id(), b.clone())])));
    let client_one = Client::new(start_server(&one, shares.clone()));
    let client_two = Client::new(start_server(&two, shares));
    let prehash = Prehash::sha256(b"bench");

    let (_, traffic) = two
        .block_on(client_two.run(Operation::Keygen, |opening| {
            Dkg::new(Role::A, opening.context())
        }))
        .unwrap();
    report("keygen", traffic);
    let sign = Operation::Sign {
        key_id: *a.key_id(),
        epoch: a.epoch(),
        prehash,
        path: Default::default(),
    };
    let (signed, traffic) = two
        .block_on(client_two.run(sign, |_| Sign::new(&a, prehash)))
        .unwrap();
    report("sign", traffic);
    black_box(signed);

    let mut group = c.benchmark_group("transport/keygen");
    group.sample_size(10);
    group.bench_function("in_process", |bench| {
        bench.iter(|| {
            black_box(
                run_pair(
                    &mut OsRng,
                    &mut Dkg::new(Role::A, b"bench"),
                    &mut Dkg::new(Role::B, b"bench"),
                )
                .unwrap(),
            )
        })
    });
    group.bench_function("ws_1thread", |bench| {
        bench.iter(|| black_box(one.block_on(client_one.keygen()).unwrap()))
    });
    group.bench_function("ws_2threads", |bench| {
        bench.iter(|| {
            // The client runs on a worker thread too, as the server does.
            let client = client_two.clone();
            let task = two.spawn(async move { client.keygen().await });
            black_box(two.block_on(task).unwrap().unwrap())
        })
    });
    group.finish();

    let mut group = c.benchmark_group("transport/sign");
    group.sample_size(30);
    group.bench_function("in_process", |bench| {
        bench.iter(|| {
            black_box(
                run_pair(
                    &mut OsRng,
                    &mut Sign::new(&a, prehash),
                    &mut Sign::new(&b, prehash),
                )
                .unwrap(),
            )
        })
    });
    group.bench_function("ws_1thread", |bench| {
        bench.iter(|| black_box(one.block_on(client_one.sign(&a, prehash)).unwrap()))
    });
    group.bench_function("ws_2threads", |bench| {
        bench.iter(|| {
            let (client, a) = (client_two.clone(), a.clone());
            let task = two.spawn(async move { client.sign(&a, prehash).await });
            black_box(two.block_on(task).unwrap().unwrap())
        })
    });
    group.finish();
}

criterion_group!(transport, benches);
criterion_main!(transport);
