//! One WebSocket connection: admission at the edge (hello → admitted or
//! rejected), then frames in both directions. Sessions never touch the model
//! or the rounds; they turn bytes into [`Event`]s for the training loop and
//! send the frames it hands them (the welcome first).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::State;
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::response::Response;
use hearth_protocol::{self as proto, Message};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};

use crate::observe::shown;

pub use crate::engine::ConnId;
use crate::engine::{Admitted, Input};

/// What sessions report to the training loop: an admission, with the
/// channel that sends to the worker, or an input for the round engine.
#[derive(Debug)]
pub enum Event {
    /// A worker was admitted; `frames` sends to it.
    Joined {
        /// Connection.
        conn: ConnId,
        /// Who it is.
        worker: Admitted,
        /// Outgoing frames.
        frames: UnboundedSender<Vec<u8>>,
    },
    /// A frame, garbage, or the end of the connection.
    Input(Input),
}

/// Shared by all sessions.
pub struct Admission {
    /// Where sessions report.
    pub events: std::sync::mpsc::Sender<Event>,
    /// The household's shared secret.
    pub token: String,
    /// Digest of the component hosts must run.
    pub component_digest: String,
    /// Digest of the module browser workers must run (the one the page serves).
    pub browser_digest: String,
    /// The architecture of the run (a worker must be able to build it).
    pub arch: String,
    /// Next connection id.
    pub next_conn: AtomicU64,
}

/// `GET /ws`: upgrades to a worker session.
pub async fn upgrade(ws: WebSocketUpgrade, State(admission): State<Arc<Admission>>) -> Response {
    ws.max_message_size(proto::MAX_FRAME)
        .on_upgrade(move |socket| run(socket, admission))
}

async fn send(socket: &mut WebSocket, message: &Message) -> bool {
    socket
        .send(WsMessage::Binary(proto::encode(message).into()))
        .await
        .is_ok()
}

/// Why a hello is not admitted, if it is not.
fn refuse(hello: &proto::Hello, admission: &Admission) -> Option<String> {
    if hello.auth_token != admission.token {
        return Some("wrong auth token".into());
    }
    let expected = match hello.capabilities.kind {
        proto::WorkerKind::Host => &admission.component_digest,
        proto::WorkerKind::Browser => &admission.browser_digest,
    };
    if &hello.component_digest != expected {
        return Some(format!(
            "component {} is not the one this coordinator runs ({expected})",
            hello.component_digest
        ));
    }
    if !hello.capabilities.architectures.contains(&admission.arch) {
        return Some(format!("worker cannot build {}", admission.arch));
    }
    if hello.worker_id.is_empty() || hello.worker_id.len() > 128 {
        return Some("worker id must be 1 to 128 bytes".into());
    }
    None
}

async fn run(mut socket: WebSocket, admission: Arc<Admission>) {
    let first = tokio::time::timeout(Duration::from_secs(10), socket.recv()).await;
    let hello = match first {
        Ok(Some(Ok(WsMessage::Binary(b)))) => match proto::decode(&b) {
            Ok(Message::Hello(h)) => h,
            Ok(other) => {
                let reason = format!("expected hello, got kind {}", other.kind());
                send(&mut socket, &Message::Reject(proto::Reject { reason })).await;
                return;
            }
            Err(e) => {
                tracing::warn!(error = %e, "refused a connection: malformed hello");
                send(
                    &mut socket,
                    &Message::Reject(proto::Reject {
                        reason: e.to_string(),
                    }),
                )
                .await;
                return;
            }
        },
        _ => return,
    };
    if let Some(reason) = refuse(&hello, &admission) {
        tracing::warn!(worker = %shown(&hello.worker_id), reason = %shown(&reason), "rejected");
        send(&mut socket, &Message::Reject(proto::Reject { reason })).await;
        return;
    }
    let conn = admission.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = unbounded_channel::<Vec<u8>>();
    let joined = Event::Joined {
        conn,
        worker: Admitted {
            name: hello.worker_id,
            kind: hello.capabilities.kind,
            component: hello.component_digest,
        },
        frames: tx,
    };
    if admission.events.send(joined).is_err() {
        // Training is over (the loop no longer listens): say so, so the
        // worker stops instead of reconnecting.
        let reason = "training finished".to_string();
        send(&mut socket, &Message::Goodbye(proto::Goodbye { reason })).await;
        let _ = socket.send(WsMessage::Close(None)).await;
        return;
    }
    loop {
        tokio::select! {
            out = rx.recv() => match out {
                Some(frame) => {
                    if socket.send(WsMessage::Binary(frame.into())).await.is_err() {
                        break;
                    }
                }
                // The training loop dropped us (goodbye already queued and sent).
                None => break,
            },
            incoming = socket.recv() => match incoming {
                Some(Ok(WsMessage::Binary(b))) => {
                    let event = match proto::decode(&b) {
                        Ok(message) => Event::Input(Input::Frame { conn, bytes: b.len(), message }),
                        Err(e) => Event::Input(Input::Garbage { conn, bytes: b.len(), error: e.to_string() }),
                    };
                    if admission.events.send(event).is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Text(t))) => {
                    let event = Event::Input(Input::Garbage { conn, bytes: t.len(), error: "text frame: the protocol is binary".into() });
                    if admission.events.send(event).is_err() {
                        break;
                    }
                }
                Some(Ok(WsMessage::Close(_))) | Some(Err(_)) | None => break,
                Some(Ok(_)) => {} // ping/pong
            },
        }
    }
    let _ = socket.send(WsMessage::Close(None)).await;
    let _ = admission.events.send(Event::Input(Input::Left { conn }));
}
