//! One WebSocket connection: admission at the edge (hello, challenge,
//! proof → admitted or rejected), then frames in both directions. Sessions
//! never touch the model or the rounds; they turn bytes into [`Event`]s for
//! the training loop and send the frames it hands them (the welcome first).
//!
//! Before admission a socket may send at most
//! [`hearth_protocol::MAX_JOIN_BYTES`] and has the header timeout to finish
//! joining; it learns nothing but a challenge and, if it fails, the reason.
//! After admission its messages are rate-limited.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Instant;

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use hearth_protocol::auth::NONCE_LEN;
use hearth_protocol::{self as proto, Message};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::mpsc::{UnboundedSender, unbounded_channel};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::Message as WsMessage;
use tokio_tungstenite::tungstenite::protocol::{Role, WebSocketConfig};

use crate::household::Household;
use crate::listener::{ConnPermit, ConnectionLimits};
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
    /// Who may join.
    pub household: Household,
    /// The components hosts may run.
    pub catalog: std::sync::Arc<crate::catalog::Catalog>,
    /// Digest of the module browser workers must run (the one the page serves).
    pub browser_digest: String,
    /// The architecture of the run (a worker must be able to build it).
    pub arch: String,
    /// Its parameters: no vector a worker sends may be longer (refused
    /// before it is decoded).
    pub params: usize,
    /// Next connection id.
    pub next_conn: AtomicU64,
    /// Timeouts and rates.
    pub limits: ConnectionLimits,
}

/// How often a connected device's key is checked again (revocation).
const REVOCATION_CHECK: std::time::Duration = std::time::Duration::from_secs(2);

/// Bytes a socket may still send (`usize::MAX`: no limit, once admitted).
#[derive(Debug, Clone)]
struct Budget(Arc<AtomicUsize>);

/// The upgraded connection, reading at most its [`Budget`].
struct Budgeted<T> {
    inner: T,
    budget: Budget,
}

impl<T: AsyncRead + Unpin> AsyncRead for Budgeted<T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let left = self.budget.0.load(Ordering::Relaxed);
        if left == 0 {
            return Poll::Ready(Err(std::io::Error::other(
                "sent more than a join needs before admission",
            )));
        }
        if left == usize::MAX {
            return Pin::new(&mut self.inner).poll_read(cx, buf);
        }
        // Before admission: read through a small buffer, never past the budget.
        let mut chunk = [0u8; 2048];
        let n = left.min(buf.remaining()).min(chunk.len());
        let mut limited = ReadBuf::new(&mut chunk[..n]);
        let polled = Pin::new(&mut self.inner).poll_read(cx, &mut limited);
        let filled = limited.filled();
        buf.put_slice(filled);
        self.budget.0.fetch_sub(filled.len(), Ordering::Relaxed);
        polled
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Budgeted<T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

type Socket = WebSocketStream<Budgeted<TokioIo<hyper::upgrade::Upgraded>>>;

/// `GET /ws`: upgrades to a worker session.
pub async fn upgrade(State(admission): State<Arc<Admission>>, mut req: Request) -> Response {
    let headers = req.headers();
    let wants = |name: header::HeaderName, value: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| t.trim().eq_ignore_ascii_case(value)))
    };
    if !wants(header::UPGRADE, "websocket") || !wants(header::CONNECTION, "upgrade") {
        return (StatusCode::BAD_REQUEST, "this is a WebSocket endpoint").into_response();
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return (StatusCode::BAD_REQUEST, "no Sec-WebSocket-Key").into_response();
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let permit = req.extensions().get::<ConnPermit>().cloned();
    let Some(on_upgrade) = req.extensions_mut().remove::<hyper::upgrade::OnUpgrade>() else {
        return (StatusCode::BAD_REQUEST, "the connection cannot be upgraded").into_response();
    };
    tokio::spawn(async move {
        let Ok(upgraded) = on_upgrade.await else {
            return;
        };
        let budget = Budget(Arc::new(AtomicUsize::new(proto::MAX_JOIN_BYTES)));
        let io = Budgeted {
            inner: TokioIo::new(upgraded),
            budget: budget.clone(),
        };
        let config = WebSocketConfig::default()
            .max_message_size(Some(proto::MAX_FRAME))
            .max_frame_size(Some(proto::MAX_FRAME));
        let socket = WebSocketStream::from_raw_socket(io, Role::Server, Some(config)).await;
        run(socket, admission, budget).await;
        drop(permit);
    });
    let mut response = Response::new(Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    if let Ok(v) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, v);
    }
    response
}

async fn send(socket: &mut Socket, message: &Message) -> bool {
    socket
        .send(WsMessage::Binary(proto::encode(message).into()))
        .await
        .is_ok()
}

async fn reject(socket: &mut Socket, reason: String) {
    send(socket, &Message::Reject(proto::Reject { reason })).await;
    let _ = socket.close(None).await;
}

/// Why a hello is not admitted, if it is not (before any proof).
fn refuse(hello: &proto::Hello, admission: &Admission) -> Option<String> {
    if hello.nonce.len() != NONCE_LEN {
        return Some(format!("a hello's nonce is {NONCE_LEN} bytes"));
    }
    let digest = &hello.component_digest;
    match hello.capabilities.kind {
        proto::WorkerKind::Host => {
            if let Some(reason) = admission.catalog.failure(digest) {
                return Some(format!(
                    "component {} failed on a device ({}); restart on another",
                    shown(digest),
                    shown(&reason)
                ));
            }
            if !admission.catalog.admits(digest) {
                return Some(format!(
                    "component {} is not one this household signed and this coordinator accepted",
                    shown(digest)
                ));
            }
        }
        // A tab runs the module this coordinator serves, or a component it
        // swapped to without a reload (admitted as a host's would be).
        proto::WorkerKind::Browser => {
            if digest != &admission.browser_digest && !admission.catalog.admits(digest) {
                return Some(format!(
                    "component {} is not the browser module this coordinator serves ({})",
                    shown(digest),
                    admission.browser_digest
                ));
            }
        }
    }
    if !hello.capabilities.architectures.contains(&admission.arch) {
        return Some(format!("worker cannot build {}", admission.arch));
    }
    None
}

/// The next binary message, or why there is none.
async fn next_binary(socket: &mut Socket) -> Result<Vec<u8>, String> {
    loop {
        match socket.next().await {
            Some(Ok(WsMessage::Binary(b))) => return Ok(b.into()),
            Some(Ok(WsMessage::Ping(_) | WsMessage::Pong(_))) => continue,
            Some(Ok(WsMessage::Text(_))) => {
                return Err("a text frame: the protocol is binary".into());
            }
            Some(Ok(_)) | None => return Err("closed".into()),
            Some(Err(e)) => return Err(e.to_string()),
        }
    }
}

/// Hello, challenge, proof; the admitted worker, or nothing (the socket was
/// answered and closed).
async fn join(socket: &mut Socket, admission: &Admission) -> Option<Admitted> {
    let hello_frame = match next_binary(socket).await {
        Ok(b) => b,
        Err(reason) => {
            tracing::debug!(reason = %shown(&reason), "a connection left before its hello");
            return None;
        }
    };
    let hello = match proto::decode(&hello_frame) {
        Ok(Message::Hello(h)) => h,
        Ok(other) => {
            let reason = format!("expected hello, got {}", Message::kind_name(other.kind()));
            reject(socket, reason).await;
            return None;
        }
        Err(e) => {
            tracing::warn!(error = %shown(&e.to_string()), "refused a connection: malformed hello");
            reject(socket, e.to_string()).await;
            return None;
        }
    };
    let key = match admission.household.key_for(&hello.worker_id) {
        Ok(key) => key,
        Err(reason) => {
            tracing::warn!(worker = %shown(&hello.worker_id), reason = %shown(&reason), "rejected");
            reject(socket, reason).await;
            return None;
        }
    };
    if let Some(reason) = refuse(&hello, admission) {
        tracing::warn!(worker = %shown(&hello.worker_id), reason = %shown(&reason), "rejected");
        reject(socket, reason).await;
        return None;
    }
    let mut nonce = [0u8; NONCE_LEN];
    if getrandom::fill(&mut nonce).is_err() {
        tracing::error!("no random numbers for a challenge");
        return None;
    }
    let challenge = Message::Challenge(proto::Challenge {
        nonce: nonce.to_vec(),
    });
    if !send(socket, &challenge).await {
        return None;
    }
    let proven = match next_binary(socket).await.map(|b| proto::decode(&b)) {
        Ok(Ok(Message::Proof(p))) => key.check_worker_proof(&nonce, &hello_frame, &p.mac),
        _ => false,
    };
    if !proven {
        let reason = "wrong key: the proof does not match this device's key".to_string();
        tracing::warn!(worker = %shown(&hello.worker_id), "rejected: wrong key");
        reject(socket, reason).await;
        return None;
    }
    Some(Admitted {
        name: hello.worker_id,
        kind: hello.capabilities.kind,
        component: hello.component_digest,
        encodings: hello.capabilities.encodings,
        sample_cache: hello.capabilities.sample_cache,
        proof: key.coordinator_proof(&hello.nonce, &nonce),
    })
}

/// Messages an admitted worker may still send now (a token bucket).
struct Rate {
    per_second: f64,
    tokens: f64,
    last: Instant,
}

impl Rate {
    fn new(per_second: f64) -> Self {
        Self {
            per_second,
            tokens: 2.0 * per_second,
            last: Instant::now(),
        }
    }

    /// Takes one message's token; false when the worker is over its rate.
    fn take(&mut self) -> bool {
        let now = Instant::now();
        let refill = now.duration_since(self.last).as_secs_f64() * self.per_second;
        self.tokens = (self.tokens + refill).min(2.0 * self.per_second);
        self.last = now;
        if self.tokens < 1.0 {
            return false;
        }
        self.tokens -= 1.0;
        true
    }
}

async fn run(mut socket: Socket, admission: Arc<Admission>, budget: Budget) {
    let timeout = admission.limits.header_timeout();
    let worker = match tokio::time::timeout(timeout, join(&mut socket, &admission)).await {
        Ok(Some(worker)) => worker,
        Ok(None) => return,
        Err(_) => {
            tracing::debug!("a connection did not finish joining in time");
            let _ = socket.close(None).await;
            return;
        }
    };
    budget.0.store(usize::MAX, Ordering::Relaxed);
    let conn = admission.next_conn.fetch_add(1, Ordering::Relaxed);
    let (tx, mut rx) = unbounded_channel::<Vec<u8>>();
    let name = worker.name.clone();
    let joined = Event::Joined {
        conn,
        worker,
        frames: tx,
    };
    if admission.events.send(joined).is_err() {
        // Training is over (the loop no longer listens): say so, so the
        // worker stops instead of reconnecting.
        let reason = "training finished".to_string();
        send(&mut socket, &Message::Goodbye(proto::Goodbye { reason })).await;
        let _ = socket.close(None).await;
        return;
    }
    let mut rate = Rate::new(admission.limits.max_message_rate);
    let mut recheck = tokio::time::interval(REVOCATION_CHECK);
    recheck.tick().await;
    loop {
        tokio::select! {
            _ = recheck.tick() => {
                // A device revoked while connected leaves now, not at its next join.
                if let Err(reason) = admission.household.key_for(&name) {
                    tracing::warn!(worker = %shown(&name), reason = %shown(&reason), "disconnected");
                    send(&mut socket, &Message::Goodbye(proto::Goodbye { reason })).await;
                    break;
                }
            },
            out = rx.recv() => match out {
                Some(frame) => {
                    if socket.send(WsMessage::Binary(frame.into())).await.is_err() {
                        break;
                    }
                }
                // The training loop dropped us (goodbye already queued and sent).
                None => break,
            },
            incoming = socket.next() => {
                let Some(Ok(message)) = incoming else { break };
                if !rate.take() {
                    tracing::warn!(worker = %shown(&name), "disconnected: over its message rate");
                    break;
                }
                let event = match message {
                    WsMessage::Binary(b) => match proto::decode_within(&b, admission.params) {
                        Ok(message) => Event::Input(Input::Frame { conn, bytes: b.len(), message }),
                        Err(e) => Event::Input(Input::Garbage { conn, bytes: b.len(), error: e.to_string() }),
                    },
                    WsMessage::Text(t) => Event::Input(Input::Garbage {
                        conn,
                        bytes: t.len(),
                        error: "text frame: the protocol is binary".into(),
                    }),
                    WsMessage::Close(_) => break,
                    _ => continue, // ping/pong
                };
                if admission.events.send(event).is_err() {
                    break;
                }
            },
        }
    }
    let _ = socket.close(None).await;
    let _ = admission.events.send(Event::Input(Input::Left { conn }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_allows_bursts_of_twice_the_rate_then_refuses() {
        let mut r = Rate::new(5.0);
        let allowed = (0..20).filter(|_| r.take()).count();
        assert_eq!(allowed, 10);
    }
}
