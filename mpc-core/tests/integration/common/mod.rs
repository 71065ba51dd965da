//! In-process pair driver with tamper, drop and replay hooks.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic
)]

use mpc_core::wire::{Envelope, Role, MAX_MESSAGE_BYTES};
use mpc_core::{AbortClass, Dkg, Error, KeyShare, Prehash, Protocol, SignatureOutput, Step};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

pub fn rng(seed: u64) -> ChaCha20Rng {
    ChaCha20Rng::seed_from_u64(seed)
}

/// How one party ended.
#[derive(Debug)]
pub enum End<T> {
    Finished(T),
    Failed(Error),
    /// Still waiting: its peer stopped sending.
    Waiting,
}

impl<T> End<T> {
    pub fn unwrap(self) -> T {
        match self {
            End::Finished(t) => t,
            End::Failed(e) => panic!("party failed: {e}"),
            End::Waiting => panic!("party still waiting"),
        }
    }

    pub fn is_finished(&self) -> bool {
        matches!(self, End::Finished(_))
    }

    pub fn error(&self) -> Option<Error> {
        match self {
            End::Failed(e) => Some(*e),
            _ => None,
        }
    }
}

/// A message in transit: who sent it, its envelope round, and its bytes.
pub struct InTransit<'a> {
    pub sender: Role,
    pub round: u8,
    pub bytes: &'a mut Vec<u8>,
    /// Set to drop the message.
    pub drop: bool,
}

impl InTransit<'_> {
    /// Applies `edit` to the payload and re-encodes the envelope.
    pub fn edit_payload(&mut self, edit: impl FnOnce(&mut Vec<u8>)) {
        let mut env = Envelope::decode(self.bytes, MAX_MESSAGE_BYTES).unwrap();
        edit(&mut env.payload);
        *self.bytes = env.encode();
    }
}

/// Runs `a` (role A) and `b` (role B) to completion, passing each message
/// through `hook` on its way. Ignore-class errors drop the message and the
/// party keeps waiting, as a transport would.
pub fn run_pair<PA: Protocol, PB: Protocol>(
    seed: u64,
    a: &mut PA,
    b: &mut PB,
    mut hook: impl FnMut(&mut InTransit<'_>),
) -> (End<PA::Output>, End<PB::Output>) {
    use std::collections::VecDeque;
    let mut rng = rng(seed);
    let mut to_b: VecDeque<Vec<u8>> = VecDeque::from([a.start(&mut rng).unwrap()]);
    let mut to_a: VecDeque<Vec<u8>> = VecDeque::from([b.start(&mut rng).unwrap()]);
    let mut end_a = End::Waiting;
    let mut end_b = End::Waiting;
    while !(to_a.is_empty() && to_b.is_empty()) {
        if let Some(mut msg) = to_b.pop_front() {
            if deliver(Role::A, &mut msg, &mut hook) && matches!(end_b, End::Waiting) {
                match b.handle(&mut rng, &msg) {
                    Ok(Step::Send(next)) => to_a.push_back(next),
                    Ok(Step::Finished(out)) => end_b = End::Finished(out),
                    Err(e) if e.class() == AbortClass::Ignore => {}
                    Err(e) => end_b = End::Failed(e),
                }
            }
        }
        if let Some(mut msg) = to_a.pop_front() {
            if deliver(Role::B, &mut msg, &mut hook) && matches!(end_a, End::Waiting) {
                match a.handle(&mut rng, &msg) {
                    Ok(Step::Send(next)) => to_b.push_back(next),
                    Ok(Step::Finished(out)) => end_a = End::Finished(out),
                    Err(e) if e.class() == AbortClass::Ignore => {}
                    Err(e) => end_a = End::Failed(e),
                }
            }
        }
    }
    (end_a, end_b)
}

fn deliver(sender: Role, msg: &mut Vec<u8>, hook: &mut impl FnMut(&mut InTransit<'_>)) -> bool {
    let round = Envelope::decode(msg, MAX_MESSAGE_BYTES)
        .map(|e| e.round)
        .unwrap_or(0);
    let mut transit = InTransit {
        sender,
        round,
        bytes: msg,
        drop: false,
    };
    hook(&mut transit);
    !transit.drop
}

/// Runs a pair with no interference and unwraps both outputs.
pub fn run_honest<PA: Protocol, PB: Protocol>(
    seed: u64,
    a: &mut PA,
    b: &mut PB,
) -> (PA::Output, PB::Output) {
    let (ea, eb) = run_pair(seed, a, b, |_| {});
    (ea.unwrap(), eb.unwrap())
}

/// A fresh key: both parties' shares.
pub fn dkg_pair(seed: u64) -> (KeyShare, KeyShare) {
    run_honest(
        seed,
        &mut Dkg::new(Role::A, b"test"),
        &mut Dkg::new(Role::B, b"test"),
    )
}

/// Checks a signature with libsecp256k1, and that `ecrecover` with its
/// recovery id gives `public_key`.
pub fn libsecp_verify(public_key: &k256::PublicKey, prehash: &Prehash, out: &SignatureOutput) {
    let secp = secp256k1::Secp256k1::verification_only();
    let pk = secp256k1::PublicKey::from_slice(&public_key.to_sec1_bytes()).unwrap();
    let msg = secp256k1::Message::from_digest(*prehash.as_bytes());
    let compact = out.signature.to_bytes();
    let sig = secp256k1::ecdsa::Signature::from_compact(&compact).unwrap();
    // libsecp256k1 accepts only low-S signatures.
    secp.verify_ecdsa(&msg, &sig, &pk)
        .expect("libsecp256k1 rejects the signature");
    let recid =
        secp256k1::ecdsa::RecoveryId::from_i32(i32::from(out.recovery_id.to_byte())).unwrap();
    let recoverable =
        secp256k1::ecdsa::RecoverableSignature::from_compact(&compact, recid).unwrap();
    assert_eq!(
        secp.recover_ecdsa(&msg, &recoverable).unwrap(),
        pk,
        "ecrecover gives another key"
    );
}

/// A presignature guard that counts the claims it is asked for and grants
/// every one: a lying guard, to see whether (and how often) a step asked.
#[derive(Default)]
pub struct Counting(pub usize);

impl mpc_core::sign::PresignatureGuard for Counting {
    fn claim(
        &mut self,
        _: &mpc_core::KeyId,
        _: u64,
        _: &mpc_core::wire::SessionId,
    ) -> Result<(), mpc_core::sign::ClaimRefused> {
        self.0 += 1;
        Ok(())
    }
}
