//! The `mpc-server` binary. Not implemented yet: it says so and exits with
//! status 2 rather than pretend to serve.
#![forbid(unsafe_code)]

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!(
        "mpc-server {}: the server is not implemented yet \
         (no WebSocket listener, no REST API); exiting.",
        env!("CARGO_PKG_VERSION")
    );
    ExitCode::from(2)
}
