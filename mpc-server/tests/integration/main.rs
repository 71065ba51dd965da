//! mpc-server's integration tests as one test binary: one build and link
//! instead of one per file (nextest still runs every test in its own
//! process). A module per area; `common` is the harness they share.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, missing_docs)]

mod common;

mod auth;
mod ban;
mod connections;
mod crash;
mod end_to_end;
mod hygiene;
mod load;
mod pprf_failures;
mod quotas;
mod refresh_race;
mod replicas;
mod rest;
mod rollback;
mod schnorr;
mod schnorr_presign;
mod server_webhooks;
mod step_up;
mod webhooks;
