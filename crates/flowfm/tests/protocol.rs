//! Evaluation protocols: folds are subject-disjoint and cover every labelled subject, LOSO has one
//! fold per subject, unlabelled windows take no part, a seed fixes every metric, results
//! serialise to JSON and render as a Markdown row; and an end-to-end run on the real ADL/HMP
//! 5-class subset (skipped when `../shared/datasets` is absent).

use anyhow::Result;
use flowfm::downstream::{
    labelled_windows, plan_folds, run_protocol, DatasetInfo, Protocol, ProtocolOptions,
    ProtocolResult,
};
use flowfm::downstream::{DownstreamConfig, EncoderSource, Mode};
use flowfm_core::{SeededRng, Tolerance};
use flowfm_data::readers::{read_adl, restrict_classes, AdlOptions, SSL_WEARABLES_ADL_CLASSES};
use flowfm_data::window::WindowSet;
use flowfm_data::{prepare, PrepareConfig, WindowConfig};
use flowfm_models::EncoderConfig;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

const RATE_HZ: f64 = 30.0;
const LEN: usize = 150;

/// `per_class` windows of three activities (0.4, 1.5, 4 Hz) per subject, subject ids
/// `10, 20, ...`; every fourth window of each subject is unlabelled (`y = -1`).
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
        for class in 0..3 {
            let f = [0.4, 1.5, 4.0][class];
            for w in 0..per_class {
                let phase = rng.uniform_range(0.0, std::f64::consts::TAU);
                for c in 0..3 {
                    for i in 0..LEN {
                        let t = i as f64 / RATE_HZ;
                        let v = amp * (2.0 * std::f64::consts::PI * f * t + phase + c as f64).sin()
                            + if c == 2 { 1.0 } else { 0.0 }
                            + 0.1 * rng.normal();
                        ws.x.push(v as f32);
                    }
                }
                ws.y.push(if w % 4 == 3 { -1 } else { class as i64 });
                ws.subject.push(10 * (s as i64 + 1));
                ws.start_time_s.push(0.0);
            }
        }
    }
    ws
}

fn tiny_encoder() -> EncoderConfig {
    EncoderConfig::harnet5s().with_width(0.0625)
}

fn run(ws: &WindowSet, cfg: &DownstreamConfig, encoder: &EncoderSource) -> Result<ProtocolResult> {
    run_protocol(
        Arc::new(ws.clone()),
        encoder,
        cfg,
        &ProtocolOptions::new(DatasetInfo::of_window_set(ws), cfg.mode.name()),
    )
}

fn probe(protocol: Protocol, seed: u64) -> DownstreamConfig {
    DownstreamConfig {
        mode: Mode::LinearProbe,
        protocol,
        max_epochs: 10,
        // No step floor, a validation about every epoch: these sets are tiny.
        min_steps: 0,
        eval_every: 10,
        patience: 4,
        batch_size: 16,
        lr: 3e-3,
        seed,
        ..DownstreamConfig::default()
    }
}

/// The subjects of `ws` whose windows include a labelled one.
fn labelled_subjects(ws: &WindowSet) -> BTreeSet<i64> {
    labelled_windows(&ws.y)
        .into_iter()
        .map(|i| ws.subject[i])
        .collect()
}

fn assert_disjoint_cover(r: &ProtocolResult, all: &BTreeSet<i64>) {
    let mut tested = BTreeSet::new();
    for f in &r.folds {
        let train: BTreeSet<i64> = f.train_subjects.iter().copied().collect();
        let val: BTreeSet<i64> = f.val_subjects.iter().copied().collect();
        let test: BTreeSet<i64> = f.test_subjects.iter().copied().collect();
        assert!(train.is_disjoint(&test), "{}: train/test overlap", f.name);
        assert!(val.is_disjoint(&test), "{}: val/test overlap", f.name);
        assert!(train.is_disjoint(&val), "{}: train/val overlap", f.name);
        let union: BTreeSet<i64> = train.union(&val).chain(&test).copied().collect();
        assert_eq!(&union, all, "{}: a subject is missing", f.name);
        for s in &test {
            assert!(tested.insert(*s), "subject {s} is tested twice");
        }
    }
    assert_eq!(&tested, all, "every subject is tested exactly once");
}

#[test]
fn k_fold_folds_are_subject_disjoint_and_test_every_subject_once() -> Result<()> {
    let ws = synthetic(7, 4, 1);
    let r = run(
        &ws,
        &probe(Protocol::KFold { k: 3 }, 5),
        &EncoderSource::Scratch(tiny_encoder()),
    )?;
    assert_eq!(r.folds.len(), 3);
    assert_disjoint_cover(&r, &labelled_subjects(&ws));
    // Fold sizes in subjects differ by at most one (7 = 3 + 2 + 2).
    let mut sizes: Vec<usize> = r.folds.iter().map(|f| f.test_subjects.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![2, 2, 3]);
    // Window counts agree with the subjects on each side.
    let labelled = labelled_windows(&ws.y);
    for f in &r.folds {
        let count = |subjects: &[i64]| {
            labelled
                .iter()
                .filter(|&&i| subjects.contains(&ws.subject[i]))
                .count()
        };
        assert_eq!(f.test_windows, count(&f.test_subjects));
        assert_eq!(f.train_windows, count(&f.train_subjects));
        assert_eq!(f.val_windows, count(&f.val_subjects));
        assert_eq!(f.report.confusion.total() as usize, f.test_windows);
    }
    Ok(())
}

#[test]
fn loso_gives_one_fold_per_subject() -> Result<()> {
    let ws = synthetic(5, 4, 2);
    for mode in [Mode::RandomForest, Mode::Knn] {
        let cfg = DownstreamConfig {
            mode,
            forest_trees: 10,
            ..probe(Protocol::Loso, 3)
        };
        let r = run(&ws, &cfg, &EncoderSource::Scratch(tiny_encoder()))?;
        let all = labelled_subjects(&ws);
        assert_eq!(r.folds.len(), all.len());
        for (f, s) in r.folds.iter().zip(&all) {
            assert_eq!(f.test_subjects, vec![*s]);
            assert_eq!(f.name, format!("subject {s}"));
            assert!(f.val_subjects.is_empty(), "{} tunes nothing", mode.name());
        }
        assert_disjoint_cover(&r, &all);
    }
    Ok(())
}

#[test]
fn unlabelled_windows_take_no_part() -> Result<()> {
    let mut ws = synthetic(4, 4, 3);
    // A subject with only unlabelled windows must not become a fold.
    let n = ws.y.len();
    ws.x.extend_from_within(0..4 * 3 * LEN);
    for _ in 0..4 {
        ws.y.push(-1);
        ws.subject.push(99);
        ws.start_time_s.push(0.0);
    }
    let cfg = DownstreamConfig {
        mode: Mode::RandomForest,
        forest_trees: 10,
        ..probe(Protocol::Loso, 1)
    };
    let r = run(&ws, &cfg, &EncoderSource::None)?;
    let labelled = labelled_windows(&ws.y);
    assert_eq!(labelled.len(), n - n / 4);
    assert_eq!(r.labelled_windows, labelled.len());
    assert_eq!(r.folds.len(), 4);
    assert!(r.folds.iter().all(|f| !f.test_subjects.contains(&99)));
    let tested: usize = r.folds.iter().map(|f| f.test_windows).sum();
    assert_eq!(tested, labelled.len());
    Ok(())
}

#[test]
fn the_same_seed_gives_identical_folds_and_metrics() -> Result<()> {
    let ws = synthetic(6, 4, 4);
    let enc = EncoderSource::Scratch(tiny_encoder());
    let cfg = DownstreamConfig {
        mode: Mode::FineTune,
        max_epochs: 2,
        augment: true,
        ..probe(Protocol::KFold { k: 3 }, 8)
    };
    let a = run(&ws, &cfg, &enc)?;
    let b = run(&ws, &cfg, &enc)?;
    for (fa, fb) in a.folds.iter().zip(&b.folds) {
        assert_eq!(fa.test_subjects, fb.test_subjects);
        assert_eq!(fa.val_subjects, fb.val_subjects);
        assert_eq!(fa.report.confusion, fb.report.confusion);
        let (ta, tb) = (fa.training.as_ref(), fb.training.as_ref());
        let losses = |t: Option<&flowfm::downstream::TrainOutcome>| -> Vec<f64> {
            t.map(|t| t.history.iter().map(|e| e.train_loss).collect())
                .unwrap_or_default()
        };
        Tolerance::new(0.0, 0.0).assert_close(&losses(ta), &losses(tb));
    }
    assert!(Tolerance::new(0.0, 0.0).close(a.mean_macro_f1(), b.mean_macro_f1()));
    // Another seed deals the subjects into other folds.
    let plans = |seed| -> Result<Vec<Vec<i64>>> {
        let subjects: Vec<i64> = labelled_windows(&ws.y)
            .into_iter()
            .map(|i| ws.subject[i])
            .collect();
        Ok(
            plan_folds(&subjects, Protocol::KFold { k: 3 }, Some(0.2), seed)?
                .into_iter()
                .map(|p| p.test.subjects)
                .collect(),
        )
    };
    assert_eq!(plans(8)?, plans(8)?);
    assert!((0..10).any(|s| plans(s).ok() != plans(8).ok()));
    Ok(())
}

#[test]
fn every_comparator_is_tested_on_the_same_folds() -> Result<()> {
    let ws = synthetic(6, 4, 7);
    let enc = EncoderSource::Scratch(tiny_encoder());
    let cfg = probe(Protocol::KFold { k: 3 }, 12);
    let probe_run = run(&ws, &cfg, &enc)?;
    let knn_run = run(
        &ws,
        &DownstreamConfig {
            mode: Mode::Knn,
            ..cfg.clone()
        },
        &enc,
    )?;
    for (p, k) in probe_run.folds.iter().zip(&knn_run.folds) {
        assert_eq!(p.test_subjects, k.test_subjects);
        // kNN has no validation side: its reference set is the probe's training + validation.
        let mut joined = p.train_subjects.clone();
        joined.extend(&p.val_subjects);
        joined.sort_unstable();
        assert_eq!(joined, k.train_subjects);
        assert_eq!(p.train_windows + p.val_windows, k.train_windows);
    }
    // Without a validation split, two subjects are enough for LOSO.
    let two = synthetic(2, 4, 8);
    let forest = run(
        &two,
        &DownstreamConfig {
            mode: Mode::RandomForest,
            forest_trees: 5,
            ..probe(Protocol::Loso, 1)
        },
        &EncoderSource::None,
    )?;
    assert_eq!(forest.folds.len(), 2);
    Ok(())
}

#[test]
fn results_serialise_to_json_and_render_a_markdown_row() -> Result<()> {
    let ws = synthetic(4, 4, 5);
    let cfg = DownstreamConfig {
        mode: Mode::RandomForest,
        forest_trees: 10,
        ..probe(Protocol::KFold { k: 2 }, 2)
    };
    let r = run(&ws, &cfg, &EncoderSource::None)?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("result.json");
    r.write_json(&path)?;
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    assert_eq!(v["dataset"], "synthetic");
    assert_eq!(v["config"]["mode"], "random_forest");
    assert_eq!(v["config"]["protocol"]["kind"], "k_fold");
    assert_eq!(v["folds"].as_array().map(Vec::len), Some(2));
    let f1 = v["summary"]["macro_f1"]["mean"].as_f64().expect("a number");
    assert!(Tolerance::F64.close(f1, r.mean_macro_f1()));
    // The mean is the mean of the folds' macro F1.
    let mean = (r.folds[0].report.macro_f1 + r.folds[1].report.macro_f1) / 2.0;
    assert!(Tolerance::F64.close(r.mean_macro_f1(), mean));
    let cm = &v["folds"][0]["report"]["confusion"]["counts"];
    assert_eq!(cm.as_array().map(Vec::len), Some(3));
    let row = r.markdown_row()?;
    assert!(
        row.starts_with("| synthetic | random_forest | 2 |"),
        "{row}"
    );
    assert_eq!(
        row.matches('|').count(),
        ProtocolResult::markdown_header()
            .lines()
            .next()
            .map(|h| h.matches('|').count())
            .unwrap_or(0)
    );
    Ok(())
}

#[test]
fn a_mode_that_needs_an_encoder_refuses_to_run_without_one() {
    let ws = synthetic(4, 2, 6);
    for mode in [Mode::FineTune, Mode::LinearProbe, Mode::Knn] {
        let err = run(
            &ws,
            &DownstreamConfig {
                mode,
                ..probe(Protocol::Loso, 0)
            },
            &EncoderSource::None,
        )
        .expect_err("no encoder");
        assert!(err.to_string().contains("needs an encoder"), "{err}");
    }
}

/// The ADL/HMP wrist accelerometer, SSL-Wearables' five classes, 10 s windows every 5 s at 30 Hz.
fn adl_windows(root: &Path) -> Result<WindowSet> {
    let raw = read_adl(&root.join("adl_hmp"), &AdlOptions::default())?;
    let raw = restrict_classes(&raw, &SSL_WEARABLES_ADL_CLASSES)?;
    let cfg = PrepareConfig {
        window: WindowConfig {
            window_secs: 10.0,
            hop_secs: 5.0,
            ..WindowConfig::default()
        },
        ..PrepareConfig::default()
    };
    Ok(prepare(&raw, &cfg)?.0)
}

/// The shared datasets folder, or `None` (with a message) when ADL/HMP is absent.
fn adl_root() -> Option<&'static Path> {
    let root = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../../shared/datasets"
    ));
    if root.join("adl_hmp").is_dir() {
        Some(root)
    } else {
        flowfm_core::testing::skip_or_fail(&format!(
            "{} not found",
            root.join("adl_hmp").display()
        ));
        None
    }
}

// Chance macro F1 of five classes is about 0.2: both comparators must do clearly better on
// held-out subjects.

#[test]
fn adl_random_forest_runs_loso_end_to_end_on_real_data() -> Result<()> {
    let Some(root) = adl_root() else {
        return Ok(());
    };
    let ws = adl_windows(root)?;
    assert_eq!(ws.class_names.len(), 5);
    let subjects = labelled_subjects(&ws);
    let forest = run(
        &ws,
        &DownstreamConfig {
            mode: Mode::RandomForest,
            forest_trees: 30,
            ..probe(Protocol::Loso, 7)
        },
        &EncoderSource::None,
    )?;
    assert_eq!(forest.folds.len(), subjects.len());
    assert_disjoint_cover(&forest, &subjects);
    eprintln!(
        "ADL 5-class, {} labelled windows of {} subjects, {:.1} s\n{}\n{}",
        forest.labelled_windows,
        subjects.len(),
        forest.wall_s,
        ProtocolResult::markdown_header(),
        forest.markdown_row()?
    );
    assert!(
        forest.mean_macro_f1() > 0.4,
        "forest {}",
        forest.mean_macro_f1()
    );
    Ok(())
}

#[test]
fn adl_fine_tuning_runs_k_fold_end_to_end_on_real_data() -> Result<()> {
    let Some(root) = adl_root() else {
        return Ok(());
    };
    let ws = adl_windows(root)?;
    let subjects = labelled_subjects(&ws);
    let encoder = EncoderSource::Scratch(EncoderConfig::harnet10().with_width(0.0625));
    let finetune = run(
        &ws,
        &DownstreamConfig {
            mode: Mode::FineTune,
            max_epochs: 2,
            patience: 1,
            batch_size: 16,
            lr: 3e-3,
            ..probe(Protocol::KFold { k: 3 }, 7)
        },
        &encoder,
    )?;
    assert_eq!(finetune.folds.len(), 3);
    assert_disjoint_cover(&finetune, &subjects);
    eprintln!(
        "ADL 5-class, {:.1} s\n{}\n{}",
        finetune.wall_s,
        ProtocolResult::markdown_header(),
        finetune.markdown_row()?
    );
    assert!(
        finetune.mean_macro_f1() > 0.3,
        "fine-tune {}",
        finetune.mean_macro_f1()
    );
    Ok(())
}
