//! Limits and timeouts of a session.

use std::time::Duration;

use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::executor::StepExecutor;

/// Bytes allowed on top of the largest protocol envelope
/// ([`mpc_core::wire::MAX_MESSAGE_BYTES`]): the frame kind byte and room for
/// the opening and outcome messages.
pub const MESSAGE_HEADROOM: usize = 1024;

/// The most a socket reads at once. tungstenite zero-fills that much of its
/// read buffer before every read attempt (one that would block too), so
/// its default of 128 KiB cost about a megabyte of `memset` per signature
/// on each side; 16 KiB still takes a loopback segment in a few reads.
pub const READ_CHUNK_BYTES: usize = 16 * 1024;

/// Limits, timeouts and keepalive of one session.
///
/// Build it from [`TransportConfig::default`] and change fields:
///
/// ```
/// use std::time::Duration;
/// use mpc_transport_ws::TransportConfig;
///
/// let mut config = TransportConfig::default();
/// config.session_timeout = Duration::from_secs(30);
/// ```
///
/// Both sides should use the same limits; each enforces its own.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TransportConfig {
    /// Largest WebSocket frame accepted, in bytes. Larger frames close the
    /// socket with 1009. Default: [`max_message_bytes`](Self::max_message_bytes).
    pub max_frame_bytes: usize,
    /// Largest WebSocket message (all fragments) accepted, in bytes. Larger
    /// messages close the socket with 1009. Default:
    /// [`mpc_core::wire::MAX_MESSAGE_BYTES`] + [`MESSAGE_HEADROOM`]
    /// (129 KiB).
    pub max_message_bytes: usize,
    /// The longest wait for the peer's next message (and for the upgrade,
    /// and for a send to complete). Received pings, pongs and ignored frames
    /// do not restart it. Default: 30 s.
    pub message_timeout: Duration,
    /// The longest a whole session may take, from connect (client) or
    /// accept (server) to the exchange of outcomes. Default: 120 s.
    pub session_timeout: Duration,
    /// How often to send a ping while waiting for the peer; `None` sends
    /// none. Default: 15 s.
    pub ping_interval: Option<Duration>,
    /// How long to wait for the closing handshake (and to deliver the
    /// outcome message of a failed session); on the client, also how long
    /// the server's close may take to follow its outcome (no close in time
    /// fails the session). After an oversized frame,
    /// which the socket cannot read past, the connection is held this long
    /// so that the peer can read the close frame. Default: 2 s.
    pub close_timeout: Duration,
    /// How many frames the session drops before it closes the socket with
    /// 1008: protocol messages that are not for the current session state
    /// (an `Ignore`-class error: another session, round or protocol, or an
    /// undecodable envelope). The session closes on the
    /// `max_ignored_frames + 1`-th. Default: 16.
    pub max_ignored_frames: u32,
    /// Where protocol steps run: inline on the session's task, or off the
    /// async workers in a bounded [`ComputePool`](crate::ComputePool)
    /// (a server's choice; the wait for a turn is bounded by the message
    /// timeout). Default: [`StepExecutor::Inline`].
    pub step_executor: StepExecutor,
}

impl Default for TransportConfig {
    fn default() -> Self {
        let max_message_bytes = mpc_core::wire::MAX_MESSAGE_BYTES + MESSAGE_HEADROOM;
        Self {
            max_frame_bytes: max_message_bytes,
            max_message_bytes,
            message_timeout: Duration::from_secs(30),
            session_timeout: Duration::from_secs(120),
            ping_interval: Some(Duration::from_secs(15)),
            close_timeout: Duration::from_secs(2),
            max_ignored_frames: 16,
            step_executor: StepExecutor::Inline,
        }
    }
}

impl TransportConfig {
    /// The tungstenite configuration that enforces these size limits while
    /// reading, with reads of at most [`READ_CHUNK_BYTES`] (for
    /// [`tokio_tungstenite`] sockets; axum's `WebSocketUpgrade` takes the
    /// same settings through its own setters).
    #[must_use]
    pub fn websocket_config(&self) -> WebSocketConfig {
        WebSocketConfig::default()
            .max_message_size(Some(self.max_message_bytes))
            .max_frame_size(Some(self.max_frame_bytes))
            .read_buffer_size(READ_CHUNK_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_fit_the_largest_envelope() {
        let config = TransportConfig::default();
        assert!(config.max_message_bytes > mpc_core::wire::MAX_MESSAGE_BYTES);
        assert_eq!(config.max_frame_bytes, config.max_message_bytes);
        assert!(config.message_timeout < config.session_timeout);
        let ws = config.websocket_config();
        assert_eq!(ws.max_message_size, Some(config.max_message_bytes));
        assert_eq!(ws.max_frame_size, Some(config.max_frame_bytes));
        assert_eq!(ws.read_buffer_size, READ_CHUNK_BYTES);
    }
}
