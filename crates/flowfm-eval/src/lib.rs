//! flowfm-eval: metrics and baselines for evaluating wearable foundation models, on plain arrays.
//!
//! - [`classification`]: [`ConfusionMatrix`] and every metric derived from it (macro F1, Cohen's
//!   kappa, accuracy, balanced accuracy, per-class precision / recall / F1);
//! - [`folds`]: [`FoldResults`] summarised over folds and rendered as Markdown rows;
//! - [`stats`]: mean +- sample sd ([`MeanSd`]), percentile bootstrap intervals, the Wilcoxon
//!   signed-rank test and the better / worse / no-difference [`Verdict`] of paired results;
//! - [`curves`]: validation curves: normalised area, threshold sweep, summaries across seeds and
//!   the ratio of two methods' times;
//! - [`knn`]: the kNN classifier of the kNN protocol (cosine or Euclidean);
//! - [`features`] and [`forest`]: hand-crafted window features and the random-forest comparator;
//! - [`generative`]: Frechet distance, MMD, discriminative score, spectral distance,
//!   reconstruction error, and the Gaussian fitted to representations to draw conditions;
//! - [`rankme`]: effective rank of an embedding matrix;
//! - [`efficiency`]: training and generation cost records.
//!
//! Inputs are [`Windows`] `(N, C, L)` and [`Embeddings`] `(N, d)`, borrowed from slices or copied
//! out of candle tensors; labels are class indices (`usize`). **Architecture invariant:** this
//! crate depends on flowfm-core, candle and math crates only, never on flowfm-data or
//! flowfm-models (protocols that train models live in the `flowfm` crate). All randomness comes
//! from a caller's [`flowfm_core::SeededRng`]; every result type is serde-serialisable.

pub mod arrays;
pub mod classification;
pub mod curves;
pub mod efficiency;
pub mod error;
pub mod features;
pub mod folds;
pub mod forest;
pub mod generative;
pub mod knn;
pub(crate) mod linalg;
pub mod markdown;
pub mod rankme;
mod spectrum;
pub mod stats;

pub use arrays::{Embeddings, Windows};
pub use classification::{AbsentClassPolicy, ClassMetrics, ClassificationReport, ConfusionMatrix};
pub use curves::{
    summarise_seeds, time_ratio, AcrossSeeds, Crossing, CurveAxis, CurvePoint, CurveSummary,
    ThresholdCrossing, ThresholdRatio, ThresholdSummary, ValidationCurve,
};
pub use efficiency::{GenerationEfficiency, TimeToTarget, TrainingEfficiency};
pub use error::{EvalError, Result};
pub use features::{FeatureConfig, FeatureExtractor, FeatureTable};
pub use folds::{FoldMetrics, FoldResults, FoldSummary};
pub use forest::{ForestConfig, RandomForest};
pub use generative::discriminative::{
    discriminative_score, DiscriminativeConfig, DiscriminativeScore,
};
pub use generative::frechet::{frechet_distance, frechet_distance_from_stats, GaussianStats};
pub use generative::gaussian::{CovarianceFactor, CovarianceKind, RepresentationGaussian};
pub use generative::mmd::{mmd2_rbf, Bandwidth, MmdConfig, MmdResult};
pub use generative::reconstruction::{reconstruction_error, ReconstructionError};
pub use generative::spectral::{spectral_distance, SpectralDistance};
pub use knn::{Distance, KnnClassifier, KnnConfig};
pub use rankme::{rankme, rankme_tensor, RANKME_EPS};
pub use stats::{
    bootstrap_mean, bootstrap_paired_difference, bootstrap_ratio_of_means, compare_paired, mean_sd,
    wilcoxon_signed_rank, BootstrapConfig, Direction, Interval, MeanSd, PairedComparison, Verdict,
    WilcoxonMethod, WilcoxonResult,
};
