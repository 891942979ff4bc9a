//! Rolling out a new training component: one device first (the canary),
//! then the rest, each swapping at a round boundary (an assignment names the
//! component its round runs on). A refusal or a rollback halts the rollout,
//! and a version that failed is never offered again.

use hearth_protocol::{self as proto, ComponentState, WorkerKind};
use serde::{Deserialize, Serialize};

use super::notice::{ComponentEvent, Notice, Requeue};
use super::state::{ConnId, Now};
use super::{Engine, Output};

/// Rounds the canary must complete on a new component before the other
/// devices are offered it: the rounds a device watches a component for.
pub const CANARY_ROUNDS: u64 = hearth_session::WATCH_ROUNDS as u64;

/// How long a rollout waits for a canary that left after it was offered the
/// component (a component that ends its process makes the canary leave; it
/// reports the rollback when it is back) before it halts. No other device
/// is offered the component meanwhile.
pub const CANARY_ABSENCE: std::time::Duration = std::time::Duration::from_secs(120);

/// A signed component the coordinator accepts (the driver verified it).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ComponentInfo {
    /// [`hearth_protocol::digest`] of its bytes.
    pub digest: String,
    /// Name from its manifest.
    pub name: String,
    /// Version from its manifest.
    pub version: String,
}

impl ComponentInfo {
    /// "name version", for tables and logs.
    pub fn label(&self) -> String {
        format!("{} {}", self.name, self.version)
    }
}

/// How far a rollout got.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Stage {
    /// Offered to one device, which must prove it.
    Canary,
    /// The canary proved it: every device is offered it.
    Wide,
    /// Every connected device runs it.
    Done,
    /// Stopped, with why: nobody else is offered it.
    Halted(String),
}

/// A component on its way to the devices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rollout {
    /// What is rolled out.
    pub target: ComponentInfo,
    /// What the devices ran before.
    pub previous: String,
    /// How far it got.
    pub stage: Stage,
    /// The device that tries it first.
    pub canary: Option<String>,
    /// Rounds the canary completed on it.
    pub canary_rounds: u64,
    /// Since when the canary is gone, if it left after the offer.
    pub canary_gone: Option<Now>,
    /// When it began.
    pub started: Now,
}

impl Rollout {
    /// Whether it is still under way.
    pub fn active(&self) -> bool {
        matches!(self.stage, Stage::Canary | Stage::Wide)
    }

    /// Whether devices are offered it: under way, or done (a device that
    /// joins afterwards on another component gets it too).
    pub fn offering(&self) -> bool {
        self.active() || self.stage == Stage::Done
    }
}

impl Engine {
    /// A verified component arrived (pushed by the household's owner): roll
    /// it out, unless it runs already, failed before, or is under way.
    pub(super) fn component_arrived(&mut self, now: Now, info: ComponentInfo) {
        let digest = info.digest.clone();
        self.state.components.insert(digest.clone(), info.clone());
        let skip = if digest == self.state.component.digest {
            Some("it runs already".to_string())
        } else if let Some(reason) = self.state.failed_components.get(&digest) {
            Some(format!("it failed before: {reason}"))
        } else if self
            .state
            .rollout
            .as_ref()
            .is_some_and(|r| r.active() && r.target.digest == digest)
        {
            Some("it is being rolled out".to_string())
        } else {
            None
        };
        if let Some(detail) = skip {
            self.component_notice(None, &digest, ComponentEvent::Ignored, detail);
            return;
        }
        if let Some(old) = self.state.rollout.as_ref().filter(|r| r.active()) {
            let old = old.target.digest.clone();
            let why = format!("superseded by {}", info.label());
            self.halt(&old, why, false);
        }
        self.state.rollout = Some(Rollout {
            target: info,
            previous: self.state.component.digest.clone(),
            stage: Stage::Canary,
            canary: None,
            canary_rounds: 0,
            canary_gone: None,
            started: now,
        });
        self.component_notice(None, &digest, ComponentEvent::Arrived, String::new());
        self.rollout_step(now);
    }

    /// Offers the component to whoever should have it now (called at every
    /// round boundary and when a worker joins).
    pub(super) fn rollout_step(&mut self, now: Now) {
        let Some(r) = self.state.rollout.as_ref().filter(|r| r.offering()) else {
            return;
        };
        let target = r.target.digest.clone();
        // Hosts and tabs alike (a tab runs a component in its browser's
        // engine); one that said it cannot take components is left alone.
        let eligible =
            |w: &super::state::WorkerSlot| !w.unable && !w.missed && w.component != target;
        match r.stage {
            Stage::Canary => {
                let canary_here = r
                    .canary
                    .as_ref()
                    .is_some_and(|c| self.state.workers.values().any(|w| &w.name == c));
                if canary_here {
                    if let Some(r) = self.state.rollout.as_mut() {
                        r.canary_gone = None;
                    }
                    return;
                }
                if r.canary.is_some() {
                    // Offered and gone: wait for it to come back and report.
                    let Some(r) = self.state.rollout.as_mut() else {
                        return;
                    };
                    let since = *r.canary_gone.get_or_insert(now);
                    if now.saturating_sub(since) > CANARY_ABSENCE {
                        let why = format!(
                            "the canary left while trying it and was not back within {} s",
                            CANARY_ABSENCE.as_secs()
                        );
                        self.halt(&target, why, false);
                    }
                    return;
                }
                let suspects = &self.state.guard.suspects;
                let pick = self
                    .state
                    .workers
                    .iter()
                    // Not one that was offered it already (and could not take it).
                    .filter(|(_, w)| {
                        eligible(w)
                            && !suspects.contains_key(&w.name)
                            && w.offered.as_deref() != Some(&target)
                    })
                    // A host first: a tab's engine is not the devices'.
                    .min_by_key(|(_, w)| (w.kind != WorkerKind::Host, w.name.clone()))
                    .map(|(&c, w)| (c, w.name.clone()));
                if let Some((conn, name)) = pick
                    && let Some(r) = self.state.rollout.as_mut()
                {
                    r.canary = Some(name);
                    r.canary_rounds = 0;
                    self.offer(conn, &target);
                }
            }
            Stage::Wide | Stage::Done => {
                let done = r.stage == Stage::Done;
                let conns: Vec<ConnId> = self
                    .state
                    .workers
                    .iter()
                    .filter(|(_, w)| eligible(w) && w.offered.as_deref() != Some(&target))
                    .map(|(&c, _)| c)
                    .collect();
                for conn in conns {
                    self.offer(conn, &target);
                }
                let able = self.state.workers.values().filter(|w| !w.unable);
                let mut able = able.peekable();
                if !done && able.peek().is_some() && able.all(|w| w.component == target) {
                    if let Some(r) = self.state.rollout.as_mut() {
                        r.stage = Stage::Done;
                    }
                    self.component_notice(None, &target, ComponentEvent::Done, String::new());
                }
            }
            Stage::Halted(_) => {}
        }
    }

    fn offer(&mut self, conn: ConnId, digest: &str) {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return;
        };
        w.offered = Some(digest.to_string());
        let worker = w.name.clone();
        self.out.push(Output::Offer {
            conn,
            digest: digest.to_string(),
        });
        self.component_notice(Some(worker), digest, ComponentEvent::Offered, String::new());
    }

    /// The component `conn`'s next round should run on: the rollout's, if
    /// this worker is ready for it and its turn has come; else empty (what
    /// it runs).
    pub(super) fn component_for(&self, conn: ConnId) -> String {
        let (Some(r), Some(w)) = (
            self.state.rollout.as_ref().filter(|r| r.offering()),
            self.state.workers.get(&conn),
        ) else {
            return String::new();
        };
        let ready = w.ready.as_deref() == Some(&r.target.digest) && w.component != r.target.digest;
        let turn = match r.stage {
            Stage::Canary => r.canary.as_deref() == Some(&w.name),
            _ => true,
        };
        if ready && turn {
            r.target.digest.clone()
        } else {
            String::new()
        }
    }

    /// A credited round of `conn` ran on `digest`.
    pub(super) fn ran_on(&mut self, conn: ConnId, round: u64, digest: &str) {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return;
        };
        let swapped = w.component != digest;
        if swapped {
            w.previous_component = std::mem::replace(&mut w.component, digest.to_string());
            w.swapped_round = Some(round);
        }
        let worker = w.name.clone();
        if swapped {
            let detail = format!("round {round}");
            self.component_notice(
                Some(worker.clone()),
                digest,
                ComponentEvent::Swapped,
                detail,
            );
        }
        let Some(r) = self.state.rollout.as_mut() else {
            return;
        };
        if r.stage != Stage::Canary
            || r.target.digest != digest
            || r.canary.as_deref() != Some(&worker)
        {
            return;
        }
        r.canary_rounds += 1;
        if r.canary_rounds < CANARY_ROUNDS {
            return;
        }
        r.stage = Stage::Wide;
        let info = r.target.clone();
        let detail = format!("{worker} completed {CANARY_ROUNDS} rounds on it");
        self.state.component = info.clone();
        self.out.push(Output::UseComponent {
            digest: info.digest.clone(),
        });
        self.component_notice(None, &info.digest, ComponentEvent::Wide, detail);
    }

    /// What a worker says of an offered component.
    pub(super) fn component_status(&mut self, conn: ConnId, s: proto::ComponentStatus) {
        let Some(w) = self.state.workers.get_mut(&conn) else {
            return;
        };
        let worker = w.name.clone();
        let canary =
            self.state.rollout.as_ref().is_some_and(|r| {
                r.canary.as_deref() == Some(&worker) && r.target.digest == s.digest
            });
        // A rollback may come on a new connection (the process restarted
        // while on trial): from the canary, or from one that ran it.
        let concerned = w.offered.as_deref() == Some(&s.digest)
            || (s.state == ComponentState::RolledBack && (canary || w.component == s.digest));
        if !concerned {
            let reason = "a status for a component this worker was not offered".to_string();
            self.refuse(conn, None, reason);
            return;
        }
        let reason: String = s.reason.chars().take(300).collect();
        match s.state {
            ComponentState::Ready => {
                w.ready = Some(s.digest.clone());
                self.component_notice(Some(worker), &s.digest, ComponentEvent::Ready, reason);
            }
            ComponentState::Unable => {
                w.unable = true;
                w.component_note = format!("cannot take components: {reason}");
                self.component_notice(
                    Some(worker.clone()),
                    &s.digest,
                    ComponentEvent::Unable,
                    reason,
                );
                if canary && let Some(r) = self.state.rollout.as_mut() {
                    // Not the component's fault: another device tries it.
                    r.canary = None;
                    self.rollout_step(self.state.clock);
                }
            }
            ComponentState::Refused => {
                w.component_note = format!("refused: {reason}");
                self.component_notice(
                    Some(worker.clone()),
                    &s.digest,
                    ComponentEvent::Refused,
                    reason.clone(),
                );
                if canary {
                    self.halt(
                        &s.digest,
                        format!("the canary {worker} refused it: {reason}"),
                        true,
                    );
                }
            }
            ComponentState::RolledBack => {
                let busy_round = w.busy.as_ref().map(|b| b.round);
                w.rollbacks += 1;
                w.ready = None;
                w.component_note = format!("rolled back: {reason}");
                if w.component == s.digest {
                    // Its last credited round was on it; it runs what it ran
                    // before now (on a new connection: what its hello said).
                    let previous = if w.previous_component.is_empty() {
                        self.state
                            .rollout
                            .as_ref()
                            .map(|r| r.previous.clone())
                            .unwrap_or_default()
                    } else {
                        w.previous_component.clone()
                    };
                    if let Some(w) = self.state.workers.get_mut(&conn) {
                        w.component = previous;
                    }
                }
                if s.round.is_some() && s.round == busy_round {
                    self.release(conn, Requeue::Failed(format!("rolled back: {reason}")));
                }
                self.component_notice(
                    Some(worker.clone()),
                    &s.digest,
                    ComponentEvent::RolledBack,
                    reason.clone(),
                );
                let why = format!("{worker} rolled back from it: {reason}");
                self.halt(&s.digest, why, true);
            }
        }
    }

    /// Stops rolling out `digest` (if it is the rollout's); `failed`: never
    /// offer it again (the transport stops admitting it too).
    fn halt(&mut self, digest: &str, reason: String, failed: bool) {
        if let Some(r) = self
            .state
            .rollout
            .as_mut()
            .filter(|r| r.active() && r.target.digest == digest)
        {
            r.stage = Stage::Halted(reason.clone());
            self.component_notice(None, digest, ComponentEvent::Halted, reason.clone());
        }
        if failed && self.state.component.digest != digest {
            self.state
                .failed_components
                .insert(digest.to_string(), reason);
            self.out.push(Output::Banned {
                digest: digest.to_string(),
            });
        }
    }

    fn component_notice(
        &mut self,
        worker: Option<String>,
        digest: &str,
        event: ComponentEvent,
        detail: String,
    ) {
        let label = self
            .state
            .components
            .get(digest)
            .map_or_else(|| "unknown".to_string(), ComponentInfo::label);
        self.notice(Notice::Component {
            worker,
            digest: digest.to_string(),
            label,
            event,
            detail,
        });
    }
}
