//! Encoding windows with a trained encoder, the one place that does it: loading an encoder
//! checkpoint, batched encoding without an autograd graph over any [`WindowSource`] (stores and
//! in-memory sets) or a tensor, and writing `(N, d)` embeddings with labels and subjects to HDF5.
//!
//! **Invariant:** encoding is in evaluation mode and detached; it never changes the encoder.
//! Every caller (downstream probes, the pretraining validation probe, generation, `flowfm embed`)
//! encodes through [`encode_windows`] or [`encode_tensor`].

use anyhow::{bail, ensure, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_data::batch::WindowSource;
use flowfm_data::store::WindowStore;
use flowfm_data::window::WindowSet;
use flowfm_models::checkpoint::{load_checkpoint_checked, read_checkpoint_metadata};
use flowfm_models::{EncoderConfig, HarNet};
use std::path::Path;

/// Loads an encoder checkpoint (config from its metadata) onto `device`.
pub fn load_encoder(path: &Path, device: &Device) -> Result<HarNet> {
    let meta = read_checkpoint_metadata(path)
        .with_context(|| format!("reading encoder checkpoint {}", path.display()))?;
    let cfg: EncoderConfig = meta
        .config()
        .with_context(|| format!("{}: encoder config", path.display()))?;
    let vm = VarMap::new();
    // The seeded builder only creates the variables; the checkpoint overwrites every value.
    let encoder = HarNet::new(cfg.clone(), seeded_var_builder(&vm, 0, DType::F32, device))?;
    load_checkpoint_checked(&vm, &cfg, path)
        .with_context(|| format!("loading encoder {}", path.display()))?;
    Ok(encoder)
}

/// Encodes the windows of `source` at `indices` in batches of `batch_size` (evaluation mode, no
/// autograd graph).
///
/// # Shapes
/// - returns `(indices.len(), repr_dim)` row-major, rows in the order of `indices`.
pub fn encode_windows<S: WindowSource + ?Sized>(
    encoder: &HarNet,
    source: &S,
    indices: &[usize],
    batch_size: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let (c, l) = (source.channels(), source.window_len());
    let cfg = encoder.config();
    if c != cfg.in_channels || l != cfg.window_len {
        bail!(
            "windows are {c} channels x {l} samples, the encoder expects {} x {} (encoder `window_len` / `in_channels`)",
            cfg.in_channels,
            cfg.window_len
        );
    }
    let mut out = Vec::with_capacity(indices.len() * cfg.repr_dim());
    for chunk in indices.chunks(batch_size.max(1)) {
        let x = source.read_windows(chunk)?;
        let x = Tensor::from_vec(x, (chunk.len(), c, l), device)?;
        let z = encoder.encode_detached(&x)?;
        out.extend(z.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Encodes `x` with `encoder` in batches of `batch_size` (evaluation mode, detached).
///
/// # Shapes
/// - `x`: `(N, channels, samples)`; returns `(N, repr_dim)`
pub fn encode_tensor(encoder: &HarNet, x: &Tensor, batch_size: usize) -> Result<Tensor> {
    ensure!(batch_size >= 1, "batch_size: must be at least 1");
    let (n, _, _) = x.dims3().context("windows: expected an (N, C, L) tensor")?;
    ensure!(n >= 1, "windows: nothing to encode");
    let mut parts = Vec::new();
    let mut s = 0;
    while s < n {
        let len = batch_size.min(n - s);
        parts.push(encoder.encode_detached(&x.narrow(0, s, len)?)?);
        s += len;
    }
    Ok(Tensor::cat(&parts, 0)?)
}

/// The windows of `ws` as an `(N, C, L)` f32 tensor on `device`.
pub fn windows_tensor(ws: &WindowSet, device: &Device) -> Result<Tensor> {
    ws.validate()?;
    Ok(Tensor::from_slice(
        &ws.x,
        (ws.num_windows(), ws.channels, ws.window_len),
        device,
    )?)
}

/// Encodes the windows `indices` of `store` in batches (evaluation mode, no autograd graph).
///
/// Returns the `(indices.len(), d)` representations row-major.
pub fn embed_store(
    enc: &HarNet,
    store: &WindowStore,
    indices: &[usize],
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    encode_windows(enc, store, indices, batch, device)
        .with_context(|| format!("encoding {}", store.path().display()))
}

/// Writes the embeddings of the windows `indices` of `store` atomically: datasets `z` `(N, d)`
/// f32, `y`, `subject` and `window_index` (the row of each window in the store) `(N)` i64, and
/// the source store and encoder as attributes.
pub fn write_embeddings(
    path: &Path,
    z: &[f32],
    d: usize,
    store: &WindowStore,
    indices: &[usize],
    encoder_path: &Path,
) -> Result<()> {
    let n = indices.len();
    if z.len() != n * d {
        bail!("{} embeddings of dimension {d} for {n} windows", z.len());
    }
    if let Some(dir) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let pick = |v: &[i64]| -> Vec<i64> { indices.iter().map(|&i| v[i]).collect() };
    let rows: Vec<i64> = indices.iter().map(|&i| i as i64).collect();
    flowfm_core::fs::write_atomic_with(path, |tmp: &Path| -> Result<()> {
        let f = hdf5::File::create(tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.new_dataset::<f32>()
            .shape((n, d))
            .create("z")?
            .write_raw(z)?;
        for (name, values) in [
            ("y", pick(&store.y)),
            ("subject", pick(&store.subject)),
            ("window_index", rows.clone()),
        ] {
            f.new_dataset::<i64>()
                .shape(n)
                .create(name)?
                .write_raw(&values)?;
        }
        write_str_attr(&f, "source_store", &store.path().display().to_string())?;
        write_str_attr(&f, "store_fingerprint", &store.meta.fingerprint)?;
        write_str_attr(
            &f,
            "encoder_checkpoint",
            &encoder_path.display().to_string(),
        )?;
        let classes: Vec<hdf5::types::VarLenUnicode> = store
            .meta
            .class_names
            .iter()
            .map(|c| {
                c.parse()
                    .map_err(|e| anyhow::anyhow!("class name {c:?}: {e:?}"))
            })
            .collect::<Result<_>>()?;
        f.new_attr::<hdf5::types::VarLenUnicode>()
            .shape(classes.len())
            .create("class_names")?
            .write_raw(&classes)?;
        Ok(())
    })
}

/// Writes the scalar string attribute `name` = `value` on `file`.
pub(crate) fn write_str_attr(file: &hdf5::File, name: &str, value: &str) -> Result<()> {
    let v: hdf5::types::VarLenUnicode = value
        .parse()
        .map_err(|e| anyhow::anyhow!("attribute {name}: {e:?}"))?;
    file.new_attr::<hdf5::types::VarLenUnicode>()
        .create(name)?
        .write_scalar(&v)?;
    Ok(())
}
