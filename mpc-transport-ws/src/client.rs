//! The client side (party A, share P1): connect, open a session, run the
//! protocol, exchange outcomes.

use core::fmt;

use http::header::AUTHORIZATION;
use http::HeaderValue;
use mpc_core::derive::DerivationPath;
use mpc_core::sign::PresignatureGuard;
use mpc_core::wire::Role;
use mpc_core::{
    Dkg, KeyShare, OnlineSign, Prehash, Presign, Presignature, Protocol, Refresh, Sign,
};
use mpc_core::{
    KeyId, SchnorrOnline, SchnorrPresign, SchnorrPresignature, SchnorrSignature, SignSchnorr,
    SignatureOutput, Taproot,
};
use rand_core::{CryptoRngCore, OsRng};
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self};
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tracing::debug;
use zeroize::Zeroizing;

use crate::config::TransportConfig;
use crate::driver::{BeforeSend, Link, Side, Traffic};
use crate::error::{Phase, Result, TimeoutKind, TransportError};
use crate::frames::{ws_error, FrameError, Frames};
use crate::opening::{FrameKind, Opening, Operation};

/// The socket type [`Client::connect`] returns.
pub type ClientSocket = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// Runs one whole client session over an open socket: sends `opening`,
/// runs `protocol` (which must be the client side of `opening`'s
/// operation), sends this side's outcome, waits for the server's, then for
/// the server's close.
///
/// The output is returned only once the server reported success (e.g. that
/// it stored its key share) and then closed normally (1000): the server
/// closes normally only after it completed what this side's outcome
/// confirmed (e.g. activated the new key, PROTOCOL.md §18.3). Anything else
/// after the outcomes (another close code, a connection that ends without
/// a close frame, no close within the close timeout) is an error, and the
/// output is dropped: a lost close makes a good session fail, never a
/// failed one succeed. On any error the socket is closed as described in
/// the crate documentation.
///
/// # Errors
///
/// As [`run_protocol`](crate::run_protocol), plus
/// [`TransportError::RejectedByPeer`] when the server rejects the opening
/// (e.g. [`CloseCode::UNSUPPORTED_OPERATION`](crate::CloseCode::UNSUPPORTED_OPERATION)),
/// fails after the protocol, or closes with a code other than 1000 after
/// the outcomes; [`TransportError::Timeout`] with [`Phase::Outcome`] if its
/// outcome does not arrive, or with [`Phase::Close`] (and
/// [`TimeoutKind::Close`]) if its close does not; and
/// [`TransportError::Closed`] if the connection ends without a close frame.
pub async fn run_client<F, P, R>(
    frames: F,
    opening: &Opening,
    protocol: &mut P,
    rng: &mut R,
    config: &TransportConfig,
) -> Result<(P::Output, Traffic)>
where
    F: Frames,
    P: Protocol,
    R: CryptoRngCore,
{
    let deadline = Instant::now() + config.session_timeout;
    let mut hook = |_: &P| std::future::ready(Ok(()));
    session(frames, opening, protocol, rng, config, deadline, &mut hook).await
}

/// [`run_client`] with a [`BeforeSend`] hook, called before each protocol
/// message leaves (e.g. to persist a refresh's new share).
///
/// # Errors
///
/// As [`run_client`]; a hook's [`Rejection`](crate::Rejection) ends the
/// session with its code ([`TransportError::Rejected`]).
pub async fn run_client_with<F, P, R, H>(
    frames: F,
    opening: &Opening,
    protocol: &mut P,
    rng: &mut R,
    config: &TransportConfig,
    hook: &mut H,
) -> Result<(P::Output, Traffic)>
where
    F: Frames,
    P: Protocol,
    R: CryptoRngCore,
    H: BeforeSend<P>,
{
    let deadline = Instant::now() + config.session_timeout;
    session(frames, opening, protocol, rng, config, deadline, hook).await
}

async fn session<F, P, R, H>(
    frames: F,
    opening: &Opening,
    protocol: &mut P,
    rng: &mut R,
    config: &TransportConfig,
    deadline: Instant,
    hook: &mut H,
) -> Result<(P::Output, Traffic)>
where
    F: Frames,
    P: Protocol,
    R: CryptoRngCore,
    H: BeforeSend<P>,
{
    let mut link = Link::new(frames, config.clone(), deadline, Side::Client);
    debug!(
        session = %opening.session,
        operation = opening.operation.name(),
        "client session"
    );
    link.send(FrameKind::Opening, &opening.encode(), Phase::Opening)
        .await?;
    let output = link.run_with(protocol, rng, hook).await?;
    link.send_ok().await?;
    link.await_outcome().await?;
    link.await_close().await?;
    Ok((output, link.traffic()))
}

/// A client of one server URL.
///
/// Each operation opens its own WebSocket connection, sends the bearer token
/// in the upgrade request's `Authorization` header, runs the session and
/// closes. Randomness comes from the operating system ([`OsRng`]).
///
/// ```no_run
/// # async fn demo() -> Result<(), mpc_transport_ws::TransportError> {
/// use mpc_core::Prehash;
/// use mpc_transport_ws::Client;
///
/// let client = Client::new("ws://127.0.0.1:8080/v1/session").with_bearer_token("token");
/// let share = client.keygen().await?;
/// let signed = client.sign(&share, Prehash::sha256(b"hello")).await?;
/// # let _ = signed;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct Client {
    url: String,
    token: Option<Zeroizing<String>>,
    config: TransportConfig,
}

impl fmt::Debug for Client {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Client")
            .field("url", &self.url)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("config", &self.config)
            .finish()
    }
}

impl Client {
    /// A client for the WebSocket endpoint `url` (`ws://` or, with a TLS
    /// feature of `tokio-tungstenite` enabled, `wss://`), with the default
    /// [`TransportConfig`] and no token.
    #[must_use]
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            token: None,
            config: TransportConfig::default(),
        }
    }

    /// Sends `token` as `Authorization: Bearer <token>` in each upgrade
    /// request. The token is never logged, and is wiped from this value's
    /// memory on drop.
    #[must_use]
    pub fn with_bearer_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Zeroizing::new(token.into()));
        self
    }

    /// Uses `config` for every session.
    #[must_use]
    pub fn with_config(mut self, config: TransportConfig) -> Self {
        self.config = config;
        self
    }

    /// The configuration in use.
    #[must_use]
    pub fn config(&self) -> &TransportConfig {
        &self.config
    }

    /// Opens a WebSocket connection to the server (TCP connect and upgrade,
    /// bounded by the message timeout), with the size limits of the
    /// configuration and Nagle's algorithm off.
    ///
    /// # Errors
    ///
    /// [`TransportError::UpgradeRefused`] if the server answers the upgrade
    /// with an HTTP error (e.g. 401), [`TransportError::Timeout`] with
    /// [`Phase::Connect`], or [`TransportError::Transport`] (bad URL or
    /// token characters, connection refused).
    pub async fn connect(&self) -> Result<ClientSocket> {
        let deadline = Instant::now() + self.config.session_timeout;
        self.connect_by(deadline).await
    }

    async fn connect_by(&self, session_deadline: Instant) -> Result<ClientSocket> {
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(TransportError::transport)?;
        if let Some(token) = &self.token {
            let value = Zeroizing::new(format!("Bearer {}", token.as_str()));
            let mut value =
                HeaderValue::from_str(&value).map_err(|_| TransportError::Transport {
                    detail: "the bearer token is not a valid header value".into(),
                })?;
            value.set_sensitive(true);
            request.headers_mut().insert(AUTHORIZATION, value);
        }
        let message_deadline = Instant::now() + self.config.message_timeout;
        let (deadline, limit) = if message_deadline < session_deadline {
            (message_deadline, TimeoutKind::Message)
        } else {
            (session_deadline, TimeoutKind::Session)
        };
        let connecting = tokio_tungstenite::connect_async_with_config(
            request,
            Some(self.config.websocket_config()),
            true,
        );
        match timeout_at(deadline, connecting).await {
            Ok(Ok((socket, _response))) => Ok(socket),
            Ok(Err(tungstenite::Error::Http(response))) => Err(TransportError::UpgradeRefused {
                status: response.status().as_u16(),
            }),
            Ok(Err(error)) => Err(match ws_error(error) {
                FrameError::Closed => TransportError::Closed,
                FrameError::TooLarge => TransportError::transport("upgrade response too large"),
                FrameError::Other(detail) => TransportError::Transport { detail },
            }),
            Err(_) => Err(TransportError::Timeout {
                phase: Phase::Connect,
                limit,
            }),
        }
    }

    /// Connects and runs one session of `operation` with the client side
    /// `protocol`, built from the opening (so that, e.g., a DKG can use
    /// [`Opening::context`]).
    ///
    /// # Errors
    ///
    /// As [`Client::connect`] and [`run_client`].
    pub async fn run<P, B>(&self, operation: Operation, build: B) -> Result<(P::Output, Traffic)>
    where
        P: Protocol,
        B: FnOnce(&Opening) -> P,
    {
        let mut hook = |_: &P| std::future::ready(Ok(()));
        self.run_with(operation, build, &mut hook).await
    }

    /// [`run`](Self::run) with a [`BeforeSend`] hook, called before each
    /// protocol message leaves (e.g. to persist a refresh's new share).
    ///
    /// # Errors
    ///
    /// As [`Client::run`]; a hook's [`Rejection`](crate::Rejection) ends the
    /// session with its code ([`TransportError::Rejected`]).
    pub async fn run_with<P, B, H>(
        &self,
        operation: Operation,
        build: B,
        hook: &mut H,
    ) -> Result<(P::Output, Traffic)>
    where
        P: Protocol,
        B: FnOnce(&Opening) -> P,
        H: BeforeSend<P>,
    {
        let deadline = Instant::now() + self.config.session_timeout;
        let mut rng = OsRng;
        let opening = Opening::new(operation, &mut rng);
        let mut protocol = build(&opening);
        let socket = self.connect_by(deadline).await?;
        session(
            socket,
            &opening,
            &mut protocol,
            &mut rng,
            &self.config,
            deadline,
            hook,
        )
        .await
    }

    /// Share refresh from `share`'s epoch: returns the new share (epoch + 1)
    /// once the server reported that it stored its own.
    ///
    /// `hook` runs before each refresh message leaves. A client that must
    /// survive a cut connection or a crash persists, as PROTOCOL.md §18.1
    /// says, the new share when [`Refresh::ready_share`] first returns it and
    /// the confirmed state when [`Refresh::is_confirmed`] turns true; it signs
    /// with the new epoch only once confirmed, and deletes the old share
    /// only once this call returned.
    ///
    /// # Errors
    ///
    /// As [`Client::run_with`].
    pub async fn refresh<'s, H>(&self, share: &'s KeyShare, hook: &mut H) -> Result<KeyShare>
    where
        H: BeforeSend<Refresh<'s>>,
    {
        let operation = Operation::Refresh {
            key_id: *share.key_id(),
            epoch: share.epoch(),
        };
        self.run_with(
            operation,
            |opening| Refresh::new(share, opening.context()),
            hook,
        )
        .await
        .map(|(share, _)| share)
    }

    /// Key generation: returns the client's share (role A) once the server
    /// has stored its own and, after this side's outcome, closed normally
    /// (which it does only once the key is usable, PROTOCOL.md §18.3). An
    /// error means the key must not be used: funds sent to it may be lost.
    ///
    /// # Errors
    ///
    /// As [`Client::run`].
    pub async fn keygen(&self) -> Result<KeyShare> {
        self.run(Operation::Keygen, |opening| {
            Dkg::new(Role::A, opening.context())
        })
        .await
        .map(|(share, _)| share)
    }

    /// Signs `prehash` with `share` under the root key.
    ///
    /// # Errors
    ///
    /// As [`Client::run`].
    pub async fn sign(&self, share: &KeyShare, prehash: Prehash) -> Result<SignatureOutput> {
        let operation = Operation::Sign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            prehash,
            path: DerivationPath::root(),
        };
        self.run(operation, |_| Sign::new(share, prehash))
            .await
            .map(|(signed, _)| signed)
    }

    /// Signs `prehash` with `share` under the BIP32 child key at `path`
    /// (the signature verifies under
    /// [`KeyShare::derive`](mpc_core::KeyShare::derive)`(path)`).
    ///
    /// # Errors
    ///
    /// As [`Client::run`]; [`TransportError::Protocol`] without connecting
    /// if the path cannot be derived; the server rejects a path deeper than
    /// [`MAX_PATH_DEPTH`](crate::opening::MAX_PATH_DEPTH) with 4005.
    pub async fn sign_with_path(
        &self,
        share: &KeyShare,
        prehash: Prehash,
        path: &DerivationPath,
    ) -> Result<SignatureOutput> {
        let protocol = Sign::with_path(share, prehash, path)?;
        let operation = Operation::Sign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            prehash,
            path: path.clone(),
        };
        self.run(operation, move |_| protocol)
            .await
            .map(|(signed, _)| signed)
    }

    /// Presigns with `share` under the root key; the server keeps its half
    /// under the same [`Presignature::session_id`].
    ///
    /// # Errors
    ///
    /// As [`Client::run`].
    pub async fn presign(&self, share: &KeyShare) -> Result<Presignature> {
        let operation = Operation::Presign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            path: DerivationPath::root(),
        };
        self.run(operation, |_| Presign::new(share))
            .await
            .map(|(presignature, _)| presignature)
    }

    /// Presigns with `share` under the BIP32 child key at `path`.
    ///
    /// # Errors
    ///
    /// As [`Client::sign_with_path`].
    pub async fn presign_with_path(
        &self,
        share: &KeyShare,
        path: &DerivationPath,
    ) -> Result<Presignature> {
        let protocol = Presign::with_path(share, path)?;
        let operation = Operation::Presign {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            path: path.clone(),
        };
        self.run(operation, move |_| protocol)
            .await
            .map(|(presignature, _)| presignature)
    }

    /// The online step: signs `prehash` with `presignature`, which is
    /// consumed whatever the result (a presignature is used at most once).
    /// `guard` claims it before anything is sent (PROTOCOL.md §14.3): it is
    /// the caller's durable record of used presignatures, see
    /// [`PresignatureGuard`].
    ///
    /// # Errors
    ///
    /// The errors of [`OnlineSign::new`] (burned share, a presignature of
    /// another key or epoch, a refused claim), before any connection; then
    /// as [`Client::run`].
    pub async fn online_sign<G: PresignatureGuard + ?Sized>(
        &self,
        share: &KeyShare,
        presignature: Presignature,
        prehash: Prehash,
        guard: &mut G,
    ) -> Result<SignatureOutput> {
        let key_id: KeyId = *presignature.key_id();
        let operation = Operation::OnlineSign {
            key_id,
            presignature: presignature.session_id(),
            prehash,
        };
        let protocol = OnlineSign::new(share, presignature, prehash, guard)?;
        self.run(operation, move |_| protocol)
            .await
            .map(|(signed, _)| signed)
    }

    /// Two-party BIP340 signing of the 32-byte `message` (a BIP341 sighash
    /// for Taproot) with `share` under the BIP32 child at `path` and the
    /// output tweak `taproot` (PROTOCOL.md §20). The signature verifies
    /// under [`SchnorrSignature::public_key`].
    ///
    /// # Errors
    ///
    /// As [`Client::sign_with_path`]; [`TransportError::Protocol`] without
    /// connecting for a Taproot tweak that BIP341 rejects.
    pub async fn sign_schnorr(
        &self,
        share: &KeyShare,
        message: [u8; 32],
        path: &DerivationPath,
        taproot: Taproot,
    ) -> Result<SchnorrSignature> {
        let protocol = SignSchnorr::new(share, &message, path, taproot)?;
        let operation = Operation::SignSchnorr {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            message,
            path: path.clone(),
            taproot,
        };
        self.run(operation, move |_| protocol)
            .await
            .map(|(signed, _)| signed)
    }

    /// The BIP340 nonce round for the key at `path` with the output tweak
    /// `taproot`, ahead of the message (PROTOCOL.md §20.5). Store the result
    /// as [`Client::online_sign`]'s presignatures are stored; the server
    /// keeps its half sealed, under the same session id.
    ///
    /// # Errors
    ///
    /// The errors of [`SchnorrPresign::new`] without connecting; then as
    /// [`Client::run`].
    pub async fn presign_schnorr(
        &self,
        share: &KeyShare,
        path: &DerivationPath,
        taproot: Taproot,
    ) -> Result<SchnorrPresignature> {
        let protocol = SchnorrPresign::new(share, path, taproot)?;
        let operation = Operation::PresignSchnorr {
            key_id: *share.key_id(),
            epoch: share.epoch(),
            path: path.clone(),
            taproot,
        };
        self.run(operation, move |_| protocol)
            .await
            .map(|(presignature, _)| presignature)
    }

    /// The online round of a Schnorr presignature for the 32-byte `message`
    /// (PROTOCOL.md §20.5). `guard` is asked to claim the presignature
    /// before anything is sent; `path` and `taproot` must be the ones it
    /// was made for.
    ///
    /// # Errors
    ///
    /// The errors of [`SchnorrOnline::new`] (burned share, another key,
    /// epoch, path or Taproot setting, a refused claim), before any
    /// connection; then as [`Client::run`].
    pub async fn online_sign_schnorr<G: PresignatureGuard + ?Sized>(
        &self,
        share: &KeyShare,
        presignature: SchnorrPresignature,
        message: [u8; 32],
        path: &DerivationPath,
        taproot: Taproot,
        guard: &mut G,
    ) -> Result<SchnorrSignature> {
        let operation = Operation::OnlineSignSchnorr {
            key_id: *presignature.key_id(),
            presignature: presignature.session_id(),
            message,
            path: path.clone(),
            taproot,
        };
        let protocol = SchnorrOnline::new(share, presignature, &message, path, taproot, guard)?;
        self.run(operation, move |_| protocol)
            .await
            .map(|(signed, _)| signed)
    }
}
