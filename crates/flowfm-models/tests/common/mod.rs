//! Helpers shared by the integration tests of flowfm-models.
// Each test binary uses a different subset of these helpers.
#![allow(dead_code)]

use candle_core::{DType, Device, Tensor};
use candle_nn::{VarBuilder, VarMap};
use flowfm_core::SeededRng;
use std::collections::HashMap;

/// A seeded builder over a fresh `VarMap`.
pub fn seeded(seed: u64, dtype: DType) -> (VarMap, VarBuilder<'static>) {
    let vm = VarMap::new();
    let vb = flowfm_core::init::seeded_var_builder(&vm, seed, dtype, &Device::Cpu);
    (vm, vb)
}

/// Standard normal tensor.
pub fn randn(rng: &mut SeededRng, shape: &[usize], dtype: DType) -> Tensor {
    rng.normal_tensor(shape, dtype, &Device::Cpu).unwrap()
}

/// Every variable of `vm` as (name -> detached copy), for rebuilding a model from tensors.
pub fn snapshot(vm: &VarMap) -> HashMap<String, Tensor> {
    let data = vm.data().lock().unwrap();
    data.iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().copy().unwrap().detach()))
        .collect()
}

/// Every variable of `vm` flattened to f64, sorted by name.
pub fn values(vm: &VarMap) -> Vec<(String, Vec<f64>)> {
    let data = vm.data().lock().unwrap();
    let mut out: Vec<(String, Vec<f64>)> = data
        .iter()
        .map(|(n, v)| {
            (
                n.clone(),
                v.as_tensor()
                    .to_dtype(DType::F64)
                    .unwrap()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap(),
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Names and shapes of every variable, sorted by name.
pub fn shapes(vm: &VarMap) -> Vec<(String, Vec<usize>)> {
    let data = vm.data().lock().unwrap();
    let mut out: Vec<(String, Vec<usize>)> = data
        .iter()
        .map(|(n, v)| (n.clone(), v.as_tensor().dims().to_vec()))
        .collect();
    out.sort();
    out
}

/// A tensor as a flat f64 vector.
pub fn flat(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

/// The f32 bits of `t`, for bit-for-bit comparisons.
pub fn bits32(t: &Tensor) -> Vec<u32> {
    t.flatten_all()
        .unwrap()
        .to_vec1::<f32>()
        .unwrap()
        .into_iter()
        .map(f32::to_bits)
        .collect()
}
