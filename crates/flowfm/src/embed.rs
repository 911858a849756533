//! Representations of stored windows: load an encoder checkpoint, encode a window store without
//! building an autograd graph, and write `(N, d)` embeddings with labels and subjects to HDF5.

use anyhow::{bail, Context, Result};
use candle_core::{DType, Device, Tensor};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_data::store::WindowStore;
use flowfm_models::checkpoint::{load_checkpoint_checked, read_checkpoint_metadata};
use flowfm_models::{EncoderConfig, HarNet};
use std::path::Path;

/// An encoder restored from a checkpoint written by pretraining (`encoder.safetensors`).
pub struct LoadedEncoder {
    /// The network.
    pub encoder: HarNet,
    /// Its variables.
    pub vars: VarMap,
    /// Its architecture, read from the checkpoint.
    pub config: EncoderConfig,
}

/// Rebuilds the encoder from the config stored in the checkpoint, then loads its tensors.
pub fn load_encoder(path: &Path, device: &Device) -> Result<LoadedEncoder> {
    let meta =
        read_checkpoint_metadata(path).with_context(|| format!("reading {}", path.display()))?;
    let config: EncoderConfig = meta
        .config()
        .with_context(|| format!("{}: encoder config", path.display()))?;
    let vars = VarMap::new();
    let encoder = HarNet::new(
        config.clone(),
        seeded_var_builder(&vars, 0, DType::F32, device),
    )?;
    load_checkpoint_checked(&vars, &config, path)
        .with_context(|| format!("loading {}", path.display()))?;
    Ok(LoadedEncoder {
        encoder,
        vars,
        config,
    })
}

/// Encodes every window of `store` in batches (evaluation mode, no autograd graph).
///
/// Returns the `(N, d)` representations row-major.
pub fn embed_store(
    enc: &LoadedEncoder,
    store: &WindowStore,
    batch: usize,
    device: &Device,
) -> Result<Vec<f32>> {
    let n = store.num_windows();
    let (c, l) = (store.meta.channels, store.meta.window_len);
    if c != enc.config.in_channels || l != enc.config.window_len {
        bail!(
            "{}: windows are {c} x {l}, the encoder expects {} x {}",
            store.path().display(),
            enc.config.in_channels,
            enc.config.window_len
        );
    }
    let d = enc.config.repr_dim();
    let mut out = Vec::with_capacity(n * d);
    let batch = batch.max(1);
    for start in (0..n).step_by(batch) {
        let idx: Vec<usize> = (start..(start + batch).min(n)).collect();
        let x = store.read_x_subset(&idx)?;
        let x = Tensor::from_vec(x, (idx.len(), c, l), device)?;
        let z = enc.encoder.encode_detached(&x)?;
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
