//! What a command prints: the failure type with its error codes and exit
//! statuses, and the JSON output on stdout or stderr.

use std::borrow::Cow;
use std::ffi::OsString;
use std::io::{self, Write};
use std::process::ExitCode;

use mpc_client::{ClientError, StoreError};
use serde_json::{json, Value};
use zeroize::{Zeroize, Zeroizing};

/// Exit status of a usage or local error.
pub(crate) const EXIT_LOCAL: u8 = 1;
/// Exit status of a server, connection or protocol error.
const EXIT_REMOTE: u8 = 2;

/// A failed command: what is printed on stderr, and the exit status.
#[derive(Debug)]
pub(crate) struct Failure {
    /// Ours, or the `code` of a server's problem response.
    pub(crate) code: Cow<'static, str>,
    pub(crate) message: String,
    pub(crate) exit: u8,
}

impl Failure {
    pub(crate) fn usage(message: impl Into<String>) -> Self {
        Self::local("usage", message)
    }

    pub(crate) fn local(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            exit: EXIT_LOCAL,
        }
    }

    pub(crate) fn remote(code: impl Into<Cow<'static, str>>, message: impl Into<String>) -> Self {
        Self {
            code: code.into(),
            message: message.into(),
            exit: EXIT_REMOTE,
        }
    }
}

/// A library error as a failure: the CLI's error codes (a key the state
/// directory does not hold is checked, and reported as `unknown_key`,
/// before any call that could give a server's `NotFound`). The library's
/// messages hold no token or secret data.
pub(crate) fn client_failure(err: &ClientError) -> Failure {
    let code: Cow<'static, str> = match err {
        ClientError::Network { .. } => "connection".into(),
        ClientError::NotFound { .. } => "server_not_found".into(),
        ClientError::Server { code, .. } if code.starts_with("close_") => "rejected".into(),
        ClientError::Corrupt { .. } => "corrupt_state".into(),
        ClientError::Store(StoreError::InsecurePermissions { .. }) => "insecure_permissions".into(),
        ClientError::Store(_) => "state".into(),
        ClientError::InvalidInput { .. } => "usage".into(),
        other => other.code().to_owned().into(),
    };
    let mut message = err.to_string();
    match err {
        ClientError::StepUpRequired => {
            message = format!(
                "this operation needs a token with a second-factor (step-up) claim: \
                 authenticate again with your second factor and pass the new token \
                 in MPC_TOKEN or --token ({message})"
            );
        }
        ClientError::StepUpTokenUsed => {
            message = format!(
                "this step-up token was already used (each one works once): \
                 authenticate again with your second factor and pass the new token \
                 in MPC_TOKEN or --token ({message})"
            );
        }
        ClientError::ProtocolBan => {
            message = format!("{message}: run refresh before signing again");
        }
        _ => {}
    }
    let local = matches!(
        err,
        ClientError::Store(_)
            | ClientError::Corrupt { .. }
            | ClientError::InvalidInput { .. }
            | ClientError::OtMaterialBurned
            | ClientError::NoPresignatures
    );
    if local {
        Failure::local(code, message)
    } else {
        Failure::remote(code, message)
    }
}

/// The token values this invocation may carry, to keep them out of error
/// messages that quote arguments.
fn token_candidates() -> Vec<String> {
    let mut tokens: Vec<String> = std::env::var("MPC_TOKEN").into_iter().collect();
    let args: Vec<OsString> = std::env::args_os().collect();
    for (i, arg) in args.iter().enumerate() {
        let arg = arg.to_string_lossy();
        if arg == "--token" {
            if let Some(next) = args.get(i + 1) {
                tokens.push(next.to_string_lossy().into_owned());
            }
        } else if let Some(value) = arg.strip_prefix("--token=") {
            tokens.push(value.to_owned());
        }
    }
    tokens.retain(|t| !t.is_empty());
    tokens
}

/// A clap error as one line, without the usage hints and any token.
pub(crate) fn usage_message(err: &clap::Error) -> String {
    let rendered = err.render().to_string();
    let mut message = rendered
        .lines()
        .map(str::trim)
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("Usage:")
                && !line.starts_with("For more information")
        })
        .collect::<Vec<_>>()
        .join(" ");
    if let Some(rest) = message.strip_prefix("error: ") {
        message = rest.to_owned();
    }
    for token in token_candidates() {
        message = message.replace(&token, "<redacted>");
    }
    message
}

/// Counts the bytes written to it.
struct ByteCount(usize);

impl Write for ByteCount {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0 += buf.len();
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Prints `value` and a newline in one write from a buffer of the right
/// size, wiped afterwards: a complete line goes past stdout's buffer, so
/// an exported key leaves no copy behind.
pub(crate) fn print_value(value: &Value) -> io::Result<()> {
    let mut count = ByteCount(0);
    serde_json::to_writer(&mut count, value)?;
    let mut line = Zeroizing::new(Vec::with_capacity(count.0 + 1));
    serde_json::to_writer(&mut *line, value)?;
    line.push(b'\n');
    let mut out = io::stdout().lock();
    out.write_all(&line)?;
    out.flush()
}

/// Zeroizes every string in `value`.
pub(crate) fn wipe_strings(value: &mut Value) {
    match value {
        Value::String(text) => text.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe_strings),
        Value::Object(fields) => fields.values_mut().for_each(wipe_strings),
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

pub(crate) fn print_failure(failure: &Failure) -> ExitCode {
    let line = json!({ "error": failure.code, "message": failure.message });
    let _ = writeln!(io::stderr().lock(), "{line}");
    ExitCode::from(failure.exit)
}
