//! The one generic loop that runs an `mpc-core` protocol over [`Frames`].
//!
//! [`run_protocol`] is the bare loop: the protocol's messages, with
//! timeouts, keepalive, size limits and the ignore / abort rules. The
//! [`client`](crate::client) and [`server`](crate::server) modules wrap the
//! same loop with the opening and outcome messages.

use std::future::{pending, ready, Future};

use mpc_core::{AbortClass, Protocol, Step};
use rand_core::CryptoRngCore;
use tokio::time::{sleep_until, timeout_at, Instant};
use tracing::{debug, info, warn};

use crate::config::TransportConfig;
use crate::error::{class_name, CloseCode, Phase, Rejection, Result, TimeoutKind, TransportError};
use crate::frames::{FrameError, Frames, Incoming};
use crate::opening::{decode_frame, encode_frame, truncate, FrameKind, Outcome, MAX_REASON_BYTES};

/// Frames and bytes one side sent and received in a session (binary frames
/// only, kind byte included).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Binary frames sent.
    pub frames_sent: usize,
    /// Bytes of binary frames sent.
    pub bytes_sent: usize,
    /// Binary frames received.
    pub frames_received: usize,
    /// Bytes of binary frames received.
    pub bytes_received: usize,
}

/// Work that must be done after a protocol step produced a message and
/// before that message leaves, with the protocol's state at hand.
///
/// Refresh needs it: each party persists its new share when
/// [`Refresh::ready_share`](mpc_core::Refresh::ready_share) first returns
/// it, and its confirmed state when
/// [`Refresh::is_confirmed`](mpc_core::Refresh::is_confirmed) turns true,
/// before the next message is sent (PROTOCOL.md §18). The hook runs before
/// every protocol message this side sends, the first included; it is bounded
/// by the message timeout.
///
/// Any `FnMut(&P) -> impl Future<Output = Result<(), Rejection>> + Send` is
/// a hook. The future may not borrow the protocol: copy out what it needs
/// first.
///
/// ```
/// use mpc_core::{KeyShare, Refresh};
/// use mpc_transport_ws::Rejection;
///
/// let mut saved = None;
/// let mut hook = |refresh: &Refresh<'_>| {
///     let ready = refresh.ready_share().map(KeyShare::to_bytes);
///     if let Some(bytes) = ready {
///         saved = Some(bytes); // e.g. hand the bytes to storage
///     }
///     async { Ok::<(), Rejection>(()) }
/// };
/// # let _ = &mut hook;
/// ```
pub trait BeforeSend<P> {
    /// Called with the protocol after a step that produced a message, before
    /// the message is sent.
    ///
    /// # Errors
    ///
    /// A [`Rejection`]: the message is not sent, and the session ends with
    /// the rejection's close code (e.g. [`Rejection::INTERNAL`] when
    /// storage failed).
    fn before_send(
        &mut self,
        protocol: &P,
    ) -> impl Future<Output = core::result::Result<(), Rejection>> + Send;
}

impl<P, F, Fut> BeforeSend<P> for F
where
    F: FnMut(&P) -> Fut,
    Fut: Future<Output = core::result::Result<(), Rejection>> + Send,
{
    fn before_send(
        &mut self,
        protocol: &P,
    ) -> impl Future<Output = core::result::Result<(), Rejection>> + Send {
        self(protocol)
    }
}

/// No work before sending.
fn no_hook<P>(_: &P) -> std::future::Ready<core::result::Result<(), Rejection>> {
    ready(Ok(()))
}

/// What a server session's handler does around each protocol step: a
/// guard over the step, work after a failure before its outcome leaves,
/// and cancellation from outside (PROTOCOL.md §18.2: a ban stops every
/// session of the key before anyone is told).
///
/// The loop of [`ServerSession::run_hooked`](crate::ServerSession::run_hooked):
///
/// 1. [`before_step`](Self::before_step) returns a guard, before
///    `Protocol::start` and before each `Protocol::handle` of a received
///    message; the guard is held until that step's result is dealt with:
///    through [`before_send`](Self::before_send) of the message it produced
///    (then it is dropped before the message is sent), or by
///    [`on_protocol_error`](Self::on_protocol_error), which is handed it.
/// 2. [`on_protocol_error`](Self::on_protocol_error) runs after a step
///    failed with a non-`Ignore` error and before the failed outcome
///    leaves; it decides how long the step's guard is held.
/// 3. [`cancelled`](Self::cancelled) is raced against every wait for the
///    peer's next protocol message; when it completes first the session
///    ends with its [`Rejection`].
///
/// Every call is bounded by the message timeout. This crate knows nothing
/// of what the guard protects: a server uses it, for example, to let one
/// session of a key at a time evaluate the checks that use the key's OT
/// material, and to refuse a key that was banned meanwhile.
pub trait SessionHooks<P> {
    /// Held while one step runs (e.g. an owned mutex guard); `()` for none.
    type Guard: Send;

    /// Taken before each protocol step.
    ///
    /// # Errors
    ///
    /// A [`Rejection`]: the step does not run and the session ends with
    /// the rejection's close code.
    fn before_step(
        &mut self,
    ) -> impl Future<Output = core::result::Result<Self::Guard, Rejection>> + Send;

    /// As [`BeforeSend::before_send`]; called with the step's guard held.
    ///
    /// # Errors
    ///
    /// As [`BeforeSend::before_send`].
    fn before_send(
        &mut self,
        protocol: &P,
    ) -> impl Future<Output = core::result::Result<(), Rejection>> + Send {
        let _ = protocol;
        ready(Ok(()))
    }

    /// Called after a step failed with an `Abort`, `Ban` or `Local`-class
    /// error, before the failed outcome is sent. It is handed the step's
    /// guard: the step ends when the guard drops, at the latest with this
    /// call (the default drops it at once). If the call does not finish
    /// within the message timeout it is dropped and the outcome is sent
    /// anyway, so work that must not be lost belongs in a task of its own,
    /// which may take the guard along to hold it past the outcome (e.g.
    /// until the failure's consequences are stored).
    fn on_protocol_error(
        &mut self,
        guard: Self::Guard,
        error: &mpc_core::Error,
    ) -> impl Future<Output = ()> + Send {
        drop(guard);
        let _ = error;
        ready(())
    }

    /// Completes (with the close code to end the session with) when the
    /// session must stop while it waits for the peer. Called afresh for
    /// each wait, so it must be cancel-safe; the default never completes.
    fn cancelled(&mut self) -> impl Future<Output = Rejection> + Send {
        pending()
    }
}

/// A [`BeforeSend`] hook as [`SessionHooks`]: no guard, no cancellation.
struct SendOnly<'h, H>(&'h mut H);

impl<P, H: BeforeSend<P>> SessionHooks<P> for SendOnly<'_, H> {
    type Guard = ();

    fn before_step(&mut self) -> impl Future<Output = core::result::Result<(), Rejection>> + Send {
        ready(Ok(()))
    }

    fn before_send(
        &mut self,
        protocol: &P,
    ) -> impl Future<Output = core::result::Result<(), Rejection>> + Send {
        self.0.before_send(protocol)
    }
}

/// Which side a link is, for logs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Side {
    Client,
    Server,
    /// A bare [`run_protocol`] call.
    Peer,
}

impl Side {
    const fn name(self) -> &'static str {
        match self {
            Self::Client => "client",
            Self::Server => "server",
            Self::Peer => "peer",
        }
    }
}

/// A socket with the session's limits and state: deadlines, keepalive,
/// ignored-frame count, traffic, and whether it is still open.
pub(crate) struct Link<F> {
    frames: F,
    config: TransportConfig,
    session_deadline: Instant,
    next_ping: Option<Instant>,
    ignored: u32,
    traffic: Traffic,
    /// False once a close frame was sent or received or the connection
    /// failed: nothing more is sent then.
    open: bool,
    /// True once the socket reported an oversized frame: it reads nothing
    /// more.
    read_ended: bool,
    side: Side,
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => sleep_until(at).await,
        None => pending().await,
    }
}

impl<F: Frames> Link<F> {
    pub(crate) fn new(
        frames: F,
        config: TransportConfig,
        session_deadline: Instant,
        side: Side,
    ) -> Self {
        let next_ping = config.ping_interval.map(|every| Instant::now() + every);
        Self {
            frames,
            config,
            session_deadline,
            next_ping,
            ignored: 0,
            traffic: Traffic::default(),
            open: true,
            read_ended: false,
            side,
        }
    }

    pub(crate) fn traffic(&self) -> Traffic {
        self.traffic
    }

    /// The deadline of a wait that starts now, and which limit it is.
    fn wait_deadline(&self) -> (Instant, TimeoutKind) {
        let message = Instant::now() + self.config.message_timeout;
        if message < self.session_deadline {
            (message, TimeoutKind::Message)
        } else {
            (self.session_deadline, TimeoutKind::Session)
        }
    }

    /// Sends one frame.
    pub(crate) async fn send(&mut self, kind: FrameKind, body: &[u8], phase: Phase) -> Result<()> {
        if !self.open {
            return Err(TransportError::Closed);
        }
        let frame = encode_frame(kind, body);
        if frame.len() > self.config.max_message_bytes {
            // Our own protocol produced more than the limit: a
            // configuration error, not the peer's fault.
            self.fail(
                CloseCode::INTERNAL_ERROR,
                None,
                "outgoing message over the size limit",
            )
            .await;
            return Err(TransportError::transport(
                "outgoing message over the configured size limit",
            ));
        }
        let len = frame.len();
        let (deadline, limit) = self.wait_deadline();
        match timeout_at(deadline, self.frames.send_binary(frame)).await {
            Ok(Ok(())) => {
                self.traffic.frames_sent += 1;
                self.traffic.bytes_sent += len;
                Ok(())
            }
            Ok(Err(error)) => Err(self.broken(error)),
            Err(_) => Err(self.timed_out(phase, limit).await),
        }
    }

    /// Receives the next binary frame, within the message and session
    /// deadlines, answering pings and sending keepalive pings meanwhile.
    pub(crate) async fn recv(&mut self, phase: Phase) -> Result<Vec<u8>> {
        let (deadline, limit) = self.wait_deadline();
        self.recv_by(phase, deadline, limit).await
    }

    /// [`recv`](Self::recv) with a deadline that the caller keeps across
    /// frames it drops.
    async fn recv_by(
        &mut self,
        phase: Phase,
        deadline: Instant,
        limit: TimeoutKind,
    ) -> Result<Vec<u8>> {
        if !self.open {
            return Err(TransportError::Closed);
        }
        loop {
            // Checked here too: a peer that never stops sending pings would
            // otherwise keep the (biased) select below from seeing the
            // deadline.
            if Instant::now() >= deadline {
                return Err(self.timed_out(phase, limit).await);
            }
            let ping_at = self.next_ping;
            let incoming = tokio::select! {
                biased;
                incoming = self.frames.recv() => incoming,
                () = sleep_until(deadline) => return Err(self.timed_out(phase, limit).await),
                () = sleep_until_some(ping_at) => {
                    self.ping(deadline, phase, limit).await?;
                    continue;
                }
            };
            match incoming {
                None => return Err(self.broken(FrameError::Closed)),
                Some(Err(FrameError::TooLarge)) => {
                    self.read_ended = true;
                    return Err(self
                        .violation(CloseCode::MESSAGE_TOO_BIG, "message too big")
                        .await);
                }
                Some(Err(error)) => return Err(self.broken(error)),
                Some(Ok(Incoming::Binary(data))) => {
                    if data.len() > self.config.max_message_bytes {
                        return Err(self
                            .violation(CloseCode::MESSAGE_TOO_BIG, "message too big")
                            .await);
                    }
                    self.traffic.frames_received += 1;
                    self.traffic.bytes_received += data.len();
                    return Ok(data);
                }
                Some(Ok(Incoming::Text)) => {
                    return Err(self
                        .violation(CloseCode::POLICY_VIOLATION, "text frame")
                        .await)
                }
                Some(Ok(Incoming::Ping)) => {
                    // The socket queued the pong; write it out now.
                    match timeout_at(deadline, self.frames.flush()).await {
                        Ok(Ok(())) => {}
                        Ok(Err(error)) => return Err(self.broken(error)),
                        Err(_) => return Err(self.timed_out(phase, limit).await),
                    }
                }
                Some(Ok(Incoming::Pong)) => {}
                Some(Ok(Incoming::Close(frame))) => return Err(self.peer_closed(frame).await),
            }
        }
    }

    async fn ping(&mut self, deadline: Instant, phase: Phase, limit: TimeoutKind) -> Result<()> {
        self.next_ping = self
            .config
            .ping_interval
            .map(|every| Instant::now() + every);
        match timeout_at(deadline, self.frames.send_ping()).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => Err(self.broken(error)),
            Err(_) => Err(self.timed_out(phase, limit).await),
        }
    }

    /// Runs `protocol` until it finishes or fails.
    pub(crate) async fn run<P, R>(&mut self, protocol: &mut P, rng: &mut R) -> Result<P::Output>
    where
        P: Protocol,
        R: CryptoRngCore,
    {
        self.run_with(protocol, rng, &mut no_hook::<P>).await
    }

    /// Runs `protocol` until it finishes or fails, calling `hook` before
    /// each message leaves.
    pub(crate) async fn run_with<P, R, H>(
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
        self.run_hooked(protocol, rng, &mut SendOnly(hook)).await
    }

    /// Runs `protocol` until it finishes or fails, with `hooks` around each
    /// step (see [`SessionHooks`]).
    pub(crate) async fn run_hooked<P, R, H>(
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
        let guard = self.before_step(hooks).await?;
        let first = match self.step(|| protocol.start(rng)).await? {
            Ok(first) => first,
            Err(error) => return Err(self.step_failed(hooks, guard, error).await),
        };
        self.before_send(hooks, protocol).await?;
        drop(guard);
        self.send(FrameKind::Message, &first, Phase::Protocol)
            .await?;
        // The wait for each expected message has one deadline: frames that
        // are dropped meanwhile do not restart it.
        let (mut deadline, mut limit) = self.wait_deadline();
        loop {
            // Biased: once cancelled, no further frame of the peer is read.
            let frame = tokio::select! {
                biased;
                rejection = hooks.cancelled() => {
                    return Err(self.reject(rejection.code(), rejection.reason()).await)
                }
                frame = self.recv_by(Phase::Protocol, deadline, limit) => frame?,
            };
            match decode_frame(&frame) {
                Some((FrameKind::Message, envelope)) => {
                    let guard = self.before_step(hooks).await?;
                    match self.step(|| protocol.handle(rng, envelope)).await? {
                        Ok(Step::Send(next)) => {
                            self.before_send(hooks, protocol).await?;
                            drop(guard);
                            self.send(FrameKind::Message, &next, Phase::Protocol)
                                .await?;
                            (deadline, limit) = self.wait_deadline();
                        }
                        Ok(Step::Finished(output)) => return Ok(output),
                        Err(error) if error.class() == AbortClass::Ignore => {
                            drop(guard);
                            self.ignore(error.as_str()).await?;
                        }
                        Err(error) => return Err(self.step_failed(hooks, guard, error).await),
                    }
                }
                Some((FrameKind::Outcome, body)) => {
                    return Err(self.peer_outcome(body, Phase::Protocol).await)
                }
                Some((FrameKind::Opening, _)) => {
                    return Err(self
                        .violation(CloseCode::POLICY_VIOLATION, "unexpected opening")
                        .await)
                }
                None => {
                    return Err(self
                        .violation(CloseCode::POLICY_VIOLATION, "malformed frame")
                        .await)
                }
            }
        }
    }

    /// Runs one protocol step with the configured executor, once it is
    /// this session's turn (a wait bounded like any other).
    async fn step<T>(&mut self, step: impl FnOnce() -> T) -> Result<T> {
        let (deadline, limit) = self.wait_deadline();
        let executor = &self.config.step_executor;
        match timeout_at(deadline, executor.permit()).await {
            Ok(permit) => Ok(executor.run(permit, step)),
            Err(_) => Err(self.timed_out(Phase::Protocol, limit).await),
        }
    }

    async fn before_step<P, H: SessionHooks<P>>(&mut self, hooks: &mut H) -> Result<H::Guard> {
        let (deadline, limit) = self.wait_deadline();
        match timeout_at(deadline, hooks.before_step()).await {
            Ok(Ok(guard)) => Ok(guard),
            Ok(Err(rejection)) => Err(self.reject(rejection.code(), rejection.reason()).await),
            Err(_) => Err(self.timed_out(Phase::Protocol, limit).await),
        }
    }

    async fn before_send<P, H: SessionHooks<P>>(
        &mut self,
        hooks: &mut H,
        protocol: &P,
    ) -> Result<()> {
        let (deadline, limit) = self.wait_deadline();
        match timeout_at(deadline, hooks.before_send(protocol)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(rejection)) => Err(self.reject(rejection.code(), rejection.reason()).await),
            Err(_) => Err(self.timed_out(Phase::Protocol, limit).await),
        }
    }

    /// A step failed: the handler's work, handed the step's guard, then
    /// the failed outcome.
    async fn step_failed<P, H: SessionHooks<P>>(
        &mut self,
        hooks: &mut H,
        guard: H::Guard,
        error: mpc_core::Error,
    ) -> TransportError {
        let (deadline, _) = self.wait_deadline();
        if timeout_at(deadline, hooks.on_protocol_error(guard, &error))
            .await
            .is_err()
        {
            warn!(
                side = self.side.name(),
                "the failure hook did not finish in time"
            );
        }
        self.protocol_failed(error).await
    }

    /// Sends this side's successful outcome.
    pub(crate) async fn send_ok(&mut self) -> Result<()> {
        self.send(FrameKind::Outcome, &Outcome::Ok.encode(), Phase::Outcome)
            .await
    }

    /// Waits for the peer's outcome: `Ok(())` if it succeeded.
    pub(crate) async fn await_outcome(&mut self) -> Result<()> {
        let (deadline, limit) = self.wait_deadline();
        loop {
            let frame = self.recv_by(Phase::Outcome, deadline, limit).await?;
            match decode_frame(&frame) {
                Some((FrameKind::Outcome, body)) => {
                    return match Outcome::decode(body) {
                        Ok(Outcome::Ok) => Ok(()),
                        _ => Err(self.peer_outcome(body, Phase::Outcome).await),
                    }
                }
                // A protocol message after the protocol finished is not for
                // any state of this session: drop it, like an Ignore-class
                // error.
                Some((FrameKind::Message, _)) => self.ignore("message after the protocol").await?,
                Some((FrameKind::Opening, _)) => {
                    return Err(self
                        .violation(CloseCode::POLICY_VIOLATION, "unexpected opening")
                        .await)
                }
                None => {
                    return Err(self
                        .violation(CloseCode::POLICY_VIOLATION, "malformed frame")
                        .await)
                }
            }
        }
    }

    /// Ends a session after both outcomes: a close frame with `code` (1000
    /// when the handler completed, another code when it could not complete
    /// what the client's outcome confirmed), then the closing handshake.
    pub(crate) async fn close_after_outcomes(&mut self, code: CloseCode, reason: &str) {
        if !self.open {
            return;
        }
        self.open = false;
        let until = Instant::now() + self.config.close_timeout;
        let _ = timeout_at(until, self.frames.close(code.0, reason)).await;
        self.drain(until).await;
    }

    /// Waits for the peer's close after both outcomes: `Ok` only for a
    /// normal close (1000) within the close timeout. The server closes
    /// normally only once it completed what the client's outcome confirmed
    /// (PROTOCOL.md §18.3), so a lost, late or abnormal close is a failure.
    pub(crate) async fn await_close(&mut self) -> Result<()> {
        let until = Instant::now() + self.config.close_timeout;
        match self.recv_by(Phase::Close, until, TimeoutKind::Close).await {
            Err(TransportError::RejectedByPeer { code, .. }) if code == CloseCode::NORMAL => Ok(()),
            Err(error) => Err(error),
            // Both outcomes are out: no frame is expected any more.
            Ok(_) => Err(self
                .violation(CloseCode::POLICY_VIOLATION, "frame after the outcomes")
                .await),
        }
    }

    /// Reads and drops frames until the connection ends or `until`; this
    /// completes the closing handshake (the socket answers a close frame by
    /// itself).
    async fn drain(&mut self, until: Instant) {
        // `timeout_at` polls the read first, so a peer that keeps sending
        // must not keep this loop going past `until`.
        while Instant::now() < until {
            match timeout_at(until, self.frames.recv()).await {
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
    }

    /// Ends a failed session from this side: the failed outcome, a close
    /// frame with `code`, the closing handshake. Each step is bounded by
    /// the close timeout; nothing here fails.
    pub(crate) async fn fail(&mut self, code: CloseCode, class: Option<AbortClass>, reason: &str) {
        if !self.open {
            return;
        }
        self.open = false;
        let reason = truncate(reason, MAX_REASON_BYTES);
        info!(
            side = self.side.name(),
            code = code.0,
            reason,
            "closing the session"
        );
        let until = Instant::now() + self.config.close_timeout;
        let outcome = Outcome::Failed {
            code,
            class,
            reason: reason.to_owned(),
        };
        let frame = encode_frame(FrameKind::Outcome, &outcome.encode());
        if let Ok(Ok(())) = timeout_at(until, self.frames.send_binary(frame)).await {
            let _ = timeout_at(until, self.frames.close(code.0, reason)).await;
        }
        if self.read_ended {
            // The socket cannot read past the oversized frame, so the
            // closing handshake cannot complete; hold the connection until
            // the close timeout so the peer can read the close frame before
            // the connection is dropped (a drop with unread data resets it).
            sleep_until(until).await;
        } else {
            self.drain(until).await;
        }
    }

    /// The socket failed or ended under us.
    fn broken(&mut self, error: FrameError) -> TransportError {
        self.open = false;
        debug!(side = self.side.name(), ?error, "connection lost");
        match error {
            FrameError::Closed => TransportError::Closed,
            FrameError::TooLarge => TransportError::Violation {
                code: CloseCode::MESSAGE_TOO_BIG,
                reason: "message too big",
            },
            FrameError::Other(detail) => TransportError::Transport { detail },
        }
    }

    async fn timed_out(&mut self, phase: Phase, limit: TimeoutKind) -> TransportError {
        let reason = match limit {
            TimeoutKind::Message => "message timeout",
            TimeoutKind::Session => "session timeout",
            TimeoutKind::Close => "close timeout",
        };
        self.fail(CloseCode::TIMEOUT, None, reason).await;
        TransportError::Timeout { phase, limit }
    }

    pub(crate) async fn violation(
        &mut self,
        code: CloseCode,
        reason: &'static str,
    ) -> TransportError {
        self.fail(code, None, reason).await;
        TransportError::Violation { code, reason }
    }

    pub(crate) async fn reject(&mut self, code: CloseCode, reason: &'static str) -> TransportError {
        self.fail(code, None, reason).await;
        TransportError::Rejected { code, reason }
    }

    pub(crate) async fn opening_invalid(&mut self, reason: &'static str) -> TransportError {
        self.fail(CloseCode::INVALID_OPENING, None, reason).await;
        TransportError::OpeningInvalid { reason }
    }

    async fn protocol_failed(&mut self, error: mpc_core::Error) -> TransportError {
        let class = error.class();
        if class == AbortClass::Ban {
            warn!(
                side = self.side.name(),
                error = error.as_str(),
                "protocol ban"
            );
        }
        let code = CloseCode::for_class(class).unwrap_or(CloseCode::PROTOCOL_ABORT);
        let reason = format!("{}: {}", class_name(class), error.as_str());
        self.fail(code, Some(class), &reason).await;
        TransportError::Protocol { error }
    }

    /// Drops a frame not meant for the current state; closes with 1008
    /// after too many.
    async fn ignore(&mut self, what: &'static str) -> Result<()> {
        self.ignored = self.ignored.saturating_add(1);
        debug!(
            side = self.side.name(),
            what,
            count = self.ignored,
            "frame ignored"
        );
        if self.ignored > self.config.max_ignored_frames {
            return Err(self
                .violation(CloseCode::POLICY_VIOLATION, "too many ignored frames")
                .await);
        }
        Ok(())
    }

    /// The peer sent an outcome before (or instead of) a successful end.
    async fn peer_outcome(&mut self, body: &[u8], phase: Phase) -> TransportError {
        match Outcome::decode(body) {
            Ok(Outcome::Failed {
                code,
                class,
                reason,
            }) => {
                info!(
                    side = self.side.name(),
                    code = code.0,
                    ?phase,
                    "peer failed"
                );
                // The peer closes next; answer its close frame.
                self.open = false;
                let until = Instant::now() + self.config.close_timeout;
                self.drain(until).await;
                TransportError::RejectedByPeer {
                    code,
                    class,
                    reason,
                }
            }
            Ok(Outcome::Ok) => {
                self.violation(
                    CloseCode::POLICY_VIOLATION,
                    "outcome before the protocol finished",
                )
                .await
            }
            Err(_) => {
                self.violation(CloseCode::POLICY_VIOLATION, "malformed outcome")
                    .await
            }
        }
    }

    /// The peer sent a close frame.
    async fn peer_closed(&mut self, frame: Option<(u16, String)>) -> TransportError {
        self.open = false;
        // Send the queued close reply, then let the connection end.
        let until = Instant::now() + self.config.close_timeout;
        let _ = timeout_at(until, self.frames.flush()).await;
        self.drain(until).await;
        let (code, reason) = match frame {
            Some((code, reason)) => (
                CloseCode(code),
                truncate(&reason, MAX_REASON_BYTES).to_owned(),
            ),
            // RFC 6455 §7.1.5: "no status code was actually present".
            None => (CloseCode(1005), String::new()),
        };
        info!(side = self.side.name(), code = code.0, "peer closed");
        TransportError::RejectedByPeer {
            code,
            class: None,
            reason,
        }
    }
}

/// Runs `protocol` over `frames` until it finishes or fails.
///
/// This is the bare message loop, without the opening and outcome
/// messages (see [`run_client`](crate::client::run_client) and
/// [`ServerSession`](crate::server::ServerSession) for whole sessions):
/// `protocol.start()`'s message is sent, then every received message frame
/// goes to `protocol.handle()` and every message it returns is sent, until
/// it returns its output.
///
/// - Frames of an `Ignore`-class error are dropped; the
///   `max_ignored_frames + 1`-th closes the socket with 1008.
/// - Any other protocol error closes the socket with the code of its class.
/// - Each wait is bounded by the message timeout, the whole call by the
///   session timeout (counted from this call); pings go out at the ping
///   interval.
///
/// `frames` may be a socket or `&mut` a socket.
///
/// # Errors
///
/// [`TransportError::Protocol`] if the protocol failed on this side,
/// [`TransportError::RejectedByPeer`] if the peer ended the session,
/// [`TransportError::Timeout`], [`TransportError::Violation`] if the peer
/// broke a transport rule, [`TransportError::Closed`] or
/// [`TransportError::Transport`] if the connection failed.
pub async fn run_protocol<P, F, R>(
    frames: F,
    protocol: &mut P,
    rng: &mut R,
    config: &TransportConfig,
) -> Result<P::Output>
where
    P: Protocol,
    F: Frames,
    R: CryptoRngCore,
{
    let deadline = Instant::now() + config.session_timeout;
    let mut link = Link::new(frames, config.clone(), deadline, Side::Peer);
    link.run(protocol, rng).await
}
