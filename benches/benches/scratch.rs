#![allow(missing_docs, clippy::unwrap_used)]
use criterion::{black_box, criterion_group, criterion_main, Criterion};
use k256::elliptic_curve::hash2curve::{ExpandMsgXmd, GroupDigest};
use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::Field;
use k256::{ProjectivePoint, Scalar, Secp256k1};
use rand_chacha::rand_core::SeedableRng;
fn b(c: &mut Criterion) {
    let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
    let s = Scalar::random(&mut rng);
    let p = ProjectivePoint::mul_by_generator(&Scalar::random(&mut rng));
    c.bench_function("h2c", |bb| {
        bb.iter(|| {
            Secp256k1::hash_from_bytes::<ExpandMsgXmd<sha2::Sha256>>(
                &[black_box(b"hello world 1234567890")],
                &[b"DST"],
            )
            .unwrap()
        })
    });
    c.bench_function("fixed", |bb| {
        bb.iter(|| ProjectivePoint::mul_by_generator(black_box(&s)))
    });
    c.bench_function("var", |bb| bb.iter(|| black_box(p) * black_box(s)));
    c.bench_function("encode", |bb| {
        bb.iter(|| mpc_core::wire::encode_point(black_box(&p)))
    });
    let e = mpc_core::wire::encode_point(&p);
    c.bench_function("decode", |bb| {
        bb.iter(|| mpc_core::wire::decode_point(black_box(&e)).unwrap())
    });
    c.bench_function("h2s", |bb| {
        bb.iter(|| {
            mpc_core::transcript::hash_to_scalar(
                mpc_core::transcript::tags::TEST,
                &[black_box(b"abc")],
            )
        })
    });
    let w = [7u8; 64];
    c.bench_function("reduce_wide", |bb| {
        bb.iter(|| mpc_core::transcript::reduce_wide(black_box(&w)))
    });
    let key = [3u8; 16];
    c.bench_function("prg192", |bb| {
        bb.iter(|| {
            let mut o = [0u8; 192];
            mpc_core::hazmat::prg::fill(black_box(&key), &[0u8; 16], &mut o);
            o
        })
    });
    c.bench_function("prg80", |bb| {
        bb.iter(|| {
            let mut o = [0u8; 80];
            mpc_core::hazmat::prg::fill(black_box(&key), &[0u8; 16], &mut o);
            o
        })
    });
    let pre = mpc_core::transcript::WideTranscript::<1>::new(mpc_core::transcript::tags::TEST)
        .chain(&[1u8; 32]);
    c.bench_function("sha_prefix", |bb| {
        bb.iter(|| {
            let mut h = pre.clone();
            h.append_u32(5);
            h.append(black_box(&key));
            h.finalize_array::<16>()
        })
    });
    c.bench_function("scalar_mul", |bb| bb.iter(|| black_box(s) * black_box(s)));
}
criterion_group!(g, b);
criterion_main!(g);
