//! Examples for the `mpc-*` crates.
//!
//! This library is empty on purpose: the examples live in
//! `examples/examples/` and run with `cargo run -p mpc-examples --example
//! <name>`.
#![forbid(unsafe_code)]
