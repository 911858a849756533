//! Downstream training on a small synthetic labelled set (three activities that differ in
//! frequency, eight subjects with their own amplitude and wrist orientation): fine-tuning, the
//! linear probe, kNN and the random forest beat chance on held-out subjects; early stopping on
//! the validation loss restores the best-validation weights; pretrained encoders load from their
//! checkpoint; bad
//! configs are errors naming the field; a class missing from a training fold gets weight 0.

use anyhow::Result;
use candle_core::{DType, Device, Tensor, Var};
use candle_nn::VarMap;
use flowfm::downstream::{
    finetune_fold, finetune_fold_with_model, train_with_early_stopping, DownstreamConfig,
    EncoderSource, FoldSplit, Mode, StoppingRule, Validation,
};
use flowfm::downstream::{run_protocol, DatasetInfo, Protocol, ProtocolOptions};
use flowfm_core::init::seeded_var_builder;
use flowfm_core::{SeededRng, Tolerance};
use flowfm_data::window::WindowSet;
use flowfm_models::{EncoderConfig, HarNet};
use std::sync::Arc;

const RATE_HZ: f64 = 30.0;
const LEN: usize = 150;

/// `per_class` windows of each of three activities (0.4, 1.5 and 4 Hz oscillations) for each of
/// `subjects` subjects; each subject has its own amplitude and gravity direction.
fn synthetic(subjects: usize, per_class: usize, seed: u64) -> WindowSet {
    let mut rng = SeededRng::new(seed);
    let mut ws = WindowSet::empty(
        "synthetic",
        RATE_HZ,
        vec!["x".into(), "y".into(), "z".into()],
        LEN,
        vec!["sit".into(), "walk".into(), "run".into()],
    );
    for s in 0..subjects {
        let amp = rng.uniform_range(0.3, 0.7);
        let g: Vec<f64> = (0..3).map(|_| rng.normal()).collect();
        let gn = g.iter().map(|v| v * v).sum::<f64>().sqrt();
        for class in 0..3 {
            let f = [0.4, 1.5, 4.0][class];
            for _ in 0..per_class {
                let phase = rng.uniform_range(0.0, std::f64::consts::TAU);
                for (c, gc) in g.iter().enumerate() {
                    for i in 0..LEN {
                        let t = i as f64 / RATE_HZ;
                        let v = amp * (2.0 * std::f64::consts::PI * f * t + phase + c as f64).sin()
                            + gc / gn
                            + 0.1 * rng.normal();
                        ws.x.push(v as f32);
                    }
                }
                ws.y.push(class as i64);
                ws.subject.push(s as i64 + 1);
                ws.start_time_s.push(0.0);
            }
        }
    }
    ws
}

fn tiny_encoder() -> EncoderConfig {
    EncoderConfig::harnet5s().with_width(0.0625)
}

fn opts(ws: &WindowSet, method: &str) -> ProtocolOptions {
    ProtocolOptions::new(DatasetInfo::of_window_set(ws), method)
}

fn fast(mode: Mode) -> DownstreamConfig {
    DownstreamConfig {
        mode,
        protocol: Protocol::KFold { k: 4 },
        max_epochs: 8,
        // No step floor and about one validation per epoch: these sets are tiny.
        min_steps: 0,
        eval_every: 6,
        patience: 3,
        batch_size: 16,
        lr: 3e-3,
        val_fraction: 0.2,
        forest_trees: 20,
        seed: 11,
        ..DownstreamConfig::default()
    }
}

#[test]
fn fine_tuning_a_scratch_encoder_beats_chance_on_held_out_subjects() -> Result<()> {
    let ws = synthetic(8, 8, 1);
    let cfg = DownstreamConfig {
        augment: true,
        ..fast(Mode::FineTune)
    };
    let r = run_protocol(
        Arc::new(ws.clone()),
        &EncoderSource::Scratch(tiny_encoder()),
        &cfg,
        &opts(&ws, "scratch (fine-tune)"),
    )?;
    assert_eq!(r.folds.len(), 4);
    // Chance macro F1 for three balanced classes is about 1/3.
    assert!(r.mean_macro_f1() > 0.7, "macro F1 {}", r.mean_macro_f1());
    for f in &r.folds {
        let t = f
            .training
            .as_ref()
            .expect("fine-tuning records its training");
        assert!(t.steps_run >= 1 && t.best_step >= 1 && t.best_step <= t.steps_run);
        assert!(t.steps_run <= t.max_steps);
        assert!(f.val_windows > 0 && !f.val_subjects.is_empty());
    }
    Ok(())
}

#[test]
fn linear_probe_and_knn_on_a_fine_tuned_encoder_beat_chance() -> Result<()> {
    // A "pretraining" population of eight other subjects gives the encoder: fine-tuned there,
    // saved, and loaded back as a pretrained encoder for the frozen-encoder protocols.
    let pre = Arc::new(synthetic(8, 12, 20));
    let by_subject = |keep: &dyn Fn(i64) -> bool| -> Vec<usize> {
        (0..pre.y.len()).filter(|&i| keep(pre.subject[i])).collect()
    };
    let split = FoldSplit {
        train: by_subject(&|s| s <= 6),
        val: by_subject(&|s| s == 7),
        test: by_subject(&|s| s == 8),
    };
    let (_, model) = finetune_fold_with_model(
        &pre,
        &split,
        &EncoderSource::Scratch(tiny_encoder()),
        3,
        &DownstreamConfig {
            max_epochs: 15,
            patience: 15,
            ..fast(Mode::FineTune)
        },
        &SeededRng::new(3),
        &Device::Cpu,
    )?;
    let dir = tempfile::tempdir()?;
    model.save(dir.path())?;
    let encoder = EncoderSource::Pretrained(dir.path().join("encoder.safetensors"));

    let ws = synthetic(8, 8, 2);
    for mode in [Mode::LinearProbe, Mode::Knn] {
        let cfg = DownstreamConfig {
            max_epochs: 30,
            patience: 10,
            ..fast(mode)
        };
        let r = run_protocol(
            Arc::new(ws.clone()),
            &encoder,
            &cfg,
            &opts(&ws, mode.name()),
        )?;
        assert!(
            r.mean_macro_f1() > 0.7,
            "{}: macro F1 {}",
            mode.name(),
            r.mean_macro_f1()
        );
        assert_eq!(r.folds[0].training.is_some(), mode == Mode::LinearProbe);
        assert!(r.encoder.starts_with("pretrained:"));
    }
    Ok(())
}

#[test]
fn random_forest_separates_the_synthetic_activities() -> Result<()> {
    let ws = synthetic(8, 8, 3);
    let r = run_protocol(
        Arc::new(ws.clone()),
        &EncoderSource::None,
        &fast(Mode::RandomForest),
        &opts(&ws, "Random forest"),
    )?;
    assert!(r.mean_macro_f1() > 0.9, "macro F1 {}", r.mean_macro_f1());
    // The forest tunes nothing: validation subjects join the training side.
    for f in &r.folds {
        assert!(f.val_subjects.is_empty());
        assert_eq!(f.train_subjects.len() + f.test_subjects.len(), 8);
    }
    Ok(())
}

/// Runs the early-stopping loop on scripted validation losses; the "weight" records the last
/// step taken before it was snapshotted. Returns the outcome and the restored weight.
fn scripted(
    rule: StoppingRule,
    losses: &[f64],
) -> Result<(flowfm::downstream::TrainOutcome, usize)> {
    let w = Var::from_tensor(&Tensor::new(&[-1f32], &Device::Cpu)?)?;
    let calls = std::cell::Cell::new(0usize);
    let out = train_with_early_stopping(
        rule,
        std::slice::from_ref(&w),
        |first, n| {
            w.set(&Tensor::new(&[(first + n) as f32], &Device::Cpu)?)?;
            Ok(1.0)
        },
        || {
            let i = calls.get();
            calls.set(i + 1);
            Ok(Validation {
                loss: losses[i],
                macro_f1: 1.0 - losses[i],
            })
        },
    )?;
    // Step counts are small integers, exact in f32.
    let restored = w.as_tensor().to_vec1::<f32>()?[0].round() as usize;
    Ok((out, restored))
}

#[test]
fn early_stopping_on_the_validation_loss_restores_the_best_weights() -> Result<()> {
    // Validation every 3 steps: losses 1.0, 0.8 (best, step 6), then 0.9, 0.8 (a tie is no
    // improvement), 0.85, 0.81, 0.95: five validations without a lower loss stop training
    // after step 21, and the 0.5 of step 24 is never reached.
    let losses = [1.0, 0.8, 0.9, 0.8, 0.85, 0.81, 0.95, 0.5, 0.4];
    let rule = StoppingRule {
        max_steps: 100,
        eval_every: 3,
        patience: 5,
    };
    let (out, restored) = scripted(rule, &losses)?;
    assert_eq!(out.best_step, 6);
    assert_eq!(out.steps_run, 21);
    assert_eq!(out.history.len(), 7);
    assert!(out.stopped_early);
    assert!(Tolerance::F64.close(out.best_val_loss, 0.8));
    assert!(Tolerance::F64.close(out.best_val_macro_f1, 0.2));
    assert_eq!(restored, 6, "the weights of step 6 are restored");
    let steps: Vec<usize> = out.history.iter().map(|h| h.step).collect();
    assert_eq!(steps, vec![3, 6, 9, 12, 15, 18, 21]);

    // Patience 6 waits one validation more and finds the 0.5 of step 24.
    let (out, restored) = scripted(
        StoppingRule {
            max_steps: 27,
            patience: 6,
            ..rule
        },
        &losses,
    )?;
    assert_eq!(
        (out.best_step, restored),
        (27, 27),
        "0.4 at step 27 is lower still"
    );
    assert!(
        !out.stopped_early,
        "the scripted losses end with the budget"
    );

    // The budget caps training: validations at 4, 8 and at the last step, 10.
    let (out, restored) = scripted(
        StoppingRule {
            max_steps: 10,
            eval_every: 4,
            patience: 5,
        },
        &[3.0, 2.0, 2.5],
    )?;
    let steps: Vec<usize> = out.history.iter().map(|h| h.step).collect();
    assert_eq!(steps, vec![4, 8, 10]);
    assert_eq!((out.steps_run, out.best_step, restored), (10, 8, 8));
    assert!(!out.stopped_early);

    // A NaN validation loss is never the best once a number was seen.
    let (out, _) = scripted(
        StoppingRule {
            max_steps: 6,
            eval_every: 2,
            patience: 5,
        },
        &[f64::NAN, 1.0, f64::NAN],
    )?;
    assert_eq!(out.best_step, 4);
    assert!(scripted(
        StoppingRule {
            max_steps: 6,
            eval_every: 0,
            patience: 5
        },
        &[1.0]
    )
    .is_err());
    Ok(())
}

#[test]
fn the_step_budget_has_a_floor_for_small_datasets() {
    let cfg = DownstreamConfig {
        max_epochs: 20,
        min_steps: 600,
        ..DownstreamConfig::default()
    };
    assert_eq!(
        cfg.step_budget(3),
        600,
        "20 epochs of 3 batches is below the floor"
    );
    assert_eq!(
        cfg.step_budget(100),
        2000,
        "20 epochs of 100 batches is above it"
    );
    let no_floor = DownstreamConfig {
        min_steps: 0,
        ..cfg
    };
    assert_eq!(no_floor.step_budget(3), 60);
    let d = DownstreamConfig::default();
    assert!(
        d.step_budget(1) >= 500,
        "the default recipe trains small data"
    );
    assert_eq!(d.patience, 5);
    assert!(Tolerance::F64.close(d.val_fraction, 0.125));
}

#[test]
fn test_predictions_come_from_the_best_validation() -> Result<()> {
    // Training is deterministic, so a run whose budget ends at the best validation holds
    // exactly the weights the full run restored: both must predict the test windows
    // identically.
    let ws = Arc::new(synthetic(6, 6, 4));
    let split = FoldSplit {
        train: (0..ws.y.len()).filter(|&i| ws.subject[i] <= 4).collect(),
        val: (0..ws.y.len()).filter(|&i| ws.subject[i] == 5).collect(),
        test: (0..ws.y.len()).filter(|&i| ws.subject[i] == 6).collect(),
    };
    // 72 training windows in batches of 16: 4 batches per epoch, 24 steps, 6 validations.
    let cfg = DownstreamConfig {
        max_epochs: 6,
        eval_every: 4,
        patience: 6,
        lr: 1e-2,
        ..fast(Mode::FineTune)
    };
    let rng = SeededRng::new(21);
    let src = EncoderSource::Scratch(tiny_encoder());
    let full = finetune_fold(&ws, &split, &src, 3, &cfg, &rng, &Device::Cpu)?;
    let t = full.training.as_ref().expect("training record");
    assert_eq!((t.steps_run, t.history.len()), (24, 6));
    let best = t
        .history
        .iter()
        .map(|e| e.val_loss)
        .fold(f64::INFINITY, f64::min);
    assert!(Tolerance::F64.close(t.best_val_loss, best));
    let cut = DownstreamConfig {
        max_epochs: 1,
        min_steps: t.best_step,
        ..cfg.clone()
    };
    let short = finetune_fold(&ws, &split, &src, 3, &cut, &rng, &Device::Cpu)?;
    assert_eq!(
        short.training.as_ref().map(|s| (s.best_step, s.steps_run)),
        Some((t.best_step, t.best_step))
    );
    assert_eq!(short.predicted, full.predicted);
    Ok(())
}

#[test]
fn a_pretrained_encoder_is_loaded_from_its_checkpoint() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("encoder.safetensors");
    let cfg = tiny_encoder();
    let vars = VarMap::new();
    let original = HarNet::new(
        cfg.clone(),
        seeded_var_builder(&vars, 777, DType::F32, &Device::Cpu),
    )?;
    flowfm_models::save_checkpoint(&vars, &cfg, &path)?;

    let src = EncoderSource::Pretrained(path.clone());
    assert_eq!(src.config()?, Some(cfg.clone()));
    // Built with another init seed, the loaded weights must replace the initial ones.
    let (_, loaded) = src
        .build(&SeededRng::new(1), &Device::Cpu)?
        .expect("an encoder");
    let x = SeededRng::new(5).normal_tensor((4, 3, LEN), DType::F32, &Device::Cpu)?;
    Tolerance::F32
        .assert_tensors_close(&loaded.encode_detached(&x)?, &original.encode_detached(&x)?);
    let (_, fresh) = EncoderSource::Scratch(cfg)
        .build(&SeededRng::new(1), &Device::Cpu)?
        .expect("an encoder");
    assert!(Tolerance::F32
        .check_tensors(&fresh.encode_detached(&x)?, &original.encode_detached(&x)?)
        .is_err());

    let missing = EncoderSource::Pretrained(dir.path().join("nope.safetensors"));
    let err = format!(
        "{:#}",
        missing
            .build(&SeededRng::new(1), &Device::Cpu)
            .err()
            .expect("a missing checkpoint is an error")
    );
    assert!(err.contains("nope.safetensors"), "{err}");
    Ok(())
}

#[test]
fn bad_configs_are_errors_naming_the_field() {
    let ws = synthetic(4, 2, 5);
    let cases: Vec<(&str, DownstreamConfig)> = vec![
        (
            "batch_size",
            DownstreamConfig {
                batch_size: 0,
                ..Default::default()
            },
        ),
        (
            "batch_size",
            DownstreamConfig {
                batch_size: 1,
                ..Default::default()
            },
        ),
        (
            "patience",
            DownstreamConfig {
                patience: 0,
                ..Default::default()
            },
        ),
        (
            "max_epochs",
            DownstreamConfig {
                max_epochs: 0,
                ..Default::default()
            },
        ),
        (
            "eval_every",
            DownstreamConfig {
                eval_every: 0,
                ..Default::default()
            },
        ),
        (
            "bn_recalibration_windows",
            DownstreamConfig {
                bn_recalibration_windows: 0,
                ..Default::default()
            },
        ),
        (
            "lr",
            DownstreamConfig {
                lr: -1.0,
                ..Default::default()
            },
        ),
        (
            "lr",
            DownstreamConfig {
                lr: f64::NAN,
                ..Default::default()
            },
        ),
        (
            "weight_decay",
            DownstreamConfig {
                weight_decay: -0.1,
                ..Default::default()
            },
        ),
        (
            "val_fraction",
            DownstreamConfig {
                val_fraction: 1.0,
                ..Default::default()
            },
        ),
        (
            "grad_clip",
            DownstreamConfig {
                grad_clip: Some(0.0),
                ..Default::default()
            },
        ),
        (
            "protocol.k",
            DownstreamConfig {
                protocol: Protocol::KFold { k: 1 },
                ..Default::default()
            },
        ),
        (
            "knn_k",
            DownstreamConfig {
                knn_k: 0,
                ..Default::default()
            },
        ),
        (
            "forest_trees",
            DownstreamConfig {
                forest_trees: 0,
                ..Default::default()
            },
        ),
    ];
    for (field, cfg) in cases {
        let err = cfg.validate().expect_err(field).to_string();
        assert!(
            err.contains(&format!("`downstream.{field}`")),
            "{field}: {err}"
        );
        // run_protocol validates before doing anything.
        let err = run_protocol(
            Arc::new(ws.clone()),
            &EncoderSource::Scratch(tiny_encoder()),
            &cfg,
            &opts(&ws, "x"),
        )
        .expect_err(field);
        assert!(format!("{err:#}").contains(field), "{field}: {err:#}");
    }
    assert!(DownstreamConfig::default().validate().is_ok());
    // More folds than subjects is an error naming `k`.
    let err = run_protocol(
        Arc::new(ws.clone()),
        &EncoderSource::None,
        &DownstreamConfig {
            protocol: Protocol::KFold { k: 9 },
            ..fast(Mode::RandomForest)
        },
        &opts(&ws, "x"),
    )
    .expect_err("9 folds of 4 subjects");
    assert!(format!("{err:#}").contains("`k`"), "{err:#}");
}

#[test]
fn toml_sections_deserialise_and_unknown_keys_are_rejected() {
    let cfg: DownstreamConfig = toml::from_str(
        "mode = \"linear_probe\"\nprotocol = { kind = \"loso\" }\nmax_epochs = 3\nseed = 4\n",
    )
    .expect("a valid section");
    assert_eq!(cfg.mode, Mode::LinearProbe);
    assert_eq!(cfg.protocol, Protocol::Loso);
    assert_eq!((cfg.max_epochs, cfg.seed, cfg.patience), (3, 4, 5));
    let cfg: DownstreamConfig =
        toml::from_str("protocol = { kind = \"k_fold\", k = 3 }\n").expect("k-fold");
    assert_eq!(cfg.protocol, Protocol::KFold { k: 3 });
    let err = toml::from_str::<DownstreamConfig>("epochs = 3\n").expect_err("unknown key");
    assert!(err.to_string().contains("epochs"), "{err}");
}

#[test]
fn a_class_missing_from_a_training_fold_gets_weight_zero() -> Result<()> {
    // Class 2 ("run") only occurs for subject 1: the LOSO fold holding out subject 1 trains
    // without it.
    let mut ws = synthetic(4, 4, 6);
    for i in 0..ws.y.len() {
        if ws.y[i] == 2 && ws.subject[i] != 1 {
            ws.y[i] = 1;
        }
    }
    for mode in [Mode::LinearProbe, Mode::FineTune] {
        let cfg = DownstreamConfig {
            protocol: Protocol::Loso,
            max_epochs: 2,
            val_fraction: 0.3,
            ..fast(mode)
        };
        let r = run_protocol(
            Arc::new(ws.clone()),
            &EncoderSource::Scratch(tiny_encoder()),
            &cfg,
            &opts(&ws, mode.name()),
        )?;
        assert_eq!(r.folds.len(), 4);
        let held_out_1 = r
            .folds
            .iter()
            .find(|f| f.test_subjects == [1])
            .expect("a fold testing subject 1");
        assert_eq!(held_out_1.class_weights.len(), 3);
        assert!(Tolerance::F64.close(held_out_1.class_weights[2], 0.0));
        assert!(held_out_1.class_weights[..2].iter().all(|&w| w > 0.0));
        assert_eq!(held_out_1.report.per_class[2].support, 4);
    }
    Ok(())
}
