//! The TOML configuration file: every option of `train`/`serve`, with flags
//! on the command line taking precedence over the file.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use clap::ArgMatches;
use clap::parser::ValueSource;
use serde::Deserialize;

use crate::RunArgs;

/// `hearth.toml`: the same names as the flags, with `_` for `-`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    local_workers: Option<usize>,
    arch: Option<String>,
    epochs: Option<usize>,
    batch: Option<usize>,
    local_steps: Option<usize>,
    lr: Option<f32>,
    lr_schedule: Option<String>,
    momentum: Option<f32>,
    wd: Option<f32>,
    seed: Option<u64>,
    data: Option<PathBuf>,
    train_limit: Option<usize>,
    test_limit: Option<usize>,
    listen: Option<SocketAddr>,
    token: Option<String>,
    min_workers: Option<usize>,
    round_timeout: Option<u64>,
    out: Option<PathBuf>,
    quiet: Option<bool>,
}

impl ConfigFile {
    /// Reads and parses a file; unknown keys are errors (typos do not pass silently).
    pub fn load(path: &Path) -> Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
    }

    /// Fills every option of `run` (and `local_workers`) that was not given on
    /// the command line (per `matches`) from the file.
    pub fn apply(self, matches: &ArgMatches, run: &mut RunArgs, local_workers: &mut usize) {
        let from_cli =
            |id: &str| matches!(matches.value_source(id), Some(ValueSource::CommandLine));
        macro_rules! take {
            ($field:ident, $target:expr) => {
                if let Some(v) = self.$field
                    && !from_cli(stringify!($field))
                {
                    $target = v;
                }
            };
            (opt $field:ident, $target:expr) => {
                if let Some(v) = self.$field
                    && !from_cli(stringify!($field))
                {
                    $target = Some(v);
                }
            };
        }
        take!(local_workers, *local_workers);
        take!(arch, run.arch);
        take!(epochs, run.epochs);
        take!(batch, run.batch);
        take!(local_steps, run.local_steps);
        take!(lr, run.lr);
        take!(lr_schedule, run.lr_schedule);
        take!(momentum, run.momentum);
        take!(wd, run.wd);
        take!(seed, run.seed);
        take!(opt data, run.data);
        take!(opt train_limit, run.train_limit);
        take!(opt test_limit, run.test_limit);
        take!(opt listen, run.listen);
        take!(token, run.token);
        take!(min_workers, run.min_workers);
        take!(round_timeout, run.round_timeout);
        take!(out, run.out);
        take!(quiet, run.quiet);
    }
}

#[cfg(test)]
mod tests {
    use clap::{CommandFactory, FromArgMatches};

    use super::*;
    use crate::{Action, Cli};

    fn parse(argv: &[&str], file: &str) -> (RunArgs, usize) {
        let matches = Cli::command().get_matches_from(argv);
        let cli = Cli::from_arg_matches(&matches).unwrap();
        let Action::Train {
            local_workers, run, ..
        } = cli.command
        else {
            panic!("train expected")
        };
        let (mut run, mut lw) = (run, local_workers);
        let (_, sub) = matches.subcommand().unwrap();
        toml::from_str::<ConfigFile>(file)
            .unwrap()
            .apply(sub, &mut run, &mut lw);
        (run, lw)
    }

    #[test]
    fn the_file_fills_defaults_and_flags_win() {
        let file =
            "epochs = 3\nlr = 0.1\nlocal_workers = 2\narch = \"lenet-mxnet\"\ntrain_limit = 500\n";
        let (run, lw) = parse(&["hearth-coordinator", "train", "--epochs", "7"], file);
        assert_eq!(run.epochs, 7, "the flag wins");
        assert_eq!(
            (run.lr, lw, run.arch.as_str(), run.train_limit),
            (0.1, 2, "lenet-mxnet", Some(500))
        );
        assert_eq!(run.batch, 64, "untouched defaults stay");
    }

    #[test]
    fn unknown_keys_and_wrong_types_are_errors() {
        assert!(toml::from_str::<ConfigFile>("epoch = 3").is_err());
        assert!(toml::from_str::<ConfigFile>("epochs = \"three\"").is_err());
    }

    #[test]
    fn the_example_file_parses() {
        let text = include_str!("../../hearth.example.toml");
        toml::from_str::<ConfigFile>(text).unwrap();
    }
}
