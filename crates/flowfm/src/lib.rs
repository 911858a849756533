//! flowfm: training loops, configs, checkpoints and run directories behind the `flowfm` binary.

pub mod optim;
pub mod run;
