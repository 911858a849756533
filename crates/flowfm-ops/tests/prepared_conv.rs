//! The evaluation-only fused convolution (`conv1d_prepared`: a norm and its activation applied
//! while the convolution copies its input, the residual added into its output) against the
//! separate ops it replaces, `residual + conv(fused_norm_act(x))`: bit for bit in f32 and f64,
//! on the sliding path's two output strategies (one product per sample for outputs of 256
//! samples or more, one product over all positions below), zero and circular padding, with and
//! without bias and residual, group norm (plain and FiLM-modulated) and batch norm with running
//! statistics, and on a geometry where the sliding path does not apply (the fallback). Arguments
//! that are part of an autograd graph, or a transform computed for another tensor, are errors.

mod common;

use candle_core::{DType, Device, Result, Tensor, Var};
use common::{bits, randn};
use flowfm_core::SeededRng;
use flowfm_ops::conv::conv1d_prepared;
use flowfm_ops::fused_norm::{
    fused_norm_act, norm_row_affine, Activation, Grouping, RowAffine, Statistics,
};
use flowfm_ops::{conv1d, conv1d_bias, sliding, Conv1dSpec, PaddingMode};
use std::sync::Arc;

/// A norm of one kind for `x` `(b, c, l)`: its row transform and the separate op's output.
struct NormCase {
    name: &'static str,
    grouping: Grouping,
    stats: Statistics,
    /// `(batch, channels)` affine parameters (FiLM folded in) instead of `(channels,)`.
    per_row: bool,
    activation: Activation,
}

impl NormCase {
    fn both(&self, rng: &mut SeededRng, x: &Tensor) -> Result<(RowAffine, Tensor)> {
        let (b, c, _) = x.dims3()?;
        let dims: Vec<usize> = if self.per_row { vec![b, c] } else { vec![c] };
        let gamma = randn(rng, &dims, x.dtype()).affine(0.5, 1.0)?;
        let beta = (randn(rng, &dims, x.dtype()) * 0.3)?;
        let prep = norm_row_affine(
            x,
            &gamma,
            &beta,
            self.grouping,
            self.stats.clone(),
            1e-5,
            self.activation,
        )?;
        let (y, _) = fused_norm_act(
            x,
            &gamma,
            &beta,
            self.grouping,
            self.stats.clone(),
            1e-5,
            self.activation,
        )?;
        Ok((prep, y))
    }
}

fn norm_cases(c: usize) -> Vec<NormCase> {
    vec![
        NormCase {
            name: "group norm + SiLU",
            grouping: Grouping::Groups(2),
            stats: Statistics::FromInput,
            per_row: false,
            activation: Activation::Silu,
        },
        NormCase {
            name: "modulated group norm + SiLU",
            grouping: Grouping::Groups(4),
            stats: Statistics::FromInput,
            per_row: true,
            activation: Activation::Silu,
        },
        NormCase {
            name: "batch norm (running statistics) + ReLU",
            grouping: Grouping::PerChannel,
            stats: Statistics::Fixed {
                mean: Arc::new((0..c).map(|i| 0.1 * i as f64 - 0.2).collect()),
                var: Arc::new((0..c).map(|i| 0.5 + 0.25 * i as f64).collect()),
            },
            per_row: false,
            activation: Activation::Relu,
        },
    ]
}

#[test]
fn prepared_convolution_equals_the_separate_ops_bit_for_bit() {
    let mut rng = SeededRng::new(41);
    // (batch, c_in, c_out, len, kernel, padding, mode, whether the sliding path applies)
    let geometries = [
        (2, 8, 6, 300, 3, 1, PaddingMode::Zeros, true), // one product per sample
        (3, 8, 5, 40, 3, 1, PaddingMode::Zeros, true),  // one product over all positions
        (3, 8, 6, 64, 5, 2, PaddingMode::Circular, true),
        (2, 8, 4, 270, 5, 2, PaddingMode::Circular, true),
        (4, 8, 6, 6, 5, 2, PaddingMode::Circular, false), // short: the fallback
    ];
    let mut checked = 0;
    for dtype in [DType::F32, DType::F64] {
        for &(b, c, o, l, k, pad, mode, slides) in &geometries {
            let spec = Conv1dSpec {
                padding: pad,
                padding_mode: mode,
                ..Default::default()
            };
            assert_eq!(sliding::applies(&spec, b, l, k), slides, "{b}x{c}x{l} k{k}");
            for case in norm_cases(c) {
                let x = randn(&mut rng, &[b, c, l], dtype).affine(1.5, 0.3).unwrap();
                let (prep, normed) = case.both(&mut rng, &x).unwrap();
                let w = (randn(&mut rng, &[o, c, k], dtype) * 0.2).unwrap();
                let bias = (randn(&mut rng, &[o], dtype) * 0.1).unwrap();
                let residual = randn(&mut rng, &[b, o, l], dtype);
                for with_bias in [false, true] {
                    for with_residual in [false, true] {
                        let bias = with_bias.then_some(&bias);
                        let residual = with_residual.then_some(&residual);
                        let separate = match bias {
                            None => conv1d(&normed, &w, &spec).unwrap(),
                            Some(bv) => conv1d_bias(&normed, &w, bv, &spec).unwrap(),
                        };
                        let separate = match residual {
                            None => separate,
                            Some(r) => (r + separate).unwrap(),
                        };
                        let fused =
                            conv1d_prepared(&x, Some(&prep), &w, bias, residual, &spec).unwrap();
                        assert_eq!(fused.dims(), separate.dims());
                        assert!(
                            bits(&fused) == bits(&separate),
                            "{dtype:?} {}: {b}x{c}x{l} k{k} {mode:?}, bias {with_bias}, residual {with_residual}",
                            case.name
                        );
                        checked += 1;
                    }
                }
            }
            // No transform at all: the plain convolution (plus the residual).
            let x = randn(&mut rng, &[b, c, l], dtype);
            let w = randn(&mut rng, &[o, c, k], dtype);
            let r = randn(&mut rng, &[b, o, l], dtype);
            let plain = (&r + conv1d(&x, &w, &spec).unwrap()).unwrap();
            let fused = conv1d_prepared(&x, None, &w, None, Some(&r), &spec).unwrap();
            assert!(
                bits(&fused) == bits(&plain),
                "{dtype:?} no transform {b}x{c}x{l}"
            );
        }
    }
    assert_eq!(checked, 2 * 5 * 3 * 4);
}

#[test]
fn the_row_transform_alone_is_the_fused_norm() {
    let mut rng = SeededRng::new(5);
    for dtype in [DType::F32, DType::F64] {
        let x = randn(&mut rng, &[3, 8, 33], dtype);
        for case in norm_cases(8) {
            let (prep, y) = case.both(&mut rng, &x).unwrap();
            assert_eq!(prep.rows(), (3, 8));
            assert!(bits(&prep.apply(&x).unwrap()) == bits(&y), "{}", case.name);
        }
    }
}

#[test]
fn graphs_and_mismatched_transforms_are_errors() {
    let mut rng = SeededRng::new(9);
    let spec = Conv1dSpec {
        padding: 1,
        ..Default::default()
    };
    let x = randn(&mut rng, &[2, 4, 30], DType::F32);
    let w = randn(&mut rng, &[3, 4, 3], DType::F32);
    let var = Var::from_tensor(&w).unwrap();
    let err = conv1d_prepared(&x, None, var.as_tensor(), None, None, &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("evaluation only"), "{err}");
    let traced = (Var::from_tensor(&x).unwrap().as_tensor() * 1.0).unwrap();
    assert!(conv1d_prepared(&traced, None, &w, None, None, &spec).is_err());

    let other = randn(&mut rng, &[2, 6, 30], DType::F32);
    let ones = Tensor::ones(6, DType::F32, &Device::Cpu).unwrap();
    let zeros = Tensor::zeros(6, DType::F32, &Device::Cpu).unwrap();
    let prep = norm_row_affine(
        &other,
        &ones,
        &zeros,
        Grouping::Groups(2),
        Statistics::FromInput,
        1e-5,
        Activation::Silu,
    )
    .unwrap();
    let err = conv1d_prepared(&x, Some(&prep), &w, None, None, &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("rows"), "{err}");
    assert!(prep.apply(&x).is_err());
    let wrong = randn(&mut rng, &[2, 3, 29], DType::F32);
    let err = conv1d_prepared(&x, None, &w, None, Some(&wrong), &spec)
        .unwrap_err()
        .to_string();
    assert!(err.contains("residual"), "{err}");
}
