//! Unit tests of the authenticator and the token builder.

use jsonwebtoken::{Algorithm, EncodingKey, Header};

use super::claims::base64url_decode;
use super::*;

const SECRET: &[u8] = b"test-secret-0123456789-abcdefghij-klmnop";
const AUD: &str = "mpc-server";

const ES256_A_PRIV: &[u8] = include_bytes!("../../tests/data/es256_a_private.pem");
const ES256_A_PUB: &[u8] = include_bytes!("../../tests/data/es256_a_public.pem");
const ES256_B_PRIV: &[u8] = include_bytes!("../../tests/data/es256_b_private.pem");
const ES256_B_PUB: &[u8] = include_bytes!("../../tests/data/es256_b_public.pem");
const ED_A_PRIV: &[u8] = include_bytes!("../../tests/data/ed25519_a_private.pem");
const ED_A_PUB: &[u8] = include_bytes!("../../tests/data/ed25519_a_public.pem");
const ED_B_PRIV: &[u8] = include_bytes!("../../tests/data/ed25519_b_private.pem");
const ED_B_PUB: &[u8] = include_bytes!("../../tests/data/ed25519_b_public.pem");
const ES384_PUB: &[u8] = include_bytes!("../../tests/data/es384_public.pem");

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
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
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
        "sub": "a", "aud": AUD, "exp": exp as f64 + 0.5, "amr": ["otp"]
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

// ---- iat, lifetime, amr shape, jti and the step-up checks (issue 12) ----

#[test]
fn issued_in_the_future_is_refused_beyond_the_leeway() {
    let auth = hs_auth();
    let now = unix_now();
    let token = |iat: i64| {
        TokenBuilder::new("alice", AUD)
            .issued_at(iat)
            .expires_at(now + 600)
            .sign_hs256(SECRET)
            .unwrap()
    };
    // Within the 30 s leeway: clock skew.
    assert!(auth.verify_at(&token(now + 30), now).is_ok());
    assert_eq!(
        auth.verify_at(&token(now + 31), now),
        Err(AuthError::IssuedInFuture)
    );
    assert_eq!(
        auth.verify_at(&token(i64::MAX), now),
        Err(AuthError::IssuedInFuture)
    );
}

#[test]
fn lifetime_beyond_the_maximum_is_refused() {
    let now = unix_now();
    let auth = Authenticator::new(AuthConfig {
        max_lifetime_seconds: 3600,
        ..hs_config()
    })
    .unwrap();
    let token = |exp: i64| {
        TokenBuilder::new("alice", AUD)
            .expires_at(exp)
            .sign_hs256(SECRET)
            .unwrap()
    };
    assert!(auth.verify_at(&token(now + 3600 + 30), now).is_ok());
    assert_eq!(
        auth.verify_at(&token(now + 3600 + 31), now),
        Err(AuthError::LifetimeTooLong)
    );
    assert_eq!(
        auth.verify_at(&token(i64::MAX), now),
        Err(AuthError::LifetimeTooLong)
    );
    // The default is one day.
    assert_eq!(
        hs_auth().verify_at(
            &token(now + DEFAULT_MAX_TOKEN_LIFETIME_SECONDS as i64 + 31),
            now
        ),
        Err(AuthError::LifetimeTooLong)
    );
    assert!(hs_auth()
        .verify_at(&token(now + DEFAULT_MAX_TOKEN_LIFETIME_SECONDS as i64), now)
        .is_ok());
}

#[test]
fn amr_must_be_an_array_of_strings() {
    let exp = unix_now() + 60;
    for amr in [
        serde_json::json!("otp"),
        serde_json::json!("otp mfa"),
        serde_json::json!([1]),
        serde_json::json!({"otp": true}),
        serde_json::json!(true),
    ] {
        let token = sign_json(&serde_json::json!({
            "sub": "a", "aud": AUD, "exp": exp, "amr": amr, "auth_time": exp - 60, "jti": "j"
        }));
        assert_eq!(hs_auth().verify(&token), Err(AuthError::Malformed), "{amr}");
    }
    let token = sign_json(&serde_json::json!({
        "sub": "a", "aud": AUD, "exp": exp, "amr": ["pwd", "otp"]
    }));
    assert_eq!(hs_auth().verify(&token).unwrap().amr, ["pwd", "otp"]);
}

#[test]
fn jti_and_binding_claims_must_be_clean_strings() {
    let exp = unix_now() + 60;
    for (name, value) in [
        ("jti", serde_json::json!("")),
        ("jti", serde_json::json!("a\nb")),
        ("jti", serde_json::json!("x".repeat(MAX_TOKEN_ID_LEN + 1))),
        ("jti", serde_json::json!(7)),
        ("mpc_op", serde_json::json!(["export"])),
        ("mpc_op", serde_json::json!("")),
        ("mpc_key_id", serde_json::json!("\u{0}")),
    ] {
        let mut claims = serde_json::json!({"sub": "a", "aud": AUD, "exp": exp});
        claims[name] = value.clone();
        assert_eq!(
            hs_auth().verify(&sign_json(&claims)),
            Err(AuthError::Malformed),
            "{name}: {value}"
        );
    }
    let token = TokenBuilder::new("a", AUD)
        .token_id("x".repeat(MAX_TOKEN_ID_LEN))
        .step_up_operation("export")
        .step_up_key_id("ab".repeat(32))
        .sign_hs256(SECRET)
        .unwrap();
    let claims = hs_auth().verify(&token).unwrap();
    assert_eq!(claims.step_up_operation.as_deref(), Some("export"));
    assert_eq!(claims.step_up_key_id, Some("ab".repeat(32)));
}
