//! Pretraining: experiment configs validated into [`config::Experiment`], run directories with
//! atomic checkpoints and `metrics.jsonl` ([`run`]), the three pretraining loops with the
//! validation probe ([`pretrain`]), a run's history read back ([`history`]) and
//! training time to fixed validation targets over seeds ([`target`]).
//!
//! **Invariant:** `train` never names `downstream`, `generation` or `study`: it trains encoders
//! and generators and records what happened, nothing else.
//!
//! **Invariant:** step `s` draws all its randomness from `derive_indexed("step", s)` of the run
//! seed and reads batch `s % n` of epoch `s / n`, so a resumed run is bit-identical to an
//! uninterrupted one.

pub mod config;
pub mod history;
pub mod pretrain;
pub mod resources;
pub mod run;
pub mod target;
pub mod validate;

pub use config::{Experiment, ExperimentFile, Method};
pub use pretrain::{pretrain, PretrainOptions, PretrainOutcome, ValidationProbe};
