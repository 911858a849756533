//! Statistics of results: mean +- sd ([`MeanSd`]), percentile bootstrap intervals, the Wilcoxon
//! signed-rank test and the better / worse / no-difference [`Verdict`] of a paired comparison.
//!
//! - [`bootstrap`]: percentile bootstrap 95 % intervals of a mean, of a mean paired difference and
//!   of a ratio of two independent samples' means ([`Interval`]);
//! - [`wilcoxon`]: two-sided Wilcoxon signed-rank test of paired values, matching
//!   `scipy.stats.wilcoxon`'s defaults ([`WilcoxonResult`]);
//! - [`welch`]: Welch's two-sided t-test of two independent samples, matching
//!   `scipy.stats.ttest_ind(equal_var=False)`, and the same test on logarithms as a ratio of
//!   geometric means ([`LogRatioTest`]), for times over few seeds;
//! - [`verdict`]: [`Verdict`] from a p-value and the sign of the paired mean difference, and
//!   [`compare_paired`], which runs both of the above on one pair of result vectors.
//!
//! Every function takes plain `f64` slices and rejects empty, non-finite or mismatched input with
//! an [`crate::EvalError`]; all resampling draws from a caller's [`flowfm_core::SeededRng`].

pub mod bootstrap;
mod descriptive;
mod normal;
pub mod verdict;
pub mod welch;
pub mod wilcoxon;

pub use bootstrap::{
    bootstrap_mean, bootstrap_paired_difference, bootstrap_ratio_of_means, BootstrapConfig,
    Interval,
};
pub(crate) use descriptive::{autocorrelation, mean, pearson, percentile_sorted, pop_sd};
pub use descriptive::{mean_sd, MeanSd};
pub use verdict::{compare_paired, Direction, PairedComparison, Verdict, ALPHA};
pub use welch::{log_ratio_test, welch_t_test, LogRatioTest, WelchResult};
pub use wilcoxon::{wilcoxon_signed_rank, WilcoxonMethod, WilcoxonResult};
