//! The component in wasmtime as the session's [`Trainer`], with hot-reload:
//! offered components are verified, compiled and self-tested on a thread of
//! their own while training goes on, swapped to when an assignment names
//! them, watched with a tighter time budget per call, and rolled back on
//! failure. Everything a device decides about components is kept in its
//! [`ComponentStore`] (so a restart comes back on the last component it
//! proved, and never retries one that failed) and written to its audit file.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_protocol::Offer;
use hearth_runtime::{ComponentModel, ComponentStore, LoadedComponent, Replicas, Runtime};
use hearth_session::{Trainer, self_test};
use hearth_signing::Policy;
use hearth_worker::{ArchInfo, ModelConfig};

/// Why a component on trial is blamed when the process starts and finds it.
pub const ENDED_ON_TRIAL: &str = "the process ended while this component was on trial \
     (a call overran its time budget, or the device lost power)";

/// A component this device can run, and what it is.
#[derive(Clone)]
pub struct Candidate {
    /// Compiled.
    pub component: LoadedComponent,
    /// "name version" from its manifest ("built in" for the binary's own).
    pub label: String,
}

/// How a device starts: which component, and a rollback to report.
pub struct Start {
    /// What it runs.
    pub active: Candidate,
    /// A component that was on trial when the process ended, with why.
    pub pending_rollback: Option<(String, String)>,
    /// Whether the compiled artefact came from the cache.
    pub cached: bool,
}

/// Picks the component a device starts on: the last one it proved (from its
/// store, re-verified), else `fallback` (a `--component` file or the one
/// built in). A component found on trial failed: it is recorded as such.
pub fn start(
    runtime: &Runtime,
    store: &ComponentStore,
    policy: &Policy,
    fallback: impl FnOnce() -> Result<Candidate>,
) -> Result<Start> {
    let mut standing = store.standing().map_err(anyhow::Error::msg)?;
    let mut pending_rollback = None;
    if let Some(trial) = standing.trial.take() {
        tracing::warn!(component = %trial, "{ENDED_ON_TRIAL}; back on the previous one");
        standing.failed.insert(trial.clone(), ENDED_ON_TRIAL.into());
        store.set_standing(&standing)?;
        let _ = store.audit("rolled-back", &trial, ENDED_ON_TRIAL);
        pending_rollback = Some((trial, ENDED_ON_TRIAL.to_string()));
    }
    if let Some(current) = standing.current.clone() {
        match load_kept(runtime, store, policy, &current) {
            Ok((active, cached)) => {
                let how = if cached { "compiled cache" } else { "compiled" };
                let _ = store.audit("started", &current, &format!("{} ({how})", active.label));
                return Ok(Start {
                    active,
                    pending_rollback,
                    cached,
                });
            }
            Err(e) => tracing::warn!(
                component = %current,
                error = %format!("{e:#}"),
                "cannot run the component this device proved; starting on the default"
            ),
        }
    }
    let active = fallback()?;
    Ok(Start {
        active,
        pending_rollback,
        cached: false,
    })
}

/// A component from the store, verified again and compiled (or loaded from
/// the compiled cache).
fn load_kept(
    runtime: &Runtime,
    store: &ComponentStore,
    policy: &Policy,
    digest: &str,
) -> Result<(Candidate, bool)> {
    let path = store.path(digest);
    let (bytes, manifest) =
        hearth_runtime::verify_file(&path, &hearth_runtime::signature_path(&path), policy)?;
    let (component, cached) = runtime.load_cached(&bytes, &store.compiled_path(digest))?;
    let label = format!("{} {}", manifest.name, manifest.version);
    Ok((Candidate { component, label }, cached))
}

/// What the self-test needs from the running model.
pub struct Reference {
    /// The model of the welcome.
    pub config: ModelConfig,
    /// Its parameter layout.
    pub arch: ArchInfo,
    /// The current parameters.
    pub params: Vec<f32>,
    /// A batch this device trained on.
    pub batch: (Vec<u8>, Vec<u8>),
}

/// Verifies, keeps, compiles and self-tests an offered component.
pub fn prepare(
    runtime: &Runtime,
    store: &ComponentStore,
    policy: &Policy,
    trial_timeout: Duration,
    offer: &Offer,
    reference: Option<&Reference>,
) -> Result<Candidate, String> {
    let signature = Some(offer.signature.as_str()).filter(|s| !s.trim().is_empty());
    let manifest = policy
        .verify(&offer.component, signature)
        .map_err(|r| r.to_string())?;
    let label = format!("{} {}", manifest.name, manifest.version);
    store
        .keep(&offer.component, &offer.signature)
        .map_err(|e| format!("cannot keep it: {e}"))?;
    let started = Instant::now();
    let (component, _) = runtime
        .load_cached(&offer.component, &store.compiled_path(&manifest.sha256))
        .map_err(|e| format!("cannot compile it: {e}"))?;
    let compiled = started.elapsed();
    let Some(r) = reference else {
        return Err("no model runs yet to test it against".into());
    };
    let mut model = ComponentModel::new(runtime, &component, &r.config)
        .map_err(|e| format!("cannot build {}: {e}", r.config.arch))?;
    model.set_call_timeout(trial_timeout);
    self_test::same_layout(&r.arch, model.describe())?;
    let test = (|| -> hearth_runtime::Result<(f32, Vec<f32>)> {
        model.set_params(&r.params)?;
        let stats = model.train_batch(&r.batch.0, &r.batch.1)?;
        Ok((stats.loss, model.params()?))
    })();
    let (loss, after) = test.map_err(|e| format!("its self-test failed: {e}"))?;
    self_test::sound_step(loss, &after)?;
    tracing::info!(
        component = %label,
        compile_ms = compiled.as_millis() as u64,
        total_ms = started.elapsed().as_millis() as u64,
        self_test_loss = loss,
        "component ready"
    );
    Ok(Candidate { component, label })
}

/// The session's trainer on a device.
pub struct ComponentTrainer {
    runtime: Arc<Runtime>,
    store: ComponentStore,
    policy: Policy,
    /// Budget per call of a proven component.
    call_timeout: Duration,
    /// Budget per call of a component on trial (self-test, watched rounds).
    trial_timeout: Duration,
    active: Candidate,
    /// What ran before the swap, while the new one is watched.
    previous: Option<Candidate>,
    ready: HashMap<String, Candidate>,
    preparing: Option<(String, Receiver<Result<Candidate, String>>)>,
    /// Instances that train in parallel (every core of the device).
    threads: usize,
    built: Option<(ModelConfig, Option<Replicas>)>,
    /// The first batch this device trained on (the self-test's canned batch).
    canned: Option<(Vec<u8>, Vec<u8>)>,
    pending_rollback: Option<(String, String)>,
    /// An offer that came while another was prepared or on trial.
    deferred: Option<Offer>,
}

impl ComponentTrainer {
    /// A trainer that starts as `start` says.
    pub fn new(
        runtime: Arc<Runtime>,
        store: ComponentStore,
        policy: Policy,
        (call_timeout, trial_timeout): (Duration, Duration),
        threads: usize,
        start: Start,
    ) -> Self {
        Self {
            runtime,
            store,
            policy,
            call_timeout,
            trial_timeout,
            active: start.active,
            previous: None,
            ready: HashMap::new(),
            preparing: None,
            threads: threads.max(1),
            built: None,
            canned: None,
            pending_rollback: start.pending_rollback,
            deferred: None,
        }
    }

    /// Digest of the component it runs.
    pub fn digest(&self) -> &str {
        self.active.component.digest()
    }

    fn model(&mut self) -> Result<&mut Replicas> {
        let on_trial = self.previous.is_some();
        let timeout = if on_trial {
            self.trial_timeout
        } else {
            self.call_timeout
        };
        let Some((config, model)) = self.built.as_mut() else {
            bail!("no model built yet");
        };
        if model.is_none() {
            tracing::warn!("building the model again after a failed call");
            let mut m = Replicas::new(&self.runtime, &self.active.component, config, self.threads)?;
            m.set_call_timeout(timeout);
            *model = Some(m);
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

    /// What the self-test of an offered component compares against.
    fn reference(&mut self) -> Option<Reference> {
        let batch = self.canned.clone()?;
        let config = self.built.as_ref()?.0.clone();
        let model = self.model().ok()?;
        Some(Reference {
            config,
            arch: model.describe().clone(),
            params: model.params().ok()?,
            batch,
        })
    }

    /// A preparation whose outcome is known already (`poll_ready` reports it).
    fn known(&mut self, digest: String, outcome: Result<Candidate, String>) {
        let (tx, rx) = std::sync::mpsc::channel();
        let _ = tx.send(outcome);
        self.preparing = Some((digest, rx));
    }

    fn audit(&self, event: &str, digest: &str, detail: &str) {
        if let Err(e) = self.store.audit(event, digest, detail) {
            tracing::warn!(error = %e, "cannot write the audit file");
        }
    }

    fn update_standing(&self, f: impl FnOnce(&mut hearth_runtime::Standing)) -> Result<(), String> {
        let mut s = self.store.standing()?;
        f(&mut s);
        self.store
            .set_standing(&s)
            .map_err(|e| format!("cannot record it in {}: {e}", self.store.dir().display()))
    }
}

impl Trainer for ComponentTrainer {
    type Error = anyhow::Error;
    fn architectures(&mut self) -> Result<Vec<String>> {
        Ok(ComponentModel::architectures(
            &self.runtime,
            &self.active.component,
        )?)
    }
    fn build(&mut self, config: &ModelConfig) -> Result<()> {
        let mut model = Replicas::new(&self.runtime, &self.active.component, config, self.threads)?;
        model.set_call_timeout(self.call_timeout);
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
        if self.canned.is_none() {
            self.canned = Some((pixels.to_vec(), labels.to_vec()));
        }
        let r = self.model()?.train_batch(pixels, labels);
        let s = self.check(r)?;
        Ok((s.loss, s.correct))
    }

    fn prepare(&mut self, offer: Offer) -> Result<(), String> {
        let digest = hearth_protocol::digest(&offer.component);
        self.audit("offered", &digest, "");
        let refuse = |this: &Self, reason: String| {
            this.audit("refused", &digest, &reason);
            Err(reason)
        };
        if self.policy.trusted.is_empty() {
            return refuse(self, "this device trusts no signing key (--trust)".into());
        }
        if let Some(reason) = self.store.standing()?.failed.get(&digest) {
            // The component's fault, known at once: an outcome like any other.
            let reason = format!("it failed on this device before: {reason}");
            self.known(digest, Err(reason));
            return Ok(());
        }
        if self.ready.contains_key(&digest) || digest == self.digest() {
            // Already verified here: say so again.
            let candidate = self.ready.get(&digest).cloned();
            self.known(digest, Ok(candidate.unwrap_or_else(|| self.active.clone())));
            return Ok(());
        }
        if self.preparing.is_some() || self.previous.is_some() {
            // One at a time (a restart must know which one to blame): it
            // starts when the one under way is ready or proved.
            self.deferred = Some(offer);
            return Ok(());
        }
        let reference = self.reference();
        // The self-test runs it: if it never returns, the watchdog ends the
        // process, and the next start finds it on trial and blames it.
        self.update_standing(|s| s.trial = Some(digest.clone()))?;
        let (runtime, store, policy) = (
            self.runtime.clone(),
            self.store.clone(),
            self.policy.clone(),
        );
        let trial_timeout = self.trial_timeout;
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("hearth-prepare".into())
            .spawn(move || {
                let outcome = prepare(
                    &runtime,
                    &store,
                    &policy,
                    trial_timeout,
                    &offer,
                    reference.as_ref(),
                );
                let _ = tx.send(outcome);
            })
            .map_err(|e| format!("cannot start a thread to prepare it: {e}"))?;
        self.preparing = Some((digest, rx));
        Ok(())
    }

    fn poll_ready(&mut self) -> Option<(String, Result<(), String>)> {
        if self.preparing.is_none()
            && self.previous.is_none()
            && let Some(offer) = self.deferred.take()
        {
            let digest = hearth_protocol::digest(&offer.component);
            if let Err(reason) = self.prepare(offer) {
                return Some((digest, Err(reason)));
            }
        }
        let (digest, rx) = self.preparing.as_ref()?;
        let outcome = match rx.try_recv() {
            Ok(outcome) => outcome,
            Err(TryRecvError::Empty) => return None,
            Err(TryRecvError::Disconnected) => Err("its preparation stopped".into()),
        };
        let digest = digest.clone();
        self.preparing = None;
        if digest != self.digest() {
            let _ = self.update_standing(|s| s.trial = None);
        }
        Some(match outcome {
            Ok(candidate) => {
                self.audit("ready", &digest, &candidate.label);
                self.ready.insert(digest.clone(), candidate);
                (digest, Ok(()))
            }
            Err(reason) => {
                // Not offered again: a re-offer is refused at once.
                let _ = self.update_standing(|s| {
                    // The first failure's reason stays (a re-offer repeats it).
                    s.failed
                        .entry(digest.clone())
                        .or_insert_with(|| reason.clone());
                });
                self.audit("refused", &digest, &reason);
                (digest, Err(reason))
            }
        })
    }

    fn swap(&mut self, digest: &str) -> Result<(), String> {
        let candidate = self
            .ready
            .remove(digest)
            .ok_or_else(|| format!("no component {digest} is ready here"))?;
        let Some((config, old)) = self.built.as_mut() else {
            return Err("no model built yet".into());
        };
        let mut model = Replicas::new(&self.runtime, &candidate.component, config, self.threads)
            .map_err(|e| format!("cannot build the model in it: {e}"))?;
        model.set_call_timeout(self.trial_timeout);
        // Carry the optimizer state (momentum) across when both keep the same.
        if let Some(old) = old.as_mut()
            && let Ok(state) = old.optimizer_state()
            && !state.is_empty()
            && model.describe().optimizer_state_len == state.len()
        {
            model
                .set_optimizer_state(&state)
                .map_err(|e| format!("it refused the optimizer state: {e}"))?;
        }
        *old = Some(model);
        let digest = digest.to_string();
        if let Err(e) = self.update_standing(|s| s.trial = Some(digest.clone())) {
            // Unrecorded, a trial could not be blamed after a restart: do not start it.
            if let Some((_, m)) = self.built.as_mut() {
                *m = None;
            }
            return Err(e);
        }
        self.audit("swapped", &digest, &candidate.label);
        tracing::info!(component = %candidate.label, %digest, "swapped; watching its first rounds");
        self.previous = Some(std::mem::replace(&mut self.active, candidate));
        Ok(())
    }

    fn commit(&mut self) {
        self.previous = None;
        let digest = self.digest().to_string();
        if let Err(e) = self.update_standing(|s| {
            s.current = Some(digest.clone());
            s.trial = None;
        }) {
            tracing::warn!(error = %e, "cannot record the component this device proved");
        }
        let timeout = self.call_timeout;
        if let Some((_, Some(model))) = self.built.as_mut() {
            model.set_call_timeout(timeout);
        }
        self.audit("committed", &digest, &self.active.label);
        tracing::info!(component = %self.active.label, "component passed its watched rounds");
    }

    fn roll_back(&mut self, reason: &str) -> Result<(), String> {
        let previous = self.previous.take().ok_or("nothing to roll back to")?;
        let failed = std::mem::replace(&mut self.active, previous);
        let digest = failed.component.digest().to_string();
        self.update_standing(|s| {
            s.trial = None;
            s.failed.insert(digest.clone(), reason.to_string());
        })?;
        if let Some((_, model)) = self.built.as_mut() {
            // The next round builds it again in the previous component.
            *model = None;
        }
        self.audit("rolled-back", &digest, reason);
        tracing::warn!(component = %failed.label, %digest, reason, "rolled back to {}", self.active.label);
        Ok(())
    }

    fn pending_rollback(&mut self) -> Option<(String, String)> {
        self.pending_rollback.take()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hearth_protocol::IMAGE_LEN;
    use hearth_signing::{Manifest, SigningKey};

    fn signed(key: &SigningKey, bytes: &[u8], world: &str) -> String {
        let s = key.sign(
            bytes,
            Manifest {
                name: "test".into(),
                version: "1".into(),
                package: hearth_runtime::WIT_PACKAGE.into(),
                world: world.into(),
                sha256: String::new(),
            },
        );
        serde_json::to_string(&s).unwrap_or_default()
    }

    /// A device's preparation refuses every offer it must not run, naming why.
    #[test]
    fn offers_that_must_not_run_are_refused_with_the_reason() {
        let runtime = Runtime::new(hearth_runtime::Limits::default()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let store = ComponentStore::open(dir.path()).unwrap();
        let key = SigningKey::from_seed([1; 32]);
        let policy = hearth_runtime::policy(vec![key.public()]);
        let config = ModelConfig {
            arch: "lenet5".into(),
            seed: 3,
            optimizer: Default::default(),
        };
        let builtin = runtime.load_builtin().unwrap();
        let mut model = ComponentModel::new(&runtime, &builtin, &config).unwrap();
        let reference = Reference {
            config,
            arch: model.describe().clone(),
            params: model.params().unwrap(),
            batch: (vec![9; 4 * IMAGE_LEN], vec![1, 2, 3, 4]),
        };
        let v2 = hearth_test_components::V2;
        let offer = |component: &[u8], signature: String| Offer {
            signature,
            component: component.to_vec(),
        };
        let mut tampered = v2.to_vec();
        tampered[v2.len() / 2] ^= 1;
        let stranger = SigningKey::from_seed([2; 32]);
        let world = hearth_runtime::WIT_WORLD;
        let other = hearth_test_components::OTHER_WORLD;
        let cases = [
            (offer(v2, String::new()), "unsigned"),
            (offer(&tampered, signed(&key, v2, world)), "tampered"),
            (offer(v2, signed(&stranger, v2, world)), "does not trust"),
            (offer(v2, signed(&key, v2, "another-world")), "implements"),
            (offer(other, signed(&key, other, world)), "cannot build"),
            (
                offer(
                    hearth_test_components::NAN,
                    signed(&key, hearth_test_components::NAN, world),
                ),
                "NaN",
            ),
        ];
        let trial = Duration::from_secs(60);
        for (o, reason) in cases {
            let refused = prepare(&runtime, &store, &policy, trial, &o, Some(&reference))
                .err()
                .unwrap_or_default();
            assert!(
                refused.contains(reason),
                "expected {reason:?}, got {refused:?}"
            );
        }
        let ready = prepare(
            &runtime,
            &store,
            &policy,
            trial,
            &offer(v2, signed(&key, v2, world)),
            Some(&reference),
        );
        assert!(ready.is_ok(), "{:?}", ready.err());
        assert!(store.compiled_path(&hearth_protocol::digest(v2)).is_file());
    }
}
