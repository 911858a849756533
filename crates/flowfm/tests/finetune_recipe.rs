//! The fine-tuning / supervised-from-scratch recipe (`docs/decisions.md`, "Fine-tuning and
//! supervised recipe"): validation subjects are 12.5 % of each training fold (at least one,
//! disjoint from training and test, seeded), and the default recipe trains a randomly
//! initialised encoder on the real ADL/HMP subset to a Cohen's kappa above 0 on every fold and
//! above the majority-class predictor (skipped, counted, when `../shared/datasets` is absent).

use anyhow::Result;
use flowfm::downstream::{
    plan_folds, run_protocol, DatasetInfo, DownstreamConfig, EncoderSource, Mode, Protocol,
    ProtocolOptions,
};
use flowfm_data::readers::{read_adl, restrict_classes, AdlOptions, SSL_WEARABLES_ADL_CLASSES};
use flowfm_data::window::WindowSet;
use flowfm_data::{prepare, PrepareConfig, WindowConfig};
use flowfm_eval::ConfusionMatrix;
use flowfm_models::EncoderConfig;
use std::collections::BTreeSet;
use std::path::Path;
use std::sync::Arc;

/// `windows_per_subject` windows for each of `n` subjects (ids 100, 101, ...).
fn subjects(n: usize, windows_per_subject: usize) -> Vec<i64> {
    (0..n)
        .flat_map(|s| std::iter::repeat_n(100 + s as i64, windows_per_subject))
        .collect()
}

#[test]
fn validation_subjects_are_an_eighth_of_the_training_fold_at_least_one_and_disjoint() -> Result<()>
{
    let fraction = DownstreamConfig::default().val_fraction;
    assert!(flowfm_core::Tolerance::F64.close(fraction, 0.125));
    for (n, protocol) in [
        (16, Protocol::Loso),
        (3, Protocol::Loso),
        (46, Protocol::KFold { k: 5 }),
        (8, Protocol::KFold { k: 3 }),
        (30, Protocol::KFold { k: 5 }),
    ] {
        let s = subjects(n, 3);
        let plans = plan_folds(&s, protocol, Some(fraction), 42)?;
        for p in &plans {
            let train: BTreeSet<i64> = p.train.subjects.iter().copied().collect();
            let val: BTreeSet<i64> = p.val.subjects.iter().copied().collect();
            let test: BTreeSet<i64> = p.test.subjects.iter().copied().collect();
            let fold_train = train.len() + val.len();
            // 12.5 % of the fold's training subjects, rounded, at least one.
            let expected = ((fold_train as f64 * 0.125).round() as usize).max(1);
            assert_eq!(
                val.len(),
                expected,
                "{n} subjects, {}: {fold_train} training subjects",
                p.name
            );
            assert!(!train.is_empty(), "{}: a subject is left to train", p.name);
            assert!(train.is_disjoint(&val) && train.is_disjoint(&test) && val.is_disjoint(&test));
            assert_eq!(
                fold_train + test.len(),
                n,
                "{}: every subject is placed",
                p.name
            );
            // Window indices follow the subjects.
            assert!(p.val.indices.iter().all(|&i| val.contains(&s[i])));
            assert_eq!(p.val.indices.len(), 3 * val.len());
        }
        // Seeded: the same seed gives the same split, some other seed another.
        let again = plan_folds(&s, protocol, Some(fraction), 42)?;
        assert_eq!(plans, again);
        if n > 3 {
            let vals = |seed| -> Result<Vec<Vec<i64>>> {
                Ok(plan_folds(&s, protocol, Some(fraction), seed)?
                    .into_iter()
                    .map(|p| p.val.subjects)
                    .collect())
            };
            let base = vals(42)?;
            assert!(
                (0..10).any(|seed| vals(seed).ok().as_ref() != Some(&base)),
                "{n} subjects: the validation subjects do not depend on the seed"
            );
        }
    }
    Ok(())
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

#[test]
fn the_default_recipe_trains_a_scratch_encoder_above_the_majority_class_on_adl() -> Result<()> {
    let Some(root) = adl_root() else {
        return Ok(());
    };
    let ws = adl_windows(root)?;
    let num_classes = ws.class_names.len();
    assert_eq!(num_classes, 5);
    // The default recipe, unchanged but for the protocol (3 folds keep the test short) and a
    // narrow encoder.
    let cfg = DownstreamConfig {
        mode: Mode::FineTune,
        protocol: Protocol::KFold { k: 3 },
        seed: 7,
        ..DownstreamConfig::default()
    };
    let encoder = EncoderSource::Scratch(EncoderConfig::harnet10().with_width(0.0625));
    let r = run_protocol(
        Arc::new(ws.clone()),
        &encoder,
        &cfg,
        &ProtocolOptions::new(DatasetInfo::of_window_set(&ws), "supervised (scratch)"),
    )?;
    eprintln!(
        "ADL 5-class, default recipe, scratch HARNet10 x 0.0625: {:.1} s\n{}",
        r.wall_s,
        r.markdown_row()?
    );
    assert_eq!(r.folds.len(), 3);
    for f in &r.folds {
        let t = f
            .training
            .as_ref()
            .expect("fine-tuning records its training");
        eprintln!(
            "{}: kappa {:.3}, macro F1 {:.3}, best step {} of {} (budget {}), {:.1} s",
            f.name,
            f.report.cohen_kappa,
            f.report.macro_f1,
            t.best_step,
            t.steps_run,
            t.max_steps,
            f.wall_s
        );
        assert!(
            t.max_steps >= cfg.min_steps,
            "{}: the budget has the floor",
            f.name
        );
        assert!(!f.val_subjects.is_empty() && f.val_windows > 0);
        // The majority class of the training windows, predicted for every test window.
        let mut counts = vec![0usize; num_classes];
        for (&y, s) in ws.y.iter().zip(&ws.subject) {
            if y >= 0 && f.train_subjects.contains(s) {
                counts[y as usize] += 1;
            }
        }
        let majority = (0..num_classes).max_by_key(|&c| counts[c]).unwrap_or(0);
        let truth: Vec<usize> = (0..num_classes)
            .flat_map(|c| std::iter::repeat_n(c, f.report.confusion.support(c) as usize))
            .collect();
        let baseline =
            ConfusionMatrix::from_predictions(&truth, &vec![majority; truth.len()], num_classes)?
                .report();
        assert!(
            f.report.cohen_kappa > 0.0 && f.report.cohen_kappa > baseline.cohen_kappa,
            "{}: kappa {} (majority class {})",
            f.name,
            f.report.cohen_kappa,
            baseline.cohen_kappa
        );
        assert!(
            f.report.macro_f1 > baseline.macro_f1,
            "{}: macro F1 {} (majority class {})",
            f.name,
            f.report.macro_f1,
            baseline.macro_f1
        );
    }
    Ok(())
}

#[test]
fn every_profile_fine_tunes_with_the_recipe() {
    use flowfm::study::Profile;
    for profile in [Profile::Quick, Profile::Default, Profile::Full] {
        for protocol in [Protocol::Loso, Protocol::KFold { k: 5 }] {
            let cfg = profile.downstream_config(Mode::FineTune, protocol, 3);
            cfg.validate().expect("a valid config");
            assert_eq!(
                (cfg.mode, cfg.protocol, cfg.seed),
                (Mode::FineTune, protocol, 3)
            );
            assert_eq!(cfg.patience, 5, "{profile:?}");
            assert!(
                flowfm_core::Tolerance::F64.close(cfg.val_fraction, 0.125),
                "{profile:?}"
            );
            // A handful of batches per epoch still trains for the floor.
            assert!(cfg.step_budget(3) >= cfg.min_steps, "{profile:?}");
            assert!(
                cfg.eval_every < cfg.step_budget(3),
                "{profile:?}: validated more than once"
            );
            let floor = match profile {
                Profile::Quick => 30,
                Profile::Default => 200,
                Profile::Full => 1000,
            };
            assert!(
                cfg.step_budget(3) >= floor,
                "{profile:?}: {}",
                cfg.step_budget(3)
            );
        }
    }
}
