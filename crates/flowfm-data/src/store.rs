//! The HDF5 window store: one file per prepared dataset, readable by h5py, written atomically.
//!
//! Layout (all datasets chunked, byte-shuffled and deflate-compressed):
//!
//! | name         | shape       | type | meaning                              |
//! |--------------|-------------|------|--------------------------------------|
//! | `x`          | `(N, C, L)` | f32  | samples (accelerometer in g)         |
//! | `y`          | `(N,)`      | i64  | class index, `-1` = unlabelled       |
//! | `subject`    | `(N,)`      | i64  | subject id                           |
//! | `start_time` | `(N,)`      | f64  | window start in seconds              |
//!
//! Text datasets (fixed-length UTF-8 strings): `channel_names` `(C,)`, `class_names` `(K,)`,
//! `source_files` and `source_sha256` (parallel, one per raw source file) and `config` `(1,)`
//! (the preprocessing configuration in readable form). Every non-empty dataset is chunked, and
//! the opener reads no other layout.
//!
//! Root attributes: `format` (`"flowfm-window-store"`), `format_version`, `dataset`,
//! `sample_rate_hz`, `window_len`, `preprocessing_version` and `fingerprint` (of the inputs and
//! the preprocessing configuration).
//!
//! Text is stored as fixed-length UTF-8 strings (NUL-padded; h5py reads them as `bytes`), of the
//! smallest width in [`STRING_WIDTHS`] that holds the longest value. Format version 1 wrote
//! variable-length strings, which live in the file's global heap: libhdf5 1.10 can spin forever
//! reading a corrupt global heap (found by the `store_open` fuzz target), so version 2 keeps
//! every string inline, and the opener checks each text item's type, shape and size from its
//! header before it reads a byte of it. The lists are datasets, not attributes, because an
//! attribute must fit in a 64 KiB object-header message (a few thousand source files would not).
//!
//! The HDF5 library is compiled into the binary from source (the `hdf5-metno` crate's `static`
//! feature: HDF5 2.2.0), not taken from the system: Debian 12's libhdf5 1.10.8 divides by zero
//! (SIGFPE) opening a dataset whose corrupt header claims a chunk dimension of 0, before any
//! check of ours can run (found by the `store_open` fuzz target; the 2.2.0 library refuses such a
//! header). New files are written in the library's default layout (HDF5 1.8 and later read it;
//! its object headers carry checksums, so a damaged header is an error rather than misread). The
//! checks above stay: they are what stands between a corrupt file and an allocation of its
//! claimed size.

use std::path::{Path, PathBuf};
use std::str::FromStr;

use hdf5::types::{FixedUnicode, FloatSize, IntSize, TypeDescriptor};

use crate::error::Result;
use crate::window::WindowSet;
use crate::DataError;

/// Value of the `format` attribute.
pub const STORE_FORMAT: &str = "flowfm-window-store";
/// Version of the file layout (bumped when datasets or attributes change meaning).
pub const STORE_FORMAT_VERSION: i64 = 2;

/// Widths in bytes of the fixed-length string types the store writes (and the only ones it
/// reads): each text attribute takes the smallest that holds its longest value.
pub const STRING_WIDTHS: [usize; 6] = [16, 64, 256, 1024, 4096, 65536];

/// Largest text item the opener reads (width times elements), so that a corrupt dataspace
/// cannot ask for an unbounded allocation.
const MAX_TEXT_BYTES: usize = 16 << 20;

/// Most strings in one text item (a store's class, channel and source-file lists are far
/// shorter); each becomes an allocation, so a corrupt count is refused before reading.
const MAX_TEXT_STRINGS: usize = 1 << 18;

/// Windows per chunk of `x` aim at about this many bytes.
const CHUNK_BYTES: usize = 1 << 20;
/// Elements per chunk of the 1-D datasets.
const CHUNK_1D: usize = 1 << 16;
/// Deflate level (1..9). After byte shuffling, level 1 wrote synthetic 3 x 300 windows about 30 %
/// faster than level 4 for a file only about 4 % larger, and writing dominates `prepare` time.
const DEFLATE_LEVEL: u8 = 1;

/// The attributes of a store.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreMeta {
    /// Dataset name.
    pub dataset: String,
    /// Sample rate of the windows in Hz.
    pub sample_rate_hz: f64,
    /// Samples per window (`L`).
    pub window_len: usize,
    /// Channels per window (`C`).
    pub channels: usize,
    /// Channel names.
    pub channel_names: Vec<String>,
    /// Class names; `y` indexes into them.
    pub class_names: Vec<String>,
    /// `(file name, sha256 hex)` of the raw sources.
    pub source_checksums: Vec<(String, String)>,
    /// Version of the preprocessing code that wrote the file.
    pub preprocessing_version: i64,
    /// Fingerprint of the inputs and configuration.
    pub fingerprint: String,
    /// The preprocessing configuration in readable form.
    pub config: String,
}

fn h5err(path: &Path) -> impl Fn(hdf5::Error) -> DataError + '_ {
    move |e| DataError::Hdf5 {
        path: path.to_path_buf(),
        msg: e.to_string(),
    }
}

fn fmt_err(path: &Path, msg: impl Into<String>) -> DataError {
    DataError::format(path, msg)
}

/// Calls `$f::<W>(args)` for the width `W` of [`STRING_WIDTHS`] equal to `$w`.
macro_rules! with_width {
    ($w:expr, $f:ident ( $($arg:expr),* )) => {
        match $w {
            16 => $f::<16>($($arg),*),
            64 => $f::<64>($($arg),*),
            256 => $f::<256>($($arg),*),
            1024 => $f::<1024>($($arg),*),
            4096 => $f::<4096>($($arg),*),
            _ => $f::<65536>($($arg),*),
        }
    };
}

/// Where a text item lives.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Text {
    /// A scalar root attribute (short values: at most [`MAX_ATTR_WIDTH`] bytes).
    Attr,
    /// A 1-D dataset (chunked when not empty).
    List,
}

impl Text {
    fn noun(self) -> &'static str {
        match self {
            Text::Attr => "attribute",
            Text::List => "dataset",
        }
    }
}

/// Widest fixed-length string written as an attribute (an attribute must fit in one 64 KiB
/// object-header message).
const MAX_ATTR_WIDTH: usize = 4096;

/// Writes `values` as fixed-length strings of width `W`.
fn write_text<const W: usize>(
    file: &hdf5::File,
    path: &Path,
    name: &str,
    values: &[String],
    kind: Text,
) -> Result<()> {
    let fixed = values
        .iter()
        .map(|v| {
            FixedUnicode::<W>::from_str(v)
                .map_err(|e| fmt_err(path, format!("{} `{name}`: {v:?}: {e}", kind.noun())))
        })
        .collect::<Result<Vec<_>>>()?;
    let e = h5err(path);
    match kind {
        Text::Attr => file
            .new_attr::<FixedUnicode<W>>()
            .shape(())
            .create(name)
            .and_then(|a| a.write_raw(&fixed[..]))
            .map_err(e),
        Text::List => {
            let mut b = file.new_dataset::<FixedUnicode<W>>();
            if !fixed.is_empty() {
                b = b.chunk(fixed.len().min(CHUNK_1D));
            }
            b.shape(fixed.len())
                .create(name)
                .and_then(|d| d.write_raw(&fixed[..]))
                .map_err(e)
        }
    }
}

/// Writes text item `name` at the smallest width of [`STRING_WIDTHS`] that holds every value.
/// NUL bytes are refused (fixed-length strings are NUL-padded, so they would not read back), as
/// are values longer than the widest width (or than [`MAX_ATTR_WIDTH`] for an attribute).
fn write_text_item(
    file: &hdf5::File,
    path: &Path,
    name: &str,
    values: &[String],
    kind: Text,
) -> Result<()> {
    let widest = if kind == Text::Attr {
        MAX_ATTR_WIDTH
    } else {
        STRING_WIDTHS[STRING_WIDTHS.len() - 1]
    };
    let what = kind.noun();
    if values.len() > MAX_TEXT_STRINGS {
        return Err(fmt_err(
            path,
            format!(
                "{what} `{name}`: {} strings, more than the {MAX_TEXT_STRINGS} a store holds",
                values.len()
            ),
        ));
    }
    if let Some(v) = values.iter().find(|v| v.contains('\0')) {
        return Err(fmt_err(
            path,
            format!("{what} `{name}`: {v:?} holds a NUL byte"),
        ));
    }
    let longest = values.iter().map(String::len).max().unwrap_or(0);
    let Some(&width) = STRING_WIDTHS.iter().find(|&&w| w >= longest && w <= widest) else {
        return Err(fmt_err(
            path,
            format!("{what} `{name}`: a value of {longest} bytes is longer than the {widest} a store holds there"),
        ));
    };
    with_width!(width, write_text(file, path, name, values, kind))
}

/// Writes `windows` to `path` atomically (`flowfm_core::fs::write_atomic_with`): everything goes
/// to a temporary file in the same directory, which is synced and then renamed over `path`. An
/// interrupted or failed write never leaves a partial file at `path`, and an existing file there
/// is replaced only once the new one is complete.
pub fn write_store(
    path: &Path,
    windows: &WindowSet,
    preprocessing_version: i64,
    fingerprint: &str,
    config: &str,
) -> Result<()> {
    windows.validate()?;
    flowfm_core::fs::write_atomic_with(path, |tmp| {
        let file = hdf5::File::create(tmp).map_err(h5err(path))?;
        write_contents(
            &file,
            path,
            windows,
            preprocessing_version,
            fingerprint,
            config,
        )?;
        file.close().map_err(h5err(path))
    })
}

fn write_contents(
    file: &hdf5::File,
    path: &Path,
    w: &WindowSet,
    preprocessing_version: i64,
    fingerprint: &str,
    config: &str,
) -> Result<()> {
    let e = h5err(path);
    let n = w.num_windows();
    let (c, l) = (w.channels, w.window_len);

    let per_window = (c * l * 4).max(1);
    let chunk_n = (CHUNK_BYTES / per_window).clamp(1, n.max(1));
    let mut b = file.new_dataset::<f32>();
    if n > 0 && c > 0 && l > 0 {
        b = b.chunk((chunk_n, c, l)).shuffle().deflate(DEFLATE_LEVEL);
    }
    let x = b.shape((n, c, l)).create("x").map_err(&e)?;
    x.write_raw(&w.x[..]).map_err(&e)?;

    fn one_d<T: hdf5::H5Type>(
        file: &hdf5::File,
        name: &str,
        data: &[T],
        e: &impl Fn(hdf5::Error) -> DataError,
    ) -> Result<()> {
        let n = data.len();
        let mut b = file.new_dataset::<T>();
        if n > 0 {
            b = b.chunk(n.min(CHUNK_1D)).shuffle().deflate(DEFLATE_LEVEL);
        }
        let ds = b.shape(n).create(name).map_err(e)?;
        ds.write_raw(data).map_err(e)?;
        Ok(())
    }
    one_d(file, "y", &w.y, &e)?;
    one_d(file, "subject", &w.subject, &e)?;
    one_d(file, "start_time", &w.start_time_s, &e)?;

    let str_attr =
        |name: &str, v: &str| write_text_item(file, path, name, &[v.to_string()], Text::Attr);
    let strs_attr = |name: &str, v: &[String]| write_text_item(file, path, name, v, Text::List);
    let f64_attr = |name: &str, v: f64| -> Result<()> {
        file.new_attr::<f64>()
            .shape(())
            .create(name)
            .and_then(|a| a.write_scalar(&v))
            .map_err(&e)
    };
    let i64_attr = |name: &str, v: i64| -> Result<()> {
        file.new_attr::<i64>()
            .shape(())
            .create(name)
            .and_then(|a| a.write_scalar(&v))
            .map_err(&e)
    };
    str_attr("format", STORE_FORMAT)?;
    i64_attr("format_version", STORE_FORMAT_VERSION)?;
    str_attr("dataset", &w.dataset)?;
    f64_attr("sample_rate_hz", w.sample_rate_hz)?;
    i64_attr("window_len", l as i64)?;
    strs_attr("channel_names", &w.channel_names)?;
    strs_attr("class_names", &w.class_names)?;
    let files: Vec<String> = w.source_checksums.iter().map(|(f, _)| f.clone()).collect();
    let shas: Vec<String> = w.source_checksums.iter().map(|(_, s)| s.clone()).collect();
    strs_attr("source_files", &files)?;
    strs_attr("source_sha256", &shas)?;
    i64_attr("preprocessing_version", preprocessing_version)?;
    str_attr("fingerprint", fingerprint)?;
    write_text_item(file, path, "config", &[config.to_string()], Text::List)?;
    Ok(())
}

/// What a command that reads windows does with windows holding NaN or infinity in `x`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum NonFinite {
    /// An error naming the store and the first bad window (the default).
    #[default]
    Error,
    /// Leave them out and count them (the CLI's `--skip-nonfinite`).
    Skip,
}

/// The result of [`WindowStore::check_finite`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FiniteCheck {
    /// Indices of the windows holding NaN or infinity, ascending (empty with
    /// [`NonFinite::Error`], which fails instead).
    pub skipped: Vec<usize>,
    /// Indices of the windows to use, ascending: every window but the skipped ones (pass them to
    /// [`WindowStore::load_subset`] or [`WindowStore::read_x_subset`]).
    pub kept: Vec<usize>,
}

/// Windows scanned per read in [`WindowStore::non_finite_windows`] aim at about this many bytes.
const SCAN_BYTES: usize = 16 << 20;

/// An opened window store: attributes and the small per-window arrays in memory, `x` read on
/// demand.
#[derive(Debug)]
pub struct WindowStore {
    path: PathBuf,
    file: hdf5::File,
    /// The file's attributes.
    pub meta: StoreMeta,
    /// Labels, `-1` = unlabelled.
    pub y: Vec<i64>,
    /// Subject id of each window.
    pub subject: Vec<i64>,
    /// Start time of each window in seconds (zeros when the file has no `start_time`).
    pub start_time_s: Vec<f64>,
}

impl WindowStore {
    /// Opens and validates a store. Errors name the file and what is missing or inconsistent.
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref().to_path_buf();
        if !path.is_file() {
            return Err(DataError::io(
                &path,
                std::io::Error::new(std::io::ErrorKind::NotFound, "no such window store"),
            ));
        }
        let file = hdf5::File::open(&path).map_err(|e| {
            fmt_err(
                &path,
                format!("not a readable HDF5 file (truncated or corrupt?): {e}"),
            )
        })?;
        let p = path.as_path();
        // The version first (an integer): a version-1 store holds variable-length strings, which
        // are not read at all (see the module documentation).
        let format_version = read_i64_attr(&file, p, "format_version")?;
        if format_version != STORE_FORMAT_VERSION {
            let hint = if format_version < STORE_FORMAT_VERSION {
                " (written by an older flowfm: run `flowfm prepare` again to rebuild it)"
            } else {
                " (written by a newer flowfm)"
            };
            return Err(fmt_err(
                p,
                format!("store format version {format_version}, this build reads {STORE_FORMAT_VERSION}{hint}"),
            ));
        }
        let format = read_str_attr(&file, p, "format")?;
        if format != STORE_FORMAT {
            return Err(fmt_err(
                p,
                format!("attribute `format` is {format:?}, expected {STORE_FORMAT:?}"),
            ));
        }
        let x = dataset(&file, p, "x", TypeDescriptor::Float(FloatSize::U4))?;
        let shape = x.shape();
        if shape.len() != 3 {
            return Err(fmt_err(
                p,
                format!("dataset `x` has shape {shape:?}, expected (N, C, L)"),
            ));
        }
        let (n, c, l) = (shape[0], shape[1], shape[2]);
        let i64d = TypeDescriptor::Integer(IntSize::U8);
        let y: Vec<i64> = read_1d(&file, p, "y", i64d.clone(), n)?;
        let subject: Vec<i64> = read_1d(&file, p, "subject", i64d, n)?;
        let start_time_s: Vec<f64> = if file.link_exists("start_time") {
            read_1d(
                &file,
                p,
                "start_time",
                TypeDescriptor::Float(FloatSize::U8),
                n,
            )?
        } else {
            vec![0.0; n]
        };
        let window_len = read_i64_attr(&file, p, "window_len")?;
        if window_len != l as i64 {
            return Err(fmt_err(
                p,
                format!("attribute `window_len` = {window_len} but `x` has L = {l}"),
            ));
        }
        let channel_names = read_strs(&file, p, "channel_names")?;
        if channel_names.len() != c {
            return Err(fmt_err(
                p,
                format!("{} channel names but `x` has C = {c}", channel_names.len()),
            ));
        }
        let class_names = read_strs(&file, p, "class_names")?;
        let k = class_names.len() as i64;
        if let Some((i, &v)) = y.iter().enumerate().find(|(_, &v)| v < -1 || v >= k) {
            return Err(fmt_err(p, format!("`y[{i}]` = {v} is outside -1..{k}")));
        }
        let files = read_strs(&file, p, "source_files")?;
        let shas = read_strs(&file, p, "source_sha256")?;
        if files.len() != shas.len() {
            return Err(fmt_err(
                p,
                format!("{} source files but {} checksums", files.len(), shas.len()),
            ));
        }
        let meta = StoreMeta {
            dataset: read_str_attr(&file, p, "dataset")?,
            sample_rate_hz: read_f64_attr(&file, p, "sample_rate_hz")?,
            window_len: l,
            channels: c,
            channel_names,
            class_names,
            source_checksums: files.into_iter().zip(shas).collect(),
            preprocessing_version: read_i64_attr(&file, p, "preprocessing_version")?,
            fingerprint: read_str_attr(&file, p, "fingerprint")?,
            config: one_string(read_strs(&file, p, "config")?, p, "config")?,
        };
        Ok(Self {
            path,
            file,
            meta,
            y,
            subject,
            start_time_s,
        })
    }

    /// Opens a store and checks `x` for non-finite values ([`WindowStore::check_finite`]): the
    /// one call for commands that read windows.
    pub fn open_checked(path: impl AsRef<Path>, policy: NonFinite) -> Result<(Self, FiniteCheck)> {
        let store = Self::open(path)?;
        let check = store.check_finite(policy)?;
        Ok((store, check))
    }

    /// The indices of windows holding NaN or infinity anywhere in `x`, ascending. Reads `x` in
    /// blocks of about 16 MiB, so memory stays bounded whatever the store's size.
    pub fn non_finite_windows(&self) -> Result<Vec<usize>> {
        let n = self.num_windows();
        let size = self.meta.channels * self.meta.window_len;
        let per_block = (SCAN_BYTES / (4 * size).max(1)).max(1);
        let mut bad = Vec::new();
        let mut start = 0;
        while start < n {
            let end = (start + per_block).min(n);
            let idx: Vec<usize> = (start..end).collect();
            let x = self.read_x_subset(&idx)?;
            for (k, w) in x.chunks_exact(size.max(1)).enumerate() {
                if size > 0 && !w.iter().all(|v| v.is_finite()) {
                    bad.push(start + k);
                }
            }
            start = end;
        }
        Ok(bad)
    }

    /// Checks every window of `x` for NaN and infinity. With [`NonFinite::Error`] a bad window is
    /// an error naming the store, the first bad window (index, subject, start time, channel and
    /// sample, value) and how many there are; with [`NonFinite::Skip`] they are listed in
    /// [`FiniteCheck::skipped`] and left out of [`FiniteCheck::kept`].
    pub fn check_finite(&self, policy: NonFinite) -> Result<FiniteCheck> {
        let bad = self.non_finite_windows()?;
        if let (Some(&first), NonFinite::Error) = (bad.first(), policy) {
            let x = self.read_x_subset(&[first])?;
            let (at, v) = x
                .iter()
                .enumerate()
                .find(|(_, v)| !v.is_finite())
                .map(|(k, v)| (k, *v))
                .unwrap_or((0, f32::NAN));
            let l = self.meta.window_len.max(1);
            let channel = self
                .meta
                .channel_names
                .get(at / l)
                .cloned()
                .unwrap_or_default();
            return Err(fmt_err(
                &self.path,
                format!(
                    "window {first} (subject {}, start {} s) holds {v} at channel {channel} \
                     sample {}; {} of {} windows hold NaN or infinity (skip and count them \
                     with --skip-nonfinite)",
                    self.subject[first],
                    self.start_time_s[first],
                    at % l,
                    bad.len(),
                    self.num_windows()
                ),
            ));
        }
        let mut is_bad = vec![false; self.num_windows()];
        bad.iter().for_each(|&i| is_bad[i] = true);
        Ok(FiniteCheck {
            kept: (0..self.num_windows()).filter(|&i| !is_bad[i]).collect(),
            skipped: bad,
        })
    }

    /// The file this store was opened from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Number of windows `N`.
    pub fn num_windows(&self) -> usize {
        self.y.len()
    }

    /// Whether the store holds no windows.
    pub fn is_empty(&self) -> bool {
        self.y.is_empty()
    }

    /// All of `x`, `(N, C, L)` row-major.
    pub fn read_x(&self) -> Result<Vec<f32>> {
        let x = self.file.dataset("x").map_err(h5err(&self.path))?;
        let v: Vec<f32> = x.read_raw().map_err(h5err(&self.path))?;
        let want = self.num_windows() * self.meta.channels * self.meta.window_len;
        if v.len() != want {
            return Err(fmt_err(
                &self.path,
                format!("`x` has {} values, expected {want}", v.len()),
            ));
        }
        Ok(v)
    }

    /// The windows at `indices` (any order, repeats allowed), `(len, C, L)` row-major in the
    /// order given. Contiguous runs of sorted indices are read with one hyperslab each.
    pub fn read_x_subset(&self, indices: &[usize]) -> Result<Vec<f32>> {
        let n = self.num_windows();
        if let Some(&i) = indices.iter().find(|&&i| i >= n) {
            return Err(fmt_err(
                &self.path,
                format!("window index {i} out of range (N = {n})"),
            ));
        }
        let size = self.meta.channels * self.meta.window_len;
        let mut order: Vec<usize> = (0..indices.len()).collect();
        order.sort_by_key(|&k| indices[k]);
        let x = self.file.dataset("x").map_err(h5err(&self.path))?;
        let mut out = vec![0f32; indices.len() * size];
        let mut r = 0;
        while r < order.len() {
            let first = indices[order[r]];
            let mut s = r + 1;
            while s < order.len() && indices[order[s]] <= indices[order[s - 1]] + 1 {
                s += 1;
            }
            let last = indices[order[s - 1]];
            let sel = hdf5::Hyperslab::from(vec![
                hdf5::SliceOrIndex::from(first..last + 1),
                hdf5::SliceOrIndex::from(..),
                hdf5::SliceOrIndex::from(..),
            ]);
            let block: ndarray::Array3<f32> = x.read_slice(sel).map_err(h5err(&self.path))?;
            let block = block
                .as_slice()
                .ok_or_else(|| fmt_err(&self.path, "HDF5 returned a non-contiguous block"))?;
            for &k in &order[r..s] {
                let off = (indices[k] - first) * size;
                out[k * size..(k + 1) * size].copy_from_slice(&block[off..off + size]);
            }
            r = s;
        }
        Ok(out)
    }

    /// Loads everything into a [`WindowSet`].
    pub fn load(&self) -> Result<WindowSet> {
        self.to_set(self.read_x()?, (0..self.num_windows()).collect())
    }

    /// Loads the windows at `indices` into a [`WindowSet`].
    pub fn load_subset(&self, indices: &[usize]) -> Result<WindowSet> {
        self.to_set(self.read_x_subset(indices)?, indices.to_vec())
    }

    fn to_set(&self, x: Vec<f32>, idx: Vec<usize>) -> Result<WindowSet> {
        let m = &self.meta;
        let mut w = WindowSet::empty(
            m.dataset.clone(),
            m.sample_rate_hz,
            m.channel_names.clone(),
            m.window_len,
            m.class_names.clone(),
        );
        w.source_checksums = m.source_checksums.clone();
        w.x = x;
        w.y = idx.iter().map(|&i| self.y[i]).collect();
        w.subject = idx.iter().map(|&i| self.subject[i]).collect();
        w.start_time_s = idx.iter().map(|&i| self.start_time_s[i]).collect();
        Ok(w)
    }
}

/// Reads only the `fingerprint` attribute (cheap check whether a prepared file is current).
pub fn read_fingerprint(path: &Path) -> Result<String> {
    let file = hdf5::File::open(path)
        .map_err(|e| fmt_err(path, format!("not a readable HDF5 file: {e}")))?;
    read_str_attr(&file, path, "fingerprint")
}

/// Deflate packs at most about 1032 bytes into one, so a store cannot honestly hold more than
/// this many times its file size (plus a little for the smallest files).
const MAX_EXPANSION: u64 = 1100;

/// Elements of a dataset's or attribute's `shape` (`elem_bytes` each), checked before anything
/// is allocated: the product must not overflow, and the data must fit what the file could hold
/// compressed ([`MAX_EXPANSION`] times its size). A corrupt header claiming more is an error.
fn checked_elements(p: &Path, what: &str, shape: &[usize], elem_bytes: usize) -> Result<usize> {
    let too_big = |claim: String| {
        fmt_err(
            p,
            format!("{what} claims shape {shape:?} ({claim}), more than the file could hold"),
        )
    };
    let elements = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or_else(|| too_big("an overflowing number of values".into()))?;
    let file_len = std::fs::metadata(p).map(|m| m.len()).unwrap_or(0);
    let bytes = (elements as u64).saturating_mul(elem_bytes as u64);
    if bytes
        > file_len
            .saturating_mul(MAX_EXPANSION)
            .saturating_add(1 << 20)
    {
        return Err(too_big(format!("{bytes} bytes in a file of {file_len}")));
    }
    Ok(elements)
}

/// The error for an item that could not be opened: "missing" only when the file's own list of
/// names says it is absent; otherwise the file is damaged, and HDF5's reason is kept.
fn open_failed(
    p: &Path,
    what: &str,
    name: &str,
    names: hdf5::Result<Vec<String>>,
    e: hdf5::Error,
) -> DataError {
    match names {
        Ok(names) if !names.iter().any(|n| n == name) => {
            fmt_err(p, format!("missing {what} `{name}`"))
        }
        _ => fmt_err(
            p,
            format!("cannot open {what} `{name}` (the file is damaged): {e}"),
        ),
    }
}

fn open_dataset(file: &hdf5::File, p: &Path, name: &str) -> Result<hdf5::Dataset> {
    file.dataset(name)
        .map_err(|e| open_failed(p, "dataset", name, file.member_names(), e))
}

fn dataset(file: &hdf5::File, p: &Path, name: &str, want: TypeDescriptor) -> Result<hdf5::Dataset> {
    let ds = open_dataset(file, p, name)?;
    let elem_bytes = want.size();
    if checked_elements(p, &format!("dataset `{name}`"), &ds.shape(), elem_bytes)? > 0 {
        require_chunked(&ds, p, name)?;
    }
    let got = ds
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(h5err(p))?;
    if got != want {
        return Err(fmt_err(
            p,
            format!("dataset `{name}` has type {got}, expected {want}"),
        ));
    }
    Ok(ds)
}

fn read_1d<T: hdf5::H5Type>(
    file: &hdf5::File,
    p: &Path,
    name: &str,
    want: TypeDescriptor,
    n: usize,
) -> Result<Vec<T>> {
    let ds = dataset(file, p, name, want)?;
    if ds.shape() != [n] {
        return Err(fmt_err(
            p,
            format!(
                "dataset `{name}` has shape {:?}, expected ({n},) like `x`",
                ds.shape()
            ),
        ));
    }
    ds.read_raw()
        .map_err(|e| fmt_err(p, format!("reading `{name}`: {e}")))
}

fn attr(file: &hdf5::File, p: &Path, name: &str) -> Result<hdf5::Attribute> {
    file.attr(name)
        .map_err(|e| open_failed(p, "attribute", name, file.attr_names(), e))
}

fn read_text<const W: usize>(
    a: &hdf5::Container,
    p: &Path,
    name: &str,
    what: &str,
) -> Result<Vec<String>> {
    let raw: Vec<FixedUnicode<W>> = a
        .read_raw()
        .map_err(|e| fmt_err(p, format!("reading {what} `{name}`: {e}")))?;
    raw.iter()
        .enumerate()
        .map(|(i, v)| {
            // The bytes come from the file: checked, never taken as UTF-8 on trust.
            String::from_utf8(v.as_bytes().to_vec())
                .map_err(|_| fmt_err(p, format!("{what} `{name}`[{i}] is not valid UTF-8")))
        })
        .collect()
}

/// Reads text item `name` after checking, from its header alone, that it is a fixed-length
/// string of one of [`STRING_WIDTHS`], of the expected rank (scalar or 1-D), at most
/// [`MAX_TEXT_BYTES`] in all and, for a non-empty list, chunked. The shape is multiplied out
/// once, with the width, so a corrupt one is refused before anything is read.
fn read_text_item(file: &hdf5::File, p: &Path, name: &str, kind: Text) -> Result<Vec<String>> {
    let what = kind.noun();
    let (a, list): (hdf5::Container, Option<hdf5::Dataset>) = match kind {
        Text::Attr => ((*attr(file, p, name)?).clone(), None),
        Text::List => {
            let ds = open_dataset(file, p, name)?;
            ((*ds).clone(), Some(ds))
        }
    };
    let scalar = list.is_none();
    let kind = if scalar { "a string" } else { "a string array" };
    let desc = a
        .dtype()
        .and_then(|t| t.to_descriptor())
        .map_err(|e| fmt_err(p, format!("{what} `{name}` has an unreadable type: {e}")))?;
    let width = match desc {
        TypeDescriptor::FixedUnicode(w) if STRING_WIDTHS.contains(&w) => w,
        other => {
            return Err(fmt_err(
                p,
                format!(
                    "{what} `{name}` has type {other}, expected {kind} of fixed width {STRING_WIDTHS:?}"
                ),
            ))
        }
    };
    let shape = a.shape();
    if (scalar && !shape.is_empty()) || (!scalar && shape.len() != 1) {
        return Err(fmt_err(
            p,
            format!("{what} `{name}` has shape {shape:?}, expected {kind}"),
        ));
    }
    let elements = checked_elements(p, &format!("{what} `{name}`"), &shape, width)?;
    if elements.saturating_mul(width) > MAX_TEXT_BYTES || elements > MAX_TEXT_STRINGS {
        return Err(fmt_err(
            p,
            format!(
                "{what} `{name}` claims {elements} strings of {width} bytes, more than the {MAX_TEXT_STRINGS} strings or {MAX_TEXT_BYTES} bytes a store holds"
            ),
        ));
    }
    if let Some(ds) = &list {
        if elements == 0 {
            return Ok(Vec::new());
        }
        require_chunked(ds, p, name)?;
    }
    with_width!(width, read_text(&a, p, name, what))
}

fn read_str_attr(file: &hdf5::File, p: &Path, name: &str) -> Result<String> {
    let mut v = read_text_item(file, p, name, Text::Attr)?;
    v.pop()
        .ok_or_else(|| fmt_err(p, format!("attribute `{name}` holds no string")))
}

fn read_strs(file: &hdf5::File, p: &Path, name: &str) -> Result<Vec<String>> {
    read_text_item(file, p, name, Text::List)
}

/// The one string of a one-element text list.
fn one_string(mut v: Vec<String>, p: &Path, name: &str) -> Result<String> {
    match (v.pop(), v.is_empty()) {
        (Some(s), true) => Ok(s),
        _ => Err(fmt_err(
            p,
            format!("dataset `{name}` should hold exactly one string"),
        )),
    }
}

/// Every non-empty dataset flowfm writes is chunked. A contiguous or compact layout is refused
/// before any read: libhdf5 1.10.8 copies out of bounds (a segmentation fault, found by the
/// `store_open` fuzz target) when a corrupt contiguous layout disagrees with the dataspace.
fn require_chunked(ds: &hdf5::Dataset, p: &Path, name: &str) -> Result<()> {
    if ds.is_chunked() {
        Ok(())
    } else {
        Err(fmt_err(
            p,
            format!(
                "dataset `{name}` has a {:?} layout; flowfm writes every non-empty dataset chunked and reads no other layout",
                ds.layout()
            ),
        ))
    }
}

fn read_f64_attr(file: &hdf5::File, p: &Path, name: &str) -> Result<f64> {
    attr(file, p, name)?
        .read_scalar()
        .map_err(|e| fmt_err(p, format!("attribute `{name}` is not a number: {e}")))
}

fn read_i64_attr(file: &hdf5::File, p: &Path, name: &str) -> Result<i64> {
    attr(file, p, name)?
        .read_scalar()
        .map_err(|e| fmt_err(p, format!("attribute `{name}` is not an integer: {e}")))
}
