//! Every option of `train` and `serve`, defined once: one struct that is both
//! the command line (clap) and the TOML file (serde). Flags win over the
//! file, the file wins over the defaults.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::ArgMatches;
use clap::parser::ValueSource;
use hearth_protocol::Encoding;
use hearth_worker::{LrSchedule, OptimizerConfig};
use serde::{Deserialize, Serialize};

use crate::engine::UpdateGuard;
use crate::household::HouseholdOptions;
use crate::listener::ConnectionLimits;
use crate::strategy::{Aggregate, LrScaling, MomentumOn, StepSplit};
use crate::tls::TlsOptions;

/// How a run trains: what the round engine and the strategy need (and what
/// a saved run state carries with it).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainingOptions {
    /// Architecture: lenet5, lenet5-tanh or lenet-mxnet.
    #[arg(long, default_value = "lenet5")]
    pub arch: String,
    /// Passes over the training set.
    #[arg(long, default_value_t = 10)]
    pub epochs: usize,
    /// Samples per local step.
    #[arg(long, default_value_t = 64)]
    pub batch: usize,
    /// Local steps (batches) per worker per round: 1 is synchronous SGD,
    /// more is FedAvg (fewer rounds, fewer bytes).
    #[arg(long, default_value_t = 4)]
    pub local_steps: usize,
    /// Local steps per worker per round in the first, synchronous epochs
    /// (`--train-ahead-after`): averaging more often while the model
    /// changes fastest. At 11 devices, 2 instead of 4 raised the accuracy
    /// after the first epoch on 7 seeds of 8 (seeds 5-12: mean 97.83 %
    /// against 97.46 %), for twice the rounds (and the models' bytes) in
    /// that epoch; the final accuracy did not move.
    #[arg(long, default_value_t = 2)]
    pub early_local_steps: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 0.05)]
    pub lr: f32,
    /// The largest rate a rate scaled with the devices (`--lr-scaling`)
    /// may reach (default: `--lr`, so every device steps at most at one
    /// device's peak). Above `--lr` it pays only with momentum on the
    /// coordinator (`--momentum-on server`), whose devices step without
    /// it: at 11 workers with one local step, `--lr-max 0.1` ended at
    /// 99.31-99.51 % (seeds 1-4, mean 99.43 %) against 99.30-99.37 % at
    /// 0.05; with momentum on the devices their own steps get too noisy.
    #[arg(long)]
    pub lr_max: Option<f32>,
    /// Learning-rate schedule over the run: cosine or constant.
    #[arg(long, default_value_t = LrSchedule::Cosine)]
    pub lr_schedule: LrSchedule,
    /// Momentum of SGD (on the devices or on the coordinator: `--momentum-on`).
    #[arg(long, default_value_t = 0.9)]
    pub momentum: f32,
    /// Weight decay (not on biases).
    #[arg(long, default_value_t = 1e-4)]
    pub wd: f32,
    /// Seed of the initialization and the per-epoch shuffles.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Workers to wait for before the first round.
    #[arg(long, default_value_t = 1)]
    pub min_workers: usize,
    /// Longest time, in seconds, a worker may take for one round before its
    /// batches are reassigned; once its speed is measured, its deadline is
    /// four times its expected round time plus 5 s, if that is shorter.
    #[arg(long, default_value_t = 120)]
    pub round_timeout: u64,
    /// Give up when fewer than the needed workers are connected for this
    /// many seconds (default: 60 when `train` starts local workers, else
    /// wait for the household's devices forever).
    #[arg(long)]
    pub join_timeout: Option<u64>,
    /// Use only the first N training images.
    #[arg(long)]
    pub train_limit: Option<usize>,
    /// Use only the first N test images.
    #[arg(long)]
    pub test_limit: Option<usize>,
    /// What to do with an update whose norm is past the bound: clip (scale
    /// it down to the bound) or reject (its batches go back to the queue);
    /// one past 100 times the bound is refused either way.
    #[arg(long, value_enum, default_value_t = UpdateGuard::Clip)]
    pub update_guard: UpdateGuard,
    /// The bound: this many times the median norm, per batch, of the recent
    /// accepted updates (before there are any: the model's own norm).
    #[arg(long, default_value_t = 10.0)]
    pub norm_factor: f32,
    /// Refused messages in a row that put a worker on probation (one batch a
    /// round, reported) until it sends as many good results in a row.
    #[arg(long, default_value_t = 3)]
    pub strikes: u32,
    /// How the round's updates are combined: mean (FedAvg, weighted by
    /// samples), or coordinate-wise median or trimmed-mean, for a household
    /// that suspects a device.
    #[arg(long, value_enum, default_value_t = Aggregate::Mean)]
    pub aggregate: Aggregate,
    /// Send each device its next round's images while it trains the
    /// current one (the link and the devices then work at the same time),
    /// and to a device that keeps samples (`--keep-samples`) those of the
    /// round after as well (a stock, which the ledger gives it first), so
    /// that where every image crosses the link the link works a round ahead
    /// (a mixed household's first epoch: devices 78-89 % busy against
    /// 51-71 %).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub prefetch: bool,
    /// With `--prefetch`: each device trains those images as soon as it has
    /// answered its round, while the new global model is computed and
    /// crosses the link, and puts what it learned on top of that model when
    /// it comes (delayed averaging). It trains them from its copy of the
    /// global model plus its share of the round it answered (the part of the
    /// next model it can know), not from its own model: 11 devices, 10
    /// epochs, 99.11-99.20 % over six runs, against 99.00 % from its own
    /// model and 99.12-99.25 % with no head starts, in 1.12-1.17 instead of
    /// 1.32-1.37 times the devices' training time per round. From
    /// `--train-ahead-after` on, and
    /// only with `--momentum-on workers` (server momentum on updates one
    /// round old is unstable).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub train_ahead: bool,
    /// With `--train-ahead false`: head starts all the same once the rounds
    /// have grown to `--max-local-steps`, for the rest of the run: the devices' link, not
    /// their drift, then limits it, as in a household of laptops and Pis
    /// on 100 Mbit/s (pi3:6,pi4:3,laptop:2, 10 epochs: devices 81-99 %
    /// busy from the fourth epoch instead of 69-88 %, 99.17 % final against
    /// 99.07 % synchronous). A household of Pi 3s grows to 8 local steps
    /// and never gets there.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub train_ahead_when_grown: bool,
    /// When the devices train less than 70 % of the time (80 % once the
    /// rounds have grown; they wait on the link), double the local steps,
    /// up to this many (a round's bytes cost the same whatever its steps;
    /// longer rounds cost some accuracy), and halve them again at 95 % or
    /// more; only after `--train-ahead-after`
    /// epochs and with `--momentum-on workers`. `--local-steps` or less: never.
    #[arg(long, default_value_t = 16)]
    pub max_local_steps: usize,
    /// Epochs at the start trained without head starts (synchronous
    /// rounds) and at `--early-local-steps` (rounds do not grow yet): early
    /// on the model changes fastest and an update one round old costs most
    /// (at 11 devices, 95-96 % after the first epoch with them, 97.6 %
    /// without). Only among devices alike in speed: when the devices'
    /// measured training rates differ by more than twice, the fast ones
    /// would wait for the slow ones, and their rounds train ahead and grow
    /// from the start (`engine::UNLIKE_RATES`).
    #[arg(long, default_value_t = 1)]
    pub train_ahead_after: usize,
    /// Let each device keep the images it is sent (as many as it says it
    /// can) and name them later instead of sending them again; every epoch
    /// gives a device the samples it keeps first (after the first epoch
    /// most images no longer cross the link).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    pub keep_samples: bool,
    /// Largest random shift of a training image, in pixels, drawn afresh
    /// every round on the device (0: none); the ledger's samples stay the same.
    /// 1 beat 2 with one worker (99.30-99.47 % against 99.17-99.31 %, seeds
    /// 1-5) and with 11 (99.14-99.36 % against 98.97-99.25 %, seeds 1-8):
    /// 2 pixels is much of a digit's stroke.
    #[arg(long, default_value_t = 1)]
    pub shift: u8,
    /// Epochs at the start trained without shifts (shifts slow the first
    /// epoch down and only help against overfitting later).
    #[arg(long, default_value_t = 1)]
    pub shift_after: usize,
    /// Where momentum is applied: workers (each device keeps its velocity
    /// across rounds; one device is plain SGD with momentum) or server (on
    /// the average change, as MXNet's parameter server does).
    #[arg(long, value_enum, default_value_t = MomentumOn::Workers)]
    pub momentum_on: MomentumOn,
    /// How the workers' learning rate grows with the devices of a round
    /// (its batches over the largest share, n), never past `--lr-max`: sqrt
    /// (the schedule's rate times √n, so that as the schedule decays more
    /// devices keep the rate up longer), linear, or none.
    #[arg(long, value_enum, default_value_t = LrScaling::Sqrt)]
    pub lr_scaling: LrScaling,
    /// How many local steps a device trains its batches in, so that more
    /// devices come closer to one device's accuracy in the same epochs:
    /// sqrt (√n steps per batch, at the same learning rate; one device is
    /// the study's recipe) or none (one step per batch).
    #[arg(long, value_enum, default_value_t = StepSplit::Sqrt)]
    pub split_steps: StepSplit,
    /// Epochs over which that scaling ramps up from 1.
    #[arg(long, default_value_t = 0.5)]
    pub warmup_epochs: f32,
    /// How parameter vectors travel, both ways, to every device that can
    /// read and write it (others get f32): int4 (deflated: about a twelfth
    /// of f32's bytes on a model's change), int8 (about a quarter), f16 or
    /// f32. Lossy encodings keep
    /// error feedback, and the model goes down as the change from the
    /// device's own copy.
    #[arg(long, default_value_t = Encoding::Int4)]
    pub encoding: Encoding,
    /// Save the run state (atomically, in OUT/run-state.bin) at a round
    /// boundary at least this often, in seconds, and after every epoch; 0:
    /// only after every epoch. `--resume OUT` continues from it.
    #[arg(long, default_value_t = 5)]
    pub checkpoint_every: u64,
}

impl TrainingOptions {
    /// The optimizer settings of the run (the strategy decides what workers get).
    pub fn optimizer(&self) -> OptimizerConfig {
        OptimizerConfig {
            learning_rate: self.lr,
            momentum: self.momentum,
            weight_decay: self.wd,
        }
    }

    /// The largest rate a scaled learning rate may reach (`--lr-max`).
    pub fn lr_max(&self) -> f32 {
        self.lr_max.unwrap_or(self.lr)
    }

    /// `--round-timeout` as a duration (at least one second).
    pub fn round_timeout(&self) -> Duration {
        Duration::from_secs(self.round_timeout.max(1))
    }

    /// `--join-timeout` as a duration, if any.
    pub fn join_timeout(&self) -> Option<Duration> {
        self.join_timeout.map(Duration::from_secs)
    }

    /// Errors for settings no run can use.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.batch >= 1, "--batch must be at least 1");
        anyhow::ensure!(self.epochs >= 1, "--epochs must be at least 1");
        anyhow::ensure!(self.local_steps >= 1, "--local-steps must be at least 1");
        anyhow::ensure!(
            self.early_local_steps >= 1,
            "--early-local-steps must be at least 1"
        );
        anyhow::ensure!(self.shift <= 8, "--shift must be at most 8 pixels");
        anyhow::ensure!(
            self.warmup_epochs.is_finite() && self.warmup_epochs >= 0.0,
            "--warmup-epochs must be a finite number of epochs, 0 or more"
        );
        anyhow::ensure!(
            self.norm_factor.is_finite() && self.norm_factor > 1.0,
            "--norm-factor must be a number above 1"
        );
        anyhow::ensure!(
            self.lr_max.is_none_or(|m| m.is_finite() && m >= self.lr),
            "--lr-max must be a finite rate, at least --lr"
        );
        self.optimizer()
            .validate()
            .map_err(|e| anyhow::anyhow!("{e}"))
    }
}

/// Options shared by `train` and `serve` (and the benchmarks).
#[derive(clap::Args, Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunOptions {
    /// A TOML file with any of these options (flags override it); see hearth.example.toml.
    #[arg(long)]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// `hearth-host work` processes to start on this machine (train: 4, serve: 0).
    #[arg(long)]
    pub local_workers: Option<usize>,
    /// How the run trains.
    #[command(flatten)]
    #[serde(flatten)]
    pub training: TrainingOptions,
    /// MNIST directory (default: the bundled copy).
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// Address to listen on (`train` defaults to a free loopback port, `serve` to 127.0.0.1:7070).
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// The household (secret, paired devices).
    #[command(flatten)]
    #[serde(flatten)]
    pub household: HouseholdOptions,
    /// Run this signed component (FILE.sig next to it, signed with the
    /// household's key, HOME/signing.key) instead of the built-in one; the
    /// local hosts run it too.
    #[arg(long)]
    pub component: Option<PathBuf>,
    /// TLS on the port.
    #[command(flatten)]
    #[serde(flatten)]
    pub tls: TlsOptions,
    /// Limits on connections before and after admission.
    #[command(flatten)]
    #[serde(flatten)]
    pub limits: ConnectionLimits,
    /// Output directory.
    #[arg(long, default_value = "runs/train")]
    pub out: PathBuf,
    /// No progress bars or worker tables.
    #[arg(long)]
    pub quiet: bool,
    /// Continue the run saved in this directory (its last checkpoint; the
    /// training options are the saved ones); outputs go there too.
    #[arg(long)]
    #[serde(skip)]
    pub resume: Option<PathBuf>,
}

impl RunOptions {
    /// The options as given: the defaults, then the `--config` file, then the
    /// flags of `matches` (the subcommand's matches).
    pub fn resolve(self, matches: &ArgMatches) -> Result<Self> {
        let Some(path) = self.config.clone() else {
            return Ok(self);
        };
        let file = read_file(&path)?;
        let from_cli =
            |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine));
        let mut merged = self
            .merged_with(file, from_cli)
            .with_context(|| format!("in {}", path.display()))?;
        merged.config = Some(path);
        Ok(merged)
    }

    /// These options with every key of `file` that `from_cli` does not claim.
    fn merged_with(&self, file: toml::Table, from_cli: impl Fn(&str) -> bool) -> Result<Self> {
        let serde_json::Value::Object(mut fields) = serde_json::to_value(self)? else {
            bail!("options do not serialize as a table");
        };
        for (key, value) in file {
            if !fields.contains_key(&key) {
                bail!("unknown field `{key}` (options are named like the flags, with _ for -)");
            }
            if !from_cli(&key) {
                fields.insert(key, serde_json::to_value(value)?);
            }
        }
        serde_json::from_value(serde_json::Value::Object(fields))
            .context("a value of the wrong type")
    }
}

fn read_file(path: &Path) -> Result<toml::Table> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::cli::{Action, Cli};

    fn parse(argv: &[&str], file: &str) -> Result<RunOptions> {
        let matches = Cli::command().get_matches_from(argv);
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Action::Train { run, .. } = cli.command else {
            panic!("train expected")
        };
        let (_, sub) = matches.subcommand().unwrap();
        let from_cli = |id: &str| matches!(sub.value_source(id), Some(ValueSource::CommandLine));
        run.merged_with(toml::from_str(file).unwrap(), from_cli)
    }

    #[test]
    fn the_file_fills_defaults_and_flags_win() {
        let file = "epochs = 3\nlr = 0.1\nlocal_workers = 2\narch = \"lenet-mxnet\"\ntrain_limit = 500\nlr_schedule = \"constant\"\n";
        let run = parse(&["hearth-coordinator", "train", "--epochs", "7"], file).unwrap();
        let t = &run.training;
        assert_eq!(t.epochs, 7, "the flag wins");
        assert_eq!(
            (t.lr, run.local_workers, t.arch.as_str(), t.train_limit),
            (0.1, Some(2), "lenet-mxnet", Some(500))
        );
        assert_eq!(t.lr_schedule, LrSchedule::Constant);
        assert_eq!(t.batch, 64, "untouched defaults stay");
    }

    #[test]
    fn defaults_survive_the_merge_bit_for_bit() {
        let plain = parse(&["hearth-coordinator", "train"], "").unwrap();
        let t = &plain.training;
        assert_eq!(t.lr.to_bits(), 0.05f32.to_bits());
        assert_eq!(t.momentum.to_bits(), 0.9f32.to_bits());
        assert_eq!(t.wd.to_bits(), 1e-4f32.to_bits());
        let odd = parse(
            &["hearth-coordinator", "train", "--lr", "0.0123456789"],
            "seed = 2",
        )
        .unwrap();
        assert_eq!(odd.training.lr.to_bits(), 0.012_345_679_f32.to_bits());
    }

    #[test]
    fn the_largest_scaled_rate_defaults_to_the_peak_and_is_never_below_it() {
        let argv = ["hearth-coordinator", "train"];
        let plain = parse(&argv, "").unwrap().training;
        assert_eq!(plain.lr_max(), plain.lr);
        plain.validate().unwrap();
        let raised = parse(&argv, "lr_max = 0.1").unwrap().training;
        assert_eq!(raised.lr_max(), 0.1);
        raised.validate().unwrap();
        let below = parse(&argv, "lr_max = 0.01").unwrap().training;
        let e = below.validate().unwrap_err();
        assert!(format!("{e:#}").contains("--lr-max"), "{e:#}");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        let argv = ["hearth-coordinator", "train"];
        let e = parse(&argv, "epoch = 3").unwrap_err();
        assert!(format!("{e:#}").contains("epoch"), "{e:#}");
        assert!(parse(&argv, "epochs = \"three\"").is_err());
        assert!(parse(&argv, "lr_schedule = \"linear\"").is_err());
        assert!(
            parse(&argv, "config = \"x.toml\"").is_err(),
            "no nested files"
        );
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../hearth.example.toml");
        parse(&["hearth-coordinator", "train"], text).unwrap();
    }
}
