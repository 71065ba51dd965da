//! DKG, signing, presigning and online signing, both parties in one process
//! (the sum of both parties' compute).
//!
//! Baseline in the same run: one k256 single-party ECDSA sign. Bytes on the
//! wire per party are printed once at start.
//!
//! `cargo bench -p mpc-benches --bench protocols`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use k256::ecdsa::signature::hazmat::PrehashSigner;
use k256::ecdsa::{Signature, SigningKey};
use mpc_core::local::{run_pair, Traffic};
use mpc_core::sign::ClaimSet;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, OnlineSign, Prehash, Presign, Presignature, Sign};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn dkg(rng: &mut ChaCha20Rng) -> (KeyShare, KeyShare, Traffic) {
    run_pair(
        rng,
        &mut Dkg::new(Role::A, b"bench"),
        &mut Dkg::new(Role::B, b"bench"),
    )
    .unwrap()
}

/// The online step with a fresh in-memory claim set (its cost, one B-tree
/// insert, is part of what is measured).
fn online(share: &KeyShare, presignature: Presignature, prehash: Prehash) -> OnlineSign {
    OnlineSign::new(share, presignature, prehash, &mut ClaimSet::new()).unwrap()
}

fn report(name: &str, traffic: Traffic) {
    eprintln!(
        "{name}: A sends {} bytes in {} messages, B sends {} bytes in {} messages",
        traffic.bytes[0], traffic.messages[0], traffic.bytes[1], traffic.messages[1]
    );
}

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (a, b, traffic) = dkg(&mut rng);
    report("dkg", traffic);
    let prehash = Prehash::sha256(b"bench");
    let (_, _, traffic) = run_pair(
        &mut rng,
        &mut Sign::new(&a, prehash),
        &mut Sign::new(&b, prehash),
    )
    .unwrap();
    report("sign", traffic);
    let (pa, pb, traffic) =
        run_pair(&mut rng, &mut Presign::new(&a), &mut Presign::new(&b)).unwrap();
    report("presign", traffic);
    let (_, _, traffic) = run_pair(
        &mut rng,
        &mut online(&a, pa, prehash),
        &mut online(&b, pb, prehash),
    )
    .unwrap();
    report("online sign", traffic);

    let signing_key = SigningKey::random(&mut rng);
    c.bench_function("baseline/k256_ecdsa_sign", |bench| {
        bench.iter(|| {
            let sig: Signature = signing_key
                .sign_prehash(black_box(prehash.as_bytes()))
                .unwrap();
            black_box(sig)
        })
    });

    let mut group = c.benchmark_group("protocols");
    group.sample_size(20);
    group.bench_function("dkg_both_parties", |bench| {
        bench.iter(|| black_box(dkg(&mut rng)))
    });
    group.finish();

    let mut group = c.benchmark_group("protocols");
    group.bench_function("sign_both_parties", |bench| {
        bench.iter(|| {
            black_box(
                run_pair(
                    &mut rng,
                    &mut Sign::new(&a, prehash),
                    &mut Sign::new(&b, prehash),
                )
                .unwrap(),
            )
        })
    });
    group.bench_function("presign_both_parties", |bench| {
        bench.iter(|| {
            black_box(run_pair(&mut rng, &mut Presign::new(&a), &mut Presign::new(&b)).unwrap())
        })
    });
    group.bench_function("online_sign_both_parties", |bench| {
        bench.iter_batched(
            || {
                run_pair(
                    &mut ChaCha20Rng::seed_from_u64(7),
                    &mut Presign::new(&a),
                    &mut Presign::new(&b),
                )
                .unwrap()
            },
            |(pa, pb, _)| {
                let mut rng = ChaCha20Rng::seed_from_u64(8);
                black_box(
                    run_pair(
                        &mut rng,
                        &mut online(&a, pa, prehash),
                        &mut online(&b, pb, prehash),
                    )
                    .unwrap(),
                )
            },
            criterion::BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(protocols, benches);
criterion_main!(protocols);
