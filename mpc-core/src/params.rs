//! Fixed protocol parameters (PROTOCOL.md §1).
//!
//! The parameter set is part of the `v1` suffix of every domain tag: changing
//! any value here is a new protocol version.

/// Bits of the secp256k1 group order, `kappa`.
pub const KAPPA: usize = 256;
/// Computational security parameter `lambda_c`, in bits: the number of base
/// OTs per direction and the width of the SoftSpokenOT correlation `Delta`.
pub const LAMBDA_C: usize = 128;
/// `lambda_c` in bytes: the size of a GGM node, a leaf seed and an OT key.
pub const LAMBDA_C_BYTES: usize = LAMBDA_C / 8;
/// Statistical security parameter `lambda_s`, in bits.
pub const LAMBDA_S: usize = 128;
/// SoftSpokenOT field-size parameter `k`: each small VOLE is over GF(2^k).
pub const SOFTSPOKEN_K: usize = 4;
/// Number of GGM trees (small VOLEs) per direction, `n = lambda_c / k`.
pub const TREES: usize = LAMBDA_C / SOFTSPOKEN_K;
/// Leaves per GGM tree, `N = 2^k`.
pub const LEAVES: usize = 1 << SOFTSPOKEN_K;
/// OT instances per RVOLE batch, `xi = kappa + 2 * lambda_s`.
pub const XI: usize = KAPPA + 2 * LAMBDA_S;
/// Extended OT matrix width in bits: `xi` rounded up to 128, plus one
/// 128-bit block that masks the consistency check.
pub const EXT_COLUMNS: usize = XI.div_ceil(128) * 128 + 128;
/// Bytes per row of the extended OT matrix.
pub const EXT_ROW_BYTES: usize = EXT_COLUMNS / 8;
/// Number of 128-bit blocks covered by the consistency-check hash (`m`).
pub const CHECK_BLOCKS: usize = XI.div_ceil(128);
/// RVOLE input width `ell`: the signing protocol multiplies two values.
pub const RVOLE_INPUTS: usize = 2;
/// RVOLE check columns `rho = ceil(lambda_c / kappa)`.
pub const RVOLE_CHECKS: usize = LAMBDA_C.div_ceil(KAPPA);
/// Scalars carried by one OT instance: inputs plus check columns.
pub const RVOLE_WIDTH: usize = RVOLE_INPUTS + RVOLE_CHECKS;

const _: () = assert!(LAMBDA_C % SOFTSPOKEN_K == 0);
const _: () = assert!(XI % 8 == 0);
const _: () = assert!(
    LAMBDA_C == 128,
    "the OT code packs Delta and columns into u128"
);
