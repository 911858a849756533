//! Wall-clock cost of each metric at study-scale sizes on synthetic data (a sanity check that
//! nothing is accidentally quadratic where it should not be; not a benchmark).
//!
//! `cargo run --release -p flowfm-eval --example metric_timings`

use std::time::Instant;

use candle_core::Device;
use flowfm_core::SeededRng;
use flowfm_eval::{
    discriminative_score, frechet_distance, mmd2_rbf, rankme, DiscriminativeConfig, Distance,
    Embeddings, FeatureConfig, FeatureExtractor, ForestConfig, KnnClassifier, KnnConfig, MmdConfig,
    RandomForest, Windows,
};

fn normal(rng: &mut SeededRng, n: usize) -> Vec<f32> {
    rng.normal_vec(n).iter().map(|&v| v as f32).collect()
}

fn timed<T>(label: &str, f: impl FnOnce() -> T) -> T {
    let t = Instant::now();
    let out = f();
    println!("{label:<55} {:>8.3} s", t.elapsed().as_secs_f64());
    out
}

fn main() -> flowfm_eval::Result<()> {
    let mut rng = SeededRng::new(0);
    let d = 1024;

    let a = normal(&mut rng, 5000 * d);
    let b = normal(&mut rng, 5000 * d);
    let (ea, eb) = (Embeddings::new(&a, 5000, d)?, Embeddings::new(&b, 5000, d)?);
    let fd = timed("Frechet distance, 2 x (5000, 1024)", || {
        frechet_distance(&ea, &eb)
    })?;
    println!("  FD = {fd:.4}");

    let (sa, sb) = (
        Embeddings::new(&a[..1000 * d], 1000, d)?,
        Embeddings::new(&b[..1000 * d], 1000, d)?,
    );
    let m = timed("MMD^2 (median heuristic), 2 x (1000, 1024)", || {
        mmd2_rbf(&sa, &sb, &MmdConfig::default())
    })?;
    println!("  MMD^2 = {:.5}, sigma = {:.3}", m.mmd2, m.bandwidth);

    let r = timed("RankMe, (5000, 1024)", || rankme(&ea))?;
    println!("  RankMe = {r:.1}");

    let labels: Vec<usize> = (0..5000).map(|_| rng.below(6)).collect();
    let knn = KnnClassifier::fit(
        &ea,
        &labels,
        6,
        KnnConfig {
            k: 5,
            distance: Distance::Cosine,
            query_chunk: 512,
        },
        &Device::Cpu,
    )?;
    let pred = timed("kNN predict, 5000 queries vs 5000 train, d = 1024", || {
        knn.predict(&eb)
    })?;
    println!("  predictions: {}", pred.len());

    let w = normal(&mut rng, 5000 * 3 * 300);
    let windows = Windows::new(&w, 5000, 3, 300)?;
    let fx = FeatureExtractor::new(FeatureConfig::default(), 3, 300)?;
    let table = timed("hand-crafted features, 5000 windows (3, 300)", || {
        fx.extract(&windows)
    })?;
    let y: Vec<usize> = (0..5000).map(|_| rng.below(6)).collect();
    let rf = timed("random forest fit, 5000 x 71, 100 trees", || {
        RandomForest::fit(&table, &y, &ForestConfig::default(), &mut rng.derive("rf"))
    })?;
    timed("random forest predict, 5000 rows", || rf.predict(&table))?;

    let g = normal(&mut rng, 1000 * 3 * 300);
    let real = Windows::new(&w[..1000 * 900], 1000, 3, 300)?;
    let generated = Windows::new(&g, 1000, 3, 300)?;
    let s = timed("discriminative score, 1000 + 1000 windows", || {
        discriminative_score(
            &real,
            &generated,
            &DiscriminativeConfig::default(),
            &mut rng.derive("disc"),
        )
    })?;
    println!("  score = {:.3} (same distribution)", s.score);
    Ok(())
}
