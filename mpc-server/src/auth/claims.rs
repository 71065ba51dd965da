//! Claim checks: the token header, the decoded claims, and the mapping of
//! decoding errors to [`AuthError`].

use jsonwebtoken::errors::ErrorKind;
use serde::{Deserialize, Deserializer};

use super::{AuthError, Authenticator, Claims, JwtAlgorithm, MAX_SUBJECT_LEN};

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
