//! OT-stack benchmarks (issue: mpc-core foundation).
//!
//! Baseline in the same run: one k256 single-party ECDSA sign. Report the
//! medians as ratios to it. Bytes on the wire are printed once at start.
//!
//! `cargo bench -p mpc-benches --bench ot`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use k256::ecdsa::signature::hazmat::PrehashSigner;
use k256::ecdsa::{Signature, SigningKey};
use k256::elliptic_curve::Field;
use k256::Scalar;
use mpc_core::hazmat::ot::base::{RECEIVER_MSG_BYTES, SENDER_MSG_BYTES};
use mpc_core::hazmat::ot::extension::{self, CHOICE_BYTES, OTE_MSG_BYTES};
use mpc_core::hazmat::ot::pprf::PPRF_MSG_BYTES;
use mpc_core::hazmat::ot::setup::{receiver_setup, OtReceiverKey, OtSenderKey, SenderSetup};
use mpc_core::hazmat::vole::{self, RvoleReceiver, VOLE_MSG_BYTES};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

fn setup_direction(rng: &mut ChaCha20Rng) -> (OtSenderKey, OtReceiverKey) {
    let sid = [7u8; 32];
    let (sender, recv_msg) = SenderSetup::start(rng, &sid);
    let (receiver_key, send_msg, pprf_msg) = receiver_setup(rng, &sid, &recv_msg).unwrap();
    (sender.finish(&send_msg, &pprf_msg).unwrap(), receiver_key)
}

/// One direction of a signature's multiplication: R's round 1, S's round 2,
/// R's round 3. A signature runs two of these, one per direction.
fn rvole_direction(rng: &mut ChaCha20Rng, s: &OtSenderKey, r: &OtReceiverKey, sid: &[u8; 32]) {
    let inputs = [Scalar::random(&mut *rng), Scalar::random(&mut *rng)];
    let (receiver, ote_msg) = RvoleReceiver::start(rng, r, sid);
    let (c, vole_msg) = vole::send(rng, s, sid, &ote_msg, &inputs).unwrap();
    let d = receiver.finish(r, &vole_msg).unwrap();
    black_box((c, d));
}

fn print_sizes() {
    eprintln!("bytes on the wire (per direction):");
    eprintln!("  setup: BotRecvMsg {RECEIVER_MSG_BYTES} (S->R), BotSendMsg {SENDER_MSG_BYTES} + PprfMsg {PPRF_MSG_BYTES} (R->S)");
    eprintln!("  per signature: OteMsg {OTE_MSG_BYTES} (R->S) + VoleMsg {VOLE_MSG_BYTES} (S->R)");
    eprintln!(
        "  per party per signature (one of each): {} bytes; keygen OT setup per party: {} bytes",
        OTE_MSG_BYTES + VOLE_MSG_BYTES,
        RECEIVER_MSG_BYTES + SENDER_MSG_BYTES + PPRF_MSG_BYTES
    );
}

fn benches(c: &mut Criterion) {
    print_sizes();
    let mut rng = ChaCha20Rng::seed_from_u64(1);

    let signing_key = SigningKey::random(&mut rng);
    let prehash = [0x42u8; 32];
    c.bench_function("baseline/k256_ecdsa_sign", |b| {
        b.iter(|| {
            let sig: Signature = signing_key.sign_prehash(black_box(&prehash)).unwrap();
            black_box(sig)
        })
    });

    let mut group = c.benchmark_group("ot");
    group.sample_size(20);
    group.bench_function("setup_one_direction_both_sides", |b| {
        b.iter(|| black_box(setup_direction(&mut rng)))
    });
    group.finish();

    let (s_ab, r_ab) = setup_direction(&mut rng);
    let (s_ba, r_ba) = setup_direction(&mut rng);
    let mut counter = 0u64;
    let mut group = c.benchmark_group("ot");
    group.bench_function("rvole_one_direction_both_sides", |b| {
        b.iter(|| {
            counter += 1;
            let mut sid = [0u8; 32];
            sid[..8].copy_from_slice(&counter.to_be_bytes());
            rvole_direction(&mut rng, &s_ab, &r_ab, &sid);
        })
    });
    group.bench_function("rvole_signature_both_directions_both_sides", |b| {
        b.iter(|| {
            counter += 1;
            let mut sid = [0u8; 32];
            sid[..8].copy_from_slice(&counter.to_be_bytes());
            rvole_direction(&mut rng, &s_ab, &r_ab, &sid);
            rvole_direction(&mut rng, &s_ba, &r_ba, &sid);
        })
    });
    let choices = [0x5au8; CHOICE_BYTES];
    group.bench_function("extension_receiver", |b| {
        b.iter(|| {
            black_box(extension::receive(
                &mut rng,
                r_ab.seeds(),
                &[1; 32],
                &choices,
            ))
        })
    });
    let (ote_msg, _) = extension::receive(&mut rng, r_ab.seeds(), &[1; 32], &choices);
    group.bench_function("extension_sender", |b| {
        b.iter(|| black_box(extension::send(s_ab.seeds(), &[1; 32], &ote_msg).unwrap()))
    });
    group.finish();
}

criterion_group!(ot, benches);
criterion_main!(ot);
