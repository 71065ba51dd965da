//! Two-party BIP340 signing (PROTOCOL.md §20), both parties in one process
//! (the sum of both parties' compute), at the root key and with the BIP341
//! Taproot tweak under a BIP32 path; and presigned (PROTOCOL.md §20.5): the
//! nonce round alone, and the online round alone (a fresh presignature per
//! iteration, made outside the timing).
//!
//! Baseline in the same run: one k256 single-party BIP340 sign. Bytes on
//! the wire per party are printed once at start.
//!
//! `cargo bench -p mpc-benches --bench schnorr`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, BatchSize, Criterion};
use mpc_core::local::run_pair;
use mpc_core::sign::ClaimSet;
use mpc_core::wire::Role;
use mpc_core::{
    DerivationPath, Dkg, KeyShare, SchnorrOnline, SchnorrPresign, SchnorrPresignature, SignSchnorr,
    Taproot,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn sign(
    rng: &mut ChaCha20Rng,
    (a, b): (&KeyShare, &KeyShare),
    path: &DerivationPath,
    taproot: Taproot,
) -> mpc_core::local::Traffic {
    let message = [7u8; 32];
    let (out_a, _, traffic) = run_pair(
        rng,
        &mut SignSchnorr::new(a, &message, path, taproot).unwrap(),
        &mut SignSchnorr::new(b, &message, path, taproot).unwrap(),
    )
    .unwrap();
    black_box(out_a);
    traffic
}

type Pair = (SchnorrPresignature, SchnorrPresignature);

fn presign(
    rng: &mut ChaCha20Rng,
    (a, b): (&KeyShare, &KeyShare),
) -> (Pair, mpc_core::local::Traffic) {
    let root = DerivationPath::root();
    let (pa, pb, traffic) = run_pair(
        rng,
        &mut SchnorrPresign::new(a, &root, Taproot::Off).unwrap(),
        &mut SchnorrPresign::new(b, &root, Taproot::Off).unwrap(),
    )
    .unwrap();
    ((pa, pb), traffic)
}

fn online(
    rng: &mut ChaCha20Rng,
    (a, b): (&KeyShare, &KeyShare),
    (pa, pb): Pair,
) -> mpc_core::local::Traffic {
    let root = DerivationPath::root();
    let message = [7u8; 32];
    let (out_a, _, traffic) = run_pair(
        rng,
        &mut SchnorrOnline::new(a, pa, &message, &root, Taproot::Off, &mut ClaimSet::new())
            .unwrap(),
        &mut SchnorrOnline::new(b, pb, &message, &root, Taproot::Off, &mut ClaimSet::new())
            .unwrap(),
    )
    .unwrap();
    black_box(out_a);
    traffic
}

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (a, b, _) = run_pair(
        &mut rng,
        &mut Dkg::new(Role::A, b"bench"),
        &mut Dkg::new(Role::B, b"bench"),
    )
    .unwrap();
    let root = DerivationPath::root();
    let path: DerivationPath = "m/0/5".parse().unwrap();
    let traffic = sign(&mut rng, (&a, &b), &root, Taproot::Off);
    eprintln!(
        "sign-bip340: A sends {} bytes in {} messages, B sends {} bytes in {} messages",
        traffic.bytes[0], traffic.messages[0], traffic.bytes[1], traffic.messages[1]
    );

    let (pair, pre) = presign(&mut rng, (&a, &b));
    let on = online(&mut rng, (&a, &b), pair);
    eprintln!(
        "presign-bip340: A sends {} bytes in {} messages; online-bip340: A sends {} bytes in {} messages",
        pre.bytes[0], pre.messages[0], on.bytes[0], on.messages[0]
    );

    let signing_key = k256::schnorr::SigningKey::random(&mut rng);
    let message = [7u8; 32];
    c.bench_function("baseline/k256_bip340_sign", |bench| {
        bench.iter(|| {
            let sig = signing_key
                .sign_raw(black_box(&message), &[0u8; 32])
                .unwrap();
            black_box(sig)
        })
    });
    let mut group = c.benchmark_group("schnorr");
    group.bench_function("sign_both_parties", |bench| {
        bench.iter(|| sign(&mut rng, (&a, &b), &root, Taproot::Off))
    });
    group.bench_function("sign_taproot_at_path_both_parties", |bench| {
        bench.iter(|| sign(&mut rng, (&a, &b), &path, Taproot::KeyPathOnly))
    });
    group.bench_function("presign_both_parties", |bench| {
        bench.iter(|| presign(&mut rng, (&a, &b)))
    });
    let mut setup_rng = ChaCha20Rng::seed_from_u64(2);
    group.bench_function("online_both_parties", |bench| {
        bench.iter_batched(
            || presign(&mut setup_rng, (&a, &b)).0,
            |pair| online(&mut rng, (&a, &b), pair),
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group!(schnorr, benches);
criterion_main!(schnorr);
