//! Domain-separated SHA-256 hashing (PROTOCOL.md §2).
//!
//! ```text
//! enc(x)             = u64_be(len(x)) || x
//! H(tag; m1..mt)     = SHA-256(enc(tag) || enc(m1) || ... || enc(mt))
//! Hx(tag; m1..mt; n) = first n bytes of H(tag; u32(0), m1..mt) || H(tag; u32(1), m1..mt) || ...
//! H2S(tag; m1..mt)   = int_be(Hx(tag; m1..mt; 64)) mod q
//! ```
//!
//! Every input is length-prefixed, so the encoding is injective; every use has
//! its own versioned [`Tag`].

use k256::elliptic_curve::bigint::U512;
use k256::elliptic_curve::ops::Reduce;
use k256::Scalar;
use sha2::{Digest, Sha256};

/// A versioned domain-separation tag. All tags are listed in [`tags`] and in
/// PROTOCOL.md §2.4; no two uses share one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tag(&'static str);

impl Tag {
    /// The tag's ASCII bytes.
    #[must_use]
    pub const fn as_bytes(&self) -> &'static [u8] {
        self.0.as_bytes()
    }
}

/// Every domain tag of the protocol (PROTOCOL.md §2.4).
pub mod tags {
    use super::Tag;

    /// Base-OT session id.
    pub const OT_BASE_SID: Tag = Tag("mpc/ot/base/sid/v1");
    /// Framing of the base-OT hash-to-curve input.
    pub const OT_BASE_H2C: Tag = Tag("mpc/ot/base/h2c-msg/v1");
    /// Base-OT output keys.
    pub const OT_BASE_KEY: Tag = Tag("mpc/ot/base/key/v1");
    /// GGM tree session id.
    pub const PPRF_SID: Tag = Tag("mpc/ot/pprf/sid/v1");
    /// GGM node expansion.
    pub const PPRF_EXPAND: Tag = Tag("mpc/ot/pprf/expand/v1");
    /// Per-leaf proof value.
    pub const PPRF_LEAF_PROOF: Tag = Tag("mpc/ot/pprf/leaf-proof/v1");
    /// Per-leaf seed.
    pub const PPRF_LEAF_SEED: Tag = Tag("mpc/ot/pprf/leaf-seed/v1");
    /// Per-tree proof check value.
    pub const PPRF_CHECK: Tag = Tag("mpc/ot/pprf/check/v1");
    /// Fingerprint of one direction's OT setup transcript.
    pub const OT_SETUP_FP: Tag = Tag("mpc/ot/setup-fp/v1");
    /// Per-key, per-direction OT context.
    pub const OT_KEYCTX: Tag = Tag("mpc/ot/keyctx/v1");
    /// Extension batch session id.
    pub const OT_EXT_SID: Tag = Tag("mpc/ot/ext/sid/v1");
    /// Extension PRG initial counter block.
    pub const OT_EXT_IV: Tag = Tag("mpc/ot/ext/iv/v1");
    /// Hash of the extension matrix `U`, seeding the check challenge.
    pub const OT_EXT_U: Tag = Tag("mpc/ot/ext/u/v1");
    /// Consistency-check challenge.
    pub const OT_EXT_CHI: Tag = Tag("mpc/ot/ext/chi/v1");
    /// Hash of the whole extension message, bound into the RVOLE.
    pub const OT_EXT_MSG: Tag = Tag("mpc/ot/ext/msg/v1");
    /// Correlation-robust hash from extended OT columns to scalars.
    pub const OT_EXT_ROT: Tag = Tag("mpc/ot/ext/rot/v1");
    /// RVOLE session id.
    pub const VOLE_SID: Tag = Tag("mpc/vole/sid/v1");
    /// RVOLE gadget vector.
    pub const VOLE_GADGET: Tag = Tag("mpc/vole/gadget/v1");
    /// Seed of the RVOLE check coefficients.
    pub const VOLE_THETA_SEED: Tag = Tag("mpc/vole/theta-seed/v1");
    /// RVOLE check coefficients.
    pub const VOLE_THETA: Tag = Tag("mpc/vole/theta/v1");
    /// RVOLE check digest.
    pub const VOLE_MU: Tag = Tag("mpc/vole/mu/v1");
    /// DKG setup session id (from the caller's public context).
    pub const DKG_SETUP: Tag = Tag("mpc/dkg/setup/v1");
    /// DKG round-1 commitment.
    pub const DKG_COMMIT: Tag = Tag("mpc/dkg/commit/v1");
    /// DKG joint session id.
    pub const DKG_SID: Tag = Tag("mpc/dkg/sid/v1");
    /// DKG Schnorr proof challenge.
    pub const DKG_SCHNORR: Tag = Tag("mpc/dkg/schnorr/v1");
    /// Chain code from both contributions.
    pub const DKG_CHAIN_CODE: Tag = Tag("mpc/dkg/chain-code/v1");
    /// Key-confirmation transcript hash.
    pub const DKG_CONFIRM: Tag = Tag("mpc/dkg/confirm/v1");
    /// Per-role key-confirmation value.
    pub const DKG_CONFIRM_ROLE: Tag = Tag("mpc/dkg/confirm-role/v1");
    /// Key id.
    pub const DKG_KEY_ID: Tag = Tag("mpc/dkg/key-id/v1");
    /// Signing setup session id (key, epoch, derivation, mode).
    pub const SIGN_SETUP: Tag = Tag("mpc/sign/setup/v1");
    /// Signing round-1 nonce commitment.
    pub const SIGN_COMMIT: Tag = Tag("mpc/sign/commit/v1");
    /// Signing joint session id.
    pub const SIGN_SID: Tag = Tag("mpc/sign/sid/v1");
    /// Round-4 nonce offset: rerandomizes a presignature with the message.
    pub const SIGN_RERANDOMIZE: Tag = Tag("mpc/sign/rerandomize/v1");
    /// Refresh setup session id (old key, epoch, context).
    pub const REFRESH_SETUP: Tag = Tag("mpc/refresh/setup/v1");
    /// Refresh round-1 commitment.
    pub const REFRESH_COMMIT: Tag = Tag("mpc/refresh/commit/v1");
    /// Refresh joint session id.
    pub const REFRESH_SID: Tag = Tag("mpc/refresh/sid/v1");
    /// Refresh Schnorr proof challenge.
    pub const REFRESH_SCHNORR: Tag = Tag("mpc/refresh/schnorr/v1");
    /// Refresh share offset `delta`.
    pub const REFRESH_DELTA: Tag = Tag("mpc/refresh/delta/v1");
    /// Refresh confirmation transcript.
    pub const REFRESH_CONFIRM: Tag = Tag("mpc/refresh/confirm/v1");
    /// Refresh acknowledgement.
    pub const REFRESH_ACK: Tag = Tag("mpc/refresh/ack/v1");
    /// Backup: ElGamal randomness of a half, from its seed.
    pub const BACKUP_R: Tag = Tag("mpc/backup/r/v1");
    /// Backup: pad of a half.
    pub const BACKUP_PAD: Tag = Tag("mpc/backup/pad/v1");
    /// Backup: Fiat-Shamir challenge.
    pub const BACKUP_CHALLENGE: Tag = Tag("mpc/backup/challenge/v1");
    /// Test-vector tag, used only by the known-answer tests.
    pub const TEST: Tag = Tag("mpc/test/v1");
    /// Two-party BIP340 signing: setup id (PROTOCOL.md §20).
    pub const SCHNORR_SETUP: Tag = Tag("mpc/schnorr/setup/v1");
    /// Two-party BIP340 signing: nonce derivation.
    pub const SCHNORR_NONCE: Tag = Tag("mpc/schnorr/nonce/v1");
    /// Two-party BIP340 signing: joint session id.
    pub const SCHNORR_SID: Tag = Tag("mpc/schnorr/sid/v1");
    /// Two-party BIP340 signing: nonce binding factor.
    pub const SCHNORR_BINDING: Tag = Tag("mpc/schnorr/binding/v1");
    /// Two-party BIP340 signing: digest of the message, compared in round 2.
    pub const SCHNORR_MSG: Tag = Tag("mpc/schnorr/msg/v1");

    /// All tags, for the uniqueness test.
    pub const ALL: &[Tag] = &[
        OT_BASE_SID,
        OT_BASE_H2C,
        OT_BASE_KEY,
        PPRF_SID,
        PPRF_EXPAND,
        PPRF_LEAF_PROOF,
        PPRF_LEAF_SEED,
        PPRF_CHECK,
        OT_SETUP_FP,
        OT_KEYCTX,
        OT_EXT_SID,
        OT_EXT_IV,
        OT_EXT_U,
        OT_EXT_CHI,
        OT_EXT_MSG,
        OT_EXT_ROT,
        VOLE_SID,
        VOLE_GADGET,
        VOLE_THETA_SEED,
        VOLE_THETA,
        VOLE_MU,
        DKG_SETUP,
        DKG_COMMIT,
        DKG_SID,
        DKG_SCHNORR,
        DKG_CHAIN_CODE,
        DKG_CONFIRM,
        DKG_CONFIRM_ROLE,
        DKG_KEY_ID,
        SIGN_SETUP,
        SIGN_COMMIT,
        SIGN_SID,
        SIGN_RERANDOMIZE,
        REFRESH_SETUP,
        REFRESH_COMMIT,
        REFRESH_SID,
        REFRESH_SCHNORR,
        REFRESH_DELTA,
        REFRESH_CONFIRM,
        REFRESH_ACK,
        BACKUP_R,
        BACKUP_PAD,
        BACKUP_CHALLENGE,
        TEST,
        SCHNORR_SETUP,
        SCHNORR_NONCE,
        SCHNORR_SID,
        SCHNORR_BINDING,
        SCHNORR_MSG,
    ];
}

fn absorb(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_be_bytes());
    hasher.update(bytes);
}

/// `H(tag; m1..mt)`: an incremental, length-prefixed SHA-256 hash.
#[derive(Clone)]
pub struct Transcript {
    hasher: Sha256,
}

impl Transcript {
    /// Starts `H(tag; ...)`.
    #[must_use]
    pub fn new(tag: Tag) -> Self {
        let mut hasher = Sha256::new();
        absorb(&mut hasher, tag.as_bytes());
        Self { hasher }
    }

    /// Appends one length-prefixed message.
    #[must_use]
    pub fn chain(mut self, bytes: &[u8]) -> Self {
        absorb(&mut self.hasher, bytes);
        self
    }

    /// Appends one length-prefixed message in place.
    pub fn append(&mut self, bytes: &[u8]) {
        absorb(&mut self.hasher, bytes);
    }

    /// Appends a big-endian `u32` as one message.
    pub fn append_u32(&mut self, value: u32) {
        absorb(&mut self.hasher, &value.to_be_bytes());
    }

    /// The 32-byte digest.
    #[must_use]
    pub fn finalize(self) -> [u8; 32] {
        self.hasher.finalize().into()
    }
}

/// `Hx(tag; m1..mt; 32 * BLOCKS)`: `BLOCKS` counter-prefixed hashes computed
/// side by side, so messages can be streamed once.
#[derive(Clone)]
pub struct WideTranscript<const BLOCKS: usize> {
    hashers: [Sha256; BLOCKS],
}

impl<const BLOCKS: usize> WideTranscript<BLOCKS> {
    /// Starts `Hx(tag; ...)`.
    #[must_use]
    pub fn new(tag: Tag) -> Self {
        let hashers = core::array::from_fn(|counter| {
            let mut hasher = Sha256::new();
            absorb(&mut hasher, tag.as_bytes());
            // `counter < BLOCKS`, a small constant.
            #[allow(clippy::cast_possible_truncation)]
            absorb(&mut hasher, &(counter as u32).to_be_bytes());
            hasher
        });
        Self { hashers }
    }

    /// Appends one length-prefixed message to every block's hash.
    #[must_use]
    pub fn chain(mut self, bytes: &[u8]) -> Self {
        self.append(bytes);
        self
    }

    /// Appends one length-prefixed message in place.
    pub fn append(&mut self, bytes: &[u8]) {
        for hasher in &mut self.hashers {
            absorb(hasher, bytes);
        }
    }

    /// Appends a big-endian `u32` as one message.
    pub fn append_u32(&mut self, value: u32) {
        self.append(&value.to_be_bytes());
    }

    /// Writes the first `out.len()` bytes of the output.
    ///
    /// # Panics
    ///
    /// If `out` is longer than `32 * BLOCKS` bytes (a programming error:
    /// every call site uses a constant length).
    pub fn finalize_into(self, out: &mut [u8]) {
        assert!(out.len() <= 32 * BLOCKS, "Hx output longer than its blocks");
        for (hasher, chunk) in self.hashers.into_iter().zip(out.chunks_mut(32)) {
            let digest = hasher.finalize();
            chunk.copy_from_slice(&digest[..chunk.len()]);
        }
    }

    /// The output truncated to `N` bytes.
    #[must_use]
    pub fn finalize_array<const N: usize>(self) -> [u8; N] {
        let mut out = [0u8; N];
        self.finalize_into(&mut out);
        out
    }
}

impl WideTranscript<2> {
    /// `H2S`: reduces the 64-byte output modulo `q` (bias about 2^-256).
    #[must_use]
    pub fn finalize_scalar(self) -> Scalar {
        let wide: [u8; 64] = self.finalize_array();
        reduce_wide(&wide)
    }
}

/// Reduces a 64-byte big-endian integer modulo the group order `q`.
#[must_use]
pub fn reduce_wide(bytes: &[u8; 64]) -> Scalar {
    <Scalar as Reduce<U512>>::reduce(U512::from_be_slice(bytes))
}

/// `H2S(tag; m1..mt)`: hash to a scalar by wide reduction.
#[must_use]
pub fn hash_to_scalar(tag: Tag, messages: &[&[u8]]) -> Scalar {
    let mut wide = WideTranscript::<2>::new(tag);
    for message in messages {
        wide.append(message);
    }
    wide.finalize_scalar()
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation, clippy::needless_range_loop)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use k256::elliptic_curve::PrimeField;

    #[test]
    fn tags_are_unique_and_versioned() {
        for (i, a) in tags::ALL.iter().enumerate() {
            assert!(a.0.ends_with("/v1"), "{} lacks a version", a.0);
            for b in &tags::ALL[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn appends_in_place_frame_like_chain() {
        // `append`/`append_u32` feed the same length-prefixed messages as
        // `chain`, and each changes the digest (docs/mutants.md: both were
        // untested before).
        let mut in_place = Transcript::new(tags::TEST);
        in_place.append(b"ab");
        in_place.append_u32(7);
        let chained = Transcript::new(tags::TEST)
            .chain(b"ab")
            .chain(&7u32.to_be_bytes())
            .finalize();
        assert_eq!(in_place.finalize(), chained);
        let without_u32 = Transcript::new(tags::TEST).chain(b"ab").finalize();
        assert_ne!(without_u32, chained);
    }

    #[test]
    fn encoding_is_injective_across_splits() {
        let ab_c = Transcript::new(tags::TEST)
            .chain(b"ab")
            .chain(b"c")
            .finalize();
        let a_bc = Transcript::new(tags::TEST)
            .chain(b"a")
            .chain(b"bc")
            .finalize();
        let abc = Transcript::new(tags::TEST).chain(b"abc").finalize();
        assert_ne!(ab_c, a_bc);
        assert_ne!(ab_c, abc);
        assert_ne!(a_bc, abc);
    }

    #[test]
    fn matches_manual_encoding() {
        // H(tag; "xyz") spelled out byte by byte.
        let mut manual = Vec::new();
        let tag = tags::TEST.as_bytes();
        manual.extend_from_slice(&(tag.len() as u64).to_be_bytes());
        manual.extend_from_slice(tag);
        manual.extend_from_slice(&3u64.to_be_bytes());
        manual.extend_from_slice(b"xyz");
        let expected: [u8; 32] = Sha256::digest(&manual).into();
        assert_eq!(
            Transcript::new(tags::TEST).chain(b"xyz").finalize(),
            expected
        );

        // Hx block 1 is H(tag; u32(1), "xyz").
        let wide: [u8; 64] = WideTranscript::<2>::new(tags::TEST)
            .chain(b"xyz")
            .finalize_array();
        let block1 = Transcript::new(tags::TEST)
            .chain(&1u32.to_be_bytes())
            .chain(b"xyz")
            .finalize();
        assert_eq!(wide[32..], block1);
    }

    /// Vectors computed with Python's hashlib and big integers from the
    /// definitions in PROTOCOL.md §2.1, independently of this code.
    #[test]
    fn known_answers_from_independent_script() {
        let h = Transcript::new(tags::TEST)
            .chain(b"abc")
            .chain(b"")
            .finalize();
        assert_eq!(
            hex::encode(h),
            "2ccdc80468e44fd587263110a61d1d3f2e8f7c98de4dee92737f3adb5c04dc51"
        );
        let mut hx = [0u8; 80];
        WideTranscript::<3>::new(tags::TEST)
            .chain(b"abc")
            .finalize_into(&mut hx);
        assert_eq!(
            hex::encode(hx),
            "9a3da0d82e3b1502b73d588771d7d71be821dffcdd96833e7e5f85fc616c825d\
             8e7ecabd709865afc3019cd47b00521a30ac0ee361a4244151dc1dd1bd01c39e\
             a2de1d0968fbaf43d656106a33866f14"
        );
        let s = hash_to_scalar(tags::TEST, &[b"abc"]);
        assert_eq!(
            hex::encode(s.to_bytes()),
            "686dc79ee3fd7667383aa067ca1f22ad1add8de072bab7d6d4a46ec7985a9250"
        );
    }

    #[test]
    fn wide_reduction_of_max_value() {
        // (2^512 - 1) mod q, computed independently: 2^512 - 1 = (2^256)^2 - 1,
        // and 2^256 mod q = 2^256 - q = c, so the result is c^2 - 1 mod q.
        let c_bytes: [u8; 32] =
            hex::decode("000000000000000000000000000000014551231950b75fc4402da1732fc9bebf")
                .unwrap()
                .try_into()
                .unwrap();
        let c = Scalar::from_repr(c_bytes.into()).unwrap();
        assert_eq!(reduce_wide(&[0xff; 64]), c * c - Scalar::ONE);
    }
}
