//! The generation study's measurements ([`generation_study`]): every sampler of a flow run and a
//! diffusion run generates one window per conditioning window (from its own representation);
//! every generated set and the real conditioning set are compared with the reference set at the
//! same sizes, each metric with a window-resampling bootstrap interval (shared draws); then
//! matched quality and the speed-up ([`super::matched`]).

use super::matched::matched_speedup;
use super::models::TrainedModels;
use super::quality::{ExampleWindow, GenerationStudy, Quality, StudyConfig, StudyRow, StudySets};
use super::sampler::{GeneratorKind, SamplerSpec};
use crate::encode::{encode_tensor, windows_tensor};
use anyhow::{ensure, Context, Result};
use candle_core::{Device, Tensor};
use flowfm_core::SeededRng;
use flowfm_data::window::WindowSet;
use flowfm_eval::generative::discriminative::discriminative_cv;
use flowfm_eval::generative::fidelity::{agreement, cosine_per_row};
use flowfm_eval::generative::resample::Resamples;
use flowfm_eval::generative::set_intervals::{
    frechet_intervals, mmd_intervals, reference_bandwidth, spectral_intervals,
};
use flowfm_eval::stats::Interval;
use flowfm_eval::{
    Embeddings, FeatureConfig, FeatureExtractor, FeatureTable, RandomForest, Windows,
};
use flowfm_models::HarNet;

fn device_name(d: &Device) -> String {
    if d.is_cuda() {
        "cuda".to_string()
    } else if d.is_metal() {
        "metal".to_string()
    } else {
        "cpu".to_string()
    }
}

/// Hand-crafted window features standardised by the reference set's per-feature mean and sd,
/// compressed as `sign(z) ln(1 + |z|)` so that one feature far out (say, the energy above 8 Hz of
/// noisy samples against anti-aliased real windows, hundreds of sds away) cannot swamp the rest;
/// a non-finite feature becomes the reference mean (0).
pub(crate) struct StandardisedFeatures {
    extractor: FeatureExtractor,
    mean: Vec<f64>,
    sd: Vec<f64>,
}

impl StandardisedFeatures {
    pub(crate) fn fit(extractor: FeatureExtractor, table: &FeatureTable) -> Self {
        let (rows, cols) = (table.rows(), table.cols());
        let mut mean = vec![0.0; cols];
        let mut sd = vec![0.0; cols];
        for j in 0..cols {
            let col: Vec<f64> = (0..rows)
                .map(|i| table.row(i)[j])
                .filter(|v| v.is_finite())
                .collect();
            let m = col.iter().sum::<f64>() / col.len().max(1) as f64;
            let v = col.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / col.len().max(1) as f64;
            mean[j] = m;
            sd[j] = if v.sqrt() > 1e-12 { v.sqrt() } else { 1.0 };
        }
        Self {
            extractor,
            mean,
            sd,
        }
    }

    pub(crate) fn embed_table(&self, table: &FeatureTable) -> Result<Embeddings<'static>> {
        let (rows, cols) = (table.rows(), table.cols());
        let mut out = Vec::with_capacity(rows * cols);
        for i in 0..rows {
            for (j, v) in table.row(i).iter().enumerate() {
                let z = (v - self.mean[j]) / self.sd[j];
                let c = z.signum() * z.abs().ln_1p();
                out.push(if c.is_finite() { c as f32 } else { 0.0 });
            }
        }
        Ok(Embeddings::from_vec(out, rows, cols)?)
    }

    pub(crate) fn extract(&self, w: &Windows<'_>) -> Result<FeatureTable> {
        Ok(self.extractor.extract(w)?)
    }
}

/// One compared set (the real floor set or a sampler's windows) before its intervals.
struct Compared {
    windows: Vec<f32>,
    features: Embeddings<'static>,
    hand: Embeddings<'static>,
    agreement: Vec<f64>,
}

/// What one sampler produced, before its intervals.
struct Produced {
    method: String,
    sampler: String,
    nfe: usize,
    ms_per_window: f64,
    batch_ms_per_window: Vec<f64>,
    consistency: Vec<f64>,
    set: Compared,
}

/// Everything about the reference set every set is compared with.
struct Reference<'a> {
    encoder: &'a HarNet,
    space: &'a StandardisedFeatures,
    forest: &'a RandomForest,
    batch_size: usize,
}

impl Reference<'_> {
    /// Features, hand-crafted embedding and label agreement (against `labels`) of windows `x`.
    fn compare(&self, x: &Tensor, labels: &[usize]) -> Result<Compared> {
        let features = Embeddings::from_tensor(&encode_tensor(self.encoder, x, self.batch_size)?)?;
        let (n, c, l) = x.dims3()?;
        let windows: Vec<f32> = x.flatten_all()?.to_vec1()?;
        let w = Windows::new(&windows, n, c, l)?;
        let table = self.space.extract(&w)?;
        let hand = self.space.embed_table(&table)?;
        let agreement = agreement(&self.forest.predict(&table)?, labels)?;
        Ok(Compared {
            windows,
            features,
            hand,
            agreement,
        })
    }
}

fn labels_of(ws: &WindowSet, name: &str) -> Result<Vec<usize>> {
    ws.y.iter()
        .enumerate()
        .map(|(i, &y)| {
            usize::try_from(y)
                .with_context(|| format!("{name}: window {i} of {} has no label ({y})", ws.dataset))
        })
        .collect()
}

fn check_inputs(
    flow: &TrainedModels,
    diffusion: &TrainedModels,
    sets: &StudySets,
    cfg: &StudyConfig,
) -> Result<usize> {
    ensure!(
        flow.kind() == GeneratorKind::Flow,
        "flow: {} holds a {} generator",
        flow.generator_path.display(),
        flow.kind().method_name()
    );
    ensure!(
        diffusion.kind() == GeneratorKind::Diffusion,
        "diffusion: {} holds a {} generator",
        diffusion.generator_path.display(),
        diffusion.kind().method_name()
    );
    ensure!(
        flow.window_shape() == diffusion.window_shape(),
        "diffusion: windows of {:?} (channels, samples), the flow run's are {:?}",
        diffusion.window_shape(),
        flow.window_shape()
    );
    flow.check_windows(&sets.conditioning)
        .context("conditioning")?;
    flow.check_windows(&sets.reference).context("reference")?;
    let n = sets.conditioning.num_windows();
    ensure!(
        sets.reference.num_windows() == n,
        "reference: {} windows, the conditioning set has {n}; the floor needs equal sizes",
        sets.reference.num_windows()
    );
    ensure!(
        n >= 8 && n >= 2 * cfg.discriminative_folds,
        "conditioning: the study needs at least 8 windows per set (and 2 per discriminator fold), got {n}"
    );
    ensure!(cfg.batch_size >= 1, "batch_size: must be at least 1");
    ensure!(
        cfg.discriminative_folds >= 2,
        "discriminative_folds: must be at least 2"
    );
    for (field, list, models) in [
        ("flow_samplers", &cfg.flow_samplers, flow),
        ("diffusion_samplers", &cfg.diffusion_samplers, diffusion),
    ] {
        for (i, s) in list.iter().enumerate() {
            s.validate(models.kind(), models.schedule.num_steps())
                .with_context(|| format!("{field}[{i}] = `{s}`"))?;
        }
    }
    Ok(n)
}

/// Mean cosine between the representations of different windows (`z_i` vs `z_{perm(i)}` for a
/// seeded cycle, so no window meets itself): the consistency of a generator that ignores its
/// condition.
fn chance_consistency(z: &Embeddings<'_>, rng: &mut SeededRng) -> Result<f64> {
    let n = z.rows();
    let perm = rng.permutation(n);
    // one cycle through the permutation: no window is paired with itself
    let mut partner = vec![0; n];
    for k in 0..n {
        partner[perm[k]] = perm[(k + 1) % n];
    }
    let shifted: Vec<f32> = partner.iter().flat_map(|&j| z.row(j).to_vec()).collect();
    let other = Embeddings::from_vec(shifted, n, z.dim())?;
    let c = cosine_per_row(z, &other)?;
    Ok(c.iter().sum::<f64>() / n as f64)
}

/// Generates with one sampler from `z_own` and measures what is per window.
#[allow(clippy::too_many_arguments)] // one sampler run: each argument is a distinct input
fn produce(
    models: &TrainedModels,
    sampler: &SamplerSpec,
    z_own: &Tensor,
    z_own_rows: &Embeddings<'_>,
    labels: &[usize],
    reference: &Reference<'_>,
    cfg: &StudyConfig,
) -> Result<Produced> {
    let mut label = sampler.label(models.schedule.num_steps());
    if let (GeneratorKind::Diffusion, Some(c)) = (models.kind(), cfg.diffusion_clip_x0) {
        label = format!("{label} (x0 clip {c:.1})");
    }
    let method = models.kind().method_name().to_string();
    let gen = models
        .sample_with_clip(
            z_own,
            sampler,
            cfg.batch_size,
            cfg.seed,
            cfg.diffusion_clip_x0,
        )
        .with_context(|| format!("{method} {label}"))?;
    let z_gen = Embeddings::from_tensor(&models.encode(&gen.x, cfg.batch_size)?)?;
    let consistency = cosine_per_row(&z_gen, z_own_rows)?;
    let set = reference.compare(&gen.x, labels)?;
    Ok(Produced {
        method,
        sampler: label,
        nfe: gen.nfe_per_window,
        ms_per_window: gen.ms_per_window,
        batch_ms_per_window: gen.batch_ms_per_window,
        consistency,
        set,
    })
}

/// Evaluates every sampler setting of a flow run and a diffusion run.
///
/// Each sampler generates one window per conditioning window, conditioned on that window's own
/// representation (each method's own encoder). Per setting: NFE and sampling time per window
/// (networks warmed up first; encoding and metrics not timed) and, against the reference set,
/// Frechet distance and MMD² in the reference encoder's features, Frechet distance in hand-crafted
/// features, the cross-validated discriminative score, spectral distances, label agreement (a
/// random forest trained on the labelled reference set gives each generated window its source
/// window's label) and representation consistency, every one with a percentile bootstrap
/// interval. The real conditioning windows get the same metrics: the floor. Then matched quality
/// and the speed-up ([`matched_speedup`]).
pub fn generation_study(
    flow: &TrainedModels,
    diffusion: &TrainedModels,
    sets: &StudySets,
    cfg: &StudyConfig,
) -> Result<GenerationStudy> {
    let n = check_inputs(flow, diffusion, sets, cfg)?;
    let (cond, refs) = (&sets.conditioning, &sets.reference);
    let cond_labels = labels_of(cond, "conditioning")?;
    let ref_labels = labels_of(refs, "reference")?;
    let rng = SeededRng::new(cfg.seed).derive("generation-study");

    let encoder = cfg.reference.build(&flow.device)?;
    let (c, l) = flow.window_shape();
    let rc = encoder.config();
    ensure!(
        rc.in_channels == c && rc.window_len == l,
        "reference: the reference encoder reads {} x {}, the windows are {c} x {l}",
        rc.in_channels,
        rc.window_len
    );
    let extractor = FeatureExtractor::new(
        FeatureConfig {
            sample_rate_hz: refs.sample_rate_hz,
            ..FeatureConfig::default()
        },
        c,
        l,
    )?;
    let ref_windows = Windows::new(&refs.x, n, c, l)?;
    let ref_table = extractor.extract(&ref_windows)?;
    let forest = RandomForest::fit(
        &ref_table,
        &ref_labels,
        &cfg.classifier,
        &mut rng.derive("label-classifier"),
    )?;
    let space = StandardisedFeatures::fit(extractor, &ref_table);
    let ref_hand = space.embed_table(&ref_table)?;
    let x_ref = windows_tensor(refs, &flow.device)?;
    let ref_features = Embeddings::from_tensor(&encode_tensor(&encoder, &x_ref, cfg.batch_size)?)?;
    let reference = Reference {
        encoder: &encoder,
        space: &space,
        forest: &forest,
        batch_size: cfg.batch_size,
    };
    let x_cond = windows_tensor(cond, &flow.device)?;
    let floor_set = reference.compare(&x_cond, &cond_labels)?;

    let mut produced = Vec::new();
    let mut consistency_chance = Vec::new();
    for (models, samplers, warm) in [
        (flow, &cfg.flow_samplers, SamplerSpec::Euler { steps: 1 }),
        (
            diffusion,
            &cfg.diffusion_samplers,
            SamplerSpec::Ddim { steps: 1, eta: 0.0 },
        ),
    ] {
        if samplers.is_empty() {
            continue;
        }
        let z_own = models.encode(&x_cond, cfg.batch_size)?;
        let z_rows = Embeddings::from_tensor(&z_own)?;
        let mut r = rng.derive(&format!("chance/{}", models.kind().method_name()));
        consistency_chance.push((
            models.kind().method_name().to_string(),
            chance_consistency(&z_rows, &mut r)?,
        ));
        // Warm-up: first calls pay for allocation and kernel setup.
        let warm_n = cfg.batch_size.min(n);
        models.sample(
            &z_own.narrow(0, 0, warm_n)?,
            &warm,
            cfg.batch_size,
            cfg.seed,
        )?;
        for s in samplers {
            produced.push(produce(
                models,
                s,
                &z_own,
                &z_rows,
                &cond_labels,
                &reference,
                cfg,
            )?);
        }
    }

    // Intervals: the same resamples of the reference and of the compared sets for every row.
    let mut draws = rng.derive("bootstrap");
    let ref_draws = Resamples::draw(n, &cfg.bootstrap, &mut draws)?;
    let set_draws = Resamples::draw(n, &cfg.bootstrap, &mut draws)?;
    let conf = cfg.bootstrap.confidence;
    let compared: Vec<&Compared> = std::iter::once(&floor_set)
        .chain(produced.iter().map(|p| &p.set))
        .collect();
    let feats: Vec<&Embeddings<'_>> = compared.iter().map(|s| &s.features).collect();
    let hands: Vec<&Embeddings<'_>> = compared.iter().map(|s| &s.hand).collect();
    let frechet = frechet_intervals(&ref_features, &feats, &ref_draws, &set_draws, conf)?;
    let frechet_features = frechet_intervals(&ref_hand, &hands, &ref_draws, &set_draws, conf)?;
    let sigma = reference_bandwidth(&ref_features, cfg.mmd.median_max_points)?;
    let mmd = mmd_intervals(&ref_features, &feats, &ref_draws, &set_draws, sigma, conf)?;
    let windows: Vec<Windows<'_>> = compared
        .iter()
        .map(|s| Windows::new(&s.windows, n, c, l))
        .collect::<std::result::Result<_, _>>()?;
    let window_refs: Vec<&Windows<'_>> = windows.iter().collect();
    let spectral = spectral_intervals(
        &ref_windows,
        &window_refs,
        &ref_draws,
        &set_draws,
        refs.sample_rate_hz,
        conf,
    )?;
    let mut qualities = Vec::with_capacity(compared.len());
    for (i, s) in compared.iter().enumerate() {
        let mut r = rng.derive_indexed("discriminator", i as u64);
        let cv = discriminative_cv(
            &ref_windows,
            &windows[i],
            &cfg.discriminative,
            cfg.discriminative_folds,
            &mut r,
        )?;
        let (_, discriminative) = cv.intervals(&ref_draws, &set_draws, conf)?;
        qualities.push(Quality {
            frechet: frechet[i].clone(),
            frechet_features: frechet_features[i].clone(),
            mmd2: mmd[i].clone(),
            discriminative,
            spectral_l1: spectral[i].0.clone(),
            spectral_db: spectral[i].1.clone(),
            label_agreement: set_draws.mean_interval(&s.agreement, conf)?,
        });
    }
    let mut qualities = qualities.into_iter();
    let floor = qualities
        .next()
        .context("internal: no floor quality was computed")?;
    let mut examples = vec![ExampleWindow {
        method: "real".into(),
        sampler: String::new(),
        channels: c,
        values: cond.x[..c * l].to_vec(),
    }];
    let mut rows = Vec::with_capacity(produced.len());
    for (p, quality) in produced.into_iter().zip(qualities) {
        examples.push(ExampleWindow {
            method: p.method.clone(),
            sampler: p.sampler.clone(),
            channels: c,
            values: p.set.windows[..c * l].to_vec(),
        });
        let consistency: Interval = set_draws.mean_interval(&p.consistency, conf)?;
        rows.push(StudyRow {
            method: p.method,
            sampler: p.sampler,
            nfe: p.nfe,
            windows: n,
            ms_per_window: p.ms_per_window,
            batch_ms_per_window: p.batch_ms_per_window,
            quality,
            consistency,
            unmatched: Vec::new(),
        });
    }
    let (speedup, speedup_note) = matched_speedup(
        &mut rows,
        &floor,
        &cfg.bootstrap,
        &mut rng.derive("speedup"),
    )?;
    Ok(GenerationStudy {
        rows,
        floor,
        num_windows: n,
        requested_windows: sets.requested,
        sets: sets.description.clone(),
        classifier: format!(
            "a random forest ({} trees) on {} hand-crafted features, trained on the labelled reference set",
            cfg.classifier.n_trees,
            ref_table.cols()
        ),
        device: device_name(&flow.device),
        reference_encoder: cfg.reference.describe(),
        mmd_bandwidth: sigma,
        consistency_chance,
        flow_generator_params: flow.generator_params,
        diffusion_generator_params: diffusion.generator_params,
        bootstrap: cfg.bootstrap,
        discriminative_folds: cfg.discriminative_folds,
        speedup,
        speedup_note,
        examples,
        wall_s: 0.0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_eval::frechet_distance_from_stats;
    use flowfm_eval::GaussianStats;

    fn windows(n: usize, scale: f32, seed: u64) -> Vec<f32> {
        let mut rng = SeededRng::new(seed);
        (0..n * 3 * 300)
            .map(|i| {
                let t = (i % 300) as f32 / 30.0;
                scale * ((2.0 * std::f32::consts::PI * 2.0 * t).sin() + 0.3 * rng.normal() as f32)
            })
            .collect()
    }

    #[test]
    fn the_feature_frechet_distance_sees_a_change_of_scale() {
        let real = windows(48, 1.0, 1);
        let same = windows(48, 1.0, 2);
        let scaled = windows(48, 50.0, 3);
        fn w(x: &[f32]) -> Windows<'_> {
            Windows::new(x, 48, 3, 300).unwrap()
        }
        let fx = FeatureExtractor::new(FeatureConfig::default(), 3, 300).unwrap();
        let table = fx.extract(&w(&real)).unwrap();
        let space = StandardisedFeatures::fit(fx, &table);
        let stats = GaussianStats::fit(&space.embed_table(&table).unwrap()).unwrap();
        let d = |x: &Vec<f32>| {
            let e = space.embed_table(&space.extract(&w(x)).unwrap()).unwrap();
            frechet_distance_from_stats(&stats, &GaussianStats::fit(&e).unwrap()).unwrap()
        };
        let near = d(&same);
        let far = d(&scaled);
        assert!(near.is_finite() && far.is_finite());
        assert!(
            far > 100.0 * near.max(1e-3),
            "scaled windows should be far: {far} vs {near}"
        );
    }

    #[test]
    fn chance_consistency_pairs_each_row_with_another() {
        // orthonormal rows: every pair of different rows has cosine 0, every row with itself 1
        let mut v = vec![0f32; 16];
        for i in 0..4 {
            v[i * 4 + i] = 1.0;
        }
        let z = Embeddings::new(&v, 4, 4).unwrap();
        let c = chance_consistency(&z, &mut SeededRng::new(3)).unwrap();
        assert!(c.abs() < 1e-12, "{c}");
    }
}
