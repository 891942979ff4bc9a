//! The components this coordinator accepts: the one it started on, and
//! every signed component pushed to it (kept in `HOME/components/`), each
//! verified with the household's signing key and checked to be a training
//! component of our world for this run's architecture before it is
//! accepted; and the ones that failed on a device (never admitted again).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};

use hearth_protocol::{self as proto, Message};
use hearth_runtime::{ComponentModel, ComponentStore, LoadedComponent, Runtime};
use hearth_signing::Policy;
use hearth_worker::ModelConfig;

use crate::engine::ComponentInfo;

/// Largest component a push may carry (the LeNet-5 trainer is ~180 KB).
pub const MAX_COMPONENT_BYTES: usize = 32 << 20;

struct Entry {
    info: ComponentInfo,
    component: LoadedComponent,
    /// The encoded offer (`None` for the start component, which is never offered).
    offer: Option<Arc<Vec<u8>>>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<String, Entry>,
    failed: HashMap<String, String>,
}

/// Accepted components, shared by admission, the push endpoint and the driver.
pub struct Catalog {
    runtime: Arc<Runtime>,
    /// The household's key (`None`: no signing key yet, pushes are refused).
    policy: Option<Policy>,
    /// `HOME/components/` (by digest, with signatures) and `HOME/compiled/`.
    store: ComponentStore,
    /// `HOME/components/current`.
    current: PathBuf,
    arch: String,
    inner: RwLock<Inner>,
}

impl Catalog {
    /// A catalog of `start` (what the run starts on), compiled in `runtime`,
    /// trusting `public_key`; pushed components are kept in `home/components`.
    pub fn new(
        runtime: Arc<Runtime>,
        home: &Path,
        arch: &str,
        public_key: Option<String>,
        start: (LoadedComponent, ComponentInfo),
    ) -> anyhow::Result<Self> {
        let mut inner = Inner::default();
        let (component, info) = start;
        inner.entries.insert(
            info.digest.clone(),
            Entry {
                info,
                component,
                offer: None,
            },
        );
        let store = ComponentStore::open(home)
            .map_err(|e| anyhow::anyhow!("opening {}: {e}", home.display()))?;
        Ok(Self {
            runtime,
            policy: public_key.map(|k| hearth_runtime::policy(vec![k])),
            store,
            current: home.join("components").join("current"),
            arch: arch.to_string(),
            inner: RwLock::new(inner),
        })
    }

    /// Accepts the components pushed before (kept in `HOME/components/`)
    /// that still verify; returns them (a device may come back on one).
    pub fn restore_kept(&self) -> Vec<ComponentInfo> {
        let mut restored = Vec::new();
        for digest in self.store.kept() {
            let path = self.store.path(&digest);
            let signature = hearth_runtime::signature_path(&path);
            let (Ok(bytes), Ok(text)) = (std::fs::read(&path), std::fs::read_to_string(&signature))
            else {
                continue;
            };
            match self.accept(&bytes, &text) {
                Ok(info) => restored.push(info),
                Err(e) => {
                    tracing::warn!(file = %path.display(), error = %e, "a kept component no longer verifies")
                }
            }
        }
        restored
    }

    /// Verifies, compiles and checks a pushed component and its signature
    /// file's text, keeps it, and accepts it; or says why not.
    pub fn accept(&self, bytes: &[u8], signature: &str) -> Result<ComponentInfo, String> {
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(format!(
                "the component is {} bytes; at most {MAX_COMPONENT_BYTES} are accepted",
                bytes.len()
            ));
        }
        let policy = self.policy.as_ref().ok_or(
            "this household has no signing key: make one with `hearth-coordinator keygen`",
        )?;
        let manifest = policy
            .verify(bytes, Some(signature).filter(|s| !s.trim().is_empty()))
            .map_err(|r| format!("refused: {r}"))?;
        let digest = manifest.sha256.clone();
        if let Some(reason) = self.failure(&digest) {
            return Err(format!("{digest} failed on a device before: {reason}"));
        }
        let (component, _) = self
            .runtime
            .load_cached(bytes, &self.store.compiled_path(&digest))
            .map_err(|e| format!("cannot compile it: {e}"))?;
        let archs = ComponentModel::architectures(&self.runtime, &component)
            .map_err(|e| format!("it does not work as a training component: {e}"))?;
        if !archs.contains(&self.arch) {
            return Err(format!(
                "it cannot build {} (only {})",
                self.arch,
                archs.join(", ")
            ));
        }
        self.store
            .keep(bytes, signature)
            .map_err(|e| format!("cannot keep it: {e}"))?;
        let info = ComponentInfo {
            digest: digest.clone(),
            name: manifest.name,
            version: manifest.version,
        };
        let offer = proto::encode(&Message::Offer(proto::Offer {
            signature: signature.to_string(),
            component: bytes.to_vec(),
        }));
        let entry = Entry {
            info: info.clone(),
            component,
            offer: Some(Arc::new(offer)),
        };
        self.write().entries.insert(digest, entry);
        Ok(info)
    }

    /// The household's current component (the last one rolled out past its
    /// canary, `HOME/components/current`), if it is accepted here.
    pub fn current(&self) -> Option<ComponentInfo> {
        let digest = std::fs::read_to_string(&self.current).ok()?;
        let digest = digest.trim();
        self.offer(digest)?;
        self.info(digest)
    }

    /// Records `digest` as the household's current component.
    pub fn set_current(&self, digest: &str) {
        if let Err(e) = crate::household::write_private(&self.current, digest.as_bytes()) {
            tracing::warn!(error = %format!("{e:#}"), "cannot record the current component");
        }
    }

    /// Whether a host running `digest` may join.
    pub fn admits(&self, digest: &str) -> bool {
        let inner = self.read();
        inner.entries.contains_key(digest) && !inner.failed.contains_key(digest)
    }

    /// Why `digest` failed on a device, if it did.
    pub fn failure(&self, digest: &str) -> Option<String> {
        self.read().failed.get(digest).cloned()
    }

    /// Component `digest` failed on a device: admit nobody running it.
    pub fn fail(&self, digest: &str, reason: &str) {
        self.write()
            .failed
            .insert(digest.to_string(), reason.to_string());
    }

    /// The offer frame of `digest`.
    pub fn offer(&self, digest: &str) -> Option<Arc<Vec<u8>>> {
        self.read()
            .entries
            .get(digest)
            .and_then(|e| e.offer.clone())
    }

    /// What `digest` is, if accepted.
    pub fn info(&self, digest: &str) -> Option<ComponentInfo> {
        self.read().entries.get(digest).map(|e| e.info.clone())
    }

    /// A model of `config` in component `digest` (the coordinator's
    /// evaluation copy after a swap).
    pub fn model(&self, digest: &str, config: &ModelConfig) -> anyhow::Result<ComponentModel> {
        let component = self
            .read()
            .entries
            .get(digest)
            .map(|e| e.component.clone())
            .ok_or_else(|| anyhow::anyhow!("component {digest} is not accepted here"))?;
        Ok(ComponentModel::new(&self.runtime, &component, config)?)
    }

    fn read(&self) -> std::sync::RwLockReadGuard<'_, Inner> {
        self.inner.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inner> {
        self.inner.write().unwrap_or_else(PoisonError::into_inner)
    }
}
