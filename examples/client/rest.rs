//! Calls of the server's REST API: URLs, JSON requests, and RFC 9457
//! problem responses as failures.

use std::time::Duration;

use serde_json::{Map, Value};

use crate::output::Failure;

/// The most bytes of a REST response that are read.
const MAX_RESPONSE_BYTES: usize = 1 << 20;

/// `<rest>/<path>`, for an http:// or https:// base URL without query or
/// fragment.
pub(crate) fn rest_url(rest: &str, path: &str) -> Result<reqwest::Url, Failure> {
    let bad = |why: &str| Failure::usage(format!("--rest {rest:?}: {why}"));
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

/// A failed HTTP exchange (no response) as a failure, with the causes.
fn http_failure(err: &reqwest::Error) -> Failure {
    let code = if err.is_timeout() {
        "timeout"
    } else {
        "connection"
    };
    let mut message = err.to_string();
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        message = format!("{message}: {cause}");
        source = cause.source();
    }
    Failure::remote(code, message)
}

/// Server-supplied text for a message: one line, printable, bounded, and
/// without the token.
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

/// An error response as a failure: the code of its RFC 9457 problem
/// document, or `http_<status>`.
fn problem_failure(status: reqwest::StatusCode, body: &[u8], token: &str) -> Failure {
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
    let code = problem
        .get("code")
        .and_then(Value::as_str)
        .filter(|code| {
            !code.is_empty()
                && code.len() <= 64
                && code
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_-.".contains(&b))
        })
        .map_or_else(|| format!("http_{}", status.as_u16()), str::to_owned);
    let mut message = format!("the server answered {status}");
    match (text("title"), text("detail")) {
        (Some(title), Some(detail)) => message = format!("{message}: {title}: {detail}"),
        (Some(one), None) | (None, Some(one)) => message = format!("{message}: {one}"),
        (None, None) => {}
    }
    if status == reqwest::StatusCode::FORBIDDEN && code == "step_up_required" {
        message = format!(
            "this operation needs a token with a second-factor (step-up) claim: \
             authenticate again with your second factor and pass the new token \
             in MPC_TOKEN or --token ({message})"
        );
    } else if status == reqwest::StatusCode::FORBIDDEN && code == "step_up_token_used" {
        message = format!(
            "this step-up token was already used (each one works once): \
             authenticate again with your second factor and pass the new token \
             in MPC_TOKEN or --token ({message})"
        );
    }
    Failure::remote(code, message)
}

/// POSTs `body` as JSON with the bearer token; the JSON object of a 200
/// response, or the failure.
pub(crate) async fn post_json(
    url: reqwest::Url,
    token: &str,
    body: &Value,
) -> Result<Value, Failure> {
    let client = reqwest::Client::builder()
        // A redirect is an error: the request carries the token.
        .redirect(reqwest::redirect::Policy::none())
        .connect_timeout(Duration::from_secs(10))
        .timeout(Duration::from_secs(60))
        .build()
        .map_err(|e| Failure::local("http_client", format!("starting the HTTP client: {e}")))?;
    let mut response = client
        .post(url)
        .bearer_auth(token)
        .header(
            reqwest::header::ACCEPT,
            "application/json, application/problem+json",
        )
        .json(body)
        .send()
        .await
        .map_err(|e| http_failure(&e))?;
    let status = response.status();
    let mut bytes = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| http_failure(&e))? {
        if bytes.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Failure::remote(
                "protocol",
                format!("the response ({status}) is larger than {MAX_RESPONSE_BYTES} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    if status != reqwest::StatusCode::OK {
        return Err(problem_failure(status, &bytes, token));
    }
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(value @ Value::Object(_)) => Ok(value),
        _ => Err(Failure::remote(
            "protocol",
            "the server's response is not a JSON object",
        )),
    }
}
