//! `hearth-host work`: join a coordinator and train the rounds it assigns.
//!
//! The loop is deliberately sequential (receive an assignment, train, send
//! the result), so it uses a blocking WebSocket client. A dropped connection
//! is retried with exponential backoff; a `Reject` (wrong token, different
//! component) ends the process, since retrying cannot fix it.

use std::net::TcpStream;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hearth_protocol::{self as proto, Message};
use hearth_runtime::{ComponentModel, Limits, OnOverrun, Runtime};

use crate::overrun;
use hearth_worker::{ModelConfig, OptimizerConfig};
use tungstenite::stream::MaybeTlsStream;
use tungstenite::{Message as WsMessage, WebSocket};

/// Options of `work`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// Coordinator endpoint, e.g. ws://192.168.1.10:7070/ws.
    #[arg(long)]
    coordinator: String,
    /// The household's shared secret.
    #[arg(long, default_value = "hearth-local")]
    token: String,
    /// This device's name (default: host name and process id).
    #[arg(long)]
    name: Option<String>,
    /// Longest wait between reconnection attempts, in seconds.
    #[arg(long, default_value_t = 30)]
    max_backoff: u64,
    /// Longest time, in seconds, one component call may take. A watchdog
    /// restarts this process in place (same id) when a call runs longer; the
    /// coordinator reassigns the round's batches.
    #[arg(long, default_value_t = 600.0)]
    call_timeout: f64,
}

type Socket = WebSocket<MaybeTlsStream<TcpStream>>;

/// How a session ended.
enum End {
    /// The coordinator said goodbye: stop.
    Finished,
    /// The connection dropped after a welcome: reconnect right away.
    Dropped(anyhow::Error),
}

/// Connects, trains until the coordinator says goodbye, reconnecting on failure.
pub fn run(args: Args) -> Result<()> {
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "device".into());
        format!("{}-{}", host.trim(), std::process::id())
    });
    let call_timeout = Duration::try_from_secs_f64(args.call_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--call-timeout must be a positive number of seconds")?;
    let runtime = Runtime::new(Limits {
        call_timeout: Some(call_timeout),
        on_overrun: OnOverrun::EndProcess(overrun::restart),
        ..Limits::default()
    })?;
    let component = runtime.load_builtin()?;
    let restarts = overrun::restarts_so_far();
    if restarts > 0 {
        // A component that overruns every time must not become a tight
        // restart loop: wait 1, 2, 4 ... s, up to --max-backoff.
        let wait = Duration::from_secs((1u64 << restarts.min(16)) / 2).clamp(
            Duration::from_secs(1),
            Duration::from_secs(args.max_backoff.max(1)),
        );
        tracing::warn!(restarts, ?wait, "restarted after a component call overran");
        std::thread::sleep(wait);
    }
    let mut backoff = Duration::from_millis(250);
    loop {
        match session(&args, &name, &runtime, &component) {
            Ok(End::Finished) => return Ok(()),
            Ok(End::Dropped(e)) => {
                tracing::warn!(error = %format!("{e:#}"), "connection lost; reconnecting");
                backoff = Duration::from_millis(250);
            }
            Err(e) => {
                if e.downcast_ref::<Rejected>().is_some() {
                    return Err(e);
                }
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot reach the coordinator");
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(Duration::from_secs(args.max_backoff.max(1)));
    }
}

/// The coordinator refused this worker.
#[derive(Debug, thiserror::Error)]
#[error("the coordinator rejected this worker: {0}")]
struct Rejected(String);

fn send(socket: &mut Socket, message: &Message) -> Result<()> {
    socket.send(WsMessage::Binary(proto::encode(message).into()))?;
    Ok(())
}

fn receive(socket: &mut Socket) -> Result<Option<Message>> {
    loop {
        match socket.read()? {
            WsMessage::Binary(b) => return Ok(Some(proto::decode(&b)?)),
            WsMessage::Close(_) => return Ok(None),
            _ => {}
        }
    }
}

fn session(
    args: &Args,
    name: &str,
    runtime: &Runtime,
    component: &hearth_runtime::LoadedComponent,
) -> Result<End> {
    let (mut socket, _) = tungstenite::connect(&args.coordinator)
        .with_context(|| format!("connecting to {}", args.coordinator))?;
    let architectures = ComponentModel::architectures(runtime, component)?;
    send(
        &mut socket,
        &Message::Hello(proto::Hello {
            worker_id: name.to_string(),
            auth_token: args.token.clone(),
            component_digest: component.digest().to_string(),
            capabilities: proto::Capabilities {
                kind: proto::WorkerKind::Host,
                architectures,
                threads: 1,
                memory_mib: (runtime.limits().memory_bytes >> 20) as u32,
                images_per_second: 0.0,
            },
        }),
    )?;
    let welcome = match receive(&mut socket)? {
        Some(Message::Welcome(w)) => w,
        Some(Message::Reject(r)) => return Err(Rejected(r.reason).into()),
        other => bail!("expected welcome, got {other:?}"),
    };
    let opt = welcome.optimizer;
    let optimizer = OptimizerConfig {
        learning_rate: opt.learning_rate,
        momentum: opt.momentum,
        weight_decay: opt.weight_decay,
    };
    let mut model = ComponentModel::new(
        runtime,
        component,
        &ModelConfig {
            arch: welcome.arch.clone(),
            seed: welcome.seed,
            optimizer,
        },
    )?;
    tracing::info!(worker = name, arch = %welcome.arch, "joined");
    loop {
        let message = match receive(&mut socket) {
            Ok(Some(m)) => m,
            Ok(None) => {
                return Ok(End::Dropped(anyhow::anyhow!(
                    "the coordinator closed the connection"
                )));
            }
            Err(e) => return Ok(End::Dropped(e)),
        };
        match message {
            Message::Assign(a) => {
                let reply = proto::round::run_round(
                    &mut Trainer {
                        model: &mut model,
                        optimizer,
                    },
                    a,
                )?;
                if let Err(e) = send(&mut socket, &reply) {
                    return Ok(End::Dropped(e));
                }
            }
            Message::Goodbye(g) => {
                tracing::info!(reason = %g.reason, "coordinator said goodbye");
                let _ = socket.close(None);
                return Ok(End::Finished);
            }
            Message::Error(e) => {
                tracing::warn!(round = ?e.round, reason = %e.reason, "coordinator refused a message")
            }
            _ => {}
        }
    }
}

/// The component model with the welcome's optimizer settings, as a round trainer.
struct Trainer<'a> {
    model: &'a mut ComponentModel,
    optimizer: OptimizerConfig,
}

impl proto::round::LocalTrainer for Trainer<'_> {
    type Error = anyhow::Error;
    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        Ok(self.model.set_params(params)?)
    }
    fn params(&mut self) -> Result<Vec<f32>> {
        Ok(self.model.params()?)
    }
    fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        Ok(self.model.set_optimizer(OptimizerConfig {
            learning_rate: lr,
            ..self.optimizer
        })?)
    }
    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32)> {
        let s = self.model.train_batch(pixels, labels)?;
        Ok((s.loss, s.correct))
    }
}
