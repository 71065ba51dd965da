//! Named crash points for the kill-during-protocol tests.
//!
//! With the `fault-injection` feature, `MPC_CRASH_AT=<name>` makes the
//! process abort (no destructors, no flush: as abrupt as `kill -9` for the
//! database) the first time it reaches the point `<name>`. Without the
//! feature every point compiles to nothing, and the variable is ignored.
//! Failure points ([`fails`], `MPC_FAIL_AT`) make one operation fail
//! instead of aborting. Stall points ([`stall`], `MPC_STALL_AT`) hold a
//! session back for a while, to widen a window a test would otherwise hit
//! only by chance.
//!
//! The points, in the order a session reaches them:
//!
//! | point | where |
//! |---|---|
//! | `keygen:before-store` | DKG finished, share not yet stored |
//! | `keygen:after-store` | share stored, outcome not yet sent |
//! | `sign:after-run` | signing finished, outcome not yet sent |
//! | `presign:before-store` | presignature computed, not yet stored |
//! | `presign:after-store` | presignature stored, outcome not yet sent |
//! | `online:after-take` | presignature claimed, online message not yet sent |
//! | `refresh:before-ready` | new share computed, not yet stored (round 4 pending) |
//! | `refresh:after-ready` | new share stored as ready, round 4 not yet sent |
//! | `refresh:after-confirm` | stored as confirmed, round 5 not yet sent |
//! | `refresh:before-finalize` | peer's round 5 received, old epoch still kept |
//! | `refresh:after-finalize` | new epoch final, outcome not yet sent |

/// Every crash point name, for tests that iterate over them.
pub const POINTS: &[&str] = &[
    "keygen:before-store",
    "keygen:after-store",
    "sign:after-run",
    "presign:before-store",
    "presign:after-store",
    "online:after-take",
    "refresh:before-ready",
    "refresh:after-ready",
    "refresh:after-confirm",
    "refresh:before-finalize",
    "refresh:after-finalize",
];

/// Aborts the process if `MPC_CRASH_AT` names `point` (only with the
/// `fault-injection` feature).
#[cfg(feature = "fault-injection")]
pub fn point(point: &str) {
    use std::sync::OnceLock;
    static TARGET: OnceLock<Option<String>> = OnceLock::new();
    let target = TARGET.get_or_init(|| std::env::var("MPC_CRASH_AT").ok());
    if target.as_deref() == Some(point) {
        eprintln!("mpc-server: crash point {point} reached: aborting");
        std::process::abort();
    }
}

/// Does nothing: the `fault-injection` feature is off.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_point: &str) {}

/// Whether failure point `point` fails now: with the `fault-injection`
/// feature, `MPC_FAIL_AT=<name>` makes the failure point `<name>` fail,
/// every time or only the first `MPC_FAIL_TIMES` times. Points: `ban:status` (the ban's status write
/// fails before it reaches the database), `ban:persist` (the re-seal of the
/// burned share fails, as if the master-key backend were down).
#[cfg(feature = "fault-injection")]
pub fn fails(point: &str) -> bool {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static TARGET: OnceLock<(Option<String>, Option<u64>)> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let (target, times) = TARGET.get_or_init(|| {
        (
            std::env::var("MPC_FAIL_AT").ok(),
            std::env::var("MPC_FAIL_TIMES")
                .ok()
                .and_then(|n| n.parse().ok()),
        )
    });
    if target.as_deref() != Some(point) {
        return false;
    }
    let hit = HITS.fetch_add(1, Ordering::SeqCst);
    times.is_none_or(|times| hit < times)
}

/// Never fails: the `fault-injection` feature is off.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn fails(_point: &str) -> bool {
    false
}

/// With the `fault-injection` feature and `MPC_STALL_AT=<point>`, waits
/// `MPC_STALL_MS` milliseconds (default 2000) each time `point` is reached.
/// Points: `refresh:release` (before a refresh session gives its lease
/// back).
#[cfg(feature = "fault-injection")]
pub async fn stall(point: &str) {
    use std::sync::OnceLock;
    use std::time::Duration;
    static TARGET: OnceLock<(Option<String>, u64)> = OnceLock::new();
    let (target, ms) = TARGET.get_or_init(|| {
        (
            std::env::var("MPC_STALL_AT").ok(),
            std::env::var("MPC_STALL_MS")
                .ok()
                .and_then(|ms| ms.parse().ok())
                .unwrap_or(2000),
        )
    });
    if target.as_deref() == Some(point) {
        tokio::time::sleep(Duration::from_millis(*ms)).await;
    }
}

/// Does nothing: the `fault-injection` feature is off.
#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub async fn stall(_point: &str) {}
