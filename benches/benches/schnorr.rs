//! Two-party BIP340 signing (PROTOCOL.md §20), both parties in one process
//! (the sum of both parties' compute), at the root key and with the BIP341
//! Taproot tweak under a BIP32 path.
//!
//! Baseline in the same run: one k256 single-party BIP340 sign. Bytes on
//! the wire per party are printed once at start.
//!
//! `cargo bench -p mpc-benches --bench schnorr`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{DerivationPath, Dkg, KeyShare, SignSchnorr, Taproot};
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
    group.finish();
}

criterion_group!(schnorr, benches);
criterion_main!(schnorr);
