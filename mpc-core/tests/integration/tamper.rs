//! Tampering, replay, reordering and loss for DKG and signing: the honest
//! party ends with the documented error class (PROTOCOL.md §8) and never
//! with a key share or a signature.
use crate::common;

use common::{dkg_pair, run_honest, run_pair, End, InTransit};
use k256::elliptic_curve::ops::MulByGenerator;
use mpc_core::wire::{encode_point, Role};
use mpc_core::{AbortClass, Dkg, Error, KeyShare, Prehash, Presign, Protocol, Sign, Step};

fn other_point() -> [u8; 33] {
    encode_point(&k256::ProjectivePoint::mul_by_generator(
        &k256::Scalar::from(12345u64),
    ))
}

/// A way to alter one field.
#[derive(Clone, Copy, Debug)]
enum Edit {
    /// XOR 0x01 into the byte at this offset.
    Flip(usize),
    /// Replace the 33 bytes at this offset with another valid point.
    SwapPoint(usize),
    /// Replace the 33 bytes at this offset with the identity encoding.
    Identity(usize),
    /// The same for a 65-byte uncompressed point.
    IdentityUncompressed(usize),
}

impl Edit {
    fn apply(self, payload: &mut [u8]) {
        match self {
            Edit::Flip(at) => payload[at] ^= 0x01,
            Edit::SwapPoint(at) => payload[at..at + 33].copy_from_slice(&other_point()),
            Edit::Identity(at) => payload[at..at + 33].fill(0),
            Edit::IdentityUncompressed(at) => payload[at..at + 65].fill(0),
        }
    }
}

fn tamper_b_to_a(round: u8, edit: Edit) -> impl FnMut(&mut InTransit<'_>) {
    move |m| {
        if m.sender == Role::B && m.round == round {
            m.edit_payload(|p| edit.apply(p));
        }
    }
}

/// A, which received the altered message, got no output and ended with one
/// of `allowed`. (B received genuine messages; after a last-round change it
/// may finish, as in any protocol whose last message cannot be confirmed.)
fn assert_a_rejects<T, U>(ends: (End<T>, End<U>), allowed: &[Error], what: &str) {
    let (a, _) = ends;
    assert!(!a.is_finished(), "{what}: A finished");
    let err = a
        .error()
        .unwrap_or_else(|| panic!("{what}: A did not fail"));
    assert!(
        allowed.contains(&err),
        "{what}: A failed with {err:?}, expected one of {allowed:?}"
    );
}

/// Neither party got an output, and at least one of them detected the
/// tampering with a non-ignore error.
fn assert_detected<T, U>(ends: (End<T>, End<U>), what: &str) {
    let (a, b) = ends;
    assert!(
        !a.is_finished() && !b.is_finished(),
        "{what}: a party finished"
    );
    let detected = [a.error(), b.error()]
        .into_iter()
        .flatten()
        .any(|e| e.class() != AbortClass::Ignore);
    assert!(detected, "{what}: nobody detected the change");
}

fn dkg_with(seed: u64, hook: impl FnMut(&mut InTransit<'_>)) -> (End<KeyShare>, End<KeyShare>) {
    run_pair(
        seed,
        &mut Dkg::new(Role::A, b"ctx"),
        &mut Dkg::new(Role::B, b"ctx"),
        hook,
    )
}

// DKG round 2 layout: X(33) chain(32) salt(32) proof K(33) z(32) BotRecvMsg.
const R2_X: usize = 0;
const R2_CHAIN: usize = 33;
const R2_SALT: usize = 65;
const R2_PROOF_K: usize = 97;
const R2_PROOF_Z: usize = 130;
const R2_BOT: usize = 162;

#[test]
fn dkg_tampering_is_rejected() {
    use Error::*;
    let cases: &[(u8, Edit, &[Error])] = &[
        (1, Edit::Flip(32), &[CommitmentMismatch]),
        (1, Edit::Flip(63), &[CommitmentMismatch]),
        (2, Edit::Flip(R2_X + 5), &[InvalidPoint, CommitmentMismatch]),
        (2, Edit::SwapPoint(R2_X), &[CommitmentMismatch]),
        (2, Edit::Identity(R2_X), &[IdentityPoint]),
        (2, Edit::Flip(R2_CHAIN), &[CommitmentMismatch]),
        (2, Edit::Flip(R2_SALT + 31), &[CommitmentMismatch]),
        (2, Edit::Flip(R2_PROOF_K + 9), &[InvalidPoint, InvalidProof]),
        (2, Edit::SwapPoint(R2_PROOF_K), &[InvalidProof]),
        (2, Edit::Identity(R2_PROOF_K), &[IdentityPoint]),
        (2, Edit::Flip(R2_PROOF_Z + 31), &[InvalidProof]),
        (2, Edit::IdentityUncompressed(R2_BOT), &[IdentityPoint]),
        (2, Edit::Flip(R2_BOT + 64), &[InvalidPoint]),
        (3, Edit::Identity(0), &[IdentityPoint]),
        (3, Edit::Flip(12), &[InvalidPoint, PprfProofFailed]),
        (3, Edit::SwapPoint(0), &[PprfProofFailed]),
        (4, Edit::Flip(0), &[KeyConfirmationFailed]),
        (4, Edit::Flip(31), &[KeyConfirmationFailed]),
    ];
    for (n, (round, edit, allowed)) in cases.iter().enumerate() {
        let ends = dkg_with(n as u64, tamper_b_to_a(*round, *edit));
        assert_a_rejects(ends, allowed, &format!("DKG round {round} {edit:?}"));
    }
    // Every byte region of the OT messages: someone detects it.
    for (round, offset) in [
        (2, R2_BOT + 40),
        (2, R2_BOT + 8000),
        (3, 33 + 7),
        (3, 33 + 5119),
    ] {
        let ends = dkg_with(offset as u64, tamper_b_to_a(round, Edit::Flip(offset)));
        assert_detected(ends, &format!("DKG round {round} OT byte {offset}"));
    }
}

#[test]
fn dkg_round1_nonce_change_splits_the_session() {
    // A computes a different session id than B: every later message is
    // addressed to a session the other does not know, and is dropped.
    let (a, b) = dkg_with(1, tamper_b_to_a(1, Edit::Flip(0)));
    assert!(matches!(a, End::Waiting) && matches!(b, End::Waiting));
}

fn sign_with(
    seed: u64,
    shares: &(KeyShare, KeyShare),
    hook: impl FnMut(&mut InTransit<'_>),
) -> (
    End<mpc_core::SignatureOutput>,
    End<mpc_core::SignatureOutput>,
) {
    let prehash = Prehash::sha256(b"tamper");
    run_pair(
        seed,
        &mut Sign::new(&shares.0, prehash),
        &mut Sign::new(&shares.1, prehash),
        hook,
    )
}

// Signing round 3 layout: VoleMsg(49216) R(33) salt(32) Gamma_u(33) Gamma_v(33) psi(32).
const S3_R: usize = 49216;
const S3_SALT: usize = S3_R + 33;
const S3_GU: usize = S3_SALT + 32;
const S3_GV: usize = S3_GU + 33;
const S3_PSI: usize = S3_GV + 33;

#[test]
fn signing_tampering_is_rejected_with_the_right_class() {
    use Error::*;
    let shares = dkg_pair(77);
    let cases: &[(u8, Edit, &[Error])] = &[
        (1, Edit::Flip(40), &[CommitmentMismatch]),
        (2, Edit::Flip(0), &[OtExtensionCheckFailed]),
        (2, Edit::Flip(2559), &[OtExtensionCheckFailed]),
        (2, Edit::Flip(2560), &[OtExtensionCheckFailed]),
        (2, Edit::Flip(4623), &[OtExtensionCheckFailed]),
        (3, Edit::Flip(31), &[RvoleCheckFailed]),
        (3, Edit::Flip(30_000), &[RvoleCheckFailed]),
        (3, Edit::Flip(49_183), &[RvoleCheckFailed]),
        (3, Edit::Flip(49_215), &[RvoleCheckFailed]),
        (3, Edit::Flip(S3_R + 3), &[InvalidPoint, CommitmentMismatch]),
        (3, Edit::SwapPoint(S3_R), &[CommitmentMismatch]),
        (3, Edit::Identity(S3_R), &[IdentityPoint]),
        (3, Edit::Flip(S3_SALT), &[CommitmentMismatch]),
        (3, Edit::Flip(S3_GU + 7), &[InvalidPoint, GammaCheckFailed]),
        (3, Edit::SwapPoint(S3_GU), &[GammaCheckFailed]),
        (3, Edit::Identity(S3_GU), &[IdentityPoint]),
        (3, Edit::SwapPoint(S3_GV), &[GammaCheckFailed]),
        (3, Edit::Identity(S3_GV), &[IdentityPoint]),
        (3, Edit::Flip(S3_PSI + 31), &[SignatureVerificationFailed]),
        (4, Edit::Flip(31), &[SignatureVerificationFailed]),
        (4, Edit::Flip(63), &[SignatureVerificationFailed]),
        (4, Edit::Flip(64), &[PrehashMismatch]),
    ];
    for (n, (round, edit, allowed)) in cases.iter().enumerate() {
        let ends = sign_with(n as u64, &shares, tamper_b_to_a(*round, *edit));
        let what = format!("sign round {round} {edit:?}");
        let class = ends.0.error().map(|e| e.class());
        assert_a_rejects(ends, allowed, &what);
        // The OT, RVOLE, Gamma and final checks ban; the rest abort.
        let ban = allowed.iter().all(|e| e.class() == AbortClass::Ban);
        if ban {
            assert_eq!(class, Some(AbortClass::Ban), "{what}");
        }
    }
}

#[test]
fn non_canonical_scalar_aborts_without_ban() {
    let shares = dkg_pair(78);
    let ends = sign_with(1, &shares, |m| {
        if m.sender == Role::B && m.round == 3 {
            m.edit_payload(|p| p[..32].fill(0xff));
        }
    });
    assert_a_rejects(ends, &[Error::NonCanonicalScalar], "a_tilde >= q");
}

#[test]
fn replayed_messages_from_another_session_key_or_epoch_are_ignored() {
    let shares = dkg_pair(79);
    // Capture B's messages from one signing session...
    let mut captured: Vec<Vec<u8>> = Vec::new();
    let _ = sign_with(1, &shares, |m| {
        if m.sender == Role::B {
            captured.push(m.bytes.clone());
        }
    });
    // ... and replay each, in place of the fresh one, into another session.
    for round in 1..=4u8 {
        let old = captured[usize::from(round) - 1].clone();
        let (a, _) = sign_with(2, &shares, |m| {
            if m.sender == Role::B && m.round == round {
                *m.bytes = old.clone();
            }
        });
        assert!(!a.is_finished(), "replay of round {round} completed");
        assert!(
            a.error().is_none(),
            "replay of round {round} blamed the peer: {:?}",
            a.error()
        );
    }

    // A message of another key's session is addressed elsewhere.
    let other = dkg_pair(80);
    let prehash = Prehash::sha256(b"tamper");
    let mut rng = common::rng(3);
    let mut foreign = Sign::new(&other.1, prehash);
    let foreign_first = foreign.start(&mut rng).unwrap();
    let mut mine = Sign::new(&shares.0, prehash);
    let _ = mine.start(&mut rng).unwrap();
    assert_eq!(
        mine.handle(&mut rng, &foreign_first).err(),
        Some(Error::WrongSession)
    );

    // Shares of different epochs never sign together: an epoch-1 copy of
    // A's share against B's epoch-0 share.
    let mut bytes = shares.0.to_bytes().to_vec();
    assert_eq!(bytes[34], 0, "epoch varint position");
    bytes[34] = 1;
    let a_epoch1 = KeyShare::from_bytes(&bytes).unwrap();
    assert_eq!(a_epoch1.epoch(), 1);
    let (a, b) = run_pair(
        4,
        &mut Sign::new(&a_epoch1, prehash),
        &mut Sign::new(&shares.1, prehash),
        |_| {},
    );
    assert!(!a.is_finished() && !b.is_finished());
}

#[test]
fn duplicated_out_of_order_and_missing_messages_never_complete() {
    let shares = dkg_pair(81);
    let prehash = Prehash::sha256(b"order");
    let mut rng = common::rng(5);
    let mut a = Sign::new(&shares.0, prehash);
    let mut b = Sign::new(&shares.1, prehash);
    let a1 = a.start(&mut rng).unwrap();
    let b1 = b.start(&mut rng).unwrap();
    let Step::Send(a2) = a.handle(&mut rng, &b1).unwrap() else {
        panic!()
    };
    // Duplicate round 1: addressed to the setup session, which A has left;
    // ignored, state unchanged.
    assert_eq!(a.handle(&mut rng, &b1).err(), Some(Error::WrongSession));
    let Step::Send(b2) = b.handle(&mut rng, &a1).unwrap() else {
        panic!()
    };
    let Step::Send(b3) = b.handle(&mut rng, &a2).unwrap() else {
        panic!()
    };
    // Round 3 before round 2: out of order, ignored (its size is over the
    // round-2 cap, which is checked first).
    assert_eq!(a.handle(&mut rng, &b3).err(), Some(Error::MessageTooLarge));
    let mut relabelled = mpc_core::wire::Envelope::decode(&b2, usize::MAX).unwrap();
    relabelled.round = 3;
    assert_eq!(
        a.handle(&mut rng, &relabelled.encode()).err(),
        Some(Error::WrongRound)
    );
    // Garbage: ignored.
    assert_eq!(
        a.handle(&mut rng, b"garbage").err().map(|e| e.class()),
        Some(AbortClass::Ignore)
    );
    // The right message still works after all of that.
    let Step::Send(_a3) = a.handle(&mut rng, &b2).unwrap() else {
        panic!()
    };

    // A dropped message: the party that misses it never completes (and
    // before the last round, neither does its peer).
    for round in 1..=4u8 {
        let (ea, eb) = sign_with(u64::from(round), &shares, |m| {
            if m.sender == Role::B && m.round == round {
                m.drop = true;
            }
        });
        assert!(!ea.is_finished(), "round {round} dropped, yet A finished");
        assert_eq!(
            eb.is_finished(),
            round == 4,
            "round {round} dropped: B's end"
        );
    }
    let (ea, eb) = dkg_with(9, |m| {
        if m.sender == Role::A && m.round == 3 {
            m.drop = true;
        }
    });
    assert!(!ea.is_finished() && !eb.is_finished());
}

#[test]
fn errors_are_sticky_and_finished_protocols_take_nothing() {
    let shares = dkg_pair(82);
    let prehash = Prehash::sha256(b"sticky");
    let mut rng = common::rng(6);
    let mut a = Sign::new(&shares.0, prehash);
    let mut b = Sign::new(&shares.1, prehash);
    let a1 = a.start(&mut rng).unwrap();
    let b1 = b.start(&mut rng).unwrap();
    let Step::Send(_a2) = a.handle(&mut rng, &b1).unwrap() else {
        panic!()
    };
    let Step::Send(b2) = b.handle(&mut rng, &a1).unwrap() else {
        panic!()
    };
    let mut bad = mpc_core::wire::Envelope::decode(&b2, usize::MAX).unwrap();
    bad.payload[100] ^= 1;
    let err = a.handle(&mut rng, &bad.encode()).err().unwrap();
    assert_eq!(err, Error::OtExtensionCheckFailed);
    // The genuine message no longer helps: the session is over.
    assert_eq!(a.handle(&mut rng, &b2).err(), Some(err));
    assert_eq!(a.start(&mut rng).err(), Some(err));

    let mut pa = Presign::new(&shares.0);
    let mut pb = Presign::new(&shares.1);
    let _ = run_honest(7, &mut pa, &mut pb);
    assert_eq!(
        pa.handle(&mut rng, b"x").err(),
        Some(Error::AlreadyFinished)
    );
    assert_eq!(pa.start(&mut rng).err(), Some(Error::AlreadyFinished));
}
