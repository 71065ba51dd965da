//! Bearer-JWT authentication.
//!
//! The server accepts JSON Web Tokens issued by the customer's backend, on the
//! WebSocket upgrade and on every REST call. Exactly one signature algorithm
//! is configured per server:
//!
//! * `HS256` with a shared secret (`MPC_JWT_SECRET`; the UTF-8 bytes of the
//!   variable are the HMAC key, as in most JWT libraries), at least 32 bytes;
//! * `ES256` (ECDSA P-256) or `EdDSA` (Ed25519) with one or more public keys
//!   read from a PEM file of SPKI `PUBLIC KEY` blocks. A token is accepted if
//!   any configured key verifies it, which allows key rotation.
//!
//! Tokens signed with any other algorithm (including `alg: none`) are
//! rejected. Claims checked by [`Authenticator::verify`]:
//!
//! * `exp` is required and must not have passed (with a configurable leeway);
//! * `nbf`, when present, must have been reached (same leeway);
//! * `iat`, when present, must not be in the future (same leeway);
//! * `exp` must not be more than [`AuthConfig::max_lifetime_seconds`] ahead
//!   (plus the leeway): a long-lived token is refused, whatever signed it;
//! * `aud` is required and must contain the configured audience;
//! * `iss` is required and must match when an issuer is configured;
//! * `sub` is required, non-empty, at most [`MAX_SUBJECT_LEN`] bytes and free
//!   of control characters: it names the key owner.
//!
//! * `amr`, when present, must be an array of strings (RFC 8176); `jti`,
//!   `mpc_op` and `mpc_key_id`, when present, must be non-empty strings of
//!   at most [`MAX_TOKEN_ID_LEN`] bytes without control characters.
//!
//! `amr`, `auth_time`, `iat`, `jti`, `mpc_op` and `mpc_key_id` are carried
//! through in [`Claims`] for step-up checks ([`Claims::step_up`],
//! PROTOCOL.md §19). Every rejection is one [`AuthError`]; the REST and
//! WebSocket layers answer all of them with the same 401, so a caller
//! cannot probe which check failed.
//!
//! [`TokenBuilder`] mints tokens for dev mode and tests.

mod claims;
mod keys;
mod mint;
mod step_up;
#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests;

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use zeroize::Zeroizing;

use claims::{check_header, map_decode_error, RawClaims};
use keys::load_public_keys;
pub use mint::{generate_dev_secret, TokenBuilder};
pub use step_up::{StepUpError, StepUpOp, StepUpPolicy, StepUpUse, SPENT_TOKEN_MARGIN_SECONDS};

/// Default audience expected in the `aud` claim.
pub const DEFAULT_AUDIENCE: &str = "mpc-server";

/// Default clock-skew leeway, in seconds, applied to `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;

/// Minimum length, in bytes, of an HS256 secret.
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// Maximum length, in bytes, of the `sub` claim.
pub const MAX_SUBJECT_LEN: usize = 256;

/// Maximum length, in bytes, of the `jti`, `mpc_op` and `mpc_key_id`
/// claims.
pub const MAX_TOKEN_ID_LEN: usize = 256;

/// Default for [`AuthConfig::max_lifetime_seconds`]: one day.
pub const DEFAULT_MAX_TOKEN_LIFETIME_SECONDS: u64 = 24 * 3600;

/// Maximum accepted length of an encoded token, in bytes. Longer inputs are
/// rejected as [`AuthError::Malformed`] before any decoding.
pub const MAX_TOKEN_LEN: usize = 16 * 1024;

/// Clock skew, in seconds, tolerated for an `auth_time` in the future by
/// [`Claims::has_recent_second_factor`].
pub const AUTH_TIME_SKEW_SECONDS: u64 = DEFAULT_LEEWAY_SECONDS;

/// Lifetime of a token minted by [`TokenBuilder`] unless set explicitly.
pub const DEFAULT_TOKEN_LIFETIME_SECONDS: u64 = 3600;

/// A JWT signature algorithm the server can be configured with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtAlgorithm {
    /// HMAC-SHA256 with a shared secret.
    Hs256,
    /// ECDSA on P-256 with SHA-256.
    Es256,
    /// Ed25519.
    EdDsa,
}

impl JwtAlgorithm {
    /// The JOSE `alg` header value (`"HS256"`, `"ES256"` or `"EdDSA"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hs256 => "HS256",
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
        }
    }

    fn to_jwt(self) -> Algorithm {
        match self {
            Self::Hs256 => Algorithm::HS256,
            Self::Es256 => Algorithm::ES256,
            Self::EdDsa => Algorithm::EdDSA,
        }
    }
}

impl fmt::Display for JwtAlgorithm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for JwtAlgorithm {
    type Err = AuthConfigError;

    /// Parses `"HS256"`, `"ES256"` or `"EdDSA"`, ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        [Self::Hs256, Self::Es256, Self::EdDsa]
            .into_iter()
            .find(|alg| alg.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| AuthConfigError::UnknownAlgorithm(s.chars().take(32).collect()))
    }
}

/// The key material used to verify tokens; it also selects the algorithm.
#[derive(Clone)]
pub enum VerificationKey {
    /// HS256 shared secret (the raw bytes used as the HMAC key).
    Hs256Secret(Zeroizing<Vec<u8>>),
    /// Contents of a PEM file holding one or more P-256 SPKI public keys.
    Es256Pem(Vec<u8>),
    /// Contents of a PEM file holding one or more Ed25519 SPKI public keys.
    EdDsaPem(Vec<u8>),
}

impl VerificationKey {
    /// The algorithm this key verifies.
    pub fn algorithm(&self) -> JwtAlgorithm {
        match self {
            Self::Hs256Secret(_) => JwtAlgorithm::Hs256,
            Self::Es256Pem(_) => JwtAlgorithm::Es256,
            Self::EdDsaPem(_) => JwtAlgorithm::EdDsa,
        }
    }
}

impl fmt::Debug for VerificationKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Hs256Secret(_) => f.write_str("Hs256Secret([redacted])"),
            Self::Es256Pem(pem) => write!(f, "Es256Pem({} bytes of PEM)", pem.len()),
            Self::EdDsaPem(pem) => write!(f, "EdDsaPem({} bytes of PEM)", pem.len()),
        }
    }
}

/// Configuration of an [`Authenticator`].
#[derive(Clone, Debug)]
pub struct AuthConfig {
    /// Audience that must appear in the token's `aud` claim
    /// (default [`DEFAULT_AUDIENCE`]).
    pub audience: String,
    /// Issuer the token's `iss` claim must equal; `None` skips the check.
    pub issuer: Option<String>,
    /// Clock-skew leeway for `exp`, `nbf` and `iat`, in seconds
    /// (default [`DEFAULT_LEEWAY_SECONDS`]).
    pub leeway_seconds: u64,
    /// The furthest ahead `exp` may be, in seconds from now (default
    /// [`DEFAULT_MAX_TOKEN_LIFETIME_SECONDS`]). It also bounds how long a
    /// stolen token works and how long spent step-up `jti`s are kept.
    pub max_lifetime_seconds: u64,
    /// Verification key; its variant selects the accepted algorithm.
    pub key: VerificationKey,
}

impl AuthConfig {
    /// A configuration with the default audience and leeway, no issuer check
    /// and the given key.
    pub fn new(key: VerificationKey) -> Self {
        Self {
            audience: DEFAULT_AUDIENCE.to_owned(),
            issuer: None,
            leeway_seconds: DEFAULT_LEEWAY_SECONDS,
            max_lifetime_seconds: DEFAULT_MAX_TOKEN_LIFETIME_SECONDS,
            key,
        }
    }
}

/// Why a token was rejected. Messages never include the token itself.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// Not a well-formed JWS compact token with a JSON header and claims.
    #[error("malformed token")]
    Malformed,
    /// No configured key verifies the signature.
    #[error("invalid token signature")]
    BadSignature,
    /// The token's `alg` is not the configured algorithm.
    #[error("token algorithm is not accepted")]
    WrongAlgorithm,
    /// `exp` has passed (beyond the leeway).
    #[error("token has expired")]
    Expired,
    /// `nbf` has not been reached yet (beyond the leeway).
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future (beyond the leeway).
    #[error("token is issued in the future")]
    IssuedInFuture,
    /// `exp` is further ahead than the configured maximum lifetime.
    #[error("token lifetime exceeds the configured maximum")]
    LifetimeTooLong,
    /// `aud` does not contain the configured audience.
    #[error("token audience does not match")]
    WrongAudience,
    /// `iss` does not equal the configured issuer.
    #[error("token issuer does not match")]
    WrongIssuer,
    /// `sub` is missing, empty, longer than [`MAX_SUBJECT_LEN`] bytes or
    /// contains control characters.
    #[error("token subject is missing or invalid")]
    MissingSubject,
    /// A required claim (`exp`, `aud`, or `iss` when an issuer is configured)
    /// is absent.
    #[error("token lacks required claim `{0}`")]
    MissingClaim(&'static str),
}

impl AuthError {
    /// A stable snake_case code for API responses and metrics.
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed => "token_malformed",
            Self::BadSignature => "token_bad_signature",
            Self::WrongAlgorithm => "token_wrong_algorithm",
            Self::Expired => "token_expired",
            Self::NotYetValid => "token_not_yet_valid",
            Self::IssuedInFuture => "token_issued_in_future",
            Self::LifetimeTooLong => "token_lifetime_too_long",
            Self::WrongAudience => "token_wrong_audience",
            Self::WrongIssuer => "token_wrong_issuer",
            Self::MissingSubject => "token_missing_subject",
            Self::MissingClaim(_) => "token_missing_claim",
        }
    }
}

/// Invalid authentication configuration, or a failure to mint a token.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthConfigError {
    /// The HS256 secret is empty.
    #[error(
        "the HS256 secret is empty: set MPC_JWT_SECRET to at least {MIN_HS256_SECRET_LEN} bytes"
    )]
    EmptySecret,
    /// The HS256 secret is too short to be a safe HMAC-SHA256 key.
    #[error(
        "the HS256 secret is {len} bytes, at least {MIN_HS256_SECRET_LEN} are required: \
         a shorter HMAC-SHA256 key has less than 256 bits of strength and can be brute-forced \
         from a single token (use e.g. 64 random hex characters)"
    )]
    SecretTooShort {
        /// Length of the rejected secret, in bytes.
        len: usize,
    },
    /// The PEM data holds no usable public key for the algorithm.
    #[error("no {algorithm} public key found in the PEM file: {detail}")]
    NoUsableKey {
        /// The configured algorithm.
        algorithm: JwtAlgorithm,
        /// What was found instead.
        detail: String,
    },
    /// The PEM data could not be parsed.
    #[error("invalid PEM data: {0}")]
    InvalidPem(String),
    /// The configured audience is empty.
    #[error("the JWT audience must not be empty")]
    EmptyAudience,
    /// The configured issuer is `Some("")`.
    #[error("the JWT issuer must not be empty (leave it unset to skip the check)")]
    EmptyIssuer,
    /// An algorithm name other than HS256, ES256 or EdDSA.
    #[error("unknown JWT algorithm {0:?}: expected HS256, ES256 or EdDSA")]
    UnknownAlgorithm(String),
    /// The operation does not support this algorithm.
    #[error("{algorithm} is not supported here: {reason}")]
    UnsupportedAlgorithm {
        /// The requested algorithm.
        algorithm: JwtAlgorithm,
        /// What to use instead.
        reason: &'static str,
    },
    /// The private key for minting could not be used.
    #[error("invalid {algorithm} private key: {detail}")]
    InvalidSigningKey {
        /// The requested algorithm.
        algorithm: JwtAlgorithm,
        /// What is wrong with it.
        detail: String,
    },
    /// Encoding or signing the token failed.
    #[error("failed to sign the token: {0}")]
    Signing(String),
}

/// The verified claims of an accepted token.
#[non_exhaustive]
#[derive(Debug, Clone, PartialEq)]
pub struct Claims {
    /// `sub`: the key owner.
    pub subject: String,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// `iat`, unix seconds, if present.
    pub issued_at: Option<i64>,
    /// `auth_time`, unix seconds, if present: when the user last
    /// authenticated interactively.
    pub auth_time: Option<i64>,
    /// `amr` (authentication methods references, RFC 8176); empty if absent.
    pub amr: Vec<String>,
    /// `jti`, if present: spent once by a step-up operation.
    pub token_id: Option<String>,
    /// `mpc_op`, if present: the one step-up operation the token may be
    /// spent on (`backup`, `export` or `revoke`).
    pub step_up_operation: Option<String>,
    /// `mpc_key_id`, if present: the one key (64 hex characters) the token
    /// may be spent on by a step-up operation.
    pub step_up_key_id: Option<String>,
}

impl Claims {
    /// Claims with the given subject and expiry and no optional claims
    /// (for handlers' unit tests and internal callers).
    pub fn new(subject: impl Into<String>, expires_at: i64) -> Self {
        Self {
            subject: subject.into(),
            expires_at,
            issued_at: None,
            auth_time: None,
            amr: Vec::new(),
            token_id: None,
            step_up_operation: None,
            step_up_key_id: None,
        }
    }

    /// True if `amr` contains `"otp"` or `"mfa"` and `auth_time` is at most
    /// `max_age_seconds` before `now_unix`, and not more than
    /// [`AUTH_TIME_SKEW_SECONDS`] after it.
    pub fn has_recent_second_factor(&self, now_unix: i64, max_age_seconds: u64) -> bool {
        let second_factor = self.amr.iter().any(|m| m == "otp" || m == "mfa");
        let Some(auth_time) = self.auth_time else {
            return false;
        };
        let max_age = i64::try_from(max_age_seconds).unwrap_or(i64::MAX);
        let skew = i64::try_from(AUTH_TIME_SKEW_SECONDS).unwrap_or(i64::MAX);
        second_factor
            && auth_time <= now_unix.saturating_add(skew)
            && now_unix.saturating_sub(auth_time) <= max_age
    }
}

/// Verifies bearer tokens. Built once at startup; cheap to clone.
#[derive(Clone)]
pub struct Authenticator {
    inner: Arc<Inner>,
}

struct Inner {
    algorithm: JwtAlgorithm,
    audience: String,
    issuer: Option<String>,
    leeway: i64,
    max_lifetime: i64,
    keys: Vec<DecodingKey>,
    validation: Validation,
}

impl fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Authenticator")
            .field("algorithm", &self.inner.algorithm)
            .field("audience", &self.inner.audience)
            .field("issuer", &self.inner.issuer)
            .field("leeway_seconds", &self.inner.leeway)
            .field("max_lifetime_seconds", &self.inner.max_lifetime)
            .field("keys", &self.inner.keys.len())
            .finish_non_exhaustive()
    }
}

impl Authenticator {
    /// Builds an authenticator, parsing and checking the key material.
    ///
    /// # Errors
    ///
    /// * [`AuthConfigError::EmptySecret`] / [`AuthConfigError::SecretTooShort`]
    ///   for an HS256 secret shorter than [`MIN_HS256_SECRET_LEN`] bytes;
    /// * [`AuthConfigError::InvalidPem`] if the PEM data is not text, has an
    ///   unterminated block, or a `PUBLIC KEY` block that is not a valid key;
    /// * [`AuthConfigError::NoUsableKey`] if no public key of the configured
    ///   algorithm is in the PEM data;
    /// * [`AuthConfigError::EmptyAudience`] / [`AuthConfigError::EmptyIssuer`].
    pub fn new(config: AuthConfig) -> Result<Self, AuthConfigError> {
        ensure_crypto_provider();
        if config.audience.is_empty() {
            return Err(AuthConfigError::EmptyAudience);
        }
        if config.issuer.as_deref() == Some("") {
            return Err(AuthConfigError::EmptyIssuer);
        }
        let algorithm = config.key.algorithm();
        let keys = match &config.key {
            VerificationKey::Hs256Secret(secret) => {
                check_hs256_secret(secret)?;
                vec![DecodingKey::from_secret(secret)]
            }
            VerificationKey::Es256Pem(pem) | VerificationKey::EdDsaPem(pem) => {
                load_public_keys(algorithm, pem)?
            }
        };

        let mut validation = Validation::new(algorithm.to_jwt());
        // Claims are checked by `check_claims`, with i64 arithmetic and
        // this module's error mapping; the library only verifies signatures.
        validation.required_spec_claims = HashSet::new();
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.validate_aud = false;
        validation.leeway = 0;

        Ok(Self {
            inner: Arc::new(Inner {
                algorithm,
                audience: config.audience,
                issuer: config.issuer,
                leeway: i64::try_from(config.leeway_seconds).unwrap_or(i64::MAX),
                max_lifetime: i64::try_from(config.max_lifetime_seconds).unwrap_or(i64::MAX),
                keys,
                validation,
            }),
        })
    }

    /// The accepted algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.inner.algorithm
    }

    /// The clock-skew leeway, in seconds: a token is accepted until its
    /// `exp` plus this.
    #[must_use]
    pub fn leeway_seconds(&self) -> u64 {
        u64::try_from(self.inner.leeway).unwrap_or(0)
    }

    /// Verifies a compact JWS token (without the `Bearer ` prefix) and
    /// returns its claims.
    ///
    /// # Errors
    ///
    /// An [`AuthError`] saying why the token is rejected.
    pub fn verify(&self, token: &str) -> Result<Claims, AuthError> {
        self.verify_at(token, unix_now())
    }

    fn verify_at(&self, token: &str, now: i64) -> Result<Claims, AuthError> {
        let inner = &*self.inner;
        if token.is_empty() || token.len() > MAX_TOKEN_LEN {
            return Err(AuthError::Malformed);
        }
        check_header(token, inner.algorithm)?;

        let mut last_err = AuthError::BadSignature;
        for key in &inner.keys {
            match jsonwebtoken::decode::<RawClaims>(token, key, &inner.validation) {
                Ok(data) => return self.check_claims(data.claims, now),
                Err(err) => match map_decode_error(err.kind()) {
                    // Try the next key.
                    AuthError::BadSignature => last_err = AuthError::BadSignature,
                    other => return Err(other),
                },
            }
        }
        Err(last_err)
    }
}

// ---------------------------------------------------------------------------
// Internals

/// Installs jsonwebtoken's RustCrypto provider as the process default, once.
/// (With only the `rust_crypto` feature jsonwebtoken would pick it anyway;
/// installing it explicitly keeps working if feature unification ever also
/// enables `aws_lc_rs`, where the library can no longer choose.) If another
/// provider was installed first, that one is kept.
fn ensure_crypto_provider() {
    static INIT: Once = Once::new();
    INIT.call_once(|| {
        if CryptoProvider::install_default(&jsonwebtoken::crypto::rust_crypto::DEFAULT_PROVIDER)
            .is_err()
        {
            tracing::debug!("a jsonwebtoken crypto provider was already installed");
        }
    });
}

fn unix_now() -> i64 {
    let secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    i64::try_from(secs).unwrap_or(i64::MAX)
}

fn check_hs256_secret(secret: &[u8]) -> Result<(), AuthConfigError> {
    if secret.is_empty() {
        Err(AuthConfigError::EmptySecret)
    } else if secret.len() < MIN_HS256_SECRET_LEN {
        Err(AuthConfigError::SecretTooShort { len: secret.len() })
    } else {
        Ok(())
    }
}
