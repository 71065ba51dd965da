//! The server party (P2) of two-party ECDSA.
//!
//! Runs the P2 side of every `mpc-core` protocol over a WebSocket listener
//! (default 127.0.0.1:8080) and serves a REST API (default 127.0.0.1:3001).
//! Requests are authenticated with bearer JWTs issued by the customer's
//! backend ([`auth`]); server shares and presignatures are stored encrypted
//! at rest ([`seal`], [`vault`]) in SQLite or PostgreSQL ([`store`]).
//!
//! Embedding: build a [`ServerConfig`] (or parse one with
//! [`config::Cli`]), create a [`Server`], and mount [`Server::ws_router`]
//! in an axum application, or call [`Server::run`].
#![forbid(unsafe_code)]

pub mod admission;
pub mod auth;
mod bans;
pub mod client_addr;
pub mod compute;
pub mod config;
pub mod crash;
pub mod dev;
pub mod listener;
pub(crate) mod pprf;
pub mod rate_limits;
pub mod rest;
mod schnorr;
pub mod seal;
pub mod server;
pub mod session;
pub mod store;
pub mod vault;
pub mod webhook;

pub use config::ServerConfig;
pub use server::{Server, ServerError};
