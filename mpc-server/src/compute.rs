//! Where the server runs protocol steps (PROTOCOL.md §18.5): inline on the
//! async workers by default, or in a bounded pool off them
//! (`MPC_COMPUTE_THREADS`, `mpc_transport_ws::executor`).
//!
//! Inline is the default because it measured faster: a pooled step hands
//! its worker over to another thread (`block_in_place`), a few context
//! switches per step, and on two cores that cost 8 to 9 points of the
//! compute bound at 64 clients, with no better latency for honest clients
//! under the abuse run (README, "The server under load").

use mpc_transport_ws::{ComputePool, StepExecutor, TransportConfig};

/// Compute settings (flattened into [`Cli`](crate::config::Cli)).
#[derive(Debug, Clone, clap::Args)]
pub struct ComputeArgs {
    /// Protocol steps run at once in a pool off the async workers; 0 (the
    /// default) runs them inline on the async workers.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_COMPUTE_THREADS",
        default_value_t = 0
    )]
    pub compute_threads: usize,
}

impl ComputeArgs {
    /// The configured number of compute threads (0: inline).
    #[must_use]
    pub fn threads(&self) -> usize {
        self.compute_threads
    }
}

/// `transport` with its steps run in a new pool of `threads`, or inline on
/// the async workers for 0.
pub(crate) fn with_pool(mut transport: TransportConfig, threads: usize) -> TransportConfig {
    transport.step_executor = match threads {
        0 => StepExecutor::Inline,
        threads => StepExecutor::Pool(ComputePool::new(threads)),
    };
    transport
}
