//! Writes the seed corpora of the fuzz targets from real protocol runs (the
//! fixtures of the `mpc_core_fuzz` crate):
//!
//! ```sh
//! cargo run --release --manifest-path fuzz/Cargo.toml --example gen_corpus [OUT_DIR]
//! ```
//!
//! `OUT_DIR` defaults to `fuzz/corpus`; each target gets a few dozen files at
//! most under `OUT_DIR/<target>/`, overwriting files of the same name. Rerun
//! it after a protocol change that alters the honest messages, so the seeds
//! are valid messages again. (`envelope_decode`'s three seeds are hand-made
//! and not written here.)

use std::path::{Path, PathBuf};

use mpc_core::backup::BACKUP_BYTES;
use mpc_core::derive::DerivationPath;
use mpc_core::hazmat::ot::base::SENDER_MSG_BYTES;
use mpc_core::hazmat::ot::pprf::TREE_MSG_BYTES;
use mpc_core::params::{EXT_ROW_BYTES, LAMBDA_C_BYTES, RVOLE_WIDTH, TREES, XI};
use mpc_core::wire::Role;
use mpc_core::wire::SCALAR_BYTES;
use mpc_core::{AbortClass, Error, KeyId, KeyShare, Prehash, Step};
use mpc_core_fuzz::protocols::{
    backup_fixture, envelope_of, key, transcript, Case, Kind, Mode, Party,
};
use mpc_core_fuzz::{
    base_fixture, ext_fixture, rvole_fixture, setup_fixture, tamper_record, used_branch,
    MODE_BASE_RECEIVER, MODE_RAW, MODE_TAMPER,
};
use mpc_transport_ws::opening::{encode_frame, FrameKind};
use mpc_transport_ws::{CloseCode, Opening, Operation, Outcome, SessionHandle};

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
    ot_stack(&dir);
    keyshare_decode(&dir);
    protocol_rounds(&dir);
    backup_verify(&dir);
    ws_opening(&dir);
}

fn ot_stack(dir: &Path) {
    // base_ot: valid messages for both sides, and one tamper each (an x
    // coordinate byte of the first point; the sender point's sign).
    let base = base_fixture();
    let sender = MODE_RAW;
    let receiver = MODE_BASE_RECEIVER;
    write(
        dir,
        "base_ot",
        "sender-valid",
        &[&[sender], &base.receiver_msg],
    );
    write(
        dir,
        "base_ot",
        "sender-tamper-x",
        &[&[sender | MODE_TAMPER], &tamper_record(32, 0x01)],
    );
    write(
        dir,
        "base_ot",
        "receiver-valid",
        &[&[receiver], &base.sender_msg],
    );
    write(
        dir,
        "base_ot",
        "receiver-tamper-sign",
        &[&[receiver | MODE_TAMPER], &tamper_record(0, 0x01)],
    );

    // ot_setup: the honest pair; a tamper of a correction word the evaluator
    // does not use (accepted), of one it uses (rejected), and of B's sign.
    let setup = setup_fixture();
    let split = u8::try_from(SENDER_MSG_BYTES).expect("BotSendMsg fits the split byte");
    write(
        dir,
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
        dir,
        "ot_setup",
        "tamper-unused-correction-word",
        &[&[MODE_TAMPER], &tamper_record(word(1 - used), 0x40)],
    );
    write(
        dir,
        "ot_setup",
        "tamper-used-correction-word",
        &[&[MODE_TAMPER], &tamper_record(word(used), 0x40)],
    );
    write(
        dir,
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
        dir,
        "ot_extension",
        "raw-valid",
        &[&[MODE_RAW], &ext.message],
    );
    write(
        dir,
        "ot_extension",
        "tamper-u-block",
        &[
            &[MODE_TAMPER],
            &tamper_record(nonzero * EXT_ROW_BYTES + 37, 0x10),
        ],
    );
    write(
        dir,
        "ot_extension",
        "tamper-u-block-punctured-0",
        &[
            &[MODE_TAMPER],
            &tamper_record(zero * EXT_ROW_BYTES + 37, 0x10),
        ],
    );
    write(
        dir,
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
    write(dir, "rvole", "raw-valid", &[&[MODE_RAW], &rvole.vole_msg]);
    write(
        dir,
        "rvole",
        "tamper-a-tilde",
        &[
            &[MODE_TAMPER],
            &tamper_record(100 * RVOLE_WIDTH * SCALAR_BYTES + SCALAR_BYTES - 1, 0x01),
        ],
    );
    write(
        dir,
        "rvole",
        "tamper-eta",
        &[
            &[MODE_TAMPER],
            &tamper_record(a_tilde_bytes + SCALAR_BYTES - 1, 0x01),
        ],
    );
    write(
        dir,
        "rvole",
        "tamper-mu",
        &[
            &[MODE_TAMPER],
            &tamper_record(rvole.vole_msg.len() - 1, 0x80),
        ],
    );
}

/// keyshare_decode: real shares (both roles, refreshed, burned) and
/// presignatures, and a few near misses.
fn keyshare_decode(dir: &Path) {
    let target = "keyshare_decode";
    let share_a = key(Role::A).to_bytes();
    write(dir, target, "share-a", &[&share_a]);
    write(dir, target, "share-b", &[&key(Role::B).to_bytes()]);
    let refreshed = &transcript(Kind::Refresh).outputs[0];
    write(dir, target, "share-a-epoch-1", &[refreshed]);
    let mut burned = KeyShare::from_bytes(&key(Role::B).to_bytes()).expect("copy");
    burned.burn_ot_material();
    write(dir, target, "share-b-burned", &[&burned.to_bytes()]);
    let mut version_2 = share_a.to_vec();
    version_2[0] = 2;
    write(dir, target, "share-a-version-2", &[&version_2]);
    write(
        dir,
        target,
        "share-a-truncated",
        &[&share_a[..share_a.len() - 1]],
    );
    let presignatures = &transcript(Kind::Presign).outputs;
    write(dir, target, "presignature-a", &[&presignatures[0]]);
    write(dir, target, "presignature-b", &[&presignatures[1]]);
    let mut trailing = presignatures[1].clone();
    trailing.push(0);
    write(dir, target, "presignature-b-trailing", &[&trailing]);
}

fn role_name(role: Role) -> &'static str {
    match role {
        Role::A => "a",
        Role::B => "b",
    }
}

fn write_case(dir: &Path, name: &str, case: &Case) {
    write(dir, "protocol_rounds", name, &[&case.to_bytes()]);
}

/// Whether the party of `case` accepts its message (the replay is the one
/// the target does).
fn accepted(case: &Case) -> bool {
    let record = transcript(case.kind);
    let peer = &record.sent[case.role.peer().index()];
    let (mut party, mut rng) = Party::fresh(case.kind, case.role);
    party.start(&mut rng).expect("start");
    for incoming in &peer[..case.round - 1] {
        let _ = party.handle(&mut rng, incoming).expect("replay");
    }
    matches!(
        party.handle(&mut rng, &case.message(&peer[case.round - 1])),
        Ok(Step::Send(_) | Step::Finished(_))
    )
}

/// protocol_rounds: every honest message of every protocol, for both roles,
/// in envelope mode (the accepting path of every round); a few raw honest
/// messages; tampers of the checked fields; and a tamper that is accepted
/// (a correction word the evaluator does not use, PROTOCOL.md §5.3), whose
/// run must then fail at key confirmation.
fn protocol_rounds(dir: &Path) {
    for kind in Kind::ALL {
        for role in [Role::A, Role::B] {
            let record = transcript(kind);
            for round in 1..=kind.rounds() {
                let honest = &record.sent[role.peer().index()][round - 1];
                let case = Case {
                    kind,
                    role,
                    round,
                    mode: Mode::Envelope,
                    body: envelope_of(honest).payload,
                };
                let name = format!("{}-{}-r{round}-honest", kind.name(), role_name(role));
                write_case(dir, &name, &case);
            }
        }
    }
    for (kind, role, round) in [
        (Kind::Dkg, Role::A, 1),
        (Kind::Sign, Role::B, 4),
        (Kind::Online, Role::A, 1),
        (Kind::Refresh, Role::B, 5),
    ] {
        let honest = &transcript(kind).sent[role.peer().index()][round - 1];
        let case = Case {
            kind,
            role,
            round,
            mode: Mode::Raw,
            body: honest.clone(),
        };
        let name = format!("{}-{}-r{round}-raw", kind.name(), role_name(role));
        write_case(dir, &name, &case);
    }
    // Signing round 3: VoleMsg (49216) R salt Gamma_u Gamma_v psi.
    let psi = 49_216 + 33 + 32 + 33 + 33 + 31;
    let tampers: [(Kind, Role, usize, usize, u8, &str); 8] = [
        (Kind::Dkg, Role::A, 1, 40, 0x01, "commitment"),
        (Kind::Dkg, Role::B, 2, 130 + 31, 0x01, "proof"),
        (Kind::Dkg, Role::A, 4, 0, 0x80, "confirmation"),
        (Kind::Sign, Role::A, 2, 100, 0x01, "ote"),
        (Kind::Sign, Role::B, 3, psi, 0x01, "psi"),
        (Kind::Presign, Role::A, 3, 49_216 + 40, 0x01, "salt"),
        (Kind::Refresh, Role::B, 5, 31, 0x01, "ack"),
        (Kind::SignSchnorr, Role::A, 2, 31, 0x01, "partial"),
    ];
    for (kind, role, round, offset, xor, what) in tampers {
        let case = Case {
            kind,
            role,
            round,
            mode: Mode::Tamper,
            body: tamper_record(offset, xor).to_vec(),
        };
        let name = format!("{}-{}-r{round}-tamper-{what}", kind.name(), role_name(role));
        write_case(dir, &name, &case);
    }
    // DKG round 3 from B to A: BotSendMsg (33) then PprfMsg; level 1 of tree
    // 0 holds two correction words, and A uses one of them.
    let unused = (0..2)
        .map(|branch| Case {
            kind: Kind::Dkg,
            role: Role::A,
            round: 3,
            mode: Mode::Tamper,
            body: tamper_record(33 + 16 * branch + 3, 0x20).to_vec(),
        })
        .find(accepted)
        .expect("one correction word of level 1 is unused");
    write_case(dir, "dkg-a-r3-tamper-unused-correction-word", &unused);
}

/// backup_verify: the honest backup, and a tamper of every kind of field.
fn backup_verify(dir: &Path) {
    let target = "backup_verify";
    let fixture = backup_fixture();
    assert_eq!(fixture.bytes.len(), BACKUP_BYTES);
    write(dir, target, "raw-valid", &[&[MODE_RAW], &fixture.bytes]);
    // Label (42), Q (33), Y (33), challenge (16), then 128 rows of X_0 (33),
    // c_0 (32), c_1 (32), unopened R (33), opened seed (32).
    let header = 42 + 33 + 33 + 16;
    let row = |n: usize, field: usize| header + n * 162 + field;
    let fields: [(&str, usize, u8); 10] = [
        ("role", 33, 0x03),
        ("epoch", 41, 0x01),
        ("public-share", 42 + 5, 0x01),
        ("recovery-key", 42 + 33 + 5, 0x01),
        ("challenge", header - 16, 0x01),
        ("row0-x0", row(0, 7), 0x01),
        ("row0-c0", row(0, 33 + 31), 0x01),
        ("row64-c1", row(64, 65 + 31), 0x01),
        ("row64-unopened-r", row(64, 97 + 9), 0x01),
        ("row127-seed", row(127, 130 + 31), 0x01),
    ];
    for (name, offset, xor) in fields {
        write(
            dir,
            target,
            &format!("tamper-{name}"),
            &[&[MODE_TAMPER], &tamper_record(offset, xor)],
        );
    }
}

/// ws_opening: an opening of every operation, and outcomes.
fn ws_opening(dir: &Path) {
    let target = "ws_opening";
    let session = SessionHandle([0x5e; 32]);
    let key_id = KeyId([0x4b; 32]);
    let prehash = Prehash::from_bytes([0x3c; 32]);
    let path: DerivationPath = "m/44/60/0/0/7".parse().expect("path");
    let operations = [
        ("keygen", Operation::Keygen),
        (
            "sign",
            Operation::Sign {
                key_id,
                epoch: 3,
                prehash,
                path: path.clone(),
            },
        ),
        (
            "sign-root",
            Operation::Sign {
                key_id,
                epoch: 0,
                prehash,
                path: DerivationPath::root(),
            },
        ),
        (
            "presign",
            Operation::Presign {
                key_id,
                epoch: 1,
                path,
            },
        ),
        (
            "online-sign",
            Operation::OnlineSign {
                key_id,
                presignature: mpc_core::wire::SessionId([0x9a; 32]),
                prehash,
            },
        ),
        ("refresh", Operation::Refresh { key_id, epoch: 2 }),
        (
            "sign-bip340",
            Operation::SignSchnorr {
                key_id,
                epoch: 3,
                message: [0x5c; 32],
                path: DerivationPath::from_indices(&[0, 5]).expect("non-hardened"),
                taproot: mpc_core::Taproot::MerkleRoot([0x7e; 32]),
            },
        ),
    ];
    for (name, operation) in operations {
        let opening = Opening { session, operation };
        write(
            dir,
            target,
            &format!("opening-{name}"),
            &[&opening.encode()],
        );
    }
    write(dir, target, "outcome-ok", &[&Outcome::Ok.encode()]);
    let ban = Outcome::from_protocol_error(Error::GammaCheckFailed);
    write(dir, target, "outcome-ban", &[&ban.encode()]);
    let failed = Outcome::Failed {
        code: CloseCode::TIMEOUT,
        class: None,
        reason: "message timeout".to_owned(),
    };
    write(dir, target, "outcome-timeout", &[&failed.encode()]);
    let local = Outcome::Failed {
        code: CloseCode::INTERNAL_ERROR,
        class: Some(AbortClass::Local),
        reason: String::new(),
    };
    write(dir, target, "outcome-local", &[&local.encode()]);
    let framed = encode_frame(FrameKind::Outcome, &Outcome::Ok.encode());
    write(dir, target, "frame-outcome", &[&framed]);
}
