//! Fuzzes every round of every protocol (DKG, signing, presigning, the
//! online step, refresh, BIP340 signing) from the point of view of an
//! honest party.
//!
//! The input ([`Case`]) picks the protocol, the honest party's role, a round
//! `r` and a mode; the rest is the body. The party is rebuilt at round `r`
//! by replaying the recorded honest peer messages `1..r` to a fresh party
//! with the fixture's seeded RNG (cheap for signing, a share of a DKG for key
//! generation and refresh), then handed, in place of the peer's round-`r`
//! message, the raw body, a well-formed envelope with the body as payload,
//! or the honest payload with tamper records applied.
//!
//! What must hold:
//! - no panic; every error is typed: `Ignore` (addressing only: for a
//!   correctly addressed envelope, only `MessageTooLarge`), `Abort` or `Ban`,
//!   never `Local` (peer bytes are not local misuse);
//! - the honest message gives exactly the recorded reply or output;
//! - an ignored message leaves the party as it was: the honest message then
//!   still gives the recorded reply or output;
//! - an `Abort`/`Ban` error is sticky: the honest message gets it again;
//! - nothing finishes before the last round;
//! - after an accepted changed message the party continues with the honest
//!   peer's later messages, and then:
//!   - key generation and refresh never finish: every accepted byte is
//!     bound into the key-confirmation hash (or fixes the session id), so
//!     the honest peer's confirmation cannot match;
//!   - a signature (signing, online step) verifies under the key;
//!   - a BIP340 signature verifies under the fixture's Taproot output key;
//!   - a presignature either fails its online step against the honest
//!     peer's recorded presignature or gives a verifying signature;
//! - a refresh is confirmed only with the recorded new share.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mpc_core::local::run_pair;
use mpc_core::sign::ClaimSet;
use mpc_core::{AbortClass, Error, OnlineSign, Presignature, Step};
use mpc_core_fuzz::protocols::{
    key, prehash, schnorr_verifies, transcript, verifies, Case, Kind, Mode, Output, Party,
};
use mpc_core_fuzz::rng;

fuzz_target!(|case: Case| {
    let kind = case.kind;
    let rounds = kind.rounds();
    let record = transcript(kind);
    let own = &record.sent[case.role.index()];
    let peer = &record.sent[case.role.peer().index()];

    let (mut party, mut rng) = Party::fresh(kind, case.role);
    let first = party.start(&mut rng).expect("harness: start failed");
    assert_eq!(
        first, own[0],
        "harness: start is not deterministic in its rng"
    );
    for (i, incoming) in peer.iter().take(case.round - 1).enumerate() {
        match party.handle(&mut rng, incoming) {
            Ok(Step::Send(bytes)) => assert_eq!(
                bytes,
                own[i + 1],
                "harness: the replay is not deterministic in its rng"
            ),
            other => panic!("harness: honest replay failed at message {i}: {other:?}"),
        }
    }

    let honest = &peer[case.round - 1];
    let message = case.message(honest);
    let is_honest = message == *honest;
    match party.handle(&mut rng, &message) {
        Err(error) => {
            assert!(!is_honest, "honest message rejected: {error:?}");
            match error.class() {
                AbortClass::Ignore => {
                    // A correctly addressed envelope is ignored only when it
                    // is over the round's size cap.
                    if case.mode != Mode::Raw {
                        assert_eq!(error, Error::MessageTooLarge, "addressed, yet ignored");
                    }
                    // Nothing changed: the honest message still works.
                    let next = party.handle(&mut rng, honest);
                    expect_recorded(next, case.round, rounds, own, &record.outputs, &case);
                }
                AbortClass::Abort | AbortClass::Ban => {
                    assert_eq!(
                        party.handle(&mut rng, honest).err(),
                        Some(error),
                        "error not sticky"
                    );
                }
                other => panic!("peer bytes gave a {other:?}-class error: {error:?}"),
            }
        }
        Ok(Step::Send(bytes)) => {
            assert!(case.round < rounds, "sent a message after the last round");
            if is_honest {
                assert_eq!(bytes, own[case.round], "honest message, other reply");
            } else {
                continue_after_change(&mut party, &mut rng, &peer[case.round..], kind);
            }
        }
        Ok(Step::Finished(output)) => {
            assert_eq!(case.round, rounds, "finished before the last round");
            if is_honest {
                assert_eq!(output.encoding(), record.outputs[case.role.index()]);
            } else {
                check_changed_output(kind, output);
            }
        }
    }

    if let Some((confirmed, ready)) = party.refresh_state() {
        if confirmed {
            assert_eq!(
                ready.as_deref(),
                Some(record.outputs[case.role.index()].as_slice()),
                "confirmed with another share than the recorded one"
            );
        }
    }
});

/// The honest message after an ignored one: the recorded reply or output.
fn expect_recorded(
    next: mpc_core::error::Result<Step<Output>>,
    round: usize,
    rounds: usize,
    own: &[Vec<u8>],
    outputs: &[Vec<u8>; 2],
    case: &Case,
) {
    match next {
        Ok(Step::Send(bytes)) if round < rounds => {
            assert_eq!(bytes, own[round], "an ignored message changed the state");
        }
        Ok(Step::Finished(output)) if round == rounds => {
            assert_eq!(
                output.encoding(),
                outputs[case.role.index()],
                "an ignored message changed the output"
            );
        }
        other => panic!("an ignored message changed the state: {other:?}"),
    }
}

/// The honest peer's later messages after an accepted changed one.
fn continue_after_change(
    party: &mut Party,
    rng: &mut rand_chacha::ChaCha20Rng,
    later: &[Vec<u8>],
    kind: Kind,
) {
    for (i, incoming) in later.iter().enumerate() {
        match party.handle(rng, incoming) {
            Ok(Step::Send(_)) => {}
            Ok(Step::Finished(output)) => {
                assert_eq!(i + 1, later.len(), "finished before the last round");
                check_changed_output(kind, output);
            }
            // A changed nonce moved the session: the honest messages are
            // addressed to the old one.
            Err(error) if error.class() == AbortClass::Ignore => {}
            Err(error) => {
                assert!(
                    matches!(error.class(), AbortClass::Abort | AbortClass::Ban),
                    "{error:?}"
                );
                return;
            }
        }
    }
}

/// What a run with a changed (accepted) peer message may output.
fn check_changed_output(kind: Kind, output: Output) {
    match output {
        Output::Share(share) => panic!(
            "{kind:?} finished with a share after a changed message: {share:?} \
             (the key confirmation should have failed)"
        ),
        Output::Signature(out) => {
            assert!(verifies(&out), "{kind:?} output an invalid signature");
        }
        Output::Presignature(presignature) => online_with_recorded_peer(*presignature),
        Output::Schnorr(out) => {
            assert!(
                schnorr_verifies(&out),
                "{kind:?} output an invalid signature"
            );
        }
        // Changed peer nonces give a presignature under another session id
        // than the honest peer's: its online round never meets the peer's,
        // so there is nothing to sign (PROTOCOL.md §20.5).
        Output::SchnorrPresignature(_) => {}
    }
}

/// Runs the online step of a presignature made from a changed transcript
/// against the honest peer's recorded one: it fails, or it signs validly.
fn online_with_recorded_peer(presignature: Presignature) {
    let role = presignature.role();
    let stored = &transcript(Kind::Presign).outputs[role.peer().index()];
    let peer = Presignature::from_bytes(stored).expect("fixture presignature decodes");
    let online = |share, presignature| {
        OnlineSign::new(share, presignature, prehash(), &mut ClaimSet::new())
            .expect("a presignature of the fixture share")
    };
    let mut mine = online(key(role), presignature);
    let mut theirs = online(key(role.peer()), peer);
    let mut rng = rng(0);
    let result = match role {
        mpc_core::wire::Role::A => run_pair(&mut rng, &mut mine, &mut theirs).map(|(m, _, _)| m),
        mpc_core::wire::Role::B => run_pair(&mut rng, &mut theirs, &mut mine).map(|(_, m, _)| m),
    };
    if let Ok(out) = result {
        assert!(verifies(&out), "a changed presignature signed invalidly");
    }
}
