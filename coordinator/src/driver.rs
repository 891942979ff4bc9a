//! Drives the round engine from the server: session events in, engine
//! outputs carried out (frames to the sessions, scores from the scorer thread,
//! notices to the observers), with a real clock.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender, TryRecvError};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use hearth_mnist::Split;
use hearth_runtime::ComponentModel;
use tokio::sync::mpsc::UnboundedSender;

use crate::catalog::Catalog;
use crate::engine::{ConnId, Engine, Input, Output};
use crate::observe::Observer;
use crate::scorer::{self, Job, Scored};
use crate::session::Event;
use hearth_worker::ModelConfig;

/// Longest sleep between two looks at the clock.
const MAX_WAIT: Duration = Duration::from_secs(1);

/// How long the sessions get to deliver their goodbyes at the end.
const GOODBYE_GRACE: Duration = Duration::from_secs(5);

/// The engine's surroundings while it runs.
pub struct Driver<'a> {
    /// Where sessions report.
    pub events: &'a Receiver<Event>,
    /// Scores the global model on the test set.
    pub evaluator: &'a mut ComponentModel,
    /// The components hosts may run (offers, the evaluator's swaps).
    pub catalog: &'a Catalog,
    /// The model the evaluator builds (after a swap too).
    pub config: ModelConfig,
    /// The test set.
    pub test: &'a Split,
    /// Who hears about what happens.
    pub observers: Vec<&'a mut dyn Observer>,
    /// Where the engine's clock starts (a resumed run continues its own).
    pub clock: Duration,
}

/// Longest sleep between two looks for a score while one is awaited.
const SCORE_POLL: Duration = Duration::from_millis(10);

impl Driver<'_> {
    /// Runs `engine` until training is finished (or fails), then gives the
    /// sessions a few seconds to deliver their goodbyes. The test set is
    /// scored in a thread of its own while the next epoch trains.
    pub fn run(self, engine: &mut Engine) -> Result<()> {
        let Driver {
            events,
            evaluator,
            catalog,
            config,
            test,
            mut observers,
            clock,
        } = self;
        let (jobs_tx, jobs) = std::sync::mpsc::channel::<Job>();
        let (scores_tx, scores) = std::sync::mpsc::channel::<Scored>();
        std::thread::scope(|s| {
            std::thread::Builder::new()
                .name("scorer".into())
                .spawn_scoped(s, move || scorer::serve(evaluator, test, &jobs, &scores_tx))
                .context("starting the scoring thread")?;
            let surroundings = Surroundings {
                events,
                catalog,
                config,
                observers: &mut observers,
                jobs: jobs_tx,
                scores,
            };
            // Dropping the surroundings drops the jobs' sender: the scorer ends.
            surroundings.drive(engine, clock)
        })
    }
}

/// What the loop talks to: the sessions, the catalog, the scorer and the
/// observers.
struct Surroundings<'a, 'o> {
    events: &'a Receiver<Event>,
    catalog: &'a Catalog,
    config: ModelConfig,
    observers: &'a mut Vec<&'o mut dyn Observer>,
    jobs: Sender<Job>,
    scores: Receiver<Scored>,
}

impl Surroundings<'_, '_> {
    fn drive(self, engine: &mut Engine, clock: Duration) -> Result<()> {
        let started = Instant::now();
        let now = move || clock + started.elapsed();
        let mut senders: HashMap<ConnId, UnboundedSender<Vec<u8>>> = HashMap::new();
        let mut open: HashSet<ConnId> = HashSet::new();
        let mut finished_at: Option<Instant> = None;
        let mut scoring = 0usize;
        let mut outputs = engine.handle(now(), Input::Tick);
        loop {
            let mut queue = VecDeque::from(outputs);
            while let Some(output) = queue.pop_front() {
                match output {
                    Output::Send { conn, frame } => {
                        if let Some(tx) = senders.get(&conn) {
                            // A closed channel means the session ended; its Left event follows.
                            let _ = tx.send(frame);
                        }
                    }
                    Output::Close { conn } => {
                        // The session sends what is queued, then closes.
                        senders.remove(&conn);
                    }
                    Output::Evaluate { epoch, params } => {
                        self.jobs
                            .send(Job::Score { epoch, params })
                            .map_err(|_| anyhow::anyhow!("the scoring thread stopped"))?;
                        scoring += 1;
                    }
                    Output::Offer { conn, digest } => match self.catalog.offer(&digest) {
                        Some(frame) => {
                            if let Some(tx) = senders.get(&conn) {
                                let _ = tx.send(frame.to_vec());
                            }
                        }
                        None => {
                            tracing::warn!(%digest, "no offer for a component the engine rolls out")
                        }
                    },
                    Output::UseComponent { digest } => {
                        match self.catalog.model(&digest, &self.config) {
                            Ok(model) => {
                                // After the scores already asked for, in order.
                                self.jobs
                                    .send(Job::Use(Box::new(model)))
                                    .map_err(|_| anyhow::anyhow!("the scoring thread stopped"))?;
                                self.catalog.set_current(&digest);
                            }
                            Err(e) => tracing::warn!(%digest, error = %format!("{e:#}"),
                                "cannot score with the new component; keeping the old one"),
                        }
                    }
                    Output::Banned { digest } => {
                        let reason = engine
                            .view()
                            .failed_components
                            .get(&digest)
                            .cloned()
                            .unwrap_or_default();
                        self.catalog.fail(&digest, &reason);
                    }
                    Output::Notice(notice) => {
                        for o in self.observers.iter_mut() {
                            o.notice(&notice)?;
                        }
                    }
                    Output::Finished => finished_at = Some(Instant::now()),
                    Output::Failed(reason) => bail!("{reason}"),
                }
            }
            if let Some(at) = finished_at {
                senders.clear();
                if open.is_empty() || at.elapsed() > GOODBYE_GRACE {
                    return Ok(());
                }
            }
            if scoring > 0 {
                match self.scores.try_recv() {
                    Ok(scored) => {
                        scoring -= 1;
                        let (epoch, score) = scored.context("scoring the test set")?;
                        outputs = engine.handle(now(), Input::Evaluated { epoch, score });
                        continue;
                    }
                    Err(TryRecvError::Empty) => {}
                    Err(TryRecvError::Disconnected) => bail!("the scoring thread stopped"),
                }
            }
            let mut wait = match finished_at {
                Some(at) => GOODBYE_GRACE.saturating_sub(at.elapsed()),
                None => engine
                    .next_deadline()
                    .map_or(MAX_WAIT, |d| d.saturating_sub(now()))
                    .min(MAX_WAIT),
            };
            if scoring > 0 {
                wait = wait.min(SCORE_POLL);
            }
            let input = match self.events.recv_timeout(wait) {
                Ok(event) => input(event, &mut senders, &mut open),
                Err(RecvTimeoutError::Timeout) => Input::Tick,
                Err(RecvTimeoutError::Disconnected) => bail!("the server stopped"),
            };
            outputs = engine.handle(now(), input);
        }
    }
}

/// A session's event as the engine's input; keeps the connections' senders.
fn input(
    event: Event,
    senders: &mut HashMap<ConnId, UnboundedSender<Vec<u8>>>,
    open: &mut HashSet<ConnId>,
) -> Input {
    match event {
        Event::Joined {
            conn,
            worker,
            frames,
        } => {
            senders.insert(conn, frames);
            open.insert(conn);
            Input::Joined { conn, worker }
        }
        Event::Input(input) => {
            if let Input::Left { conn } = input {
                open.remove(&conn);
                senders.remove(&conn);
            }
            input
        }
    }
}
