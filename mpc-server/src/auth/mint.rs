//! Minting tokens ([`TokenBuilder`]) and the dev-mode secret.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use rand_core::{OsRng, RngCore};
use serde::Serialize;
use zeroize::Zeroizing;

use super::keys::split_pem;
use super::{
    check_hs256_secret, ensure_crypto_provider, unix_now, AuthConfigError, JwtAlgorithm,
    DEFAULT_TOKEN_LIFETIME_SECONDS,
};

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
    operation: Option<String>,
    key_id: Option<String>,
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
    #[serde(skip_serializing_if = "Option::is_none")]
    mpc_op: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    mpc_key_id: Option<&'a str>,
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
            operation: None,
            key_id: None,
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

    /// Binds a step-up token to one operation (`mpc_op`: `backup`, `export`
    /// or `revoke`; PROTOCOL.md §19).
    pub fn step_up_operation(mut self, operation: impl Into<String>) -> Self {
        self.operation = Some(operation.into());
        self
    }

    /// Binds a step-up token to one key (`mpc_key_id`, 64 hex characters).
    pub fn step_up_key_id(mut self, key_id: impl Into<String>) -> Self {
        self.key_id = Some(key_id.into());
        self
    }

    /// Signs the token with HS256.
    ///
    /// # Errors
    ///
    /// [`AuthConfigError::EmptySecret`] / [`AuthConfigError::SecretTooShort`]
    /// under the same rule as [`Authenticator::new`](super::Authenticator::new), or
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
            mpc_op: self.operation.as_deref(),
            mpc_key_id: self.key_id.as_deref(),
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
