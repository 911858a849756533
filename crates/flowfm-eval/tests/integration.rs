//! End-to-end use of the public API (features -> forest -> confusion -> fold table -> JSON) and the
//! crate's architecture invariant (no dependency on flowfm-data or flowfm-models).

use std::f64::consts::PI;

use flowfm_core::{SeededRng, Tolerance};
use flowfm_eval::{
    frechet_distance, rankme, ConfusionMatrix, Distance, Embeddings, FeatureConfig,
    FeatureExtractor, FoldResults, ForestConfig, KnnClassifier, KnnConfig, RandomForest, Windows,
};

/// `n` windows (3 x 300 at 30 Hz) of `classes` activities that differ in cadence and intensity,
/// for `subjects` subjects; returns (windows, labels, subject ids).
fn synthetic_har(
    n: usize,
    classes: usize,
    subjects: usize,
    rng: &mut SeededRng,
) -> (Vec<f32>, Vec<usize>, Vec<usize>) {
    let mut x = Vec::with_capacity(n * 900);
    let (mut y, mut s) = (Vec::with_capacity(n), Vec::with_capacity(n));
    for i in 0..n {
        let class = i % classes;
        let subject = (i / classes) % subjects;
        let f = 0.8 + 1.2 * class as f64 + 0.1 * subject as f64;
        let a = 0.1 + 0.3 * class as f64;
        for c in 0..3 {
            let phase = rng.uniform_range(0.0, 2.0 * PI);
            let g = if c == 2 { 1.0 } else { 0.0 };
            for l in 0..300 {
                let t = l as f64 / 30.0;
                x.push((g + a * (2.0 * PI * f * t + phase).sin() + 0.1 * rng.normal()) as f32);
            }
        }
        y.push(class);
        s.push(subject);
    }
    (x, y, s)
}

fn subset(x: &[f32], idx: &[usize]) -> Vec<f32> {
    idx.iter()
        .flat_map(|&i| x[i * 900..(i + 1) * 900].iter().copied())
        .collect()
}

#[test]
fn leave_one_subject_out_forest_and_knn_fill_a_fold_table() {
    let mut rng = SeededRng::new(2024);
    let (x, y, subj) = synthetic_har(72, 3, 3, &mut rng);
    let fx = FeatureExtractor::new(FeatureConfig::default(), 3, 300).unwrap();
    let mut rf_results = FoldResults::new("synthetic", "Random forest");
    let mut knn_results = FoldResults::new("synthetic", "kNN on features");
    for held_out in 0..3 {
        let train: Vec<usize> = (0..y.len()).filter(|&i| subj[i] != held_out).collect();
        let test: Vec<usize> = (0..y.len()).filter(|&i| subj[i] == held_out).collect();
        let (xtr, xte) = (subset(&x, &train), subset(&x, &test));
        let ftr = fx
            .extract(&Windows::new(&xtr, train.len(), 3, 300).unwrap())
            .unwrap();
        let fte = fx
            .extract(&Windows::new(&xte, test.len(), 3, 300).unwrap())
            .unwrap();
        let ytr: Vec<usize> = train.iter().map(|&i| y[i]).collect();
        let yte: Vec<usize> = test.iter().map(|&i| y[i]).collect();

        let cfg = ForestConfig {
            n_trees: 25,
            ..ForestConfig::default()
        };
        let mut fold_rng = rng.derive_indexed("fold", held_out as u64);
        let rf = RandomForest::fit(&ftr, &ytr, &cfg, &mut fold_rng).unwrap();
        let pred = rf.predict(&fte).unwrap();
        let cm = ConfusionMatrix::from_predictions(&yte, &pred, 3).unwrap();
        rf_results.push(format!("subject {held_out}"), &cm).unwrap();

        // kNN on standardised-by-nothing features: Euclidean on raw features still separates
        // these classes since amplitude and frequency both grow with the class index
        let knn = KnnClassifier::fit(
            &ftr.to_embeddings().unwrap(),
            &ytr,
            3,
            KnnConfig {
                k: 3,
                distance: Distance::Euclidean,
                query_chunk: 16,
            },
            &candle_core::Device::Cpu,
        )
        .unwrap();
        let pred = knn.predict(&fte.to_embeddings().unwrap()).unwrap();
        let cm = ConfusionMatrix::from_predictions(&yte, &pred, 3).unwrap();
        knn_results
            .push(format!("subject {held_out}"), &cm)
            .unwrap();
    }
    let s = rf_results.summary().unwrap();
    assert_eq!(s.folds, 3);
    assert!(s.macro_f1.mean > 0.95, "{s:?}");
    assert!(knn_results.summary().unwrap().macro_f1.mean > 0.95);
    let table = format!(
        "{}\n{}\n{}",
        FoldResults::markdown_header(),
        rf_results.markdown_row().unwrap(),
        knn_results.markdown_row().unwrap()
    );
    assert_eq!(table.lines().count(), 4);

    let json = serde_json::to_value(&s).unwrap();
    assert_eq!(json["folds"], 3);
    assert!(json["macro_f1"]["mean"].as_f64().is_some());
    let pooled = rf_results.pooled_confusion().unwrap();
    assert_eq!(pooled.total(), 72);
}

#[test]
fn undefined_metrics_serialise_as_json_null() {
    let cm = ConfusionMatrix::from_predictions(&[1, 1], &[1, 1], 2).unwrap();
    let v = serde_json::to_value(cm.report()).unwrap();
    assert!(v["cohen_kappa"].is_null());
    assert!(v["per_class"][0]["f1"].is_null());
    assert!(Tolerance::F64.close(v["accuracy"].as_f64().unwrap(), 1.0));
}

#[test]
fn embeddings_from_tensors_feed_the_representation_metrics() {
    let mut rng = SeededRng::new(7);
    let t = rng
        .normal_tensor((64, 8), candle_core::DType::F32, &candle_core::Device::Cpu)
        .unwrap();
    let e = Embeddings::from_tensor(&t).unwrap();
    // Gaussian noise is (close to) full rank; its distance to itself is 0
    assert!(rankme(&e).unwrap() > 6.0);
    assert!(Tolerance::new(0.0, 1e-6).close(frechet_distance(&e, &e).unwrap(), 0.0));
}

#[test]
fn crate_depends_on_neither_data_nor_models() {
    let manifest = include_str!("../Cargo.toml");
    for forbidden in [
        "flowfm-data",
        "flowfm-models",
        "flowfm_data",
        "flowfm_models",
    ] {
        let used = manifest
            .lines()
            .map(|l| l.split('#').next().unwrap_or(""))
            .any(|l| l.contains(forbidden));
        assert!(!used, "flowfm-eval must not depend on {forbidden}");
    }
}
