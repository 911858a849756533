//! Flow-matching, DDPM, contrastive and classification losses on hand-computable inputs and
//! against exact (oracle) fields.

use candle_core::{DType, Device, Result, Tensor, Var};
use flowfm_core::{
    Conditioning, CoreError, DiffusionSteps, FlowTimes, LinearPath, NoiseSchedule, SeededRng,
    Tolerance,
};
use flowfm_objectives::{
    ddpm_loss, flow_matching_loss, info_nce, inverse_frequency_weights, nt_xent,
    sample_diffusion_steps, sample_flow_times, weighted_cross_entropy, TimeSampling,
};

const DEV: Device = Device::Cpu;

fn scalar(t: &Tensor) -> f64 {
    t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
}

fn col(v: &[f64]) -> Tensor {
    Tensor::from_slice(v, (v.len(), 1, 1), &DEV).unwrap()
}

#[test]
fn flow_matching_loss_is_zero_for_the_exact_field_of_a_point_mass() {
    // Data is the point mass x_1 = c. On the path x_t = t c + (1 - (1 - s) t) x_0 the marginal
    // velocity is v(x, t) = c - (1 - s) (x - t c) / (1 - (1 - s) t), a function of x_t and t only.
    let mut rng = SeededRng::new(4);
    let x_0 = rng.normal_tensor((3, 2, 5), DType::F64, &DEV).unwrap();
    let c = rng.normal_tensor((1, 2, 5), DType::F64, &DEV).unwrap();
    let x_1 = c.broadcast_as((3, 2, 5)).unwrap().contiguous().unwrap();
    let t = FlowTimes::from_values(&[0.0, 0.37, 0.93], DType::F64, &DEV).unwrap();
    for s in [0.0, 0.1] {
        let path = LinearPath::new(s).unwrap();
        let field = |x: &Tensor, t: &FlowTimes, _: &Conditioning| -> Result<Tensor> {
            let tv: Vec<f64> = t.tensor().to_vec1()?;
            let tc = col(&tv);
            let denom = col(&tv.iter().map(|t| 1.0 - (1.0 - s) * t).collect::<Vec<_>>());
            let num = x
                .broadcast_sub(&c.broadcast_mul(&tc)?)?
                .affine(1.0 - s, 0.0)?;
            c.broadcast_sub(&num.broadcast_div(&denom)?)
        };
        let loss = flow_matching_loss(&field, &x_1, &x_0, &t, &Conditioning::None, &path).unwrap();
        assert!(
            Tolerance::new(0.0, 1e-24).close(scalar(&loss), 0.0),
            "sigma_min {s}: loss {}",
            scalar(&loss)
        );
        // A wrong field is penalised.
        let wrong =
            |x: &Tensor, t: &FlowTimes, cd: &Conditioning| field(x, t, cd)?.affine(1.0, 0.1);
        let loss = flow_matching_loss(&wrong, &x_1, &x_0, &t, &Conditioning::None, &path).unwrap();
        assert!(Tolerance::new(1e-12, 1e-12).close(scalar(&loss), 0.01));
    }
}

#[test]
fn flow_matching_loss_of_the_zero_field_is_the_mean_squared_target() {
    let x_1 = Tensor::new(&[[[1.0f64, 2.0]]], &DEV).unwrap();
    let x_0 = Tensor::new(&[[[3.0f64, -1.0]]], &DEV).unwrap();
    let t = FlowTimes::from_values(&[0.3], DType::F64, &DEV).unwrap();
    let zero = |x: &Tensor, _: &FlowTimes, _: &Conditioning| x.zeros_like();
    // Target x_1 - x_0 = (-2, 3): mean (4 + 9) / 2.
    let l = flow_matching_loss(
        &zero,
        &x_1,
        &x_0,
        &t,
        &Conditioning::None,
        &LinearPath::default(),
    )
    .unwrap();
    assert!(Tolerance::F64.close(scalar(&l), 6.5));
    // sigma_min = 0.5: target x_1 - 0.5 x_0 = (-0.5, 2.5): mean (0.25 + 6.25) / 2.
    let l = flow_matching_loss(
        &zero,
        &x_1,
        &x_0,
        &t,
        &Conditioning::None,
        &LinearPath::new(0.5).unwrap(),
    )
    .unwrap();
    assert!(Tolerance::F64.close(scalar(&l), 3.25));
    let two = FlowTimes::from_values(&[0.3, 0.4], DType::F64, &DEV).unwrap();
    assert!(flow_matching_loss(
        &zero,
        &x_1,
        &x_0,
        &two,
        &Conditioning::None,
        &LinearPath::default()
    )
    .is_err());
}

/// Joint training: z = w * mean(x_1) is a one-parameter "encoder"; the field adds z to x_t.
fn joint_loss(w: &Tensor, x_1: &Tensor, x_0: &Tensor, t: &FlowTimes) -> Tensor {
    let z = x_1
        .mean_keepdim(2)
        .unwrap()
        .mean_keepdim(1)
        .unwrap()
        .broadcast_mul(w)
        .unwrap();
    let cond = Conditioning::Representation(z.flatten_all().unwrap());
    let field = |x: &Tensor, _: &FlowTimes, c: &Conditioning| -> Result<Tensor> {
        let z = c
            .representation()
            .expect("conditioned")
            .reshape((x.dims()[0], 1, 1))?;
        x.broadcast_add(&z)
    };
    flow_matching_loss(&field, x_1, x_0, t, &cond, &LinearPath::default()).unwrap()
}

#[test]
fn flow_matching_gradient_reaches_the_encoder_through_the_conditioning() {
    let mut rng = SeededRng::new(1);
    let x_1 = rng.normal_tensor((4, 3, 6), DType::F64, &DEV).unwrap();
    let x_0 = rng.normal_tensor((4, 3, 6), DType::F64, &DEV).unwrap();
    let t = FlowTimes::from_values(&[0.1, 0.5, 0.7, 0.9], DType::F64, &DEV).unwrap();
    let w = Var::from_tensor(&Tensor::new(&[0.8f64], &DEV).unwrap()).unwrap();
    let grads = joint_loss(w.as_tensor(), &x_1, &x_0, &t)
        .backward()
        .unwrap();
    let g = scalar(
        &grads
            .get(w.as_tensor())
            .expect("no gradient reached the encoder")
            .sum_all()
            .unwrap(),
    );
    let h = 1e-6;
    let at = |v: f64| {
        scalar(&joint_loss(
            &Tensor::new(&[v], &DEV).unwrap(),
            &x_1,
            &x_0,
            &t,
        ))
    };
    let fd = (at(0.8 + h) - at(0.8 - h)) / (2.0 * h);
    assert!(g.abs() > 1e-3, "gradient {g} too small to test");
    assert!(
        Tolerance::new(1e-6, 1e-9).close(g, fd),
        "autograd {g} vs finite difference {fd}"
    );
}

#[test]
fn time_samplers_are_seeded_and_follow_their_distributions() {
    let draw = |seed, s| {
        let t = sample_flow_times(&mut SeededRng::new(seed), 4000, s, DType::F64, &DEV).unwrap();
        t.tensor().to_vec1::<f64>().unwrap()
    };
    let u = draw(1, TimeSampling::Uniform);
    assert_eq!(u, draw(1, TimeSampling::Uniform));
    assert!(u.iter().all(|t| (0.0..1.0).contains(t)));
    let mean = u.iter().sum::<f64>() / u.len() as f64;
    assert!((mean - 0.5).abs() < 0.02, "uniform mean {mean}");
    // The median of sigmoid(N(m, s)) is sigmoid(m).
    let mut ln = draw(
        2,
        TimeSampling::LogitNormal {
            mean: 1.0,
            std: 1.0,
        },
    );
    assert!(ln.iter().all(|t| *t > 0.0 && *t < 1.0));
    ln.sort_by(f64::total_cmp);
    let median = ln[ln.len() / 2];
    let expected = 1.0 / (1.0 + (-1.0f64).exp());
    assert!(
        (median - expected).abs() < 0.02,
        "logit-normal median {median} vs {expected}"
    );
    let bad = sample_flow_times(
        &mut SeededRng::new(0),
        2,
        TimeSampling::LogitNormal {
            mean: 0.0,
            std: 0.0,
        },
        DType::F32,
        &DEV,
    );
    assert!(bad.unwrap_err().to_string().contains("logit_normal_std"));
}

#[test]
fn ddpm_loss_is_zero_for_the_exact_noise_of_a_point_mass_and_mean_square_for_zero() {
    let s = NoiseSchedule::ddpm_linear();
    let mut rng = SeededRng::new(3);
    let c = rng.normal_tensor((1, 2, 4), DType::F64, &DEV).unwrap();
    let x_0 = c.broadcast_as((3, 2, 4)).unwrap().contiguous().unwrap();
    let eps = rng.normal_tensor((3, 2, 4), DType::F64, &DEV).unwrap();
    let k = DiffusionSteps::new(vec![0, 500, 999], 1000).unwrap();
    let oracle = |x: &Tensor, k: &DiffusionSteps, _: &Conditioning| -> Result<Tensor> {
        let ab: Vec<f64> = k.steps().iter().map(|&i| s.alpha_bar()[i]).collect();
        let a = col(&ab.iter().map(|a| a.sqrt()).collect::<Vec<_>>());
        let b = col(&ab.iter().map(|a| (1.0 - a).sqrt()).collect::<Vec<_>>());
        x.sub(&c.broadcast_mul(&a)?)?.broadcast_div(&b)
    };
    let l = ddpm_loss(&oracle, &x_0, &eps, &k, &s, &Conditioning::None).unwrap();
    assert!(
        Tolerance::new(0.0, 1e-12).close(scalar(&l), 0.0),
        "oracle loss {}",
        scalar(&l)
    );
    let zero = |x: &Tensor, _: &DiffusionSteps, _: &Conditioning| x.zeros_like();
    let l = ddpm_loss(&zero, &x_0, &eps, &k, &s, &Conditioning::None).unwrap();
    let e: Vec<f64> = eps.flatten_all().unwrap().to_vec1().unwrap();
    let expected = e.iter().map(|v| v * v).sum::<f64>() / e.len() as f64;
    assert!(Tolerance::F64.close(scalar(&l), expected));
}

#[test]
fn diffusion_steps_are_drawn_over_the_whole_schedule() {
    let s = NoiseSchedule::new(&flowfm_core::NoiseScheduleConfig {
        num_steps: 10,
        ..Default::default()
    })
    .unwrap();
    let k = sample_diffusion_steps(&mut SeededRng::new(0), 2000, &s).unwrap();
    let mut seen = [0usize; 10];
    for &i in k.steps() {
        seen[i] += 1;
    }
    assert!(seen.iter().all(|&n| n > 150), "{seen:?}");
    assert_eq!(
        k,
        sample_diffusion_steps(&mut SeededRng::new(0), 2000, &s).unwrap()
    );
}

#[test]
fn info_nce_of_orthonormal_pairs_has_its_closed_form() {
    let e = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0]], &DEV).unwrap();
    // Positive similarity 1, one negative at 0: -log(e^{1/tau} / (e^{1/tau} + 1)).
    for tau in [1.0, 0.5] {
        let l = scalar(&info_nce(&e, &e, tau).unwrap());
        assert!(
            Tolerance::F64.close(l, (1.0 + (-1.0 / tau).exp()).ln()),
            "tau {tau}: {l}"
        );
    }
    // Cosine similarity: scaling the representations changes nothing.
    let l1 = scalar(&info_nce(&e.affine(3.0, 0.0).unwrap(), &e, 0.3).unwrap());
    let l2 = scalar(&info_nce(&e, &e, 0.3).unwrap());
    assert!(Tolerance::new(1e-12, 1e-12).close(l1, l2));
    assert!(info_nce(&e, &e, 0.0)
        .unwrap_err()
        .to_string()
        .contains("temperature"));
}

#[test]
fn nt_xent_of_orthonormal_pairs_has_its_closed_form() {
    let e = Tensor::new(&[[1.0f64, 0.0], [0.0, 1.0]], &DEV).unwrap();
    // Each view: partner at similarity 1, two other views at 0, self excluded.
    let l = scalar(&nt_xent(&e, &e, 1.0).unwrap());
    assert!(
        Tolerance::new(1e-12, 1e-12).close(l, (1.0 + 2.0 * (-1.0f64).exp()).ln()),
        "{l}"
    );
}

#[test]
fn weighted_cross_entropy_matches_hand_computation() {
    // Row 0: p = (3/4, 1/4), row 1: p = (1/2, 1/2).
    let logits = Tensor::new(&[[3f64.ln(), 0.0], [0.0, 0.0]], &DEV).unwrap();
    let y = Tensor::new(&[1u32, 0], &DEV).unwrap();
    let (a, b) = (-(0.25f64.ln()), -(0.5f64.ln()));
    let plain = scalar(&weighted_cross_entropy(&logits, &y, None).unwrap());
    assert!(Tolerance::F64.close(plain, (a + b) / 2.0));
    let weighted = scalar(&weighted_cross_entropy(&logits, &y, Some(&[1.0, 3.0])).unwrap());
    assert!(Tolerance::F64.close(weighted, (3.0 * a + b) / 4.0));
    assert!(weighted_cross_entropy(&logits, &y, Some(&[1.0])).is_err());
    let out_of_range = Tensor::new(&[2u32, 0], &DEV).unwrap();
    assert!(weighted_cross_entropy(&logits, &out_of_range, None).is_err());
}

#[test]
fn inverse_frequency_weights_balance_the_classes() {
    let w = inverse_frequency_weights(&[0, 0, 0, 1], 3).unwrap();
    Tolerance::F64.assert_close(&w, &[4.0 / 9.0, 4.0 / 3.0, 0.0]);
    // Each present class then carries total weight N / K.
    assert!(Tolerance::F64.close(3.0 * w[0], 1.0 * w[1]));
    assert!(matches!(
        inverse_frequency_weights(&[0, 3], 3),
        Err(CoreError::InvalidParameter { name: "labels", .. })
    ));
    assert!(inverse_frequency_weights(&[], 3).is_err());
}
