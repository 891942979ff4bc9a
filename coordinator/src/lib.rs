//! `hearth-coordinator`: the server of Hearth's distributed training.
//!
//! - `train`: serve on loopback, start `--local-workers` `hearth-host work`
//!   processes (4 by default), train, write the results (the one-command main job);
//! - `serve`: wait for workers from the household's devices;
//! - `bench`: aggregation time, frame codec, round overhead, bytes per epoch;
//! - `bench-browser`: the browser worker against wasmtime.
//!
//! Outputs in `--out`: `metrics.jsonl` (one line per epoch), `ledger.jsonl`
//! (which batch and which samples each worker trained on, per epoch),
//! `model.safetensors`, `summary.json`, `accuracy.png`.
//!
//! Layout: `engine/` holds every rule of the rounds with no I/O; `driver`
//! feeds it from the `session`s (one per WebSocket) and carries out what it
//! asks; `strategy/` is the federated algorithm; `observe/` and `dashboard`
//! turn its notices into files, logs, terminal output and the web page.

pub mod bench;
pub mod bench_browser;
pub mod catalog;
pub mod chaos;
pub mod cli;
pub mod components;
pub mod dashboard;
pub mod driver;
pub mod engine;
pub mod export;
pub mod figures;
pub mod household;
pub mod ledger;
pub mod listener;
pub mod observe;
pub mod options;
pub mod pairing;
pub mod run;
pub mod scorer;
pub mod server;
pub mod session;
pub mod strategy;
pub mod tls;
pub mod web;
