//! WebSocket transport for `mpc-core` protocols.
//!
//! Not implemented yet. This crate will hold one generic driver that runs
//! any `mpc-core` protocol state machine over a WebSocket connection
//! (`tokio-tungstenite`), for both the client side (party A, share P1) and the
//! server side (party B, share P2). It moves `mpc_core::wire::Envelope` bytes
//! and knows nothing protocol-specific.
#![forbid(unsafe_code)]
