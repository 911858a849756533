//! Generation from trained runs: sampler specifications ([`sampler`]), generators loaded from a
//! run directory ([`models`]), the `flowfm generate` job ([`job`]; unconditional-style samples
//! draw representations from flowfm-eval's `RepresentationGaussian`), and the generation study's
//! rows, metrics and speed-up ([`quality`]).
//!
//! **Invariant:** `generation` reads checkpoints and never writes one; it never names `train`'s
//! loops, `downstream` or `study`.

pub mod job;
pub mod models;
pub mod quality;
pub mod sampler;

/// The representation Gaussian lives in flowfm-eval, next to the Frechet statistics.
pub use flowfm_eval::generative::gaussian::{
    CovarianceFactor, CovarianceKind, RepresentationGaussian,
};
pub use job::{encode_window_set, run_generation, GenerateJob, GenerateMode, GenerateSummary};
pub use models::{Generation, GeneratorNet, TrainedModels};
pub use quality::{
    generation_study, matched_speedup, ExampleWindow, GenerationStudy, ReferenceEncoder, Speedup,
    StudyConditioning, StudyConfig, StudyRow,
};
pub use sampler::{GeneratorKind, SamplerSpec};
