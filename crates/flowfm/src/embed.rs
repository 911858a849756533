//! Representations of stored windows: encode a window store without building an autograd graph
//! (the encoder comes from [`crate::generate::load_encoder`]), and write `(N, d)` embeddings with labels and subjects to HDF5.

use anyhow::{bail, Context, Result};
use candle_core::{Device, Tensor};
use flowfm_data::store::WindowStore;
use flowfm_models::HarNet;
use std::path::Path;

/// Encodes every window of `store` in batches (evaluation mode, no autograd graph).
///
/// Returns the `(N, d)` representations row-major.
pub fn embed_store(
    enc: &HarNet,
    store: &WindowStore,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let n = store.num_windows();
    let (c, l) = (store.meta.channels, store.meta.window_len);
    let cfg = enc.config();
    if c != cfg.in_channels || l != cfg.window_len {
        bail!(
            "{}: windows are {c} x {l}, the encoder expects {} x {}",
            store.path().display(),
            cfg.in_channels,
            cfg.window_len
        );
    }
    let d = cfg.repr_dim();
    let mut out = Vec::with_capacity(n * d);
    let batch = batch.max(1);
    for start in (0..n).step_by(batch) {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let x = store.read_x_subset(&idx)?;
        let x = Tensor::from_vec(x, (idx.len(), c, l), device)?;
        let z = enc.encode_detached(&x)?;
        out.extend(z.flatten_all()?.to_vec1::<f32>()?);
    }
    Ok(out)
}

/// Writes embeddings atomically: datasets `z` `(N, d)` f32, `y` and `subject` `(N)` i64, and the
/// source store and encoder as attributes.
pub fn write_embeddings(
    path: &Path,
    z: &[f32],
    d: usize,
    store: &WindowStore,
    encoder_path: &Path,
) -> Result<()> {
    let n = store.num_windows();
    if z.len() != n * d {
        bail!("{} embeddings of dimension {d} for {n} windows", z.len());
    }
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|f| f.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    {
        let f = hdf5::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        f.new_dataset::<f32>()
            .shape((n, d))
            .create("z")?
            .write_raw(z)?;
        f.new_dataset::<i64>()
            .shape(n)
            .create("y")?
            .write_raw(&store.y)?;
        f.new_dataset::<i64>()
            .shape(n)
            .create("subject")?
            .write_raw(&store.subject)?;
        let attr = |name: &str, value: &str| -> Result<()> {
            let v: hdf5::types::VarLenUnicode = value
                .parse()
                .map_err(|e| anyhow::anyhow!("attribute {name}: {e:?}"))?;
            f.new_attr::<hdf5::types::VarLenUnicode>()
                .create(name)?
                .write_scalar(&v)?;
            Ok(())
        };
        attr("source_store", &store.path().display().to_string())?;
        attr("store_fingerprint", &store.meta.fingerprint)?;
        attr("encoder_checkpoint", &encoder_path.display().to_string())?;
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
    }
    std::fs::rename(&tmp, path)
        .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))?;
    Ok(())
}
