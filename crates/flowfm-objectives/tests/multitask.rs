//! The SSL-Wearables transforms and loss: spline, permutation and warp on hand-checkable windows,
//! target rates, and the loss on hand-computable logits.

use candle_core::{DType, Device, Tensor};
use flowfm_core::{CoreError, SeededRng, Tolerance};
use flowfm_objectives::multitask::{
    draw_permutation, draw_warp, natural_cubic_spline, permute, resample_at, reverse,
};
use flowfm_objectives::{multitask_loss, multitask_transform, MultiTaskConfig, MultiTaskTargets};

const DEV: Device = Device::Cpu;

#[test]
fn natural_cubic_spline_matches_hand_computation() {
    // Knots (0,0), (1,1), (2,0): the interior second derivative solves 4 M = 6 (-1 - 1), M = -3;
    // at x = 0.5: M (0.5)^3 / 6 + (1 - M / 6) 0.5 = -0.0625 + 0.75.
    let v =
        natural_cubic_spline(&[0.0, 1.0, 2.0], &[0.0, 1.0, 0.0], &[0.5, 1.0, 1.5, 2.0]).unwrap();
    Tolerance::F64.assert_close(&v, &[0.6875, 1.0, 0.6875, 0.0]);
    // A straight line is reproduced exactly (all second derivatives vanish).
    let xs = [0.0, 1.5, 2.0, 4.0, 7.0];
    let ys: Vec<f64> = xs.iter().map(|x| 2.0 * x - 1.0).collect();
    let at = [0.3, 1.9, 3.3, 6.9];
    let expected: Vec<f64> = at.iter().map(|x| 2.0 * x - 1.0).collect();
    Tolerance::new(1e-12, 1e-12)
        .assert_close(&natural_cubic_spline(&xs, &ys, &at).unwrap(), &expected);
}

fn ramp(len: usize) -> Vec<Vec<f64>> {
    vec![
        (0..len).map(|i| i as f64).collect(),
        (0..len).map(|i| -(i as f64)).collect(),
    ]
}

#[test]
fn permutation_moves_whole_segments_of_at_least_the_minimum_length() {
    let mut rng = SeededRng::new(0);
    for _ in 0..200 {
        let (lengths, order) = draw_permutation(&mut rng, 45, 4, 10).unwrap();
        assert_eq!(lengths.iter().sum::<usize>(), 45);
        assert!(lengths.iter().all(|&l| l >= 10), "{lengths:?}");
        assert_ne!(order, vec![0, 1, 2, 3], "identity order");
        let out = permute(&ramp(45), &lengths, &order);
        // Each output segment is a contiguous run of the ramp, taken in `order`.
        let starts: Vec<usize> = lengths
            .iter()
            .scan(0, |s, &l| {
                let st = *s;
                *s += l;
                Some(st)
            })
            .collect();
        let mut pos = 0;
        for &j in &order {
            for i in 0..lengths[j] {
                assert!(Tolerance::F64.close(out[0][pos], (starts[j] + i) as f64));
                assert!(Tolerance::F64.close(out[1][pos], -((starts[j] + i) as f64)));
                pos += 1;
            }
        }
    }
    assert!(matches!(
        draw_permutation(&mut rng, 39, 4, 10),
        Err(CoreError::InvalidParameter { .. })
    ));
}

#[test]
fn time_warp_keeps_the_endpoints_and_runs_forward() {
    let mut rng = SeededRng::new(1);
    for _ in 0..100 {
        let tau = draw_warp(&mut rng, 300, 0.2, 4);
        assert!(
            Tolerance::F64.close(tau[0], 0.0)
                && Tolerance::new(1e-12, 1e-12).close(tau[299], 299.0)
        );
        assert!(
            tau.windows(2).all(|w| w[1] > w[0]),
            "warped time must increase"
        );
        // Reading a ramp at tau returns tau.
        let out = resample_at(&ramp(300), &tau);
        Tolerance::new(1e-12, 1e-12).assert_close(&out[0], &tau);
    }
    // sigma = 0: constant speed, the warp is the identity.
    let tau = draw_warp(&mut rng, 50, 0.0, 4);
    let id: Vec<f64> = (0..50).map(|i| i as f64).collect();
    Tolerance::new(1e-12, 1e-12).assert_close(&tau, &id);
}

fn to_vecs(t: &Tensor) -> Vec<u32> {
    t.to_vec1::<u32>().unwrap()
}

#[test]
fn transforms_apply_with_probability_one_half_and_targets_tell_the_truth() {
    let x = SeededRng::new(2)
        .normal_tensor((400, 3, 60), DType::F32, &DEV)
        .unwrap();
    let cfg = MultiTaskConfig::default();
    let b = multitask_transform(&x, &mut SeededRng::new(3), &cfg).unwrap();
    assert_eq!(b.x.dims(), x.dims());
    assert_eq!(b.x.dtype(), DType::F32);
    let (r, p, w) = (
        to_vecs(&b.targets.reversed),
        to_vecs(&b.targets.permuted),
        to_vecs(&b.targets.warped),
    );
    for (name, v) in [("reversed", &r), ("permuted", &p), ("warped", &w)] {
        let rate = v.iter().sum::<u32>() as f64 / v.len() as f64;
        assert!((rate - 0.5).abs() < 0.08, "{name} rate {rate}");
    }
    let (mut plain, mut reversed_only) = (0, 0);
    for i in 0..400 {
        let xin = x.get(i).unwrap();
        let xout = b.x.get(i).unwrap();
        let same = Tolerance::F32.check_tensors(&xout, &xin).is_ok();
        match (r[i], p[i], w[i]) {
            (0, 0, 0) => {
                assert!(same, "window {i} changed without a transform");
                plain += 1;
            }
            (1, 0, 0) => {
                let rev = xin.flip(&[1]).unwrap();
                Tolerance::F32.assert_tensors_close(&xout, &rev);
                reversed_only += 1;
            }
            _ => assert!(!same, "window {i} unchanged although transformed"),
        }
    }
    assert!(plain > 20 && reversed_only > 20);
    let again = multitask_transform(&x, &mut SeededRng::new(3), &cfg).unwrap();
    assert_eq!(to_vecs(&again.targets.warped), w);
    Tolerance::F64.assert_close(&reverse(&ramp(3))[0], &[2.0, 1.0, 0.0]);
}

#[test]
fn windows_too_short_for_the_permutation_are_rejected() {
    let x = Tensor::zeros((2, 3, 30), DType::F32, &DEV).unwrap();
    let err =
        multitask_transform(&x, &mut SeededRng::new(0), &MultiTaskConfig::default()).unwrap_err();
    assert!(err.to_string().contains("permute_min_segment"), "{err}");
    let bad = MultiTaskConfig {
        p_reverse: 1.5,
        ..MultiTaskConfig::default()
    };
    assert!(matches!(
        bad.validate(300),
        Err(CoreError::InvalidParameter {
            name: "p_reverse",
            ..
        })
    ));
}

#[test]
fn multitask_loss_is_the_mean_of_three_cross_entropies() {
    let y = |v: [u32; 2]| Tensor::new(&v, &DEV).unwrap();
    let targets = MultiTaskTargets {
        reversed: y([1, 0]),
        permuted: y([0, 1]),
        warped: y([1, 1]),
    };
    let zeros = Tensor::zeros((2, 2), DType::F64, &DEV).unwrap();
    let l = multitask_loss(&zeros, &zeros, &zeros, &targets)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(Tolerance::F64.close(l, 2f64.ln()));
    // Reversal head sure-ish and right on both: p = 3/4 -> CE = -ln 0.75; the others at ln 2.
    let rev = Tensor::new(&[[0.0f64, 3f64.ln()], [3f64.ln(), 0.0]], &DEV).unwrap();
    let l = multitask_loss(&rev, &zeros, &zeros, &targets)
        .unwrap()
        .to_scalar::<f64>()
        .unwrap();
    assert!(Tolerance::F64.close(l, (-(0.75f64.ln()) + 2.0 * 2f64.ln()) / 3.0));
    let three = Tensor::zeros((2, 3), DType::F64, &DEV).unwrap();
    assert!(multitask_loss(&three, &zeros, &zeros, &targets).is_err());
}

#[test]
fn per_axis_time_warp_gives_each_axis_its_own_warp() {
    // Three identical ramps: reading a ramp at tau returns tau, so each output row is its warp.
    let ramps = vec![(0..120).map(|i| i as f64).collect::<Vec<_>>(); 3];
    let mut rng = SeededRng::new(4);
    let out = flowfm_objectives::multitask::time_warp(&mut rng, &ramps, 0.2, 4, true);
    for row in &out {
        assert!(
            Tolerance::F64.close(row[0], 0.0) && Tolerance::new(1e-9, 1e-9).close(row[119], 119.0)
        );
        assert!(
            row.windows(2).all(|w| w[1] > w[0]),
            "each warp runs forward"
        );
    }
    for (a, b) in [(0, 1), (0, 2), (1, 2)] {
        let gap = out[a]
            .iter()
            .zip(&out[b])
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f64::max);
        assert!(
            gap > 0.5,
            "axes {a} and {b} share their warp (max gap {gap})"
        );
    }
    // The per-axis warps are the warps `draw_warp` gives, in channel order, from the same stream.
    let mut again = SeededRng::new(4);
    for row in &out {
        let tau = draw_warp(&mut again, 120, 0.2, 4);
        Tolerance::new(1e-12, 1e-12).assert_close(row, &tau);
    }
    // Shared: one warp, identical on every axis.
    let shared = flowfm_objectives::multitask::time_warp(&mut rng, &ramps, 0.2, 4, false);
    Tolerance::new(1e-12, 1e-12).assert_close(&shared[0], &shared[1]);
    Tolerance::new(1e-12, 1e-12).assert_close(&shared[0], &shared[2]);
    // The batch transform warps per axis by default (the published recipe).
    assert!(MultiTaskConfig::default().per_axis_warp);
}

#[test]
fn multitask_accuracy_counts_argmax_hits_per_head() {
    let logits = |v: &[[f32; 2]]| Tensor::from_vec(v.concat(), (v.len(), 2), &DEV).unwrap();
    let targets = MultiTaskTargets {
        reversed: Tensor::new(&[1u32, 0, 1, 1], &DEV).unwrap(),
        permuted: Tensor::new(&[0u32, 0, 0, 0], &DEV).unwrap(),
        warped: Tensor::new(&[1u32, 1, 0, 0], &DEV).unwrap(),
    };
    let a = logits(&[[0.0, 1.0], [2.0, 1.0], [0.0, 3.0], [5.0, 0.0]]); // hits 1, 1, 1, 0
    let p = logits(&[[1.0, 0.0], [1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]); // all hits
    let w = logits(&[[1.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.0, 1.0]]); // no hit
    let acc = flowfm_objectives::multitask_accuracy(&a, &p, &w, &targets).unwrap();
    Tolerance::F64.assert_close(&acc, &[0.75, 1.0, 0.0]);
    let bad = Tensor::new(&[[0f32, 1.0, 2.0]; 4], &DEV).unwrap();
    assert!(flowfm_objectives::multitask_accuracy(&bad, &p, &w, &targets).is_err());
}
