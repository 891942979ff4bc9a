//! A raw protocol client for tests that play a misbehaving worker.

use hearth_protocol::auth::{DEV_SECRET, DeviceKey, NONCE_LEN};
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

/// The next message (images sent ahead are skipped), or `None` when the connection closed.
pub fn next(s: &mut Socket) -> Option<Message> {
    loop {
        match s.read() {
            Ok(Ws::Binary(b)) => match proto::decode(&b).expect("coordinator frames decode") {
                // Images sent ahead: a raw client trains on nothing, and an
                // assignment that names them says how many samples it covers.
                Message::Prefetch(_) => {}
                other => return Some(other),
            },
            Ok(Ws::Close(_)) | Err(_) => return None,
            Ok(_) => {}
        }
    }
}

/// A hello from a host named `name`.
pub fn hello_as(name: &str, digest: &str) -> Message {
    Message::Hello(proto::Hello {
        worker_id: name.into(),
        nonce: vec![42; NONCE_LEN],
        component_digest: digest.into(),
        capabilities: proto::Capabilities {
            kind: proto::WorkerKind::Host,
            architectures: vec!["lenet5".into()],
            threads: 1,
            memory_mib: 64,
            images_per_second: 0.0,
            // f32 only: every assignment carries the whole model.
            encodings: Vec::new(),
            sample_cache: 0,
        },
    })
}

/// The key a device named `name` has in the development household.
pub fn dev_key(name: &str) -> DeviceKey {
    DeviceKey::derive(DEV_SECRET, name)
}

/// Joins as host `name` proving `key`: hello, the challenge's proof; returns
/// the coordinator's answer (a welcome or a reject), or `None` if it closed.
pub fn join_as(s: &mut Socket, name: &str, key: &DeviceKey, digest: &str) -> Option<Message> {
    let hello = hello_as(name, digest);
    let frame = proto::encode(&hello);
    s.send(Ws::Binary(frame.clone().into())).expect("send");
    match next(s)? {
        Message::Challenge(c) => {
            let mac = key.worker_proof(&c.nonce, &frame);
            send(s, &Message::Proof(proto::Proof { mac }));
            next(s)
        }
        other => Some(other),
    }
}

/// The next assignment (other messages are skipped), or `None` when the connection closed.
pub fn next_assignment(s: &mut Socket) -> Option<proto::Assign> {
    loop {
        if let Message::Assign(a) = next(s)? {
            return Some(a);
        }
    }
}

/// A result for assignment `a` carrying `values` and these statistics (true
/// or not): what a worker, honest or lying, sends back.
pub fn result_for(a: &proto::Assign, values: Vec<f32>, loss_sum: f64, correct: u32) -> Message {
    Message::Result(proto::RoundResult {
        round: a.round,
        params_version: a.params_version,
        samples: a.steps.iter().sum::<u32>(),
        loss_sum,
        correct,
        kind: a.reply,
        values,
        encoding: proto::Encoding::F32,
        compute_seconds: 0.0,
    })
}
