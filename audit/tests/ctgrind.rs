//! The ctgrind harness (PROTOCOL.md §10): each case runs this test binary
//! again under `valgrind --error-exitcode=1 --track-origins=yes` with its
//! secrets marked undefined; memcheck then fails the run on any branch or
//! memory index that depends on them. Messages are marked public when they
//! are "sent", as they are on the wire.
//!
//! The negative controls (a branch on a secret byte, a table lookup indexed
//! by one) must fail the same way; the real cases must pass. Accepted
//! reports are listed, each with its reason, in `audit/ctgrind.supp`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::VecDeque;
use std::path::Path;
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use k256::Scalar;
use mpc_audit::record::ShareSecrets;
use mpc_audit::valgrind::{mark_public, mark_secret, running_on_valgrind};
use mpc_audit::{leaky, SecretRng};
use mpc_core::hazmat::ot::extension::{self, CHOICE_BYTES};
use mpc_core::hazmat::ot::setup::{receiver_setup, OtReceiverKey, OtSenderKey, SenderSetup};
use mpc_core::hazmat::{gf128, prg, vole};
use mpc_core::params::CHECK_BLOCKS;
use mpc_core::wire::Role;
use mpc_core::{Dkg, KeyShare, Prehash, Protocol, Refresh, Sign, Step};
use rand_chacha::rand_core::{RngCore, SeedableRng};
use rand_chacha::ChaCha20Rng;

/// Environment variable naming the case the child runs.
const CASE_VAR: &str = "MPC_CTGRIND_CASE";
/// Environment variable carrying the DKG's shares to the child.
const SHARES_VAR: &str = "MPC_CTGRIND_SHARES";
/// Printed by the child after its case returned, so that a pass is never a
/// case that did not run and a failure is never a panic.
const DONE: &str = "ctgrind case finished:";

/// Memcheck's reports for the two kinds of leak.
const BRANCH_REPORT: &str = "Conditional jump or move depends on uninitialised value";
const INDEX_REPORT: &str = "Use of uninitialised value of size";

/// The cases that must pass, with what each covers.
const REAL_CASES: &[&str] = &[
    // POLYVAL check hash (§5.3): secret blocks and challenge.
    "gf128",
    // AES-CTR PRG (§2.3) under a secret key.
    "prg",
    // Base OT (§4, both roles, the comb-table a[t]*B) and the GGM trees
    // (§5: build, evaluate with the secret punctured path): one direction's
    // whole setup with every random byte secret.
    "ot-setup",
    // SoftSpokenOT extension (§6) with secret seeds, Delta and choice bits.
    "ot-extension",
    // RVOLE (§7) with secret inputs, choice bits and OT material.
    "vole",
    // Key share decoding and encoding (§13.5) with x_i, Delta and the seeds
    // secret.
    "keyshare-load",
    // Signing (§14) and refresh (§18) from shares whose x_i and OT seeds
    // are secret.
    "sign",
    "refresh",
    // Export (§16): the share's x_i encrypted to a one-time key, with a
    // secret ephemeral scalar.
    "export",
];

/// The negative controls, each with the report it must produce and the
/// function the report's first frames must name.
const LEAKY_CASES: &[(&str, &str, &str)] = &[
    ("leaky-branch", BRANCH_REPORT, "leaky::branch_on_secret"),
    ("leaky-index", INDEX_REPORT, "leaky::index_by_secret"),
    // The share cases' marking reaches the loaded share: a branch on its
    // re-encoding (x_i, Delta, seeds) is seen.
    ("leaky-share", BRANCH_REPORT, "leaky::branch_on_secret"),
];

/// The child: runs the case named in the environment, under valgrind.
#[test]
#[ignore = "runs only as the ctgrind child, under valgrind"]
fn ctgrind_child() {
    let case = std::env::var(CASE_VAR).expect("the parent names the case");
    assert!(
        running_on_valgrind(),
        "the ctgrind child must run under valgrind"
    );
    run_case(&case);
    println!("{DONE} {case}");
}

#[test]
// Not in the test profile: its debug assertions and overflow checks branch
// on secret values in code that does not ship. scripts/test.sh runs these in
// the `ctgrind` profile (release code generation).
#[cfg_attr(
    debug_assertions,
    ignore = "release code generation only: cargo test -p mpc-audit --profile ctgrind --test ctgrind"
)]
fn secret_dependent_branches_and_indices_are_caught() {
    // Negative controls: the harness must see each kind of leak.
    for (case, report, function) in LEAKY_CASES {
        let run = under_valgrind(case);
        assert!(run.finished, "{case} did not run to its end:\n{}", run.log);
        assert_eq!(run.code, Some(1), "{case} was not flagged:\n{}", run.log);
        // The report is about the leaky function, not something else.
        let at_function = run
            .log
            .split(report)
            .skip(1)
            .any(|rest| rest.lines().take(5).any(|frame| frame.contains(function)));
        assert!(
            at_function,
            "{case}: no `{report}` in {function}:\n{}",
            run.log
        );
    }
}

#[test]
// Not in the test profile: its debug assertions and overflow checks branch
// on secret values in code that does not ship. scripts/test.sh runs these in
// the `ctgrind` profile (release code generation).
#[cfg_attr(
    debug_assertions,
    ignore = "release code generation only: cargo test -p mpc-audit --profile ctgrind --test ctgrind"
)]
fn mpc_core_has_no_secret_dependent_branch_or_index() {
    // Two valgrind processes at a time (one per core).
    let next = AtomicUsize::new(0);
    let runs = Mutex::new(Vec::new());
    std::thread::scope(|scope| {
        for _ in 0..2 {
            scope.spawn(|| {
                while let Some(case) = REAL_CASES.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let run = under_valgrind(case);
                    runs.lock().unwrap().push((*case, run));
                }
            });
        }
    });
    let runs = runs.into_inner().unwrap();
    assert_eq!(runs.len(), REAL_CASES.len());
    for (case, run) in runs {
        assert!(run.finished, "{case} did not run to its end:\n{}", run.log);
        assert_eq!(
            run.code,
            Some(0),
            "{case}: secret-dependent branch or index:\n{}",
            run.log
        );
    }
}

struct Run {
    code: Option<i32>,
    finished: bool,
    log: String,
}

fn under_valgrind(case: &str) -> Run {
    let valgrind = which_valgrind();
    let exe = std::env::current_exe().unwrap();
    let suppressions = Path::new(env!("CARGO_MANIFEST_DIR")).join("ctgrind.supp");
    let started = Instant::now();
    let output = Command::new(valgrind)
        .arg("--tool=memcheck")
        .arg("--error-exitcode=1")
        .arg("--track-origins=yes")
        .arg("--leak-check=no")
        .arg("--read-inline-info=yes")
        // Deep enough for the suppressions' frames below inlined code.
        .arg("--num-callers=40")
        .arg(format!("--suppressions={}", suppressions.display()))
        .arg(&exe)
        .args([
            "--exact",
            "ctgrind_child",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CASE_VAR, case)
        .env(SHARES_VAR, encoded_shares())
        .output()
        .expect("valgrind runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    eprintln!("ctgrind {case}: {:.1?}", started.elapsed());
    Run {
        code: output.status.code(),
        finished: stdout.contains(&format!("{DONE} {case}")),
        log: format!("{stdout}\n{stderr}"),
    }
}

/// Valgrind must be there: a harness that skips when it is missing would
/// pass without checking anything (scripts/test.sh installs it).
fn which_valgrind() -> &'static str {
    let found = Command::new("valgrind")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "valgrind is not installed: `apt-get install -y valgrind` (scripts/test.sh does)"
    );
    "valgrind"
}

fn run_case(case: &str) {
    match case {
        "leaky-branch" => {
            let secret = secret_bytes::<32>(1);
            std::hint::black_box(leaky::branch_on_secret(&secret));
        }
        "leaky-index" => {
            let secret = secret_bytes::<32>(2);
            std::hint::black_box(leaky::index_by_secret(&secret));
        }
        "leaky-share" => {
            let (a, _) = secret_shares();
            std::hint::black_box(leaky::branch_on_secret(&a.to_bytes()));
        }
        "gf128" => {
            let challenge = secret_bytes::<16>(3);
            let blocks: [[u8; 16]; CHECK_BLOCKS + 1] =
                core::array::from_fn(|i| secret_bytes::<16>(10 + i as u64));
            let hash = gf128::check_hash(&challenge, &blocks);
            std::hint::black_box(gf128::xor16(&hash, &blocks[0]));
        }
        "prg" => {
            let key = secret_bytes::<16>(4);
            let mut out = [0u8; 1000];
            prg::fill(&key, &[7u8; 16], &mut out);
            std::hint::black_box(&out);
        }
        "ot-setup" => {
            let _ = ot_setup(&mut SecretRng::new(5));
        }
        "ot-extension" => {
            let (sender, receiver) = secret_ot_keys(6);
            let mut rng = SecretRng::new(7);
            let mut choices = [0u8; CHOICE_BYTES];
            rng.fill_bytes(&mut choices);
            let sid = [8u8; 32];
            let (message, received) =
                extension::receive(&mut rng, receiver.seeds(), &sid, &choices);
            mark_public(&message[..]);
            let sent = extension::send(sender.seeds(), &sid, &message).unwrap();
            std::hint::black_box((&sent.outputs[0], &received.outputs[0]));
        }
        "vole" => {
            let (sender, receiver) = secret_ot_keys(9);
            let mut rng = SecretRng::new(10);
            let sid = [11u8; 32];
            let inputs = [secret_scalar(&mut rng), secret_scalar(&mut rng)];
            let (start, message) = vole::RvoleReceiver::start(&mut rng, &receiver, &sid);
            mark_public(&message[..]);
            let (sent, reply) = vole::send(&mut rng, &sender, &sid, &message, &inputs).unwrap();
            mark_public(&reply[..]);
            let received = start.finish(&receiver, &reply).unwrap();
            std::hint::black_box((&sent.c, &received.d));
        }
        "keyshare-load" => {
            // Decoding (in secret_shares), then encoding again.
            let (a, _) = secret_shares();
            std::hint::black_box(a.to_bytes());
        }
        "sign" => {
            let (a, b) = secret_shares();
            let prehash = Prehash::sha256(b"ctgrind");
            // Public randomness: the session nonces drawn from it are sent.
            // The shares' x_i and OT seeds are the secrets here; the RVOLE
            // case covers secret randomness (choice bits, chi, a_hat).
            let mut rng = ChaCha20Rng::seed_from_u64(14);
            let (sig_a, _) = drive(&mut rng, Sign::new(&a, prehash), Sign::new(&b, prehash));
            std::hint::black_box(sig_a.signature);
        }
        "refresh" => {
            let (a, b) = secret_shares();
            let mut rng = ChaCha20Rng::seed_from_u64(16);
            let (new_a, new_b) = drive(
                &mut rng,
                Refresh::new(&a, b"ctgrind"),
                Refresh::new(&b, b"ctgrind"),
            );
            std::hint::black_box((new_a.epoch(), new_b.epoch()));
        }
        "export" => {
            let (a, _) = secret_shares();
            let onetime = k256::SecretKey::from_slice(&[0x11; 32])
                .unwrap()
                .public_key();
            let mut rng = SecretRng::new(18);
            let exported = mpc_core::export::export_share(&mut rng, &a, &onetime).unwrap();
            std::hint::black_box(exported.to_bytes());
        }
        other => panic!("no ctgrind case {other}"),
    }
}

/// `N` bytes from a seeded generator, marked secret.
fn secret_bytes<const N: usize>(seed: u64) -> [u8; N] {
    let mut bytes = [0u8; N];
    SecretRng::new(seed).fill_bytes(&mut bytes);
    bytes
}

fn secret_scalar(rng: &mut SecretRng) -> Scalar {
    // Wide reduction of secret bytes (k256's `Scalar::random` is rejection
    // sampling, which branches on its candidates by design).
    let mut wide = [0u8; 64];
    rng.fill_bytes(&mut wide);
    mpc_core::transcript::reduce_wide(&wide)
}

fn ot_setup(rng: &mut impl rand_core::CryptoRngCore) -> (OtSenderKey, OtReceiverKey) {
    let sid = [1u8; 32];
    let (sender, recv_msg) = SenderSetup::start(rng, &sid);
    mark_public(&recv_msg[..]);
    let (receiver, send_msg, pprf_msg) = receiver_setup(rng, &sid, &recv_msg).unwrap();
    mark_public(&send_msg[..]);
    mark_public(&pprf_msg[..]);
    (sender.finish(&send_msg, &pprf_msg).unwrap(), receiver)
}

/// One direction's OT keys, set up in the clear (quickly), then with the
/// seeds and punctured indices marked secret.
fn secret_ot_keys(seed: u64) -> (OtSenderKey, OtReceiverKey) {
    let (sender, receiver) = ot_setup(&mut ChaCha20Rng::seed_from_u64(seed));
    mark_secret(&sender.seeds().punctured);
    mark_secret(&sender.seeds().seeds[..]);
    mark_secret(&receiver.seeds().seeds[..]);
    (sender, receiver)
}

/// Both shares of a DKG the parent ran natively (a DKG under valgrind costs
/// more than most cases), encoded as `hex(A).hex(B)` for the child.
fn encoded_shares() -> &'static str {
    static SHARES: OnceLock<String> = OnceLock::new();
    SHARES.get_or_init(|| {
        let mut rng = ChaCha20Rng::seed_from_u64(12);
        let (a, b) = drive(
            &mut rng,
            Dkg::new(Role::A, b"ctgrind"),
            Dkg::new(Role::B, b"ctgrind"),
        );
        let hex = |share: KeyShare| -> String {
            share
                .to_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect()
        };
        format!("{}.{}", hex(a), hex(b))
    })
}

/// The parent's shares, each loaded from an encoding whose secret bytes
/// (x_i, the punctured indices, the seeds) are marked secret: the load itself
/// is checked, and the shares carry secret memory.
fn secret_shares() -> (KeyShare, KeyShare) {
    let encoded = std::env::var(SHARES_VAR).expect("the parent passes the shares");
    let load = |hex: &str| {
        let bytes: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let record = ShareSecrets::read(&bytes).unwrap();
        for range in record.secret_ranges() {
            mark_secret(&bytes[range]);
        }
        drop(record);
        KeyShare::from_bytes(&bytes).unwrap()
    };
    let (a, b) = encoded.split_once('.').unwrap();
    (load(a), load(b))
}

/// `mpc_core::local::run_pair`, but every message is marked public as it
/// goes on the wire.
fn drive<A: Protocol, B: Protocol>(
    rng: &mut impl rand_core::CryptoRngCore,
    mut a: A,
    mut b: B,
) -> (A::Output, B::Output) {
    let sent = |message: Vec<u8>| {
        mark_public(&message[..]);
        message
    };
    let mut to_b = VecDeque::from([sent(a.start(rng).unwrap())]);
    let mut to_a = VecDeque::from([sent(b.start(rng).unwrap())]);
    let (mut out_a, mut out_b) = (None, None);
    while out_a.is_none() || out_b.is_none() {
        let mut progressed = false;
        if let Some(message) = to_b.pop_front() {
            progressed = true;
            match b.handle(rng, &message).unwrap() {
                Step::Send(next) => to_a.push_back(sent(next)),
                Step::Finished(output) => out_b = Some(output),
            }
        }
        if let Some(message) = to_a.pop_front() {
            progressed = true;
            match a.handle(rng, &message).unwrap() {
                Step::Send(next) => to_b.push_back(sent(next)),
                Step::Finished(output) => out_a = Some(output),
            }
        }
        assert!(progressed, "stalled");
    }
    (out_a.unwrap(), out_b.unwrap())
}
