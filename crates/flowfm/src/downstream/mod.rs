//! Downstream activity recognition: the validated [`DownstreamConfig`], one fold of each mode
//! (full fine-tuning, linear probe, kNN, random forest on hand-crafted features), the
//! subject-disjoint k-fold / LOSO protocol around them, and `flowfm eval` ([`eval`]).
//!
//! **Invariant:** `downstream` never names `train`, `generation` or `study`, and never sees a
//! pretraining pool: it reads labelled windows and, at most, an encoder checkpoint.
//!
//! **Invariant:** folds depend only on the labelled subjects and the seed, so every comparator
//! with the same seed is tested on the same folds.

pub mod compare;
pub mod config;
pub mod deploy;
pub mod eval;
pub mod finetune;
pub mod probe;
pub mod protocol;

pub use config::{DownstreamConfig, DownstreamError, EncoderSource, Mode, Protocol};
pub use finetune::{
    finetune_fold, finetune_fold_with_model, train_with_early_stopping, FineTunedModel,
    FoldOutcome, FoldSplit, StoppingRule, TrainOutcome, Validation, ValidationRecord,
};
pub use protocol::{
    labelled_windows, plan_folds, run_protocol, DatasetInfo, ProtocolOptions, ProtocolResult,
};
