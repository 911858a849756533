//! Pretraining loops on a small synthetic pool: each method lowers its loss, an interrupted run
//! resumed from its checkpoint ends with the same weights as an uninterrupted one, and a NaN loss
//! stops training with a message naming the step while keeping the last good checkpoint.

use flowfm::train::config::{Experiment, ExperimentFile};
use flowfm::train::pretrain::{pretrain, PretrainOptions, ValidationProbe};
use flowfm::train::run::load_checkpoint;
use flowfm_core::SeededRng;
use flowfm_data::window::WindowSet;
use std::sync::Arc;

/// Windows of three synthetic "activities": sinusoids of different frequencies plus gravity.
fn synthetic_pool(n: usize) -> WindowSet {
    let mut rng = SeededRng::new(99);
    let mut ws = WindowSet::empty(
        "synthetic",
        30.0,
        vec!["x".into(), "y".into(), "z".into()],
        300,
        vec![],
    );
    for i in 0..n {
        let f = [0.5, 1.5, 3.0][i % 3];
        let phase = rng.uniform_range(0.0, std::f64::consts::TAU);
        for c in 0..3 {
            for s in 0..300 {
                let t = s as f64 / 30.0;
                let v = (2.0 * std::f64::consts::PI * f * t + phase + c as f64).sin() * 0.5
                    + if c == 2 { 1.0 } else { 0.0 };
                ws.x.push((v + 0.05 * rng.normal()) as f32);
            }
        }
        ws.y.push(-1);
        ws.subject.push((i % 4) as i64);
        ws.start_time_s.push(0.0);
    }
    ws
}

fn experiment(method: &str, steps: u64, extra_train: &str) -> Experiment {
    let text = format!(
        r#"
[run]
name = "test"
method = "{method}"
seed = 5

[encoder]
width = 0.0625

[generator]
preset = "small"
base_channels = 8
channel_mults = [1, 2]

[diffusion]
num_steps = 100

[train]
batch_size = 8
steps = {steps}
lr = 0.003
warmup_steps = 2
grad_clip = 5.0
checkpoint_every = 2
log_every = 1
{extra_train}
"#
    );
    ExperimentFile::parse(&text, "test")
        .unwrap()
        .validate()
        .unwrap()
}

fn mean(xs: &[f64]) -> f64 {
    xs.iter().sum::<f64>() / xs.len() as f64
}

#[test]
fn every_method_lowers_its_loss() {
    let pool = Arc::new(synthetic_pool(48));
    for method in ["flowfm", "diffusion", "ssl_multitask"] {
        let dir = tempfile::tempdir().unwrap();
        let exp = experiment(method, 40, "");
        let out = pretrain(
            &exp,
            pool.clone(),
            (0..48).collect(),
            &PretrainOptions::new(dir.path()),
        )
        .unwrap();
        assert_eq!(out.steps, 40);
        let first = mean(&out.losses[..8]);
        let last = mean(&out.losses[32..]);
        assert!(
            last < first,
            "{method}: loss did not go down: first 8 steps {first:.4}, last 8 {last:.4}"
        );
        assert!(dir.path().join("encoder.safetensors").exists());
        let metrics = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
        assert_eq!(
            metrics.lines().count(),
            40,
            "{method}: one metrics line per step"
        );
    }
}

#[test]
fn resumed_run_matches_an_uninterrupted_run_exactly() {
    let pool = Arc::new(synthetic_pool(32));
    let exp = experiment("flowfm", 8, "");
    let full_dir = tempfile::tempdir().unwrap();
    pretrain(
        &exp,
        pool.clone(),
        (0..32).collect(),
        &PretrainOptions::new(full_dir.path()),
    )
    .unwrap();

    let split_dir = tempfile::tempdir().unwrap();
    let mut opts = PretrainOptions::new(split_dir.path());
    opts.stop_after = Some(3);
    let first = pretrain(&exp, pool.clone(), (0..32).collect(), &opts).unwrap();
    assert_eq!(first.steps, 3);
    opts.stop_after = None;
    opts.resume = true;
    let second = pretrain(&exp, pool, (0..32).collect(), &opts).unwrap();
    assert_eq!(second.steps, 8);
    assert_eq!(
        second.losses.len(),
        5,
        "the resumed session runs only the remaining steps"
    );

    let (a, _) = load_checkpoint(
        &full_dir.path().join("checkpoints/last.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let (b, meta) = load_checkpoint(
        &split_dir.path().join("checkpoints/last.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(meta.step, 8);
    assert_eq!(a.len(), b.len());
    for (name, ta) in &a {
        let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        // Exact equality is the claim: the same seed gives bit-identical training.
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "tensor `{name}` differs after resume"
        );
    }
}

#[test]
fn nan_loss_stops_training_and_keeps_the_last_good_checkpoint() {
    let pool = Arc::new(synthetic_pool(32));
    let exp = experiment("diffusion", 10, "");
    let dir = tempfile::tempdir().unwrap();
    let mut opts = PretrainOptions::new(dir.path());
    opts.inject_nan_at = Some(5);
    let err = pretrain(&exp, pool, (0..32).collect(), &opts)
        .unwrap_err()
        .to_string();
    assert!(err.contains("step 5"), "{err}");
    let (_, meta) = load_checkpoint(
        &dir.path().join("checkpoints/last.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert_eq!(
        meta.step, 4,
        "the checkpoint of step 4 (checkpoint_every = 2) is kept"
    );
}

#[test]
fn resuming_under_another_config_is_refused() {
    let pool = Arc::new(synthetic_pool(32));
    let dir = tempfile::tempdir().unwrap();
    let mut opts = PretrainOptions::new(dir.path());
    opts.stop_after = Some(2);
    pretrain(
        &experiment("flowfm", 6, ""),
        pool.clone(),
        (0..32).collect(),
        &opts,
    )
    .unwrap();
    opts.resume = true;
    opts.stop_after = None;
    let err = pretrain(
        &experiment("flowfm", 6, "weight_decay = 0.5"),
        pool,
        (0..32).collect(),
        &opts,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("refusing to resume"), "{err}");
}

#[test]
fn echo_contrast_with_encoder_augmentation_logs_its_term_and_resumes_exactly() {
    let pool = Arc::new(synthetic_pool(32));
    let text = |steps: u64| {
        format!(
            "[run]\nname = \"echo\"\nmethod = \"flowfm\"\nseed = 2\n\n[encoder]\nwidth = 0.0625\n\n\
             [generator]\npreset = \"small\"\nbase_channels = 8\nchannel_mults = [1, 2]\n\n\
             [joint]\nencoder_augment = true\necho_weight = 0.1\necho_steps = 2\necho_start_step = 2\n\n\
             [train]\nbatch_size = 8\nsteps = {steps}\nlr = 0.003\ncheckpoint_every = 2\nlog_every = 1\n"
        )
    };
    let exp = ExperimentFile::parse(&text(6), "echo")
        .unwrap()
        .validate()
        .unwrap();
    let full = tempfile::tempdir().unwrap();
    let out = pretrain(
        &exp,
        pool.clone(),
        (0..32).collect(),
        &PretrainOptions::new(full.path()),
    )
    .unwrap();
    assert!(out.losses.iter().all(|l| l.is_finite()));
    let records: Vec<serde_json::Value> =
        std::fs::read_to_string(full.path().join("metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
    let echo: Vec<Option<f64>> = records
        .iter()
        .map(|r| r["extra"]["echo_loss"].as_f64())
        .collect();
    assert!(
        echo[..2].iter().all(Option::is_none),
        "the echo term starts at step 2: {echo:?}"
    );
    assert!(
        echo[2..]
            .iter()
            .all(|e| e.is_some_and(|v| v.is_finite() && v > 0.0)),
        "{echo:?}"
    );

    let split = tempfile::tempdir().unwrap();
    let mut opts = PretrainOptions::new(split.path());
    opts.stop_after = Some(3);
    pretrain(&exp, pool.clone(), (0..32).collect(), &opts).unwrap();
    opts.stop_after = None;
    opts.resume = true;
    pretrain(&exp, pool, (0..32).collect(), &opts).unwrap();
    let (a, _) = load_checkpoint(
        &full.path().join("checkpoints/last.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    let (b, _) = load_checkpoint(
        &split.path().join("checkpoints/last.safetensors"),
        &candle_core::Device::Cpu,
    )
    .unwrap();
    assert!(
        a.keys().any(|k| k.starts_with("echo_encoder.")),
        "the EMA echo encoder is checkpointed"
    );
    for (name, ta) in &a {
        let va: Vec<f32> = ta.flatten_all().unwrap().to_vec1().unwrap();
        let vb: Vec<f32> = b[name].flatten_all().unwrap().to_vec1().unwrap();
        assert!(
            va.iter().zip(&vb).all(|(x, y)| x.to_bits() == y.to_bits()),
            "tensor `{name}` differs after resume"
        );
    }
}

#[test]
fn a_finished_run_is_reused_without_training_or_rewriting_its_models() {
    let pool = Arc::new(synthetic_pool(32));
    let exp = experiment("flowfm", 4, "");
    let dir = tempfile::tempdir().unwrap();
    let mut opts = PretrainOptions::new(dir.path());
    pretrain(&exp, pool.clone(), (0..32).collect(), &opts).unwrap();
    let enc = dir.path().join("encoder.safetensors");
    let gen = dir.path().join("generator.safetensors");
    let stamp = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let (enc_before, gen_before) = (stamp(&enc), stamp(&gen));
    let records_before = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(20));
    opts.resume = true;
    let again = pretrain(&exp, pool, (0..32).collect(), &opts).unwrap();
    assert_eq!(again.steps, 4);
    assert!(again.losses.is_empty(), "a finished run trains nothing");
    assert_eq!(stamp(&enc), enc_before, "encoder.safetensors was rewritten");
    assert_eq!(
        stamp(&gen),
        gen_before,
        "generator.safetensors was rewritten"
    );
    let records_after = std::fs::read_to_string(dir.path().join("metrics.jsonl")).unwrap();
    assert_eq!(
        records_before, records_after,
        "the history must be kept whole"
    );
}

#[test]
fn the_validation_probe_is_logged_with_training_time_at_its_cadence() {
    let pool = Arc::new(synthetic_pool(36));
    let exp = experiment("flowfm", 4, "");
    let dir = tempfile::tempdir().unwrap();
    // Labels are the three activities (i % 3); fit on the first 24 windows, score the last 12.
    let windows = |from: usize, to: usize| {
        let x = pool.x[from * 900..to * 900].to_vec();
        candle_core::Tensor::from_vec(x, (to - from, 3, 300), &candle_core::Device::Cpu).unwrap()
    };
    let probe = ValidationProbe {
        name: "synthetic".into(),
        fit_x: windows(0, 24),
        fit_y: (0..24).map(|i| i % 3).collect(),
        eval_x: windows(24, 36),
        eval_y: (24..36).map(|i| i % 3).collect(),
        num_classes: 3,
        every: 3,
        dense_every: 1,
        dense_until: 2,
    };
    let mut opts = PretrainOptions::new(dir.path());
    opts.validation = Some(Arc::new(probe));
    let out = pretrain(&exp, pool, (0..36).collect(), &opts).unwrap();
    let steps: Vec<u64> = out.validation.iter().map(|v| v.0).collect();
    // Dense cadence (every step) up to step 2, then every 3rd step, and the last step.
    assert_eq!(steps, vec![1, 2, 3, 4]);
    assert!(out.validation[0].1 > 0.0);
    assert!(
        out.validation.windows(2).all(|w| w[1].1 > w[0].1),
        "training seconds must grow between probes: {:?}",
        out.validation
    );
    for (step, _, f1) in &out.validation {
        // Three well-separated frequencies: far above chance (1/3) for a 5-NN on any sane encoder.
        assert!((0.5..=1.0).contains(f1), "step {step}: val F1 {f1}");
    }
    let logged = flowfm::train::history::RunHistory::read(dir.path()).unwrap();
    // JSON keeps these to the last digit or so (serde_json's default float parser is not
    // correctly rounded), so compare with a tolerance.
    assert_eq!(logged.validation.len(), out.validation.len());
    for (a, b) in logged.validation.iter().zip(&out.validation) {
        assert_eq!(a.0, b.0);
        flowfm_core::Tolerance::F64.assert_close(&[a.1, a.2], &[b.1, b.2]);
    }
}
