//! Generation from trained runs: sampler specifications ([`sampler`]), generators loaded from a
//! run directory ([`models`]), the `flowfm generate` job ([`job`]; unconditional-style samples
//! draw representations from flowfm-eval's `RepresentationGaussian`), and the generation study:
//! its settings and results ([`quality`]), measurements ([`measure`]) and matched quality with
//! the speed-up ([`matched`]).
//!
//! **Invariant:** `generation` reads checkpoints and never writes one; it never names `train`'s
//! loops, `downstream` or `study`.

pub mod job;
pub mod matched;
pub mod measure;
pub mod models;
pub mod quality;
pub mod sampler;

/// The representation Gaussian lives in flowfm-eval, next to the Frechet statistics.
pub use flowfm_eval::generative::gaussian::{
    CovarianceFactor, CovarianceKind, RepresentationGaussian,
};
pub use job::{encode_window_set, run_generation, GenerateJob, GenerateMode, GenerateSummary};
pub use matched::{matched_speedup, unmatched_metrics};
pub use measure::generation_study;
pub use models::{Generation, GeneratorNet, TrainedModels};
pub use quality::{
    ExampleWindow, GenerationStudy, Quality, ReferenceEncoder, Speedup, StudyConfig, StudyRow,
    StudySets,
};
pub use sampler::{GeneratorKind, SamplerSpec};
