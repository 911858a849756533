//! flowfm-data: turns raw files from wearable studies into validated, subject-labelled windows.
//!
//! Pipeline: a reader ([`readers`]) produces [`Recording`]s in g with per-sample labels; the
//! preprocessing ([`resample`], [`window`]) resamples them anti-aliased to the target rate and cuts
//! windows; the [`store`] writes them to HDF5; [`split`] makes subject-disjoint folds; [`augment`]
//! and [`batch`] feed training.

pub mod error;
pub mod recording;

pub use error::DataError;
pub use recording::{RawDataset, Recording, SkipReport};
