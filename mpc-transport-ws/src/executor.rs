//! Where the driver runs protocol steps ([`TransportConfig::step_executor`]).
//!
//! A protocol step (`Protocol::start` or `Protocol::handle`) is CPU-bound:
//! up to a few milliseconds. Run on the async worker that drives the
//! session ([`StepExecutor::Inline`]), it holds that worker meanwhile, so a
//! server with many sessions on few cores reads frames, answers pings and
//! completes database calls only between steps. [`StepExecutor::Pool`]
//! runs each step off the async workers, at most
//! [`ComputePool::threads`] at a time (the others wait their turn, in
//! order of arrival).
//!
//! The step runs in place (`tokio::task::block_in_place`): the async
//! worker's other tasks move to another thread while this one computes.
//! The protocol is never moved to another thread or copied, so its secret
//! round state stays where the caller put it (it may also borrow, e.g. a
//! key share: `Sign<'_>`). On a current-thread runtime, which cannot hand
//! its tasks over, a pooled step runs inline (still within the pool's
//! bound).
//!
//! [`TransportConfig::step_executor`]: crate::TransportConfig::step_executor

use std::sync::Arc;

use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// How the session driver runs protocol steps.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum StepExecutor {
    /// On the task that drives the session (the default: right for a
    /// client, which runs few sessions at once).
    #[default]
    Inline,
    /// Off the async workers, bounded by a shared [`ComputePool`] (one pool
    /// for all of a server's sessions). Each step hands its worker over to
    /// another thread, a few context switches: worth it when steps are long
    /// next to what the workers owe other tasks (mpc-server measured inline
    /// faster for signing sessions, with no worse latency).
    Pool(ComputePool),
}

/// A bound on protocol steps running at once, shared by every session
/// whose [`TransportConfig`](crate::TransportConfig) holds a clone of it.
#[derive(Clone)]
pub struct ComputePool {
    permits: Arc<Semaphore>,
    threads: usize,
}

impl ComputePool {
    /// A pool running at most `threads` steps at once (at least 1).
    #[must_use]
    pub fn new(threads: usize) -> Self {
        let threads = threads.clamp(1, Semaphore::MAX_PERMITS);
        Self {
            permits: Arc::new(Semaphore::new(threads)),
            threads,
        }
    }

    /// A pool with one thread per core (`std::thread::available_parallelism`,
    /// 1 if unknown).
    #[must_use]
    pub fn per_core() -> Self {
        Self::new(std::thread::available_parallelism().map_or(1, usize::from))
    }

    /// Most steps that run at once.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl core::fmt::Debug for ComputePool {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("ComputePool")
            .field("threads", &self.threads)
            .finish_non_exhaustive()
    }
}

/// Clones of one pool are equal; two pools are not, whatever their size.
impl PartialEq for ComputePool {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.permits, &other.permits)
    }
}

impl Eq for ComputePool {}

/// The right to run one step, given back on drop (nothing for inline
/// steps).
pub(crate) struct StepPermit {
    _held: Option<OwnedSemaphorePermit>,
}

impl StepExecutor {
    /// Waits for the right to run a step (at once for inline steps). The
    /// caller bounds the wait by its deadline.
    pub(crate) async fn permit(&self) -> StepPermit {
        match self {
            Self::Inline => StepPermit { _held: None },
            // The semaphore is never closed: `None` cannot happen, and
            // would only mean "run unbounded".
            Self::Pool(pool) => StepPermit {
                _held: Arc::clone(&pool.permits).acquire_owned().await.ok(),
            },
        }
    }

    /// Runs `step` with `permit` held.
    pub(crate) fn run<T>(&self, permit: StepPermit, step: impl FnOnce() -> T) -> T {
        let off_worker = matches!(self, Self::Pool(_))
            && Handle::try_current()
                .is_ok_and(|handle| handle.runtime_flavor() == RuntimeFlavor::MultiThread);
        let output = if off_worker {
            tokio::task::block_in_place(step)
        } else {
            step()
        };
        drop(permit);
        output
    }
}
