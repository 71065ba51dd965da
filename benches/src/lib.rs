//! Criterion benchmarks for `mpc-core`.
//!
//! This library is empty on purpose: the benchmarks live in
//! `benches/benches/` and run with `cargo bench -p mpc-benches`.
#![forbid(unsafe_code)]
