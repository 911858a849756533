//! Augmentations: each is checked against what it must preserve.

use flowfm_core::{SeededRng, Tolerance};
use flowfm_data::augment::{axis_angle_rotation, natural_cubic_spline, uniform_rotation};
use flowfm_data::{Augmentation, Compose, DataError};

const L: usize = 300;

/// A `(channels, L)` window of distinct, smooth-ish values.
fn window(channels: usize, seed: u64) -> Vec<f32> {
    let mut rng = SeededRng::new(seed);
    (0..channels * L)
        .map(|i| {
            ((i % L) as f64 * 0.05 + i as f64 * 0.001).sin() as f32 + rng.normal() as f32 * 0.1
        })
        .collect()
}

fn apply(a: &Augmentation, x: &[f32], channels: usize, seed: u64) -> Vec<f32> {
    let mut y = x.to_vec();
    a.apply(&mut y, channels, &mut SeededRng::new(seed))
        .unwrap();
    y
}

fn f64s(v: &[f32]) -> Vec<f64> {
    v.iter().map(|&x| f64::from(x)).collect()
}

fn channel(x: &[f32], c: usize) -> &[f32] {
    &x[c * L..(c + 1) * L]
}

fn triad_norms(x: &[f32], channels: usize) -> Vec<f64> {
    let mut out = Vec::new();
    for t in 0..channels / 3 {
        for i in 0..L {
            let v = (0..3)
                .map(|a| f64::from(x[(3 * t + a) * L + i]).powi(2))
                .sum::<f64>();
            out.push(v.sqrt());
        }
    }
    out
}

#[test]
fn rotation_keeps_the_per_sample_norm_of_every_triad() {
    let x = window(6, 1);
    for a in [
        Augmentation::Rotation {
            max_angle_rad: None,
        },
        Augmentation::Rotation {
            max_angle_rad: Some(0.5),
        },
    ] {
        for seed in 0..5 {
            let y = apply(&a, &x, 6, seed);
            assert_ne!(x, y);
            Tolerance::new(1e-5, 1e-6).assert_close(&triad_norms(&y, 6), &triad_norms(&x, 6));
        }
    }
}

#[test]
fn uniform_rotations_are_proper_and_average_to_zero() {
    let mut rng = SeededRng::new(3);
    let mut mean = [[0.0; 3]; 3];
    let draws = 4000;
    for _ in 0..draws {
        let r = uniform_rotation(&mut rng);
        // R^T R = I and det R = +1.
        for i in 0..3 {
            for j in 0..3 {
                let dot: f64 = (0..3).map(|k| r[k][i] * r[k][j]).sum();
                assert!(Tolerance::new(0.0, 1e-12).close(dot, if i == j { 1.0 } else { 0.0 }));
                mean[i][j] += r[i][j] / draws as f64;
            }
        }
        let det = r[0][0] * (r[1][1] * r[2][2] - r[1][2] * r[2][1])
            - r[0][1] * (r[1][0] * r[2][2] - r[1][2] * r[2][0])
            + r[0][2] * (r[1][0] * r[2][1] - r[1][1] * r[2][0]);
        assert!(Tolerance::new(0.0, 1e-12).close(det, 1.0));
    }
    // Under the Haar measure E[R] = 0; each entry has sd 1/sqrt(3), so the mean's sd is ~0.009.
    let flat: Vec<f64> = mean.iter().flatten().copied().collect();
    Tolerance::new(0.0, 0.04).assert_close(&flat, &[0.0; 9]);
}

#[test]
fn axis_angle_rotation_matches_the_closed_form() {
    // A quarter turn about z maps x to y and y to -x.
    let r = axis_angle_rotation(&[0.0, 0.0, 1.0], std::f64::consts::FRAC_PI_2);
    let flat: Vec<f64> = r.iter().flatten().copied().collect();
    Tolerance::new(0.0, 1e-12).assert_close(&flat, &[0.0, -1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
}

#[test]
fn bounded_rotation_turns_no_vector_by_more_than_the_max_angle() {
    let x = window(3, 2);
    let max = 0.3;
    for seed in 0..20 {
        let y = apply(
            &Augmentation::Rotation {
                max_angle_rad: Some(max),
            },
            &x,
            3,
            seed,
        );
        for i in 0..L {
            let u = [0, 1, 2].map(|a| f64::from(x[a * L + i]));
            let v = [0, 1, 2].map(|a| f64::from(y[a * L + i]));
            let nu = u.iter().map(|a| a * a).sum::<f64>().sqrt();
            let nv = v.iter().map(|a| a * a).sum::<f64>().sqrt();
            let cos = (u[0] * v[0] + u[1] * v[1] + u[2] * v[2]) / (nu * nv);
            assert!(
                cos.clamp(-1.0, 1.0).acos() <= max + 1e-4,
                "seed {seed}, sample {i}"
            );
        }
    }
}

#[test]
fn axis_permutation_moves_whole_channels_within_each_triad() {
    let x = window(6, 4);
    let mut seen = std::collections::BTreeSet::new();
    for seed in 0..30 {
        let y = apply(&Augmentation::AxisPermutation, &x, 6, seed);
        let mut perm = [0usize; 3];
        for (a, p) in perm.iter_mut().enumerate() {
            *p = (0..3)
                .find(|&b| channel(&y, a) == channel(&x, b))
                .expect("every output axis is an input axis");
            // The second triad (gyroscope) follows the same permutation.
            assert_eq!(channel(&y, 3 + a), channel(&x, 3 + *p));
        }
        let mut sorted = perm;
        sorted.sort_unstable();
        assert_eq!(sorted, [0, 1, 2]);
        seen.insert(perm);
    }
    assert_eq!(seen.len(), 6, "all 3! permutations occur");
}

#[test]
fn sign_flips_keep_every_channel_or_negate_it() {
    let x = window(3, 5);
    for seed in 0..10 {
        let y = apply(&Augmentation::SignFlip, &x, 3, seed);
        for c in 0..3 {
            let neg: Vec<f32> = channel(&x, c).iter().map(|v| -v).collect();
            assert!(channel(&y, c) == channel(&x, c) || channel(&y, c) == &neg[..]);
        }
    }
}

#[test]
fn scaling_multiplies_each_channel_by_a_single_factor() {
    let x: Vec<f32> = (0..3 * L).map(|i| 1.0 + (i % 7) as f32).collect();
    let y = apply(&Augmentation::Scaling { sigma: 0.2 }, &x, 3, 6);
    for c in 0..3 {
        let k = f64::from(channel(&y, c)[0]) / f64::from(channel(&x, c)[0]);
        let ratios: Vec<f64> = channel(&y, c)
            .iter()
            .zip(channel(&x, c))
            .map(|(&a, &b)| f64::from(a) / f64::from(b))
            .collect();
        Tolerance::new(1e-6, 0.0).assert_close(&ratios, &vec![k; L]);
    }
    let id = apply(&Augmentation::Scaling { sigma: 0.0 }, &x, 3, 6);
    assert_eq!(id, x);
}

#[test]
fn jitter_adds_zero_mean_noise_of_the_given_sd() {
    let x = vec![0.5f32; 3 * 10_000];
    let mut y = x.clone();
    Augmentation::Jitter { sigma: 0.1 }
        .apply(&mut y, 3, &mut SeededRng::new(7))
        .unwrap();
    let d: Vec<f64> = y.iter().zip(&x).map(|(&a, &b)| f64::from(a - b)).collect();
    let n = d.len() as f64;
    let mean = d.iter().sum::<f64>() / n;
    let sd = (d.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
    assert!(mean.abs() < 0.003, "mean {mean}");
    assert!(Tolerance::new(0.03, 0.0).close(sd, 0.1), "sd {sd}");
}

#[test]
fn magnitude_warp_is_a_smooth_positive_gain_and_identity_at_sigma_zero() {
    let x = window(3, 8);
    let id = apply(
        &Augmentation::MagnitudeWarp {
            sigma: 0.0,
            knots: 4,
        },
        &x,
        3,
        1,
    );
    Tolerance::new(1e-6, 1e-7).assert_close(&f64s(&id), &f64s(&x));
    let ones = vec![1.0f32; 3 * L];
    let g = apply(
        &Augmentation::MagnitudeWarp {
            sigma: 0.2,
            knots: 4,
        },
        &ones,
        3,
        9,
    );
    for c in 0..3 {
        let ch = f64s(channel(&g, c));
        let second_diff = ch
            .windows(3)
            .map(|w| (w[2] - 2.0 * w[1] + w[0]).abs())
            .fold(0.0, f64::max);
        assert!(
            second_diff < 1e-3,
            "channel {c} gain is not smooth: {second_diff}"
        );
        assert!(
            ch.iter().any(|&v| (v - 1.0).abs() > 1e-3),
            "gain is not trivial"
        );
    }
}

#[test]
fn time_warp_with_sigma_zero_is_identity() {
    let x = window(3, 10);
    let y = apply(
        &Augmentation::TimeWarp {
            sigma: 0.0,
            knots: 4,
        },
        &x,
        3,
        11,
    );
    Tolerance::new(1e-6, 1e-6).assert_close(&f64s(&y), &f64s(&x));
}

#[test]
fn time_warp_is_a_monotone_reparametrisation_keeping_the_endpoints() {
    // A ramp stays monotone, starts and ends at the same values; a constant stays constant.
    let ramp: Vec<f32> = (0..3 * L).map(|i| (i % L) as f32).collect();
    for seed in 0..10 {
        let y = apply(
            &Augmentation::TimeWarp {
                sigma: 0.3,
                knots: 4,
            },
            &ramp,
            3,
            seed,
        );
        assert_ne!(y, ramp);
        for c in 0..3 {
            let ch = channel(&y, c);
            assert!(
                ch.windows(2).all(|w| w[1] >= w[0]),
                "seed {seed}: not monotone"
            );
            assert!(Tolerance::new(0.0, 1e-4).close(f64::from(ch[0]), 0.0));
            assert!(Tolerance::new(0.0, 1e-3).close(f64::from(ch[L - 1]), (L - 1) as f64));
        }
        // All channels are warped with the same time map.
        assert_eq!(channel(&y, 0), channel(&y, 1));
    }
    let flat = vec![2.5f32; 3 * L];
    let y = apply(
        &Augmentation::TimeWarp {
            sigma: 0.3,
            knots: 4,
        },
        &flat,
        3,
        1,
    );
    Tolerance::new(0.0, 1e-6).assert_close(&f64s(&y), &f64s(&flat));
}

#[test]
fn segment_permutation_keeps_the_multiset_of_values_per_channel() {
    let x = window(3, 12);
    let aug = Augmentation::SegmentPermutation {
        segments: 4,
        min_segment_len: 10,
    };
    for seed in 0..10 {
        let y = apply(&aug, &x, 3, seed);
        for c in 0..3 {
            let mut a = f64s(channel(&x, c));
            let mut b = f64s(channel(&y, c));
            a.sort_by(f64::total_cmp);
            b.sort_by(f64::total_cmp);
            Tolerance::new(0.0, 0.0).assert_close(&b, &a);
        }
    }
}

#[test]
fn segment_permutation_moves_contiguous_pieces_of_at_least_the_minimum_length() {
    let ramp: Vec<f32> = (0..2 * L).map(|i| (i % L) as f32).collect();
    let aug = Augmentation::SegmentPermutation {
        segments: 4,
        min_segment_len: 10,
    };
    let mut moved = 0;
    for seed in 0..20 {
        let y = apply(&aug, &ramp, 2, seed);
        assert_eq!(channel(&y, 0), channel(&y, 1), "channels move together");
        // Runs of consecutive values are the pieces.
        let ch = channel(&y, 0);
        let mut runs = vec![1usize];
        for w in ch.windows(2) {
            if Tolerance::new(0.0, 1e-6).close(f64::from(w[1]), f64::from(w[0]) + 1.0) {
                *runs.last_mut().unwrap() += 1;
            } else {
                runs.push(1);
            }
        }
        assert!(runs.len() <= 4, "seed {seed}: {} pieces", runs.len());
        assert!(runs.iter().all(|&r| r >= 10), "seed {seed}: {runs:?}");
        if runs.len() > 1 {
            moved += 1;
        }
    }
    assert!(moved > 10);
}

#[test]
fn reversal_twice_is_identity() {
    let x = window(3, 13);
    let once = apply(&Augmentation::Reversal, &x, 3, 0);
    let mut rev0: Vec<f32> = channel(&x, 0).to_vec();
    rev0.reverse();
    assert_eq!(channel(&once, 0), &rev0[..]);
    assert_eq!(apply(&Augmentation::Reversal, &once, 3, 0), x);
}

#[test]
fn compose_applies_each_step_with_its_probability() {
    let x = window(3, 14);
    let never = Compose::new(vec![
        (Augmentation::Reversal, 0.0),
        (Augmentation::Jitter { sigma: 1.0 }, 0.0),
    ])
    .unwrap();
    let mut y = x.clone();
    assert_eq!(
        never.apply(&mut y, 3, &mut SeededRng::new(1)).unwrap(),
        vec![false, false]
    );
    assert_eq!(y, x);
    let always = Compose::new(vec![(Augmentation::Reversal, 1.0)]).unwrap();
    let mut y = x.clone();
    assert_eq!(
        always.apply(&mut y, 3, &mut SeededRng::new(1)).unwrap(),
        vec![true]
    );
    assert_eq!(y, apply(&Augmentation::Reversal, &x, 3, 0));
    // SSL-Wearables tasks: each applied about half of the time, deterministically per seed.
    let ssl = Compose::ssl_wearables();
    let mut counts = [0usize; 3];
    for seed in 0..2000 {
        let mut y = x.clone();
        let flags = ssl.apply(&mut y, 3, &mut SeededRng::new(seed)).unwrap();
        let mut again = x.clone();
        assert_eq!(
            ssl.apply(&mut again, 3, &mut SeededRng::new(seed)).unwrap(),
            flags
        );
        if seed < 20 {
            assert_eq!(again, y, "same seed, same output");
        }
        for (c, f) in counts.iter_mut().zip(flags) {
            *c += usize::from(f);
        }
    }
    for c in counts {
        // Binomial(2000, 0.5): sd ~22.
        assert!((900..=1100).contains(&c), "applied {c} / 2000 times");
    }
}

#[test]
fn invalid_augmentations_are_config_errors_naming_the_field() {
    let mut x = vec![0f32; 4 * L];
    let e = Augmentation::Rotation {
        max_angle_rad: None,
    }
    .apply(&mut x, 4, &mut SeededRng::new(0))
    .unwrap_err();
    assert!(
        matches!(e, DataError::Config { ref field, .. } if field == "rotation"),
        "{e}"
    );
    let e = Augmentation::SegmentPermutation {
        segments: 40,
        min_segment_len: 10,
    }
    .validate(3, L)
    .unwrap_err();
    assert!(
        matches!(e, DataError::Config { ref field, .. } if field == "segment_permutation.min_segment_len"),
        "{e}"
    );
    let e = Augmentation::Jitter { sigma: -1.0 }
        .validate(3, L)
        .unwrap_err();
    assert!(
        matches!(e, DataError::Config { ref field, .. } if field == "jitter.sigma"),
        "{e}"
    );
    let e = Compose::new(vec![(Augmentation::Reversal, 1.5)]).unwrap_err();
    assert!(
        matches!(e, DataError::Config { ref field, .. } if field == "steps[0].probability"),
        "{e}"
    );
    let mut odd = vec![0f32; 7];
    assert!(Augmentation::Reversal
        .apply(&mut odd, 3, &mut SeededRng::new(0))
        .is_err());
}

#[test]
fn natural_cubic_spline_matches_hand_computed_values_and_reproduces_lines() {
    // Through (0,0), (1,1), (2,0): the interior second derivative is -3, so s(0.5) = 0.6875.
    let s = natural_cubic_spline(
        &[0.0, 1.0, 2.0],
        &[0.0, 1.0, 0.0],
        &[0.0, 0.5, 1.0, 1.5, 2.0],
    )
    .unwrap();
    Tolerance::F64.assert_close(&s, &[0.0, 0.6875, 1.0, 0.6875, 0.0]);
    // A line is reproduced exactly (natural end conditions hold for it).
    let xs = [0.0, 0.7, 2.0, 3.1, 5.0];
    let ys: Vec<f64> = xs.iter().map(|x| 2.0 * x - 1.0).collect();
    let at: Vec<f64> = (0..50).map(|i| i as f64 * 0.1).collect();
    let want: Vec<f64> = at.iter().map(|x| 2.0 * x - 1.0).collect();
    Tolerance::new(1e-12, 1e-12).assert_close(&natural_cubic_spline(&xs, &ys, &at).unwrap(), &want);
    assert!(natural_cubic_spline(&[0.0, 0.0], &[1.0, 2.0], &[0.5]).is_err());
}
