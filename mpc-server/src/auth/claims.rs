//! Claim checks: the token header, the decoded claims, and the mapping of
//! decoding errors to [`AuthError`].

use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Deserializer};

use super::{AuthError, Authenticator, Claims, JwtAlgorithm, MAX_SUBJECT_LEN, MAX_TOKEN_ID_LEN};

impl Authenticator {
    pub(super) fn check_claims(&self, raw: RawClaims, now: i64) -> Result<Claims, AuthError> {
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
        // A token "issued" in the future, or valid for longer than the
        // issuer is allowed to mint, is a forged or mis-minted one; the
        // lifetime bound also bounds how long a spent step-up `jti` must be
        // remembered (PROTOCOL.md §19).
        if let Some(iat) = raw.iat {
            if now.saturating_add(inner.leeway) < iat {
                return Err(AuthError::IssuedInFuture);
            }
        }
        if exp
            > now
                .saturating_add(inner.max_lifetime)
                .saturating_add(inner.leeway)
        {
            return Err(AuthError::LifetimeTooLong);
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
        if !is_clean_text(&subject, MAX_SUBJECT_LEN) {
            return Err(AuthError::MissingSubject);
        }

        if let Some(jti) = &raw.jti {
            if !is_clean_text(jti, MAX_TOKEN_ID_LEN) {
                return Err(AuthError::Malformed);
            }
        }
        if let Some(key_id) = &raw.mpc_key_id {
            if !is_clean_text(key_id, MAX_TOKEN_ID_LEN) {
                return Err(AuthError::Malformed);
            }
        }
        if let Some(op) = &raw.mpc_op {
            if !is_clean_text(op, MAX_TOKEN_ID_LEN) {
                return Err(AuthError::Malformed);
            }
        }

        Ok(Claims {
            subject,
            expires_at: exp,
            issued_at: raw.iat,
            auth_time: raw.auth_time,
            amr: raw.amr.unwrap_or_default(),
            token_id: raw.jti,
            step_up_operation: raw.mpc_op,
            step_up_key_id: raw.mpc_key_id,
        })
    }
}

/// Non-empty, at most `max_len` bytes, no control characters.
fn is_clean_text(text: &str, max_len: usize) -> bool {
    !text.is_empty() && text.len() <= max_len && !text.chars().any(char::is_control)
}

/// Rejects tokens whose header is not JSON naming exactly the configured
/// algorithm, or that carries critical extensions (none are understood).
pub(super) fn check_header(token: &str, algorithm: JwtAlgorithm) -> Result<(), AuthError> {
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
pub(super) fn base64url_decode(input: &str) -> Option<Vec<u8>> {
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

pub(super) fn map_decode_error(kind: &ErrorKind) -> AuthError {
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
pub(super) struct RawClaims {
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
    /// RFC 8176 makes `amr` an array of strings; a lone string (which some
    /// issuers emit) is refused with the whole token rather than guessed at.
    #[serde(default)]
    amr: Option<Vec<String>>,
    #[serde(default)]
    jti: Option<String>,
    /// Step-up binding (PROTOCOL.md §19): the one operation the token may
    /// be spent on.
    #[serde(default)]
    mpc_op: Option<String>,
    /// Step-up binding: the one key the token may be spent on.
    #[serde(default)]
    mpc_key_id: Option<String>,
}

/// A string or an array of strings (`aud`).
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
