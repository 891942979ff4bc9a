//! A raw protocol client for tests that play a misbehaving worker.

use hearth_protocol::{self as proto, Message};
use tungstenite::Message as Ws;

/// A WebSocket to the coordinator.
pub type Socket = tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>;

/// Connects to `url`.
pub fn connect(url: &str) -> Socket {
    tungstenite::connect(url).expect("connect").0
}

/// Sends one message.
pub fn send(s: &mut Socket, m: &Message) {
    s.send(Ws::Binary(proto::encode(m).into())).expect("send");
}

/// The next message, or `None` when the connection closed.
pub fn next(s: &mut Socket) -> Option<Message> {
    loop {
        match s.read() {
            Ok(Ws::Binary(b)) => {
                return Some(proto::decode(&b).expect("coordinator frames decode"));
            }
            Ok(Ws::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A hello from a host named `name`.
pub fn hello_as(name: &str, token: &str, digest: &str) -> Message {
    Message::Hello(proto::Hello {
        worker_id: name.into(),
        auth_token: token.into(),
        component_digest: digest.into(),
        capabilities: proto::Capabilities {
            kind: proto::WorkerKind::Host,
            architectures: vec!["lenet5".into()],
            threads: 1,
            memory_mib: 64,
            images_per_second: 0.0,
        },
    })
}

/// The next assignment (other messages are skipped), or `None` when the connection closed.
pub fn next_assignment(s: &mut Socket) -> Option<proto::Assign> {
    loop {
        if let Message::Assign(a) = next(s)? {
            return Some(a);
        }
    }
}
