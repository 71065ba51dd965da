//! A backup prover written from PROTOCOL.md §17 that can cheat: in chosen
//! rows both halves hold garbage instead of an encrypted split of the share.
//! The Fiat-Shamir challenge is computed honestly over the cheating rows, so
//! only the verifier's per-row checks can notice.

use k256::elliptic_curve::Field;
use k256::{ProjectivePoint, Scalar};
use mpc_core::backup::ROWS;
use mpc_core::transcript::{hash_to_scalar, tags, WideTranscript};
use mpc_core::wire::{encode_point, encode_scalar};
use rand_chacha::rand_core::RngCore;
use rand_chacha::ChaCha20Rng;

use super::spec::{g_mul, Parts};

fn label(parts: &Parts) -> Vec<u8> {
    [
        [1u8].as_slice(),
        &parts.key_id,
        &[parts.role.as_u8()],
        &parts.epoch.to_be_bytes(),
    ]
    .concat()
}

/// The encoded backup of `parts`' share to `recovery`; rows in `bad_rows`
/// encrypt random values in both halves.
pub fn prove(
    rng: &mut ChaCha20Rng,
    parts: &Parts,
    recovery: &ProjectivePoint,
    bad_rows: &[usize],
) -> Vec<u8> {
    let label = label(parts);
    let x = parts.secret;
    let q = g_mul(&x);
    struct Row {
        x0_point: [u8; 33],
        r_points: [[u8; 33]; 2],
        c: [Scalar; 2],
        seeds: [[u8; 32]; 2],
    }
    let mut rows = Vec::with_capacity(ROWS);
    let mut commitments = Vec::new();
    for i in 0..ROWS {
        let x0 = Scalar::random(&mut *rng);
        let halves = [x0, x - x0];
        let mut seeds = [[0u8; 32]; 2];
        let mut r_points = [[0u8; 33]; 2];
        let mut c = [Scalar::ZERO; 2];
        for b in 0..2usize {
            rng.fill_bytes(&mut seeds[b]);
            let index = u32::try_from(i).unwrap().to_be_bytes();
            let half = [u8::try_from(b).unwrap()];
            let r = hash_to_scalar(tags::BACKUP_R, &[&seeds[b], &label, &index, &half]);
            r_points[b] = encode_point(&g_mul(&r));
            let pad = hash_to_scalar(
                tags::BACKUP_PAD,
                &[
                    &encode_point(&(*recovery * r)),
                    &r_points[b],
                    &label,
                    &index,
                    &half,
                ],
            );
            c[b] = if bad_rows.contains(&i) {
                Scalar::random(&mut *rng)
            } else {
                halves[b] + pad
            };
        }
        let x0_point = encode_point(&g_mul(&x0));
        commitments.extend_from_slice(&x0_point);
        for b in 0..2 {
            commitments.extend_from_slice(&r_points[b]);
            commitments.extend_from_slice(&encode_scalar(&c[b]));
        }
        rows.push(Row {
            x0_point,
            r_points,
            c,
            seeds,
        });
    }
    let mut hx = WideTranscript::<1>::new(tags::BACKUP_CHALLENGE);
    hx.append(&label);
    hx.append(&encode_point(&q));
    hx.append(&encode_point(recovery));
    hx.append(&commitments);
    let challenge: [u8; ROWS / 8] = hx.finalize_array();

    let mut out = label;
    out.extend_from_slice(&encode_point(&q));
    out.extend_from_slice(&encode_point(recovery));
    out.extend_from_slice(&challenge);
    for (i, row) in rows.iter().enumerate() {
        let e = usize::from((challenge[i / 8] >> (i % 8)) & 1);
        out.extend_from_slice(&row.x0_point);
        out.extend_from_slice(&encode_scalar(&row.c[0]));
        out.extend_from_slice(&encode_scalar(&row.c[1]));
        out.extend_from_slice(&row.r_points[1 - e]);
        out.extend_from_slice(&row.seeds[e]);
    }
    out
}
