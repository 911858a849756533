//! flowfm-eval: metrics and baselines for evaluating wearable foundation models, on plain arrays.
//!
//! - [`classification`]: [`ConfusionMatrix`] and every metric derived from it (macro F1, Cohen's
//!   kappa, accuracy, balanced accuracy, per-class precision / recall / F1);
//! - [`folds`]: mean +- sample sd over folds and [`FoldResults`] rendered as Markdown rows;
//! - [`knn`]: the kNN classifier of the kNN protocol (cosine or Euclidean);
//! - [`features`] and [`forest`]: hand-crafted window features and the random-forest comparator;
//! - [`generative`]: Frechet distance, MMD, discriminative score, spectral distance,
//!   reconstruction error;
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
mod stats;

pub use arrays::{Embeddings, Windows};
pub use classification::{AbsentClassPolicy, ClassMetrics, ClassificationReport, ConfusionMatrix};
pub use efficiency::{GenerationEfficiency, TimeToTarget, TrainingEfficiency};
pub use error::{EvalError, Result};
pub use features::{FeatureConfig, FeatureExtractor, FeatureTable};
pub use folds::{mean_sd, FoldMetrics, FoldResults, FoldSummary, MeanSd};
pub use forest::{ForestConfig, RandomForest};
pub use generative::discriminative::{
    discriminative_score, DiscriminativeConfig, DiscriminativeScore,
};
pub use generative::frechet::{frechet_distance, frechet_distance_from_stats, GaussianStats};
pub use generative::mmd::{mmd2_rbf, Bandwidth, MmdConfig, MmdResult};
pub use generative::reconstruction::{reconstruction_error, ReconstructionError};
pub use generative::spectral::{spectral_distance, SpectralDistance};
pub use knn::{Distance, KnnClassifier, KnnConfig};
pub use rankme::{rankme, rankme_tensor, RANKME_EPS};
