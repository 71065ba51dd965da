//! Typed transport errors and the close codes the transport sends.
//!
//! No error, close reason or log line of this crate carries secret data: a
//! protocol failure is described by its [`AbortClass`] and
//! [`mpc_core::Error::as_str`], and everything else by a fixed text.

use core::fmt;

use mpc_core::AbortClass;

/// A WebSocket close code (RFC 6455 §7.4) as this transport uses it.
///
/// The constants are the codes this crate sends; the table in the crate
/// documentation says when. A received code is kept as is, known or not.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CloseCode(pub u16);

impl CloseCode {
    /// 1000: the session finished and both outcomes were exchanged.
    pub const NORMAL: Self = Self(1000);
    /// 1001: the endpoint is shutting down.
    pub const GOING_AWAY: Self = Self(1001);
    /// 1008: the peer broke a transport rule: a text frame, an unexpected or
    /// malformed frame, too many ignored frames, or an unauthorized request.
    pub const POLICY_VIOLATION: Self = Self(1008);
    /// 1009: a frame or message over the configured size limit.
    pub const MESSAGE_TOO_BIG: Self = Self(1009);
    /// 1011: a local failure (a `Local`-class protocol error, storage).
    pub const INTERNAL_ERROR: Self = Self(1011);
    /// 4001: the protocol aborted (an `Abort`-class error); the key is
    /// untouched.
    pub const PROTOCOL_ABORT: Self = Self(4001);
    /// 4002: the protocol aborted with a `Ban`-class error: the key's OT
    /// material must be burned until a refresh (PROTOCOL.md §8).
    pub const PROTOCOL_BAN: Self = Self(4002);
    /// 4003: the server does not run the requested operation.
    pub const UNSUPPORTED_OPERATION: Self = Self(4003);
    /// 4004: a message or session timeout expired.
    pub const TIMEOUT: Self = Self(4004);
    /// 4005: the opening message is missing, malformed or of an unknown
    /// version.
    pub const INVALID_OPENING: Self = Self(4005);
    /// 4006: the key or presignature named in the opening does not exist
    /// (or is not the caller's: the two are not told apart).
    pub const NOT_FOUND: Self = Self(4006);
    /// 4007: the key exists but cannot be used now (banned until a refresh,
    /// revoked, or busy).
    pub const UNAVAILABLE: Self = Self(4007);

    /// The first code of the range left to applications (4100..=4999).
    pub const APPLICATION_MIN: u16 = 4100;

    /// The code for a protocol error of class `class`, or `None` for
    /// `Ignore` (an ignored message closes nothing by itself).
    #[must_use]
    pub fn for_class(class: AbortClass) -> Option<Self> {
        match class {
            AbortClass::Ignore => None,
            AbortClass::Ban => Some(Self::PROTOCOL_BAN),
            AbortClass::Local => Some(Self::INTERNAL_ERROR),
            // `Abort`, and any class added to mpc-core later: end the
            // session, blame the peer's message, keep the key.
            _ => Some(Self::PROTOCOL_ABORT),
        }
    }

    /// A short name for the code, for logs and messages.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self.0 {
            1000 => "normal",
            1001 => "going away",
            1002 => "websocket protocol error",
            1006 => "abnormal closure",
            1008 => "policy violation",
            1009 => "message too big",
            1011 => "internal error",
            4001 => "protocol abort",
            4002 => "protocol ban",
            4003 => "unsupported operation",
            4004 => "timeout",
            4005 => "invalid opening",
            4006 => "not found",
            4007 => "unavailable",
            _ => "other",
        }
    }
}

impl fmt::Display for CloseCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.0, self.name())
    }
}

/// Where in a session something happened.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Phase {
    /// TCP connect and the WebSocket upgrade.
    Connect,
    /// Waiting for (server) or sending (client) the opening message.
    Opening,
    /// Running the protocol's rounds.
    Protocol,
    /// Exchanging the final outcome messages.
    Outcome,
    /// Inside the server's handler, outside any transport call (e.g. a
    /// storage call that did not return within the session timeout).
    Handler,
    /// After both outcomes: the client waiting for the server's normal
    /// close (1000), which confirms that the server completed what the
    /// client's outcome confirmed (PROTOCOL.md §18.3).
    Close,
}

impl fmt::Display for Phase {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Connect => "connect",
            Self::Opening => "opening",
            Self::Protocol => "protocol",
            Self::Outcome => "outcome",
            Self::Handler => "handler",
            Self::Close => "closing handshake",
        })
    }
}

/// Which limit a [`TransportError::Timeout`] hit.
#[non_exhaustive]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimeoutKind {
    /// [`TransportConfig::message_timeout`](crate::TransportConfig::message_timeout):
    /// the next message (or the upgrade, or a send) took too long.
    Message,
    /// [`TransportConfig::session_timeout`](crate::TransportConfig::session_timeout):
    /// the session as a whole took too long.
    Session,
    /// [`TransportConfig::close_timeout`](crate::TransportConfig::close_timeout):
    /// the server's normal close did not follow its outcome in time.
    Close,
}

impl fmt::Display for TimeoutKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Message => "message",
            Self::Session => "session",
            Self::Close => "close",
        })
    }
}

/// Every error this crate returns.
///
/// Whenever the error started on this side and the socket was still open,
/// the socket has been closed with the matching [`CloseCode`] (see
/// [`TransportError::close_code`]) before the error is returned.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TransportError {
    /// An I/O or WebSocket failure (connection refused or reset, invalid
    /// URL, a WebSocket protocol error). `detail` is the underlying error's
    /// message; it holds no token or protocol data.
    Transport {
        /// What failed.
        detail: String,
    },
    /// The server answered the upgrade request with this HTTP status
    /// instead of switching protocols (e.g. 401 for a missing or bad token).
    UpgradeRefused {
        /// The HTTP status code.
        status: u16,
    },
    /// The connection ended without a close frame (the peer vanished).
    Closed,
    /// The protocol state machine failed on this side; the socket was closed
    /// with the code of the error's class ([`CloseCode::for_class`]).
    Protocol {
        /// The protocol error. Its class says what to do with the key.
        error: mpc_core::Error,
    },
    /// A timeout expired; the socket was closed with [`CloseCode::TIMEOUT`].
    Timeout {
        /// What the session was doing.
        phase: Phase,
        /// Which limit expired.
        limit: TimeoutKind,
    },
    /// The peer ended the session: it sent a failed outcome or a close
    /// frame. `reason` is the peer's text (untrusted; at most 123 bytes).
    RejectedByPeer {
        /// The peer's close code.
        code: CloseCode,
        /// The class of the peer's protocol error, if it reported one.
        class: Option<AbortClass>,
        /// The peer's reason.
        reason: String,
    },
    /// The peer broke a transport rule (a text frame, an oversized message,
    /// an unexpected frame, too many ignored frames); the socket was closed
    /// with `code`.
    Violation {
        /// The close code sent.
        code: CloseCode,
        /// What the peer did.
        reason: &'static str,
    },
    /// The client's opening message was missing or invalid; the socket was
    /// closed with [`CloseCode::INVALID_OPENING`].
    OpeningInvalid {
        /// What was wrong with it.
        reason: &'static str,
    },
    /// This side (the server's handler) rejected the session with `code`.
    Rejected {
        /// The close code sent.
        code: CloseCode,
        /// The reason sent.
        reason: &'static str,
    },
}

impl TransportError {
    /// The close code of the session's end, when there was one: the code
    /// this side sent, or the one the peer sent.
    #[must_use]
    pub fn close_code(&self) -> Option<CloseCode> {
        match self {
            Self::Protocol { error } => CloseCode::for_class(error.class()),
            Self::Timeout { .. } => Some(CloseCode::TIMEOUT),
            Self::RejectedByPeer { code, .. }
            | Self::Violation { code, .. }
            | Self::Rejected { code, .. } => Some(*code),
            Self::OpeningInvalid { .. } => Some(CloseCode::INVALID_OPENING),
            Self::Transport { .. } | Self::UpgradeRefused { .. } | Self::Closed => None,
        }
    }

    /// Whether this session ended with a ban: a `Ban`-class protocol error
    /// on either side. The key's OT material must then be burned until a
    /// refresh (PROTOCOL.md §8).
    #[must_use]
    pub fn is_ban(&self) -> bool {
        match self {
            Self::Protocol { error } => error.class() == AbortClass::Ban,
            Self::RejectedByPeer { code, .. } => *code == CloseCode::PROTOCOL_BAN,
            _ => false,
        }
    }

    pub(crate) fn transport(detail: impl fmt::Display) -> Self {
        Self::Transport {
            detail: detail.to_string(),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Transport { detail } => write!(f, "transport error: {detail}"),
            Self::UpgradeRefused { status } => {
                write!(f, "websocket upgrade refused with HTTP status {status}")
            }
            Self::Closed => f.write_str("connection closed without a close frame"),
            Self::Protocol { error } => write!(f, "protocol error: {error}"),
            Self::Timeout { phase, limit } => write!(f, "{limit} timeout during {phase}"),
            Self::RejectedByPeer {
                code,
                class,
                reason,
            } => {
                write!(f, "rejected by peer with close code {code}")?;
                if let Some(class) = class {
                    write!(f, ", class {}", class_name(*class))?;
                }
                write!(f, ": {reason:?}")
            }
            Self::Violation { code, reason } => {
                write!(
                    f,
                    "peer violated the transport rules ({reason}); closed with {code}"
                )
            }
            Self::OpeningInvalid { reason } => write!(f, "invalid opening message: {reason}"),
            Self::Rejected { code, reason } => write!(f, "session rejected with {code}: {reason}"),
        }
    }
}

impl std::error::Error for TransportError {}

impl From<mpc_core::Error> for TransportError {
    fn from(error: mpc_core::Error) -> Self {
        Self::Protocol { error }
    }
}

/// A stable lower-case name of an abort class.
pub(crate) fn class_name(class: AbortClass) -> &'static str {
    match class {
        AbortClass::Ignore => "ignore",
        AbortClass::Abort => "abort",
        AbortClass::Ban => "ban",
        AbortClass::Local => "local",
        _ => "unknown",
    }
}

/// Why a side ends a session on its own account (the server refusing an
/// opening, a storage failure in a [`BeforeSend`](crate::driver::BeforeSend)
/// hook): a close code and a fixed, secret-free reason.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rejection {
    code: CloseCode,
    reason: &'static str,
}

impl Rejection {
    /// [`CloseCode::UNSUPPORTED_OPERATION`]: this server does not run the
    /// operation (e.g. refresh before `mpc-core` has it).
    pub const UNSUPPORTED_OPERATION: Self = Self {
        code: CloseCode::UNSUPPORTED_OPERATION,
        reason: "unsupported operation",
    };
    /// [`CloseCode::NOT_FOUND`]: no such key or presignature for this caller.
    pub const NOT_FOUND: Self = Self {
        code: CloseCode::NOT_FOUND,
        reason: "not found",
    };
    /// [`CloseCode::UNAVAILABLE`]: the key cannot be used now (banned until
    /// a refresh, revoked, busy).
    pub const UNAVAILABLE: Self = Self {
        code: CloseCode::UNAVAILABLE,
        reason: "unavailable",
    };
    /// [`CloseCode::POLICY_VIOLATION`]: the caller may not do this.
    pub const UNAUTHORIZED: Self = Self {
        code: CloseCode::POLICY_VIOLATION,
        reason: "unauthorized",
    };
    /// [`CloseCode::INTERNAL_ERROR`]: a local failure (e.g. storage).
    pub const INTERNAL: Self = Self {
        code: CloseCode::INTERNAL_ERROR,
        reason: "internal error",
    };
    /// [`CloseCode::GOING_AWAY`]: the server is shutting down.
    pub const GOING_AWAY: Self = Self {
        code: CloseCode::GOING_AWAY,
        reason: "going away",
    };

    /// An application-defined rejection with a code in 4100..=4999 (the
    /// range this crate leaves free); any other code becomes 1011.
    #[must_use]
    pub const fn application(code: u16, reason: &'static str) -> Self {
        if code >= CloseCode::APPLICATION_MIN && code <= 4999 {
            Self {
                code: CloseCode(code),
                reason,
            }
        } else {
            Self::INTERNAL
        }
    }

    /// The close code.
    #[must_use]
    pub const fn code(&self) -> CloseCode {
        self.code
    }

    /// The reason.
    #[must_use]
    pub const fn reason(&self) -> &'static str {
        self.reason
    }
}

/// The result type of this crate.
pub type Result<T, E = TransportError> = core::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn class_codes() {
        assert_eq!(CloseCode::for_class(AbortClass::Ignore), None);
        assert_eq!(
            CloseCode::for_class(AbortClass::Abort),
            Some(CloseCode::PROTOCOL_ABORT)
        );
        assert_eq!(
            CloseCode::for_class(AbortClass::Ban),
            Some(CloseCode::PROTOCOL_BAN)
        );
        assert_eq!(
            CloseCode::for_class(AbortClass::Local),
            Some(CloseCode::INTERNAL_ERROR)
        );
    }

    #[test]
    fn ban_detection() {
        let ban = TransportError::Protocol {
            error: mpc_core::Error::GammaCheckFailed,
        };
        assert!(ban.is_ban());
        assert_eq!(ban.close_code(), Some(CloseCode::PROTOCOL_BAN));
        let abort = TransportError::Protocol {
            error: mpc_core::Error::InvalidProof,
        };
        assert!(!abort.is_ban());
        let peer = TransportError::RejectedByPeer {
            code: CloseCode::PROTOCOL_BAN,
            class: Some(AbortClass::Ban),
            reason: String::new(),
        };
        assert!(peer.is_ban());
        assert!(!TransportError::Closed.is_ban());
    }

    #[test]
    fn display_names_codes() {
        let e = TransportError::Timeout {
            phase: Phase::Protocol,
            limit: TimeoutKind::Message,
        };
        assert_eq!(e.to_string(), "message timeout during protocol");
        assert_eq!(CloseCode::TIMEOUT.to_string(), "4004 (timeout)");
    }

    #[test]
    fn application_codes() {
        assert_eq!(Rejection::application(4100, "x").code(), CloseCode(4100));
        assert_eq!(Rejection::application(4999, "x").code(), CloseCode(4999));
        assert_eq!(Rejection::application(4001, "x"), Rejection::INTERNAL);
        assert_eq!(Rejection::application(1000, "x"), Rejection::INTERNAL);
    }
}
