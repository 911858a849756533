//! flowfm-data: turns raw files from wearable studies into validated, subject-labelled windows.
//!
//! Pipeline: a reader ([`readers`]) produces [`Recording`]s in g with per-sample labels; the
//! preprocessing ([`resample`], [`window`]) resamples them anti-aliased to the target rate and cuts
//! windows, after [`plausible`] checked their rates and accelerations; the [`store`] writes them
//! to HDF5 (and checks them for non-finite values when read); [`split`] makes subject-disjoint
//! folds; [`augment`] and [`batch`] feed training.

pub mod augment;
pub mod batch;
pub mod error;
pub mod plausible;
pub mod prepare;
pub mod readers;
pub mod recording;
pub mod registry;
pub mod resample;
pub mod split;
pub mod store;
pub mod stream;
pub mod synthetic;
mod taps;
pub mod window;

pub use augment::{Augmentation, Compose};
pub use batch::{Batch, BatchConfig, Batcher, WindowSource};
pub use error::DataError;
pub use plausible::{AccelLimit, OverRange};
pub use prepare::{
    prepare, prepare_or_reuse, prepare_store, PrepareConfig, PrepareSummary, Prepared, Reuse,
};
pub use recording::{RawDataset, Recording, SkipReport};
pub use resample::ResampleConfig;
pub use split::{Fold, SubjectSet};
pub use store::{write_store, FiniteCheck, NonFinite, WindowStore};
pub use stream::{RecordingStream, StreamConfig, StreamStats, WindowBatch};
pub use window::{ImpurePolicy, WindowConfig, WindowSet};
