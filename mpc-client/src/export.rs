//! Export (PROTOCOL.md §16) over the server's REST API, and the REST
//! plumbing: URLs and RFC 9457 problem responses as typed errors.

use std::time::Duration;

use mpc_core::export::{import_export, ExportCiphertext};
use mpc_core::KeyId;
use rand_core::OsRng;
use serde_json::{json, Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::error::ClientError;
use crate::layout::key_id_arg;
use crate::wallet::{compressed, ExportedKey, Wallet};

/// The most bytes of a REST response that are read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// `<rest>/<path>` for an http(s) base URL without query or fragment.
fn rest_url(rest: &str, path: &str) -> Result<reqwest::Url, ClientError> {
    let bad = |why: &str| ClientError::invalid(format!("REST URL: {why}"));
    let base = reqwest::Url::parse(rest).map_err(|e| bad(&e.to_string()))?;
    if !matches!(base.scheme(), "http" | "https") {
        return Err(bad("must be an http:// or https:// URL"));
    }
    if base.query().is_some() || base.fragment().is_some() {
        return Err(bad("must not have a query or fragment"));
    }
    let joined = format!("{}/{path}", base.as_str().trim_end_matches('/'));
    reqwest::Url::parse(&joined).map_err(|e| bad(&e.to_string()))
}

/// A failed HTTP exchange (no response), with its causes.
fn http_error(err: &reqwest::Error) -> ClientError {
    if err.is_timeout() {
        return ClientError::Timeout;
    }
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    ClientError::Network { message }
}

/// Server text for a message: one line, printable, bounded, without the
/// token.
fn server_text(text: &str, token: &str) -> String {
    let mut clean: String = text
        .chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .take(300)
        .collect();
    if !token.is_empty() {
        clean = clean.replace(token, "<redacted>");
    }
    clean
}

/// An error response as a typed error.
fn problem_error(
    status: reqwest::StatusCode,
    retry_after_header: Option<u64>,
    body: &[u8],
    token: &str,
) -> ClientError {
    let problem = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(problem)) => problem,
        _ => Map::new(),
    };
    let text = |field: &str| {
        problem
            .get(field)
            .and_then(Value::as_str)
            .map(|t| server_text(t, token))
            .filter(|t| !t.trim().is_empty())
    };
    let code = problem.get("code").and_then(Value::as_str).filter(|code| {
        !code.is_empty()
            && code.len() <= 64
            && code
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
    });
    let mut message = format!("the server answered {status}");
    match (text("title"), text("detail")) {
        (Some(title), Some(detail)) => message = format!("{message}: {title}: {detail}"),
        (Some(one), None) | (None, Some(one)) => message = format!("{message}: {one}"),
        (None, None) => {}
    }
    let retry_after = retry_after_header.or_else(|| problem.get("retry_after")?.as_u64());
    ClientError::from_problem(status.as_u16(), code, message, retry_after)
}

/// POSTs `body` as JSON with the bearer `token`; the JSON object of a 200
/// response, or the typed error.
pub(crate) async fn post_json(
    url: reqwest::Url,
    token: &str,
    body: &Value,
) -> Result<Value, ClientError> {
    let client = reqwest::Client::builder()
        // A redirect is an error: the request carries the token.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| ClientError::Network {
            message: format!("starting the HTTP client: {e}"),
        })?;
    let body = serde_json::to_vec(body).map_err(|e| ClientError::invalid(e.to_string()))?;
    let mut response = client
        .post(url)
        .bearer_auth(token)
        .header(
            reqwest::header::ACCEPT,
            "application/json, application/problem+json",
        )
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| http_error(&e))?;
    let status = response.status();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok());
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http_error(&e))? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(ClientError::protocol(format!(
                "the response ({status}) is larger than {MAX_RESPONSE_BYTES} bytes"
            )));
        }
        bytes.extend_from_slice(&chunk);
    }
    if status != reqwest::StatusCode::OK {
        return Err(problem_error(status, retry_after, &bytes, token));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(ClientError::protocol(
            "the server's response is not a JSON object",
        )),
    }
}

/// The ciphertext of an export response, checked to be for `key_id` at
/// `epoch`.
fn export_ciphertext(
    response: &Value,
    key_id: &KeyId,
    epoch: u64,
) -> Result<ExportCiphertext, ClientError> {
    let bad = |why: String| ClientError::protocol(format!("export response: {why}"));
    let field = |name: &str| {
        response[name]
            .as_str()
            .ok_or_else(|| bad(format!("no string {name:?}")))
    };
    let answered_key = field("key_id")?;
    if mpc_api::parse_key_id(answered_key).as_ref() != Some(key_id) {
        return Err(bad(format!("it is for key {answered_key:?}, not {key_id}")));
    }
    match response["epoch"].as_u64() {
        Some(answered) if answered == epoch => {}
        Some(answered) => return Err(bad(format!("it is for epoch {answered}, not {epoch}"))),
        None => return Err(bad("no number \"epoch\"".to_owned())),
    }
    let bytes = hex::decode(field("ciphertext")?)
        .map_err(|_| bad("\"ciphertext\" is not hex".to_owned()))?;
    ExportCiphertext::from_bytes(&bytes)
        .map_err(|e| bad(format!("\"ciphertext\" does not decode: {}", e.as_str())))
}

impl Wallet {
    /// Exports the full private key of `key_id` (PROTOCOL.md §16): a
    /// one-time key pair is made, the server encrypts its share of the
    /// wallet's epoch to it (`POST <rest>/v1/keys/<key_id>/export` with
    /// `step_up_token`, which the server spends), and the key is returned
    /// only if `x*G` is the key's public key. The one-time secret is never
    /// stored. Redirects are not followed.
    ///
    /// # Errors
    ///
    /// [`ClientError::StepUpRequired`], [`ClientError::StepUpTokenUsed`],
    /// [`ClientError::NotFound`], [`ClientError::UnknownEpoch`], other
    /// server problems; [`ClientError::ExportInvalid`] if the answer does
    /// not decrypt to this key.
    pub async fn export(
        &self,
        key_id: &str,
        step_up_token: &str,
    ) -> Result<ExportedKey, ClientError> {
        let key_id = key_id_arg(key_id)?;
        let url = rest_url(&self.rest_url, &format!("v1/keys/{key_id}/export"))?;
        let share = self.current_share(&key_id)?;
        // Zeroized on drop.
        let onetime = k256::SecretKey::random(&mut OsRng);
        let request = json!({
            "onetime_public_key": hex::encode(compressed(&onetime.public_key())),
            "epoch": share.epoch(),
        });
        let response = post_json(url, step_up_token, &request).await?;
        let ciphertext = export_ciphertext(&response, &key_id, share.epoch())?;
        let exported = import_export(&share, &onetime, &ciphertext).map_err(|e| {
            let code = match e {
                mpc_core::Error::KeyMismatch => "key_mismatch",
                mpc_core::Error::ExportFailed => "export_failed",
                _ => "export_mismatch",
            };
            ClientError::ExportInvalid { code: code.into() }
        })?;
        drop(onetime);
        // import_export checked x*G; checked again where the key is taken.
        if exported.public_key() != share.public_key() {
            return Err(ClientError::ExportInvalid {
                code: "export_mismatch".into(),
            });
        }
        let mut bytes: [u8; 32] = exported.to_bytes().into();
        let secret_key = Zeroizing::new(bytes);
        bytes.zeroize();
        Ok(ExportedKey {
            secret_key,
            public_key: compressed(&exported.public_key()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn problems_map_to_typed_errors() {
        let problem = |status: u16, body: &str, header: Option<u64>| {
            problem_error(
                reqwest::StatusCode::from_u16(status).unwrap(),
                header,
                body.as_bytes(),
                "tok-secret",
            )
        };
        assert_eq!(
            problem(403, r#"{"code":"step_up_required"}"#, None),
            ClientError::StepUpRequired
        );
        assert_eq!(
            problem(403, r#"{"code":"step_up_token_used"}"#, None),
            ClientError::StepUpTokenUsed
        );
        assert_eq!(
            problem(429, r#"{"code":"rate_limited","retry_after":7}"#, None),
            ClientError::RateLimited {
                retry_after_secs: Some(7)
            }
        );
        assert_eq!(
            problem(429, "busy", Some(3)),
            ClientError::RateLimited {
                retry_after_secs: Some(3)
            }
        );
        assert_eq!(
            problem(409, r#"{"code":"key_revoked"}"#, None),
            ClientError::Revoked
        );
        assert_eq!(problem(401, "", None), ClientError::Unauthorized);
        // A code that is not a code, and the token echoed in a detail.
        match problem(500, r#"{"code":"a b","detail":"saw tok-secret"}"#, None) {
            ClientError::Server { code, message } => {
                assert_eq!(code, "http_500");
                assert!(!message.contains("tok-secret"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn rest_urls_are_checked() {
        assert_eq!(
            rest_url("http://127.0.0.1:1/", "v1/x").unwrap().as_str(),
            "http://127.0.0.1:1/v1/x"
        );
        assert!(rest_url("ftp://127.0.0.1:1", "v1/x").is_err());
        assert!(rest_url("http://h/?q=1", "v1/x").is_err());
    }
}
