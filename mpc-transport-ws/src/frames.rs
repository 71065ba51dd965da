//! The socket as the driver sees it: send a binary frame, receive the next
//! frame, close with a code and a reason.
//!
//! [`Frames`] is implemented for [`tokio_tungstenite::WebSocketStream`] over
//! any byte stream and, with the `axum` feature, for
//! `axum::extract::ws::WebSocket`. Tests wrap either to cut, delay or
//! inject frames.

use std::future::Future;

use futures_util::{SinkExt, StreamExt};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode as WsCloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::WebSocketStream;

/// One thing received from the peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Incoming {
    /// A complete binary message.
    Binary(Vec<u8>),
    /// A text message (its content is not kept: this transport never reads
    /// text).
    Text,
    /// A ping. The socket answers it with a pong on its next read, write or
    /// flush.
    Ping,
    /// A pong.
    Pong,
    /// A close frame, with the peer's code and reason if it sent them.
    Close(Option<(u16, String)>),
}

/// Why a frame could not be sent or received.
#[non_exhaustive]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// An incoming frame or message exceeds the socket's size limit.
    TooLarge,
    /// The connection is closed.
    Closed,
    /// Any other failure, described.
    Other(String),
}

/// A message-oriented, bidirectional socket.
///
/// Requirements on implementations:
/// - [`recv`](Self::recv) is cancel-safe: the driver races it against timers,
///   and dropping its future before it completes must lose no frame;
/// - [`send_binary`](Self::send_binary), [`send_ping`](Self::send_ping) and
///   [`close`](Self::close) flush before they complete;
/// - after `recv` has returned a [`FrameError`] or `None`, later calls
///   return `None` (the driver stops reading then in any case).
///
/// Every method's future is `Send`, so a driver over a `Send` socket can be
/// spawned on a multi-threaded runtime.
pub trait Frames: Send {
    /// Sends one binary message and flushes it.
    ///
    /// # Errors
    ///
    /// [`FrameError::Closed`] if the connection is closed, or
    /// [`FrameError::Other`].
    fn send_binary(&mut self, data: Vec<u8>)
        -> impl Future<Output = Result<(), FrameError>> + Send;

    /// Sends a ping and flushes it.
    ///
    /// # Errors
    ///
    /// As [`send_binary`](Self::send_binary).
    fn send_ping(&mut self) -> impl Future<Output = Result<(), FrameError>> + Send;

    /// Receives the next frame; `None` once the connection has ended.
    ///
    /// # Errors
    ///
    /// `Some(Err(_))`: [`FrameError::TooLarge`] for a frame or message over
    /// the socket's limit, [`FrameError::Closed`] or [`FrameError::Other`].
    fn recv(&mut self) -> impl Future<Output = Option<Result<Incoming, FrameError>>> + Send;

    /// Writes out anything queued (such as a pong answering a ping).
    ///
    /// # Errors
    ///
    /// As [`send_binary`](Self::send_binary).
    fn flush(&mut self) -> impl Future<Output = Result<(), FrameError>> + Send;

    /// Sends a close frame with `code` and `reason` (at most 123 bytes) and
    /// flushes it. The closing handshake completes as the driver keeps
    /// reading until the connection ends.
    ///
    /// # Errors
    ///
    /// As [`send_binary`](Self::send_binary).
    fn close(
        &mut self,
        code: u16,
        reason: &str,
    ) -> impl Future<Output = Result<(), FrameError>> + Send;
}

impl<F: Frames> Frames for &mut F {
    fn send_binary(
        &mut self,
        data: Vec<u8>,
    ) -> impl Future<Output = Result<(), FrameError>> + Send {
        (**self).send_binary(data)
    }

    fn send_ping(&mut self) -> impl Future<Output = Result<(), FrameError>> + Send {
        (**self).send_ping()
    }

    fn recv(&mut self) -> impl Future<Output = Option<Result<Incoming, FrameError>>> + Send {
        (**self).recv()
    }

    fn flush(&mut self) -> impl Future<Output = Result<(), FrameError>> + Send {
        (**self).flush()
    }

    fn close(
        &mut self,
        code: u16,
        reason: &str,
    ) -> impl Future<Output = Result<(), FrameError>> + Send {
        (**self).close(code, reason)
    }
}

fn io_closed(kind: std::io::ErrorKind) -> bool {
    use std::io::ErrorKind;
    matches!(
        kind,
        ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected
    )
}

/// Classifies a tungstenite error.
pub(crate) fn ws_error(error: tungstenite::Error) -> FrameError {
    use tungstenite::error::{CapacityError, ProtocolError};
    match error {
        tungstenite::Error::Capacity(CapacityError::MessageTooLong { .. }) => FrameError::TooLarge,
        tungstenite::Error::ConnectionClosed
        | tungstenite::Error::AlreadyClosed
        | tungstenite::Error::Protocol(
            ProtocolError::ResetWithoutClosingHandshake | ProtocolError::SendAfterClosing,
        ) => FrameError::Closed,
        tungstenite::Error::Io(io) if io_closed(io.kind()) => FrameError::Closed,
        other => FrameError::Other(other.to_string()),
    }
}

fn from_tungstenite(message: Message) -> Option<Incoming> {
    match message {
        Message::Binary(data) => Some(Incoming::Binary(Vec::from(data))),
        Message::Text(_) => Some(Incoming::Text),
        Message::Ping(_) => Some(Incoming::Ping),
        Message::Pong(_) => Some(Incoming::Pong),
        Message::Close(frame) => {
            Some(Incoming::Close(frame.map(|frame| {
                (u16::from(frame.code), frame.reason.as_str().to_owned())
            })))
        }
        // Raw frames are only produced when writing.
        Message::Frame(_) => None,
    }
}

impl<S> Frames for WebSocketStream<S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), FrameError> {
        self.send(Message::Binary(data.into()))
            .await
            .map_err(ws_error)
    }

    async fn send_ping(&mut self) -> Result<(), FrameError> {
        self.send(Message::Ping(Default::default()))
            .await
            .map_err(ws_error)
    }

    async fn recv(&mut self) -> Option<Result<Incoming, FrameError>> {
        loop {
            match self.next().await? {
                Ok(message) => {
                    if let Some(incoming) = from_tungstenite(message) {
                        return Some(Ok(incoming));
                    }
                }
                Err(error) => return Some(Err(ws_error(error))),
            }
        }
    }

    async fn flush(&mut self) -> Result<(), FrameError> {
        SinkExt::flush(self).await.map_err(ws_error)
    }

    async fn close(&mut self, code: u16, reason: &str) -> Result<(), FrameError> {
        let frame = CloseFrame {
            code: WsCloseCode::from(code),
            reason: crate::opening::truncate(reason, crate::opening::MAX_REASON_BYTES).into(),
        };
        self.send(Message::Close(Some(frame)))
            .await
            .map_err(ws_error)
    }
}

#[cfg(feature = "axum")]
mod axum_impl {
    use super::{ws_error, FrameError, Frames, Incoming};
    use axum::extract::ws::{CloseFrame, Message, WebSocket};
    use futures_util::{SinkExt, StreamExt};

    /// axum wraps tungstenite's error in a boxed one; unwrap it to classify.
    fn axum_error(error: axum::Error) -> FrameError {
        match error
            .into_inner()
            .downcast::<tokio_tungstenite::tungstenite::Error>()
        {
            Ok(inner) => ws_error(*inner),
            Err(other) => FrameError::Other(other.to_string()),
        }
    }

    impl Frames for WebSocket {
        async fn send_binary(&mut self, data: Vec<u8>) -> Result<(), FrameError> {
            self.send(Message::Binary(data.into()))
                .await
                .map_err(axum_error)
        }

        async fn send_ping(&mut self) -> Result<(), FrameError> {
            self.send(Message::Ping(Default::default()))
                .await
                .map_err(axum_error)
        }

        async fn recv(&mut self) -> Option<Result<Incoming, FrameError>> {
            Some(match self.next().await? {
                Ok(Message::Binary(data)) => Ok(Incoming::Binary(Vec::from(data))),
                Ok(Message::Text(_)) => Ok(Incoming::Text),
                Ok(Message::Ping(_)) => Ok(Incoming::Ping),
                Ok(Message::Pong(_)) => Ok(Incoming::Pong),
                Ok(Message::Close(frame)) => {
                    Ok(Incoming::Close(frame.map(|frame| {
                        (frame.code, frame.reason.as_str().to_owned())
                    })))
                }
                Err(error) => Err(axum_error(error)),
            })
        }

        async fn flush(&mut self) -> Result<(), FrameError> {
            SinkExt::flush(self).await.map_err(axum_error)
        }

        async fn close(&mut self, code: u16, reason: &str) -> Result<(), FrameError> {
            let frame = CloseFrame {
                code,
                reason: crate::opening::truncate(reason, crate::opening::MAX_REASON_BYTES).into(),
            };
            self.send(Message::Close(Some(frame)))
                .await
                .map_err(axum_error)
        }
    }
}
