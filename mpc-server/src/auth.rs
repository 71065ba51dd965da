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
//! * `aud` is required and must contain the configured audience;
//! * `iss` is required and must match when an issuer is configured;
//! * `sub` is required, non-empty, at most [`MAX_SUBJECT_LEN`] bytes and free
//!   of control characters: it names the key owner.
//!
//! `amr`, `auth_time`, `iat` and `jti` are carried through in [`Claims`] for
//! step-up checks (see [`Claims::has_recent_second_factor`]).
//!
//! [`TokenBuilder`] mints tokens for dev mode and tests.

use std::collections::HashSet;
use std::fmt;
use std::str::FromStr;
use std::sync::{Arc, Once};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::crypto::CryptoProvider;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use rand_core::{OsRng, RngCore};
use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

/// Default audience expected in the `aud` claim.
pub const DEFAULT_AUDIENCE: &str = "mpc-server";

/// Default clock-skew leeway, in seconds, applied to `exp` and `nbf`.
pub const DEFAULT_LEEWAY_SECONDS: u64 = 30;

/// Minimum length, in bytes, of an HS256 secret.
pub const MIN_HS256_SECRET_LEN: usize = 32;

/// Maximum length, in bytes, of the `sub` claim.
pub const MAX_SUBJECT_LEN: usize = 256;

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
    /// Clock-skew leeway for `exp` and `nbf`, in seconds
    /// (default [`DEFAULT_LEEWAY_SECONDS`]).
    pub leeway_seconds: u64,
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
    /// `jti`, if present.
    pub token_id: Option<String>,
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
                keys,
                validation,
            }),
        })
    }

    /// The accepted algorithm.
    pub fn algorithm(&self) -> JwtAlgorithm {
        self.inner.algorithm
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

    fn check_claims(&self, raw: RawClaims, now: i64) -> Result<Claims, AuthError> {
        let inner = &*self.inner;

        let exp = raw.exp.ok_or(AuthError::MissingClaim("exp"))?;
        if now >= exp.saturating_add(inner.leeway) {
            return Err(AuthError::Expired);
        }
        if let Some(nbf) = raw.nbf {
            if now.saturating_add(inner.leeway) < nbf {
                return Err(AuthError::NotYetValid);
            }
        }

        let aud = raw.aud.ok_or(AuthError::MissingClaim("aud"))?;
        if !aud.contains(&inner.audience) {
            return Err(AuthError::WrongAudience);
        }

        if let Some(expected) = &inner.issuer {
            let iss = raw.iss.ok_or(AuthError::MissingClaim("iss"))?;
            if &iss != expected {
                return Err(AuthError::WrongIssuer);
            }
        }

        let subject = raw.sub.ok_or(AuthError::MissingSubject)?;
        if subject.is_empty()
            || subject.len() > MAX_SUBJECT_LEN
            || subject.chars().any(char::is_control)
        {
            return Err(AuthError::MissingSubject);
        }

        Ok(Claims {
            subject,
            expires_at: exp,
            issued_at: raw.iat,
            auth_time: raw.auth_time,
            amr: raw.amr.map(OneOrMany::into_vec).unwrap_or_default(),
            token_id: raw.jti,
        })
    }
}

/// Builds and signs tokens, for dev mode and tests.
///
/// `iat` defaults to the signing time and `exp` to
/// [`DEFAULT_TOKEN_LIFETIME_SECONDS`] after it.
#[derive(Debug, Clone)]
#[must_use]
pub struct TokenBuilder {
    subject: String,
    audience: String,
    issuer: Option<String>,
    expiry: Expiry,
    issued_at: Option<i64>,
    not_before: Option<i64>,
    auth_time: Option<i64>,
    amr: Vec<String>,
    token_id: Option<String>,
}

#[derive(Debug, Clone, Copy)]
enum Expiry {
    In(u64),
    At(i64),
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    aud: &'a str,
    exp: i64,
    iat: i64,
    #[serde(skip_serializing_if = "Option::is_none")]
    iss: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    nbf: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    auth_time: Option<i64>,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    amr: &'a [String],
    #[serde(skip_serializing_if = "Option::is_none")]
    jti: Option<&'a str>,
}

impl TokenBuilder {
    /// A token for `subject` (`sub`) and `audience` (`aud`).
    pub fn new(subject: impl Into<String>, audience: impl Into<String>) -> Self {
        Self {
            subject: subject.into(),
            audience: audience.into(),
            issuer: None,
            expiry: Expiry::In(DEFAULT_TOKEN_LIFETIME_SECONDS),
            issued_at: None,
            not_before: None,
            auth_time: None,
            amr: Vec::new(),
            token_id: None,
        }
    }

    /// Sets `iss`.
    pub fn issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuer = Some(issuer.into());
        self
    }

    /// Sets `exp` to `seconds` after the signing time.
    pub fn expires_in(mut self, seconds: u64) -> Self {
        self.expiry = Expiry::In(seconds);
        self
    }

    /// Sets `exp` to an absolute unix time.
    pub fn expires_at(mut self, unix_seconds: i64) -> Self {
        self.expiry = Expiry::At(unix_seconds);
        self
    }

    /// Sets `amr` (e.g. `&["pwd", "otp"]`).
    pub fn amr<S: AsRef<str>>(mut self, methods: &[S]) -> Self {
        self.amr = methods.iter().map(|m| m.as_ref().to_owned()).collect();
        self
    }

    /// Sets `auth_time` (unix seconds).
    pub fn auth_time(mut self, unix_seconds: i64) -> Self {
        self.auth_time = Some(unix_seconds);
        self
    }

    /// Sets `iat` (unix seconds) instead of the signing time.
    pub fn issued_at(mut self, unix_seconds: i64) -> Self {
        self.issued_at = Some(unix_seconds);
        self
    }

    /// Sets `nbf` (unix seconds).
    pub fn not_before(mut self, unix_seconds: i64) -> Self {
        self.not_before = Some(unix_seconds);
        self
    }

    /// Sets `jti`.
    pub fn token_id(mut self, id: impl Into<String>) -> Self {
        self.token_id = Some(id.into());
        self
    }

    /// Signs the token with HS256.
    ///
    /// # Errors
    ///
    /// [`AuthConfigError::EmptySecret`] / [`AuthConfigError::SecretTooShort`]
    /// under the same rule as [`Authenticator::new`], or
    /// [`AuthConfigError::Signing`].
    pub fn sign_hs256(&self, secret: &[u8]) -> Result<String, AuthConfigError> {
        ensure_crypto_provider();
        check_hs256_secret(secret)?;
        self.encode(Algorithm::HS256, &EncodingKey::from_secret(secret))
    }

    /// Signs the token with ES256 or EdDSA using a PKCS#8 private key in PEM
    /// (the first `PRIVATE KEY` block of `private_pem`).
    ///
    /// # Errors
    ///
    /// [`AuthConfigError::UnsupportedAlgorithm`] for HS256 (use
    /// [`TokenBuilder::sign_hs256`]), [`AuthConfigError::InvalidSigningKey`]
    /// if no suitable private key is found, or [`AuthConfigError::Signing`].
    pub fn sign_with_pem(
        &self,
        alg: JwtAlgorithm,
        private_pem: &[u8],
    ) -> Result<String, AuthConfigError> {
        ensure_crypto_provider();
        let invalid = |detail: &str| AuthConfigError::InvalidSigningKey {
            algorithm: alg,
            detail: detail.to_owned(),
        };
        if alg == JwtAlgorithm::Hs256 {
            return Err(AuthConfigError::UnsupportedAlgorithm {
                algorithm: alg,
                reason: "use TokenBuilder::sign_hs256",
            });
        }
        let blocks = split_pem(private_pem)?;
        let block = blocks
            .iter()
            .find(|b| b.label == "PRIVATE KEY")
            .ok_or_else(|| invalid("no PKCS#8 `PRIVATE KEY` PEM block"))?;
        let parsed = match alg {
            JwtAlgorithm::Es256 => EncodingKey::from_ec_pem(block.text.as_bytes()),
            JwtAlgorithm::EdDsa | JwtAlgorithm::Hs256 => {
                EncodingKey::from_ed_pem(block.text.as_bytes())
            }
        };
        let key = parsed.map_err(|_| invalid("not a private key of this algorithm"))?;
        self.encode(alg.to_jwt(), &key).map_err(|err| match err {
            AuthConfigError::Signing(_) => invalid("the key cannot sign with this algorithm"),
            other => other,
        })
    }

    fn encode(&self, alg: Algorithm, key: &EncodingKey) -> Result<String, AuthConfigError> {
        let now = unix_now();
        let exp = match self.expiry {
            Expiry::In(secs) => now.saturating_add(i64::try_from(secs).unwrap_or(i64::MAX)),
            Expiry::At(at) => at,
        };
        let claims = MintedClaims {
            sub: &self.subject,
            aud: &self.audience,
            exp,
            iat: self.issued_at.unwrap_or(now),
            iss: self.issuer.as_deref(),
            nbf: self.not_before,
            auth_time: self.auth_time,
            amr: &self.amr,
            jti: self.token_id.as_deref(),
        };
        jsonwebtoken::encode(&Header::new(alg), &claims, key)
            .map_err(|e| AuthConfigError::Signing(e.to_string()))
    }
}

/// A fresh random HS256 secret for dev mode: 32 random bytes as 64 lowercase
/// hex characters. The hex text itself (its UTF-8 bytes) is the HMAC key, as
/// for `MPC_JWT_SECRET`.
///
/// # Panics
///
/// If the operating system's random number generator fails.
pub fn generate_dev_secret() -> Zeroizing<String> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    OsRng.fill_bytes(&mut bytes[..]);
    Zeroizing::new(hex::encode(&bytes[..]))
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

/// One `-----BEGIN <label>----- ... -----END <label>-----` block.
struct PemBlock {
    label: String,
    text: String,
}

/// Splits PEM data into blocks; text outside blocks is ignored.
fn split_pem(data: &[u8]) -> Result<Vec<PemBlock>, AuthConfigError> {
    let text = std::str::from_utf8(data)
        .map_err(|_| AuthConfigError::InvalidPem("the file is not UTF-8 text".to_owned()))?;
    let mut blocks = Vec::new();
    let mut current: Option<PemBlock> = None;
    for line in text.lines().map(str::trim) {
        match current.as_mut() {
            None => {
                if let Some(label) = pem_marker(line, "BEGIN") {
                    current = Some(PemBlock {
                        label: label.to_owned(),
                        text: format!("{line}\n"),
                    });
                }
            }
            Some(block) => {
                block.text.push_str(line);
                block.text.push('\n');
                if let Some(label) = pem_marker(line, "END") {
                    if label != block.label {
                        return Err(AuthConfigError::InvalidPem(format!(
                            "block `{}` ends with `{label}`",
                            block.label
                        )));
                    }
                    blocks.extend(current.take());
                } else if pem_marker(line, "BEGIN").is_some() {
                    return Err(AuthConfigError::InvalidPem(format!(
                        "block `{}` is not terminated",
                        block.label
                    )));
                }
            }
        }
    }
    if let Some(block) = current {
        return Err(AuthConfigError::InvalidPem(format!(
            "block `{}` is not terminated",
            block.label
        )));
    }
    Ok(blocks)
}

fn pem_marker<'a>(line: &'a str, kind: &str) -> Option<&'a str> {
    line.strip_prefix("-----")?
        .strip_prefix(kind)?
        .strip_prefix(' ')?
        .strip_suffix("-----")
}

/// Parses every SPKI `PUBLIC KEY` block usable with `algorithm`; blocks of
/// other types are skipped.
fn load_public_keys(
    algorithm: JwtAlgorithm,
    pem: &[u8],
) -> Result<Vec<DecodingKey>, AuthConfigError> {
    let blocks = split_pem(pem)?;
    let mut keys = Vec::new();
    let mut skipped: Vec<String> = Vec::new();
    for (index, block) in blocks.iter().enumerate() {
        if block.label != "PUBLIC KEY" {
            skipped.push(format!("a `{}` block", block.label));
            continue;
        }
        let bytes = block.text.as_bytes();
        let parsed = match algorithm {
            JwtAlgorithm::Es256 => DecodingKey::from_ec_pem(bytes),
            JwtAlgorithm::EdDsa | JwtAlgorithm::Hs256 => DecodingKey::from_ed_pem(bytes),
        };
        match parsed {
            Ok(key) if usable_public_key(algorithm, &key) => keys.push(key),
            Ok(_) => skipped.push(format!("a public key of another curve (block {index})")),
            Err(_) => {
                let other_type = DecodingKey::from_ec_pem(bytes).is_ok()
                    || DecodingKey::from_ed_pem(bytes).is_ok()
                    || DecodingKey::from_rsa_pem(bytes).is_ok();
                if !other_type {
                    return Err(AuthConfigError::InvalidPem(format!(
                        "PUBLIC KEY block {index} is not a valid SPKI public key"
                    )));
                }
                skipped.push(format!("a public key of another type (block {index})"));
            }
        }
    }

    if keys.is_empty() {
        let mut detail = if blocks.is_empty() {
            "the file contains no PEM blocks".to_owned()
        } else {
            format!("found only {}", skipped.join(", "))
        };
        if blocks.iter().any(|b| b.label.ends_with("PRIVATE KEY")) {
            detail.push_str(
                "; this looks like a private key: configure the public key instead \
                 (`openssl pkey -in key.pem -pubout`)",
            );
        }
        return Err(AuthConfigError::NoUsableKey { algorithm, detail });
    }
    if !skipped.is_empty() {
        tracing::info!(
            %algorithm,
            keys = keys.len(),
            skipped = skipped.len(),
            "JWT public key file: ignoring PEM blocks of other key types"
        );
    }
    Ok(keys)
}

/// Whether `key` can verify `algorithm` signatures: the point must be on the
/// right curve. Probes by verifying a dummy signature, which fails cleanly for
/// a good key and with a key error for a bad one.
fn usable_public_key(algorithm: JwtAlgorithm, key: &DecodingKey) -> bool {
    // The Ed25519 verifier slices the first 32 bytes without checking.
    if algorithm == JwtAlgorithm::EdDsa && key.as_bytes().len() != 32 {
        return false;
    }
    jsonwebtoken::crypto::verify("AA", b"probe", key, algorithm.to_jwt()).is_ok()
}

/// Rejects tokens whose header is not JSON naming exactly the configured
/// algorithm, or that carries critical extensions (none are understood).
fn check_header(token: &str, algorithm: JwtAlgorithm) -> Result<(), AuthError> {
    #[derive(Deserialize)]
    struct RawHeader {
        alg: Option<String>,
        crit: Option<serde_json::Value>,
    }

    let mut parts = token.split('.');
    let (Some(header), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(AuthError::Malformed);
    };
    let json = base64url_decode(header).ok_or(AuthError::Malformed)?;
    let header: RawHeader = serde_json::from_slice(&json).map_err(|_| AuthError::Malformed)?;
    if header.crit.is_some() {
        return Err(AuthError::Malformed);
    }
    match header.alg {
        None => Err(AuthError::Malformed),
        Some(alg) if alg == algorithm.as_str() => Ok(()),
        Some(_) => Err(AuthError::WrongAlgorithm),
    }
}

/// Unpadded base64url (RFC 7515) decoding.
fn base64url_decode(input: &str) -> Option<Vec<u8>> {
    if input.len() % 4 == 1 {
        return None;
    }
    let mut out = Vec::with_capacity(input.len() / 4 * 3 + 2);
    let mut acc: u32 = 0;
    let mut bits: u32 = 0;
    for byte in input.bytes() {
        let value = match byte {
            b'A'..=b'Z' => byte - b'A',
            b'a'..=b'z' => byte - b'a' + 26,
            b'0'..=b'9' => byte - b'0' + 52,
            b'-' => 62,
            b'_' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(value);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push(u8::try_from(acc >> bits).ok()?);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero (canonical encoding).
    (acc == 0).then_some(out)
}

fn map_decode_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::WrongAlgorithm,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        ErrorKind::InvalidAudience => AuthError::WrongAudience,
        ErrorKind::InvalidIssuer => AuthError::WrongIssuer,
        ErrorKind::InvalidSubject => AuthError::MissingSubject,
        ErrorKind::InvalidToken
        | ErrorKind::Base64(_)
        | ErrorKind::Json(_)
        | ErrorKind::Utf8(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::MissingRequiredClaim(_) => AuthError::Malformed,
        // Signature mismatch, or a key/provider failure: try the next key.
        _ => AuthError::BadSignature,
    }
}

/// The claims as decoded, before checking.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    sub: Option<String>,
    #[serde(default, deserialize_with = "numeric_date")]
    exp: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    nbf: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    iat: Option<i64>,
    #[serde(default, deserialize_with = "numeric_date")]
    auth_time: Option<i64>,
    #[serde(default)]
    aud: Option<OneOrMany>,
    #[serde(default)]
    iss: Option<String>,
    #[serde(default)]
    amr: Option<OneOrMany>,
    #[serde(default)]
    jti: Option<String>,
}

/// A string or an array of strings (`aud`, and `amr` from lenient issuers).
#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn contains(&self, wanted: &str) -> bool {
        match self {
            Self::One(s) => s == wanted,
            Self::Many(v) => v.iter().any(|s| s == wanted),
        }
    }

    fn into_vec(self) -> Vec<String> {
        match self {
            Self::One(s) => vec![s],
            Self::Many(v) => v,
        }
    }
}

/// A JWT NumericDate: integer or fractional unix seconds (fractions are
/// truncated toward negative infinity).
fn numeric_date<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<i64>, D::Error> {
    let Some(number) = Option::<serde_json::Number>::deserialize(deserializer)? else {
        return Ok(None);
    };
    if let Some(int) = number.as_i64() {
        return Ok(Some(int));
    }
    match number.as_f64() {
        // The range check makes the cast exact after `floor`.
        #[allow(clippy::cast_possible_truncation)]
        Some(f) if (-9.0e18..=9.0e18).contains(&f) => Ok(Some(f.floor() as i64)),
        _ => Err(serde::de::Error::custom("NumericDate out of range")),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"test-secret-0123456789-abcdefghij-klmnop";
    const AUD: &str = "mpc-server";

    const ES256_A_PRIV: &[u8] = include_bytes!("../tests/data/es256_a_private.pem");
    const ES256_A_PUB: &[u8] = include_bytes!("../tests/data/es256_a_public.pem");
    const ES256_B_PRIV: &[u8] = include_bytes!("../tests/data/es256_b_private.pem");
    const ES256_B_PUB: &[u8] = include_bytes!("../tests/data/es256_b_public.pem");
    const ED_A_PRIV: &[u8] = include_bytes!("../tests/data/ed25519_a_private.pem");
    const ED_A_PUB: &[u8] = include_bytes!("../tests/data/ed25519_a_public.pem");
    const ED_B_PRIV: &[u8] = include_bytes!("../tests/data/ed25519_b_private.pem");
    const ED_B_PUB: &[u8] = include_bytes!("../tests/data/ed25519_b_public.pem");
    const ES384_PUB: &[u8] = include_bytes!("../tests/data/es384_public.pem");

    fn hs_config() -> AuthConfig {
        AuthConfig::new(VerificationKey::Hs256Secret(Zeroizing::new(
            SECRET.to_vec(),
        )))
    }

    fn hs_auth() -> Authenticator {
        Authenticator::new(hs_config()).unwrap()
    }

    fn pem_auth(key: VerificationKey) -> Authenticator {
        Authenticator::new(AuthConfig::new(key)).unwrap()
    }

    fn cat(parts: &[&[u8]]) -> Vec<u8> {
        parts.concat()
    }

    fn b64url(data: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in data.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |acc, (i, &b)| acc | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
            }
        }
        out
    }

    /// Signs an arbitrary JSON payload with HS256.
    fn sign_json(payload: &serde_json::Value) -> String {
        ensure_crypto_provider();
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            payload,
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap()
    }

    #[test]
    fn valid_hs256_token_carries_claims() {
        let now = unix_now();
        let token = TokenBuilder::new("alice@example.com", AUD)
            .issuer("backend")
            .expires_in(600)
            .amr(&["pwd", "otp"])
            .auth_time(now - 5)
            .issued_at(now - 10)
            .token_id("jti-1")
            .sign_hs256(SECRET)
            .unwrap();
        let claims = hs_auth().verify(&token).unwrap();
        assert_eq!(claims.subject, "alice@example.com");
        assert!((claims.expires_at - (now + 600)).abs() <= 2);
        assert_eq!(claims.issued_at, Some(now - 10));
        assert_eq!(claims.auth_time, Some(now - 5));
        assert_eq!(claims.amr, vec!["pwd".to_owned(), "otp".to_owned()]);
        assert_eq!(claims.token_id.as_deref(), Some("jti-1"));
        assert_eq!(hs_auth().algorithm(), JwtAlgorithm::Hs256);
    }

    #[test]
    fn minimal_token_has_empty_optional_claims() {
        let now = unix_now();
        let token =
            sign_json(&serde_json::json!({"sub": "bob", "aud": [AUD, "other"], "exp": now + 60}));
        let claims = hs_auth().verify(&token).unwrap();
        assert_eq!(claims, Claims::new("bob", now + 60));
    }

    #[test]
    fn expiry_respects_leeway() {
        let auth = hs_auth();
        let now = unix_now();
        let token = TokenBuilder::new("alice", AUD)
            .expires_at(now - 10)
            .sign_hs256(SECRET)
            .unwrap();
        // Within the default 30 s leeway.
        assert!(auth.verify_at(&token, now).is_ok());
        assert_eq!(auth.verify_at(&token, now + 25), Err(AuthError::Expired));
        let old = TokenBuilder::new("alice", AUD)
            .expires_at(now - 3600)
            .sign_hs256(SECRET)
            .unwrap();
        let err = auth.verify(&old).unwrap_err();
        assert_eq!(err, AuthError::Expired);
        assert_eq!(err.code(), "token_expired");

        let strict = Authenticator::new(AuthConfig {
            leeway_seconds: 0,
            ..hs_config()
        })
        .unwrap();
        assert_eq!(strict.verify_at(&token, now), Err(AuthError::Expired));
    }

    #[test]
    fn missing_exp_is_rejected() {
        let token = sign_json(&serde_json::json!({"sub": "alice", "aud": AUD}));
        assert_eq!(
            hs_auth().verify(&token),
            Err(AuthError::MissingClaim("exp"))
        );
    }

    #[test]
    fn wrong_audience_is_rejected() {
        let token = TokenBuilder::new("alice", "someone-else")
            .sign_hs256(SECRET)
            .unwrap();
        assert_eq!(hs_auth().verify(&token), Err(AuthError::WrongAudience));
        let custom = Authenticator::new(AuthConfig {
            audience: "someone-else".to_owned(),
            ..hs_config()
        })
        .unwrap();
        assert!(custom.verify(&token).is_ok());
    }

    #[test]
    fn missing_audience_is_rejected() {
        let exp = unix_now() + 60;
        let token = sign_json(&serde_json::json!({"sub": "alice", "exp": exp}));
        let err = hs_auth().verify(&token).unwrap_err();
        assert_eq!(err, AuthError::MissingClaim("aud"));
        assert_eq!(err.code(), "token_missing_claim");
    }

    #[test]
    fn issuer_checked_when_configured() {
        let auth = Authenticator::new(AuthConfig {
            issuer: Some("https://issuer.example".to_owned()),
            ..hs_config()
        })
        .unwrap();
        let good = TokenBuilder::new("alice", AUD)
            .issuer("https://issuer.example")
            .sign_hs256(SECRET)
            .unwrap();
        let bad = TokenBuilder::new("alice", AUD)
            .issuer("https://evil.example")
            .sign_hs256(SECRET)
            .unwrap();
        let none = TokenBuilder::new("alice", AUD).sign_hs256(SECRET).unwrap();
        assert!(auth.verify(&good).is_ok());
        assert_eq!(auth.verify(&bad), Err(AuthError::WrongIssuer));
        assert_eq!(auth.verify(&none), Err(AuthError::MissingClaim("iss")));
    }

    #[test]
    fn issuer_ignored_when_not_configured() {
        let token = TokenBuilder::new("alice", AUD)
            .issuer("anyone")
            .sign_hs256(SECRET)
            .unwrap();
        assert!(hs_auth().verify(&token).is_ok());
    }

    #[test]
    fn wrong_secret_is_bad_signature() {
        let token = TokenBuilder::new("alice", AUD)
            .sign_hs256(b"another-secret-that-is-long-enough-xxxx")
            .unwrap();
        let err = hs_auth().verify(&token).unwrap_err();
        assert_eq!(err, AuthError::BadSignature);
        assert_eq!(err.code(), "token_bad_signature");
    }

    #[test]
    fn tampered_payload_is_bad_signature() {
        let token = TokenBuilder::new("alice", AUD).sign_hs256(SECRET).unwrap();
        let forged_payload = b64url(
            serde_json::json!({"sub": "mallory", "aud": AUD, "exp": unix_now() + 60})
                .to_string()
                .as_bytes(),
        );
        let parts: Vec<&str> = token.split('.').collect();
        let forged = format!("{}.{}.{}", parts[0], forged_payload, parts[2]);
        assert_eq!(hs_auth().verify(&forged), Err(AuthError::BadSignature));
    }

    #[test]
    fn alg_none_is_rejected() {
        let header = b64url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = b64url(
            serde_json::json!({"sub": "alice", "aud": AUD, "exp": unix_now() + 60})
                .to_string()
                .as_bytes(),
        );
        let auth = hs_auth();
        assert_eq!(
            auth.verify(&format!("{header}.{payload}.")),
            Err(AuthError::WrongAlgorithm)
        );
        // Same with a syntactically plausible signature attached.
        let real = TokenBuilder::new("alice", AUD).sign_hs256(SECRET).unwrap();
        let sig = real.rsplit('.').next().unwrap();
        assert_eq!(
            auth.verify(&format!("{header}.{payload}.{sig}")),
            Err(AuthError::WrongAlgorithm)
        );
        // And with different capitalisation.
        let header = b64url(br#"{"alg":"None"}"#);
        assert_eq!(
            auth.verify(&format!("{header}.{payload}.")),
            Err(AuthError::WrongAlgorithm)
        );
    }

    #[test]
    fn other_hmac_algorithms_are_rejected() {
        ensure_crypto_provider();
        let exp = unix_now() + 60;
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &serde_json::json!({"sub": "alice", "aud": AUD, "exp": exp}),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(hs_auth().verify(&token), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn hs256_token_rejected_by_es256_authenticator() {
        let auth = pem_auth(VerificationKey::Es256Pem(ES256_A_PUB.to_vec()));
        let token = TokenBuilder::new("alice", AUD).sign_hs256(SECRET).unwrap();
        assert_eq!(auth.verify(&token), Err(AuthError::WrongAlgorithm));
        // Key confusion: HMAC keyed with the public key PEM itself.
        let confused = TokenBuilder::new("alice", AUD)
            .sign_hs256(ES256_A_PUB)
            .unwrap();
        assert_eq!(auth.verify(&confused), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn missing_or_empty_subject_is_rejected() {
        let exp = unix_now() + 60;
        let auth = hs_auth();
        let missing = sign_json(&serde_json::json!({"aud": AUD, "exp": exp}));
        assert_eq!(auth.verify(&missing), Err(AuthError::MissingSubject));
        let empty = TokenBuilder::new("", AUD).sign_hs256(SECRET).unwrap();
        assert_eq!(auth.verify(&empty), Err(AuthError::MissingSubject));
        let long = TokenBuilder::new("a".repeat(MAX_SUBJECT_LEN + 1), AUD)
            .sign_hs256(SECRET)
            .unwrap();
        assert_eq!(auth.verify(&long), Err(AuthError::MissingSubject));
        let max = TokenBuilder::new("a".repeat(MAX_SUBJECT_LEN), AUD)
            .sign_hs256(SECRET)
            .unwrap();
        assert!(auth.verify(&max).is_ok());
        let control = TokenBuilder::new("alice\nadmin", AUD)
            .sign_hs256(SECRET)
            .unwrap();
        assert_eq!(auth.verify(&control), Err(AuthError::MissingSubject));
    }

    #[test]
    fn not_before_in_future_is_rejected() {
        let auth = hs_auth();
        let now = unix_now();
        let future = TokenBuilder::new("alice", AUD)
            .not_before(now + 3600)
            .sign_hs256(SECRET)
            .unwrap();
        let err = auth.verify(&future).unwrap_err();
        assert_eq!(err, AuthError::NotYetValid);
        assert_eq!(err.code(), "token_not_yet_valid");
        // Within leeway, and in the past: accepted.
        let soon = TokenBuilder::new("alice", AUD)
            .not_before(now + 10)
            .sign_hs256(SECRET)
            .unwrap();
        assert!(auth.verify_at(&soon, now).is_ok());
        let past = TokenBuilder::new("alice", AUD)
            .not_before(now - 10)
            .sign_hs256(SECRET)
            .unwrap();
        assert!(auth.verify(&past).is_ok());
    }

    #[test]
    fn malformed_tokens_are_rejected() {
        let auth = hs_auth();
        let good = TokenBuilder::new("alice", AUD).sign_hs256(SECRET).unwrap();
        for bad in [
            String::new(),
            "abc".to_owned(),
            "a.b".to_owned(),
            format!("{good}.extra"),
            format!("Bearer {good}"),
            format!("{good}="),
            "!!!.???.###".to_owned(),
            format!("{}.e30.sig", b64url(b"not json")),
            "x".repeat(MAX_TOKEN_LEN + 1),
        ] {
            assert_eq!(auth.verify(&bad), Err(AuthError::Malformed), "{bad:.40}");
        }
        // Non-numeric exp in a correctly signed token.
        let token = sign_json(&serde_json::json!({"sub": "a", "aud": AUD, "exp": "soon"}));
        assert_eq!(auth.verify(&token), Err(AuthError::Malformed));
        // A `crit` header is not understood.
        let header = b64url(br#"{"alg":"HS256","crit":["exp"]}"#);
        let rest = good.split_once('.').unwrap().1;
        assert_eq!(
            auth.verify(&format!("{header}.{rest}")),
            Err(AuthError::Malformed)
        );
    }

    #[test]
    fn fractional_numeric_dates_are_accepted() {
        let exp = unix_now() + 60;
        let token = sign_json(&serde_json::json!({
            "sub": "a", "aud": AUD, "exp": exp as f64 + 0.5, "amr": "otp"
        }));
        let claims = hs_auth().verify(&token).unwrap();
        assert_eq!(claims.expires_at, exp);
        assert_eq!(claims.amr, vec!["otp".to_owned()]);
    }

    #[test]
    fn es256_tokens_verify() {
        let auth = pem_auth(VerificationKey::Es256Pem(ES256_A_PUB.to_vec()));
        assert_eq!(auth.algorithm(), JwtAlgorithm::Es256);
        let token = TokenBuilder::new("alice", AUD)
            .amr(&["mfa"])
            .sign_with_pem(JwtAlgorithm::Es256, ES256_A_PRIV)
            .unwrap();
        let claims = auth.verify(&token).unwrap();
        assert_eq!(claims.subject, "alice");
        assert_eq!(claims.amr, vec!["mfa".to_owned()]);

        let other = TokenBuilder::new("alice", AUD)
            .sign_with_pem(JwtAlgorithm::Es256, ES256_B_PRIV)
            .unwrap();
        assert_eq!(auth.verify(&other), Err(AuthError::BadSignature));
        let eddsa = TokenBuilder::new("alice", AUD)
            .sign_with_pem(JwtAlgorithm::EdDsa, ED_A_PRIV)
            .unwrap();
        assert_eq!(auth.verify(&eddsa), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn eddsa_tokens_verify() {
        let auth = pem_auth(VerificationKey::EdDsaPem(ED_A_PUB.to_vec()));
        assert_eq!(auth.algorithm(), JwtAlgorithm::EdDsa);
        let token = TokenBuilder::new("alice", AUD)
            .sign_with_pem(JwtAlgorithm::EdDsa, ED_A_PRIV)
            .unwrap();
        assert_eq!(auth.verify(&token).unwrap().subject, "alice");

        let other = TokenBuilder::new("alice", AUD)
            .sign_with_pem(JwtAlgorithm::EdDsa, ED_B_PRIV)
            .unwrap();
        assert_eq!(auth.verify(&other), Err(AuthError::BadSignature));
        let es = TokenBuilder::new("alice", AUD)
            .sign_with_pem(JwtAlgorithm::Es256, ES256_A_PRIV)
            .unwrap();
        assert_eq!(auth.verify(&es), Err(AuthError::WrongAlgorithm));
        let hs = TokenBuilder::new("alice", AUD).sign_hs256(SECRET).unwrap();
        assert_eq!(auth.verify(&hs), Err(AuthError::WrongAlgorithm));
    }

    #[test]
    fn pem_file_with_two_keys_accepts_either() {
        let es = pem_auth(VerificationKey::Es256Pem(cat(&[ES256_A_PUB, ES256_B_PUB])));
        for private in [ES256_A_PRIV, ES256_B_PRIV] {
            let token = TokenBuilder::new("alice", AUD)
                .sign_with_pem(JwtAlgorithm::Es256, private)
                .unwrap();
            assert!(es.verify(&token).is_ok());
        }
        let ed = pem_auth(VerificationKey::EdDsaPem(cat(&[
            b"comment line\n",
            ED_A_PUB,
            b"\n",
            ED_B_PUB,
        ])));
        for private in [ED_A_PRIV, ED_B_PRIV] {
            let token = TokenBuilder::new("alice", AUD)
                .sign_with_pem(JwtAlgorithm::EdDsa, private)
                .unwrap();
            assert!(ed.verify(&token).is_ok());
        }
    }

    #[test]
    fn mixed_pem_file_uses_keys_of_configured_type() {
        let mixed = cat(&[ED_A_PUB, ES384_PUB, ES256_B_PUB]);
        let es = pem_auth(VerificationKey::Es256Pem(mixed.clone()));
        let token = TokenBuilder::new("alice", AUD)
            .sign_with_pem(JwtAlgorithm::Es256, ES256_B_PRIV)
            .unwrap();
        assert!(es.verify(&token).is_ok());
        let ed = pem_auth(VerificationKey::EdDsaPem(mixed));
        let token = TokenBuilder::new("alice", AUD)
            .sign_with_pem(JwtAlgorithm::EdDsa, ED_A_PRIV)
            .unwrap();
        assert!(ed.verify(&token).is_ok());
    }

    #[test]
    fn config_errors() {
        let err = |key| Authenticator::new(AuthConfig::new(key)).unwrap_err();

        assert_eq!(
            err(VerificationKey::Hs256Secret(Zeroizing::new(Vec::new()))),
            AuthConfigError::EmptySecret
        );
        let short = err(VerificationKey::Hs256Secret(Zeroizing::new(
            b"short".to_vec(),
        )));
        assert_eq!(short, AuthConfigError::SecretTooShort { len: 5 });
        assert!(short.to_string().contains("at least 32"));

        let wrong_type = err(VerificationKey::Es256Pem(ED_A_PUB.to_vec()));
        assert!(matches!(
            wrong_type,
            AuthConfigError::NoUsableKey {
                algorithm: JwtAlgorithm::Es256,
                ..
            }
        ));
        assert!(matches!(
            err(VerificationKey::Es256Pem(ES384_PUB.to_vec())),
            AuthConfigError::NoUsableKey { .. }
        ));
        assert!(matches!(
            err(VerificationKey::EdDsaPem(ES256_A_PUB.to_vec())),
            AuthConfigError::NoUsableKey {
                algorithm: JwtAlgorithm::EdDsa,
                ..
            }
        ));
        let private = err(VerificationKey::EdDsaPem(ED_A_PRIV.to_vec()));
        assert!(private.to_string().contains("-pubout"), "{private}");
        assert!(matches!(
            err(VerificationKey::EdDsaPem(Vec::new())),
            AuthConfigError::NoUsableKey { .. }
        ));
        assert!(matches!(
            err(VerificationKey::EdDsaPem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n".to_vec()
            )),
            AuthConfigError::InvalidPem(_)
        ));
        assert!(matches!(
            err(VerificationKey::EdDsaPem(
                b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_vec()
            )),
            AuthConfigError::InvalidPem(_)
        ));
        assert!(matches!(
            err(VerificationKey::Es256Pem(vec![0xff, 0xfe])),
            AuthConfigError::InvalidPem(_)
        ));

        let no_aud = Authenticator::new(AuthConfig {
            audience: String::new(),
            ..hs_config()
        });
        assert_eq!(no_aud.unwrap_err(), AuthConfigError::EmptyAudience);
        let empty_iss = Authenticator::new(AuthConfig {
            issuer: Some(String::new()),
            ..hs_config()
        });
        assert_eq!(empty_iss.unwrap_err(), AuthConfigError::EmptyIssuer);
    }

    #[test]
    fn minting_errors() {
        let builder = TokenBuilder::new("alice", AUD);
        assert_eq!(
            builder.sign_hs256(b"short").unwrap_err(),
            AuthConfigError::SecretTooShort { len: 5 }
        );
        assert!(matches!(
            builder.sign_with_pem(JwtAlgorithm::Hs256, ES256_A_PRIV),
            Err(AuthConfigError::UnsupportedAlgorithm { .. })
        ));
        assert!(matches!(
            builder.sign_with_pem(JwtAlgorithm::Es256, ED_A_PRIV),
            Err(AuthConfigError::InvalidSigningKey { .. })
        ));
        assert!(matches!(
            builder.sign_with_pem(JwtAlgorithm::EdDsa, ES256_A_PRIV),
            Err(AuthConfigError::InvalidSigningKey { .. })
        ));
        assert!(matches!(
            builder.sign_with_pem(JwtAlgorithm::EdDsa, ED_A_PUB),
            Err(AuthConfigError::InvalidSigningKey { .. })
        ));
    }

    #[test]
    fn algorithm_parse_and_display() {
        for (text, alg) in [
            ("HS256", JwtAlgorithm::Hs256),
            ("hs256", JwtAlgorithm::Hs256),
            ("ES256", JwtAlgorithm::Es256),
            ("es256", JwtAlgorithm::Es256),
            ("EdDSA", JwtAlgorithm::EdDsa),
            ("EDDSA", JwtAlgorithm::EdDsa),
        ] {
            assert_eq!(text.parse::<JwtAlgorithm>().unwrap(), alg);
        }
        for alg in [
            JwtAlgorithm::Hs256,
            JwtAlgorithm::Es256,
            JwtAlgorithm::EdDsa,
        ] {
            assert_eq!(alg.to_string().parse::<JwtAlgorithm>().unwrap(), alg);
        }
        assert_eq!(JwtAlgorithm::EdDsa.to_string(), "EdDSA");
        assert!(matches!(
            "none".parse::<JwtAlgorithm>(),
            Err(AuthConfigError::UnknownAlgorithm(_))
        ));
        assert!("RS256".parse::<JwtAlgorithm>().is_err());
    }

    #[test]
    fn recent_second_factor() {
        let now = 1_700_000_000;
        let claims = |amr: &[&str], auth_time: Option<i64>| {
            let mut c = Claims::new("alice", now + 600);
            c.amr = amr.iter().map(|s| (*s).to_owned()).collect();
            c.auth_time = auth_time;
            c
        };
        assert!(claims(&["pwd", "otp"], Some(now - 60)).has_recent_second_factor(now, 300));
        assert!(claims(&["mfa"], Some(now - 300)).has_recent_second_factor(now, 300));
        assert!(claims(&["otp"], Some(now + 10)).has_recent_second_factor(now, 300));
        assert!(!claims(&["otp"], Some(now - 301)).has_recent_second_factor(now, 300));
        assert!(!claims(&["pwd"], Some(now - 60)).has_recent_second_factor(now, 300));
        assert!(!claims(&[], Some(now)).has_recent_second_factor(now, 300));
        assert!(!claims(&["otp"], None).has_recent_second_factor(now, 300));
        assert!(!claims(&["otp"], Some(now + 3600)).has_recent_second_factor(now, 300));
        assert!(!claims(&["OTP"], Some(now)).has_recent_second_factor(now, 300));
        assert!(claims(&["otp"], Some(i64::MIN)).has_recent_second_factor(now, u64::MAX));
    }

    #[test]
    fn debug_output_never_shows_secrets() {
        let secret_text = "correct-horse-battery-staple-0123456789";
        let secret_bytes = format!("{:?}", secret_text.as_bytes());
        let secret_bytes = &secret_bytes[1..20]; // "99, 111, 114, ..."
        let config = AuthConfig::new(VerificationKey::Hs256Secret(Zeroizing::new(
            secret_text.as_bytes().to_vec(),
        )));
        let auth = Authenticator::new(config.clone()).unwrap();
        for text in [
            format!("{config:?}"),
            format!("{config:#?}"),
            format!("{:?}", config.key),
            format!("{auth:?}"),
            format!("{auth:#?}"),
        ] {
            assert!(!text.contains(secret_text), "{text}");
            assert!(!text.contains(secret_bytes), "{text}");
            assert!(!text.contains("correct-horse"), "{text}");
        }
        assert!(format!("{:?}", config.key).contains("redacted"));
    }

    #[test]
    fn error_messages_never_echo_the_token() {
        let token = TokenBuilder::new("alice", "wrong")
            .sign_hs256(SECRET)
            .unwrap();
        let err = hs_auth().verify(&token).unwrap_err();
        let text = format!("{err} {err:?}");
        assert!(!text.contains(&token[..20]));
    }

    #[test]
    fn dev_secret_is_64_hex_chars_and_usable() {
        let a = generate_dev_secret();
        let b = generate_dev_secret();
        assert_eq!(a.len(), 64);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(*a, *b);
        let auth = Authenticator::new(AuthConfig::new(VerificationKey::Hs256Secret(
            Zeroizing::new(a.as_bytes().to_vec()),
        )))
        .unwrap();
        let token = TokenBuilder::new("dev", AUD)
            .sign_hs256(a.as_bytes())
            .unwrap();
        assert_eq!(auth.verify(&token).unwrap().subject, "dev");
    }

    #[test]
    fn base64url_decoder() {
        assert_eq!(base64url_decode("").unwrap(), b"");
        assert_eq!(base64url_decode("Zg").unwrap(), b"f");
        assert_eq!(base64url_decode("Zm8").unwrap(), b"fo");
        assert_eq!(base64url_decode("Zm9v").unwrap(), b"foo");
        assert_eq!(base64url_decode("_-8").unwrap(), [0xff, 0xef]);
        assert!(base64url_decode("Zh").is_none()); // non-canonical
        assert!(base64url_decode("Z").is_none());
        assert!(base64url_decode("Zg==").is_none());
        for len in 0..20u8 {
            let data: Vec<u8> = (0..len).map(|i| i.wrapping_mul(37)).collect();
            assert_eq!(base64url_decode(&b64url(&data)).unwrap(), data);
        }
    }

    #[test]
    fn authenticator_is_send_sync_clone() {
        fn check<T: Send + Sync + Clone + 'static>() {}
        check::<Authenticator>();
    }
}
