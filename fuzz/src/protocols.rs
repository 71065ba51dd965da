//! Honest runs of every two-party protocol from fixed seeds: the fixtures of
//! the `protocol_rounds`, `keyshare_decode` and `backup_verify` targets and
//! of the corpus generator.
//!
//! Each party has its own seeded RNG, so its state after `start` and `k`
//! handled messages depends only on that RNG and those messages: a fresh
//! party fed the recorded peer messages replays the recorded run exactly.
//! That is how `protocol_rounds` rebuilds the party under test at any round
//! without `Clone` (protocol state machines have none, by design). The
//! recorded run is checked for determinism when it is built.

use std::sync::OnceLock;

use arbitrary::{Arbitrary, Unstructured};
use k256::ecdsa::signature::hazmat::PrehashVerifier;
use k256::elliptic_curve::ops::MulByGenerator;
use k256::ProjectivePoint;
use mpc_core::backup::Backup;
use mpc_core::error::Result;
use mpc_core::sign::ClaimSet;
use mpc_core::wire::{Envelope, ProtocolId, Role, MAX_MESSAGE_BYTES};
use mpc_core::{
    DerivationPath, Dkg, KeyShare, OnlineSign, Prehash, Presign, Presignature, Protocol, Refresh,
    SchnorrOnline, SchnorrPresign, SchnorrPresignature, SchnorrSignature, Sign, SignSchnorr,
    SignatureOutput, Step, Taproot,
};
use rand_chacha::ChaCha20Rng;

use crate::{rng, tamper};

/// The context of the fixture DKG.
pub const DKG_CONTEXT: &[u8] = b"mpc-core-fuzz/dkg";
/// The context of the fixture refresh.
pub const REFRESH_CONTEXT: &[u8] = b"mpc-core-fuzz/refresh";
/// What the fixture signs (and presignatures are used for).
pub const PREHASH: [u8; 32] = [0x3c; 32];

/// The fixture prehash.
#[must_use]
pub fn prehash() -> Prehash {
    Prehash::from_bytes(PREHASH)
}

/// A two-party protocol of `mpc-core`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Key generation (4 rounds).
    Dkg,
    /// Signing (4 rounds).
    Sign,
    /// Presigning (3 rounds).
    Presign,
    /// The online step of a stored presignature (1 round: signing round 4).
    Online,
    /// Refresh (5 rounds).
    Refresh,
    /// Two-party BIP340 signing (2 rounds), under the BIP32 path
    /// [`SCHNORR_PATH`] with the Taproot key-path tweak.
    SignSchnorr,
    /// The BIP340 nonce round run ahead (1 round), same path and tweak.
    PresignSchnorr,
    /// The online round of the fixture BIP340 presignature (1 round).
    OnlineSchnorr,
}

/// The BIP32 path the fixture's BIP340 signature is made under.
pub const SCHNORR_PATH: [u32; 2] = [0, 5];

fn schnorr_path() -> DerivationPath {
    DerivationPath::from_indices(&SCHNORR_PATH).expect("non-hardened fixture path")
}

impl Kind {
    /// Every kind, in selector order.
    pub const ALL: [Self; 8] = [
        Self::Dkg,
        Self::Sign,
        Self::Presign,
        Self::Online,
        Self::Refresh,
        Self::SignSchnorr,
        Self::PresignSchnorr,
        Self::OnlineSchnorr,
    ];

    /// Messages each party sends (and receives) in a run.
    #[must_use]
    pub const fn rounds(self) -> usize {
        match self {
            Self::Dkg | Self::Sign => 4,
            Self::Presign => 3,
            Self::Online | Self::PresignSchnorr | Self::OnlineSchnorr => 1,
            Self::Refresh => 5,
            Self::SignSchnorr => 2,
        }
    }

    /// A short name, for corpus file names.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::Dkg => "dkg",
            Self::Sign => "sign",
            Self::Presign => "presign",
            Self::Online => "online",
            Self::Refresh => "refresh",
            Self::SignSchnorr => "sign_bip340",
            Self::PresignSchnorr => "presign_bip340",
            Self::OnlineSchnorr => "online_bip340",
        }
    }

    fn index(self) -> u8 {
        match self {
            Self::Dkg => 0,
            Self::Sign => 1,
            Self::Presign => 2,
            Self::Online => 3,
            Self::Refresh => 4,
            Self::SignSchnorr => 5,
            Self::PresignSchnorr => 6,
            Self::OnlineSchnorr => 7,
        }
    }

    /// The seed of the RNG of party `role` in this kind's fixture run.
    fn seed(self, role: Role) -> u64 {
        0xf022_0000 + 16 * u64::from(self.index()) + u64::from(role.as_u8())
    }
}

/// What a protocol finishes with.
#[derive(Debug)]
pub enum Output {
    /// DKG and refresh.
    Share(Box<KeyShare>),
    /// Signing and the online step.
    Signature(SignatureOutput),
    /// Presigning.
    Presignature(Box<Presignature>),
    /// BIP340 signing and its online round.
    Schnorr(SchnorrSignature),
    /// BIP340 presigning.
    SchnorrPresignature(Box<SchnorrPresignature>),
}

impl Output {
    /// A comparable encoding: storage bytes, or the signature's bytes.
    #[must_use]
    pub fn encoding(&self) -> Vec<u8> {
        match self {
            Self::Share(share) => share.to_bytes().to_vec(),
            Self::Signature(out) => {
                let mut bytes = out.signature.to_bytes().to_vec();
                bytes.push(out.recovery_id.to_byte());
                bytes
            }
            Self::Presignature(presignature) => presignature.to_bytes().to_vec(),
            Self::Schnorr(out) => [&out.signature[..], &out.public_key].concat(),
            Self::SchnorrPresignature(presignature) => presignature.to_bytes().to_vec(),
        }
    }
}

/// One party of one protocol (the protocol trait has generic methods, so
/// the kinds are wrapped in an enum rather than a trait object).
pub enum Party {
    /// Key generation.
    Dkg(Dkg),
    /// Signing with a fixture share.
    Sign(Sign<'static>),
    /// Presigning with a fixture share.
    Presign(Presign<'static>),
    /// The online step of a fixture presignature.
    Online(OnlineSign),
    /// Refresh of a fixture share.
    Refresh(Refresh<'static>),
    /// BIP340 signing with a fixture share.
    SignSchnorr(SignSchnorr<'static>),
    /// BIP340 presigning with a fixture share.
    PresignSchnorr(SchnorrPresign<'static>),
    /// The online round of a fixture BIP340 presignature.
    OnlineSchnorr(SchnorrOnline<'static>),
}

fn step<T>(result: Result<Step<T>>, wrap: fn(T) -> Output) -> Result<Step<Output>> {
    Ok(match result? {
        Step::Send(bytes) => Step::Send(bytes),
        Step::Finished(output) => Step::Finished(wrap(output)),
    })
}

impl Party {
    /// A fresh party of `kind` as `role`, with the RNG of the fixture run.
    /// Builds the fixtures it depends on (keys, presignatures) on first use.
    #[must_use]
    pub fn fresh(kind: Kind, role: Role) -> (Self, ChaCha20Rng) {
        let party = match kind {
            Kind::Dkg => Self::Dkg(Dkg::new(role, DKG_CONTEXT)),
            Kind::Sign => Self::Sign(Sign::new(key(role), prehash())),
            Kind::Presign => Self::Presign(Presign::new(key(role))),
            Kind::Online => {
                let stored = &transcript(Kind::Presign).outputs[role.index()];
                let presignature =
                    Presignature::from_bytes(stored).expect("fixture presignature decodes");
                // A fresh claim set: each fuzz run is a new process.
                let online =
                    OnlineSign::new(key(role), presignature, prehash(), &mut ClaimSet::new())
                        .expect("fixture presignature matches its share");
                Self::Online(online)
            }
            Kind::Refresh => Self::Refresh(Refresh::new(key(role), REFRESH_CONTEXT)),
            Kind::SignSchnorr => Self::SignSchnorr(
                SignSchnorr::new(key(role), &PREHASH, &schnorr_path(), Taproot::KeyPathOnly)
                    .expect("fixture path derives"),
            ),
            Kind::PresignSchnorr => Self::PresignSchnorr(
                SchnorrPresign::new(key(role), &schnorr_path(), Taproot::KeyPathOnly)
                    .expect("fixture path derives"),
            ),
            Kind::OnlineSchnorr => {
                let stored = &transcript(Kind::PresignSchnorr).outputs[role.index()];
                let presignature =
                    SchnorrPresignature::from_bytes(stored).expect("fixture presignature decodes");
                Self::OnlineSchnorr(
                    SchnorrOnline::new(
                        key(role),
                        presignature,
                        &PREHASH,
                        &schnorr_path(),
                        Taproot::KeyPathOnly,
                        &mut ClaimSet::new(),
                    )
                    .expect("fixture presignature matches its share"),
                )
            }
        };
        (party, rng(kind.seed(role)))
    }

    /// [`Protocol::start`].
    ///
    /// # Errors
    ///
    /// As [`Protocol::start`].
    pub fn start(&mut self, rng: &mut ChaCha20Rng) -> Result<Vec<u8>> {
        match self {
            Self::Dkg(p) => p.start(rng),
            Self::Sign(p) => p.start(rng),
            Self::Presign(p) => p.start(rng),
            Self::Online(p) => p.start(rng),
            Self::Refresh(p) => p.start(rng),
            Self::SignSchnorr(p) => p.start(rng),
            Self::PresignSchnorr(p) => p.start(rng),
            Self::OnlineSchnorr(p) => p.start(rng),
        }
    }

    /// [`Protocol::handle`], with the output wrapped.
    ///
    /// # Errors
    ///
    /// As [`Protocol::handle`].
    pub fn handle(&mut self, rng: &mut ChaCha20Rng, message: &[u8]) -> Result<Step<Output>> {
        match self {
            Self::Dkg(p) => step(p.handle(rng, message), |share| {
                Output::Share(Box::new(share))
            }),
            Self::Sign(p) => step(p.handle(rng, message), Output::Signature),
            Self::Presign(p) => step(p.handle(rng, message), |presignature| {
                Output::Presignature(Box::new(presignature))
            }),
            Self::Online(p) => step(p.handle(rng, message), Output::Signature),
            Self::Refresh(p) => step(p.handle(rng, message), |share| {
                Output::Share(Box::new(share))
            }),
            Self::SignSchnorr(p) => step(p.handle(rng, message), Output::Schnorr),
            Self::PresignSchnorr(p) => step(p.handle(rng, message), |presignature| {
                Output::SchnorrPresignature(Box::new(presignature))
            }),
            Self::OnlineSchnorr(p) => step(p.handle(rng, message), Output::Schnorr),
        }
    }

    /// For a refresh: whether it is confirmed, and its ready share's bytes.
    #[must_use]
    pub fn refresh_state(&self) -> Option<(bool, Option<Vec<u8>>)> {
        match self {
            Self::Refresh(p) => Some((
                p.is_confirmed(),
                p.ready_share().map(|share| share.to_bytes().to_vec()),
            )),
            _ => None,
        }
    }
}

/// An honest run: every message each party sent, and its output.
pub struct Transcript {
    /// `sent[role.index()][i]`: the `i+1`-th message of that party (its
    /// round-`i+1` message).
    pub sent: [Vec<Vec<u8>>; 2],
    /// Each party's output, encoded ([`Output::encoding`]).
    pub outputs: [Vec<u8>; 2],
}

fn run(kind: Kind) -> Transcript {
    let roles = [Role::A, Role::B];
    let mut parties = roles.map(|role| Party::fresh(kind, role));
    let mut sent: [Vec<Vec<u8>>; 2] = Default::default();
    for (role, (party, rng)) in roles.iter().zip(&mut parties) {
        sent[role.index()].push(party.start(rng).expect("honest start"));
    }
    let mut outputs: [Option<Vec<u8>>; 2] = [None, None];
    for round in 0..kind.rounds() {
        for role in roles {
            let (party, rng) = &mut parties[role.index()];
            let incoming = sent[role.peer().index()][round].clone();
            match party.handle(rng, &incoming).expect("honest run failed") {
                Step::Send(bytes) => sent[role.index()].push(bytes),
                Step::Finished(output) => {
                    assert_eq!(round + 1, kind.rounds(), "{kind:?} finished early");
                    outputs[role.index()] = Some(output.encoding());
                }
            }
        }
    }
    let outputs = outputs.map(|o| o.expect("honest run did not finish"));
    Transcript { sent, outputs }
}

/// Replays one party of a recorded run and checks it sends the same bytes.
fn check_replay(kind: Kind, role: Role, transcript: &Transcript) {
    let (mut party, mut rng) = Party::fresh(kind, role);
    let own = &transcript.sent[role.index()];
    let peer = &transcript.sent[role.peer().index()];
    assert_eq!(party.start(&mut rng).expect("start"), own[0]);
    for (i, incoming) in peer.iter().enumerate() {
        match party.handle(&mut rng, incoming).expect("replay") {
            Step::Send(bytes) => assert_eq!(bytes, own[i + 1], "{kind:?} replay diverged"),
            Step::Finished(output) => {
                assert_eq!(output.encoding(), transcript.outputs[role.index()]);
            }
        }
    }
}

fn checked_run(kind: Kind) -> Transcript {
    let transcript = run(kind);
    for role in [Role::A, Role::B] {
        check_replay(kind, role, &transcript);
    }
    transcript
}

/// The recorded honest run of `kind` (built and checked on first use).
pub fn transcript(kind: Kind) -> &'static Transcript {
    static DKG: OnceLock<Transcript> = OnceLock::new();
    static SIGN: OnceLock<Transcript> = OnceLock::new();
    static PRESIGN: OnceLock<Transcript> = OnceLock::new();
    static ONLINE: OnceLock<Transcript> = OnceLock::new();
    static REFRESH: OnceLock<Transcript> = OnceLock::new();
    static SIGN_SCHNORR: OnceLock<Transcript> = OnceLock::new();
    static PRESIGN_SCHNORR: OnceLock<Transcript> = OnceLock::new();
    static ONLINE_SCHNORR: OnceLock<Transcript> = OnceLock::new();
    let cell = match kind {
        Kind::Dkg => &DKG,
        Kind::Sign => &SIGN,
        Kind::Presign => &PRESIGN,
        Kind::Online => &ONLINE,
        Kind::Refresh => &REFRESH,
        Kind::SignSchnorr => &SIGN_SCHNORR,
        Kind::PresignSchnorr => &PRESIGN_SCHNORR,
        Kind::OnlineSchnorr => &ONLINE_SCHNORR,
    };
    cell.get_or_init(|| {
        let transcript = checked_run(kind);
        match kind {
            Kind::Dkg | Kind::Refresh => {
                let [a, b] = transcript
                    .outputs
                    .each_ref()
                    .map(|bytes| KeyShare::from_bytes(bytes).expect("fixture share decodes"));
                assert_eq!(a.public_key(), b.public_key());
                assert_eq!(a.key_id(), b.key_id());
                assert_eq!(a.transcript_hash(), b.transcript_hash());
            }
            Kind::Sign | Kind::Online => {
                assert_eq!(transcript.outputs[0], transcript.outputs[1]);
                let signature = k256::ecdsa::Signature::from_slice(&transcript.outputs[0][..64])
                    .expect("fixture signature decodes");
                k256::ecdsa::VerifyingKey::from(key(Role::A).public_key())
                    .verify_prehash(&PREHASH, &signature)
                    .expect("fixture signature verifies");
            }
            Kind::SignSchnorr | Kind::OnlineSchnorr => {
                assert_eq!(transcript.outputs[0], transcript.outputs[1]);
                let bytes = &transcript.outputs[0];
                let signature: [u8; 64] = bytes[..64].try_into().expect("64-byte signature");
                let public_key: [u8; 32] = bytes[64..].try_into().expect("x-only key");
                assert_eq!(public_key, schnorr_key(), "fixture output key");
                assert!(mpc_core::schnorr::verify(&public_key, &PREHASH, &signature));
            }
            Kind::Presign | Kind::PresignSchnorr => {}
        }
        transcript
    })
}

/// The fixture key shares (from the fixture DKG).
pub fn keys() -> &'static [KeyShare; 2] {
    static KEYS: OnceLock<[KeyShare; 2]> = OnceLock::new();
    KEYS.get_or_init(|| {
        transcript(Kind::Dkg)
            .outputs
            .each_ref()
            .map(|bytes| KeyShare::from_bytes(bytes).expect("fixture share decodes"))
    })
}

/// Party `role`'s fixture key share.
#[must_use]
pub fn key(role: Role) -> &'static KeyShare {
    &keys()[role.index()]
}

/// Whether `out` is a valid signature of the fixture prehash under the
/// fixture key (the root key: the fixtures sign at the root).
#[must_use]
pub fn verifies(out: &SignatureOutput) -> bool {
    k256::ecdsa::VerifyingKey::from(key(Role::A).public_key())
        .verify_prehash(&PREHASH, &out.signature)
        .is_ok()
}

/// The x-only Taproot output key the fixture's BIP340 signature is made
/// under.
#[must_use]
pub fn schnorr_key() -> [u8; 32] {
    mpc_core::schnorr::signing_keys(key(Role::A), &schnorr_path(), Taproot::KeyPathOnly)
        .expect("fixture keys")
        .1
}

/// Whether `out` is a valid BIP340 signature of the fixture message under
/// the fixture's output key (not merely under the key it names).
#[must_use]
pub fn schnorr_verifies(out: &SchnorrSignature) -> bool {
    out.public_key == schnorr_key()
        && mpc_core::schnorr::verify(&out.public_key, &PREHASH, &out.signature)
}

/// The protocol id and addressing of a recorded message.
#[must_use]
pub fn envelope_of(message: &[u8]) -> Envelope {
    Envelope::decode(message, MAX_MESSAGE_BYTES).expect("recorded messages decode")
}

/// `ProtocolId` a party of `kind` expects (the online step is signing
/// round 4).
#[must_use]
pub const fn protocol_id(kind: Kind) -> ProtocolId {
    match kind {
        Kind::Dkg => ProtocolId::Dkg,
        Kind::Sign | Kind::Online => ProtocolId::Sign,
        Kind::Presign => ProtocolId::Presign,
        Kind::Refresh => ProtocolId::Refresh,
        Kind::SignSchnorr | Kind::OnlineSchnorr => ProtocolId::SignSchnorr,
        Kind::PresignSchnorr => ProtocolId::PresignSchnorr,
    }
}

// ---- the input of `protocol_rounds` ----

/// How the fuzzed message is built from the body.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// The body is the whole message.
    Raw,
    /// The body is the payload of a well-formed envelope with the honest
    /// message's version, protocol, session, round and sender.
    Envelope,
    /// The body is a list of tamper records (see [`tamper`]) applied to the
    /// honest message's payload, in the same well-formed envelope.
    Tamper,
}

impl Mode {
    /// Every mode, in selector order.
    pub const ALL: [Self; 3] = [Self::Raw, Self::Envelope, Self::Tamper];
}

/// One `protocol_rounds` input: which party, at which round, gets which
/// message. Bytes 0-3 select kind, role, round and mode (each byte modulo
/// the number of choices); the rest is the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Case {
    /// The protocol.
    pub kind: Kind,
    /// The party under test (the honest one).
    pub role: Role,
    /// The round (1-based) whose peer message is replaced.
    pub round: usize,
    /// How the replacement is built.
    pub mode: Mode,
    /// The fuzzed bytes.
    pub body: Vec<u8>,
}

fn pick<T: Copy>(byte: u8, choices: &[T]) -> T {
    choices[usize::from(byte) % choices.len()]
}

impl Case {
    fn header(u: &mut Unstructured<'_>) -> arbitrary::Result<(Kind, Role, usize, Mode)> {
        let kind = pick(u8::arbitrary(u)?, &Kind::ALL);
        let role = pick(u8::arbitrary(u)?, &[Role::A, Role::B]);
        let round = usize::from(u8::arbitrary(u)?) % kind.rounds() + 1;
        let mode = pick(u8::arbitrary(u)?, &Mode::ALL);
        Ok((kind, role, round, mode))
    }

    /// The input bytes that select this case (the inverse of parsing).
    #[must_use]
    pub fn to_bytes(&self) -> Vec<u8> {
        let mode = Mode::ALL.iter().position(|m| *m == self.mode).unwrap_or(0);
        let mut out = vec![
            self.kind.index(),
            self.role.as_u8() - 1,
            u8::try_from(self.round - 1).expect("small round"),
            u8::try_from(mode).expect("small mode"),
        ];
        out.extend_from_slice(&self.body);
        out
    }

    /// The message handed to the party, given the honest one.
    #[must_use]
    pub fn message(&self, honest: &[u8]) -> Vec<u8> {
        match self.mode {
            Mode::Raw => self.body.clone(),
            Mode::Envelope | Mode::Tamper => {
                let mut envelope = envelope_of(honest);
                envelope.payload = match self.mode {
                    Mode::Envelope => self.body.clone(),
                    _ => tamper(&envelope.payload, &self.body),
                };
                envelope.encode()
            }
        }
    }
}

impl<'a> Arbitrary<'a> for Case {
    fn arbitrary(u: &mut Unstructured<'a>) -> arbitrary::Result<Self> {
        let (kind, role, round, mode) = Self::header(u)?;
        let body = Vec::<u8>::arbitrary(u)?;
        Ok(Self {
            kind,
            role,
            round,
            mode,
            body,
        })
    }

    fn arbitrary_take_rest(mut u: Unstructured<'a>) -> arbitrary::Result<Self> {
        let (kind, role, round, mode) = Self::header(&mut u)?;
        Ok(Self {
            kind,
            role,
            round,
            mode,
            body: u.take_rest().to_vec(),
        })
    }
}

// ---- verifiable backup ----

const BACKUP_SEED: u64 = 0xbac0_0001;

/// A backup of the fixture's party-B share.
pub struct BackupFixture {
    /// The encoded backup.
    pub bytes: Vec<u8>,
    /// The recovery key pair.
    pub recovery: k256::SecretKey,
    /// The share's public share `Q`.
    pub public_share: ProjectivePoint,
}

/// The backup fixture (built on first use).
pub fn backup_fixture() -> &'static BackupFixture {
    static FIXTURE: OnceLock<BackupFixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let share = key(Role::B);
        let mut rng = rng(BACKUP_SEED);
        let recovery = k256::SecretKey::random(&mut rng);
        let backup = Backup::create(&mut rng, share, &recovery.public_key());
        let public_share = share.public_share(Role::B);
        backup
            .verify(&public_share, &recovery.public_key())
            .expect("fixture backup verifies");
        let secret = backup.decrypt(&recovery).expect("fixture backup decrypts");
        assert_eq!(
            ProjectivePoint::mul_by_generator(&*secret.to_nonzero_scalar()),
            public_share
        );
        BackupFixture {
            bytes: backup.to_bytes(),
            recovery,
            public_share,
        }
    })
}
