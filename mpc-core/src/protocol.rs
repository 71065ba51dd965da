//! The one driving shape shared by every two-party protocol
//! (PROTOCOL.md §12).
//!
//! A protocol is created with its inputs, then driven by bytes:
//!
//! ```text
//! let first = party.start(&mut rng)?;          // send `first` to the peer
//! loop {
//!     match party.handle(&mut rng, &incoming)? {
//!         Step::Send(bytes) => { /* send bytes to the peer */ }
//!         Step::Finished(output) => break output,
//!     }
//! }
//! ```
//!
//! Every message is an encoded [`Envelope`](crate::wire::Envelope). Errors
//! are typed and carry an [`AbortClass`](crate::AbortClass):
//! - `Ignore` errors (a message for another session, round or protocol, or
//!   unreadable bytes) leave the protocol exactly as it was: drop the message
//!   and keep going;
//! - every other error is sticky: the protocol is over, and each later call
//!   returns the same error.
//!
//! Protocol state machines are neither `Clone` nor serializable, so a session
//! cannot be forked or replayed (PROTOCOL.md §9).

use alloc::vec::Vec;
use core::mem::MaybeUninit;

use rand_core::CryptoRngCore;

use crate::error::{AbortClass, Error, Result};
use crate::wire::{Envelope, Expected, ProtocolId, Role, SessionId};

/// What a protocol asks the caller to do after a message.
#[must_use]
#[derive(Debug)]
pub enum Step<T> {
    /// Send these bytes (one encoded envelope) to the peer and wait for its
    /// next message.
    Send(Vec<u8>),
    /// The protocol finished with this output; nothing more is sent.
    Finished(T),
}

/// A two-party protocol driven by messages.
pub trait Protocol {
    /// What the protocol produces when it finishes.
    type Output;

    /// Produces the first message to send to the peer.
    ///
    /// # Errors
    ///
    /// [`Error::AlreadyStarted`] if called twice; the protocol's sticky error
    /// if it already failed.
    fn start<R: CryptoRngCore>(&mut self, rng: &mut R) -> Result<Vec<u8>>;

    /// Handles one message from the peer.
    ///
    /// # Errors
    ///
    /// An `Ignore`-class error (the message is dropped, the protocol is
    /// unchanged), or an `Abort`/`Ban`-class error that ends the protocol and
    /// is returned again by every later call. [`Error::NotStarted`] or
    /// [`Error::AlreadyFinished`] for calls out of order.
    fn handle<R: CryptoRngCore>(
        &mut self,
        rng: &mut R,
        incoming: &[u8],
    ) -> Result<Step<Self::Output>>;
}

/// Implements [`Protocol`] for a type whose `driver` field is a [`Driver`],
/// optionally mapping the machine's output.
macro_rules! impl_protocol {
    ($ty:ty => $out:ty) => {
        impl_protocol!($ty => $out, |output| Ok(output));
    };
    ($ty:ty => $out:ty, $map:expr) => {
        impl $crate::protocol::Protocol for $ty {
            type Output = $out;

            fn start<R: rand_core::CryptoRngCore>(&mut self, rng: &mut R) -> $crate::error::Result<alloc::vec::Vec<u8>> {
                self.driver.start(rng)
            }

            fn handle<R: rand_core::CryptoRngCore>(
                &mut self,
                rng: &mut R,
                incoming: &[u8],
            ) -> $crate::error::Result<$crate::protocol::Step<$out>> {
                match self.driver.handle(rng, incoming)? {
                    $crate::protocol::Step::Send(bytes) => Ok($crate::protocol::Step::Send(bytes)),
                    $crate::protocol::Step::Finished(output) => ($map)(output).map($crate::protocol::Step::Finished),
                }
            }
        }
    };
}
pub(crate) use impl_protocol;

/// Where a round state expects its next message from.
pub(crate) struct Expect {
    pub(crate) session: SessionId,
    pub(crate) round: u8,
    pub(crate) max_payload: usize,
}

impl Expect {
    /// Round `round` (1-based) of a protocol whose payload sizes are
    /// `round_bytes`; round 0 (not started) accepts nothing.
    pub(crate) fn round(session: [u8; 32], round: u8, round_bytes: &[usize]) -> Self {
        let max_payload = round_bytes
            .get(usize::from(round).saturating_sub(1))
            .copied()
            .unwrap_or(0);
        Self {
            session: SessionId(session),
            round,
            max_payload,
        }
    }
}

/// The result of one transition.
pub(crate) enum Transition<S, T> {
    /// Send this payload (for round `round` in `session`) and move to `S`.
    Next {
        state: S,
        session: SessionId,
        round: u8,
        payload: Vec<u8>,
    },
    /// Finished.
    Done(T),
}

/// One protocol's states: the first message, then one transition per
/// received message. Each transition consumes the round state.
pub(crate) trait Machine: Sized {
    type Output;
    const PROTOCOL: ProtocolId;

    fn role(&self) -> Role;
    /// The first message: (next state, session, round, payload).
    fn begin<R: CryptoRngCore>(self, rng: &mut R) -> Result<(Self, SessionId, u8, Vec<u8>)>;
    /// What the next message must be addressed as.
    fn expect(&self) -> Expect;
    fn advance<R: CryptoRngCore>(
        self,
        rng: &mut R,
        payload: &[u8],
    ) -> Result<Transition<Self, Self::Output>>;
}

enum DriverState<M> {
    Fresh(M),
    Running(M),
    /// The machine was moved out (to advance it, or for good). The zeroed
    /// filler is as large as a machine and is written over the moved-from
    /// bytes: a move copies bits and never drops the source, so without it
    /// the last round state's secrets (a share, Delta's indices) would stay
    /// in the driver's memory, unwiped, until it is freed (PROTOCOL.md §10;
    /// audit/tests/zeroize.rs).
    Finished(MaybeUninit<M>),
    Failed(Error),
}

impl<M> DriverState<M> {
    /// The finished state, overwriting a moved-out machine with zeros.
    fn finished() -> Self {
        Self::Finished(MaybeUninit::zeroed())
    }
}

/// Runs a [`Machine`]: envelopes, ordering, sticky errors.
pub(crate) struct Driver<M: Machine> {
    state: DriverState<M>,
}

pub(crate) fn seal(
    protocol: ProtocolId,
    session: SessionId,
    round: u8,
    sender: Role,
    payload: Vec<u8>,
) -> Vec<u8> {
    Envelope::new(protocol, session, round, sender, payload).encode()
}

/// Bytes an envelope adds around its payload, at most.
pub(crate) const ENVELOPE_OVERHEAD: usize = 48;

impl<M: Machine> Driver<M> {
    pub(crate) fn new(machine: M) -> Self {
        Self {
            state: DriverState::Fresh(machine),
        }
    }

    /// The running state, if any.
    pub(crate) fn machine(&self) -> Option<&M> {
        match &self.state {
            DriverState::Running(machine) => Some(machine),
            _ => None,
        }
    }

    /// The machine, started or not; `None` once finished or failed.
    pub(crate) fn current(&self) -> Option<&M> {
        match &self.state {
            DriverState::Fresh(machine) | DriverState::Running(machine) => Some(machine),
            _ => None,
        }
    }

    pub(crate) fn start<R: CryptoRngCore>(&mut self, rng: &mut R) -> Result<Vec<u8>> {
        match core::mem::replace(&mut self.state, DriverState::finished()) {
            DriverState::Fresh(machine) => {
                let role = machine.role();
                match machine.begin(rng) {
                    Ok((next, session, round, payload)) => {
                        self.state = DriverState::Running(next);
                        Ok(seal(M::PROTOCOL, session, round, role, payload))
                    }
                    Err(err) => self.fail(err),
                }
            }
            other => {
                let err = match &other {
                    DriverState::Failed(err) => *err,
                    DriverState::Finished(_) => Error::AlreadyFinished,
                    _ => Error::AlreadyStarted,
                };
                self.state = other;
                Err(err)
            }
        }
    }

    pub(crate) fn handle<R: CryptoRngCore>(
        &mut self,
        rng: &mut R,
        incoming: &[u8],
    ) -> Result<Step<M::Output>> {
        let machine = match &self.state {
            DriverState::Running(machine) => machine,
            DriverState::Fresh(_) => return Err(Error::NotStarted),
            DriverState::Finished(_) => return Err(Error::AlreadyFinished),
            DriverState::Failed(err) => return Err(*err),
        };
        // Addressing checks come first and leave the state untouched.
        let role = machine.role();
        let expect = machine.expect();
        let envelope = Envelope::decode(incoming, expect.max_payload + ENVELOPE_OVERHEAD)?;
        envelope.check(&Expected {
            protocol: M::PROTOCOL,
            session: expect.session,
            round: expect.round,
            sender: role.peer(),
        })?;
        let DriverState::Running(machine) =
            core::mem::replace(&mut self.state, DriverState::finished())
        else {
            return Err(Error::AlreadyFinished);
        };
        match machine.advance(rng, &envelope.payload) {
            Ok(Transition::Next {
                state,
                session,
                round,
                payload,
            }) => {
                self.state = DriverState::Running(state);
                Ok(Step::Send(seal(M::PROTOCOL, session, round, role, payload)))
            }
            Ok(Transition::Done(output)) => Ok(Step::Finished(output)),
            Err(err) => self.fail(err),
        }
    }

    fn fail<T>(&mut self, err: Error) -> Result<T> {
        debug_assert_ne!(
            err.class(),
            AbortClass::Ignore,
            "ignore-class errors come from addressing only"
        );
        self.state = DriverState::Failed(err);
        Err(err)
    }
}
