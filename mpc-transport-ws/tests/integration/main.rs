//! mpc-transport-ws's integration tests as one test binary: one build and
//! link instead of one per file (nextest still runs every test in its own
//! process). A module per area; `common` is the harness they share.

mod common;

mod close;
mod end_to_end;
mod faults;
mod hooks;
mod over_axum;
mod violations;
