//! Low-level primitives: the oblivious-transfer stack under the signing
//! protocol's multiplication (PROTOCOL.md §4-§7).
//!
//! # Warning
//!
//! These building blocks are safe only when composed exactly as the
//! protocols of this crate compose them: every extension batch must have a
//! fresh session id, every check must run, and a failed check must burn the
//! key's OT material. Reusing a batch or retrying after a failed check leaks
//! secret keys. Use the protocol modules instead.

pub mod gf128;
pub mod ot;
pub mod prg;
pub mod vole;
