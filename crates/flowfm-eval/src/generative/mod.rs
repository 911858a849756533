//! Generative quality: how close generated windows are to real ones.
//!
//! - [`frechet`]: Frechet distance between Gaussian fits of two sets of feature vectors;
//! - [`mmd`]: squared maximum mean discrepancy with an RBF kernel (unbiased estimator);
//! - [`discriminative`]: held-out accuracy of a logistic regression telling real from generated;
//! - [`spectral`]: distance between mean power spectra;
//! - [`reconstruction`]: error between real windows and their reconstructions;
//! - [`gaussian`]: a Gaussian fitted to representations (full or diagonal), to draw conditions;
//! - [`resample`]: window-resampling bootstrap draws and percentile intervals;
//! - [`set_intervals`]: Frechet distance, MMD² and spectral distance with those intervals;
//! - [`fidelity`]: phase-free conditional fidelity (representation consistency, label agreement);
//! - [`matched`]: whether a candidate's intervals overlap or beat a baseline's.

pub mod discriminative;
pub mod fidelity;
pub mod frechet;
pub mod gaussian;
pub mod matched;
pub mod mmd;
pub mod reconstruction;
pub mod resample;
pub mod set_intervals;
pub mod spectral;
