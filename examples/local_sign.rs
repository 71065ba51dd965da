//! Runs a two-party key generation in-process, then signs random prehashes.
//!
//! ```sh
//! cargo run --release --example local_sign -- --count 10
//! ```
//!
//! Prints one JSON object per signature on stdout, nothing else:
//! `{"public_key": "<33-byte SEC1 hex>", "prehash": "<32-byte hex>",
//!   "signature": "<64-byte r||s hex>", "recovery_id": <0..3>}`.
//! `--count 0` runs only the key generation.

use std::io::Write;
use std::process::ExitCode;

use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{Dkg, Prehash, Sign};
use rand_core::{OsRng, RngCore};

fn parse_count() -> Result<u64, String> {
    let mut args = std::env::args().skip(1);
    let mut count = 10;
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--count" => {
                let value = args.next().ok_or("--count needs a number")?;
                count = value
                    .parse()
                    .map_err(|_| format!("--count: not a number: {value}"))?;
            }
            "--help" | "-h" => return Err("usage: local_sign [--count N]".into()),
            other => {
                return Err(format!(
                    "unknown argument: {other} (usage: local_sign [--count N])"
                ))
            }
        }
    }
    Ok(count)
}

fn main() -> ExitCode {
    let count = match parse_count() {
        Ok(count) => count,
        Err(message) => {
            eprintln!("{message}");
            return ExitCode::from(2);
        }
    };
    let mut rng = OsRng;
    let (share_a, share_b, _) = match run_pair(
        &mut rng,
        &mut Dkg::new(Role::A, b"local_sign"),
        &mut Dkg::new(Role::B, b"local_sign"),
    ) {
        Ok(result) => result,
        Err(err) => {
            eprintln!("key generation failed: {err}");
            return ExitCode::FAILURE;
        }
    };
    let public_key = hex::encode(share_a.public_key().to_sec1_bytes());
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for _ in 0..count {
        let mut digest = [0u8; 32];
        rng.fill_bytes(&mut digest);
        let prehash = Prehash::from_bytes(digest);
        let mut a = Sign::new(&share_a, prehash);
        let mut b = Sign::new(&share_b, prehash);
        let signed = match run_pair(&mut rng, &mut a, &mut b) {
            Ok((signed, _, _)) => signed,
            Err(err) => {
                eprintln!("signing failed: {err}");
                return ExitCode::FAILURE;
            }
        };
        let line = format!(
            "{{\"public_key\": \"{public_key}\", \"prehash\": \"{}\", \"signature\": \"{}\", \"recovery_id\": {}}}",
            hex::encode(digest),
            hex::encode(signed.signature.to_bytes()),
            signed.recovery_id.to_byte()
        );
        if writeln!(out, "{line}").is_err() {
            return ExitCode::FAILURE;
        }
    }
    ExitCode::SUCCESS
}
