//! The endpoint: the WebSocket sessions and the web demo on one port, on a
//! small tokio runtime of their own; and the local `hearth-host` processes
//! `train` starts next to it.

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use hearth_runtime::{ComponentModel, Limits, Runtime};
use hearth_worker::ModelConfig;

use crate::catalog::Catalog;
use crate::dashboard::Dashboard;
use crate::engine::ComponentInfo;
use crate::household::Household;
use crate::listener::{self, ConnectionLimits};
use crate::options::TrainingOptions;
use crate::session::{self, Admission};
use crate::web;

/// The running endpoint and the initial global model.
pub struct Served {
    /// The global model, in the same component the devices run (it scores
    /// the test set after every epoch).
    pub evaluator: ComponentModel,
    /// Where the sessions report.
    pub events: std::sync::mpsc::Receiver<session::Event>,
    /// The workers' WebSocket URL.
    pub url: String,
    /// Keeps the server's runtime alive.
    pub rt: tokio::runtime::Runtime,
    /// Architecture of the global model.
    pub arch: hearth_worker::ArchInfo,
    /// The components hosts may run (the driver swaps the evaluator from it).
    pub catalog: Arc<Catalog>,
    /// What the run starts on.
    pub component: ComponentInfo,
    /// Components pushed in earlier runs that still verify (hosts may come back on one).
    pub kept: Vec<ComponentInfo>,
    /// What the web page shows.
    pub dashboard: Dashboard,
}

/// What the endpoint serves besides the sessions.
pub struct Endpoint {
    /// Where to listen.
    pub listen: SocketAddr,
    /// Who may join and read the API.
    pub household: Household,
    /// Connection caps and timeouts.
    pub limits: ConnectionLimits,
    /// A signed component to run instead of the built-in one, with the
    /// public key that must have signed it.
    pub component: Option<(std::path::PathBuf, String)>,
    /// The TLS configuration and the certificate's fingerprint, if the
    /// port serves TLS.
    pub tls: Option<(Arc<rustls::ServerConfig>, String)>,
    /// The test set (draw-a-digit checks, the browser benchmark).
    pub test: Arc<hearth_mnist::Split>,
    /// Where `POST /api/bench` reports go, if a benchmark waits for them.
    pub bench_reports: Option<tokio::sync::mpsc::UnboundedSender<String>>,
}

/// Builds the global model in the component and starts the endpoint.
pub fn start(training: &TrainingOptions, endpoint: Endpoint) -> Result<Served> {
    let runtime = Arc::new(Runtime::new(Limits::default())?);
    let (component, info) = match &endpoint.component {
        Some((path, key)) => {
            let (component, m) =
                runtime.load_signed(path, &hearth_runtime::policy(vec![key.clone()]))?;
            println!("running {} {} ({})", m.name, m.version, m.sha256);
            let info = ComponentInfo {
                digest: m.sha256,
                name: m.name,
                version: m.version,
            };
            (component, info)
        }
        None => {
            let component = runtime.load_builtin()?;
            let info = ComponentInfo {
                digest: component.digest().to_string(),
                name: "hearth-trainer".into(),
                version: format!("{} (built in)", env!("CARGO_PKG_VERSION")),
            };
            (component, info)
        }
    };
    let public_key = crate::components::household_public_key(endpoint.household.home()).ok();
    let catalog = Arc::new(Catalog::new(
        runtime.clone(),
        endpoint.household.home(),
        &training.arch,
        public_key,
        (component.clone(), info.clone()),
    )?);
    let kept = catalog.restore_kept();
    let config = ModelConfig {
        arch: training.arch.clone(),
        seed: training.seed,
        optimizer: training.optimizer(),
    };
    // Without --component, the household goes on with the component it
    // rolled out last (the built-in one stays admitted: new devices join on it
    // and are offered the current one).
    let (mut evaluator, info) = match catalog.current().filter(|_| endpoint.component.is_none()) {
        Some(current) => {
            println!(
                "running the household's current component {} ({})",
                current.label(),
                current.digest
            );
            (catalog.model(&current.digest, &config)?, current)
        }
        None => (ComponentModel::new(&runtime, &component, &config)?, info),
    };
    let arch = evaluator.describe().clone();

    let (events_tx, events) = std::sync::mpsc::channel();
    let events_tx_web = events_tx.clone();
    let admission = Arc::new(Admission {
        events: events_tx,
        household: endpoint.household.clone(),
        catalog: catalog.clone(),
        browser_digest: hearth_protocol::digest(hearth_web_demo::MODULE),
        arch: training.arch.clone(),
        params: arch.param_count,
        next_conn: AtomicU64::new(1),
        limits: endpoint.limits.clone(),
    });
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    let listener = rt
        .block_on(tokio::net::TcpListener::bind(endpoint.listen))
        .with_context(|| format!("binding {}", endpoint.listen))?;
    let addr = listener.local_addr()?;
    let dashboard = Dashboard::new(&training.arch, training.epochs, evaluator.params()?);
    let web_state = Arc::new(web::WebState {
        dashboard: dashboard.clone(),
        test: endpoint.test,
        bench_reports: endpoint.bench_reports,
        household: endpoint.household,
        catalog: catalog.clone(),
        events: events_tx_web,
    });
    let app = axum::Router::new()
        .route("/ws", axum::routing::get(session::upgrade))
        .with_state(admission)
        .merge(web::router(web_state));
    endpoint.limits.validate()?;
    let (ws, http, pin) = match &endpoint.tls {
        Some((_, fp)) => ("wss", "https", format!("; TLS certificate sha256 {fp}")),
        None => ("ws", "http", String::new()),
    };
    rt.spawn(listener::serve(
        listener,
        app,
        endpoint.limits,
        endpoint.tls.map(|(config, _)| config),
    ));
    let url = format!("{ws}://{addr}/ws");
    println!(
        "coordinator listening on {url} ({} params, {}); dashboard on {http}://{addr}/{pin}",
        arch.param_count, arch.name
    );
    Ok(Served {
        evaluator,
        events,
        url,
        rt,
        arch,
        dashboard,
        catalog,
        component: info,
        kept,
    })
}

/// `hearth-host work` processes started next to this binary; dropping it
/// waits up to 10 s for them to leave after their goodbye, then kills them.
pub struct LocalWorkers(Vec<Child>);

impl LocalWorkers {
    /// Starts `n` workers against `url`, named `local-1` … `local-n`, each
    /// with its device key (in the environment, not on the command line),
    /// trusting the household's signing key, keeping their state in
    /// `HOME/device-NAME`.
    pub fn spawn(
        n: usize,
        url: &str,
        household: &Household,
        fingerprint: Option<&str>,
        component: Option<&(std::path::PathBuf, String)>,
    ) -> Result<Self> {
        if n == 0 {
            return Ok(Self(Vec::new()));
        }
        let exe = std::env::current_exe()?;
        let host = exe.with_file_name("hearth-host");
        anyhow::ensure!(
            host.is_file(),
            "{} not found: build it with `cargo build --release -p hearth-host`",
            host.display()
        );
        let children = (0..n)
            .map(|i| {
                let name = format!("local-{}", i + 1);
                let key = household.key_for(&name).map_err(anyhow::Error::msg)?;
                let mut cmd = Command::new(&host);
                cmd.args([
                    "work",
                    "--coordinator",
                    url,
                    "--name",
                    &name,
                    "--exit-with-parent",
                    // They share this machine's cores: one thread each.
                    "--threads",
                    "1",
                ]);
                if let Some(fp) = fingerprint {
                    cmd.args(["--tls-fingerprint", fp]);
                }
                if let Some((path, _)) = component {
                    cmd.arg("--component").arg(path);
                }
                // They trust the household's signing key (pushed components are signed with it).
                let trusted = component
                    .map(|(_, key)| key.clone())
                    .or_else(|| crate::components::household_public_key(household.home()).ok());
                if let Some(key) = trusted {
                    cmd.args(["--trust", &key]);
                }
                cmd.arg("--state-dir")
                    .arg(household.home().join(format!("device-{name}")));
                cmd.env("HEARTH_KEY", key.code())
                    .env_remove("HEARTH_SECRET")
                    .stdin(Stdio::null())
                    .spawn()
                    .with_context(|| format!("starting {}", host.display()))
            })
            .collect::<Result<_>>()?;
        Ok(Self(children))
    }
}

impl Drop for LocalWorkers {
    fn drop(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(10);
        for child in self.0.iter_mut() {
            while Instant::now() < deadline {
                if let Ok(Some(_)) = child.try_wait() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            if let Ok(None) = child.try_wait() {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}
