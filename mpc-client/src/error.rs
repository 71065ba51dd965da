//! The typed errors: what a UI can act on, mapped from the server's close
//! codes (WebSocket) and problem codes (REST, RFC 9457).

use std::fmt;

use mpc_transport_ws::{CloseCode, TransportError};

/// A failure of a [`ShareStore`](crate::ShareStore).
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// An I/O call failed (`op` on the entry `name`).
    Io {
        /// What was being done ("writing", "reading", ...).
        op: &'static str,
        /// The entry (or the directory).
        name: String,
        /// The system's message.
        message: String,
    },
    /// The directory or a file is accessible by group or others: it is not
    /// used.
    InsecurePermissions {
        /// The path.
        path: String,
        /// Its permission bits.
        mode: u32,
    },
    /// Not a valid entry name (ASCII `[a-z0-9._-]`, 1-160 bytes, not
    /// starting with `.`).
    InvalidName {
        /// The name.
        name: String,
    },
    /// The entry is larger than any blob this library writes.
    TooLarge {
        /// The name.
        name: String,
    },
    /// A store implemented elsewhere (e.g. through the FFI) failed.
    Backend {
        /// Its message.
        message: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { op, name, message } => write!(f, "{op} {name}: {message}"),
            Self::InsecurePermissions { path, mode } => write!(
                f,
                "{path} is accessible by group or others (mode {mode:04o}); \
                 it must be 0700 for the directory, 0600 for its files"
            ),
            Self::InvalidName { name } => write!(f, "invalid store entry name {name:?}"),
            Self::TooLarge { name } => write!(f, "store entry {name} is too large"),
            Self::Backend { message } => write!(f, "share store: {message}"),
        }
    }
}

impl std::error::Error for StoreError {}

/// Why a [`Wallet`](crate::Wallet) operation failed. Match on the variants
/// a UI acts on; [`ClientError::code`] gives a stable text code for the
/// others.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientError {
    /// The key was revoked (close 4101, REST `key_revoked`): it never signs
    /// again.
    Revoked,
    /// The key is banned until a refresh after a failed protocol check
    /// (close 4102): run [`Wallet::refresh`](crate::Wallet::refresh).
    Banned,
    /// The server asks for a refresh before anything else (close 4103).
    RotationRequired,
    /// The key's keygen is not confirmed yet (close 4107, REST
    /// `key_pending`): sign with it once, then retry.
    KeyPending,
    /// Another refresh of this key is running (close 4106): retry later.
    RefreshInProgress,
    /// The server holds no share of the epoch asked for (close 4104, REST
    /// `epoch_unavailable`).
    UnknownEpoch,
    /// This session's protocol check failed with a ban-class error
    /// (close 4002, PROTOCOL.md §8): the share's OT material is burned;
    /// refresh before signing again.
    ProtocolBan,
    /// The local share's OT material is burned (after a ban): refresh first.
    OtMaterialBurned,
    /// The operation needs a step-up token (REST 403 `step_up_required`):
    /// authenticate with the second factor again.
    StepUpRequired,
    /// This step-up token was already spent (REST 403
    /// `step_up_token_used`): each works once.
    StepUpTokenUsed,
    /// The step-up token is bound to another operation or key (REST 403
    /// `step_up_binding_mismatch`).
    StepUpBindingMismatch,
    /// The token is missing, invalid or expired (HTTP 401): log in again
    /// and call [`Wallet::set_token`](crate::Wallet::set_token).
    Unauthorized,
    /// The token is valid but may not do this (HTTP 403, close 1008).
    Forbidden,
    /// No such key or presignature for this caller (close 4006, REST
    /// `key_not_found`), or the wallet holds no such key.
    NotFound {
        /// What was not found ("key", "presignature", ...).
        what: String,
    },
    /// The local presignature pool of the key is empty: call
    /// [`Wallet::presign`](crate::Wallet::presign).
    NoPresignatures,
    /// Too many requests (HTTP 429; close 4110, a rate limit on the
    /// operation; close 4111, too many keygens or refreshes in progress):
    /// retry after the given seconds if known.
    RateLimited {
        /// The server's `Retry-After`, if it sent one.
        retry_after_secs: Option<u64>,
    },
    /// The owner's quota is reached (close 4108: keys not revoked, 4109:
    /// unused presignatures; PROTOCOL.md §18.5): revoke keys or use
    /// presignatures first. Retrying unchanged does not help.
    QuotaExceeded {
        /// `"keys"` or `"presignatures"`.
        what: String,
    },
    /// The server is shutting down, busy, or its database is unavailable
    /// (close 1001 / 4007, HTTP 503): retry later.
    Unavailable,
    /// A message or session timeout expired.
    Timeout,
    /// No connection, or it broke (no response): retry when online.
    Network {
        /// The transport's message (no token, no secret).
        message: String,
    },
    /// The protocol failed (close 4001, a check of this side, a response
    /// that does not decode); the key material is untouched.
    Protocol {
        /// What failed.
        message: String,
    },
    /// Any other error the server reported.
    Server {
        /// The problem's `code`, `http_<status>` or `close_<code>`.
        code: String,
        /// The message (server text, sanitized).
        message: String,
    },
    /// The share store failed.
    Store(StoreError),
    /// A stored blob does not open under the storage key or does not
    /// decode: tampered, truncated, moved from another name, or sealed
    /// under another key.
    Corrupt {
        /// The store entry.
        name: String,
    },
    /// The server's export does not decrypt to this key (PROTOCOL.md §16):
    /// `code` is `"key_mismatch"` (another key, epoch or party),
    /// `"export_failed"` (changed, or for another one-time key) or
    /// `"export_mismatch"` (`x*G` is not the public key).
    ExportInvalid {
        /// Which check failed.
        code: String,
    },
    /// A backup file that does not verify, with every failed check.
    BackupInvalid {
        /// The failed checks.
        reasons: Vec<String>,
    },
    /// An argument is malformed (key id, path, URL, JSON, ...).
    InvalidInput {
        /// What is wrong.
        message: String,
    },
}

impl ClientError {
    /// A stable, lower-case code for logs and foreign callers (e.g.
    /// `"revoked"`, `"step_up_required"`, `"network"`).
    #[must_use]
    pub fn code(&self) -> &str {
        match self {
            Self::Revoked => "revoked",
            Self::Banned => "banned",
            Self::RotationRequired => "rotation_required",
            Self::KeyPending => "key_pending",
            Self::RefreshInProgress => "refresh_in_progress",
            Self::UnknownEpoch => "unknown_epoch",
            Self::ProtocolBan => "protocol_ban",
            Self::OtMaterialBurned => "ot_burned",
            Self::StepUpRequired => "step_up_required",
            Self::StepUpTokenUsed => "step_up_token_used",
            Self::StepUpBindingMismatch => "step_up_binding_mismatch",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound { .. } => "not_found",
            Self::NoPresignatures => "no_presignatures",
            Self::RateLimited { .. } => "rate_limited",
            Self::QuotaExceeded { .. } => "quota_exceeded",
            Self::Unavailable => "unavailable",
            Self::Timeout => "timeout",
            Self::Network { .. } => "network",
            Self::Protocol { .. } => "protocol",
            Self::Server { code, .. } => code,
            Self::Store(StoreError::InsecurePermissions { .. }) => "insecure_permissions",
            Self::Store(_) => "store",
            Self::Corrupt { .. } => "corrupt",
            Self::ExportInvalid { code } => code,
            Self::BackupInvalid { .. } => "backup_invalid",
            Self::InvalidInput { .. } => "invalid_input",
        }
    }

    /// Whether the same call may succeed later unchanged (network,
    /// timeouts, rate limits, a busy server or key).
    #[must_use]
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Self::Network { .. }
                | Self::Timeout
                | Self::RateLimited { .. }
                | Self::Unavailable
                | Self::RefreshInProgress
        )
    }

    pub(crate) fn protocol(message: impl Into<String>) -> Self {
        Self::Protocol {
            message: message.into(),
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            message: message.into(),
        }
    }

    pub(crate) fn not_found(what: &str) -> Self {
        Self::NotFound { what: what.into() }
    }

    /// A WebSocket session's failure. `what` names the object of a 4006
    /// ("key" or "presignature").
    pub(crate) fn from_transport(err: &TransportError, what: &str) -> Self {
        let message = err.to_string();
        match err {
            TransportError::UpgradeRefused { status } => Self::from_http_status(*status, None),
            TransportError::Transport { .. } | TransportError::Closed => Self::Network { message },
            TransportError::Timeout { .. } => Self::Timeout,
            _ if err.is_ban() => Self::ProtocolBan,
            TransportError::RejectedByPeer { code, reason, .. } => match code.0 {
                4101 => Self::Revoked,
                4102 => Self::Banned,
                4103 => Self::RotationRequired,
                4104 => Self::UnknownEpoch,
                4105 => Self::invalid("the server cannot derive this path"),
                4106 => Self::RefreshInProgress,
                4107 => Self::KeyPending,
                4108 => Self::QuotaExceeded {
                    what: "keys".into(),
                },
                4109 => Self::QuotaExceeded {
                    what: "presignatures".into(),
                },
                4110 => Self::RateLimited {
                    retry_after_secs: retry_after_of_reason(reason),
                },
                4111 => Self::RateLimited {
                    retry_after_secs: None,
                },
                _ if *code == CloseCode::NOT_FOUND => Self::not_found(what),
                _ if *code == CloseCode::UNAVAILABLE || *code == CloseCode::GOING_AWAY => {
                    Self::Unavailable
                }
                _ if *code == CloseCode::TIMEOUT => Self::Timeout,
                _ if *code == CloseCode::POLICY_VIOLATION => Self::Forbidden,
                _ if *code == CloseCode::PROTOCOL_ABORT => Self::Protocol { message },
                _ => Self::Server {
                    code: format!("close_{}", code.0),
                    message,
                },
            },
            _ => Self::Protocol { message },
        }
    }

    /// An HTTP status without a usable problem document.
    pub(crate) fn from_http_status(status: u16, retry_after_secs: Option<u64>) -> Self {
        match status {
            401 => Self::Unauthorized,
            403 => Self::Forbidden,
            429 => Self::RateLimited { retry_after_secs },
            503 => Self::Unavailable,
            _ => Self::Server {
                code: format!("http_{status}"),
                message: format!("the server answered HTTP {status}"),
            },
        }
    }

    /// An RFC 9457 problem's `code` (already sanitized), with its status,
    /// message and retry time.
    pub(crate) fn from_problem(
        status: u16,
        code: Option<&str>,
        message: String,
        retry_after_secs: Option<u64>,
    ) -> Self {
        match code {
            Some("unauthorized") => Self::Unauthorized,
            Some("step_up_required") => Self::StepUpRequired,
            Some("step_up_token_used") => Self::StepUpTokenUsed,
            Some("step_up_binding_mismatch") => Self::StepUpBindingMismatch,
            Some("key_not_found") => Self::not_found("key"),
            Some("key_revoked") => Self::Revoked,
            Some("key_pending") => Self::KeyPending,
            Some("epoch_unavailable") => Self::UnknownEpoch,
            Some("rate_limited") => Self::RateLimited { retry_after_secs },
            Some("unavailable") => Self::Unavailable,
            Some(code) => Self::Server {
                code: code.to_owned(),
                message,
            },
            None => match Self::from_http_status(status, retry_after_secs) {
                Self::Server { code, .. } => Self::Server { code, message },
                other => other,
            },
        }
    }
}

/// The wait in a 4110 close reason ("rate limited: retry in 10 s", "1 min",
/// "1 h"; PROTOCOL.md §18.5), in seconds.
fn retry_after_of_reason(reason: &str) -> Option<u64> {
    let wait = reason.strip_prefix("rate limited: retry in ")?;
    let (count, unit) = wait.split_once(' ')?;
    let count: u64 = count.parse().ok()?;
    let unit = match unit {
        "s" => 1,
        "min" => 60,
        "h" => 3600,
        _ => return None,
    };
    count.checked_mul(unit)
}

impl fmt::Display for ClientError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Revoked => f.write_str("the key was revoked"),
            Self::Banned => f.write_str("the key is banned until it is refreshed"),
            Self::RotationRequired => f.write_str("the server requires a refresh first"),
            Self::KeyPending => f.write_str("the key is pending: sign with it once first"),
            Self::RefreshInProgress => f.write_str("another refresh of this key is running"),
            Self::UnknownEpoch => f.write_str("the server holds no share of this epoch"),
            Self::ProtocolBan => f.write_str(
                "a protocol check failed (ban class): the share's OT material is burned; refresh",
            ),
            Self::OtMaterialBurned => {
                f.write_str("the share's OT material is burned: refresh before signing")
            }
            Self::StepUpRequired => f.write_str(
                "this operation needs a step-up token: authenticate with the second factor",
            ),
            Self::StepUpTokenUsed => f.write_str("this step-up token was already used"),
            Self::StepUpBindingMismatch => {
                f.write_str("this step-up token is bound to another operation or key")
            }
            Self::Unauthorized => f.write_str("the token is missing, invalid or expired"),
            Self::Forbidden => f.write_str("the token may not do this"),
            Self::NotFound { what } => write!(f, "no such {what}"),
            Self::NoPresignatures => f.write_str("no presignature left: presign first"),
            Self::RateLimited {
                retry_after_secs: Some(secs),
            } => write!(f, "rate limited: retry after {secs} s"),
            Self::RateLimited { .. } => f.write_str("rate limited"),
            Self::QuotaExceeded { what } => write!(f, "quota of {what} reached"),
            Self::Unavailable => f.write_str("the server is unavailable: retry later"),
            Self::Timeout => f.write_str("the session timed out"),
            Self::Network { message } => write!(f, "network: {message}"),
            Self::Protocol { message } => write!(f, "protocol: {message}"),
            Self::Server { code, message } => write!(f, "{code}: {message}"),
            Self::Store(err) => err.fmt(f),
            Self::Corrupt { name } => write!(
                f,
                "{name} does not open: tampered, truncated, moved or sealed under another key"
            ),
            Self::ExportInvalid { code } => {
                write!(
                    f,
                    "the server's export does not decrypt to this key ({code})"
                )
            }
            Self::BackupInvalid { reasons } => {
                write!(f, "the backup is invalid: {}", reasons.join("; "))
            }
            Self::InvalidInput { message } => write!(f, "invalid input: {message}"),
        }
    }
}

impl std::error::Error for ClientError {}

impl From<StoreError> for ClientError {
    fn from(err: StoreError) -> Self {
        Self::Store(err)
    }
}

#[cfg(test)]
mod tests {
    use mpc_transport_ws::{CloseCode, TransportError};

    use super::ClientError;

    fn closed_with(code: u16, reason: &str) -> ClientError {
        let err = TransportError::RejectedByPeer {
            code: CloseCode(code),
            class: None,
            reason: reason.into(),
        };
        ClientError::from_transport(&err, "key")
    }

    /// The admission and rate-limit close codes (PROTOCOL.md §18.5) reach
    /// the UI as what it acts on: a quota is not retryable, a rate limit
    /// is, with the server's wait when its reason states one.
    #[test]
    fn quota_and_rate_limit_close_codes_are_typed() {
        for (code, what) in [(4108, "keys"), (4109, "presignatures")] {
            let err = closed_with(code, "quota reached");
            assert_eq!(err, ClientError::QuotaExceeded { what: what.into() });
            assert!(!err.is_retryable());
            assert_eq!(err.code(), "quota_exceeded");
        }
        for (reason, wait) in [
            ("rate limited: retry in 1 s", Some(1)),
            ("rate limited: retry in 10 s", Some(10)),
            ("rate limited: retry in 1 min", Some(60)),
            ("rate limited: retry in 10 min", Some(600)),
            ("rate limited: retry in 1 h", Some(3600)),
            ("rate limited", None),
            ("rate limited: retry in 99999999999999999999 h", None),
            ("rate limited: retry in 5 fortnights", None),
        ] {
            let err = closed_with(4110, reason);
            assert_eq!(
                err,
                ClientError::RateLimited {
                    retry_after_secs: wait
                },
                "{reason}"
            );
            assert!(err.is_retryable());
        }
        let err = closed_with(4111, "too many keygens in progress");
        assert_eq!(
            err,
            ClientError::RateLimited {
                retry_after_secs: None
            }
        );
        assert!(err.is_retryable());
    }
}
