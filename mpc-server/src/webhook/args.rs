//! The webhook flags (flattened into [`crate::config::Cli`]).

use std::time::Duration;

use super::{WebhookConfig, DEFAULT_CONCURRENCY};
use crate::config::{read_secret, SecretSource};

/// Webhook delivery flags, each also read from its `MPC_*` variable. The
/// secret comes from `MPC_WEBHOOK_SECRET` or `MPC_WEBHOOK_SECRET_FILE`
/// only.
#[derive(Debug, Clone, clap::Args)]
pub struct WebhookArgs {
    /// Webhook endpoint of the backend (events are signed with
    /// `MPC_WEBHOOK_SECRET`).
    #[arg(long, hide_env_values = true, env = "MPC_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// First retry delay of a failed webhook delivery, in milliseconds
    /// (doubling up to 5 minutes).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_WEBHOOK_RETRY_BASE_MS",
        default_value_t = 1000
    )]
    pub webhook_retry_base_ms: u64,
    /// Most webhook requests in flight at once, each for a different key
    /// (a key's events go out one at a time, in order).
    #[arg(long, hide_env_values = true, env = "MPC_WEBHOOK_CONCURRENCY", default_value_t = DEFAULT_CONCURRENCY)]
    pub webhook_concurrency: usize,
    /// Limit on one webhook request, in seconds (a receiver that does not
    /// answer in time counts as a failed attempt).
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_WEBHOOK_TIMEOUT",
        default_value_t = 10
    )]
    pub webhook_timeout: u64,
    /// How often the outbox is checked for due webhook events (and the
    /// backlog gauges refreshed), in milliseconds.
    #[arg(
        long,
        hide_env_values = true,
        env = "MPC_WEBHOOK_POLL_INTERVAL_MS",
        default_value_t = 1000
    )]
    pub webhook_poll_interval_ms: u64,
}

impl WebhookArgs {
    /// The delivery configuration, `None` when no URL is set. Values below
    /// 1 are raised to 1.
    ///
    /// # Errors
    ///
    /// A message (without the secret) if the URL is set but the secret is
    /// not, or the secret cannot be read ([`read_secret`]).
    pub fn config(&self, source: &dyn SecretSource) -> Result<Option<WebhookConfig>, String> {
        let secret = read_secret(source, "MPC_WEBHOOK_SECRET")?;
        match (&self.webhook_url, secret) {
            (Some(url), Some(secret)) => {
                let mut config = WebhookConfig::new(url.clone(), secret.as_bytes().to_vec());
                config.retry_base = Duration::from_millis(self.webhook_retry_base_ms.max(1));
                config.concurrency = self.webhook_concurrency.max(1);
                config.request_timeout = Duration::from_secs(self.webhook_timeout.max(1));
                config.poll_interval = Duration::from_millis(self.webhook_poll_interval_ms.max(1));
                Ok(Some(config))
            }
            (Some(_), None) => Err("MPC_WEBHOOK_URL is set but MPC_WEBHOOK_SECRET (or \
                                    MPC_WEBHOOK_SECRET_FILE) is not"
                .into()),
            (None, _) => Ok(None),
        }
    }
}
