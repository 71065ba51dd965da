//! The malicious peer: one test (or two) per line of the security checklist
//! (`shared/docs/security-checklist.md`) that applies to `mpc-core`, named
//! `checklist_NN_<what>`. Each test attacks through the public API with a
//! peer that computes wrong but well-formed messages (helpers in
//! `adversarial/`: the spec's public formulas, a malicious signer with
//! its own SoftSpokenOT receiver and RVOLE sender, a malicious key-generation
//! and refresh peer, a cheating backup prover), and each says in one line
//! which check it exercises: removing that check makes the test fail.
//!
//! Not here:
//! - line 13 (timing): constant-time behaviour is not observable in a test
//!   on shared CI machines without producing flaky results, and "secret
//!   comparisons go through `subtle`" is a property of the source, checked
//!   by review (PROTOCOL.md §10), not by a runtime test;
//! - lines 16 and 17 (auth bypass, resource exhaustion) are server and
//!   transport concerns: `mpc-core` has no users, tokens, sockets or clocks.
//!   Its part of line 17, the per-round size caps, is tested by `tamper.rs`.
//!
//! The malicious peer reads its own OT material from its share's storage
//! encoding (PROTOCOL.md §13.5): `mpc-core` exposes no accessor for it, and
//! none was added.
mod backup;
mod keygen;
mod peer;
mod spec;

use crate::common;

use common::{dkg_pair, libsecp_verify, rng, run_honest, run_pair, End};
use k256::elliptic_curve::bigint::U256;
use k256::elliptic_curve::ops::Reduce;
use k256::{ProjectivePoint, Scalar};
use mpc_core::backup::{Backup, BACKUP_BYTES, ROWS};
use mpc_core::export::{export_share, import_export, ExportCiphertext};
use mpc_core::hazmat::ot::extension::{self, CHOICE_BYTES};
use mpc_core::params::EXT_ROW_BYTES;
use mpc_core::sign::{ClaimRefused, PresignatureGuard};
use mpc_core::transcript::tags;
use mpc_core::wire::{decode_point_uncompressed, encode_point, ProtocolId, Role, SessionId};
use mpc_core::{
    AbortClass, DerivationPath, Dkg, Error, KeyId, KeyShare, OnlineSign, Prehash, Presign,
    Presignature, Protocol, Refresh, Sign, SignatureOutput, Step,
};
use rand_chacha::rand_core::RngCore;

use keygen::{Challenge, EvilKeygen};
use peer::{expect_send, payload, seal, Deviations, EvilSigner, InconsistentTree, Probe};
use spec::{g_mul, Parts, ShareRecord};

/// A guard that breaks the contract: it claims everything.
struct LyingGuard;

impl PresignatureGuard for LyingGuard {
    fn claim(&mut self, _: &KeyId, _: u64, _: &SessionId) -> Result<(), ClaimRefused> {
        Ok(())
    }
}

fn copy(share: &KeyShare) -> KeyShare {
    KeyShare::from_bytes(&share.to_bytes()).unwrap()
}

fn verifies(public_key: &k256::PublicKey, prehash: &Prehash, out: &SignatureOutput) -> bool {
    use k256::ecdsa::signature::hazmat::PrehashVerifier;
    k256::ecdsa::VerifyingKey::from(public_key)
        .verify_prehash(prehash.as_bytes(), &out.signature)
        .is_ok()
}

/// Signs with honest A against the malicious B.
fn sign_against(
    a: &KeyShare,
    b: &KeyShare,
    prehash: Prehash,
    dev: Deviations,
    seed: u64,
) -> (Result<SignatureOutput, Error>, EvilSigner) {
    let mut evil = EvilSigner::new(Parts::of(b), prehash, dev, rng(seed));
    let result = peer::run_against(&mut Sign::new(a, prehash), &mut rng(seed + 1), &mut evil);
    (result, evil)
}

// ---- 1: TSSHOCK ----

/// Line 1 (cut proof repetitions): `Backup::verify` checks the opened half of
/// every one of its 128 rows, and a backup with fewer rows does not decode.
#[test]
fn checklist_01_backup_proof_checks_every_repetition() {
    // Fails without: the opened-half check of any row in `Backup::verify`.
    let (_, server) = dkg_pair(101);
    let parts = Parts::of(&server);
    let mut rng = rng(1);
    let recovery = k256::SecretKey::random(&mut rng);
    let y = recovery.public_key().to_projective();
    let q = server.public_share(server.role());

    // The prover written from PROTOCOL.md §17 is accepted when it is honest.
    let honest = backup::prove(&mut rng, &parts, &y, &[]);
    assert_eq!(honest.len(), BACKUP_BYTES);
    let decoded = Backup::from_bytes(&honest).unwrap();
    decoded.verify(&q, &recovery.public_key()).unwrap();
    assert_eq!(
        *decoded.decrypt(&recovery).unwrap().to_nonzero_scalar(),
        parts.secret
    );

    // One row with no valid split in it, its challenge computed honestly:
    // only that row's check can catch it, wherever the row is.
    for bad in [0, ROWS / 2, ROWS - 1] {
        let cheating = backup::prove(&mut rng, &parts, &y, &[bad]);
        let decoded = Backup::from_bytes(&cheating).expect("a well-formed backup");
        assert_eq!(
            decoded.verify(&q, &recovery.public_key()).err(),
            Some(Error::InvalidBackup),
            "row {bad} was not checked"
        );
    }

    // A proof with a repetition cut off is not a backup at all.
    let row_bytes = (BACKUP_BYTES - (42 + 33 + 33 + ROWS / 8)) / ROWS;
    assert_eq!(
        Backup::from_bytes(&honest[..honest.len() - row_bytes]).err(),
        Some(Error::WrongLength)
    );
}

// ---- 2: BitForge ----

/// Line 2 (BitForge): a wrong but well-formed `psi` or `w` from the peer ends
/// in `SignatureVerificationFailed`, class Ban; once the share is burned (and
/// stored), signing and presigning refuse until a refresh. Exercises the
/// final verification, its Ban class, and the burned-share refusal in
/// `Sign`/`Presign`.
#[test]
fn checklist_02_failed_signature_bans_the_key_until_refresh() {
    // Fails without: the final verification, its Ban class, or the burned-share refusal.
    let (a, b) = dkg_pair(102);
    let prehash = Prehash::sha256(b"bitforge");
    // The malicious signer, without deviations, produces valid signatures:
    // everything it does below differs only in the deviation.
    let (control, _) = sign_against(&a, &b, prehash, Deviations::default(), 10);
    libsecp_verify(&a.public_key(), &prehash, &control.unwrap());

    let probes = [
        Deviations {
            psi_shift: Scalar::ONE,
            ..Deviations::default()
        },
        Deviations {
            w_shift: Scalar::ONE,
            ..Deviations::default()
        },
    ];
    for (n, dev) in probes.into_iter().enumerate() {
        let (result, _) = sign_against(&a, &b, prehash, dev, 20 + 2 * n as u64);
        let error = result.expect_err("a wrong share was accepted");
        assert_eq!(error, Error::SignatureVerificationFailed, "{dev:?}");
        assert_eq!(error.class(), AbortClass::Ban);
    }

    // The storage layer's reaction to a Ban: burn, persist.
    let mut burned = copy(&a);
    burned.burn_ot_material();
    let stored = KeyShare::from_bytes(&burned.to_bytes()).unwrap();
    assert!(stored.is_ot_burned());
    let mut rng = rng(3);
    let path: DerivationPath = "m/1".parse().unwrap();
    assert_eq!(
        Sign::new(&stored, prehash).start(&mut rng).err(),
        Some(Error::OtMaterialBurned)
    );
    assert_eq!(
        Presign::new(&stored).start(&mut rng).err(),
        Some(Error::OtMaterialBurned)
    );
    assert_eq!(
        Presign::with_path(&stored, &path)
            .unwrap()
            .start(&mut rng)
            .err(),
        Some(Error::OtMaterialBurned)
    );
    // Refresh brings fresh OT material, and signing works again.
    let (a1, b1) = run_honest(
        4,
        &mut Refresh::new(&stored, b"after-ban"),
        &mut Refresh::new(&b, b"after-ban"),
    );
    let (out, _) = run_honest(
        5,
        &mut Sign::new(&a1, prehash),
        &mut Sign::new(&b1, prehash),
    );
    libsecp_verify(&a.public_key(), &prehash, &out);
}

// ---- 3: selective abort on OT correlations ----

/// Line 3 (selective abort): a malicious RVOLE sender that perturbs one entry
/// of its otherwise consistent message learns the honest receiver's secret
/// choice bit `beta_j` from whether the session aborts. The abort is the
/// `mu` check's `RvoleCheckFailed`, class Ban, so the probe cannot be
/// repeated; exercises the `mu` check and its Ban class.
#[test]
fn checklist_03_rvole_probe_leaks_a_choice_bit_so_it_bans() {
    // Fails without: the RVOLE `mu` check or its Ban class.
    let (a, b) = dkg_pair(103);
    let pa = Parts::of(&a);
    let prehash = Prehash::sha256(b"probe");
    let mut seen = [0usize; 2];
    for session in 0..8u64 {
        let j = 17 * usize::try_from(session).unwrap() + 3;
        let dev = Deviations {
            probe: Some(Probe {
                row: j,
                col: 0,
                delta: Scalar::ONE,
            }),
            ..Deviations::default()
        };
        let (result, evil) = sign_against(&a, &b, prehash, dev, 30 + 2 * session);
        // An oracle holding A's seeds reads A's choice bits off its
        // extension message.
        let sid_ext = spec::ext_sid(&pa.receiver.context().keyctx, &evil.sid());
        let beta = peer::choices_of(pa.receiver.seeds(), &sid_ext, evil.peer_ote_msg());
        let beta_j = peer::bit(&beta, j);
        match result {
            Err(error) => {
                assert_eq!(beta_j, 1, "the probe failed where A does not use the entry");
                assert_eq!(error, Error::RvoleCheckFailed);
                assert_eq!(error.class(), AbortClass::Ban);
            }
            Ok(out) => {
                assert_eq!(beta_j, 0, "the probe went through where A uses the entry");
                assert!(verifies(&a.public_key(), &prehash, &out));
            }
        }
        seen[usize::from(beta_j)] += 1;
    }
    assert!(seen[0] > 0 && seen[1] > 0, "both outcomes occur: {seen:?}");
}

/// Line 3 (Gamma check): a malicious RVOLE sender whose inputs are not its
/// committed nonce or its public share passes the `mu` check (the message
/// is consistent) and is caught by the Gamma checks, class Ban.
#[test]
fn checklist_03_rvole_input_substitution_is_a_gamma_ban() {
    // Fails without: the Gamma checks of signing round 3.
    let (a, b) = dkg_pair(113);
    let prehash = Prehash::sha256(b"substitution");
    for (n, shift) in [[Scalar::ONE, Scalar::ZERO], [Scalar::ZERO, Scalar::ONE]]
        .into_iter()
        .enumerate()
    {
        let dev = Deviations {
            input_shift: shift,
            ..Deviations::default()
        };
        let (result, _) = sign_against(&a, &b, prehash, dev, 40 + 2 * n as u64);
        let error = result.expect_err("a substituted input was accepted");
        assert_eq!(error, Error::GammaCheckFailed);
        assert_eq!(error.class(), AbortClass::Ban);
    }
}

// ---- 4: KOS15 ----

/// Line 4 (KOS15 consistency check): a cheating extension receiver builds one
/// tree from a different `xhat` and patches that tree's check values for a
/// guess of the sender's `Delta` bits. Exactly one guess of 16 passes, the
/// sender's real punctured index; every other one is an
/// `OtExtensionCheckFailed` ban. Exercises the SoftSpokenOT consistency
/// check (without it all 16 pass).
#[test]
fn checklist_04_cheating_extension_receiver_is_caught() {
    // Fails without: the SoftSpokenOT consistency check in `extension::send`.
    let (a, b) = dkg_pair(104);
    let pa = Parts::of(&a);
    let pb = Parts::of(&b);
    let prehash = Prehash::sha256(b"kos");
    let mut rng_b = rng(7);
    let mut choices = [0u8; CHOICE_BYTES];
    rng_b.fill_bytes(&mut choices);

    // The receiver written from PROTOCOL.md §6.2 matches the crate's.
    let sid_ext = [9u8; 32];
    let mut pad = [0u8; EXT_ROW_BYTES - CHOICE_BYTES];
    rng_b.clone().fill_bytes(&mut pad);
    let (theirs, _) = extension::receive(&mut rng_b, pb.receiver.seeds(), &sid_ext, &choices);
    let ours = peer::extension_message(pb.receiver.seeds(), &sid_ext, &choices, &pad, None);
    assert_eq!(ours, theirs);

    let tree = 9;
    let truth = pa.sender.seeds().punctured[tree];
    let mut passed = Vec::new();
    for guess in 0..16u8 {
        let mut honest = Sign::new(&a, prehash);
        let mut rng_a = rng(100 + u64::from(guess));
        let a1 = honest.start(&mut rng_a).unwrap();
        let mut evil = EvilSigner::new(
            Parts::of(&b),
            prehash,
            Deviations::default(),
            rng(200 + u64::from(guess)),
        );
        let _a2 = expect_send(honest.handle(&mut rng_a, &evil.round1()));
        let sid = evil.learn_sid(&a1);
        let sid_ext = spec::ext_sid(&pb.receiver.context().keyctx, &sid);
        let message = peer::extension_message(
            pb.receiver.seeds(),
            &sid_ext,
            &choices,
            &pad,
            Some(InconsistentTree { tree, guess }),
        );
        match honest.handle(
            &mut rng_a,
            &seal(ProtocolId::Sign, sid, 2, Role::B, message),
        ) {
            Ok(Step::Send(_)) => passed.push(guess),
            Err(error) => {
                assert_eq!(error, Error::OtExtensionCheckFailed);
                assert_eq!(error.class(), AbortClass::Ban);
            }
            Ok(Step::Finished(_)) => panic!("finished in round 2"),
        }
    }
    assert_eq!(passed, vec![truth], "only the right guess of Delta passes");
}

// ---- 5: Devious Transfer ----

/// Line 5 (base-OT key extraction): a malicious base-OT receiver sends valid
/// points placed so that the honest sender's `M = r + Hp(...)` is the
/// identity (a key it could compute without the sender's secret); the
/// sender aborts with `DegenerateBaseOt`. Exercises that identity check.
#[test]
fn checklist_05_base_ot_points_that_cancel_the_hash_are_rejected() {
    // Fails without: the identity check on `M[t][j]` in `base::send`.
    let ctx = b"devious";
    let setup = spec::dkg_setup(ctx);
    let mut nonces: [Vec<u8>; 2] = [Vec::new(), Vec::new()];
    let (end_a, _) = run_pair(
        105,
        &mut Dkg::new(Role::A, ctx),
        &mut Dkg::new(Role::B, ctx),
        |m| {
            if m.round == 1 {
                nonces[m.sender.index()] = payload(m.bytes)[..32].to_vec();
            }
            if m.sender == Role::B && m.round == 2 {
                let sid = spec::hash(tags::DKG_SID, &[&setup, &nonces[0], &nonces[1]]);
                let sid_bot = spec::base_ot_sid(&sid, Role::B, 0);
                // OT 5: r[5][1] = Y, any point; r[5][0] = -Hp(sid_bot, 5, Y).
                let t = 5usize;
                let y = spec::uncompressed(&g_mul(&Scalar::from(7u64)));
                let x = -spec::hash_point(&sid_bot, u32::try_from(t).unwrap(), &y);
                m.edit_payload(|p| {
                    let at = R2_BOT + t * 130;
                    p[at..at + 65].copy_from_slice(&spec::uncompressed(&x));
                    p[at + 65..at + 130].copy_from_slice(&y);
                });
            }
        },
    );
    assert_eq!(end_a.error(), Some(Error::DegenerateBaseOt));
    assert_eq!(Error::DegenerateBaseOt.class(), AbortClass::Abort);
}

/// Line 5 (no secret derived from peer bytes): an honest party's base-OT
/// scalars `a[t]`, its points `Y[t]` and its proof nonce come from its RNG
/// alone. Against two peers with different nonces (so different session
/// ids), the same RNG gives the same `Y[t]` and the same `a[t]*G =
/// X[t] + Hp(sid_bot, t, Y[t])`; only `X[t]` moves with the session.
/// Exercises that `BaseOtReceiver` samples rather than derives.
#[test]
fn checklist_05_base_ot_secrets_do_not_depend_on_peer_bytes() {
    // Fails without: sampling (not deriving) the base-OT receiver's scalars.
    let ctx = b"sampled";
    let setup = spec::dkg_setup(ctx);
    let mut runs = Vec::new();
    for peer_seed in [1u64, 2] {
        let mut a = Dkg::new(Role::A, ctx);
        let mut rng_a = rng(55);
        let a1 = payload(&a.start(&mut rng_a).unwrap());
        let b1 = Dkg::new(Role::B, ctx).start(&mut rng(peer_seed)).unwrap();
        let a2 = payload(&expect_send(a.handle(&mut rng_a, &b1)));
        let sid = spec::hash(tags::DKG_SID, &[&setup, &a1[..32], &payload(&b1)[..32]]);
        runs.push((spec::base_ot_sid(&sid, Role::A, 0), a2));
    }
    let [(sid_1, run_1), (sid_2, run_2)] = [&runs[0], &runs[1]];
    assert_ne!(sid_1, sid_2);
    // The Schnorr commitment K: same nonce.
    assert_eq!(run_1[R2_PROOF_K..R2_PROOF_Z], run_2[R2_PROOF_K..R2_PROOF_Z]);
    for t in 0..128usize {
        let pair = |run: &[u8], slot: usize| {
            let at = R2_BOT + t * 130 + slot * 65;
            run[at..at + 65].to_vec()
        };
        let same: Vec<usize> = (0..2)
            .filter(|slot| pair(run_1, *slot) == pair(run_2, *slot))
            .collect();
        assert_eq!(same.len(), 1, "OT {t}: exactly Y is unchanged");
        let (y, x) = (same[0], 1 - same[0]);
        let y_bytes = pair(run_1, y);
        let index = u32::try_from(t).unwrap();
        let a_g = |run: &[u8], sid: &[u8; 32]| {
            decode_point_uncompressed(&pair(run, x)).unwrap()
                + spec::hash_point(sid, index, &y_bytes)
        };
        assert_eq!(a_g(run_1, sid_1), a_g(run_2, sid_2), "OT {t}: a*G moved");
    }
}

// DKG round-2 payload layout: X(33) chain(32) salt(32) proof K(33) z(32) BotRecvMsg.
const R2_PROOF_K: usize = 97;
const R2_PROOF_Z: usize = 130;
const R2_BOT: usize = 162;

// ---- 6: Frozen Heart ----

/// Line 6 (Fiat-Shamir without the full statement): a malicious DKG peer that
/// knows its share proves it with a challenge missing, or binding the wrong
/// value of, one of: joint session id, role, generator, statement,
/// commitment, tag. Each is `InvalidProof`; the specified challenge passes.
/// A verifier that dropped or confused any of them would accept the
/// matching variant.
#[test]
fn checklist_06_dkg_proof_challenge_binds_the_whole_statement() {
    // Fails without: any one input of the DKG Schnorr challenge.
    let ctx = b"frozen";
    for (n, challenge) in keygen::ALL_CHALLENGES.into_iter().enumerate() {
        let mut honest = Dkg::new(Role::A, ctx);
        let mut evil = EvilKeygen::new(keygen::DKG, Role::B, spec::dkg_setup(ctx), rng(n as u64));
        let result =
            keygen::first_two_rounds(&mut honest, &mut rng(60 + n as u64), &mut evil, challenge);
        check_proof_outcome(challenge, result.map(|_| ()));
    }
}

fn check_proof_outcome(challenge: Challenge, result: Result<(), Error>) {
    if challenge == Challenge::Honest {
        assert_eq!(result, Ok(()), "the specified proof was rejected");
    } else {
        assert_eq!(result, Err(Error::InvalidProof), "{challenge:?} accepted");
    }
}

// ---- 7: replayed proofs and messages ----

/// Line 7 (replay): a peer replays its payloads from an earlier session of
/// the same key in fresh, correctly addressed envelopes (so addressing
/// cannot drop them). The DKG proof is bound to the joint session id
/// (`InvalidProof`), and the signing OT-extension message, RVOLE message and
/// online shares are bound to theirs (ban). Exercises the session id inside
/// the Schnorr challenge, `sid_ext`/`sid_rvole`, and the final verification.
#[test]
fn checklist_07_payloads_replayed_into_a_new_session_are_rejected() {
    // Fails without: the session id in the proof, in `sid_ext`/`sid_rvole`, or the final check.
    // DKG: B's round-1 and round-2 payloads from another run with the same
    // context: the commitment still opens, the proof does not verify.
    let ctx = b"replay";
    let setup = spec::dkg_setup(ctx);
    let mut old: Vec<Vec<u8>> = Vec::new();
    let _ = run_pair(
        1,
        &mut Dkg::new(Role::A, ctx),
        &mut Dkg::new(Role::B, ctx),
        |m| {
            if m.sender == Role::B {
                old.push(payload(m.bytes));
            }
        },
    );
    let mut nonce_a = Vec::new();
    let (end_a, _) = run_pair(
        2,
        &mut Dkg::new(Role::A, ctx),
        &mut Dkg::new(Role::B, ctx),
        |m| match (m.sender, m.round) {
            (Role::A, 1) => nonce_a = payload(m.bytes)[..32].to_vec(),
            (Role::B, 1) => *m.bytes = seal(ProtocolId::Dkg, setup, 1, Role::B, old[0].clone()),
            (Role::B, 2) => {
                let sid = spec::hash(tags::DKG_SID, &[&setup, &nonce_a, &old[0][..32]]);
                *m.bytes = seal(ProtocolId::Dkg, sid, 2, Role::B, old[1].clone());
            }
            _ => {}
        },
    );
    assert_eq!(end_a.error(), Some(Error::InvalidProof));

    // Signing: record B's payloads of one session, then replay one of them
    // per new session.
    let (a, b) = dkg_pair(107);
    let prehash = Prehash::sha256(b"replayed");
    let mut recorded: Vec<Vec<u8>> = Vec::new();
    let (done, _) = run_pair(
        3,
        &mut Sign::new(&a, prehash),
        &mut Sign::new(&b, prehash),
        |m| {
            if m.sender == Role::B {
                recorded.push(payload(m.bytes));
            }
        },
    );
    assert!(done.is_finished());
    let vole_bytes = mpc_core::hazmat::vole::VOLE_MSG_BYTES;
    let cases: [(u8, usize, Error); 3] = [
        (2, usize::MAX, Error::OtExtensionCheckFailed),
        (3, vole_bytes, Error::RvoleCheckFailed),
        (4, 64, Error::SignatureVerificationFailed),
    ];
    for (n, (round, replayed_len, expected)) in cases.into_iter().enumerate() {
        let old = &recorded[usize::from(round) - 1];
        let (end_a, _) = run_pair(
            10 + n as u64,
            &mut Sign::new(&a, prehash),
            &mut Sign::new(&b, prehash),
            |m| {
                if m.sender == Role::B && m.round == round {
                    m.edit_payload(|p| {
                        let len = replayed_len.min(p.len());
                        p[..len].copy_from_slice(&old[..len]);
                    });
                }
            },
        );
        assert_eq!(end_a.error(), Some(expected), "round {round}");
        assert_eq!(expected.class(), AbortClass::Ban);
    }
}

// ---- 8: presignature reuse ----

/// Asserts at compile time that `$ty` does not implement `$tr`: if it did,
/// `Probe::<_>::check` would match two impls and fail to infer.
macro_rules! assert_not_impl {
    ($ty:ty, $tr:path) => {{
        trait Probe<Which> {
            fn check() {}
        }
        impl<T: ?Sized> Probe<()> for T {}
        struct Implemented;
        impl<T: ?Sized + $tr> Probe<Implemented> for T {}
        <$ty as Probe<_>>::check();
    }};
}

/// Line 8 (nonce reuse): the core cannot be made to use a presignature twice
/// (`Presignature`, every protocol machine and `KeyShare` are neither
/// `Clone` nor `Serialize`: checked at compile time here, and
/// `OnlineSign::new` takes the presignature by value). Its storage bytes can
/// be copied, though, and with a guard that lies (claims everything) two
/// online signatures from one presignature give away the whole key even with
/// the round-4 rerandomization (two linear equations in `k` and `x`): this
/// test computes it. That is why `OnlineSign::new` needs an honest
/// `PresignatureGuard` (§14.3; `tests/online_guard.rs` tests the refusal).
#[test]
fn checklist_08_presignature_used_twice_reveals_the_key() {
    // Fails to compile if a presignature, share or machine becomes `Clone` or `Serialize`.
    assert_not_impl!(Presignature, Clone);
    assert_not_impl!(KeyShare, Clone);
    assert_not_impl!(Dkg, Clone);
    assert_not_impl!(Refresh<'static>, Clone);
    assert_not_impl!(Sign<'static>, Clone);
    assert_not_impl!(Presign<'static>, Clone);
    assert_not_impl!(OnlineSign, Clone);
    assert_not_impl!(mpc_core::hazmat::vole::RvoleReceiver, Clone);
    assert_not_impl!(Presignature, serde::Serialize);
    assert_not_impl!(KeyShare, serde::Serialize);
    assert_not_impl!(Dkg, serde::Serialize);
    assert_not_impl!(Refresh<'static>, serde::Serialize);
    assert_not_impl!(Sign<'static>, serde::Serialize);
    assert_not_impl!(Presign<'static>, serde::Serialize);
    assert_not_impl!(OnlineSign, serde::Serialize);

    let (a, b) = dkg_pair(108);
    let (pre_a, pre_b) = run_honest(1, &mut Presign::new(&a), &mut Presign::new(&b));
    let (bytes_a, bytes_b) = (pre_a.to_bytes(), pre_b.to_bytes());
    let sid = pre_a.session_id().0;
    drop((pre_a, pre_b));
    let prehashes = [
        Prehash::sha256(b"pay alice"),
        Prehash::sha256(b"pay mallory"),
    ];
    let signatures: Vec<SignatureOutput> = prehashes
        .iter()
        .enumerate()
        .map(|(n, prehash)| {
            let online = |share: &KeyShare, bytes: &[u8]| {
                let presignature = Presignature::from_bytes(bytes).unwrap();
                OnlineSign::new(share, presignature, *prehash, &mut LyingGuard).unwrap()
            };
            let (out, _) = run_honest(
                2 + n as u64,
                &mut online(&a, &bytes_a),
                &mut online(&b, &bytes_b),
            );
            libsecp_verify(&a.public_key(), prehash, &out);
            out
        })
        .collect();
    let r1 = *signatures[0].signature.r();
    let r2 = *signatures[1].signature.r();
    assert_ne!(r1, r2, "the nonce is shifted per prehash");
    let z: Vec<Scalar> = prehashes
        .iter()
        .map(|p| <Scalar as Reduce<U256>>::reduce_bytes(&(*p.as_bytes()).into()))
        .collect();
    let parts_a = Parts::of(&a);
    let d: Vec<Scalar> = prehashes
        .iter()
        .map(|p| spec::nonce_offset(&parts_a, p.as_bytes(), &sid))
        .collect();
    let s1 = *signatures[0].signature.s();
    let s2 = *signatures[1].signature.s();
    // s_i*(k + d_i) = z_i + r_i*x, with s_i up to sign (low-S): solve the
    // 2x2 linear system in (k, x) for each sign choice.
    let signs = [(s1, s2), (s1, -s2), (-s1, s2), (-s1, -s2)];
    let recovered = signs.into_iter().find_map(|(s1, s2)| {
        let (c1, c2) = (z[0] - s1 * d[0], z[1] - s2 * d[1]);
        let det = Option::<Scalar>::from((s2 * r1 - s1 * r2).invert())?;
        let x = (s1 * c2 - s2 * c1) * det;
        (g_mul(&x) == a.public_key().to_projective()).then_some(x)
    });
    let x = recovered.expect("the key did not leak");
    let parts = (Parts::of(&a), Parts::of(&b));
    assert_eq!(x, parts.0.secret + parts.1.secret);
}

// ---- 9: invalid points, identity, zero, non-canonical scalars ----

/// Line 9: values a malicious signer can actually control, sent in
/// well-formed messages. `psi = 5` sent as `5 + q` (same value mod q) is
/// `NonCanonicalScalar`, while `5` itself signs; a rushing peer that waits for
/// `u_A` and sends `u_B = -u_A` makes the nonce sum zero
/// (`DegenerateSignature`), and `w_B = -w_A` makes `s = 0` (rejected). Exercises
/// canonical-only scalar decoding and the zero checks of the final step.
#[test]
fn checklist_09_non_canonical_and_zero_values_from_a_peer_are_rejected() {
    // Fails without: canonical-only scalar decoding or the zero checks of round 4.
    let (a, b) = dkg_pair(109);
    let prehash = Prehash::sha256(b"degenerate");
    let small = Deviations {
        psi_value: Some(5),
        ..Deviations::default()
    };
    let (control, _) = sign_against(&a, &b, prehash, small, 1);
    assert!(verifies(&a.public_key(), &prehash, &control.unwrap()));
    let cases = [
        (
            Deviations {
                psi_non_canonical: true,
                ..small
            },
            Error::NonCanonicalScalar,
        ),
        (
            Deviations {
                rush_zero_u: true,
                ..Deviations::default()
            },
            Error::DegenerateSignature,
        ),
        (
            Deviations {
                rush_zero_w: true,
                ..Deviations::default()
            },
            Error::SignatureVerificationFailed,
        ),
    ];
    for (n, (dev, expected)) in cases.into_iter().enumerate() {
        let (result, _) = sign_against(&a, &b, prehash, dev, 10 + 2 * n as u64);
        assert_eq!(result.err(), Some(expected), "{dev:?}");
    }
    assert_eq!(Error::NonCanonicalScalar.class(), AbortClass::Abort);

    // BIP32 `IL >= n`: no index reaching it can be found (about 2^127 HMAC
    // evaluations per hit, under a chain code no party chooses). What is
    // observable: the tweak is exactly `IL`, computed independently, never a
    // reduction of it, and `IL` goes through the same canonical decoding as
    // wire scalars, which rejects `q`.
    use hmac::{Hmac, Mac};
    let xpub = a.xpub();
    for index in 0..32u32 {
        let mut mac = Hmac::<sha2::Sha512>::new_from_slice(xpub.chain_code()).unwrap();
        mac.update(&encode_point(&a.public_key().to_projective()));
        mac.update(&index.to_be_bytes());
        let il = mac.finalize().into_bytes();
        let (_, tweak) = xpub.derive_child(index).unwrap();
        assert_eq!(tweak.to_bytes().as_slice(), &il[..32], "index {index}");
    }
    assert_eq!(
        mpc_core::wire::decode_scalar(&peer::Q).err(),
        Some(Error::NonCanonicalScalar)
    );
}

// ---- 10: key confirmation ----

/// What the malicious peer's key confirmation covers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum View {
    /// The transcript hash of PROTOCOL.md §13, as both parties compute it.
    Agreed,
    /// A chain code from the contributions in the other order.
    ChainCode,
    /// Another public key.
    PublicKey,
    /// The public shares swapped.
    PublicShares,
    /// The OT setup fingerprints swapped.
    Fingerprints,
    /// Epoch 1.
    Epoch,
    /// The setup id instead of the joint session id.
    Session,
}

/// The DKG transcript hash `T` of §13 from the messages on the wire, as
/// `view` sees it. `p[role][round - 1]` are the payloads.
fn dkg_transcript(setup: &[u8; 32], p: &[Vec<Vec<u8>>; 2], view: View) -> [u8; 32] {
    let sid = spec::hash(tags::DKG_SID, &[setup, &p[0][0][..32], &p[1][0][..32]]);
    let x = [&p[0][1][..33], &p[1][1][..33]];
    let chain = [&p[0][1][33..65], &p[1][1][33..65]];
    let chain_code = if view == View::ChainCode {
        spec::hash(tags::DKG_CHAIN_CODE, &[&sid, chain[1], chain[0]])
    } else {
        spec::hash(tags::DKG_CHAIN_CODE, &[&sid, chain[0], chain[1]])
    };
    let mut pk = spec::point(x[0]) + spec::point(x[1]);
    if view == View::PublicKey {
        pk += ProjectivePoint::GENERATOR;
    }
    let fp = |sender: Role| {
        let (s, r) = (sender.index(), sender.peer().index());
        spec::setup_fp(
            &spec::base_ot_sid(&sid, sender, 0),
            &p[s][1][R2_BOT..],
            &p[r][2][..33],
            &p[r][2][33..],
        )
    };
    let mut fps = [fp(Role::A), fp(Role::B)];
    if view == View::Fingerprints {
        fps.swap(0, 1);
    }
    let shares = if view == View::PublicShares {
        [x[1], x[0]]
    } else {
        x
    };
    let epoch = u64::from(view == View::Epoch);
    let session = if view == View::Session { *setup } else { sid };
    spec::hash(
        tags::DKG_CONFIRM,
        &[
            &session,
            &epoch.to_be_bytes(),
            &encode_point(&pk),
            shares[0],
            shares[1],
            &chain_code,
            &fps[0],
            &fps[1],
        ],
    )
}

/// Line 10 (ToB-7, disagreement on chain code or key): a peer whose key
/// confirmation covers a different chain code, public key, public shares,
/// OT setup, epoch or session than the honest party's view makes it fail
/// with `KeyConfirmationFailed` and output no share; the confirmation
/// computed from the agreed view is accepted and is the share's transcript
/// hash. Exercises the confirmation check and every field of `T`.
#[test]
fn checklist_10_key_confirmation_covers_chain_code_key_and_ot_setup() {
    // Fails without: the key-confirmation comparison or any field of `T`.
    let ctx = b"confirm";
    let setup = spec::dkg_setup(ctx);
    let views = [
        View::Agreed,
        View::ChainCode,
        View::PublicKey,
        View::PublicShares,
        View::Fingerprints,
        View::Epoch,
        View::Session,
    ];
    for (n, view) in views.into_iter().enumerate() {
        let mut seen: [Vec<Vec<u8>>; 2] = [Vec::new(), Vec::new()];
        let mut agreed = [0u8; 32];
        let (end_a, end_b) = run_pair(
            110 + n as u64,
            &mut Dkg::new(Role::A, ctx),
            &mut Dkg::new(Role::B, ctx),
            |m| {
                if m.sender == Role::B && m.round == 4 {
                    agreed = dkg_transcript(&setup, &seen, View::Agreed);
                    let honest_confirmation = spec::hash(tags::DKG_CONFIRM_ROLE, &[&agreed, &[2]]);
                    assert_eq!(payload(m.bytes), honest_confirmation, "T as specified");
                    let claimed = dkg_transcript(&setup, &seen, view);
                    m.edit_payload(|p| {
                        p.copy_from_slice(&spec::hash(tags::DKG_CONFIRM_ROLE, &[&claimed, &[2]]));
                    });
                }
                seen[m.sender.index()].push(payload(m.bytes));
            },
        );
        assert!(end_b.is_finished(), "B received genuine messages");
        match (view, end_a) {
            (View::Agreed, End::Finished(share)) => {
                assert_eq!(share.transcript_hash(), &agreed);
                assert_eq!(share.public_key(), end_b.unwrap().public_key());
            }
            (View::Agreed, other) => panic!("agreed confirmation rejected: {other:?}"),
            (_, end) => assert_eq!(end.error(), Some(Error::KeyConfirmationFailed), "{view:?}"),
        }
    }
}

// ---- 11: refresh ----

/// Line 11 (refresh without proofs): the refresh offset `A_i` must be proved
/// in this refresh session, under the refresh tag, by this role; the same
/// malicious proofs as for line 6 are `InvalidProof` in a refresh, and the
/// specified one is accepted. Exercises the refresh Schnorr check.
#[test]
fn checklist_11_refresh_offsets_must_be_proved_in_this_session() {
    // Fails without: the refresh offset's Schnorr check (or any of its inputs).
    let (a, b) = dkg_pair(111);
    let ctx = b"re-prove";
    let setup = spec::refresh_setup(&Parts::of(&b), ctx);
    for (n, challenge) in keygen::ALL_CHALLENGES.into_iter().enumerate() {
        let mut honest = Refresh::new(&a, ctx);
        let mode = keygen::refresh(b.epoch());
        let mut evil = EvilKeygen::new(mode, Role::B, setup, rng(n as u64));
        let result =
            keygen::first_two_rounds(&mut honest, &mut rng(70 + n as u64), &mut evil, challenge);
        check_proof_outcome(challenge, result.map(|_| ()));
        assert!(honest.ready_share().is_none() && !honest.is_confirmed());
    }
}

/// Line 11 (old shares overwritten early): a peer cannot make the honest
/// party finalize (and so drop the old epoch) before it is confirmed. The
/// peer's acknowledgement delivered before its confirmation is ignored
/// (wrong round); relabelled as the confirmation it is rejected
/// (`KeyConfirmationFailed`: the two values are domain-separated). After the
/// failed refresh the old shares still sign. Exercises the refresh machine's
/// round order and the separate acknowledgement tag.
#[test]
fn checklist_11_refresh_does_not_finalize_before_confirmation() {
    // Fails without: the refresh's round order or its separate acknowledgement tag.
    let (a, b) = dkg_pair(112);
    let ctx = b"early-ack";
    let (mut rng_a, mut rng_b) = (rng(1), rng(2));
    let mut ra = Refresh::new(&a, ctx);
    let mut rb = Refresh::new(&b, ctx);
    let mut to_a = rb.start(&mut rng_b).unwrap();
    let mut to_b = ra.start(&mut rng_a).unwrap();
    for _ in 1..=3 {
        let next_a = expect_send(ra.handle(&mut rng_a, &to_a));
        to_a = expect_send(rb.handle(&mut rng_b, &to_b));
        to_b = next_a;
    }
    // Both are ready. B takes A's confirmation and acknowledges it; A has
    // not seen B's confirmation (`to_a`) yet.
    let ack = expect_send(rb.handle(&mut rng_b, &to_b));
    assert!(rb.is_confirmed());

    assert_eq!(ra.handle(&mut rng_a, &ack).err(), Some(Error::WrongRound));
    assert!(ra.ready_share().is_some() && !ra.is_confirmed());
    let mut relabelled = mpc_core::wire::Envelope::decode(&ack, usize::MAX).unwrap();
    relabelled.round = 4;
    let error = ra.handle(&mut rng_a, &relabelled.encode()).unwrap_err();
    assert_eq!(error, Error::KeyConfirmationFailed);
    assert!(!ra.is_confirmed());
    let new_b = rb.ready_share().unwrap();
    let spec_ack = spec::hash(tags::REFRESH_ACK, &[new_b.transcript_hash(), &[2]]);
    assert_eq!(payload(&ack), spec_ack, "the acknowledgement of §18");
    // The genuine confirmation no longer helps (sticky), and A never
    // finalized: it keeps signing with the old epoch.
    assert_eq!(ra.handle(&mut rng_a, &to_a).err(), Some(error));
    let prehash = Prehash::sha256(b"old epoch");
    let (out, _) = run_honest(3, &mut Sign::new(&a, prehash), &mut Sign::new(&b, prehash));
    libsecp_verify(&a.public_key(), &prehash, &out);
}

// ---- 12: hash-the-message confusion ----

/// Line 12: the signing API takes a 32-byte `Prehash`. `Prehash::sha256` is
/// SHA-256 and nothing else; `Prehash::from_bytes` is signed as given (no
/// hidden second hash). A peer that signs under the other convention ends
/// both sides in `PrehashMismatch` (Abort), with no signature. Exercises the
/// prehash comparison of the online step.
#[test]
fn checklist_12_prehash_conventions_are_explicit_and_checked() {
    // Fails without: the prehash comparison of the online step.
    use sha2::Digest;
    let (a, b) = dkg_pair(114);
    let message = *b"thirty-two bytes, exactly 32 ok!";
    let hashed = Prehash::sha256(&message);
    let digest: [u8; 32] = sha2::Sha256::digest(message).into();
    assert_eq!(hashed.as_bytes(), &digest);
    let raw = Prehash::from_bytes(message);

    let (out, _) = run_honest(1, &mut Sign::new(&a, raw), &mut Sign::new(&b, raw));
    assert!(verifies(&a.public_key(), &raw, &out));
    assert!(!verifies(&a.public_key(), &Prehash::sha256(&message), &out));
    let (out, _) = run_honest(2, &mut Sign::new(&a, hashed), &mut Sign::new(&b, hashed));
    libsecp_verify(&a.public_key(), &hashed, &out);

    let (end_a, end_b) = run_pair(
        3,
        &mut Sign::new(&a, hashed),
        &mut Sign::new(&b, raw),
        |_| {},
    );
    assert_eq!(end_a.error(), Some(Error::PrehashMismatch));
    assert_eq!(end_b.error(), Some(Error::PrehashMismatch));
    assert_eq!(Error::PrehashMismatch.class(), AbortClass::Abort);
}

// ---- 14: secrets in memory and logs ----

/// Asserts at compile time that a type wipes itself when dropped.
fn zeroized_on_drop<T: zeroize::ZeroizeOnDrop>() {}

/// Line 14: nothing secret in `Debug` output (the only text `mpc-core`
/// produces: it has no logging dependency), and every type holding secrets
/// wipes itself on drop (checked at compile time). Exercises the redacted
/// `Debug` impls of `KeyShare` and `Presignature` and the zeroizing types.
#[test]
fn checklist_14_debug_output_and_memory_hold_no_secrets() {
    // Fails without: the redacted `Debug` impls; fails to compile without a `ZeroizeOnDrop`.
    zeroized_on_drop::<KeyShare>();
    zeroized_on_drop::<Presignature>();
    zeroized_on_drop::<mpc_core::hazmat::ot::setup::OtSenderKey>();
    zeroized_on_drop::<mpc_core::hazmat::ot::setup::OtReceiverKey>();
    zeroized_on_drop::<mpc_core::hazmat::ot::pprf::AllSeeds>();
    zeroized_on_drop::<mpc_core::hazmat::ot::pprf::PuncturedSeeds>();
    zeroized_on_drop::<mpc_core::hazmat::ot::base::BaseOtReceiver>();
    zeroized_on_drop::<mpc_core::hazmat::ot::base::BaseOtSenderOutput>();
    zeroized_on_drop::<extension::ExtSenderOutput>();
    zeroized_on_drop::<mpc_core::hazmat::vole::RvoleReceiver>();
    zeroized_on_drop::<mpc_core::hazmat::vole::RvoleReceiverOutput>();
    zeroized_on_drop::<mpc_core::hazmat::vole::RvoleSenderOutput>();

    let (a, b) = dkg_pair(115);
    let _: zeroize::Zeroizing<Vec<u8>> = a.to_bytes();
    let (pre_a, _) = run_honest(1, &mut Presign::new(&a), &mut Presign::new(&b));
    let record = ShareRecord::of(&a);
    let mut secrets: Vec<Vec<u8>> = vec![record.secret.to_vec()];
    secrets.extend(record.sender_seeds.iter().take(40).map(|s| s.to_vec()));
    secrets.extend(record.receiver_seeds.iter().take(40).map(|s| s.to_vec()));
    let presignature = pre_a.to_bytes();
    // phi, u and v: the three scalars before the verifying key at the end.
    let end = presignature.len() - 34;
    for k in 1..=3 {
        secrets.push(presignature[end - 32 * k..end - 32 * (k - 1)].to_vec());
    }
    let texts = [
        format!("{a:?}"),
        format!("{a:#?}"),
        format!("{pre_a:?}"),
        format!("{pre_a:#?}"),
    ];
    for text in &texts {
        let lower = text.to_lowercase();
        for secret in &secrets {
            assert!(
                !lower.contains(&hex::encode(secret)),
                "hex secret in {text}"
            );
            assert!(!text.contains(&format!("{secret:?}")), "bytes in {text}");
            assert!(
                !lower.contains(&hex::encode(&secret[..8])),
                "partial hex in {text}"
            );
        }
    }
    // No logging crate among mpc-core's dependencies.
    let manifest = include_str!("../../Cargo.toml");
    let dependencies = manifest
        .split("\n[")
        .filter(|section| section.starts_with("dependencies]"))
        .flat_map(str::lines)
        .skip(1)
        .filter_map(|line| line.split('=').next())
        .map(str::trim);
    for name in dependencies {
        assert!(
            !["log", "tracing", "slog", "defmt", "env_logger"].contains(&name),
            "mpc-core depends on the logging crate {name}"
        );
    }
}

// ---- 15: AEAD nonces ----

/// Line 15 (AEAD nonce reuse): every export draws a fresh 192-bit
/// XChaCha20-Poly1305 nonce (and a fresh ephemeral key); exporting the same
/// share to the same one-time key many times never repeats one, and a
/// ciphertext under another export's nonce does not decrypt. Exercises the
/// random nonce of `export_share`.
#[test]
fn checklist_15_export_nonces_are_random_and_never_repeat() {
    // Fails without: the random nonce of `export_share`.
    let (client, server) = dkg_pair(116);
    let mut rng = rng(5);
    let onetime = k256::SecretKey::random(&mut rng);
    // Layout (PROTOCOL.md §16): version, key id, epoch, role, P, nonce, ct.
    let nonce_at = 1 + 32 + 8 + 1 + 33;
    let mut nonces = std::collections::BTreeSet::new();
    let mut ephemerals = std::collections::BTreeSet::new();
    let mut exports = Vec::new();
    for _ in 0..64 {
        let bytes = export_share(&mut rng, &server, &onetime.public_key())
            .unwrap()
            .to_bytes();
        assert!(nonces.insert(bytes[nonce_at..nonce_at + 24].to_vec()));
        assert!(ephemerals.insert(bytes[nonce_at - 33..nonce_at].to_vec()));
        exports.push(bytes);
    }
    // No nonce is a counter or a constant: no two share a 16-byte prefix.
    let prefixes: std::collections::BTreeSet<_> = nonces.iter().map(|n| n[..16].to_vec()).collect();
    assert_eq!(prefixes.len(), nonces.len());
    let mut swapped = exports[0].clone();
    swapped[nonce_at..nonce_at + 24].copy_from_slice(&exports[1][nonce_at..nonce_at + 24]);
    let swapped = ExportCiphertext::from_bytes(&swapped).unwrap();
    assert_eq!(
        import_export(&client, &onetime, &swapped).err(),
        Some(Error::ExportFailed)
    );
    let genuine = ExportCiphertext::from_bytes(&exports[0]).unwrap();
    let key = import_export(&client, &onetime, &genuine).unwrap();
    assert_eq!(
        g_mul(&key.to_nonzero_scalar()),
        client.public_key().to_projective()
    );
}
