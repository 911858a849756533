//! The SSL-Wearables recipe of ssl_multitask pretraining: movement-weighted sampling against its
//! closed-form probabilities, window movement in closed form, the rotation keeping every time
//! step's norm, the `[multitask]` config fields, and the pretext tasks learned well above chance
//! on synthetic moving windows, with their held-out accuracy logged and read back.

use flowfm::train::config::{ExperimentFile, WindowSampling};
use flowfm::train::history::RunHistory;
use flowfm::train::pretrain::{pretrain, PretrainOptions};
use flowfm::train::ssl::{augmentation, window_movement, MovementSampler};
use flowfm_core::SeededRng;
use flowfm_data::window::WindowSet;
use std::f64::consts::TAU;
use std::sync::Arc;

const SSL: &str = r#"
[run]
name = "t"
method = "ssl_multitask"
seed = 1

[encoder]
width = 0.0625

[train]
steps = 10
"#;

fn parse(text: &str) -> Result<flowfm::train::Experiment, String> {
    ExperimentFile::parse(text, "x.toml")
        .and_then(|f| f.validate())
        .map_err(|e| e.to_string())
}

#[test]
fn window_movement_is_the_pooled_standard_deviation() {
    // Channel 0: a sine of amplitude 2 over whole periods (variance 2); channel 1: constant
    // (variance 0); channel 2: +-1 alternating (variance 1). Pooled: sqrt((2 + 0 + 1) / 3) = 1.
    let len = 120;
    let mut w = Vec::new();
    w.extend((0..len).map(|i| (2.0 * (TAU * 4.0 * i as f64 / len as f64).sin()) as f32));
    w.extend(std::iter::repeat_n(9.81f32, len));
    w.extend((0..len).map(|i| if i % 2 == 0 { 1.0f32 } else { -1.0 }));
    assert!((window_movement(&w, 3) - 1.0).abs() < 1e-6);
    assert!(window_movement(&[1.0; 30], 3).abs() < 1e-15);
    assert!(
        window_movement(&[1.0; 7], 3).abs() < 1e-15,
        "a ragged window has no movement"
    );
}

#[test]
fn the_movement_sampler_matches_its_closed_form_probabilities() {
    // 10 still windows (weight 0.01) and 10 moving ones (weights 1..=10).
    let weights: Vec<f64> = (0..20)
        .map(|i| if i < 10 { 0.01 } else { (i - 9) as f64 })
        .collect();
    let indices: Vec<usize> = (100..120).collect();
    let s = MovementSampler::new(indices.clone(), weights.clone()).unwrap();
    let total: f64 = weights.iter().sum();
    let p = s.probabilities();
    for (pi, w) in p.iter().zip(&weights) {
        assert!((pi - w / total).abs() < 1e-12);
    }
    // Single draws: each window's frequency within 5 standard errors of w_i / sum w.
    let n = 40_000;
    let mut counts = [0usize; 20];
    let mut rng = SeededRng::new(7);
    for _ in 0..n {
        let d = s.draw(&mut rng, 1);
        counts[d[0] - 100] += 1;
    }
    for (i, (&c, &pi)) in counts.iter().zip(&p).enumerate() {
        let f = c as f64 / n as f64;
        let se = (pi * (1.0 - pi) / n as f64).sqrt();
        assert!(
            (f - pi).abs() <= 5.0 * se + 1e-4,
            "window {i}: frequency {f}, closed form {pi}"
        );
    }
    let still: usize = counts[..10].iter().sum();
    assert!(
        (still as f64 / n as f64) < 0.005,
        "still windows drawn {still} times of {n}"
    );
    // Batches of 8: distinct, sorted, in the pool; the still share of a batch is at most what
    // the last of 8 successive draws allows: 8 * S / (S + M - (w_10 + ... + w_4)), M = 55.
    let mut still_in_batches = 0usize;
    let batches = 2000;
    for _ in 0..batches {
        let d = s.draw(&mut rng, 8);
        assert_eq!(d.len(), 8);
        assert!(d.windows(2).all(|w| w[0] < w[1]));
        assert!(d.iter().all(|i| indices.contains(i)));
        still_in_batches += d.iter().filter(|&&i| i < 110).count();
    }
    let bound = 8.0 * 0.1 / (0.1 + 55.0 - (10 + 9 + 8 + 7 + 6 + 5 + 4) as f64);
    let mean_still = still_in_batches as f64 / batches as f64;
    assert!(
        mean_still < bound,
        "{mean_still} still windows per batch, bound {bound}"
    );
    // All windows when asking for more than the pool.
    assert_eq!(s.draw(&mut rng, 50), indices);
    // Bad weights are refused.
    assert!(MovementSampler::new(vec![1, 2], vec![1.0]).is_err());
    assert!(MovementSampler::new(vec![1], vec![f64::NAN]).is_err());
    assert!(MovementSampler::new(vec![], vec![]).is_err());
    // Still windows only: drawn uniformly, not refused.
    let flat = MovementSampler::new(vec![0, 1], vec![0.0, 0.0]).unwrap();
    assert!((flat.probabilities()[0] - 0.5).abs() < 1e-12);
}

#[test]
fn the_recipe_rotation_and_axis_swap_keep_every_time_steps_norm() {
    let exp = parse(SSL).unwrap();
    let aug = augmentation(&exp).expect("rotation and axis swap are on by default");
    assert_eq!(aug.steps.len(), 2);
    let mut rng = SeededRng::new(3);
    let len = 50;
    let x: Vec<f32> = rng
        .normal_vec(3 * len)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    for _ in 0..20 {
        let mut y = x.clone();
        aug.apply(&mut y, 3, &mut rng).unwrap();
        let norm = |w: &[f32], i: usize| {
            (0..3)
                .map(|c| f64::from(w[c * len + i]).powi(2))
                .sum::<f64>()
                .sqrt()
        };
        for i in 0..len {
            assert!(
                (norm(&x, i) - norm(&y, i)).abs() < 1e-5 * (1.0 + norm(&x, i)),
                "time step {i}"
            );
        }
        assert!(x.iter().zip(&y).any(|(a, b)| (a - b).abs() > 1e-3));
    }
    let off = parse(&format!(
        "{SSL}\n[multitask]\nrotation = false\naxis_swap = false\n"
    ))
    .unwrap();
    assert!(augmentation(&off).is_none());
}

#[test]
fn multitask_fields_parse_with_defaults_bounds_and_errors_naming_the_field() {
    let e = parse(SSL).unwrap();
    assert_eq!(e.multitask.sampling, WindowSampling::Movement);
    assert!(e.multitask.rotation && e.multitask.axis_swap && e.multitask.tasks.per_axis_warp);
    assert_eq!(e.multitask.heldout_windows, 512);
    let e = parse(&format!(
        "{SSL}\n[multitask]\nsampling = \"uniform\"\nper_axis_warp = false\nheldout_windows = 0\n"
    ))
    .unwrap();
    assert_eq!(e.multitask.sampling, WindowSampling::Uniform);
    assert!(!e.multitask.tasks.per_axis_warp);
    assert_eq!(e.multitask.heldout_windows, 0);
    assert!(e.file.to_toml().contains("[multitask]"));
    let cases = [
        ("sampling = \"std\"", "multitask.sampling"),
        ("heldout_windows = 100001", "multitask.heldout_windows"),
        ("heldout_windows = -1", "heldout_windows"),
        ("rotation = 3", "rotation"),
        ("rotations = true", "rotations"),
    ];
    for (line, field) in cases {
        let err = parse(&format!("{SSL}\n[multitask]\n{line}\n")).unwrap_err();
        assert!(err.contains(field), "`{line}`: expected {field} in: {err}");
    }
    let flow = SSL.replace("ssl_multitask", "flowfm");
    let err = parse(&format!("{flow}\n[multitask]\nrotation = false\n")).unwrap_err();
    assert!(err.contains("`multitask`"), "{err}");
    // Other methods' configs are written back without the section (fingerprints unchanged).
    assert!(!parse(&flow).unwrap().file.to_toml().contains("multitask"));
}

/// Moving windows whose pretext transforms leave traces: a train of impulses, each ringing down
/// (sharp onset, exponential decay: reversal shows as rising bursts that stop dead), on a slow
/// drift (a permutation cut shows as a jump), the same on the three axes with their own gains
/// (a per-axis warp moves the bursts of one axis against the others).
fn moving_pool(n: usize) -> WindowSet {
    let mut rng = SeededRng::new(11);
    let mut ws = WindowSet::empty(
        "moving",
        30.0,
        vec!["x".into(), "y".into(), "z".into()],
        300,
        vec![],
    );
    for i in 0..n {
        let period = rng.uniform_range(0.8, 1.2);
        let onset = rng.uniform_range(0.0, period);
        let f0 = rng.uniform_range(2.5, 3.5);
        let gains: Vec<f64> = (0..3).map(|_| rng.uniform_range(0.3, 1.0)).collect();
        let drift: Vec<f64> = (0..3).map(|_| rng.uniform_range(0.0, TAU)).collect();
        for c in 0..3 {
            for s in 0..300 {
                let t = s as f64 / 30.0;
                // Time since the last impulse (impulses at onset + k * period, k >= -1).
                let since = (t - onset + period).rem_euclid(period);
                let ring = (-since / 0.15).exp() * (TAU * f0 * since).sin();
                let slow = 0.5 * (TAU * t / 12.0 + drift[c]).sin();
                ws.x.push((gains[c] * ring + slow + 0.02 * rng.normal()) as f32);
            }
        }
        ws.y.push(-1);
        ws.subject.push((i % 4) as i64);
        ws.start_time_s.push(0.0);
    }
    ws
}

/// 800 steps, not fewer: the arrow of time is learned abruptly, and at 400 steps it had been
/// learned in some seeds only (held-out accuracy 0.75, 0.57, 0.76 and 0.99 for seeds 2-5 in
/// session 9), so whether this test passed hung on the last bits of the convolution's
/// arithmetic (it failed twice after changes that only reordered additions). At 800 steps every
/// task scored at least 0.85 in all four seeds.
#[test]
fn pretext_tasks_are_learned_well_above_chance_on_moving_windows() {
    let n = 1200;
    let pool = Arc::new(moving_pool(n));
    let text = r#"
[run]
name = "learn"
method = "ssl_multitask"
seed = 2

[encoder]
width = 0.0625

[multitask]
heldout_windows = 100
# The encoder must also learn rotation invariance with the augmentation, which takes far longer
# than this test; the tasks themselves are what is checked here.
rotation = false
axis_swap = false

[train]
batch_size = 32
steps = 800
lr = 3e-3
min_lr = 3e-3
warmup_steps = 10
weight_decay = 0.0
checkpoint_every = 400
log_every = 10
"#;
    let exp = parse(text).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = pretrain(
        &exp,
        pool,
        (0..n).collect(),
        &PretrainOptions::new(dir.path()),
    )
    .unwrap();
    let steps: Vec<u64> = out.pretext.iter().map(|p| p.0).collect();
    assert_eq!(
        steps,
        vec![400, 800],
        "scored at the cadence and at the end"
    );
    let last = out.pretext.last().unwrap().1;
    for (name, acc) in ["arrow of time", "permutation", "time warp"]
        .iter()
        .zip(last)
    {
        assert!(
            acc >= 0.8,
            "{name}: held-out accuracy {acc:.3} (all: {last:?})"
        );
    }
    let h = RunHistory::read(dir.path()).unwrap();
    assert_eq!(h.pretext, out.pretext);
    assert_eq!(h.pretext_accuracy(), Some(last));
    assert_eq!(h.pretext_series(1).unwrap().len(), 2);
    assert!(h.pretext_series(3).is_none());
}

#[test]
fn a_resumed_movement_sampled_run_matches_an_uninterrupted_one() {
    let pool = Arc::new(moving_pool(120));
    let text = format!(
        "{}\n[multitask]\nheldout_windows = 12\n",
        SSL.replace(
            "steps = 10",
            "steps = 6\nbatch_size = 8\ncheckpoint_every = 3\nlog_every = 1"
        )
    );
    let exp = parse(&text).unwrap();
    let full = tempfile::tempdir().unwrap();
    pretrain(
        &exp,
        pool.clone(),
        (0..120).collect(),
        &PretrainOptions::new(full.path()),
    )
    .unwrap();
    let split = tempfile::tempdir().unwrap();
    let mut opts = PretrainOptions::new(split.path());
    opts.stop_after = Some(3);
    pretrain(&exp, pool.clone(), (0..120).collect(), &opts).unwrap();
    opts.stop_after = None;
    opts.resume = true;
    let second = pretrain(&exp, pool, (0..120).collect(), &opts).unwrap();
    assert_eq!(second.losses.len(), 3);
    let a = RunHistory::read(full.path()).unwrap();
    let b = RunHistory::read(split.path()).unwrap();
    assert_eq!(
        a.losses, b.losses,
        "the same batches and transforms after resuming"
    );
    assert_eq!(a.pretext, b.pretext);
    assert_eq!(
        a.pretext.iter().map(|p| p.0).collect::<Vec<_>>(),
        vec![3, 6]
    );
    let bytes = |d: &std::path::Path| std::fs::read(d.join("encoder.safetensors")).unwrap();
    assert_eq!(bytes(full.path()), bytes(split.path()));
}
