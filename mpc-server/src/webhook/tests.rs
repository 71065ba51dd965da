//! Unit tests of signing, verification, backoff and the configuration.
use super::deliver::{backoff, random_jitter};
use super::*;

const SECRET: &[u8] = b"a webhook secret of some length!";
const BODY: &[u8] = br#"{"id":"00112233445566778899aabbccddeeff","type":"key.created"}"#;
const TOLERANCE: Duration = Duration::from_secs(300);

#[test]
fn sign_is_hmac_sha256_of_timestamp_dot_body() {
    let header = sign(SECRET, 1_700_000_000, BODY);
    let hex_tag = header.strip_prefix("v1=").unwrap();
    assert_eq!(hex_tag.len(), 64);
    let mut mac = HmacSha256::new_from_slice(SECRET).unwrap();
    mac.update(b"1700000000.");
    mac.update(BODY);
    assert_eq!(hex_tag, hex::encode(mac.finalize().into_bytes()));
    // Deterministic.
    assert_eq!(header, sign(SECRET, 1_700_000_000, BODY));
}

#[test]
fn verify_accepts_a_fresh_valid_signature() {
    let ts = 1_700_000_000;
    let header = sign(SECRET, ts, BODY);
    assert!(verify(SECRET, &header, ts, BODY, ts, TOLERANCE));
    assert!(verify(SECRET, &header, ts, BODY, ts + 300, TOLERANCE));
    assert!(verify(SECRET, &header, ts, BODY, ts - 300, TOLERANCE));
    // One of several listed signatures is enough.
    let several = format!("v1=00ff, {header}");
    assert!(verify(SECRET, &several, ts, BODY, ts, TOLERANCE));
}

#[test]
fn verify_rejects_wrong_secret_timestamp_body_or_header() {
    let ts = 1_700_000_000;
    let header = sign(SECRET, ts, BODY);
    assert!(!verify(b"another secret", &header, ts, BODY, ts, TOLERANCE));
    // The signed timestamp is not the one claimed.
    assert!(!verify(SECRET, &header, ts + 1, BODY, ts, TOLERANCE));
    // Body changed by one byte, or truncated.
    let mut body = BODY.to_vec();
    body[10] ^= 1;
    assert!(!verify(SECRET, &header, ts, &body, ts, TOLERANCE));
    assert!(!verify(
        SECRET,
        &header,
        ts,
        &BODY[..BODY.len() - 1],
        ts,
        TOLERANCE
    ));
    // Too old or too far in the future.
    assert!(!verify(SECRET, &header, ts, BODY, ts + 301, TOLERANCE));
    assert!(!verify(SECRET, &header, ts, BODY, ts - 301, TOLERANCE));
    // Malformed headers.
    let bare = header.strip_prefix("v1=").unwrap();
    assert!(!verify(SECRET, bare, ts, BODY, ts, TOLERANCE));
    assert!(!verify(
        SECRET,
        &format!("v0={bare}"),
        ts,
        BODY,
        ts,
        TOLERANCE
    ));
    assert!(!verify(
        SECRET,
        &header[..header.len() - 2],
        ts,
        BODY,
        ts,
        TOLERANCE
    ));
    assert!(!verify(SECRET, "v1=zz", ts, BODY, ts, TOLERANCE));
    assert!(!verify(SECRET, "", ts, BODY, ts, TOLERANCE));
}

#[test]
fn backoff_doubles_and_is_capped() {
    let base = Duration::from_secs(1);
    let max = Duration::from_secs(300);
    let middle = u32::MAX / 2;
    let close = |a: Duration, b: Duration| a.abs_diff(b) <= Duration::from_millis(1);
    assert!(close(backoff(base, max, 0, middle), base));
    assert!(close(backoff(base, max, 1, middle), 2 * base));
    assert!(close(backoff(base, max, 5, middle), 32 * base));
    assert!(close(backoff(base, max, 8, middle), 256 * base));
    assert!(close(backoff(base, max, 9, middle), max));
    for attempts in [9, 31, 32, 63, 1000, u32::MAX] {
        assert!(backoff(base, max, attempts, u32::MAX) <= max);
        assert!(close(backoff(base, max, attempts, middle), max));
    }
    // A base of zero stays zero; a huge base is capped.
    assert_eq!(backoff(Duration::ZERO, max, 3, middle), Duration::ZERO);
    assert_eq!(backoff(Duration::MAX, max, 3, 0), max.mul_f64(0.8));
}

#[test]
fn backoff_jitter_stays_within_20_percent() {
    let base = Duration::from_millis(20);
    let max = Duration::from_secs(300);
    for attempts in 0..12 {
        let nominal = (base * (1 << attempts)).min(max);
        let low = backoff(base, max, attempts, 0);
        let high = backoff(base, max, attempts, u32::MAX);
        assert_eq!(low, nominal.mul_f64(0.8));
        assert_eq!(high, nominal.mul_f64(1.2).min(max));
        for _ in 0..100 {
            let delay = backoff(base, max, attempts, random_jitter());
            assert!(low <= delay && delay <= high, "{delay:?} for {attempts}");
        }
    }
}

#[test]
fn config_defaults_validation_and_redacted_debug() {
    let config = WebhookConfig::new("https://user:pw@hooks.example:8443/p?token=t", b"s3cr3t");
    assert_eq!(config.retry_base, Duration::from_secs(1));
    assert_eq!(config.retry_max, Duration::from_secs(300));
    assert_eq!(config.poll_interval, Duration::from_secs(1));
    assert_eq!(config.request_timeout, Duration::from_secs(10));
    assert_eq!(config.concurrency, 16);
    assert_eq!(config.lease_margin, Duration::from_secs(15));
    assert!(config.validate().is_ok());
    let debug = format!("{config:?}");
    assert!(debug.contains("https://hooks.example:8443"), "{debug}");
    for secret in ["s3cr3t", "pw", "token", "user", "/p"] {
        assert!(!debug.contains(secret), "{debug}");
    }

    for url in [
        "ftp://hooks.example/",
        "hooks.example/x",
        "",
        "file:///tmp/x",
    ] {
        let config = WebhookConfig::new(url, b"s".to_vec());
        assert!(
            matches!(config.validate(), Err(WebhookError::InvalidUrl(_))),
            "{url}"
        );
    }
    let config = WebhookConfig::new("http://127.0.0.1:9/", Vec::new());
    assert!(matches!(config.validate(), Err(WebhookError::EmptySecret)));
}
