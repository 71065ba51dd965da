//! The oblivious-transfer stack (PROTOCOL.md §4-§6).
//!
//! Roles per direction: the RVOLE sender **S** is the OT-extension sender and
//! the base-OT *receiver*; the RVOLE receiver **R** is the OT-extension
//! receiver, the base-OT *sender* and the builder of the GGM trees. Each party
//! is S in one direction and R in the other.
//!
//! - [`base`]: endemic base OT (§4), `LAMBDA_C` OTs per direction;
//! - [`pprf`]: GGM all-but-one trees (§5) turning them into SoftSpokenOT seeds;
//! - [`setup`]: one direction's setup end to end, giving an
//!   [`OtSenderKey`](setup::OtSenderKey) and an
//!   [`OtReceiverKey`](setup::OtReceiverKey);
//! - [`extension`]: one batch of `XI` random OTs per signature (§6).

pub mod base;
pub(crate) mod comb;
pub mod extension;
mod matrix;
pub mod pprf;
pub mod setup;
