//! Refresh: new shares of the same key; epochs never mix; a cut-off refresh
//! always leaves an epoch both parties can sign with; tampering is rejected;
//! a burned key signs again only after a refresh.
use crate::common;

use common::{dkg_pair, libsecp_verify, run_honest, run_pair, End, InTransit};
use mpc_core::wire::Role;
use mpc_core::{AbortClass, Error, KeyShare, Prehash, Protocol, Refresh, Sign};

fn copy(share: &KeyShare) -> KeyShare {
    KeyShare::from_bytes(&share.to_bytes()).unwrap()
}

fn sign_and_verify(seed: u64, a: &KeyShare, b: &KeyShare, expected: &k256::PublicKey) {
    let prehash = Prehash::sha256(&seed.to_be_bytes());
    let (out, _) = run_honest(seed, &mut Sign::new(a, prehash), &mut Sign::new(b, prehash));
    libsecp_verify(expected, &prehash, &out);
}

#[test]
fn refreshed_shares_sign_under_the_same_key_with_fresh_material() {
    let (a, b) = dkg_pair(1);
    let (a1, b1) = run_honest(
        2,
        &mut Refresh::new(&a, b"r1"),
        &mut Refresh::new(&b, b"r1"),
    );
    assert_eq!((a1.epoch(), b1.epoch()), (1, 1));
    assert_eq!(a1.public_key(), a.public_key());
    assert_eq!(a1.key_id(), a.key_id());
    assert_eq!(a1.chain_code(), a.chain_code());
    assert_eq!(a1.xpub().to_string(), a.xpub().to_string());
    assert_ne!(a1.public_share(Role::A), a.public_share(Role::A));
    assert_ne!(a1.transcript_hash(), a.transcript_hash());
    sign_and_verify(3, &a1, &b1, &a.public_key());
    // And again: epoch 2.
    let (a2, b2) = run_honest(
        4,
        &mut Refresh::new(&a1, b"r2"),
        &mut Refresh::new(&b1, b"r2"),
    );
    assert_eq!(a2.epoch(), 2);
    sign_and_verify(5, &a2, &b2, &a.public_key());
}

#[test]
fn old_and_new_shares_never_sign_together() {
    let (a, b) = dkg_pair(6);
    let (a1, b1) = run_honest(7, &mut Refresh::new(&a, b""), &mut Refresh::new(&b, b""));
    let prehash = Prehash::sha256(b"mix");
    for (x, y) in [(&a1, &b), (&a, &b1)] {
        let (ea, eb) = run_pair(
            8,
            &mut Sign::new(x, prehash),
            &mut Sign::new(y, prehash),
            |_| {},
        );
        assert!(!ea.is_finished() && !eb.is_finished());
    }
}

/// Storage per PROTOCOL.md §18: what a party holds after an interrupted
/// refresh, and which epoch it asks for.
struct Stored {
    old: KeyShare,
    new: Option<KeyShare>,
    confirmed: bool,
    finalized: bool,
}

impl Stored {
    fn holds(&self, epoch: u64) -> Option<&KeyShare> {
        if epoch == self.old.epoch() && !self.finalized {
            return Some(&self.old);
        }
        self.new.as_ref().filter(|n| n.epoch() == epoch)
    }

    fn requested_epoch(&self) -> u64 {
        if self.confirmed || self.finalized {
            self.old.epoch() + 1
        } else {
            self.old.epoch()
        }
    }
}

fn stored(old: &KeyShare, refresh: &Refresh<'_>, end: End<KeyShare>) -> Stored {
    match end {
        End::Finished(new) => Stored {
            old: copy(old),
            new: Some(new),
            confirmed: true,
            finalized: true,
        },
        _ => Stored {
            old: copy(old),
            new: refresh.ready_share().map(copy),
            confirmed: refresh.is_confirmed(),
            finalized: false,
        },
    }
}

#[test]
fn a_refresh_cut_off_after_any_message_leaves_a_common_epoch() {
    let (a, b) = dkg_pair(9);
    let mut outcomes = std::collections::BTreeSet::new();
    for cut in 0..=10usize {
        let mut delivered = 0usize;
        let mut ra = Refresh::new(&a, b"cut");
        let mut rb = Refresh::new(&b, b"cut");
        let (ea, eb) = run_pair(cut as u64, &mut ra, &mut rb, |m| {
            if delivered >= cut {
                m.drop = true;
            }
            delivered += 1;
        });
        let sa = stored(&a, &ra, ea);
        let sb = stored(&b, &rb, eb);
        for (requester, responder, requester_is_a) in [(&sa, &sb, true), (&sb, &sa, false)] {
            let epoch = requester.requested_epoch();
            let mine = requester
                .holds(epoch)
                .expect("requester holds its own choice");
            let theirs = responder
                .holds(epoch)
                .unwrap_or_else(|| panic!("cut {cut}: responder lacks epoch {epoch}"));
            let (sa_share, sb_share) = if requester_is_a {
                (mine, theirs)
            } else {
                (theirs, mine)
            };
            sign_and_verify(100 + cut as u64, sa_share, sb_share, &a.public_key());
            outcomes.insert((cut, epoch));
        }
    }
    // Early cuts sign with epoch 0, a complete run with epoch 1.
    assert!(outcomes.contains(&(0, 0)) && outcomes.contains(&(10, 1)));
}

fn tamper_b_to_a(round: u8, offset: usize) -> impl FnMut(&mut InTransit<'_>) {
    move |m| {
        if m.sender == Role::B && m.round == round {
            m.edit_payload(|p| p[offset] ^= 1);
        }
    }
}

#[test]
fn tampered_refresh_messages_are_rejected() {
    use Error::*;
    let (a, b) = dkg_pair(10);
    let cases: &[(u8, usize, &[Error])] = &[
        (1, 40, &[CommitmentMismatch]),
        (2, 5, &[InvalidPoint, CommitmentMismatch]),
        (2, 70, &[CommitmentMismatch]),
        (2, 100, &[InvalidPoint, InvalidProof]),
        (2, 140, &[InvalidProof]),
        (2, 162 + 64, &[InvalidPoint]),
        (3, 10, &[InvalidPoint, PprfProofFailed]),
        (4, 0, &[KeyConfirmationFailed]),
        (5, 31, &[KeyConfirmationFailed]),
    ];
    for (n, (round, offset, allowed)) in cases.iter().enumerate() {
        let mut ra = Refresh::new(&a, b"t");
        let mut rb = Refresh::new(&b, b"t");
        let (ea, _) = run_pair(n as u64, &mut ra, &mut rb, tamper_b_to_a(*round, *offset));
        let err = ea
            .error()
            .unwrap_or_else(|| panic!("round {round} byte {offset}: A did not fail"));
        assert!(
            allowed.contains(&err),
            "round {round} byte {offset}: {err:?}"
        );
        assert_ne!(err.class(), AbortClass::Ignore);
        // Before its own round-4 message A held nothing new; a failure in the
        // last two rounds leaves the ready (unconfirmed) share, which signs
        // with nothing until confirmed.
        assert!(!ra.is_confirmed() || *round == 5);
    }
}

#[test]
fn a_burned_key_signs_again_only_after_a_refresh() {
    let (mut a, mut b) = dkg_pair(11);
    a.burn_ot_material();
    b.burn_ot_material();
    let prehash = Prehash::sha256(b"burned");
    let mut rng = common::rng(1);
    assert_eq!(
        Sign::new(&a, prehash).start(&mut rng).err(),
        Some(Error::OtMaterialBurned)
    );
    // The flag survives storage.
    let stored = copy(&a);
    assert!(stored.is_ot_burned());
    assert_eq!(
        Sign::new(&stored, prehash).start(&mut rng).err(),
        Some(Error::OtMaterialBurned)
    );
    // Refresh needs no OT material from the old epoch.
    let (a1, b1) = run_honest(
        12,
        &mut Refresh::new(&stored, b"after-ban"),
        &mut Refresh::new(&b, b"after-ban"),
    );
    assert!(!a1.is_ot_burned() && !b1.is_ot_burned());
    sign_and_verify(13, &a1, &b1, &a.public_key());
}
