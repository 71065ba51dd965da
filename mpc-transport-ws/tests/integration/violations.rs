//! Frames a peer must not send: each closes the socket with the documented
//! code, and nothing panics.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::common;

use std::time::Duration;

use common::*;
use futures_util::{SinkExt, StreamExt};
use mpc_transport_ws::opening::{encode_frame, FrameKind, Outcome};
use mpc_transport_ws::{CloseCode, Operation, Phase, TransportConfig, TransportError};
use tokio_tungstenite::tungstenite::protocol::frame::coding::{Data, OpCode};
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::Message;

/// Opens a raw keygen session and sends `frames` after the opening; returns
/// what the raw client saw and the server's result.
async fn after_opening(
    config: TransportConfig,
    frames: Vec<Message>,
) -> (Ending, Result<&'static str, TransportError>) {
    let mut server = TestServer::start(config, Fault::None).await;
    let mut socket = raw_connect(&server.url).await;
    send_binary(&mut socket, opening_frame(Operation::Keygen)).await;
    for frame in frames {
        socket.send(frame).await.unwrap();
    }
    let ending = read_to_end(&mut socket).await;
    (ending, server.next_result().await)
}

/// Sends `first` as the first frame of a raw session.
async fn as_opening(message: Message) -> (Ending, Result<&'static str, TransportError>) {
    let mut server = TestServer::start(test_config(), Fault::None).await;
    let mut socket = raw_connect(&server.url).await;
    socket.send(message).await.unwrap();
    let ending = read_to_end(&mut socket).await;
    (ending, server.next_result().await)
}

fn violation(code: CloseCode, reason: &'static str) -> Result<&'static str, TransportError> {
    Err(TransportError::Violation { code, reason })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_over_the_frame_limit_closes_with_1009() {
    bounded(async {
        let mut config = test_config();
        config.max_frame_bytes = 8 * 1024;
        let big = encode_frame(FrameKind::Message, &[0u8; 10 * 1024]);
        let (ending, result) = after_opening(config, vec![Message::Binary(big.into())]).await;
        assert_closed_with(&ending, 1009);
        assert_eq!(
            result,
            violation(CloseCode::MESSAGE_TOO_BIG, "message too big")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn message_over_the_message_limit_closes_with_1009() {
    bounded(async {
        // Three fragments, each under the frame limit, together over the
        // message limit (129 KiB by default).
        let config = test_config();
        let part = vec![2u8; 60 * 1024];
        let fragments = vec![
            Message::Frame(Frame::message(
                part.clone(),
                OpCode::Data(Data::Binary),
                false,
            )),
            Message::Frame(Frame::message(
                part.clone(),
                OpCode::Data(Data::Continue),
                false,
            )),
            Message::Frame(Frame::message(part, OpCode::Data(Data::Continue), true)),
        ];
        let (ending, result) = after_opening(config, fragments).await;
        assert_closed_with(&ending, 1009);
        assert_eq!(
            result,
            violation(CloseCode::MESSAGE_TOO_BIG, "message too big")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_oversized_frame_at_the_default_limit_closes_with_1009() {
    bounded(async {
        let config = test_config();
        let big = vec![2u8; config.max_message_bytes + 1];
        let (ending, result) = after_opening(config, vec![Message::Binary(big.into())]).await;
        assert_closed_with(&ending, 1009);
        assert_eq!(
            result,
            violation(CloseCode::MESSAGE_TOO_BIG, "message too big")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn text_frame_closes_with_1008() {
    bounded(async {
        let (ending, result) =
            after_opening(test_config(), vec![Message::Text("hello".into())]).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(result, violation(CloseCode::POLICY_VIOLATION, "text frame"));

        // Also in place of the opening.
        let (ending, result) = as_opening(Message::Text("{\"op\":\"keygen\"}".into())).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(result, violation(CloseCode::POLICY_VIOLATION, "text frame"));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_closes_the_socket() {
    bounded(async {
        let garbage = b"\xde\xad\xbe\xef garbage \x00\xff".to_vec();

        // As the opening: invalid opening.
        let (ending, result) = as_opening(Message::Binary(garbage.clone().into())).await;
        assert_closed_with(&ending, 4005);
        assert_eq!(
            result,
            Err(TransportError::OpeningInvalid {
                reason: "expected an opening"
            })
        );

        // After the opening, a frame of unknown kind: policy violation.
        let (ending, result) =
            after_opening(test_config(), vec![Message::Binary(garbage.clone().into())]).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(CloseCode::POLICY_VIOLATION, "malformed frame")
        );

        // An empty binary frame likewise.
        let (ending, result) =
            after_opening(test_config(), vec![Message::Binary(Vec::new().into())]).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(CloseCode::POLICY_VIOLATION, "malformed frame")
        );

        // A message frame whose envelope is garbage: an Ignore-class error,
        // dropped and counted; with no ignored frame allowed, 1008.
        let mut config = test_config();
        config.max_ignored_frames = 0;
        let frame = encode_frame(FrameKind::Message, &garbage);
        let (ending, result) = after_opening(config, vec![Message::Binary(frame.into())]).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(CloseCode::POLICY_VIOLATION, "too many ignored frames")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_for_another_session_are_ignored_then_close_with_1008() {
    bounded(async {
        // A genuine envelope of another session: WrongSession, Ignore class.
        let mut config = test_config();
        config.max_ignored_frames = 0;
        let (ending, result) =
            after_opening(config, vec![Message::Binary(foreign_message().into())]).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(CloseCode::POLICY_VIOLATION, "too many ignored frames")
        );
        // The server sent its first round before it read the stray frame.
        assert_eq!(ending.messages, 1);

        // With two allowed, the third closes.
        let mut config = test_config();
        config.max_ignored_frames = 2;
        let frames = (0..3)
            .map(|_| Message::Binary(foreign_message().into()))
            .collect();
        let (ending, result) = after_opening(config, frames).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(CloseCode::POLICY_VIOLATION, "too many ignored frames")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_openings_close_with_4005() {
    bounded(async {
        // A protocol message before any opening.
        let (ending, result) = as_opening(Message::Binary(foreign_message().into())).await;
        assert_closed_with(&ending, 4005);
        assert_eq!(
            result,
            Err(TransportError::OpeningInvalid {
                reason: "expected an opening"
            })
        );

        // An opening of an unknown version.
        let mut frame = opening_frame(Operation::Keygen);
        frame[1] = 2;
        let (ending, result) = as_opening(Message::Binary(frame.into())).await;
        assert_closed_with(&ending, 4005);
        assert_eq!(
            result,
            Err(TransportError::OpeningInvalid {
                reason: "unsupported opening version"
            })
        );

        // An opening with trailing bytes.
        let mut frame = opening_frame(Operation::Keygen);
        frame.push(0);
        let (ending, _) = as_opening(Message::Binary(frame.into())).await;
        assert_closed_with(&ending, 4005);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_or_bogus_outcomes_close_with_1008() {
    bounded(async {
        // "Ok" while the protocol runs.
        let ok = encode_frame(FrameKind::Outcome, &Outcome::Ok.encode());
        let (ending, result) = after_opening(test_config(), vec![Message::Binary(ok.into())]).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(
                CloseCode::POLICY_VIOLATION,
                "outcome before the protocol finished"
            )
        );
        // An undecodable outcome.
        let bogus = encode_frame(FrameKind::Outcome, &[9, 9, 9]);
        let (ending, result) =
            after_opening(test_config(), vec![Message::Binary(bogus.into())]).await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(CloseCode::POLICY_VIOLATION, "malformed outcome")
        );
        // A second opening.
        let (ending, result) = after_opening(
            test_config(),
            vec![Message::Binary(opening_frame(Operation::Keygen).into())],
        )
        .await;
        assert_closed_with(&ending, 1008);
        assert_eq!(
            result,
            violation(CloseCode::POLICY_VIOLATION, "unexpected opening")
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_enforces_the_rules_too() {
    bounded(async {
        // A raw server that answers the opening with a text frame.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}", listener.local_addr().unwrap());
        let server = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut socket = tokio_tungstenite::accept_async(stream).await.unwrap();
            let _opening = socket.next().await.unwrap().unwrap();
            socket.send(Message::Text("hi".into())).await.unwrap();
            let mut outcome = None;
            let mut close = None;
            while let Some(Ok(message)) = socket.next().await {
                match message {
                    Message::Binary(data) if data.first() == Some(&3) => {
                        outcome = Some(Outcome::decode(&data[1..]).unwrap());
                    }
                    Message::Close(frame) => close = frame.map(|f| u16::from(f.code)),
                    _ => {}
                }
            }
            (outcome, close)
        });
        let client = mpc_transport_ws::Client::new(url).with_config(test_config());
        assert_eq!(
            client.keygen().await.unwrap_err(),
            TransportError::Violation {
                code: CloseCode::POLICY_VIOLATION,
                reason: "text frame"
            }
        );
        let (outcome, close) = tokio::time::timeout(Duration::from_secs(5), server)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(close, Some(1008));
        assert!(matches!(
            outcome,
            Some(Outcome::Failed {
                code: CloseCode::POLICY_VIOLATION,
                class: None,
                ..
            })
        ));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stray_frames_do_not_restart_the_message_timeout() {
    bounded(async {
        let mut config = test_config();
        config.message_timeout = Duration::from_millis(500);
        let mut server = TestServer::start(config, Fault::None).await;
        let mut socket = raw_connect(&server.url).await;
        send_binary(&mut socket, opening_frame(Operation::Keygen)).await;
        let started = tokio::time::Instant::now();
        for _ in 0..3 {
            tokio::time::sleep(Duration::from_millis(150)).await;
            send_binary(&mut socket, foreign_message()).await;
        }
        let ending = read_to_end(&mut socket).await;
        assert_closed_with(&ending, 4004);
        // Had each stray frame restarted the wait, the timeout would come
        // 500 ms after the last one, at about 950 ms.
        assert!(
            started.elapsed() < Duration::from_millis(850),
            "{:?}",
            started.elapsed()
        );
        assert_eq!(
            server.next_result().await,
            Err(TransportError::Timeout {
                phase: Phase::Protocol,
                limit: mpc_transport_ws::TimeoutKind::Message
            })
        );
    })
    .await;
}
