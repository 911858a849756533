//! flowfm: the jobs behind the `flowfm` binary, in four layers that only call downwards:
//!
//! - [`datasets`], [`encode`], [`lock`], [`output`]: obtaining and preparing datasets; encoding
//!   windows with a trained encoder; advisory locks on run directories and stores; atomic output
//!   files (shared by every job); [`recording`]: long recordings through a model in bounded
//!   memory;
//! - [`train`]: experiment configs, run directories, the three pretraining loops, run histories;
//! - [`downstream`]: downstream protocols (fine-tune, linear probe, kNN, random forest) on
//!   subject-disjoint folds, and `flowfm eval`;
//! - [`generation`]: loading trained generators, sampling, the `flowfm generate` job and the
//!   generation study's measurements;
//! - [`study`]: `cargo xtask reproduce`: stages, cache and report.
//!
//! `xtask/tests/tidy.rs` checks that `train`, `downstream` and `generation` never name each other
//! or `study`, and that nothing below `study` names it.

pub mod datasets;
pub mod downstream;
pub mod encode;
pub mod generation;
pub mod lock;
pub mod output;
pub mod recording;
pub mod study;
pub mod train;
