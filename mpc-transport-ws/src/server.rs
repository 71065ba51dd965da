//! The server side (party B, share P2): accept a connection, read the
//! client's opening, let the caller's handler pick and run the protocol,
//! exchange outcomes, close.
//!
//! ```no_run
//! use mpc_core::{wire::Role, Dkg};
//! use mpc_transport_ws::{serve, server, Operation, Rejection, TransportConfig};
//! use rand_core::OsRng;
//!
//! # async fn demo(stream: tokio::net::TcpStream) -> Result<(), mpc_transport_ws::TransportError> {
//! let config = TransportConfig::default();
//! let (socket, token) = server::accept(stream, &config, |request| {
//!     server::bearer_token(request.headers())
//!         .map(str::to_owned)
//!         .ok_or(server::HttpRejection::UNAUTHORIZED)
//! })
//! .await?;
//! # let _ = token;
//! serve(socket, config, |mut session| async move {
//!     let opening = session.opening().clone();
//!     match opening.operation {
//!         Operation::Keygen => {
//!             let mut dkg = Dkg::new(Role::B, opening.context());
//!             let share = session.run(&mut dkg, &mut OsRng).await?;
//!             // ... store `share`; on failure:
//!             // return Err(session.reject(Rejection::INTERNAL).await);
//!             # drop(share);
//!             session.finish().await
//!         }
//!         _ => Err(session.reject(Rejection::UNSUPPORTED_OPERATION).await),
//!     }
//! })
//! .await
//! # }
//! ```

use std::future::Future;

use http::{HeaderMap, StatusCode};
use mpc_core::Protocol;
use rand_core::CryptoRngCore;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::{timeout, timeout_at, Instant};
use tokio_tungstenite::tungstenite::handshake::server::{ErrorResponse, Request, Response};
use tokio_tungstenite::tungstenite::{self};
use tokio_tungstenite::WebSocketStream;
use tracing::debug;

use crate::config::TransportConfig;
use crate::driver::{BeforeSend, Link, SessionHooks, Side, Traffic};
pub use crate::error::Rejection;
use crate::error::{Phase, Result, TimeoutKind, TransportError};
use crate::frames::{ws_error, FrameError, Frames};
use crate::opening::{decode_frame, FrameKind, Opening};

/// A server session whose opening has been read.
///
/// The handler runs the protocol the opening asks for with
/// [`run`](Self::run), stores what it must, and ends the session with
/// [`finish`](Self::finish) (success) or [`reject`](Self::reject). If
/// [`run`](Self::run) fails, the socket is already closed with the error's
/// code: just return the error. Dropping the session without either closes
/// the TCP connection without a close frame (the client sees
/// [`TransportError::Closed`]).
pub struct ServerSession<F> {
    link: Link<F>,
    opening: Opening,
}

impl<F> core::fmt::Debug for ServerSession<F> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ServerSession")
            .field("opening", &self.opening)
            .finish_non_exhaustive()
    }
}

impl<F: Frames> ServerSession<F> {
    /// Reads and checks the client's opening (within the message timeout);
    /// the session timeout starts now.
    ///
    /// # Errors
    ///
    /// [`TransportError::OpeningInvalid`] (socket closed with 4005) if the
    /// first binary frame is not a valid opening;
    /// [`TransportError::Timeout`] with [`Phase::Opening`]; a
    /// [`TransportError::Violation`] for a text or oversized frame; or a
    /// connection error.
    pub async fn open(frames: F, config: TransportConfig) -> Result<Self> {
        let deadline = Instant::now() + config.session_timeout;
        Self::open_by(frames, config, deadline).await
    }

    async fn open_by(frames: F, config: TransportConfig, deadline: Instant) -> Result<Self> {
        let mut link = Link::new(frames, config, deadline, Side::Server);
        let frame = link.recv(Phase::Opening).await?;
        let opening = match decode_frame(&frame) {
            Some((FrameKind::Opening, body)) => match Opening::decode(body) {
                Ok(opening) => opening,
                Err(error) => return Err(link.opening_invalid(error.0).await),
            },
            _ => return Err(link.opening_invalid("expected an opening").await),
        };
        debug!(
            session = %opening.session,
            operation = opening.operation.name(),
            "server session"
        );
        Ok(Self { link, opening })
    }

    /// The client's opening.
    #[must_use]
    pub fn opening(&self) -> &Opening {
        &self.opening
    }

    /// Runs `protocol` (the server side of the opening's operation) until
    /// it finishes. The output is the handler's to store before it calls
    /// [`finish`](Self::finish).
    ///
    /// # Errors
    ///
    /// As [`run_protocol`](crate::run_protocol); the socket is closed then.
    pub async fn run<P, R>(&mut self, protocol: &mut P, rng: &mut R) -> Result<P::Output>
    where
        P: Protocol,
        R: CryptoRngCore,
    {
        self.link.run(protocol, rng).await
    }

    /// [`run`](Self::run) with a [`BeforeSend`] hook, called before each
    /// protocol message leaves (e.g. to persist a refresh's new share).
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run); a hook's [`Rejection`] ends the session with
    /// its code ([`TransportError::Rejected`]).
    pub async fn run_with<P, R, H>(
        &mut self,
        protocol: &mut P,
        rng: &mut R,
        hook: &mut H,
    ) -> Result<P::Output>
    where
        P: Protocol,
        R: CryptoRngCore,
        H: BeforeSend<P>,
    {
        self.link.run_with(protocol, rng, hook).await
    }

    /// [`run`](Self::run) with [`SessionHooks`]: a guard around each step,
    /// work after a failed step before its outcome leaves, and cancellation
    /// while waiting for the peer.
    ///
    /// # Errors
    ///
    /// As [`run`](Self::run); a [`Rejection`] from
    /// [`SessionHooks::before_step`], [`SessionHooks::before_send`] or
    /// [`SessionHooks::cancelled`] ends the session with its code
    /// ([`TransportError::Rejected`]).
    pub async fn run_hooked<P, R, H>(
        &mut self,
        protocol: &mut P,
        rng: &mut R,
        hooks: &mut H,
    ) -> Result<P::Output>
    where
        P: Protocol,
        R: CryptoRngCore,
        H: SessionHooks<P>,
    {
        self.link.run_hooked(protocol, rng, hooks).await
    }

    /// Ends the session successfully: sends the server's outcome, waits for
    /// the client's, closes with 1000.
    ///
    /// Call it after storing the protocol's output: the client treats the
    /// outcome as the server's confirmation.
    ///
    /// # Errors
    ///
    /// [`TransportError::RejectedByPeer`] if the client reports a failure
    /// (e.g. its last check failed although ours passed: a new key must
    /// then not be used), or a timeout or connection error. The socket is
    /// closed in every case.
    pub async fn finish(self) -> Result<()> {
        self.finish_with(std::future::ready(Ok(()))).await
    }

    /// [`finish`](Self::finish), running `confirmed` once the client's
    /// successful outcome has arrived and before the closing handshake:
    /// e.g. to mark a new key usable only when both sides hold it.
    /// `confirmed` is not run if the outcome does not arrive or reports a
    /// failure.
    ///
    /// The client's operation succeeds only on the normal close (1000) that
    /// follows a successful `confirmed`, so it observes what `confirmed`
    /// did. If `confirmed` fails, the session closes with the rejection's
    /// code instead (no second outcome is sent), and the client's operation
    /// fails with [`TransportError::RejectedByPeer`] and that code.
    ///
    /// # Errors
    ///
    /// As [`finish`](Self::finish), and [`TransportError::Rejected`] with
    /// the rejection of a failed `confirmed`.
    pub async fn finish_with(
        mut self,
        confirmed: impl Future<Output = core::result::Result<(), Rejection>>,
    ) -> Result<()> {
        self.link.send_ok().await?;
        self.link.await_outcome().await?;
        if let Err(rejection) = confirmed.await {
            let (code, reason) = (rejection.code(), rejection.reason());
            self.link.close_after_outcomes(code, reason).await;
            return Err(TransportError::Rejected { code, reason });
        }
        self.link
            .close_after_outcomes(crate::CloseCode::NORMAL, "done")
            .await;
        Ok(())
    }

    /// Ends the session with `rejection`: a failed outcome, then a close
    /// frame with its code. Returns the matching error for the handler to
    /// return.
    pub async fn reject(mut self, rejection: Rejection) -> TransportError {
        self.link.reject(rejection.code(), rejection.reason()).await
    }

    /// Frames and bytes so far.
    #[must_use]
    pub fn traffic(&self) -> Traffic {
        self.link.traffic()
    }
}

/// Serves one session on an accepted socket: reads the opening, then hands
/// the session to `handler`, which decides what to run (see the module
/// example).
///
/// The whole call is bounded by the session timeout plus twice the close
/// timeout, even if the handler awaits something else that hangs (the
/// socket is then dropped without a close frame).
///
/// # Errors
///
/// As [`ServerSession::open`], or the handler's error, or
/// [`TransportError::Timeout`] with [`Phase::Handler`].
pub async fn serve<F, H, Fut, T>(frames: F, config: TransportConfig, handler: H) -> Result<T>
where
    F: Frames,
    H: FnOnce(ServerSession<F>) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let start = Instant::now();
    let deadline = start + config.session_timeout;
    let hard_deadline = deadline + config.close_timeout * 2;
    let session = async move {
        let session = ServerSession::open_by(frames, config, deadline).await?;
        handler(session).await
    };
    match timeout_at(hard_deadline, session).await {
        Ok(result) => result,
        Err(_) => Err(TransportError::Timeout {
            phase: Phase::Handler,
            limit: TimeoutKind::Session,
        }),
    }
}

/// An HTTP status to refuse a WebSocket upgrade with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HttpRejection(pub StatusCode);

impl HttpRejection {
    /// 401: missing or invalid credentials.
    pub const UNAUTHORIZED: Self = Self(StatusCode::UNAUTHORIZED);
    /// 403: valid credentials, not allowed.
    pub const FORBIDDEN: Self = Self(StatusCode::FORBIDDEN);
    /// 429: rate limited.
    pub const TOO_MANY_REQUESTS: Self = Self(StatusCode::TOO_MANY_REQUESTS);
}

/// The token of an `Authorization: Bearer <token>` header, if there is
/// exactly one such header (the scheme is matched case-insensitively).
#[must_use]
pub fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let mut values = headers.get_all(http::header::AUTHORIZATION).iter();
    let value = values.next()?;
    if values.next().is_some() {
        return None;
    }
    let value = value.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Accepts a WebSocket upgrade on `stream` (a raw TCP stream, or a TLS
/// stream around one), with the size limits of `config`, within its message
/// timeout.
///
/// `authorize` sees the upgrade request (method, URI, headers: use
/// [`bearer_token`]) before the upgrade completes. Its `Ok` value is
/// returned with the socket; its `Err` refuses the upgrade with that HTTP
/// status and an empty body. It runs inside the handshake, so it should be
/// quick (e.g. verify a JWT, not call a database).
///
/// # Errors
///
/// [`TransportError::UpgradeRefused`] if `authorize` refused,
/// [`TransportError::Timeout`] with [`Phase::Connect`], or
/// [`TransportError::Transport`] for a failed handshake.
// The handshake callback's error type is tungstenite's `ErrorResponse`.
#[allow(clippy::result_large_err)]
pub async fn accept<S, A, Auth>(
    stream: S,
    config: &TransportConfig,
    authorize: Auth,
) -> Result<(WebSocketStream<S>, A)>
where
    S: AsyncRead + AsyncWrite + Unpin,
    Auth: FnOnce(&Request) -> core::result::Result<A, HttpRejection>,
{
    let mut granted: Option<A> = None;
    let mut refused: Option<StatusCode> = None;
    // Boxed so that the callback is `Unpin` whatever `Auth` is.
    let authorize = Box::new(authorize);
    let callback =
        |request: &Request, response: Response| -> core::result::Result<Response, ErrorResponse> {
            match authorize(request) {
                Ok(value) => {
                    granted = Some(value);
                    Ok(response)
                }
                Err(HttpRejection(status)) => {
                    refused = Some(status);
                    let mut error = ErrorResponse::new(None);
                    *error.status_mut() = status;
                    Err(error)
                }
            }
        };
    let handshake = tokio_tungstenite::accept_hdr_async_with_config(
        stream,
        callback,
        Some(config.websocket_config()),
    );
    let result = timeout(config.message_timeout, handshake).await;
    match result {
        Ok(Ok(socket)) => match granted {
            Some(value) => Ok((socket, value)),
            None => Err(TransportError::transport(
                "upgrade completed without authorization",
            )),
        },
        Ok(Err(tungstenite::Error::Http(response))) => Err(TransportError::UpgradeRefused {
            status: refused.unwrap_or(response.status()).as_u16(),
        }),
        Ok(Err(error)) => Err(match ws_error(error) {
            FrameError::Closed => TransportError::Closed,
            FrameError::TooLarge => TransportError::transport("upgrade request too large"),
            FrameError::Other(detail) => TransportError::Transport { detail },
        }),
        Err(_) => Err(TransportError::Timeout {
            phase: Phase::Connect,
            limit: TimeoutKind::Message,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn bearer_tokens() {
        let mut headers = HeaderMap::new();
        assert_eq!(bearer_token(&headers), None);
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer abc.def"),
        );
        assert_eq!(bearer_token(&headers), Some("abc.def"));
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("bearer xyz"),
        );
        assert_eq!(bearer_token(&headers), Some("xyz"));
        for bad in ["Basic abc", "Bearer", "Bearer ", "Bearerabc"] {
            headers.insert(http::header::AUTHORIZATION, HeaderValue::from_static(bad));
            assert_eq!(bearer_token(&headers), None, "{bad}");
        }
        headers.insert(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer one"),
        );
        headers.append(
            http::header::AUTHORIZATION,
            HeaderValue::from_static("Bearer two"),
        );
        assert_eq!(bearer_token(&headers), None);
    }
}
