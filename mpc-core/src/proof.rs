//! Schnorr proof of knowledge of a discrete log, made non-interactive with
//! Fiat-Shamir (PROTOCOL.md §12.2).
//!
//! The challenge hashes the whole statement: the generator, the public
//! point, the prover's commitment, the session id and the prover's role
//! (Frozen Heart, checklist item 6), under a per-use tag.

use k256::elliptic_curve::ops::MulByGenerator;
use k256::{ProjectivePoint, Scalar};
use rand_core::CryptoRngCore;
use zeroize::Zeroize;

use crate::error::{Error, Result};
use crate::transcript::{hash_to_scalar, Tag};
use crate::wire::{encode_point, encode_scalar, Reader, Role, POINT_BYTES, SCALAR_BYTES};

/// Bytes of an encoded proof: commitment point, response scalar.
pub(crate) const SCHNORR_BYTES: usize = POINT_BYTES + SCALAR_BYTES;

/// A proof of knowledge of `x` with `X = x*G`.
pub(crate) struct SchnorrProof {
    commitment: ProjectivePoint,
    response: Scalar,
}

fn challenge(
    tag: Tag,
    sid: &[u8; 32],
    role: Role,
    public: &ProjectivePoint,
    commitment: &ProjectivePoint,
) -> Scalar {
    hash_to_scalar(
        tag,
        &[
            sid,
            &[role.as_u8()],
            &encode_point(&ProjectivePoint::GENERATOR),
            &encode_point(public),
            &encode_point(commitment),
        ],
    )
}

impl SchnorrProof {
    /// Proves knowledge of `secret` for `public = secret * G`.
    pub(crate) fn prove(
        rng: &mut impl CryptoRngCore,
        tag: Tag,
        sid: &[u8; 32],
        role: Role,
        secret: &Scalar,
        public: &ProjectivePoint,
    ) -> Self {
        let mut nonce = crate::ct::random_scalar(rng);
        let commitment = ProjectivePoint::mul_by_generator(&nonce);
        let e = challenge(tag, sid, role, public, &commitment);
        let response = nonce + e * secret;
        nonce.zeroize();
        Self {
            commitment,
            response,
        }
    }

    /// Verifies the proof for `public`, made by `role` in session `sid`.
    ///
    /// # Errors
    ///
    /// [`Error::InvalidProof`] if it does not verify.
    pub(crate) fn verify(
        &self,
        tag: Tag,
        sid: &[u8; 32],
        role: Role,
        public: &ProjectivePoint,
    ) -> Result<()> {
        let e = challenge(tag, sid, role, public, &self.commitment);
        if ProjectivePoint::mul_by_generator(&self.response) == self.commitment + *public * e {
            Ok(())
        } else {
            Err(Error::InvalidProof)
        }
    }

    pub(crate) fn encode_into(&self, out: &mut alloc::vec::Vec<u8>) {
        out.extend_from_slice(&encode_point(&self.commitment));
        out.extend_from_slice(&encode_scalar(&self.response));
    }

    pub(crate) fn read(reader: &mut Reader<'_>) -> Result<Self> {
        Ok(Self {
            commitment: reader.point()?,
            response: reader.scalar()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transcript::tags;
    use k256::elliptic_curve::Field;
    use rand_chacha::rand_core::SeedableRng;

    #[test]
    fn proves_and_binds_statement() {
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let x = Scalar::random(&mut rng);
        let public = ProjectivePoint::mul_by_generator(&x);
        let sid = [7u8; 32];
        let proof = SchnorrProof::prove(&mut rng, tags::TEST, &sid, Role::A, &x, &public);
        assert!(proof.verify(tags::TEST, &sid, Role::A, &public).is_ok());
        // Another session, role, statement or tag: rejected.
        assert_eq!(
            proof.verify(tags::TEST, &[8u8; 32], Role::A, &public),
            Err(Error::InvalidProof)
        );
        assert_eq!(
            proof.verify(tags::TEST, &sid, Role::B, &public),
            Err(Error::InvalidProof)
        );
        let other = public + ProjectivePoint::GENERATOR;
        assert_eq!(
            proof.verify(tags::TEST, &sid, Role::A, &other),
            Err(Error::InvalidProof)
        );
        assert_eq!(
            proof.verify(tags::OT_KEYCTX, &sid, Role::A, &public),
            Err(Error::InvalidProof)
        );
    }
}
