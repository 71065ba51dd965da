//! Zeroization check (PROTOCOL.md §10): a global allocator looks for the
//! shares' secrets in every block the program frees. A DKG, a signature, a
//! refresh, a store/load round trip of every share and the drop of every
//! share must leave none of them behind.
//!
//! The secrets are random, so they are learned first: the scenario runs once
//! unwatched to read them (from the shares' encodings), then again with the
//! same seed, watched. Same seed, same secrets: the harness checks the replay
//! produced the same public keys.
//!
//! What it cannot see: copies on the stack or in registers, blocks that are
//! never freed, and secrets it has no way to read (nonce shares, OT outputs;
//! the types holding them derive `ZeroizeOnDrop`).
// The global allocator is `unsafe` by definition: it forwards to `System`
// and reads each block before freeing it.
#![allow(unsafe_code)]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicUsize, Ordering};
use std::sync::Mutex;

use mpc_audit::record::{PresignatureSecrets, ShareSecrets};
use mpc_core::local::run_pair;
use mpc_core::wire::Role;
use mpc_core::{
    ClaimSet, Dkg, KeyShare, OnlineSign, Prehash, Presign, Presignature, Protocol, Refresh, Sign,
    Step,
};
use rand_chacha::rand_core::SeedableRng;
use rand_chacha::ChaCha20Rng;

/// The secrets to look for, sorted by their first 8 bytes.
struct Needles {
    prefixes: Vec<u64>,
    needles: Vec<(Vec<u8>, usize)>,
    labels: Vec<String>,
}

const MAX_LABELS: usize = 64;
static ARMED: AtomicBool = AtomicBool::new(false);
static NEEDLES: AtomicPtr<Needles> = AtomicPtr::new(std::ptr::null_mut());
static HITS: [AtomicUsize; MAX_LABELS] = [const { AtomicUsize::new(0) }; MAX_LABELS];
static SCANNED: AtomicUsize = AtomicUsize::new(0);
/// The tests share the allocator's state: one at a time.
static WATCH: Mutex<()> = Mutex::new(());

struct Scanner;

#[global_allocator]
static SCANNER: Scanner = Scanner;

/// Looks for every needle in a block about to be freed. Allocates nothing.
fn scan(block: &[u8]) {
    let needles = NEEDLES.load(Ordering::Acquire);
    if needles.is_null() {
        return;
    }
    // SAFETY: set once from a leaked Box before arming, never freed.
    let needles = unsafe { &*needles };
    SCANNED.fetch_add(block.len(), Ordering::Relaxed);
    for start in 0..block.len().saturating_sub(15) {
        let prefix = u64::from_le_bytes(block[start..start + 8].try_into().unwrap());
        let Ok(mut at) = needles.prefixes.binary_search(&prefix) else {
            continue;
        };
        while at > 0 && needles.prefixes[at - 1] == prefix {
            at -= 1;
        }
        while at < needles.prefixes.len() && needles.prefixes[at] == prefix {
            let (needle, label) = &needles.needles[at];
            if block[start..].starts_with(needle) {
                HITS[*label].fetch_add(1, Ordering::Relaxed);
            }
            at += 1;
        }
    }
}

/// # Safety
///
/// `ptr` must be a live block of `size` bytes.
unsafe fn scan_raw(ptr: *const u8, size: usize) {
    if ARMED.load(Ordering::Acquire) {
        // The block may hold bytes never written (spare capacity); they are
        // only compared, never interpreted.
        scan(unsafe { std::slice::from_raw_parts(ptr, size) });
    }
}

// SAFETY: every request goes to `System` with the caller's layout.
unsafe impl GlobalAlloc for Scanner {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe {
            scan_raw(ptr, layout.size());
            System.dealloc(ptr, layout);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if !ARMED.load(Ordering::Acquire) {
            return unsafe { System.realloc(ptr, layout, new_size) };
        }
        // A growing Vec frees its old buffer here: allocate, copy, scan the
        // old block and free it, so that the old contents are seen.
        unsafe {
            let new_layout = Layout::from_size_align_unchecked(new_size, layout.align());
            let new = System.alloc(new_layout);
            if !new.is_null() {
                std::ptr::copy_nonoverlapping(ptr, new, layout.size().min(new_size));
                scan_raw(ptr, layout.size());
                System.dealloc(ptr, layout);
            }
            new
        }
    }
}

/// A 32-byte big-endian scalar, and its little-endian form.
fn scalar_needles(bytes: &[u8; 32], what: &str, out: &mut Vec<(Vec<u8>, String)>) {
    let mut little_endian = *bytes;
    little_endian.reverse();
    out.push((bytes.to_vec(), format!("{what} (big-endian)")));
    out.push((little_endian.to_vec(), format!("{what} (little-endian)")));
}

/// Secrets read from one share's encoding, with labels.
fn secrets_of(name: &str, share: &KeyShare, out: &mut Vec<(Vec<u8>, String)>) {
    let record = ShareSecrets::read(&share.to_bytes()).unwrap();
    scalar_needles(&record.secret, &format!("{name}: x_i"), out);
    out.push((
        record.sender_punctured.to_vec(),
        format!("{name}: Delta (punctured indices)"),
    ));
    // Delta as the 128-bit value of the extension (PROTOCOL.md §6.3): bit
    // 4i+b is bit b of tree i's punctured index.
    let delta = record
        .sender_punctured
        .iter()
        .enumerate()
        .fold(0u128, |acc, (i, p)| acc | (u128::from(*p) << (4 * i)));
    out.push((
        delta.to_le_bytes().to_vec(),
        format!("{name}: Delta (128-bit)"),
    ));
    for seed in record.sender_seeds.iter().chain(&record.receiver_seeds) {
        if *seed != [0u8; 16] {
            out.push((seed.to_vec(), format!("{name}: an OT leaf seed")));
        }
    }
}

/// The scenario: DKG, a signature, every share stored and loaded again, a
/// refresh, and the drop of every share. Returns the public keys (to check
/// the replay) and, if asked, the secrets of every share it made.
fn scenario(collect: bool) -> (Vec<u8>, Vec<(Vec<u8>, String)>) {
    lifecycle(collect, false)
}

/// As [`scenario`], with the protocol machines on the heap too.
fn scenario_heap_machines(collect: bool) -> (Vec<u8>, Vec<(Vec<u8>, String)>) {
    lifecycle(collect, true)
}

/// The scenario's DKG, signature, store/load, refresh and drops. The shares
/// live on the heap, as a server or a wallet keeps them, so the share's own
/// `Drop` must wipe the block it is freed with; with `heap_machines` the
/// protocol machines do too.
fn lifecycle(collect: bool, heap_machines: bool) -> (Vec<u8>, Vec<(Vec<u8>, String)>) {
    let mut rng = ChaCha20Rng::seed_from_u64(17);
    let mut secrets = Vec::new();
    let (a, b, _) = if heap_machines {
        run_pair(
            &mut rng,
            &mut *Box::new(Dkg::new(Role::A, b"zeroize")),
            &mut *Box::new(Dkg::new(Role::B, b"zeroize")),
        )
    } else {
        run_pair(
            &mut rng,
            &mut Dkg::new(Role::A, b"zeroize"),
            &mut Dkg::new(Role::B, b"zeroize"),
        )
    }
    .unwrap();
    let prehash = Prehash::sha256(b"zeroize");
    let (signature, _, _) = run_pair(
        &mut rng,
        &mut Sign::new(&a, prehash),
        &mut Sign::new(&b, prehash),
    )
    .unwrap();
    // Stored and loaded, as the server does between requests.
    let a = Box::new(KeyShare::from_bytes(&a.to_bytes()).unwrap());
    let b = Box::new(KeyShare::from_bytes(&b.to_bytes()).unwrap());
    let (new_a, new_b, _) = if heap_machines {
        run_pair(
            &mut rng,
            &mut *Box::new(Refresh::new(&a, b"zeroize")),
            &mut *Box::new(Refresh::new(&b, b"zeroize")),
        )
    } else {
        run_pair(
            &mut rng,
            &mut Refresh::new(&a, b"zeroize"),
            &mut Refresh::new(&b, b"zeroize"),
        )
    }
    .unwrap();
    let (new_a, new_b) = (Box::new(new_a), Box::new(new_b));
    if collect {
        secrets_of("A", &a, &mut secrets);
        secrets_of("B", &b, &mut secrets);
        secrets_of("A after refresh", &new_a, &mut secrets);
        secrets_of("B after refresh", &new_b, &mut secrets);
    }
    let mut public = signature.signature.to_bytes().to_vec();
    public.extend_from_slice(new_a.public_key().to_sec1_bytes().as_ref());
    drop((a, b, new_a, new_b));
    (public, secrets)
}

fn arm(secrets: Vec<(Vec<u8>, String)>) {
    let mut labels: Vec<String> = Vec::new();
    let mut needles: Vec<(Vec<u8>, usize)> = secrets
        .into_iter()
        .map(|(bytes, label)| {
            let index = labels.iter().position(|l| *l == label).unwrap_or_else(|| {
                labels.push(label);
                labels.len() - 1
            });
            (bytes, index)
        })
        .collect();
    assert!(labels.len() <= MAX_LABELS);
    needles.sort_by_key(|(bytes, _)| u64::from_le_bytes(bytes[..8].try_into().unwrap()));
    let prefixes = needles
        .iter()
        .map(|(bytes, _)| u64::from_le_bytes(bytes[..8].try_into().unwrap()))
        .collect();
    let needles = Box::new(Needles {
        prefixes,
        needles,
        labels,
    });
    NEEDLES.store(Box::into_raw(needles), Ordering::Release);
    ARMED.store(true, Ordering::Release);
}

/// Disarms and returns the labels found, with counts; resets the counts.
fn findings() -> Vec<(String, usize)> {
    ARMED.store(false, Ordering::Release);
    // SAFETY: set by `arm` from a leaked Box, never freed.
    let needles = unsafe { &*NEEDLES.load(Ordering::Acquire) };
    let found = needles
        .labels
        .iter()
        .zip(&HITS)
        .filter_map(|(label, hits)| {
            let n = hits.swap(0, Ordering::Relaxed);
            (n > 0).then(|| (label.clone(), n))
        })
        .collect();
    found
}

/// The presigning scenario: DKG, a presignature per party, each stored and
/// loaded, the online step, the drops. Returns the signature and, if asked,
/// the secrets: each `x_i` and each presignature's `phi_i` and `v_i` (not
/// `u_i`, which round 4 sends).
fn presign_scenario(collect: bool) -> (Vec<u8>, Vec<(Vec<u8>, String)>) {
    let mut rng = ChaCha20Rng::seed_from_u64(18);
    let mut secrets = Vec::new();
    let (a, b, _) = run_pair(
        &mut rng,
        &mut Dkg::new(Role::A, b"zeroize presign"),
        &mut Dkg::new(Role::B, b"zeroize presign"),
    )
    .unwrap();
    let (pre_a, pre_b, _) =
        run_pair(&mut rng, &mut Presign::new(&a), &mut Presign::new(&b)).unwrap();
    if collect {
        for (name, share, pre) in [("A", &a, &pre_a), ("B", &b, &pre_b)] {
            let record = ShareSecrets::read(&share.to_bytes()).unwrap();
            scalar_needles(&record.secret, &format!("{name}: x_i"), &mut secrets);
            let record = PresignatureSecrets::read(&pre.to_bytes()).unwrap();
            scalar_needles(&record.phi, &format!("{name}: phi_i"), &mut secrets);
            scalar_needles(&record.v, &format!("{name}: v_i"), &mut secrets);
        }
    }
    // Stored and loaded, as a server keeps presignatures between requests.
    let pre_a = Presignature::from_bytes(&pre_a.to_bytes()).unwrap();
    let pre_b = Presignature::from_bytes(&pre_b.to_bytes()).unwrap();
    let prehash = Prehash::sha256(b"zeroize presign");
    let (mut claims_a, mut claims_b) = (ClaimSet::new(), ClaimSet::new());
    let (signature, _, _) = run_pair(
        &mut rng,
        &mut OnlineSign::new(&a, pre_a, prehash, &mut claims_a).unwrap(),
        &mut OnlineSign::new(&b, pre_b, prehash, &mut claims_b).unwrap(),
    )
    .unwrap();
    drop((a, b));
    (signature.signature.to_bytes().to_vec(), secrets)
}

/// Drives `a` and `b` as `run_pair` does (same order of calls, so the same
/// randomness) and stops once `a` has handled `handled` messages; returns
/// `a`'s first message.
fn run_until<A: Protocol, B: Protocol>(
    rng: &mut ChaCha20Rng,
    a: &mut A,
    b: &mut B,
    handled: usize,
) -> Vec<u8> {
    let first = a.start(rng).unwrap();
    let mut to_b = vec![first.clone()];
    let mut to_a = vec![b.start(rng).unwrap()];
    for _ in 0..handled {
        if let Step::Send(next) = b.handle(rng, &to_b.remove(0)).unwrap() {
            to_a.push(next);
        }
        if let Step::Send(next) = a.handle(rng, &to_a.remove(0)).unwrap() {
            to_b.push(next);
        }
    }
    first
}

/// A DKG abandoned mid-way (the peer disconnects) by a party holding its
/// machine on the heap: after `HANDLED` messages A's round state holds its
/// share `x_A` (`Own` in rounds 1 and 2, `Agreed` in round 3), and the
/// machine's block is freed with it unless that state wipes itself on drop.
/// The secrets are learnt from a complete run with the same randomness.
fn abandoned_dkg<const HANDLED: usize>(collect: bool) -> (Vec<u8>, Vec<(Vec<u8>, String)>) {
    let dkg = |role| Box::new(Dkg::new(role, b"zeroize abandoned"));
    let mut secrets = Vec::new();
    if collect {
        let first = Protocol::start(&mut *dkg(Role::A), &mut ChaCha20Rng::seed_from_u64(19));
        let mut rng = ChaCha20Rng::seed_from_u64(19);
        let (a, _, _) = run_pair(&mut rng, &mut *dkg(Role::A), &mut *dkg(Role::B)).unwrap();
        let record = ShareSecrets::read(&a.to_bytes()).unwrap();
        scalar_needles(&record.secret, "A: x_i", &mut secrets);
        return (first.unwrap(), secrets);
    }
    let mut rng = ChaCha20Rng::seed_from_u64(19);
    let (mut a, mut b) = (dkg(Role::A), dkg(Role::B));
    let first = run_until(&mut rng, &mut *a, &mut *b, HANDLED);
    drop((a, b));
    (first, secrets)
}

type Scenario = fn(bool) -> (Vec<u8>, Vec<(Vec<u8>, String)>);

/// Runs `scenario` unwatched to learn its secrets, then again watched;
/// returns what the watched run left in freed memory.
fn leftovers(scenario: Scenario) -> Vec<(String, usize)> {
    let (public, secrets) = scenario(true);
    let needles = secrets.len();
    arm(secrets);
    let (replayed, _) = scenario(false);
    let found = findings();
    assert_eq!(replayed, public, "the replay must make the same secrets");
    eprintln!(
        "scanned {} MiB of freed memory for {needles} secrets",
        SCANNED.swap(0, Ordering::Relaxed) >> 20
    );
    found
}

#[test]
// Found by this test: Presign's output used to move the presignature out of
// its Box (`*boxed`), freeing the box with phi_i and v_i in it, and
// Presignature::to_bytes grew its buffer (freeing partial copies).
fn no_presignature_secret_survives_in_freed_memory() {
    let _watch = WATCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let found = leftovers(presign_scenario);
    assert!(
        found.is_empty(),
        "secrets found in freed memory (label, blocks): {found:#?}"
    );
}

#[test]
fn no_share_secret_survives_in_freed_memory() {
    let _watch = WATCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let (public, secrets) = scenario(true);
    let x_a = secrets[0].0.clone();
    let needles = secrets.len();
    arm(secrets);

    // Negative control: a copy of x_A freed without zeroization is found.
    drop(std::hint::black_box(x_a.clone()));
    let found = findings();
    assert_eq!(found.len(), 1, "the control leak was not seen: {found:?}");
    assert!(found[0].0.contains("A: x_i (big-endian)"), "{found:?}");

    ARMED.store(true, Ordering::Release);
    let (replayed, _) = scenario(false);
    let found = findings();
    assert_eq!(replayed, public, "the replay must make the same shares");
    eprintln!(
        "scanned {} MiB of freed memory for {needles} secrets",
        SCANNED.load(Ordering::Relaxed) >> 20
    );
    assert!(
        found.is_empty(),
        "secrets found in freed memory (label, blocks): {found:#?}"
    );
}

#[test]
// Found by this test: a protocol machine held on the heap, as a server
// session or a wallet holds it, kept stale copies of its round states. Each
// by-value transition moves the state out of the driver
// (`core::mem::replace`), a move never drops its source, and the last
// state's bytes stayed in the driver's memory: after the DKG or a refresh
// the machine's block was freed with `x_i` and the punctured indices in it.
// The driver now overwrites a moved-out machine with zeros
// (`DriverState::Finished`, mpc-core/src/protocol.rs).
fn no_share_secret_survives_in_a_heap_held_machine() {
    let _watch = WATCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let found = leftovers(scenario_heap_machines);
    assert!(
        found.is_empty(),
        "secrets found in freed memory (label, blocks): {found:#?}"
    );
}

#[test]
// The round states' own wipes (`Own` and `Agreed` in mpc-core/src/keygen.rs)
// are what this test sees: a machine dropped mid-protocol is dropped in
// place, in its heap block, not moved out by the driver.
fn no_share_secret_survives_in_an_abandoned_heap_held_dkg() {
    let _watch = WATCH
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let scenarios: [(usize, Scenario); 3] = [
        (0, abandoned_dkg::<0>),
        (1, abandoned_dkg::<1>),
        (2, abandoned_dkg::<2>),
    ];
    for (handled, scenario) in scenarios {
        let found = leftovers(scenario);
        assert!(
            found.is_empty(),
            "abandoned after {handled} messages: secrets found in freed memory: {found:#?}"
        );
    }
}
