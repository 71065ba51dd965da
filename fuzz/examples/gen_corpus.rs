//! Writes the seed corpora of the OT-stack fuzz targets from real protocol
//! messages (the fixtures of the `mpc_core_fuzz` crate):
//!
//! ```sh
//! cargo run --release --manifest-path fuzz/Cargo.toml --example gen_corpus [OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fuzz/corpus`; each target gets at most four files
//! under `OUT_DIR/<target>/`, overwriting files of the same name. Rerun it
//! after a protocol change that alters the honest messages, so the raw seeds
//! are valid messages again.

use std::path::{Path, PathBuf};

use mpc_core::hazmat::ot::base::SENDER_MSG_BYTES;
use mpc_core::hazmat::ot::pprf::TREE_MSG_BYTES;
use mpc_core::params::{EXT_ROW_BYTES, LAMBDA_C_BYTES, RVOLE_WIDTH, TREES, XI};
use mpc_core::wire::SCALAR_BYTES;
use mpc_core_fuzz::{
    base_fixture, ext_fixture, rvole_fixture, setup_fixture, tamper_record, used_branch,
    MODE_BASE_RECEIVER, MODE_RAW, MODE_TAMPER,
};

fn write(dir: &Path, target: &str, name: &str, parts: &[&[u8]]) {
    let dir = dir.join(target);
    std::fs::create_dir_all(&dir).expect("create corpus directory");
    let bytes = parts.concat();
    assert!(bytes.len() <= 60 * 1024, "{target}/{name} is too large");
    std::fs::write(dir.join(name), &bytes).expect("write corpus file");
    println!("{target}/{name}: {} bytes", bytes.len());
}

fn main() {
    let dir = std::env::args_os().nth(1).map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("corpus"),
        PathBuf::from,
    );

    // base_ot: valid messages for both sides, and one tamper each (an x
    // coordinate byte of the first point; the sender point's sign).
    let base = base_fixture();
    let sender = MODE_RAW;
    let receiver = MODE_BASE_RECEIVER;
    write(
        &dir,
        "base_ot",
        "sender-valid",
        &[&[sender], &base.receiver_msg],
    );
    write(
        &dir,
        "base_ot",
        "sender-tamper-x",
        &[&[sender | MODE_TAMPER], &tamper_record(32, 0x01)],
    );
    write(
        &dir,
        "base_ot",
        "receiver-valid",
        &[&[receiver], &base.sender_msg],
    );
    write(
        &dir,
        "base_ot",
        "receiver-tamper-sign",
        &[&[receiver | MODE_TAMPER], &tamper_record(0, 0x01)],
    );

    // ot_setup: the honest pair; a tamper of a correction word the evaluator
    // does not use (accepted), of one it uses (rejected), and of B's sign.
    let setup = setup_fixture();
    let split = u8::try_from(SENDER_MSG_BYTES).expect("BotSendMsg fits the split byte");
    write(
        &dir,
        "ot_setup",
        "raw-valid",
        &[&[MODE_RAW, split], &setup.send_msg, &setup.pprf_msg],
    );
    let tree = 7;
    let level = 2;
    let used = used_branch(setup.sender_key.seeds().punctured[tree], level);
    let word = |branch: usize| {
        SENDER_MSG_BYTES + tree * TREE_MSG_BYTES + ((level - 1) * 2 + branch) * LAMBDA_C_BYTES + 5
    };
    write(
        &dir,
        "ot_setup",
        "tamper-unused-correction-word",
        &[&[MODE_TAMPER], &tamper_record(word(1 - used), 0x40)],
    );
    write(
        &dir,
        "ot_setup",
        "tamper-used-correction-word",
        &[&[MODE_TAMPER], &tamper_record(word(used), 0x40)],
    );
    write(
        &dir,
        "ot_setup",
        "tamper-send-sign",
        &[&[MODE_TAMPER], &tamper_record(0, 0x01)],
    );

    // ot_extension: the valid message; a U-block tamper in a tree with
    // punctured index != 0 and one with index 0 (if any); a t_chk tamper.
    let ext = ext_fixture();
    let punctured = setup.sender_key.seeds().punctured;
    let nonzero = punctured.iter().position(|p| *p != 0).unwrap_or(0);
    let zero = punctured.iter().position(|p| *p == 0);
    println!("ot_extension: first tree with punctured index 0: {zero:?}");
    let zero = zero.unwrap_or(TREES - 1);
    write(
        &dir,
        "ot_extension",
        "raw-valid",
        &[&[MODE_RAW], &ext.message],
    );
    write(
        &dir,
        "ot_extension",
        "tamper-u-block",
        &[
            &[MODE_TAMPER],
            &tamper_record(nonzero * EXT_ROW_BYTES + 37, 0x10),
        ],
    );
    write(
        &dir,
        "ot_extension",
        "tamper-u-block-punctured-0",
        &[
            &[MODE_TAMPER],
            &tamper_record(zero * EXT_ROW_BYTES + 37, 0x10),
        ],
    );
    write(
        &dir,
        "ot_extension",
        "tamper-t-chk",
        &[
            &[MODE_TAMPER],
            &tamper_record(TREES * EXT_ROW_BYTES + 16 * 3 + 3, 0x01),
        ],
    );

    // rvole: the valid message; tampers of a_tilde (low byte of a scalar, so
    // it stays canonical), eta and mu.
    let rvole = rvole_fixture();
    let a_tilde_bytes = XI * RVOLE_WIDTH * SCALAR_BYTES;
    write(&dir, "rvole", "raw-valid", &[&[MODE_RAW], &rvole.vole_msg]);
    write(
        &dir,
        "rvole",
        "tamper-a-tilde",
        &[
            &[MODE_TAMPER],
            &tamper_record(100 * RVOLE_WIDTH * SCALAR_BYTES + SCALAR_BYTES - 1, 0x01),
        ],
    );
    write(
        &dir,
        "rvole",
        "tamper-eta",
        &[
            &[MODE_TAMPER],
            &tamper_record(a_tilde_bytes + SCALAR_BYTES - 1, 0x01),
        ],
    );
    write(
        &dir,
        "rvole",
        "tamper-mu",
        &[
            &[MODE_TAMPER],
            &tamper_record(rvole.vole_msg.len() - 1, 0x80),
        ],
    );
}
