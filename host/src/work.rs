//! `hearth-host work`: join a coordinator and train the rounds it assigns.
//!
//! The protocol is `hearth-session`'s [`WorkerSession`] (the same state
//! machine the browser runs); this file moves its frames over a blocking
//! WebSocket and keeps the component behind the session's [`Trainer`] trait.
//! A dropped connection is retried with exponential backoff; a `Reject`
//! (wrong token, different component) or a model that cannot be built ends
//! the process, since retrying cannot fix it. A round that fails is reported
//! to the coordinator for that round, and the session goes on.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use hearth_protocol as proto;
use hearth_protocol::auth::{DEV_SECRET, DeviceKey, NONCE_LEN, PairingLink};
use hearth_runtime::{ComponentModel, Limits, LoadedComponent, OnOverrun, Runtime};
use hearth_session::{Identity, Phase, Trainer, WorkerSession};
use hearth_worker::ModelConfig;
use tungstenite::{Message as WsMessage, WebSocket};

use crate::overrun;
use crate::tls::{self, Stream};

/// Options of `work`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// The pairing string `hearth-coordinator pair` printed
    /// (hearth://HOST:PORT/?device=ID&key=CODE): coordinator, name and key in one.
    #[arg(long, env = "HEARTH_PAIR", hide_env_values = true)]
    pair: Option<String>,
    /// Coordinator endpoint, e.g. ws://192.168.1.10:7070/ws (or --pair).
    #[arg(long, required_unless_present = "pair")]
    coordinator: Option<String>,
    /// This device's pairing code (with --name, the id it was paired as).
    #[arg(long, env = "HEARTH_KEY", hide_env_values = true)]
    key: Option<String>,
    /// The household secret (the device's key is derived from it and
    /// --name); without --pair, --key or --secret, the public development
    /// secret, which only a loopback coordinator accepts.
    #[arg(long, env = "HEARTH_SECRET", hide_env_values = true)]
    secret: Option<String>,
    /// The SHA-256 fingerprint of the coordinator's TLS certificate, for a
    /// wss:// coordinator (the pairing string carries it).
    #[arg(long)]
    tls_fingerprint: Option<String>,
    /// Run this signed component (FILE.sig next to it) instead of the one
    /// built into the binary; it must be signed by a --trust key.
    #[arg(long, requires = "trust")]
    component: Option<std::path::PathBuf>,
    /// A component-signing public key this device trusts (hex; repeat for several).
    #[arg(long)]
    trust: Vec<String>,
    /// This device's id (default: host name and process id).
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

/// Where to connect, as whom, with which key, trusting which certificate
/// (from the flags).
fn credentials(args: &Args) -> Result<(String, String, DeviceKey, Option<String>)> {
    if let Some(link) = &args.pair {
        let link = PairingLink::parse(link).map_err(anyhow::Error::msg)?;
        return Ok((link.url(), link.device, link.key, link.tls));
    }
    let url = args
        .coordinator
        .clone()
        .context("--coordinator or --pair is needed")?;
    let name = args.name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname").unwrap_or_else(|_| "device".into());
        let host: String = host
            .trim()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .collect();
        format!("{host}-{}", std::process::id())
    });
    let key = match (&args.key, &args.secret) {
        (Some(code), _) => DeviceKey::from_code(code).map_err(|e| anyhow::anyhow!("--key: {e}"))?,
        (None, Some(secret)) => DeviceKey::derive(secret, &name),
        (None, None) => DeviceKey::derive(DEV_SECRET, &name),
    };
    Ok((url, name, key, args.tls_fingerprint.clone()))
}

/// Connects, trains until the coordinator says goodbye, reconnecting on failure.
pub fn run(args: Args) -> Result<()> {
    let (url, name, key, fingerprint) = credentials(&args)?;
    let tls = fingerprint.as_deref().map(tls::pinned_config).transpose()?;
    let call_timeout = Duration::try_from_secs_f64(args.call_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--call-timeout must be a positive number of seconds")?;
    let runtime = Runtime::new(Limits {
        call_timeout: Some(call_timeout),
        on_overrun: OnOverrun::EndProcess(overrun::restart),
        ..Limits::default()
    })?;
    let component = match &args.component {
        Some(path) => {
            let (component, m) =
                runtime.load_signed(path, &hearth_runtime::policy(args.trust.clone()))?;
            tracing::info!(name = %m.name, version = %m.version, sha256 = %m.sha256, "running a signed component");
            component
        }
        None => runtime.load_builtin()?,
    };
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
    let identity = Identity {
        worker_id: name,
        key,
        component_digest: component.digest().to_string(),
        kind: proto::WorkerKind::Host,
        threads: 1,
        memory_mib: (runtime.limits().memory_bytes >> 20) as u32,
    };
    let mut session = WorkerSession::new(
        identity,
        ComponentTrainer {
            runtime: &runtime,
            component: &component,
            built: None,
        },
    );
    let max_backoff = Duration::from_secs(args.max_backoff.max(1));
    let mut backoff = Duration::from_millis(250);
    loop {
        let outcome = connection(&url, tls.as_ref(), &mut session);
        let phase = session.phase();
        match (outcome, phase) {
            (_, Phase::Finished) => return Ok(()),
            (_, Phase::Rejected) => {
                bail!("the coordinator rejected this worker: {}", session.note())
            }
            (_, Phase::Failed) => bail!("{}", session.note()),
            (Ok(()), Phase::Training) => {
                tracing::warn!("the coordinator closed the connection; reconnecting");
                backoff = Duration::from_millis(250);
            }
            (Err(e), Phase::Training) => {
                tracing::warn!(error = %format!("{e:#}"), "connection lost; reconnecting");
                backoff = Duration::from_millis(250);
            }
            (Ok(()), Phase::Joining) => {
                tracing::warn!(retry_in = ?backoff, "the coordinator closed the connection before a welcome");
            }
            (Err(e), Phase::Joining) => {
                tracing::warn!(error = %format!("{e:#}"), retry_in = ?backoff, "cannot reach the coordinator");
            }
        }
        std::thread::sleep(backoff);
        backoff = (backoff * 2).min(max_backoff);
    }
}

type Socket = WebSocket<Stream>;

/// One connection: hello, then every frame through the session, until the
/// session is over for good or the connection ends.
fn connection(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    session: &mut WorkerSession<ComponentTrainer<'_>>,
) -> Result<()> {
    // The hello first: it puts the session back to joining, so a failed
    // connect counts as one (and backs off).
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    let hello = session.hello(nonce)?;
    let mut socket = tls::connect(url, tls).with_context(|| format!("connecting to {url}"))?;
    send(&mut socket, hello)?;
    let mut joined = false;
    loop {
        let frame = match socket.read()? {
            WsMessage::Binary(b) => b,
            WsMessage::Close(_) => return Ok(()),
            _ => continue,
        };
        let reply = session.handle(&frame);
        if let Some(reply) = reply {
            send(&mut socket, reply)?;
        }
        if session.phase() == Phase::Training && !joined {
            joined = true;
            tracing::info!(note = session.note(), "joined");
        }
        if session.phase().is_final() {
            tracing::info!(note = session.note(), "session over");
            let _ = socket.close(None);
            return Ok(());
        }
    }
}

fn send(socket: &mut Socket, frame: Vec<u8>) -> Result<()> {
    socket.send(WsMessage::Binary(frame.into()))?;
    Ok(())
}

/// The component in wasmtime as the session's trainer. A call that traps
/// leaves its instance unusable, so the model is rebuilt (same welcome) at
/// the next round, which sets every parameter anyway.
struct ComponentTrainer<'a> {
    runtime: &'a Runtime,
    component: &'a LoadedComponent,
    built: Option<(ModelConfig, Option<ComponentModel>)>,
}

impl ComponentTrainer<'_> {
    fn model(&mut self) -> Result<&mut ComponentModel> {
        let Some((config, model)) = self.built.as_mut() else {
            bail!("no model built yet");
        };
        if model.is_none() {
            tracing::warn!("rebuilding the model after a failed call");
            *model = Some(ComponentModel::new(self.runtime, self.component, config)?);
        }
        model.as_mut().context("no model")
    }

    /// Forgets the instance if `result` is a trap (it cannot be used again).
    fn check<T>(&mut self, result: hearth_runtime::Result<T>) -> Result<T> {
        if let Err(hearth_runtime::Error::Trap(_)) = &result
            && let Some((_, model)) = self.built.as_mut()
        {
            *model = None;
        }
        Ok(result?)
    }
}

impl Trainer for ComponentTrainer<'_> {
    type Error = anyhow::Error;
    fn architectures(&mut self) -> Result<Vec<String>> {
        Ok(ComponentModel::architectures(self.runtime, self.component)?)
    }
    fn build(&mut self, config: &ModelConfig) -> Result<()> {
        let model = ComponentModel::new(self.runtime, self.component, config)?;
        self.built = Some((config.clone(), Some(model)));
        Ok(())
    }
    fn set_params(&mut self, params: &[f32]) -> Result<()> {
        let r = self.model()?.set_params(params);
        self.check(r)
    }
    fn params(&mut self) -> Result<Vec<f32>> {
        let r = self.model()?.params();
        self.check(r)
    }
    fn set_learning_rate(&mut self, lr: f32) -> Result<()> {
        let m = self.model()?;
        let r = m
            .optimizer()
            .and_then(|o| m.set_optimizer(o.with_learning_rate(lr)));
        self.check(r)
    }
    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32)> {
        let r = self.model()?.train_batch(pixels, labels);
        let s = self.check(r)?;
        Ok((s.loss, s.correct))
    }
}
