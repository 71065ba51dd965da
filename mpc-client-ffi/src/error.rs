//! The errors that cross the FFI: [`WalletError`] mirrors
//! [`mpc_client::ClientError`] variant for variant (a Swift `enum`, a
//! Kotlin sealed exception class, Python exception subclasses), and
//! [`StoreError`] is what a foreign [`ShareStore`](crate::ShareStore)
//! raises. Their strings carry codes, names and server or system
//! messages, never a token, key or share. Text fields are named `reason`,
//! not `message`: a field `message` in an error variant generates Kotlin
//! that does not compile (it collides with `Throwable.message`).

use std::fmt;

use mpc_client::ClientError;

/// Why a [`ShareStore`](crate::ShareStore) call failed.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum StoreError {
    /// The storage failed (I/O, Keychain, database).
    Io {
        /// What failed (no secret: blobs are never part of it).
        reason: String,
    },
    /// The directory or a file is accessible by group or others (the file
    /// store): it is not used.
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
    /// The entry is larger than any blob the wallet writes.
    TooLarge {
        /// The name.
        name: String,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io { reason } => write!(f, "share store: {reason}"),
            Self::InsecurePermissions { path, mode } => write!(
                f,
                "{path} is accessible by group or others (mode {mode:04o})"
            ),
            Self::InvalidName { name } => write!(f, "invalid store entry name {name:?}"),
            Self::TooLarge { name } => write!(f, "store entry {name} is too large"),
        }
    }
}

impl std::error::Error for StoreError {}

/// A foreign store that raised something other than a [`StoreError`]
/// (a Python `KeyError`, a Kotlin `RuntimeException`): an I/O failure
/// with the exception's text.
impl From<uniffi::UnexpectedUniFFICallbackError> for StoreError {
    fn from(error: uniffi::UnexpectedUniFFICallbackError) -> Self {
        Self::Io {
            reason: error.reason,
        }
    }
}

impl From<mpc_client::StoreError> for StoreError {
    fn from(error: mpc_client::StoreError) -> Self {
        use mpc_client::StoreError as E;
        match error {
            E::InsecurePermissions { path, mode } => Self::InsecurePermissions { path, mode },
            E::InvalidName { name } => Self::InvalidName { name },
            E::TooLarge { name } => Self::TooLarge { name },
            E::Backend { message } => Self::Io { reason: message },
            // Io and any variant added later: its full text (operation,
            // entry, system message).
            other => Self::Io {
                reason: other.to_string(),
            },
        }
    }
}

impl From<StoreError> for mpc_client::StoreError {
    fn from(error: StoreError) -> Self {
        match error {
            StoreError::InsecurePermissions { path, mode } => {
                Self::InsecurePermissions { path, mode }
            }
            StoreError::InvalidName { name } => Self::InvalidName { name },
            StoreError::TooLarge { name } => Self::TooLarge { name },
            StoreError::Io { reason } => Self::Backend { message: reason },
        }
    }
}

/// Why a [`Wallet`](crate::Wallet) operation failed: the variants of
/// [`mpc_client::ClientError`] (see there for what a UI does with each),
/// plus [`WalletError::Other`] and [`WalletError::Internal`].
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, uniffi::Error)]
pub enum WalletError {
    /// The key was revoked: it never signs again.
    Revoked,
    /// The key is banned until a refresh.
    Banned,
    /// The server asks for a refresh before anything else.
    RotationRequired,
    /// The key's keygen is not confirmed yet: sign with it once, then
    /// retry.
    KeyPending,
    /// Another refresh of this key is running: retry later.
    RefreshInProgress,
    /// The server holds no share of the epoch asked for.
    UnknownEpoch,
    /// This session's protocol check failed with a ban-class error: refresh
    /// before signing again.
    ProtocolBan,
    /// The local share's OT material is burned: refresh first.
    OtMaterialBurned,
    /// The operation needs a step-up token.
    StepUpRequired,
    /// This step-up token was already spent.
    StepUpTokenUsed,
    /// The step-up token is bound to another operation or key.
    StepUpBindingMismatch,
    /// The token is missing, invalid or expired: log in again and call
    /// `set_token`.
    Unauthorized,
    /// The token may not do this.
    Forbidden,
    /// No such key or presignature.
    NotFound {
        /// What was not found ("key", "presignature", ...).
        what: String,
    },
    /// The local presignature pool of the key is empty: presign first.
    NoPresignatures,
    /// Too many requests.
    RateLimited {
        /// Seconds to wait, if the server said.
        retry_after_secs: Option<u64>,
    },
    /// The owner's quota of keys or unused presignatures is reached.
    QuotaExceeded {
        /// `"keys"` or `"presignatures"`.
        what: String,
    },
    /// The server is shutting down, busy or without its database.
    Unavailable,
    /// A message or session timeout expired.
    Timeout,
    /// No connection, or it broke: retry when online.
    Network {
        /// The transport's message.
        reason: String,
    },
    /// The protocol failed; the key material is untouched.
    Protocol {
        /// What failed.
        reason: String,
    },
    /// Any other error the server reported.
    Server {
        /// The problem's `code`, `http_<status>` or `close_<code>`.
        code: String,
        /// The server's (sanitized) message.
        reason: String,
    },
    /// The share store failed.
    Store {
        /// How.
        error: StoreError,
    },
    /// A stored blob does not open under the storage key or does not
    /// decode (tampered, truncated, moved, or sealed under another key).
    Corrupt {
        /// The store entry.
        name: String,
    },
    /// The server's export does not decrypt to this key: `code` is
    /// `key_mismatch`, `export_failed` or `export_mismatch`.
    ExportInvalid {
        /// Which check failed.
        code: String,
    },
    /// A backup that does not verify.
    BackupInvalid {
        /// Every failed check.
        reasons: Vec<String>,
    },
    /// An argument is malformed.
    InvalidInput {
        /// What is wrong.
        reason: String,
    },
    /// A failure of a kind this version of the bindings does not know
    /// (a newer `mpc-client`).
    Other {
        /// Its stable code.
        code: String,
        /// Its message.
        reason: String,
    },
    /// A bug in the library (a panic, caught before the FFI boundary), or
    /// no async runtime.
    Internal {
        /// What happened.
        reason: String,
    },
}

impl fmt::Display for WalletError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotFound { what } => write!(f, "not found: {what}"),
            Self::QuotaExceeded { what } => write!(f, "quota of {what} reached"),
            Self::RateLimited {
                retry_after_secs: Some(secs),
            } => write!(f, "rate limited: retry after {secs} s"),
            Self::Network { reason } => write!(f, "network: {reason}"),
            Self::Protocol { reason } => write!(f, "protocol: {reason}"),
            Self::Server { code, reason } | Self::Other { code, reason } => {
                write!(f, "{code}: {reason}")
            }
            Self::Store { error } => write!(f, "{error}"),
            Self::Corrupt { name } => write!(f, "corrupt store entry {name}"),
            Self::ExportInvalid { code } => {
                write!(f, "the export does not decrypt to this key ({code})")
            }
            Self::BackupInvalid { reasons } => {
                write!(f, "backup invalid: {}", reasons.join("; "))
            }
            Self::InvalidInput { reason } => write!(f, "invalid input: {reason}"),
            Self::Internal { reason } => write!(f, "internal error: {reason}"),
            // The variants without fields: their code says it all.
            other => f.write_str(&other.code()),
        }
    }
}

impl std::error::Error for WalletError {}

impl WalletError {
    /// A stable lower-case code, as [`ClientError::code`].
    #[must_use]
    pub fn code(&self) -> String {
        let code = match self {
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
            Self::Server { code, .. } | Self::Other { code, .. } | Self::ExportInvalid { code } => {
                code
            }
            Self::Store {
                error: StoreError::InsecurePermissions { .. },
            } => "insecure_permissions",
            Self::Store { .. } => "store",
            Self::Corrupt { .. } => "corrupt",
            Self::BackupInvalid { .. } => "backup_invalid",
            Self::InvalidInput { .. } => "invalid_input",
            Self::Internal { .. } => "internal",
        };
        code.to_owned()
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::InvalidInput {
            reason: message.into(),
        }
    }
}

impl From<ClientError> for WalletError {
    fn from(error: ClientError) -> Self {
        match error {
            ClientError::Revoked => Self::Revoked,
            ClientError::Banned => Self::Banned,
            ClientError::RotationRequired => Self::RotationRequired,
            ClientError::KeyPending => Self::KeyPending,
            ClientError::RefreshInProgress => Self::RefreshInProgress,
            ClientError::UnknownEpoch => Self::UnknownEpoch,
            ClientError::ProtocolBan => Self::ProtocolBan,
            ClientError::OtMaterialBurned => Self::OtMaterialBurned,
            ClientError::StepUpRequired => Self::StepUpRequired,
            ClientError::StepUpTokenUsed => Self::StepUpTokenUsed,
            ClientError::StepUpBindingMismatch => Self::StepUpBindingMismatch,
            ClientError::Unauthorized => Self::Unauthorized,
            ClientError::Forbidden => Self::Forbidden,
            ClientError::NotFound { what } => Self::NotFound { what },
            ClientError::NoPresignatures => Self::NoPresignatures,
            ClientError::RateLimited { retry_after_secs } => Self::RateLimited { retry_after_secs },
            ClientError::QuotaExceeded { what } => Self::QuotaExceeded { what },
            ClientError::Unavailable => Self::Unavailable,
            ClientError::Timeout => Self::Timeout,
            ClientError::Network { message } => Self::Network { reason: message },
            ClientError::Protocol { message } => Self::Protocol { reason: message },
            ClientError::Server { code, message } => Self::Server {
                code,
                reason: message,
            },
            ClientError::Store(error) => Self::Store {
                error: error.into(),
            },
            ClientError::Corrupt { name } => Self::Corrupt { name },
            ClientError::ExportInvalid { code } => Self::ExportInvalid { code },
            ClientError::BackupInvalid { reasons } => Self::BackupInvalid { reasons },
            ClientError::InvalidInput { message } => Self::InvalidInput { reason: message },
            other => Self::Other {
                code: other.code().to_owned(),
                reason: other.to_string(),
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_client_error_keeps_its_code() {
        let cases = [
            ClientError::Revoked,
            ClientError::Banned,
            ClientError::RotationRequired,
            ClientError::KeyPending,
            ClientError::RefreshInProgress,
            ClientError::UnknownEpoch,
            ClientError::ProtocolBan,
            ClientError::OtMaterialBurned,
            ClientError::StepUpRequired,
            ClientError::StepUpTokenUsed,
            ClientError::StepUpBindingMismatch,
            ClientError::Unauthorized,
            ClientError::Forbidden,
            ClientError::NotFound { what: "key".into() },
            ClientError::NoPresignatures,
            ClientError::RateLimited {
                retry_after_secs: Some(3),
            },
            ClientError::QuotaExceeded {
                what: "keys".into(),
            },
            ClientError::Unavailable,
            ClientError::Timeout,
            ClientError::Network {
                message: "refused".into(),
            },
            ClientError::Protocol {
                message: "bad".into(),
            },
            ClientError::Server {
                code: "http_500".into(),
                message: "oops".into(),
            },
            ClientError::Store(mpc_client::StoreError::InsecurePermissions {
                path: "/x".into(),
                mode: 0o755,
            }),
            ClientError::Store(mpc_client::StoreError::Backend {
                message: "full".into(),
            }),
            ClientError::Corrupt {
                name: "a.share".into(),
            },
            ClientError::ExportInvalid {
                code: "export_failed".into(),
            },
            ClientError::BackupInvalid {
                reasons: vec!["r".into()],
            },
            ClientError::InvalidInput {
                message: "m".into(),
            },
        ];
        for error in cases {
            let code = error.code().to_owned();
            let mapped = WalletError::from(error);
            assert_eq!(mapped.code(), code, "{mapped:?}");
            assert!(
                !matches!(mapped, WalletError::Other { .. }),
                "{code} has no variant of its own"
            );
        }
    }

    #[test]
    fn store_errors_round_trip() {
        for error in [
            StoreError::InvalidName { name: "A".into() },
            StoreError::TooLarge { name: "a".into() },
            StoreError::InsecurePermissions {
                path: "/p".into(),
                mode: 0o777,
            },
            StoreError::Io {
                reason: "disk full".into(),
            },
        ] {
            let back = StoreError::from(mpc_client::StoreError::from(error.clone()));
            assert_eq!(back, error);
        }
    }
}
