//! Runs any `mpc-core` protocol over a WebSocket (`tokio-tungstenite`).
//!
//! The client (party A, share P1) and the server (party B, share P2) talk
//! over one WebSocket connection per session. This crate is the only place
//! where a sans-IO protocol of `mpc-core` meets the network: one generic
//! loop ([`run_protocol`]) drives every protocol, for both sides, and knows
//! nothing protocol-specific.
//!
//! - Client: [`Client`] connects to a URL with `Authorization: Bearer
//!   <token>` on the upgrade request and runs [`Client::keygen`],
//!   [`Client::sign`], [`Client::presign`] (or their `_with_path` forms for
//!   a BIP32 child key) or [`Client::online_sign`] ([`run_client`] does the
//!   same for any protocol over any [`Frames`]).
//! - Server: [`server::accept`] upgrades a raw stream and shows the request
//!   (bearer token) to the caller; [`serve`] reads the opening of any
//!   [`Frames`] socket (tungstenite, or axum's with the `axum` feature) and
//!   hands a [`ServerSession`] to the caller's handler, which looks up keys,
//!   runs the protocol and stores the result.
//!
//! # Framing
//!
//! Only binary frames are used; each is one WebSocket message, `kind: u8 ||
//! body` ([`opening`] has the formats):
//!
//! ```text
//! client                                     server
//!   |-- opening (1): version, session handle, operation + parameters -->|
//!   |-- message (2): envelope, round 1 --->   <--- message (2), round 1 --|
//!   |            ... one message frame per protocol message ...         |
//!   |-- outcome (3): Ok (client finished) -->                           |
//!   |                  <-- outcome (3): Ok (server finished and stored) --|
//!   |                  <-- close 1000 ----------------------------------- |
//! ```
//!
//! The server closes with 1000 only once it has completed what the
//! client's outcome confirmed (e.g. activated a new key); if that fails it
//! closes with the failure's code instead. The client's operation succeeds
//! only on that normal close: another code, a connection that ends without
//! a close frame, or no close within `close_timeout` is an error.
//!
//! A message body is one `mpc_core::wire::Envelope` exactly as the protocol
//! produced it. A failing side sends `outcome: Failed {code, class,
//! reason}` and then a close frame with the same code and reason. The public
//! context of a DKG or a refresh is the session handle
//! ([`Opening::context`]). A [`BeforeSend`] hook runs before each protocol
//! message leaves, for protocols whose state must be persisted first
//! (refresh); [`SessionHooks`] add a guard around each step, work after a
//! failed step before its outcome leaves, and cancellation (a server uses
//! them to stop every session of a banned key).
//!
//! Frames not meant for the current protocol state (an `Ignore`-class error
//! of `mpc-core`: another session, round or protocol, an undecodable
//! envelope, or a protocol message after the protocol finished) are dropped
//! and counted; the socket closes with 1008 on the
//! `max_ignored_frames + 1`-th ([`TransportConfig::max_ignored_frames`]).
//! Every other protocol error ends the session.
//!
//! # Close codes
//!
//! | code | sent when | error on the side that closes |
//! |---|---|---|
//! | 1000 normal | both outcomes were Ok and the server completed its work (the only close after which the client succeeds) | - |
//! | 1001 going away | the server shuts down ([`Rejection::GOING_AWAY`]) | [`TransportError::Rejected`] |
//! | 1008 policy violation | a text frame; an unexpected opening or outcome; a frame of unknown kind; too many ignored frames; [`Rejection::UNAUTHORIZED`] | [`TransportError::Violation`] |
//! | 1009 message too big | a frame or message over `max_frame_bytes` / `max_message_bytes` | [`TransportError::Violation`] |
//! | 1011 internal error | a `Local`-class protocol error; [`Rejection::INTERNAL`] | [`TransportError::Protocol`] |
//! | 4001 protocol abort | an `Abort`-class protocol error | [`TransportError::Protocol`] |
//! | 4002 protocol ban | a `Ban`-class protocol error: burn the key's OT material | [`TransportError::Protocol`] |
//! | 4003 unsupported operation | the server does not run the operation (refresh, for now) | [`TransportError::Rejected`] |
//! | 4004 timeout | the message or session timeout expired | [`TransportError::Timeout`] |
//! | 4005 invalid opening | the first frame is not a valid opening of a known version | [`TransportError::OpeningInvalid`] |
//! | 4006 not found | no such key or presignature (for this caller) | [`TransportError::Rejected`] |
//! | 4007 unavailable | the key is banned, revoked or busy | [`TransportError::Rejected`] |
//! | 4100-4999 | application-defined ([`Rejection::application`]) | [`TransportError::Rejected`] |
//!
//! The other side gets [`TransportError::RejectedByPeer`] with the code,
//! the class of a protocol error, and the reason. Reasons are fixed texts or
//! `"<class>: <mpc_core::Error::as_str()>"`: never secret data.
//!
//! # Timeouts and keepalive
//!
//! Every wait is bounded ([`TransportConfig`]):
//! - `message_timeout` (default 30 s): the upgrade, each send, and each wait
//!   for the peer's next frame (pings, pongs and ignored frames do not
//!   restart it);
//! - `session_timeout` (default 120 s): the whole session, from connect
//!   (client) or accept (server) to the outcomes; [`serve`] also stops a
//!   handler that outlives it;
//! - `close_timeout` (default 2 s): sending the failed outcome, the
//!   closing handshake, and the client's wait for the server's close after
//!   the server's outcome.
//!
//! While waiting, a side sends a ping every `ping_interval` (default 15 s);
//! received pings are answered at once.
//!
//! Each protocol step is CPU-bound (up to a few milliseconds for a DKG
//! round). By default it runs on the task that drives the session; a
//! server sets [`TransportConfig::step_executor`] to a [`ComputePool`]
//! sized to its cores, which runs steps off the async workers, a bounded
//! number at a time ([`executor`]).
//!
//! # Features
//!
//! - `axum`: [`Frames`] for `axum::extract::ws::WebSocket` (axum 0.8).
#![forbid(unsafe_code)]
#![cfg_attr(docsrs, feature(doc_auto_cfg))]

pub mod client;
pub mod config;
pub mod driver;
pub mod error;
pub mod executor;
pub mod frames;
pub mod opening;
pub mod server;

pub use client::{run_client, run_client_with, Client};
pub use config::{TransportConfig, READ_CHUNK_BYTES};
pub use driver::{run_protocol, BeforeSend, SessionHooks, Traffic};
pub use error::{CloseCode, Phase, Rejection, TimeoutKind, TransportError};
pub use executor::{ComputePool, StepExecutor};
pub use frames::{FrameError, Frames, Incoming};
pub use opening::{Opening, Operation, Outcome, SessionHandle};
pub use server::{serve, ServerSession};
