//! Seeded weight initialisation for candle `VarMap`s.
//!
//! [`seeded_var_builder`] returns a `VarBuilder` whose missing variables are created from a
//! [`SeededRng`] stream derived from the run seed **and the variable's full name**, so the weights
//! of a model depend only on the seed and the parameter paths, not on construction order.
//! Every candle `Init` hint is honoured with PyTorch's formulas (Kaiming, uniform, normal,
//! constant); [`xavier_uniform`] and [`xavier_normal`] map Glorot initialisation onto those hints.

use crate::rng::SeededRng;
use candle_core::{DType, Device, Result, Shape, Tensor, Var};
use candle_nn::init::{FanInOut, NormalOrUniform};
use candle_nn::var_builder::SimpleBackend;
use candle_nn::{Init, VarBuilder, VarMap};

/// Draws a tensor for an initialisation hint from `rng`, with PyTorch's formulas.
pub fn init_tensor(
    init: &Init,
    shape: &Shape,
    dtype: DType,
    device: &Device,
    rng: &mut SeededRng,
) -> Result<Tensor> {
    let n = shape.elem_count();
    let values: Vec<f64> = match *init {
        Init::Const(c) => vec![c; n],
        Init::Uniform { lo, up } => rng.uniform_vec(n, lo, up),
        Init::Randn { mean, stdev } => rng
            .normal_vec(n)
            .into_iter()
            .map(|z| mean + stdev * z)
            .collect(),
        Init::Kaiming {
            dist,
            fan,
            non_linearity,
        } => {
            let fan = fan.for_shape(shape).max(1);
            let std = non_linearity.gain() / (fan as f64).sqrt();
            match dist {
                NormalOrUniform::Uniform => {
                    let bound = 3f64.sqrt() * std;
                    rng.uniform_vec(n, -bound, bound)
                }
                NormalOrUniform::Normal => rng.normal_vec(n).into_iter().map(|z| std * z).collect(),
            }
        }
    };
    Tensor::from_vec(values, shape.clone(), &Device::Cpu)?
        .to_dtype(dtype)?
        .to_device(device)
}

/// Glorot/Xavier uniform initialisation for a weight of `shape` (`gain` 1 for linear layers).
pub fn xavier_uniform(shape: &Shape, gain: f64) -> Init {
    let fan_in = FanInOut::FanIn.for_shape(shape) as f64;
    let fan_out = FanInOut::FanOut.for_shape(shape) as f64;
    let bound = gain * (6.0 / (fan_in + fan_out).max(1.0)).sqrt();
    Init::Uniform {
        lo: -bound,
        up: bound,
    }
}

/// Glorot/Xavier normal initialisation for a weight of `shape`.
pub fn xavier_normal(shape: &Shape, gain: f64) -> Init {
    let fan_in = FanInOut::FanIn.for_shape(shape) as f64;
    let fan_out = FanInOut::FanOut.for_shape(shape) as f64;
    Init::Randn {
        mean: 0.0,
        stdev: gain * (2.0 / (fan_in + fan_out).max(1.0)).sqrt(),
    }
}

/// Zeros.
pub const ZEROS: Init = Init::Const(0.0);
/// Ones.
pub const ONES: Init = Init::Const(1.0);

/// A `VarMap` backend that creates missing variables from a seeded stream per variable name.
struct SeededBackend {
    varmap: VarMap,
    root: SeededRng,
}

impl SimpleBackend for SeededBackend {
    fn get(&self, s: Shape, name: &str, h: Init, dtype: DType, dev: &Device) -> Result<Tensor> {
        let mut data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        if let Some(var) = data.get(name) {
            let t = var.as_tensor();
            if t.shape() != &s {
                candle_core::bail!(
                    "variable `{name}` exists with shape {:?}, requested {:?}",
                    t.shape(),
                    s
                );
            }
            return t.to_dtype(dtype);
        }
        let mut rng = self.root.derive(name);
        let t = init_tensor(&h, &s, dtype, dev, &mut rng)?;
        let var = Var::from_tensor(&t)?;
        let out = var.as_tensor().clone();
        data.insert(name.to_string(), var);
        Ok(out)
    }

    fn get_unchecked(&self, name: &str, dtype: DType, _dev: &Device) -> Result<Tensor> {
        let data = self
            .varmap
            .data()
            .lock()
            .map_err(|_| candle_core::Error::Msg("VarMap lock poisoned".into()))?;
        match data.get(name) {
            Some(v) => v.as_tensor().to_dtype(dtype),
            None => candle_core::bail!("variable `{name}` is not in the VarMap"),
        }
    }

    fn contains_tensor(&self, name: &str) -> bool {
        self.varmap
            .data()
            .lock()
            .map(|d| d.contains_key(name))
            .unwrap_or(false)
    }
}

/// A `VarBuilder` over `varmap` whose new variables are initialised from `seed` and their names.
///
/// Same seed and same parameter paths give bit-identical weights.
pub fn seeded_var_builder(
    varmap: &VarMap,
    seed: u64,
    dtype: DType,
    device: &Device,
) -> VarBuilder<'static> {
    let backend = SeededBackend {
        varmap: varmap.clone(),
        root: SeededRng::new(seed).derive("init"),
    };
    VarBuilder::from_backend(Box::new(backend), dtype, device.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn build(seed: u64, order_swapped: bool) -> (VarMap, Vec<f32>, Vec<f32>) {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, seed, DType::F32, &Device::Cpu);
        let hint = candle_nn::init::DEFAULT_KAIMING_UNIFORM;
        let (a, b) = if order_swapped {
            let b = vb.pp("b").get_with_hints((8, 4), "weight", hint).unwrap();
            let a = vb
                .pp("a")
                .get_with_hints((16, 3, 5), "weight", hint)
                .unwrap();
            (a, b)
        } else {
            let a = vb
                .pp("a")
                .get_with_hints((16, 3, 5), "weight", hint)
                .unwrap();
            let b = vb.pp("b").get_with_hints((8, 4), "weight", hint).unwrap();
            (a, b)
        };
        (
            vm,
            a.flatten_all().unwrap().to_vec1().unwrap(),
            b.flatten_all().unwrap().to_vec1().unwrap(),
        )
    }

    #[test]
    fn same_seed_gives_same_weights_in_any_construction_order() {
        let (_, a1, b1) = build(11, false);
        let (_, a2, b2) = build(11, true);
        assert_eq!(a1, a2);
        assert_eq!(b1, b2);
        let (_, a3, _) = build(12, false);
        assert_ne!(a1, a3);
    }

    #[test]
    fn variables_are_registered_in_the_varmap() {
        let (vm, _, _) = build(1, false);
        let data = vm.data().lock().unwrap();
        assert!(data.contains_key("a.weight"));
        assert!(data.contains_key("b.weight"));
    }

    #[test]
    fn kaiming_uniform_respects_its_bound_and_variance() {
        let shape = Shape::from((256, 64, 5));
        let mut rng = SeededRng::new(0);
        let t = init_tensor(
            &candle_nn::init::DEFAULT_KAIMING_UNIFORM,
            &shape,
            DType::F64,
            &Device::Cpu,
            &mut rng,
        )
        .unwrap();
        let v: Vec<f64> = t.flatten_all().unwrap().to_vec1().unwrap();
        let fan_in = 64.0 * 5.0;
        let bound = 3f64.sqrt() * 2f64.sqrt() / f64::sqrt(fan_in);
        assert!(v.iter().all(|x| x.abs() <= bound));
        let var = v.iter().map(|x| x * x).sum::<f64>() / v.len() as f64;
        let expected = 2.0 / fan_in;
        assert!(
            (var / expected - 1.0).abs() < 0.03,
            "var {var} expected {expected}"
        );
    }

    #[test]
    fn xavier_uniform_bound_matches_glorot() {
        let shape = Shape::from((30, 20));
        match xavier_uniform(&shape, 1.0) {
            Init::Uniform { lo, up } => {
                let b = (6.0f64 / 50.0).sqrt();
                assert!((up - b).abs() < 1e-12 && (lo + b).abs() < 1e-12);
            }
            other => panic!("unexpected init {other:?}"),
        }
    }

    #[test]
    fn zeros_are_zero() {
        let vm = VarMap::new();
        let vb = seeded_var_builder(&vm, 0, DType::F32, &Device::Cpu);
        let t = vb.get_with_hints(7, "bias", ZEROS).unwrap();
        assert_eq!(t.to_vec1::<f32>().unwrap(), vec![0.0; 7]);
    }
}
