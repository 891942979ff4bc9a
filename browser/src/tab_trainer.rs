//! The tab's [`Trainer`]: the page's own Rust model, or a signed component
//! the coordinator offered, run by the browser's engine ([`component`]).
//!
//! Hot-reload as on a device, within what a page can do:
//! - an offer is only kept when it comes; it is verified (the household keys
//!   the pairing link named), compiled with its memory capped and
//!   self-tested when the page next polls ([`TabTrainer::pending`] names it
//!   first, so the page can stop the Web Worker if that never returns);
//! - a swap carries the momentum and the optimizer's settings across (the
//!   round brings the parameters);
//! - a rollback returns to the code that ran before, and a component that
//!   failed is never taken again by this tab (the page remembers it across
//!   a restart of the worker, see [`TabTrainer::failed_before`]).

use std::collections::HashMap;

use hearth_protocol::Offer;
use hearth_session::{Trainer, self_test};
use hearth_signing::Policy;
use hearth_worker::{ARCHITECTURES, ArchInfo, Model, ModelConfig};

use crate::component::{CallError, CompiledComponent, ComponentModel};
use crate::parallel::Helpers;

/// The model a tab trains: its own code, or a component's.
enum TabModel {
    BuiltIn(Box<Model>),
    Component(ComponentModel),
}

fn shown(e: impl std::fmt::Display) -> String {
    e.to_string()
}

impl TabModel {
    fn new(code: Option<&CompiledComponent>, config: &ModelConfig) -> Result<Self, String> {
        Ok(match code {
            None => TabModel::BuiltIn(Box::new(Model::new(config).map_err(shown)?)),
            Some(c) => TabModel::Component(ComponentModel::new(c, config).map_err(shown)?),
        })
    }

    fn trapped(&self) -> bool {
        matches!(self, TabModel::Component(m) if m.poisoned())
    }

    fn describe(&mut self) -> Result<ArchInfo, String> {
        match self {
            TabModel::BuiltIn(m) => Ok(m.describe()),
            TabModel::Component(m) => m.describe().map_err(shown),
        }
    }

    fn params(&mut self) -> Result<Vec<f32>, String> {
        match self {
            TabModel::BuiltIn(m) => Ok(m.params().to_vec()),
            TabModel::Component(m) => m.params().map_err(shown),
        }
    }

    fn set_params(&mut self, p: &[f32]) -> Result<(), String> {
        match self {
            TabModel::BuiltIn(m) => m.set_params(p).map_err(shown),
            TabModel::Component(m) => m.set_params(p).map_err(shown),
        }
    }

    fn optimizer_state(&mut self) -> Result<Vec<f32>, String> {
        match self {
            TabModel::BuiltIn(m) => Ok(m.optimizer_state().to_vec()),
            TabModel::Component(m) => m.optimizer_state().map_err(shown),
        }
    }

    fn set_optimizer_state(&mut self, s: &[f32]) -> Result<(), String> {
        match self {
            TabModel::BuiltIn(m) => m.set_optimizer_state(s).map_err(shown),
            TabModel::Component(m) => m.set_optimizer_state(s).map_err(shown),
        }
    }

    fn optimizer(&mut self) -> Result<hearth_worker::OptimizerConfig, String> {
        match self {
            TabModel::BuiltIn(m) => Ok(m.optimizer()),
            TabModel::Component(m) => m.optimizer().map_err(shown),
        }
    }

    fn set_optimizer(&mut self, o: hearth_worker::OptimizerConfig) -> Result<(), String> {
        match self {
            TabModel::BuiltIn(m) => m.set_optimizer(o).map_err(shown),
            TabModel::Component(m) => m.set_optimizer(o).map_err(shown),
        }
    }

    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32), String> {
        let s = match self {
            TabModel::BuiltIn(m) => m.train_batch(pixels, labels).map_err(shown)?,
            TabModel::Component(m) => m.train_batch(pixels, labels).map_err(shown)?,
        };
        Ok((s.loss, s.correct))
    }
}

/// Code a tab can train with.
#[derive(Clone)]
struct Code {
    /// Digest of the component, or of the page's module.
    digest: String,
    /// "name version", or "built in".
    label: String,
    /// `None`: the page's own Rust.
    compiled: Option<CompiledComponent>,
}

/// The session's trainer in a tab.
pub struct TabTrainer {
    policy: Policy,
    memory_bytes: u64,
    active: Code,
    config: Option<ModelConfig>,
    model: Option<TabModel>,
    /// The code and model before a swap, while the new one is watched.
    previous: Option<(Code, Option<TabModel>)>,
    ready: HashMap<String, Code>,
    /// The last component that became ready and has not been swapped to:
    /// the next assignment may swap to it inside the call that trains.
    to_swap: Option<String>,
    /// An offer kept until the page polls (and until a trial is over).
    offered: Option<Offer>,
    outcomes: Vec<(String, Result<(), String>)>,
    failed: HashMap<String, String>,
    pending_rollback: Option<(String, String)>,
    /// The first batch this tab trained on (the self-test's batch).
    canned: Option<(Vec<u8>, Vec<u8>)>,
    /// Helper Web Workers sharing each step of the page's own code.
    helpers: Option<Helpers>,
}

impl TabTrainer {
    /// A trainer on the page's own code (`digest`), taking components
    /// signed by `trusted` with memory capped at `memory_bytes`.
    pub fn new(
        digest: String,
        trusted: Vec<String>,
        memory_bytes: u64,
        helpers: Option<Helpers>,
    ) -> Self {
        Self {
            policy: hearth_signing::trainer_policy(trusted),
            memory_bytes,
            active: Code {
                digest,
                label: "built in".into(),
                compiled: None,
            },
            config: None,
            model: None,
            previous: None,
            ready: HashMap::new(),
            to_swap: None,
            offered: None,
            outcomes: Vec::new(),
            failed: HashMap::new(),
            pending_rollback: None,
            canned: None,
            helpers,
        }
    }

    /// A component that failed in this tab before (the page stopped a
    /// worker that hung while trying it): refused from now on, and reported
    /// as a rollback after the next welcome if `report`.
    pub fn failed_before(&mut self, digest: String, reason: String, report: bool) {
        if report {
            self.pending_rollback = Some((digest.clone(), reason.clone()));
        }
        self.failed.insert(digest, reason);
    }

    /// The component being tried, if any: offered and not yet tested,
    /// swapped to and still watched, or ready and not yet swapped to (an
    /// assignment that names it swaps and trains in one call, so a hang in
    /// that call is its fault too).
    pub fn pending(&self) -> Option<String> {
        if self.previous.is_some() {
            return Some(self.active.digest.clone());
        }
        self.offered
            .as_ref()
            .map(|o| hearth_protocol::digest(&o.component))
            .or_else(|| self.to_swap.clone())
    }

    /// Cores a step of the page's own code uses.
    pub fn threads(&self) -> usize {
        self.helpers.as_ref().map_or(1, Helpers::threads)
    }

    /// "name version" of the code it runs.
    pub fn label(&self) -> &str {
        &self.active.label
    }

    fn model(&mut self) -> Result<&mut TabModel, String> {
        let config = self.config.as_ref().ok_or("no model built yet")?;
        if self.model.as_ref().is_none_or(TabModel::trapped) {
            // A trapped instance cannot be used again: a fresh one (the
            // round brings the parameters).
            self.model = Some(TabModel::new(self.active.compiled.as_ref(), config)?);
        }
        self.model.as_mut().ok_or_else(|| "no model".to_string())
    }

    /// Verifies, compiles and self-tests `offer`.
    fn try_offer(&mut self, offer: &Offer) -> Result<Code, String> {
        let signature = Some(offer.signature.as_str()).filter(|s| !s.trim().is_empty());
        let manifest = self
            .policy
            .verify(&offer.component, signature)
            .map_err(shown)?;
        let compiled = CompiledComponent::compile(&offer.component, self.memory_bytes)?;
        let (Some(config), Some((pixels, labels))) = (self.config.clone(), self.canned.clone())
        else {
            return Err("no model runs yet to test it against".into());
        };
        let current = self.model()?;
        let (arch, params) = (current.describe()?, current.params()?);
        let mut candidate = ComponentModel::new(&compiled, &config)
            .map_err(|e| format!("cannot build {}: {e}", config.arch))?;
        self_test::same_layout(&arch, &candidate.describe().map_err(shown)?)?;
        let test = (|| -> Result<(f32, Vec<f32>), CallError> {
            candidate.set_params(&params)?;
            let stats = candidate.train_batch(&pixels, &labels)?;
            Ok((stats.loss, candidate.params()?))
        })();
        let (loss, after) = test.map_err(|e| format!("its self-test failed: {e}"))?;
        self_test::sound_step(loss, &after)?;
        Ok(Code {
            digest: manifest.sha256,
            label: format!("{} {}", manifest.name, manifest.version),
            compiled: Some(compiled),
        })
    }
}

impl Trainer for TabTrainer {
    type Error = String;
    fn architectures(&mut self) -> Result<Vec<String>, String> {
        match &self.active.compiled {
            None => Ok(ARCHITECTURES.iter().map(|a| a.to_string()).collect()),
            Some(c) => c.architectures().map_err(shown),
        }
    }
    fn build(&mut self, config: &ModelConfig) -> Result<(), String> {
        self.model = Some(TabModel::new(self.active.compiled.as_ref(), config)?);
        self.config = Some(config.clone());
        Ok(())
    }
    fn set_params(&mut self, params: &[f32]) -> Result<(), String> {
        self.model()?.set_params(params)
    }
    fn params(&mut self) -> Result<Vec<f32>, String> {
        self.model()?.params()
    }
    fn set_learning_rate(&mut self, lr: f32) -> Result<(), String> {
        let m = self.model()?;
        let o = m.optimizer()?;
        m.set_optimizer(o.with_learning_rate(lr))
    }
    fn train_batch(&mut self, pixels: &[u8], labels: &[u8]) -> Result<(f32, u32), String> {
        if self.canned.is_none() {
            self.canned = Some((pixels.to_vec(), labels.to_vec()));
        }
        // The helpers share the page's own code's steps; a component runs
        // in this worker alone.
        let helpers = self.helpers.take();
        let outcome = match (self.model(), &helpers) {
            (Ok(TabModel::BuiltIn(m)), Some(h)) => h
                .train_batch(m, pixels, labels)
                .map(|s| (s.loss, s.correct)),
            (Ok(m), _) => m.train_batch(pixels, labels),
            (Err(e), _) => Err(e),
        };
        self.helpers = helpers;
        outcome
    }

    fn prepare(&mut self, offer: Offer) -> Result<(), String> {
        if self.policy.trusted.is_empty() {
            return Err("this tab trusts no signing key (its pairing link named none)".into());
        }
        // Tested when the page polls: it names the component first.
        self.offered = Some(offer);
        Ok(())
    }

    fn poll_ready(&mut self) -> Option<(String, Result<(), String>)> {
        if self.outcomes.is_empty()
            && self.previous.is_none()
            && let Some(offer) = self.offered.take()
        {
            let digest = hearth_protocol::digest(&offer.component);
            let outcome = if let Some(reason) = self.failed.get(&digest) {
                Err(format!("it failed in this tab before: {reason}"))
            } else if digest == self.active.digest || self.ready.contains_key(&digest) {
                Ok(())
            } else {
                self.try_offer(&offer).map(|code| {
                    self.ready.insert(digest.clone(), code);
                })
            };
            if outcome.is_ok() && digest != self.active.digest {
                self.to_swap = Some(digest.clone());
            }
            self.outcomes.push((digest, outcome));
        }
        self.outcomes.pop()
    }

    fn swap(&mut self, digest: &str) -> Result<(), String> {
        let code = self
            .ready
            .get(digest)
            .cloned()
            .ok_or_else(|| format!("no component {digest} is ready"))?;
        let config = self.config.clone().ok_or("no model built yet")?;
        let mut next = TabModel::new(code.compiled.as_ref(), &config)?;
        let old = self.model()?;
        let (state, optimizer) = (old.optimizer_state()?, old.optimizer()?);
        next.set_optimizer(optimizer)?;
        next.set_optimizer_state(&state)?;
        let old_model = self.model.replace(next);
        let old_code = std::mem::replace(&mut self.active, code);
        self.previous = Some((old_code, old_model));
        self.to_swap = None;
        Ok(())
    }

    fn commit(&mut self) {
        self.previous = None;
    }

    fn roll_back(&mut self, reason: &str) -> Result<(), String> {
        let (code, model) = self.previous.take().ok_or("nothing to roll back to")?;
        let failed = std::mem::replace(&mut self.active, code);
        self.ready.remove(&failed.digest);
        self.failed.insert(failed.digest, reason.to_string());
        self.model = model;
        Ok(())
    }

    fn pending_rollback(&mut self) -> Option<(String, String)> {
        self.pending_rollback.take()
    }
}
