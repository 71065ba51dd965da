//! The server party (P2) of two-party ECDSA.
//!
//! Not implemented yet. This crate will run the P2 side of every `mpc-core`
//! protocol over a WebSocket listener (default port 8080) and serve a REST
//! API (default port 3001) for key status, backup, export, rotation,
//! health and metrics. Requests are authenticated with bearer tokens (JWT)
//! issued by the customer's backend; server shares are stored encrypted at
//! rest. It will be usable both as an embeddable router and as the
//! `mpc-server` binary.
#![forbid(unsafe_code)]
