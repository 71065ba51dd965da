//! A party's key share and its versioned encoding (PROTOCOL.md §13.5).

use alloc::vec::Vec;
use core::fmt;

use k256::elliptic_curve::ops::MulByGenerator;
use k256::elliptic_curve::PrimeField;
use k256::{ProjectivePoint, Scalar};
use serde::{Deserialize, Serialize};
use subtle::{Choice, ConditionallySelectable, ConstantTimeEq, ConstantTimeLess};
use zeroize::{Zeroize, ZeroizeOnDrop, Zeroizing};

use crate::ct::declassify;
use crate::error::{Error, Result};
use crate::hazmat::ot::pprf::{AllSeeds, PuncturedSeeds};
use crate::hazmat::ot::setup::{OtReceiverKey, OtSenderKey, SetupContext};
use crate::hazmat::prg::Seed;
use crate::hazmat::vole::Gadget;
use crate::params::{LEAVES, TREES};
use crate::wire::{decode_point, encode_point, encode_scalar, Hex, Role};

/// Current key share format version.
pub const KEY_SHARE_VERSION: u16 = 1;

/// A key's identifier: derived from the DKG transcript, equal at both
/// parties, public.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        Hex(&self.0).fmt(f)
    }
}

/// One party's share of a two-party key.
///
/// Holds the secret share `x_i` and both directions' long-term OT secrets;
/// zeroized on drop; `Debug` shows only public data. Not `Clone`: a share is
/// moved, or encoded for storage with [`KeyShare::to_bytes`].
pub struct KeyShare {
    pub(crate) role: Role,
    pub(crate) key_id: KeyId,
    pub(crate) epoch: u64,
    pub(crate) secret: Scalar,
    pub(crate) public_shares: [ProjectivePoint; 2],
    pub(crate) public_key: k256::PublicKey,
    pub(crate) chain_code: [u8; 32],
    pub(crate) transcript: [u8; 32],
    pub(crate) ot_sender: OtSenderKey,
    pub(crate) ot_receiver: OtReceiverKey,
    /// Set after a ban-class failure: signing is refused until a refresh.
    pub(crate) ot_burned: bool,
}

impl Drop for KeyShare {
    fn drop(&mut self) {
        self.secret.zeroize();
    }
}

impl ZeroizeOnDrop for KeyShare {}

impl fmt::Debug for KeyShare {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyShare")
            .field("role", &self.role)
            .field("key_id", &self.key_id)
            .field("epoch", &self.epoch)
            .field(
                "public_key",
                &format_args!("{}", Hex(&encode_point(&self.public_key.to_projective()))),
            )
            .finish_non_exhaustive()
    }
}

impl KeyShare {
    /// This party's role.
    #[must_use]
    pub fn role(&self) -> Role {
        self.role
    }

    /// The key's identifier.
    #[must_use]
    pub fn key_id(&self) -> &KeyId {
        &self.key_id
    }

    /// The share epoch: 0 after key generation, +1 per refresh.
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The joint public key `X_A + X_B`.
    #[must_use]
    pub fn public_key(&self) -> k256::PublicKey {
        self.public_key
    }

    /// The public share `x_role * G` of either party.
    #[must_use]
    pub fn public_share(&self, role: Role) -> ProjectivePoint {
        self.public_shares[role.index()]
    }

    /// The BIP32 chain code both parties agreed on.
    #[must_use]
    pub fn chain_code(&self) -> &[u8; 32] {
        &self.chain_code
    }

    /// The root extended public key (`xpub`): the joint public key with the
    /// agreed chain code, at depth 0.
    #[must_use]
    pub fn xpub(&self) -> crate::derive::ExtendedPublicKey {
        // The public key is never the identity (checked at creation).
        crate::derive::ExtendedPublicKey::from_validated(self.public_key, self.chain_code)
    }

    /// The public key at `path` below the root and the derivation tweak `t`
    /// (`child = PK + t*G`).
    ///
    /// # Errors
    ///
    /// As [`ExtendedPublicKey::derive_path`](crate::derive::ExtendedPublicKey::derive_path).
    pub fn derive(
        &self,
        path: &crate::derive::DerivationPath,
    ) -> Result<(k256::PublicKey, Scalar)> {
        let (child, tweak) = self.xpub().derive_path(path)?;
        Ok((child.public_key(), tweak))
    }

    /// Burns this share's OT material after a ban-class failure
    /// (PROTOCOL.md §8): the seeds are wiped and signing is refused until a
    /// refresh produces fresh material. Persist the burned share.
    pub fn burn_ot_material(&mut self) {
        self.ot_burned = true;
        self.ot_sender.wipe();
        self.ot_receiver.wipe();
    }

    /// Whether the OT material was burned (see [`KeyShare::burn_ot_material`]).
    #[must_use]
    pub fn is_ot_burned(&self) -> bool {
        self.ot_burned
    }

    /// The DKG transcript hash both parties confirmed.
    #[must_use]
    pub fn transcript_hash(&self) -> &[u8; 32] {
        &self.transcript
    }

    pub(crate) fn public_key_point(&self) -> ProjectivePoint {
        self.public_key.to_projective()
    }

    /// Encodes the share (format version [`KEY_SHARE_VERSION`], postcard).
    /// The bytes hold the secret share: store them encrypted.
    #[must_use]
    pub fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let record = KeyShareRecord {
            version: KEY_SHARE_VERSION,
            role: self.role.as_u8(),
            key_id: self.key_id.0,
            epoch: self.epoch,
            secret: encode_scalar(&self.secret),
            public_a: encode_point(&self.public_shares[0]).to_vec(),
            public_b: encode_point(&self.public_shares[1]).to_vec(),
            public_key: encode_point(&self.public_key.to_projective()).to_vec(),
            chain_code: self.chain_code,
            transcript: self.transcript,
            sender_fingerprint: self.ot_sender.context().fingerprint,
            sender_keyctx: self.ot_sender.context().keyctx,
            sender_punctured: self.ot_sender.seeds().punctured,
            sender_seeds: flatten(&self.ot_sender.seeds().seeds),
            receiver_fingerprint: self.ot_receiver.context().fingerprint,
            receiver_keyctx: self.ot_receiver.context().keyctx,
            receiver_seeds: flatten(&self.ot_receiver.seeds().seeds),
            ot_burned: self.ot_burned,
        };
        // Serializing into a Vec cannot fail for this record.
        to_zeroizing_vec(&record).unwrap_or_default()
    }

    /// Decodes and checks a share.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedShareVersion`] for another format version;
    /// [`Error::MalformedKeyShare`] if the bytes do not decode canonically or
    /// the share is inconsistent (`x_i * G` is not this party's public share,
    /// the public shares do not add up to the public key, malformed OT
    /// material).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        Self::from_bytes_reusing(bytes, &[])
    }

    /// [`KeyShare::from_bytes`], with the OT directions' gadget vectors
    /// (public values derived from the share's key contexts, PROTOCOL.md §7)
    /// copied from `known` where one there was derived from the same context,
    /// instead of derived again; a party that loads a key's share for every
    /// session keeps them between loads ([`KeyShare::gadgets`]). Any other
    /// entry of `known` is ignored.
    ///
    /// # Errors
    ///
    /// As [`KeyShare::from_bytes`].
    pub fn from_bytes_reusing(bytes: &[u8], known: &[Gadget]) -> Result<Self> {
        let record: KeyShareRecord = decode_stored_record(bytes, KEY_SHARE_VERSION)?;
        record.to_share(known)
    }

    /// The gadget vectors of the share's two OT directions (public), for
    /// [`KeyShare::from_bytes_reusing`].
    #[must_use]
    pub fn gadgets(&self) -> [&Gadget; 2] {
        [self.ot_sender.gadget(), self.ot_receiver.gadget()]
    }

    /// Decodes a share and checks it belongs to `key_id`.
    ///
    /// # Errors
    ///
    /// As [`KeyShare::from_bytes`], plus [`Error::KeyMismatch`] for a share of
    /// another key.
    pub fn from_bytes_for(bytes: &[u8], key_id: &KeyId) -> Result<Self> {
        Self::from_bytes_for_reusing(bytes, key_id, &[])
    }

    /// [`KeyShare::from_bytes_for`] with the gadget vectors of `known`, as
    /// [`KeyShare::from_bytes_reusing`].
    ///
    /// # Errors
    ///
    /// As [`KeyShare::from_bytes_for`].
    pub fn from_bytes_for_reusing(bytes: &[u8], key_id: &KeyId, known: &[Gadget]) -> Result<Self> {
        let share = Self::from_bytes_reusing(bytes, known)?;
        if share.key_id != *key_id {
            return Err(Error::KeyMismatch);
        }
        Ok(share)
    }
}

/// [`LEAVES`] as the type of a punctured index (16 fits in a `u8`).
#[allow(clippy::cast_possible_truncation)]
const LEAVES_U8: u8 = LEAVES as u8;

#[derive(Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
struct KeyShareRecord {
    version: u16,
    role: u8,
    key_id: [u8; 32],
    epoch: u64,
    secret: [u8; 32],
    public_a: Vec<u8>,
    public_b: Vec<u8>,
    public_key: Vec<u8>,
    chain_code: [u8; 32],
    transcript: [u8; 32],
    sender_fingerprint: [u8; 32],
    sender_keyctx: [u8; 32],
    sender_punctured: [u8; TREES],
    sender_seeds: Vec<Seed>,
    receiver_fingerprint: [u8; 32],
    receiver_keyctx: [u8; 32],
    receiver_seeds: Vec<Seed>,
    ot_burned: bool,
}

/// Decodes a stored record (a key share or a presignature) whose first field
/// is its `u16` format version: [`Error::UnsupportedShareVersion`] for
/// another version, [`Error::MalformedKeyShare`] unless `bytes` is the
/// record's canonical encoding.
pub(crate) fn decode_stored_record<R>(bytes: &[u8], version: u16) -> Result<R>
where
    R: serde::de::DeserializeOwned + Serialize + ZeroizeOnDrop,
{
    let (found, _) =
        postcard::take_from_bytes::<u16>(bytes).map_err(|_| Error::MalformedKeyShare)?;
    if found != version {
        return Err(Error::UnsupportedShareVersion);
    }
    let record: R = postcard::from_bytes(bytes).map_err(|_| Error::MalformedKeyShare)?;
    // Compared in constant time: both sides hold the secret; the verdict is
    // what the caller learns anyway.
    let canonical = to_zeroizing_vec(&record)
        .map(|again| again.as_slice().ct_eq(bytes))
        .unwrap_or(Choice::from(0));
    if !declassify(canonical) {
        return Err(Error::MalformedKeyShare);
    }
    Ok(record)
}

/// `postcard::to_allocvec` into a buffer of the final size, allocated once:
/// a growing `Vec` would free partial copies of the secret record unwiped.
pub(crate) fn to_zeroizing_vec<R: Serialize>(record: &R) -> Option<Zeroizing<Vec<u8>>> {
    let size =
        postcard::serialize_with_flavor(record, postcard::ser_flavors::Size::default()).ok()?;
    let mut out = Zeroizing::new(alloc::vec![0u8; size]);
    let written = postcard::to_slice(record, &mut out).ok()?.len();
    (written == size).then_some(out)
}

fn flatten(trees: &[[Seed; LEAVES]]) -> Vec<Seed> {
    trees.iter().flatten().copied().collect()
}

fn seed_trees(flat: &[Seed]) -> Result<Vec<[Seed; LEAVES]>> {
    if flat.len() != TREES * LEAVES {
        return Err(Error::MalformedKeyShare);
    }
    // Allocated once at its final size: collecting through `Result` would
    // grow the vector and free partial copies of the seeds unwiped.
    let mut trees = Vec::with_capacity(TREES);
    for chunk in flat.chunks_exact(LEAVES) {
        let mut tree = [[0u8; 16]; LEAVES];
        tree.copy_from_slice(chunk);
        trees.push(tree);
    }
    Ok(trees)
}

impl KeyShareRecord {
    fn to_share(&self, known: &[Gadget]) -> Result<KeyShare> {
        let malformed = |_| Error::MalformedKeyShare;
        let role = Role::from_u8(self.role).ok_or(Error::MalformedKeyShare)?;
        let public_shares = [
            decode_point(&self.public_a).map_err(malformed)?,
            decode_point(&self.public_b).map_err(malformed)?,
        ];
        let public_key = decode_point(&self.public_key).map_err(malformed)?;
        // x_i canonical, non-zero and matching X_role, checked without a
        // branch on x_i: only the overall verdict is public.
        let decoded = Scalar::from_repr(self.secret.into());
        let mut secret = Scalar::conditional_select(
            &Scalar::ONE,
            &decoded.unwrap_or(Scalar::ONE),
            decoded.is_some(),
        );
        let valid = decoded.is_some()
            & !decoded.unwrap_or(Scalar::ZERO).is_zero()
            & ProjectivePoint::mul_by_generator(&secret).ct_eq(&public_shares[role.index()]);
        if !declassify(valid) || public_shares[0] + public_shares[1] != public_key {
            secret.zeroize();
            return Err(Error::MalformedKeyShare);
        }
        let public_key = k256::PublicKey::from_affine(public_key.to_affine())
            .map_err(|_| Error::MalformedKeyShare)?;
        let sender_trees = seed_trees(&self.sender_seeds)?;
        // The punctured leaf's seed is unknown and stored as zero (a burned
        // share stores all zeros). The punctured indices are pieces of the OT
        // sender's secret Delta (PROTOCOL.md §5.3): every leaf is examined
        // under a mask, so no memory access or branch depends on them, and
        // only the overall verdict is branched on.
        let burned = Choice::from(u8::from(self.ot_burned));
        let mut malformed = Choice::from(0u8);
        for (tree, punctured) in sender_trees.iter().zip(&self.sender_punctured) {
            let mut punctured_seed_set = Choice::from(0u8);
            for (index, leaf) in (0u8..).zip(tree.iter()) {
                let is_zero = leaf[..].ct_eq(&[0u8; 16][..]);
                punctured_seed_set |= index.ct_eq(punctured) & !is_zero;
            }
            let in_range = punctured.ct_lt(&LEAVES_U8);
            malformed |= !in_range | (punctured_seed_set & !burned);
        }
        if declassify(malformed) {
            return Err(Error::MalformedKeyShare);
        }
        let ot_sender = OtSenderKey::from_parts_reusing(
            PuncturedSeeds {
                punctured: self.sender_punctured,
                seeds: sender_trees,
            },
            SetupContext {
                fingerprint: self.sender_fingerprint,
                keyctx: self.sender_keyctx,
            },
            known,
        );
        let ot_receiver = OtReceiverKey::from_parts_reusing(
            AllSeeds {
                seeds: seed_trees(&self.receiver_seeds)?,
            },
            SetupContext {
                fingerprint: self.receiver_fingerprint,
                keyctx: self.receiver_keyctx,
            },
            known,
        );
        Ok(KeyShare {
            role,
            key_id: KeyId(self.key_id),
            epoch: self.epoch,
            secret,
            public_shares,
            public_key,
            chain_code: self.chain_code,
            transcript: self.transcript,
            ot_sender,
            ot_receiver,
            ot_burned: self.ot_burned,
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::dkg::Dkg;
    use crate::local::run_pair;
    use alloc::boxed::Box;
    use rand_chacha::rand_core::SeedableRng;
    use rand_chacha::ChaCha20Rng;

    fn pair() -> (KeyShare, KeyShare) {
        let mut rng = ChaCha20Rng::seed_from_u64(81);
        let mut a = Dkg::new(Role::A, b"keyshare decode test");
        let mut b = Dkg::new(Role::B, b"keyshare decode test");
        let (a, b, _) = run_pair(&mut rng, &mut a, &mut b).unwrap();
        (a, b)
    }

    type Edit<'a> = Box<dyn Fn(&mut KeyShareRecord) + 'a>;

    /// The share's record, edited, encoded canonically again.
    fn edited(share: &KeyShare, edit: impl FnOnce(&mut KeyShareRecord)) -> Zeroizing<Vec<u8>> {
        let mut record: KeyShareRecord =
            decode_stored_record(&share.to_bytes(), KEY_SHARE_VERSION).unwrap();
        edit(&mut record);
        Zeroizing::new(postcard::to_allocvec(&record).unwrap())
    }

    /// A ban burns the OT material (PROTOCOL.md §8): no seed of either
    /// direction is left, in memory or in what is stored.
    #[test]
    fn burning_wipes_every_seed_of_both_directions() {
        let (mut a, _) = pair();
        let nonzero =
            |seeds: &[[Seed; LEAVES]]| seeds.iter().flatten().filter(|s| **s != [0u8; 16]).count();
        assert!(nonzero(&a.ot_sender.seeds().seeds) > 0);
        assert!(nonzero(&a.ot_receiver.seeds().seeds) > 0);
        a.burn_ot_material();
        assert_eq!(nonzero(&a.ot_sender.seeds().seeds), 0);
        assert_eq!(nonzero(&a.ot_receiver.seeds().seeds), 0);
        let stored: KeyShareRecord =
            decode_stored_record(&a.to_bytes(), KEY_SHARE_VERSION).unwrap();
        let mut stored_seeds = stored.sender_seeds.iter().chain(&stored.receiver_seeds);
        assert!(stored_seeds.all(|seed| *seed == [0u8; 16]));
    }

    /// Gadgets are reused only for the context they were derived from:
    /// another key's are ignored, the share's own are taken as they are.
    #[test]
    fn reused_gadgets_must_match_the_contexts() {
        let (a, b) = pair();
        let mut rng = ChaCha20Rng::seed_from_u64(82);
        let (other, _, _) = run_pair(
            &mut rng,
            &mut Dkg::new(Role::A, b"another key"),
            &mut Dkg::new(Role::B, b"another key"),
        )
        .unwrap();
        let own = |share: &KeyShare| share.gadgets().map(Clone::clone);
        let bytes = a.to_bytes();
        let fresh = KeyShare::from_bytes(&bytes).unwrap();
        for known in [own(&other), own(&b), own(&a)] {
            let loaded = KeyShare::from_bytes_reusing(&bytes, &known).unwrap();
            assert_eq!(own(&loaded), own(&fresh));
        }
        assert_ne!(own(&other), own(&a));
    }

    #[test]
    fn inconsistent_stored_shares_do_not_load() {
        // A corrupted or swapped stored share must fail to load rather than
        // sign with a secret that does not match its public share (the
        // signature would fail only after the OT material was used).
        let (a, b) = pair();
        assert!(KeyShare::from_bytes(&a.to_bytes()).is_ok());
        let peer_secret = encode_scalar(&b.secret);
        let mut other = encode_scalar(&(a.secret + Scalar::ONE));
        let public_b = encode_point(&b.public_share(Role::B)).to_vec();
        let cases: [(&str, Edit<'_>); 5] = [
            ("the peer's secret", Box::new(|r| r.secret = peer_secret)),
            ("another secret", Box::new(|r| r.secret = other)),
            ("the other role", Box::new(|r| r.role = Role::B.as_u8())),
            (
                "a public share swapped",
                Box::new(|r| r.public_a = public_b.clone()),
            ),
            (
                "another public key",
                Box::new(|r| r.public_key = r.public_a.clone()),
            ),
        ];
        for (what, edit) in cases {
            assert_eq!(
                KeyShare::from_bytes(&edited(&a, edit)).err(),
                Some(Error::MalformedKeyShare),
                "{what}"
            );
        }
        other.zeroize();
    }

    #[test]
    fn a_punctured_leaf_with_a_seed_or_out_of_range_does_not_load() {
        // The GGM tree's punctured leaf is the one seed the OT sender must
        // not know; a stored share that has one there (or names a leaf
        // outside the tree) is corrupt, unless its OT material was burned.
        let (a, _) = pair();
        let cases: [(&str, Edit<'_>); 2] = [
            (
                "a seed at the punctured leaf",
                Box::new(|r| {
                    let leaf = usize::from(r.sender_punctured[3]);
                    r.sender_seeds[3 * LEAVES + leaf] = [1; 16];
                }),
            ),
            (
                "a punctured index outside the tree",
                Box::new(|r| r.sender_punctured[5] = LEAVES_U8),
            ),
        ];
        for (what, edit) in cases {
            assert_eq!(
                KeyShare::from_bytes(&edited(&a, edit)).err(),
                Some(Error::MalformedKeyShare),
                "{what}"
            );
        }
        // A seed on any other leaf is what a share holds.
        let other_leaf = edited(&a, |r| {
            let leaf = (usize::from(r.sender_punctured[3]) + 1) % LEAVES;
            r.sender_seeds[3 * LEAVES + leaf] = [1; 16];
        });
        assert!(KeyShare::from_bytes(&other_leaf).is_ok());
        let mut burned = a;
        burned.burn_ot_material();
        assert!(KeyShare::from_bytes(&burned.to_bytes()).is_ok());
    }
}
