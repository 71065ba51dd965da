//! Audit harnesses for `mpc-core`; not part of the shipped library
//! (PROTOCOL.md §10, "Constant time and zeroization: what is checked").
//!
//! - [`valgrind`]: the ctgrind technique. Secret memory is marked
//!   *undefined* with memcheck client requests; memcheck then reports every
//!   branch and every memory address that depends on it. `tests/ctgrind.rs`
//!   runs each case under `valgrind --error-exitcode=1`.
//! - [`record`]: reads the secrets of a key share out of its public
//!   encoding (PROTOCOL.md §13.5), for `tests/zeroize.rs`, whose global
//!   allocator looks for them in every freed block.
//! - [`leaky`]: deliberately leaky functions, the harnesses' negative
//!   controls.

pub mod leaky;
pub mod record;
pub mod valgrind;

use rand_chacha::rand_core::{CryptoRng, Error, RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// A deterministic RNG whose every output is marked secret under valgrind:
/// whatever a protocol derives from its randomness (nonces, choice bits,
/// base-OT scalars) is then checked for secret-dependent branches and
/// indices. Outside valgrind it is a plain seeded ChaCha20.
pub struct SecretRng(ChaCha20Rng);

impl SecretRng {
    /// A generator seeded with `seed`.
    #[must_use]
    pub fn new(seed: u64) -> Self {
        Self(ChaCha20Rng::seed_from_u64(seed))
    }
}

impl RngCore for SecretRng {
    fn next_u32(&mut self) -> u32 {
        let mut bytes = [0u8; 4];
        self.fill_bytes(&mut bytes);
        u32::from_le_bytes(bytes)
    }

    fn next_u64(&mut self) -> u64 {
        let mut bytes = [0u8; 8];
        self.fill_bytes(&mut bytes);
        u64::from_le_bytes(bytes)
    }

    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest);
        valgrind::mark_secret(dest);
    }

    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), Error> {
        self.fill_bytes(dest);
        Ok(())
    }
}

impl CryptoRng for SecretRng {}
