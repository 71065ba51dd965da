//! Builds an example of this package with the same profile as the running
//! test (cargo has released its lock while tests run); shared by the test
//! crates through `#[path]`.

use std::path::PathBuf;
use std::process::Command;

/// Builds the example `name` (once per test process) and returns its path.
pub(crate) fn build_example(name: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&'static str, PathBuf)>> =
        std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, path)) = built.iter().find(|(n, _)| *n == name) {
        return path.clone();
    }
    let mut dir = std::env::current_exe().unwrap();
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    let mut build = Command::new(env!("CARGO"));
    // The workspace's feature set, as `cargo test --workspace --all-features`
    // (the test command) resolves it: with `-p mpc-examples` alone, cargo
    // unifies features over this package only and rebuilds half the
    // dependency graph a second time.
    build.args([
        "build",
        "--quiet",
        "--workspace",
        "--all-features",
        "--example",
        name,
    ]);
    // The test's own profile, so that the crates it already built are
    // reused rather than rebuilt under `dev`.
    if dir.ends_with("release") {
        build.arg("--release");
    } else {
        build.args(["--profile", "test"]);
    }
    let status = build.status().unwrap();
    assert!(status.success(), "building the example {name} failed");
    let path = dir
        .join("examples")
        .join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "no example binary at {}", path.display());
    built.push((name, path.clone()));
    path
}
