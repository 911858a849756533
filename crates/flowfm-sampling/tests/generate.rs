//! The generation API: seeded, batched (chunking never changes the result), conditioned.

use candle_core::{DType, Device, Result, Tensor};
use flowfm_core::{Conditioning, DiffusionSteps, FlowTimes, NoiseSchedule, SeededRng, Tolerance};
use flowfm_sampling::{
    generate_diffusion, generate_flow, DdimOptions, DdpmOptions, DiffusionMethod, GenerateOptions,
    OdeMethod, SampleShape, TimeGrid,
};

const SHAPE: SampleShape = SampleShape {
    batch: 5,
    channels: 3,
    samples: 8,
};

fn opts(max_batch: Option<usize>) -> GenerateOptions {
    GenerateOptions {
        dtype: DType::F64,
        device: Device::Cpu,
        max_batch,
    }
}

/// v(x, t | z) = z - x: pulls every sample towards its own z.
fn field(x: &Tensor, _: &FlowTimes, c: &Conditioning) -> Result<Tensor> {
    match c.representation() {
        Some(z) => z.reshape((x.dims()[0], 1, 1))?.broadcast_sub(x),
        None => x.neg(),
    }
}

fn denoiser(x: &Tensor, _: &DiffusionSteps, _: &Conditioning) -> Result<Tensor> {
    x.affine(0.3, 0.0)
}

fn z() -> Conditioning {
    Conditioning::Representation(Tensor::new(&[1.0f64, -2.0, 0.5, 3.0, 0.0], &Device::Cpu).unwrap())
}

fn flow(seed: u64, max_batch: Option<usize>, cond: &Conditioning) -> (Vec<f64>, usize, usize) {
    let grid = TimeGrid::noise_to_data(4).unwrap();
    let g = generate_flow(
        &field,
        cond,
        SHAPE,
        &grid,
        &OdeMethod::Rk4,
        &opts(max_batch),
        &mut SeededRng::new(seed),
    )
    .unwrap();
    assert_eq!(g.x.dims(), &[5, 3, 8]);
    (
        flowfm_core::tolerance::tensor_to_f64(&g.x).unwrap(),
        g.nfe.0,
        g.calls,
    )
}

#[test]
fn flow_generation_is_seeded_and_independent_of_chunking() {
    let (a, nfe, calls) = flow(7, None, &z());
    let (b, nfe2, calls2) = flow(7, Some(2), &z());
    Tolerance::new(1e-12, 1e-12).assert_close(&b, &a);
    assert_eq!((nfe, calls), (16, 16));
    assert_eq!((nfe2, calls2), (16, 48));
    let (c, _, _) = flow(8, None, &z());
    assert!(
        Tolerance::F64.check(&c, &a).is_err(),
        "the seed had no effect"
    );
}

#[test]
fn flow_generation_follows_the_conditioning() {
    // With v = z - x the exact flow is x(1) = z + (x(0) - z) e^{-1}; with no z it is x(0) e^{-1}.
    // Same noise in both runs, so x_z - x_none = z (1 - e^{-1}) up to RK4's error.
    let (with_z, _, _) = flow(3, Some(3), &z());
    let (without, _, _) = flow(3, None, &Conditioning::None);
    let zs = [1.0, -2.0, 0.5, 3.0, 0.0];
    let expected: Vec<f64> = zs
        .iter()
        .flat_map(|z| std::iter::repeat_n(z * (1.0 - (-1f64).exp()), 24))
        .collect();
    let diff: Vec<f64> = with_z.iter().zip(&without).map(|(a, b)| a - b).collect();
    Tolerance::new(1e-3, 1e-3).assert_close(&diff, &expected);
}

#[test]
fn diffusion_generation_is_seeded_and_independent_of_chunking() {
    let s = NoiseSchedule::new(&flowfm_core::NoiseScheduleConfig {
        num_steps: 50,
        ..Default::default()
    })
    .unwrap();
    for method in [
        DiffusionMethod::Ddpm(DdpmOptions::default()),
        DiffusionMethod::Ddim(DdimOptions {
            num_sample_steps: 10,
            eta: 0.5,
            ..DdimOptions::default()
        }),
    ] {
        let run = |seed, mb| {
            let g = generate_diffusion(
                &denoiser,
                &z(),
                SHAPE,
                &s,
                &method,
                &opts(mb),
                &mut SeededRng::new(seed),
            )
            .unwrap();
            (
                flowfm_core::tolerance::tensor_to_f64(&g.x).unwrap(),
                g.nfe.0,
            )
        };
        let (a, nfe) = run(1, None);
        let (b, _) = run(1, Some(4));
        Tolerance::new(1e-12, 1e-12).assert_close(&b, &a);
        assert!(
            Tolerance::F64.check(&run(2, None).0, &a).is_err(),
            "{method:?}: the seed had no effect"
        );
        let expected_nfe = if matches!(method, DiffusionMethod::Ddpm(_)) {
            50
        } else {
            10
        };
        assert_eq!(nfe, expected_nfe);
    }
}

#[test]
fn mismatched_conditioning_or_empty_shapes_are_errors() {
    let grid = TimeGrid::noise_to_data(2).unwrap();
    let three = Conditioning::Representation(Tensor::zeros(3, DType::F64, &Device::Cpu).unwrap());
    let mut rng = SeededRng::new(0);
    assert!(generate_flow(
        &field,
        &three,
        SHAPE,
        &grid,
        &OdeMethod::Euler,
        &opts(None),
        &mut rng
    )
    .is_err());
    let empty = SampleShape {
        samples: 0,
        ..SHAPE
    };
    assert!(generate_flow(
        &field,
        &Conditioning::None,
        empty,
        &grid,
        &OdeMethod::Euler,
        &opts(None),
        &mut rng
    )
    .is_err());
    assert!(generate_flow(
        &field,
        &z(),
        SHAPE,
        &grid,
        &OdeMethod::Euler,
        &opts(Some(0)),
        &mut rng
    )
    .is_err());
}
