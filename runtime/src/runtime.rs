//! The engine and linker, made once per process.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use wasmtime::component::{Component, Linker};
use wasmtime::{Config, Engine, StoreLimits};

use crate::error::{Error, Result};
use crate::limits::{Limits, OnOverrun};
use crate::watchdog::{CallGuard, Watchdog};

/// How often the epoch advances (the granularity of call timeouts).
pub(crate) const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Per-store host state: only the resource limiter (the component imports nothing).
pub(crate) struct HostState {
    pub(crate) limits: StoreLimits,
}

/// A wasmtime engine configured for training components, and its linker.
pub struct Runtime {
    pub(crate) engine: Engine,
    pub(crate) linker: Linker<HostState>,
    pub(crate) limits: Limits,
    stop_ticker: Arc<AtomicBool>,
    /// Present when overrunning calls end the process instead of trapping.
    watchdog: Option<Arc<Watchdog>>,
}

/// A compiled component and the digest of its bytes.
#[derive(Clone)]
pub struct LoadedComponent {
    pub(crate) component: Component,
    digest: String,
}

impl LoadedComponent {
    /// Hex SHA-256 of the component bytes.
    pub fn digest(&self) -> &str {
        &self.digest
    }
}

impl Runtime {
    /// Creates the engine (Cranelift, SIMD on, relaxed SIMD off so results are
    /// the same on every engine), with epoch interruption if overrunning calls
    /// trap, or a watchdog thread if they end the process.
    pub fn new(limits: Limits) -> Result<Self> {
        let mut config = Config::new();
        config
            .wasm_component_model(true)
            .wasm_simd(true)
            .wasm_relaxed_simd(false)
            .epoch_interruption(limits.epoch_checks());
        if std::env::var_os("HEARTH_PERF_MAP").is_some() {
            // Lets `perf report` name the compiled wasm functions (/tmp/perf-PID.map).
            config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = Engine::new(&config).map_err(Error::Load)?;
        let linker = Linker::new(&engine);
        let stop_ticker = Arc::new(AtomicBool::new(false));
        if limits.epoch_checks() {
            let (weak, stop) = (engine.weak(), stop_ticker.clone());
            thread::Builder::new()
                .name("hearth-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        thread::sleep(EPOCH_TICK);
                        match weak.upgrade() {
                            Some(engine) => engine.increment_epoch(),
                            None => break,
                        }
                    }
                })
                .map_err(|e| {
                    Error::Load(wasmtime::Error::msg(format!(
                        "cannot start the epoch thread: {e}"
                    )))
                })?;
        }
        let watchdog = match (limits.call_timeout, limits.on_overrun) {
            (Some(_), OnOverrun::EndProcess(on_overrun)) => {
                Some(Watchdog::start(on_overrun).map_err(|e| {
                    Error::Load(wasmtime::Error::msg(format!(
                        "cannot start the watchdog thread: {e}"
                    )))
                })?)
            }
            _ => None,
        };
        Ok(Self {
            engine,
            linker,
            limits,
            stop_ticker,
            watchdog,
        })
    }

    /// Compiles component bytes (a malformed or mismatched component is an error).
    pub fn load(&self, bytes: &[u8]) -> Result<LoadedComponent> {
        let component = Component::new(&self.engine, bytes).map_err(Error::Load)?;
        Ok(LoadedComponent {
            component,
            digest: crate::digest(bytes),
        })
    }

    /// Reads, verifies and compiles the component in `path`, signed in
    /// [`signature_path`], under `policy` ([`verify_file`]). Nothing
    /// unsigned, untrusted, tampered or built for another world is compiled.
    pub fn load_signed(
        &self,
        path: &Path,
        policy: &hearth_signing::Policy,
    ) -> Result<(LoadedComponent, hearth_signing::Manifest)> {
        let (bytes, manifest) = verify_file(path, &signature_path(path), policy)?;
        Ok((self.load(&bytes)?, manifest))
    }

    /// Compiles `bytes`, or loads the artefact a previous call cached at
    /// `cache` (then no compilation: a restart takes milliseconds, not
    /// seconds); returns whether the cache served it. The cache file is
    /// SHA-256 of the artefact followed by the artefact, written whole
    /// with owner-only permissions: a truncated, damaged or stale file (an
    /// artefact of another wasmtime or configuration, which wasmtime itself
    /// refuses) is recompiled and replaced, never loaded.
    pub fn load_cached(&self, bytes: &[u8], cache: &Path) -> Result<(LoadedComponent, bool)> {
        let digest = crate::digest(bytes);
        if let Some(component) = self.read_cache(cache) {
            return Ok((LoadedComponent { component, digest }, true));
        }
        let component = Component::new(&self.engine, bytes).map_err(Error::Load)?;
        if let Ok(artefact) = component.serialize() {
            let mut file = sha256(&artefact).to_vec();
            file.extend_from_slice(&artefact);
            // A cache that cannot be written only costs the next start a compilation.
            let _ = crate::files::write_private(cache, &file);
        }
        Ok((LoadedComponent { component, digest }, false))
    }

    fn read_cache(&self, cache: &Path) -> Option<Component> {
        let file = std::fs::read(cache).ok()?;
        let (sum, artefact) = file.split_at_checked(32)?;
        if sum != sha256(artefact) {
            return None;
        }
        // SAFETY: `deserialize` trusts its input to be an artefact this
        // engine produced. This one was: `load_cached` wrote it, into the
        // device's own state directory (owner-only), and its SHA-256 above
        // proves it is whole; wasmtime checks the version and configuration
        // it was compiled for and refuses anything else.
        unsafe { Component::deserialize(&self.engine, artefact) }.ok()
    }

    /// Compiles the component built into this binary.
    pub fn load_builtin(&self) -> Result<LoadedComponent> {
        self.load(crate::BUILTIN_COMPONENT)
    }

    /// The limits every store of this runtime gets.
    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// A handle that starts the watchdog's clock for calls of one store.
    pub(crate) fn call_watch(&self) -> CallWatch {
        CallWatch(self.watchdog.clone().zip(self.limits.call_timeout))
    }
}

/// Starts the watchdog's clock for each call of a store (or does nothing).
pub(crate) struct CallWatch(Option<(Arc<Watchdog>, Duration)>);

impl CallWatch {
    /// Changes the budget of later calls (no effect without a watchdog).
    pub(crate) fn set_timeout(&mut self, timeout: Duration) {
        if let Some((_, t)) = self.0.as_mut() {
            *t = timeout;
        }
    }

    /// Registers one call; its deadline is cleared when the guard drops.
    pub(crate) fn begin(&self) -> Option<CallGuard> {
        self.0.as_ref().map(|(dog, timeout)| dog.begin(*timeout))
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Relaxed);
        if let Some(dog) = &self.watchdog {
            dog.stop();
        }
    }
}

/// Where the signature of component file `file` lives: `FILE.sig`.
pub fn signature_path(file: &Path) -> PathBuf {
    PathBuf::from(format!("{}.sig", file.display()))
}

/// Reads component file `file` and its signature `signature` (a missing
/// signature is an unsigned component) and checks them under `policy`
/// (its package and world are the caller's: [`crate::WIT_PACKAGE`],
/// [`crate::WIT_WORLD`]); the verified bytes and manifest.
pub fn verify_file(
    file: &Path,
    signature: &Path,
    policy: &hearth_signing::Policy,
) -> Result<(Vec<u8>, hearth_signing::Manifest)> {
    let read_error = |path: &Path| {
        let path = path.display().to_string();
        move |error| Error::Read { path, error }
    };
    let bytes = std::fs::read(file).map_err(read_error(file))?;
    let text = match std::fs::read_to_string(signature) {
        Ok(text) => Some(text),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(read_error(signature)(e)),
    };
    let manifest = policy
        .verify(&bytes, text.as_deref())
        .map_err(|refusal| Error::Refused {
            path: file.display().to_string(),
            refusal,
        })?;
    Ok((bytes, manifest))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest;
    sha2::Sha256::digest(bytes).into()
}
