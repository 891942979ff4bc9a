//! The log: what happened to workers and their results, for people.

use super::{Observer, shown};
use crate::engine::{ComponentEvent, Notice, Requeue};

/// Writes worker events to the `tracing` log.
pub struct Log;

impl Observer for Log {
    fn notice(&mut self, notice: &Notice) -> anyhow::Result<()> {
        match notice {
            Notice::Joined { worker, kind } => {
                tracing::info!(worker = %shown(worker), ?kind, "joined")
            }
            Notice::Left { worker } => tracing::info!(worker = %shown(worker), "left"),
            Notice::Waiting {
                connected,
                available,
                needed,
            } => tracing::info!(connected, available, needed, "waiting for workers"),
            Notice::Refused {
                worker,
                round,
                reason,
            } => {
                tracing::warn!(worker = %shown(worker), ?round, reason = %shown(reason), "refused")
            }
            Notice::Requeued {
                worker,
                batches,
                why,
            } => {
                let worker = shown(worker);
                match why {
                    Requeue::Left => tracing::warn!(
                        %worker,
                        batches,
                        "left mid-round; its batches go back to the queue"
                    ),
                    Requeue::MissedDeadline { waited } => tracing::warn!(
                        %worker,
                        batches,
                        waited_s = waited.as_secs_f64(),
                        "no answer by its deadline; its batches go back to the queue"
                    ),
                    Requeue::Failed(reason) => tracing::warn!(
                        %worker,
                        batches,
                        reason = %shown(reason),
                        "worker failed its round; its batches go back to the queue"
                    ),
                    Requeue::Rejected => tracing::warn!(
                        %worker,
                        batches,
                        "result refused; its batches go back to the queue"
                    ),
                }
            }
            Notice::Suspect { worker, reason } => tracing::warn!(
                worker = %shown(worker),
                reason = %shown(reason),
                "on probation: its messages keep being refused (one batch a round until it sends good results)"
            ),
            Notice::Trusted { worker } => {
                tracing::info!(worker = %shown(worker), "off probation: good results again")
            }
            Notice::Clipped { worker, from, to } => tracing::warn!(
                worker = %shown(worker),
                norm = from,
                bound = to,
                "update past the norm bound, scaled down to it"
            ),
            Notice::Back { worker } => {
                tracing::info!(worker = %shown(worker), "answers again; back in the rounds")
            }
            Notice::Component {
                worker,
                digest,
                label,
                event,
                detail,
            } => {
                let worker = worker.as_deref().map(shown).unwrap_or_default();
                let (name, detail) = (event.name(), shown(detail));
                if matches!(
                    event,
                    ComponentEvent::Refused | ComponentEvent::RolledBack | ComponentEvent::Halted
                ) {
                    tracing::warn!(%worker, component = %label, %digest, %detail, "component {name}")
                } else {
                    tracing::info!(%worker, component = %label, %digest, %detail, "component {name}")
                }
            }
            Notice::Paced {
                local_steps,
                more,
                busy,
            } => {
                let busy_share = format!("{:.0} %", busy * 100.0);
                if *more {
                    tracing::info!(
                        local_steps,
                        busy = busy_share,
                        "devices waited on the link: rounds of more local steps"
                    )
                } else {
                    tracing::info!(
                        local_steps,
                        busy = busy_share,
                        "devices were busy: rounds of fewer local steps"
                    )
                }
            }
            Notice::WorkerError { worker, reason } => {
                tracing::warn!(worker = %shown(worker), reason = %shown(reason), "worker reported an error")
            }
            Notice::RoundFinished(r) => tracing::debug!(
                epoch = r.epoch,
                round = r.round,
                samples = r.samples,
                "round finished"
            ),
            Notice::Completed(entries) => {
                if let Some(e) = entries.first() {
                    tracing::debug!(worker = %shown(&e.worker), round = e.round, batches = entries.len(), "result credited")
                }
            }
            _ => {}
        }
        Ok(())
    }
}
