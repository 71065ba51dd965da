//! The message envelope (PROTOCOL.md §3.3).
//!
//! Every protocol message travels in one [`Envelope`]: a format version, the
//! protocol, the session id, the round, the sender's role and an opaque
//! payload. The encoding is postcard, fields in this order:
//!
//! ```text
//! version: u8 | protocol: u8 | session: [u8; 32] | round: u8 | sender: u8 |
//! payload: varint(len) || bytes
//! ```
//!
//! [`Envelope::decode`] accepts only the canonical encoding of a value (no
//! trailing bytes, no over-long varints) and checks the size cap before it
//! reads anything, so a decoded envelope re-encodes to exactly its input.
//! [`Envelope::check`] then compares the addressing fields with what the
//! session expects. Every error here is of class
//! [`AbortClass::Ignore`](crate::AbortClass::Ignore): anyone on the network
//! can produce such bytes, so they blame nobody.

use alloc::vec::Vec;
use core::fmt;

use serde::{Deserialize, Serialize, Serializer};

use crate::error::{Error, Result};

/// The envelope format version this build speaks.
pub const FORMAT_VERSION: u8 = 1;

/// Hard cap, in bytes, on any encoded envelope. [`Envelope::decode`] rejects
/// longer inputs before decoding them, whatever limit the caller passes.
pub const MAX_MESSAGE_BYTES: usize = 128 * 1024;

/// Which protocol a message belongs to.
#[non_exhaustive]
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ProtocolId {
    /// Distributed key generation.
    Dkg = 1,
    /// Signing.
    Sign = 2,
    /// Presigning (the message-independent part of signing).
    Presign = 3,
    /// Share refresh (rotation).
    Refresh = 4,
    /// Export of the server share to the owner.
    Export = 5,
    /// Two-party BIP340 Schnorr signing (PROTOCOL.md §20).
    SignSchnorr = 6,
    /// The message-independent nonce round of BIP340 signing, run ahead
    /// (PROTOCOL.md §20.5); its online step runs as [`Self::SignSchnorr`].
    PresignSchnorr = 7,
}

impl ProtocolId {
    /// The protocol with wire code `code`, or `None` if no protocol has it.
    #[must_use]
    pub const fn from_u8(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::Dkg),
            2 => Some(Self::Sign),
            3 => Some(Self::Presign),
            4 => Some(Self::Refresh),
            5 => Some(Self::Export),
            6 => Some(Self::SignSchnorr),
            7 => Some(Self::PresignSchnorr),
            _ => None,
        }
    }

    /// The protocol's wire code.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }
}

/// A party's role in a two-party protocol.
#[repr(u8)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    /// Party A: the client, holder of share P1.
    A = 1,
    /// Party B: the server, holder of share P2.
    B = 2,
}

impl Role {
    /// The other party's role.
    #[must_use]
    pub const fn peer(self) -> Self {
        match self {
            Self::A => Self::B,
            Self::B => Self::A,
        }
    }

    /// The role with wire code `code`, or `None` if no role has it.
    #[must_use]
    pub const fn from_u8(code: u8) -> Option<Self> {
        match code {
            1 => Some(Self::A),
            2 => Some(Self::B),
            _ => None,
        }
    }

    /// The role's wire code.
    #[must_use]
    pub const fn as_u8(self) -> u8 {
        self as u8
    }

    /// The role's index in per-role arrays: A is 0, B is 1.
    #[must_use]
    pub const fn index(self) -> usize {
        match self {
            Self::A => 0,
            Self::B => 1,
        }
    }

    /// `(A's value, B's value)` from this party's value and its peer's.
    pub fn order<T>(self, own: T, peer: T) -> (T, T) {
        match self {
            Self::A => (own, peer),
            Self::B => (peer, own),
        }
    }
}

/// A 32-byte session id. Public data: both parties contribute to it and it
/// is sent in the clear in every envelope.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct SessionId(pub [u8; 32]);

impl SessionId {
    /// The id's bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }
}

impl From<[u8; 32]> for SessionId {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for SessionId {
    /// Prints the first 8 bytes in hex, enough to tell sessions apart in logs.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionId(")?;
        for byte in &self.0[..8] {
            write!(f, "{byte:02x}")?;
        }
        f.write_str("..)")
    }
}

/// One protocol message with its addressing (PROTOCOL.md §3.3).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// Format version; [`FORMAT_VERSION`] for every envelope this build
    /// creates or accepts.
    pub version: u8,
    /// The protocol the message belongs to.
    pub protocol: ProtocolId,
    /// The session the message belongs to.
    pub session: SessionId,
    /// The round number within the protocol.
    pub round: u8,
    /// The role of the party that sent the message.
    pub sender: Role,
    /// The round's message, encoded by the protocol.
    pub payload: Vec<u8>,
}

/// What the receiving session expects of the next envelope; see
/// [`Envelope::check`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Expected {
    /// The session's protocol.
    pub protocol: ProtocolId,
    /// The session's id.
    pub session: SessionId,
    /// The round the session is waiting for.
    pub round: u8,
    /// The peer's role.
    pub sender: Role,
}

/// The postcard layout of an envelope. Wire codes stay `u8` here so that
/// unknown codes become a typed error rather than a serde failure.
#[derive(Serialize, Deserialize)]
struct Wire<'a> {
    version: u8,
    protocol: u8,
    session: [u8; 32],
    round: u8,
    sender: u8,
    #[serde(borrow, serialize_with = "serialize_bytes")]
    payload: &'a [u8],
}

/// Serializes a byte string as postcard bytes (`varint(len) || bytes`),
/// which is also what it borrows back from on decode.
fn serialize_bytes<S: Serializer>(
    bytes: &&[u8],
    serializer: S,
) -> core::result::Result<S::Ok, S::Error> {
    serializer.serialize_bytes(bytes)
}

impl<'a> Wire<'a> {
    fn to_vec(&self) -> Option<Vec<u8>> {
        postcard::to_allocvec(self).ok()
    }

    fn of(envelope: &'a Envelope) -> Self {
        Self {
            version: envelope.version,
            protocol: envelope.protocol.as_u8(),
            session: envelope.session.0,
            round: envelope.round,
            sender: envelope.sender.as_u8(),
            payload: &envelope.payload,
        }
    }
}

impl Envelope {
    /// A new envelope of the current [`FORMAT_VERSION`].
    #[must_use]
    pub fn new(
        protocol: ProtocolId,
        session: SessionId,
        round: u8,
        sender: Role,
        payload: Vec<u8>,
    ) -> Self {
        Self {
            version: FORMAT_VERSION,
            protocol,
            session,
            round,
            sender,
            payload,
        }
    }

    /// The canonical encoding of the envelope.
    ///
    /// Encoding does not check the size cap: an envelope whose encoding is
    /// longer than [`MAX_MESSAGE_BYTES`] encodes, but no peer will decode it.
    /// (Postcard serialization into a growable buffer cannot fail for this
    /// type; were it ever to, the result would be empty, which no decoder
    /// accepts.)
    #[must_use]
    pub fn encode(&self) -> Vec<u8> {
        Wire::of(self).to_vec().unwrap_or_default()
    }

    /// Decodes the canonical encoding of an envelope.
    ///
    /// `max_len` is the caller's limit for the message it expects (e.g. the
    /// largest message of the current protocol and round); the effective
    /// limit is the smaller of `max_len` and [`MAX_MESSAGE_BYTES`], and it is
    /// checked before anything is decoded.
    ///
    /// # Errors
    ///
    /// - [`Error::MessageTooLarge`] if `bytes` is longer than the limit;
    /// - [`Error::UnsupportedVersion`] if the first byte is not
    ///   [`FORMAT_VERSION`];
    /// - [`Error::MalformedEnvelope`] if the bytes do not decode, name an
    ///   unknown protocol or role, have trailing bytes, or are not the
    ///   canonical encoding of the decoded value (e.g. an over-long varint).
    pub fn decode(bytes: &[u8], max_len: usize) -> Result<Self> {
        if bytes.len() > max_len.min(MAX_MESSAGE_BYTES) {
            return Err(Error::MessageTooLarge);
        }
        match bytes.first() {
            None => return Err(Error::MalformedEnvelope),
            Some(&version) if version != FORMAT_VERSION => return Err(Error::UnsupportedVersion),
            Some(_) => {}
        }
        let (wire, rest) =
            postcard::take_from_bytes::<Wire<'_>>(bytes).map_err(|_| Error::MalformedEnvelope)?;
        if !rest.is_empty() {
            return Err(Error::MalformedEnvelope);
        }
        let protocol = ProtocolId::from_u8(wire.protocol).ok_or(Error::MalformedEnvelope)?;
        let sender = Role::from_u8(wire.sender).ok_or(Error::MalformedEnvelope)?;
        // Canonical form: the decoded value must encode to exactly the input.
        // This rejects over-long varints and anything else postcard tolerates.
        if wire.to_vec().as_deref() != Some(bytes) {
            return Err(Error::MalformedEnvelope);
        }
        Ok(Self {
            version: wire.version,
            protocol,
            session: SessionId(wire.session),
            round: wire.round,
            sender,
            payload: wire.payload.to_vec(),
        })
    }

    /// Checks the envelope's addressing against what the session expects.
    ///
    /// # Errors
    ///
    /// The first mismatch, in this order: [`Error::UnsupportedVersion`] if
    /// the version is not [`FORMAT_VERSION`] (only possible for envelopes
    /// built by hand), [`Error::WrongProtocol`], [`Error::WrongSession`],
    /// [`Error::WrongRound`], [`Error::WrongSender`].
    pub fn check(&self, expected: &Expected) -> Result<()> {
        if self.version != FORMAT_VERSION {
            return Err(Error::UnsupportedVersion);
        }
        if self.protocol != expected.protocol {
            return Err(Error::WrongProtocol);
        }
        if self.session != expected.session {
            return Err(Error::WrongSession);
        }
        if self.round != expected.round {
            return Err(Error::WrongRound);
        }
        if self.sender != expected.sender {
            return Err(Error::WrongSender);
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    extern crate std;

    use super::*;
    use crate::AbortClass;
    use alloc::vec;
    use proptest::prelude::*;

    const SID: SessionId = SessionId([0x5a; 32]);

    fn sample(payload_len: usize) -> Envelope {
        Envelope::new(ProtocolId::Sign, SID, 3, Role::B, vec![0xa7; payload_len])
    }

    fn expected() -> Expected {
        Expected {
            protocol: ProtocolId::Sign,
            session: SID,
            round: 3,
            sender: Role::B,
        }
    }

    #[test]
    fn known_encoding() {
        let env = Envelope::new(
            ProtocolId::Dkg,
            SessionId([0x11; 32]),
            2,
            Role::A,
            vec![0xde, 0xad],
        );
        let mut want = vec![0x01, 0x01];
        want.extend_from_slice(&[0x11; 32]);
        want.extend_from_slice(&[0x02, 0x01, 0x02, 0xde, 0xad]);
        assert_eq!(env.encode(), want);
        assert_eq!(Envelope::decode(&want, MAX_MESSAGE_BYTES), Ok(env));
    }

    #[test]
    fn codes_round_trip() {
        for code in 0..=u8::MAX {
            if let Some(p) = ProtocolId::from_u8(code) {
                assert_eq!(p.as_u8(), code);
            }
            if let Some(r) = Role::from_u8(code) {
                assert_eq!(r.as_u8(), code);
                assert_eq!(r.peer().peer(), r);
                assert_ne!(r.peer(), r);
            }
        }
        assert_eq!(ProtocolId::from_u8(0), None);
        assert_eq!(ProtocolId::from_u8(8), None);
        assert_eq!(Role::from_u8(0), None);
        assert_eq!(Role::from_u8(3), None);
    }

    #[test]
    fn session_id_debug_is_short() {
        let s = std::format!("{:?}", SessionId([0xab; 32]));
        assert_eq!(s, "SessionId(abababababababab..)");
    }

    #[test]
    fn truncated_inputs_rejected() {
        let bytes = sample(200).encode();
        assert_eq!(
            Envelope::decode(&[], usize::MAX),
            Err(Error::MalformedEnvelope)
        );
        for len in 1..bytes.len() {
            assert_eq!(
                Envelope::decode(&bytes[..len], usize::MAX),
                Err(Error::MalformedEnvelope),
                "prefix of length {len}"
            );
        }
    }

    #[test]
    fn trailing_bytes_rejected() {
        let mut bytes = sample(10).encode();
        bytes.push(0);
        assert_eq!(
            Envelope::decode(&bytes, usize::MAX),
            Err(Error::MalformedEnvelope)
        );
    }

    #[test]
    fn over_long_varint_rejected() {
        // Payload length 5 as the two-byte varint 0x85 0x00 instead of 0x05.
        let bytes = sample(5).encode();
        let header = 1 + 1 + 32 + 1 + 1;
        assert_eq!(bytes[header], 5);
        let mut long = bytes[..header].to_vec();
        long.extend_from_slice(&[0x85, 0x00]);
        long.extend_from_slice(&bytes[header + 1..]);
        assert_eq!(
            Envelope::decode(&long, usize::MAX),
            Err(Error::MalformedEnvelope)
        );
        // And a length varint that runs past the end of u32/u64 range.
        let mut huge = bytes[..header].to_vec();
        huge.extend_from_slice(&[0xff; 11]);
        assert_eq!(
            Envelope::decode(&huge, usize::MAX),
            Err(Error::MalformedEnvelope)
        );
    }

    #[test]
    fn declared_length_beyond_input_rejected() {
        let mut bytes = sample(5).encode();
        let header = 1 + 1 + 32 + 1 + 1;
        bytes[header] = 6;
        assert_eq!(
            Envelope::decode(&bytes, usize::MAX),
            Err(Error::MalformedEnvelope)
        );
    }

    #[test]
    fn unknown_codes_rejected() {
        let bytes = sample(1).encode();
        for (index, bad) in [(1usize, 0u8), (1, 8), (1, 0xff), (35, 0), (35, 3)] {
            let mut b = bytes.clone();
            b[index] = bad;
            assert_eq!(
                Envelope::decode(&b, usize::MAX),
                Err(Error::MalformedEnvelope)
            );
        }
    }

    #[test]
    fn wrong_version_rejected() {
        for version in [0u8, 2, 0x80, 0xff] {
            let mut bytes = sample(4).encode();
            bytes[0] = version;
            assert_eq!(
                Envelope::decode(&bytes, usize::MAX),
                Err(Error::UnsupportedVersion)
            );
        }
        // Even a lone version byte is classified by its version.
        assert_eq!(Envelope::decode(&[2], 1), Err(Error::UnsupportedVersion));
    }

    #[test]
    fn size_limits() {
        let header = 1 + 1 + 32 + 1 + 1;
        // The largest payload that fits the hard cap (3-byte varint length).
        let max_payload = MAX_MESSAGE_BYTES - header - 3;
        let fits = sample(max_payload).encode();
        assert_eq!(fits.len(), MAX_MESSAGE_BYTES);
        assert_eq!(
            Envelope::decode(&fits, usize::MAX).map(|e| e.payload.len()),
            Ok(max_payload)
        );
        let over = sample(max_payload + 1).encode();
        assert_eq!(
            Envelope::decode(&over, usize::MAX),
            Err(Error::MessageTooLarge)
        );
        // The size check comes first, even for garbage and wrong versions.
        let garbage = vec![0xffu8; MAX_MESSAGE_BYTES + 1];
        assert_eq!(
            Envelope::decode(&garbage, usize::MAX),
            Err(Error::MessageTooLarge)
        );
        // The caller's tighter limit applies.
        let small = sample(10).encode();
        assert!(Envelope::decode(&small, small.len()).is_ok());
        assert_eq!(
            Envelope::decode(&small, small.len() - 1),
            Err(Error::MessageTooLarge)
        );
    }

    #[test]
    fn check_mismatches() {
        let exp = expected();
        assert_eq!(sample(0).check(&exp), Ok(()));

        let mut e = sample(0);
        e.protocol = ProtocolId::Dkg;
        assert_eq!(e.check(&exp), Err(Error::WrongProtocol));

        let mut e = sample(0);
        e.session.0[31] ^= 1;
        assert_eq!(e.check(&exp), Err(Error::WrongSession));

        let mut e = sample(0);
        e.round = 4;
        assert_eq!(e.check(&exp), Err(Error::WrongRound));

        let mut e = sample(0);
        e.sender = Role::A;
        assert_eq!(e.check(&exp), Err(Error::WrongSender));

        let mut e = sample(0);
        e.version = 2;
        assert_eq!(e.check(&exp), Err(Error::UnsupportedVersion));

        // Protocol is checked before session, session before round.
        let mut e = sample(0);
        e.protocol = ProtocolId::Refresh;
        e.session = SessionId([0; 32]);
        e.round = 0;
        assert_eq!(e.check(&exp), Err(Error::WrongProtocol));
    }

    #[test]
    fn envelope_errors_are_ignore_class() {
        for e in [
            Error::UnsupportedVersion,
            Error::WrongProtocol,
            Error::WrongSession,
            Error::WrongRound,
            Error::WrongSender,
            Error::MessageTooLarge,
            Error::MalformedEnvelope,
        ] {
            assert_eq!(e.class(), AbortClass::Ignore);
        }
    }

    fn protocol() -> impl Strategy<Value = ProtocolId> {
        prop_oneof![
            Just(ProtocolId::Dkg),
            Just(ProtocolId::Sign),
            Just(ProtocolId::Presign),
            Just(ProtocolId::Refresh),
            Just(ProtocolId::Export),
            Just(ProtocolId::SignSchnorr),
            Just(ProtocolId::PresignSchnorr),
        ]
    }

    fn role() -> impl Strategy<Value = Role> {
        prop_oneof![Just(Role::A), Just(Role::B)]
    }

    prop_compose! {
        fn envelope()(
            protocol in protocol(),
            session in any::<[u8; 32]>(),
            round in any::<u8>(),
            sender in role(),
            payload in proptest::collection::vec(any::<u8>(), 0..600),
        ) -> Envelope {
            Envelope::new(protocol, SessionId(session), round, sender, payload)
        }
    }

    proptest! {
        #[test]
        fn round_trip(env in envelope()) {
            let bytes = env.encode();
            prop_assert_eq!(Envelope::decode(&bytes, MAX_MESSAGE_BYTES), Ok(env));
        }

        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            if let Ok(env) = Envelope::decode(&bytes, usize::MAX) {
                prop_assert_eq!(env.encode(), bytes);
                let _ = env.check(&expected());
            }
        }

        #[test]
        fn valid_prefix_with_random_tail(
            env in envelope(),
            cut in any::<prop::sample::Index>(),
            tail in proptest::collection::vec(any::<u8>(), 0..8),
        ) {
            let bytes = env.encode();
            let mut mutated = bytes[..cut.index(bytes.len())].to_vec();
            mutated.extend_from_slice(&tail);
            match Envelope::decode(&mutated, usize::MAX) {
                Ok(decoded) => prop_assert_eq!(decoded.encode(), mutated),
                Err(e) => prop_assert_eq!(e.class(), AbortClass::Ignore),
            }
        }

        #[test]
        fn single_byte_flip_is_typed(env in envelope(), at in any::<prop::sample::Index>(), x in 1u8..) {
            let mut bytes = env.encode();
            let i = at.index(bytes.len());
            bytes[i] ^= x;
            match Envelope::decode(&bytes, usize::MAX) {
                Ok(decoded) => {
                    prop_assert_eq!(decoded.encode(), bytes);
                    prop_assert_ne!(decoded, env);
                }
                Err(e) => prop_assert_eq!(e.class(), AbortClass::Ignore),
            }
        }

        #[test]
        fn check_accepts_exactly_matching(env in envelope(), other in envelope()) {
            let exp = Expected {
                protocol: env.protocol,
                session: env.session,
                round: env.round,
                sender: env.sender,
            };
            prop_assert_eq!(env.check(&exp), Ok(()));
            let same = other.protocol == env.protocol
                && other.session == env.session
                && other.round == env.round
                && other.sender == env.sender;
            prop_assert_eq!(other.check(&exp).is_ok(), same);
        }
    }
}
