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
use hearth_runtime::{ComponentStore, Limits, OnOverrun, Runtime};
use hearth_session::{Identity, Phase, WorkerSession};
use tungstenite::{Message as WsMessage, WebSocket};

use crate::component_trainer::{self, Candidate, ComponentTrainer};
use crate::overrun;
use crate::tls::{self, Stream};

/// Options of `work`.
#[derive(clap::Args, Debug)]
#[command(args_override_self = true)]
pub struct Args {
    /// A settings file, one key per option (`threads = 4`, `trust = ["…"]`);
    /// default `$HEARTH_CONFIG`, else /etc/hearth/host.toml when it exists
    /// (`HEARTH_CONFIG=""`: none). Flags given here win. Read before the
    /// command line is parsed (`main.rs`).
    #[arg(long)]
    pub config: Option<std::path::PathBuf>,
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
    /// Start on this signed component (FILE.sig next to it) instead of the
    /// one built into the binary, unless this device has proved one of its
    /// own since (it comes back on that); it must be signed by a --trust key.
    #[arg(long, requires = "trust")]
    component: Option<std::path::PathBuf>,
    /// A component-signing public key this device trusts (hex; repeat for
    /// several): offered components must be signed by one of them.
    #[arg(long, env = "HEARTH_TRUST", value_delimiter = ',')]
    trust: Vec<String>,
    /// Where this device keeps its components, their compiled artefacts,
    /// which one it runs and which failed, and its audit file (default:
    /// `$HEARTH_HOME/device-NAME`, else `~/.local/state/hearth/device-NAME`).
    #[arg(long, env = "HEARTH_STATE_DIR")]
    state_dir: Option<std::path::PathBuf>,
    /// Longest time, in seconds, one call of a component on trial (its
    /// self-test and its first watched rounds) may take; past it, the
    /// process restarts and comes back on the previous component.
    #[arg(long, env = "HEARTH_TRIAL_CALL_TIMEOUT", default_value_t = 30.0)]
    trial_call_timeout: f64,
    /// Memory a component instance may use, in MiB.
    #[arg(long, env = "HEARTH_MEMORY_MIB", default_value_t = hearth_session::DEFAULT_MEMORY_MIB)]
    memory_mib: usize,
    /// Training samples to keep once sent, so the coordinator need not send
    /// them again (785 bytes each; the default holds all of MNIST's 60,000,
    /// 47 MB, of which a device keeps only what it is sent; 0: none).
    #[arg(long, env = "HEARTH_SAMPLE_CACHE", default_value_t = hearth_session::DEFAULT_SAMPLE_CACHE)]
    sample_cache: u32,
    /// Stop when the process that started this one ends (the coordinator's
    /// `--local-workers` hosts: none outlives a coordinator that was killed).
    #[arg(long)]
    exit_with_parent: bool,
    /// Component instances that train each step in parallel, each on its
    /// share of the batch (default: every core of this device). The
    /// coordinator sees one device and one update.
    #[arg(long, env = "HEARTH_THREADS")]
    threads: Option<usize>,
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
    if args.exit_with_parent {
        exit_with_parent()?;
    }
    let tls = fingerprint.as_deref().map(tls::pinned_config).transpose()?;
    let call_timeout = Duration::try_from_secs_f64(args.call_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--call-timeout must be a positive number of seconds")?;
    let trial_timeout = Duration::try_from_secs_f64(args.trial_call_timeout)
        .ok()
        .filter(|t| !t.is_zero())
        .context("--trial-call-timeout must be a positive number of seconds")?;
    let runtime = Arc::new(Runtime::new(Limits {
        memory_bytes: args.memory_mib.max(1) << 20,
        call_timeout: Some(call_timeout.max(trial_timeout)),
        on_overrun: OnOverrun::EndProcess(overrun::restart),
    })?);
    let state_dir = match &args.state_dir {
        Some(dir) => dir.clone(),
        None => hearth_runtime::files::state_home()
            .context("set --state-dir, HEARTH_HOME or HOME")?
            .join(format!("device-{name}")),
    };
    let store = ComponentStore::open(&state_dir)
        .with_context(|| format!("opening {}", state_dir.display()))?;
    let policy = hearth_runtime::policy(args.trust.clone());
    let loading = std::time::Instant::now();
    let start = component_trainer::start(&runtime, &store, &policy, || {
        Ok(match &args.component {
            Some(path) => {
                let (component, m) = runtime.load_signed(path, &policy)?;
                Candidate {
                    component,
                    label: format!("{} {}", m.name, m.version),
                }
            }
            None => Candidate {
                component: runtime.load_builtin()?,
                label: "built in".into(),
            },
        })
    })?;
    tracing::info!(
        component = %start.active.label,
        digest = %start.active.component.digest(),
        load_ms = loading.elapsed().as_millis() as u64,
        compiled_cache = start.cached,
        state = %state_dir.display(),
        "component loaded"
    );
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
    let threads = args
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
        .max(1);
    let trainer = ComponentTrainer::new(
        runtime.clone(),
        store,
        policy,
        (call_timeout, trial_timeout),
        threads,
        start,
    );
    let identity = Identity {
        worker_id: name,
        key,
        component_digest: trainer.digest().to_string(),
        kind: proto::WorkerKind::Host,
        threads: threads as u32,
        memory_mib: (runtime.limits().memory_bytes >> 20) as u32,
        sample_cache: args.sample_cache,
    };
    let mut session = WorkerSession::new(identity, trainer).with_clock(seconds_since_start);
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

/// Ends this process when its parent is gone (checked twice a second).
/// Seconds since the first call (the session's clock for timing rounds).
fn seconds_since_start() -> f64 {
    static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    START
        .get_or_init(std::time::Instant::now)
        .elapsed()
        .as_secs_f64()
}

fn exit_with_parent() -> Result<()> {
    #[cfg(unix)]
    {
        let parent = std::os::unix::process::parent_id();
        std::thread::Builder::new()
            .name("hearth-parent".into())
            .spawn(move || {
                loop {
                    std::thread::sleep(Duration::from_millis(500));
                    if std::os::unix::process::parent_id() != parent {
                        tracing::warn!("the process that started this host is gone; stopping");
                        std::process::exit(0);
                    }
                }
            })?;
    }
    Ok(())
}

type Socket = WebSocket<Stream>;

/// How often a connection looks for frames the session wants to send unasked.
const POLL_EVERY: Duration = Duration::from_millis(100);

/// One connection: hello, then every frame through the session, until the
/// session is over for good or the connection ends.
fn connection(
    url: &str,
    tls: Option<&Arc<rustls::ClientConfig>>,
    session: &mut WorkerSession<ComponentTrainer>,
) -> Result<()> {
    // The hello first: it puts the session back to joining, so a failed
    // connect counts as one (and backs off).
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| anyhow::anyhow!("no random numbers: {e}"))?;
    let hello = session.hello(nonce)?;
    let mut socket = tls::connect(url, tls).with_context(|| format!("connecting to {url}"))?;
    send(&mut socket, hello)?;
    // Wake up now and then to send what the session has to say unasked (a
    // component prepared on another thread).
    socket.get_ref().set_read_timeout(Some(POLL_EVERY))?;
    let mut joined = false;
    loop {
        // While a round sent ahead has steps left, only look for frames
        // (an assignment finishes the round at once); train a step if none.
        let idle = session.has_work();
        socket.get_ref().set_nonblocking(idle)?;
        let read = socket.read();
        if idle {
            socket.get_ref().set_nonblocking(false)?;
        }
        let frame = match read {
            Ok(WsMessage::Binary(b)) => Some(b),
            Ok(WsMessage::Close(_)) => return Ok(()),
            Ok(_) => None,
            Err(tungstenite::Error::Io(e))
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                None
            }
            Err(e) => return Err(e.into()),
        };
        let waiting = frame.is_none();
        if let Some(frame) = frame
            && let Some(reply) = session.handle(&frame)
        {
            send(&mut socket, reply)?;
        }
        while let Some(frame) = session.poll() {
            send(&mut socket, frame)?;
        }
        if waiting && idle {
            session.work();
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
