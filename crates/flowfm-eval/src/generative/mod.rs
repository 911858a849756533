//! Generative quality: how close generated windows are to real ones.
//!
//! - [`frechet`]: Frechet distance between Gaussian fits of two sets of feature vectors;
//! - [`mmd`]: squared maximum mean discrepancy with an RBF kernel (unbiased estimator);
//! - [`discriminative`]: held-out accuracy of a logistic regression telling real from generated;
//! - [`spectral`]: distance between mean power spectra;
//! - [`reconstruction`]: error between real windows and their reconstructions;
//! - [`gaussian`]: a Gaussian fitted to representations (full or diagonal), to draw conditions.

pub mod discriminative;
pub mod frechet;
pub mod gaussian;
pub mod mmd;
pub mod reconstruction;
pub mod spectral;
