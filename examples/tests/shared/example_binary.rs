//! Builds an example of this package (or a binary of the workspace) with
//! the same profile as the running test (cargo has released its lock while
//! tests run), or, under the test command, takes the one its build made;
//! shared by the test crates through `#[path]`.

use std::path::PathBuf;
use std::process::Command;

/// Builds the example `name` (once per test process) and returns its path.
#[allow(dead_code)] // Not every test crate runs an example.
pub(crate) fn build_example(name: &'static str) -> PathBuf {
    build("--example", name)
}

/// Builds the workspace binary `name` (e.g. `mpc-server`, once per test
/// process) and returns its path.
#[allow(dead_code)] // Not every test crate starts the server.
pub(crate) fn build_binary(name: &'static str) -> PathBuf {
    build("--bin", name)
}

fn build(kind: &'static str, name: &'static str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<(&'static str, &'static str, PathBuf)>> =
        std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    if let Some((_, _, path)) = built.iter().find(|(k, n, _)| *k == kind && *n == name) {
        return path.clone();
    }
    let mut dir = std::env::current_exe().unwrap();
    dir.pop(); // the test binary
    if dir.ends_with("deps") {
        dir.pop();
    }
    // The test command (scripts/test.sh) sets this: it built every binary
    // and example of the workspace together with the tests (so with the
    // features the tests resolve) before any test ran. Building again here
    // would resolve features without the tests' dev-dependencies and
    // rebuild part of the graph while tests run.
    if std::env::var_os("MPC_TEST_PREBUILT").is_some() {
        let path = prebuilt(&dir, kind, name);
        built.push((kind, name, path.clone()));
        return path;
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
        kind,
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
    assert!(status.success(), "building {kind} {name} failed");
    if kind == "--example" {
        dir.push("examples");
    }
    let path = dir.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(path.exists(), "no binary at {}", path.display());
    built.push((kind, name, path.clone()));
    path
}

/// The test command's artifact: `dir/<name>` or `dir/examples/<name>`,
/// where `cargo build` puts them.
fn prebuilt(dir: &std::path::Path, kind: &str, name: &str) -> PathBuf {
    let mut path = dir.to_path_buf();
    if kind == "--example" {
        path.push("examples");
    }
    path.push(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    assert!(
        path.exists(),
        "MPC_TEST_PREBUILT is set but {} was not built",
        path.display()
    );
    path
}
