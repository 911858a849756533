//! flowfm: training loops, configs, checkpoints, run directories and the study pipeline behind
//! the `flowfm` binary.

pub mod cache;
pub mod config;
pub mod datasets;
pub mod embed;
pub mod evaluate;
pub mod finetune;
pub mod generate;
pub mod history;
pub mod pretrain;
pub mod protocol;
pub mod report;
pub mod reproduce;
pub mod run;
