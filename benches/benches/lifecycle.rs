//! Key life-cycle operations: refresh, BIP32 derivation, verifiable backup,
//! export. Baseline in the same run: one k256 single-party ECDSA sign.
//!
//! `cargo bench -p mpc-benches --bench lifecycle`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use k256::ecdsa::signature::hazmat::PrehashSigner;
use k256::ecdsa::{Signature, SigningKey};
use mpc_core::backup::{Backup, BACKUP_BYTES};
use mpc_core::export::{export_share, import_export, EXPORT_BYTES};
use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{DerivationPath, Dkg, Refresh};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn benches(c: &mut Criterion) {
    let mut rng = ChaCha20Rng::seed_from_u64(1);
    let (a, b, _) = run_pair(
        &mut rng,
        &mut Dkg::new(Role::A, b"bench"),
        &mut Dkg::new(Role::B, b"bench"),
    )
    .unwrap();
    let (_, _, traffic) = run_pair(
        &mut rng,
        &mut Refresh::new(&a, b"bench"),
        &mut Refresh::new(&b, b"bench"),
    )
    .unwrap();
    eprintln!(
        "refresh: A sends {} bytes in {} messages, B sends {} bytes in {} messages",
        traffic.bytes[0], traffic.messages[0], traffic.bytes[1], traffic.messages[1]
    );
    eprintln!("backup: {BACKUP_BYTES} bytes; export ciphertext: {EXPORT_BYTES} bytes");

    let signing_key = SigningKey::random(&mut rng);
    c.bench_function("baseline/k256_ecdsa_sign", |bench| {
        bench.iter(|| {
            let sig: Signature = signing_key.sign_prehash(black_box(&[7u8; 32])).unwrap();
            black_box(sig)
        })
    });

    let mut group = c.benchmark_group("lifecycle");
    group.sample_size(20);
    group.bench_function("refresh_both_parties", |bench| {
        bench.iter(|| {
            black_box(
                run_pair(
                    &mut rng,
                    &mut Refresh::new(&a, b"bench"),
                    &mut Refresh::new(&b, b"bench"),
                )
                .unwrap(),
            )
        })
    });
    let recovery = k256::SecretKey::random(&mut rng);
    group.bench_function("backup_prove", |bench| {
        bench.iter(|| black_box(Backup::create(&mut rng, &b, &recovery.public_key())))
    });
    let backup = Backup::create(&mut rng, &b, &recovery.public_key());
    let public_share = b.public_share(Role::B);
    group.bench_function("backup_verify", |bench| {
        bench.iter(|| {
            backup
                .verify(black_box(&public_share), &recovery.public_key())
                .unwrap()
        })
    });
    group.finish();

    let mut group = c.benchmark_group("lifecycle");
    let onetime = k256::SecretKey::random(&mut rng);
    group.bench_function("export_encrypt_and_import", |bench| {
        bench.iter(|| {
            let ciphertext = export_share(&mut rng, &b, &onetime.public_key()).unwrap();
            black_box(import_export(&a, &onetime, &ciphertext).unwrap())
        })
    });
    let xpub = a.xpub();
    group.bench_function("bip32_one_child", |bench| {
        bench.iter(|| black_box(xpub.derive_child(black_box(5)).unwrap()))
    });
    let path: DerivationPath = "m/44/60/0/0/5".parse().unwrap();
    group.bench_function("bip32_path_depth_5", |bench| {
        bench.iter(|| black_box(xpub.derive_path(black_box(&path)).unwrap()))
    });
    group.finish();
}

criterion_group!(lifecycle, benches);
criterion_main!(lifecycle);
