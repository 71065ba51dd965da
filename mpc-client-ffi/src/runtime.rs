//! The tokio runtime the wallet's futures run on: the foreign side only
//! awaits their results, whatever its executor (asyncio, Swift
//! concurrency, Kotlin coroutines).

use std::future::Future;
use std::sync::OnceLock;

use tokio::runtime::{Builder, Runtime};

use crate::error::WalletError;

/// Worker threads: a wallet runs one or a few sessions at a time, and a
/// phone has few cores to spare.
const WORKER_THREADS: usize = 2;

fn runtime() -> Result<&'static Runtime, WalletError> {
    static RUNTIME: OnceLock<Option<Runtime>> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            Builder::new_multi_thread()
                .worker_threads(WORKER_THREADS)
                .thread_name("mpc-client")
                .enable_all()
                .build()
                .ok()
        })
        .as_ref()
        .ok_or_else(|| WalletError::Internal {
            reason: "cannot start the async runtime".to_owned(),
        })
}

/// Runs `future` to its end on the runtime and returns its result; the
/// caller may stop waiting (the foreign future dropped) without stopping
/// it.
pub(crate) async fn run<T, E>(
    future: impl Future<Output = Result<T, E>> + Send + 'static,
) -> Result<T, WalletError>
where
    T: Send + 'static,
    E: Into<WalletError> + Send + 'static,
{
    match runtime()?.spawn(future).await {
        Ok(result) => result.map_err(Into::into),
        // A panic inside the library (a bug): reported, never unwound
        // across the FFI.
        Err(join) => Err(WalletError::Internal {
            reason: if join.is_panic() {
                "the operation panicked".to_owned()
            } else {
                "the operation was cancelled".to_owned()
            },
        }),
    }
}
