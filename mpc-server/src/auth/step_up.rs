//! Step-up: what a token must carry to be spent on a destructive or
//! exporting operation (backup, export, revoke; PROTOCOL.md §19).
//!
//! A step-up token proves a recent second factor (`amr` with `otp` or
//! `mfa`, `auth_time` recent), carries a `jti` so that it can be spent
//! exactly once, and may be bound to one operation (`mpc_op`) and one key
//! (`mpc_key_id`). [`Claims::step_up`] checks all of it and returns the
//! [`StepUpUse`] that the vault records in the same transaction as the
//! operation's effect, which is what makes the token single-use.

use std::fmt;

use mpc_core::KeyId;

use super::Claims;

/// Extra time, in seconds, a spent `jti` is kept after the token's `exp`
/// plus leeway: covers clock skew between replicas sharing one database,
/// so that no replica still accepts a token whose record another replica
/// already pruned.
pub const SPENT_TOKEN_MARGIN_SECONDS: u64 = 600;

/// An operation that needs a step-up token.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StepUpOp {
    /// `POST /v1/keys/{id}/backup`.
    Backup,
    /// `POST /v1/keys/{id}/export`.
    Export,
    /// `DELETE /v1/keys/{id}`.
    Revoke,
}

impl StepUpOp {
    /// The `mpc_op` claim value naming this operation: `backup`, `export`
    /// or `revoke`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Backup => "backup",
            Self::Export => "export",
            Self::Revoke => "revoke",
        }
    }
}

impl fmt::Display for StepUpOp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The server's step-up rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepUpPolicy {
    /// How long ago `auth_time` may be, in seconds.
    pub max_age_seconds: u64,
    /// Whether a token must carry `mpc_op` and `mpc_key_id`.
    pub require_binding: bool,
    /// How long after the token's `exp` its spent `jti` is kept, in seconds
    /// (at least the verifier's leeway plus [`SPENT_TOKEN_MARGIN_SECONDS`]).
    pub retention_seconds: u64,
}

/// A step-up token accepted for one operation on one key: the record the
/// vault stores (in the same transaction as the operation) to spend it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StepUpUse {
    /// `sub`.
    pub subject: String,
    /// `jti`.
    pub token_id: String,
    /// What the token is spent on.
    pub operation: StepUpOp,
    /// The key it is spent on.
    pub key_id: KeyId,
    /// Until when the spent `jti` must be remembered, unix seconds: after
    /// that the token is expired everywhere.
    pub retain_until: i64,
}

/// Why a token is no step-up token for an operation.
#[non_exhaustive]
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum StepUpError {
    /// `amr` has no `otp` or `mfa`, or `auth_time` is absent or too old.
    #[error("no recent second factor")]
    NoRecentSecondFactor,
    /// No `jti`, so the token cannot be spent once.
    #[error("the token has no jti")]
    MissingTokenId,
    /// `mpc_op` or `mpc_key_id` names another operation or key.
    #[error("the token is bound to another operation or key")]
    WrongBinding,
    /// The policy requires `mpc_op` and `mpc_key_id` and one is missing.
    #[error("the token is not bound to an operation and key")]
    Unbound,
}

impl Claims {
    /// Checks that these claims are a step-up token for `operation` on
    /// `key_id` at `now_unix` (seconds), and returns the use to record.
    ///
    /// # Errors
    ///
    /// [`StepUpError::NoRecentSecondFactor`] (see
    /// [`has_recent_second_factor`](Self::has_recent_second_factor)),
    /// [`StepUpError::MissingTokenId`], [`StepUpError::WrongBinding`] if
    /// `mpc_op` or `mpc_key_id` is present and differs (the key id compared
    /// case-insensitively), [`StepUpError::Unbound`] if the policy requires
    /// both and one is absent.
    pub fn step_up(
        &self,
        policy: &StepUpPolicy,
        operation: StepUpOp,
        key_id: &KeyId,
        now_unix: i64,
    ) -> Result<StepUpUse, StepUpError> {
        if !self.has_recent_second_factor(now_unix, policy.max_age_seconds) {
            return Err(StepUpError::NoRecentSecondFactor);
        }
        let token_id = self.token_id.clone().ok_or(StepUpError::MissingTokenId)?;
        let op_matches = self
            .step_up_operation
            .as_deref()
            .map(|op| op == operation.as_str());
        let key_matches = self
            .step_up_key_id
            .as_deref()
            .map(|key| mpc_api::parse_key_id(key).as_ref() == Some(key_id));
        match (op_matches, key_matches) {
            (Some(false), _) | (_, Some(false)) => return Err(StepUpError::WrongBinding),
            (None, _) | (_, None) if policy.require_binding => return Err(StepUpError::Unbound),
            _ => {}
        }
        let retention = i64::try_from(policy.retention_seconds).unwrap_or(i64::MAX);
        Ok(StepUpUse {
            subject: self.subject.clone(),
            token_id,
            operation,
            key_id: *key_id,
            retain_until: self.expires_at.saturating_add(retention),
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn step_up_claims(now: i64) -> Claims {
        let mut claims = Claims::new("alice", now + 600);
        claims.amr = vec!["pwd".to_owned(), "otp".to_owned()];
        claims.auth_time = Some(now - 10);
        claims.token_id = Some("jti-1".to_owned());
        claims
    }

    const POLICY: StepUpPolicy = StepUpPolicy {
        max_age_seconds: 300,
        require_binding: false,
        retention_seconds: 630,
    };

    #[test]
    fn step_up_use_names_token_operation_key_and_retention() {
        let now = 1_700_000_000;
        let key = KeyId([0xab; 32]);
        let spend = step_up_claims(now)
            .step_up(&POLICY, StepUpOp::Export, &key, now)
            .unwrap();
        assert_eq!(
            spend,
            StepUpUse {
                subject: "alice".to_owned(),
                token_id: "jti-1".to_owned(),
                operation: StepUpOp::Export,
                key_id: key,
                retain_until: now + 600 + 630,
            }
        );
    }

    #[test]
    fn step_up_refusals() {
        let now = 1_700_000_000;
        let key = KeyId([0xab; 32]);
        let other = KeyId([0xcd; 32]);
        let check = |claims: &Claims, policy: &StepUpPolicy, op: StepUpOp, key: &KeyId| {
            claims.step_up(policy, op, key, now).map(|_| ())
        };
        // No second factor, stale, or no jti.
        let mut c = step_up_claims(now);
        c.amr = vec!["pwd".to_owned()];
        assert_eq!(
            check(&c, &POLICY, StepUpOp::Backup, &key),
            Err(StepUpError::NoRecentSecondFactor)
        );
        let mut c = step_up_claims(now);
        c.auth_time = Some(now - 301);
        assert_eq!(
            check(&c, &POLICY, StepUpOp::Backup, &key),
            Err(StepUpError::NoRecentSecondFactor)
        );
        let mut c = step_up_claims(now);
        c.token_id = None;
        assert_eq!(
            check(&c, &POLICY, StepUpOp::Revoke, &key),
            Err(StepUpError::MissingTokenId)
        );
        // Bound to another operation or key; the key id in either case.
        let mut c = step_up_claims(now);
        c.step_up_operation = Some("export".to_owned());
        c.step_up_key_id = Some("AB".repeat(32));
        assert!(check(&c, &POLICY, StepUpOp::Export, &key).is_ok());
        assert_eq!(
            check(&c, &POLICY, StepUpOp::Revoke, &key),
            Err(StepUpError::WrongBinding)
        );
        assert_eq!(
            check(&c, &POLICY, StepUpOp::Backup, &key),
            Err(StepUpError::WrongBinding)
        );
        assert_eq!(
            check(&c, &POLICY, StepUpOp::Export, &other),
            Err(StepUpError::WrongBinding)
        );
        for bad in ["ab", "not hex", "Export"] {
            let mut c = step_up_claims(now);
            c.step_up_key_id = Some(bad.to_owned());
            c.step_up_operation = Some(bad.to_owned());
            assert_eq!(
                check(&c, &POLICY, StepUpOp::Export, &key),
                Err(StepUpError::WrongBinding),
                "{bad}"
            );
        }
        // Only one of the two binding claims: checked as given, but a policy
        // requiring binding wants both.
        let strict = StepUpPolicy {
            require_binding: true,
            ..POLICY
        };
        let mut c = step_up_claims(now);
        assert_eq!(
            check(&c, &strict, StepUpOp::Export, &key),
            Err(StepUpError::Unbound)
        );
        c.step_up_operation = Some("export".to_owned());
        assert!(check(&c, &POLICY, StepUpOp::Export, &key).is_ok());
        assert_eq!(
            check(&c, &strict, StepUpOp::Export, &key),
            Err(StepUpError::Unbound)
        );
        c.step_up_key_id = Some(key.to_string());
        assert!(check(&c, &strict, StepUpOp::Export, &key).is_ok());
    }
}
