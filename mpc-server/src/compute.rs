//! The compute pool: where the server runs protocol steps (PROTOCOL.md
//! §18.5). Every session's steps share one bounded pool sized to the
//! cores, off the async workers that read frames and wait on the
//! database (`mpc_transport_ws::executor`).

use mpc_transport_ws::{ComputePool, StepExecutor, TransportConfig};

/// Compute settings (flattened into [`Cli`](crate::config::Cli)).
#[derive(Debug, Clone, clap::Args)]
pub struct ComputeArgs {
    /// Protocol steps run at once, off the async workers. 0 runs them
    /// inline on the async workers instead (for comparison). Default: the
    /// number of cores.
    #[arg(long, hide_env_values = true, env = "MPC_COMPUTE_THREADS")]
    pub compute_threads: Option<usize>,
}

impl ComputeArgs {
    /// The configured number of compute threads (0: inline), or one per
    /// core.
    #[must_use]
    pub fn threads(&self) -> usize {
        self.compute_threads
            .unwrap_or_else(|| ComputePool::per_core().threads())
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
