//! The state a pretraining run writes and reads back: the tensors of a training checkpoint
//! (networks, optimiser moments, EMA), restoring them, and the final model files.

use crate::train::config::{Experiment, Method};
use crate::train::pretrain::Networks;
use anyhow::{bail, Context, Result};
use candle_core::{Tensor, Var};
use candle_nn::VarMap;
use flowfm_ops::optim::{AdamW, Ema};
use std::collections::{BTreeMap, HashMap};
use std::path::Path;

pub(crate) fn state_tensors(
    nets: &Networks,
    opt: &AdamW,
    ema: Option<&Ema>,
) -> Vec<(String, Tensor)> {
    let mut t: Vec<(String, Tensor)> = nets
        .named_vars()
        .into_iter()
        .map(|(n, v)| (n, v.as_tensor().clone()))
        .collect();
    t.extend(opt.state_tensors());
    if let Some(e) = ema {
        t.extend(
            e.tensors()
                .into_iter()
                .map(|(n, v)| (format!("ema.{n}"), v)),
        );
    }
    t
}

pub(crate) fn restore(nets: &Networks, tensors: &HashMap<String, Tensor>) -> Result<()> {
    for (name, var) in nets.named_vars() {
        let t = tensors
            .get(&name)
            .with_context(|| format!("checkpoint lacks tensor `{name}`"))?;
        if t.shape() != var.shape() {
            bail!(
                "checkpoint tensor `{name}` has shape {:?}, the model has {:?}",
                t.dims(),
                var.dims()
            );
        }
        var.set(&t.to_dtype(var.dtype())?.to_device(var.device())?)?;
    }
    Ok(())
}

/// Saves the final networks as self-describing model checkpoints (`encoder.safetensors`,
/// `generator.safetensors` with EMA weights, `heads.safetensors`).
pub(crate) fn save_models(
    exp: &Experiment,
    nets: &Networks,
    ema: Option<&Ema>,
    dir: &Path,
) -> Result<()> {
    let mut meta = BTreeMap::new();
    meta.insert("method".to_string(), exp.method.name().to_string());
    flowfm_models::checkpoint::save_checkpoint_with_metadata(
        &nets.encoder_vars,
        &exp.encoder,
        &meta,
        &dir.join("encoder.safetensors"),
    )?;
    if exp.method != Method::SslMultitask {
        // Sampling uses the EMA weights: write them into a copy of the generator's VarMap.
        let gen = VarMap::new();
        if let (Ok(src), Ok(mut dst)) = (nets.generator_vars.data().lock(), gen.data().lock()) {
            let averaged: HashMap<String, Tensor> = ema
                .map(|e| e.tensors())
                .unwrap_or_default()
                .into_iter()
                .collect();
            for (n, v) in src.iter() {
                let t = averaged
                    .get(&format!("generator.{n}"))
                    .cloned()
                    .unwrap_or_else(|| v.as_tensor().clone());
                dst.insert(n.clone(), Var::from_tensor(&t.detach())?);
            }
        }
        flowfm_models::checkpoint::save_checkpoint_with_metadata(
            &gen,
            &exp.generator,
            &meta,
            &dir.join("generator.safetensors"),
        )?;
    } else {
        flowfm_models::checkpoint::save_checkpoint_with_metadata(
            &nets.head_vars,
            &exp.encoder.repr_dim(),
            &meta,
            &dir.join("heads.safetensors"),
        )?;
    }
    Ok(())
}
