//! Local steps that grow when devices wait on the link: a round's bytes
//! (the model down, the update up) cost the same whatever its local steps,
//! so a household whose link is slow for its devices' speed gets rounds of
//! more steps, and fewer of them.
//!
//! Longer rounds cost accuracy (the devices drift apart between averages:
//! at 11 devices, 99.05 % after 10 epochs at 8 local steps against 99.13 to
//! 99.25 % at 4), so they are only worth it when the link clearly
//! dominates. The measure is the devices' own: the training seconds their
//! results report, over the devices and the wall time of a window of
//! rounds. Below [`BUSY_TARGET`] the local steps double; once they have,
//! they double again below [`BUSY_TARGET_GROWN`], up to
//! `--max-local-steps`; at [`BUSY_ENOUGH`] or more they halve again, back
//! toward the run's (the link got faster, or the household smaller).
//!
//! The second mark is higher because a household that had to grow its
//! rounds is limited by its link (measured with synchronous rounds, head
//! starts only at the maximum): the mixed household (pi3:6, pi4:3,
//! laptop:2) trained 70–72 % of the time at 8 local steps, and stopping
//! there left its devices 71–96 % busy at 1.70–1.81 s per epoch, where a
//! run that went on to 16 had them 77–106 % busy at 1.33–1.49 s. Eleven
//! Pi 3s that grow once train about 83–86 % of the time and go no further.

use serde::{Deserialize, Serialize};

use super::state::Now;

/// Rounds a window spans before the local steps may change.
const WINDOW_ROUNDS: u32 = 8;
/// Share of the wall time devices should spend training; below it they
/// wait on the link (or on each other) and rounds grow.
pub const BUSY_TARGET: f64 = 0.7;
/// The same mark once the rounds have grown (see the module's doc).
pub const BUSY_TARGET_GROWN: f64 = 0.8;
/// Share at or above which grown rounds halve again: halving at most
/// doubles the share spent waiting, so it stays above
/// [`BUSY_TARGET_GROWN`] (no back and forth).
pub const BUSY_ENOUGH: f64 = 0.95;

/// The growth of the local steps and the window it is measured over (part
/// of the run state).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Pace {
    /// Local steps are the run's times this (1, 2, 4, …).
    pub growth: usize,
    /// When the window started (none: the next round closed starts one).
    start: Option<Now>,
    /// Training seconds the window's results reported.
    compute: f64,
    /// Rounds closed in the window.
    rounds: u32,
    /// Most workers of a round in the window.
    workers: usize,
    /// The local steps have reached `--max-local-steps`: the link, not
    /// the devices' drift, limits the run, and (with
    /// `--train-ahead-when-grown`) devices train ahead from then on, even
    /// if the rounds shrink again.
    pub reached_max: bool,
}

impl Default for Pace {
    fn default() -> Self {
        Self {
            growth: 1,
            start: None,
            compute: 0.0,
            rounds: 0,
            workers: 0,
            reached_max: false,
        }
    }
}

/// A change of the local steps, for the log.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Grown {
    /// The new growth (smaller than before if the rounds shrank).
    pub growth: usize,
    /// Whether it doubled (or halved).
    pub more: bool,
    /// The devices' busy share that called for it.
    pub busy: f64,
}

impl Pace {
    /// Starts a new window at the next round's close (an epoch began: the
    /// first epoch's rounds, which also carry every image, say little
    /// about the next ones).
    pub fn restart(&mut self) {
        self.start = None;
        self.compute = 0.0;
        self.rounds = 0;
        self.workers = 0;
    }

    /// A result that trained `seconds` by its device's clock.
    pub fn credit(&mut self, seconds: f64) {
        if self.start.is_some() {
            self.compute += seconds;
        }
    }

    /// A round of `workers` results closed at `now`. Once a window of
    /// rounds is over, doubles the growth if the devices were busy less
    /// than [`BUSY_TARGET`] of it ([`BUSY_TARGET_GROWN`] once grown) and
    /// the doubled local steps
    /// (`local_steps × growth × 2`) stay within `max_steps`; halves it if
    /// they were busy [`BUSY_ENOUGH`] of it or more.
    pub fn round_closed(
        &mut self,
        now: Now,
        workers: usize,
        local_steps: usize,
        max_steps: usize,
    ) -> Option<Grown> {
        let Some(start) = self.start else {
            self.restart();
            self.start = Some(now);
            return None;
        };
        self.rounds += 1;
        self.workers = self.workers.max(workers);
        if self.rounds < WINDOW_ROUNDS {
            return None;
        }
        let wall = now.saturating_sub(start).as_secs_f64();
        let busy = if wall > 0.0 && self.workers > 0 {
            self.compute / (self.workers as f64 * wall)
        } else {
            1.0
        };
        self.restart();
        self.start = Some(now);
        let before = self.growth;
        let doubled = before * 2;
        let target = if before > 1 {
            BUSY_TARGET_GROWN
        } else {
            BUSY_TARGET
        };
        let growth = if busy < target && local_steps * doubled <= max_steps {
            doubled
        } else if busy >= BUSY_ENOUGH && before > 1 {
            before / 2
        } else {
            return None;
        };
        self.growth = growth;
        if local_steps * growth * 2 > max_steps && growth > 1 {
            self.reached_max = true;
        }
        Some(Grown {
            growth,
            more: growth > before,
            busy,
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `rounds` rounds of `workers` devices, each round `wall` seconds long
    /// with `busy` of it training; returns the growth after each.
    fn run(p: &mut Pace, rounds: u32, workers: usize, busy: f64, max_steps: usize) -> Vec<usize> {
        let mut now = Duration::from_secs(100);
        p.round_closed(now, workers, 4, max_steps);
        (0..rounds)
            .map(|_| {
                for _ in 0..workers {
                    p.credit(busy);
                }
                now += Duration::from_secs(1);
                p.round_closed(now, workers, 4, max_steps);
                p.growth
            })
            .collect()
    }

    #[test]
    fn waiting_devices_get_longer_rounds_busy_ones_do_not() {
        let mut p = Pace::default();
        let g = run(&mut p, 24, 11, 0.5, 16);
        assert_eq!(g[6], 1, "not before a window is over");
        assert_eq!(g[7], 2, "half busy: doubled");
        assert_eq!(g[15], 4);
        assert_eq!(g[23], 4, "16 local steps at most");
        assert!(p.reached_max);
        let mut p = Pace::default();
        assert!(run(&mut p, 12, 11, 0.5, 16).contains(&2));
        assert!(!p.reached_max, "8 of 16 local steps");
        let mut p = Pace::default();
        assert!(run(&mut p, 24, 11, 0.75, 16).iter().all(|&g| g == 1));
        let mut p = Pace::default();
        assert!(
            run(&mut p, 24, 3, 0.1, 4).iter().all(|&g| g == 1),
            "no growth allowed"
        );
    }

    #[test]
    fn rounds_that_have_grown_grow_on_below_a_higher_mark() {
        // 75 % busy: not enough to start growing...
        let mut p = Pace::default();
        assert!(run(&mut p, 24, 11, 0.75, 16).iter().all(|&g| g == 1));
        // ...but enough to go on once grown, up to the maximum.
        let mut p = Pace::default();
        run(&mut p, 8, 11, 0.6, 16);
        assert_eq!(p.growth, 2);
        p.restart();
        let g = run(&mut p, 16, 11, 0.75, 16);
        assert_eq!((g[7], g[15]), (4, 4));
        assert!(p.reached_max);
        // 85 % once grown: no further.
        let mut p = Pace::default();
        run(&mut p, 8, 11, 0.6, 16);
        p.restart();
        assert!(run(&mut p, 16, 11, 0.85, 16).iter().all(|&g| g == 2));
    }

    #[test]
    fn grown_rounds_halve_again_once_devices_are_busy_enough() {
        let mut p = Pace::default();
        run(&mut p, 16, 4, 0.5, 16);
        assert_eq!(p.growth, 4);
        // Busy 90 %: between the two marks, the rounds stay as they are.
        p.restart();
        assert!(run(&mut p, 16, 4, 0.9, 16).iter().all(|&g| g == 4));
        // Busy all the time: halved once a window, down to the run's own.
        p.restart();
        let g = run(&mut p, 24, 4, 1.0, 16);
        assert_eq!((g[7], g[15], g[23]), (2, 1, 1));
        assert!(p.reached_max, "once reached, for the rest of the run");
    }

    #[test]
    fn a_restart_forgets_the_window() {
        let mut p = Pace::default();
        run(&mut p, 5, 2, 0.1, 16);
        p.restart();
        let g = run(&mut p, 7, 2, 0.1, 16);
        assert!(g.iter().all(|&g| g == 1), "a new window of 8 rounds");
    }
}
