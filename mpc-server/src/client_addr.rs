//! The client's address, as the per-address limits see it
//! ([`crate::admission`]).

use std::net::{IpAddr, SocketAddr};

use axum::http::HeaderMap;

use crate::server::AppState;

/// The address of the client behind a request: for now the TCP peer's.
/// (Forwarded headers are not trusted here.)
pub(crate) fn client_ip(state: &AppState, peer: SocketAddr, headers: &HeaderMap) -> IpAddr {
    let _ = (state, headers);
    peer.ip()
}
