//! mpc-core's integration tests as one test binary: one build and link
//! instead of one per file, which matters most to mutation testing, where
//! every mutant relinks every test binary of the crate (docs/mutants.md).
//! nextest still runs each test in its own process. A module per area;
//! `common` is the in-process pair driver they share.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    missing_docs,
    unreachable_pub
)]

mod common;

mod adversarial;
mod backup;
mod derive;
mod export;
mod online_guard;
mod refresh;
mod schnorr;
mod schnorr_presign;
mod sign;
mod tamper;
