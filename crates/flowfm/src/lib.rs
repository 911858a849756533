//! flowfm: training loops, configs, checkpoints and run directories behind the `flowfm` binary.

pub mod config;
pub mod optim;
pub mod pretrain;
pub mod run;
