//! Generation from tiny trained runs: stores written with the right shape and attributes and read
//! back, seeded determinism independent of batch size, Euler converging to the dopri5 solution at
//! first order, the fitted representation Gaussian matching its data, the study table filled with
//! intervals and its floor, and field-named errors for bad samplers and inputs (the speed-up
//! selection is tested on hand-made intervals in `generation::matched`).

use candle_core::{DType, Device, Tensor};
use flowfm::encode::windows_tensor;
use flowfm::generation::{
    generation_study, run_generation, CovarianceFactor, CovarianceKind, GenerateJob, GenerateMode,
    GenerateSummary, GenerationStudy, GeneratorKind, ReferenceEncoder, RepresentationGaussian,
    SamplerSpec, StudyConfig, StudySets, TrainedModels,
};
use flowfm::train::config::{Experiment, ExperimentFile};
use flowfm::train::pretrain::{pretrain, PretrainOptions};
use flowfm_core::{SeededRng, Tolerance};
use flowfm_data::store::WindowStore;
use flowfm_data::window::WindowSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

/// T of the tiny diffusion run.
const T: usize = 50;

/// Windows of three synthetic "activities": sinusoids of different frequencies plus gravity.
fn synthetic_pool(n: usize, seed: u64) -> WindowSet {
    let mut rng = SeededRng::new(seed);
    let mut ws = WindowSet::empty(
        "synthetic",
        30.0,
        vec!["x".into(), "y".into(), "z".into()],
        300,
        vec!["slow".into(), "mid".into(), "fast".into()],
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
        ws.y.push((i % 3) as i64);
        ws.subject.push((i % 4) as i64);
        ws.start_time_s.push(10.0 * i as f64);
    }
    ws
}

fn experiment(method: &str) -> Experiment {
    let text = format!(
        r#"
[run]
name = "gen"
method = "{method}"
seed = 3

[encoder]
width = 0.0625

[generator]
preset = "small"
base_channels = 8
channel_mults = [1, 2]

[diffusion]
num_steps = {T}

[train]
batch_size = 8
steps = 6
lr = 0.003
warmup_steps = 1
checkpoint_every = 6
log_every = 6
"#
    );
    ExperimentFile::parse(&text, "test")
        .unwrap()
        .validate()
        .unwrap()
}

/// Two run directories (flow, diffusion) under the target's temp folder, trained once per
/// test process.
fn runs() -> &'static (PathBuf, PathBuf) {
    static RUNS: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    RUNS.get_or_init(|| {
        let root = Path::new(env!("CARGO_TARGET_TMPDIR")).join("flowfm-generate-runs");
        let _ = std::fs::remove_dir_all(&root);
        let pool = Arc::new(synthetic_pool(32, 99));
        let dir = |method: &str| {
            let dir = root.join(method);
            pretrain(
                &experiment(method),
                pool.clone(),
                (0..32).collect(),
                &PretrainOptions::new(&dir),
            )
            .unwrap();
            dir
        };
        (dir("flowfm"), dir("diffusion"))
    })
}

fn flow_models() -> TrainedModels {
    TrainedModels::from_run_dir(&runs().0, &Device::Cpu).unwrap()
}

fn diffusion_models() -> TrainedModels {
    TrainedModels::from_run_dir(&runs().1, &Device::Cpu).unwrap()
}

fn values(t: &Tensor) -> Vec<f64> {
    t.to_dtype(DType::F64)
        .unwrap()
        .flatten_all()
        .unwrap()
        .to_vec1()
        .unwrap()
}

fn err_text<T: std::fmt::Debug>(r: anyhow::Result<T>) -> String {
    format!("{:#}", r.expect_err("expected an error"))
}

fn job(sampler: &str, batch_size: usize, seed: u64, mode: GenerateMode, out: &Path) -> GenerateJob {
    GenerateJob {
        sampler: sampler.parse().unwrap(),
        batch_size,
        seed,
        mode,
        output: out.to_path_buf(),
    }
}

#[test]
fn run_directories_load_with_their_generator_kind_and_schedule() {
    let f = flow_models();
    let d = diffusion_models();
    assert_eq!(f.kind(), GeneratorKind::Flow);
    assert_eq!(d.kind(), GeneratorKind::Diffusion);
    assert_eq!(
        d.schedule.num_steps(),
        T,
        "the diffusion schedule comes from config.toml"
    );
    assert_eq!(f.window_shape(), (3, 300));
    assert!(f.generator_params > 0);
    assert_eq!(
        f.generator_params, d.generator_params,
        "same U-Net, same size"
    );
}

#[test]
fn reconstruction_store_has_the_window_shape_and_reads_back_exactly() {
    let models = flow_models();
    let real = synthetic_pool(10, 7);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("recon.h5");
    let summary = run_generation(
        &models,
        &real,
        &job("euler-4", 4, 11, GenerateMode::Reconstruct, &out),
    )
    .unwrap();
    assert_eq!(summary.windows, 10);
    assert_eq!(summary.nfe_per_window, 4);
    assert!(summary.ms_per_window > 0.0 && summary.total_secs > 0.0);
    let rec = summary
        .reconstruction
        .clone()
        .expect("reconstruct mode reports its error");
    assert!(rec.rmse.is_finite() && rec.rmse > 0.0);

    let store = WindowStore::open(&out).unwrap();
    assert_eq!(store.num_windows(), 10);
    assert_eq!((store.meta.channels, store.meta.window_len), (3, 300));
    Tolerance::F64.assert_close(&[store.meta.sample_rate_hz], &[30.0]);
    assert_eq!(store.meta.channel_names, real.channel_names);
    assert_eq!(store.meta.class_names, real.class_names);
    assert_eq!(store.meta.dataset, "synthetic/generated/flowfm/euler-4");
    assert_eq!(store.y, real.y, "reconstructions keep their source labels");
    assert_eq!(store.subject, real.subject);
    let stored: GenerateSummary = serde_json::from_str(&store.meta.config).unwrap();
    // The config attribute records the job (floats through JSON: compare with a tolerance).
    assert_eq!(
        (
            &stored.sampler,
            &stored.mode,
            stored.seed,
            stored.windows,
            stored.nfe_per_window
        ),
        (
            &summary.sampler,
            &summary.mode,
            summary.seed,
            summary.windows,
            summary.nfe_per_window
        )
    );
    assert_eq!(
        (&stored.encoder, &stored.output),
        (&summary.encoder, &summary.output)
    );
    let stored_rec = stored.reconstruction.expect("stored reconstruction error");
    Tolerance::new(1e-12, 0.0).assert_close(
        &[stored.ms_per_window, stored_rec.mse, stored_rec.corr_mean],
        &[summary.ms_per_window, rec.mse, rec.corr_mean],
    );
    let x = store.read_x().unwrap();
    assert_eq!(x.len(), 10 * 3 * 300);
    assert!(x.iter().all(|v| v.is_finite()));

    // The store holds exactly what the model generates for the same seed.
    let z = models
        .encode(&windows_tensor(&real, &Device::Cpu).unwrap(), 10)
        .unwrap();
    let again = models
        .sample(&z, &"euler-4".parse().unwrap(), 10, 11)
        .unwrap();
    Tolerance::F32.assert_close(
        &x.iter().map(|&v| f64::from(v)).collect::<Vec<_>>(),
        &values(&again.x),
    );
    // No temp files left beside the store.
    let names: Vec<String> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names, vec!["recon.h5".to_string()]);
}

#[test]
fn sample_mode_writes_count_unlabelled_windows() {
    let models = diffusion_models();
    let pool = synthetic_pool(24, 5);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("sampled.h5");
    let mode = GenerateMode::Sample {
        count: 7,
        covariance: CovarianceKind::Auto,
    };
    let summary = run_generation(&models, &pool, &job("ddim-5", 3, 2, mode, &out)).unwrap();
    assert_eq!(summary.nfe_per_window, 5);
    assert!(summary.reconstruction.is_none());
    let store = WindowStore::open(&out).unwrap();
    assert_eq!(store.num_windows(), 7);
    assert!(store.y.iter().all(|&y| y == -1));
    assert!(store.subject.iter().all(|&s| s == -1));
    assert_eq!(store.read_x().unwrap().len(), 7 * 900);
}

#[test]
fn same_seed_gives_identical_windows_whatever_the_batch_size() {
    let dir = tempfile::tempdir().unwrap();
    let pool = synthetic_pool(9, 8);
    for (models, sampler) in [(flow_models(), "heun-3"), (diffusion_models(), "ddpm")] {
        let mode = GenerateMode::Sample {
            count: 5,
            covariance: CovarianceKind::Diagonal,
        };
        let read = |batch: usize, seed: u64, name: &str| {
            let out = dir.path().join(name);
            run_generation(
                &models,
                &pool,
                &job(sampler, batch, seed, mode.clone(), &out),
            )
            .unwrap();
            WindowStore::open(&out)
                .unwrap()
                .read_x()
                .unwrap()
                .into_iter()
                .map(f64::from)
                .collect::<Vec<f64>>()
        };
        let a = read(5, 42, "a.h5");
        let b = read(2, 42, "b.h5");
        let c = read(5, 43, "c.h5");
        Tolerance::F32.assert_close(&b, &a);
        assert!(
            Tolerance::new(1e-3, 1e-3).check(&c, &a).is_err(),
            "{sampler}: another seed must give other windows"
        );
    }
}

/// Euler's global error is first order: against a tight dopri5 solution from the same noise,
/// 64 steps must be several times closer than 16 steps (4x in the asymptotic regime). Fails if
/// the noise depended on the sampler, or the time grid or step plumbing were wrong.
#[test]
fn euler_converges_to_the_dopri5_solution_at_first_order() {
    let models = flow_models();
    let real = synthetic_pool(2, 3);
    let z = models
        .encode(&windows_tensor(&real, &Device::Cpu).unwrap(), 2)
        .unwrap();
    let reference = models
        .sample(&z, &"dopri5-1e-7".parse().unwrap(), 2, 9)
        .unwrap();
    assert!(reference.nfe_per_window > 6);
    let rmse = |steps: usize| {
        let g = models
            .sample(&z, &SamplerSpec::Euler { steps }, 2, 9)
            .unwrap();
        assert_eq!(g.nfe_per_window, steps);
        let (a, b) = (values(&g.x), values(&reference.x));
        (a.iter().zip(&b).map(|(x, y)| (x - y).powi(2)).sum::<f64>() / a.len() as f64).sqrt()
    };
    let (e16, e64) = (rmse(16), rmse(64));
    assert!(e16 > 0.0, "Euler-16 should differ from the reference");
    eprintln!(
        "Euler rmse vs dopri5 (NFE {}): 16 steps {e16:.3e}, 64 steps {e64:.3e}",
        reference.nfe_per_window
    );
    assert!(
        e16 / e64 > 3.0,
        "Euler error fell only {:.2}x from 16 to 64 steps ({e16:.3e} -> {e64:.3e})",
        e16 / e64
    );
}

fn sample_mean_cov(rows: &[Vec<f64>]) -> (Vec<f64>, Vec<f64>) {
    let (n, d) = (rows.len(), rows[0].len());
    let mean: Vec<f64> = (0..d)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let mut cov = vec![0.0; d * d];
    for r in rows {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += (r[i] - mean[i]) * (r[j] - mean[j]) / (n - 1) as f64;
            }
        }
    }
    (mean, cov)
}

fn tensor_rows(t: &Tensor) -> Vec<Vec<f64>> {
    t.to_dtype(DType::F64).unwrap().to_vec2().unwrap()
}

#[test]
fn fitted_gaussian_matches_its_data_and_its_draws_match_it() {
    // Correlated 3-d data: z = A e + m.
    let mut rng = SeededRng::new(1);
    let a = [[1.0, 0.0, 0.0], [0.8, 0.6, 0.0], [-0.5, 0.3, 0.2]];
    let m = [2.0, -1.0, 0.5];
    let data: Vec<f32> = (0..4000)
        .flat_map(|_| {
            let e = [rng.normal(), rng.normal(), rng.normal()];
            (0..3)
                .map(|i| (m[i] + (0..3).map(|k| a[i][k] * e[k]).sum::<f64>()) as f32)
                .collect::<Vec<_>>()
        })
        .collect();
    let z = Tensor::from_vec(data, (4000, 3), &Device::Cpu).unwrap();
    let (mean, cov) = sample_mean_cov(&tensor_rows(&z));

    let g = RepresentationGaussian::fit(&z, CovarianceKind::Full).unwrap();
    assert!(matches!(g.factor, CovarianceFactor::Full { .. }));
    Tolerance::new(1e-9, 1e-9).assert_close(&g.mean, &mean);
    Tolerance::new(1e-9, 1e-9).assert_close(&g.covariance(), &cov);

    let draws = g
        .sample(20000, &mut SeededRng::new(2), &Device::Cpu)
        .unwrap();
    let (dm, dc) = sample_mean_cov(&tensor_rows(&draws));
    // Monte-Carlo error with 20000 draws is about 1 %; allow 5 % of unit scale.
    Tolerance::new(0.0, 0.05).assert_close(&dm, &mean);
    Tolerance::new(0.0, 0.05).assert_close(&dc, &cov);

    let diag = RepresentationGaussian::fit(&z, CovarianceKind::Diagonal).unwrap();
    let c = diag.covariance();
    Tolerance::new(1e-9, 1e-9).assert_close(&[c[0], c[4], c[8]], &[cov[0], cov[4], cov[8]]);
    Tolerance::F64.assert_close(&[c[1], c[2], c[5]], &[0.0, 0.0, 0.0]);

    // Fewer rows than dimensions: Auto falls back to the diagonal.
    let few = z.narrow(0, 0, 3).unwrap();
    let auto = RepresentationGaussian::fit(&few, CovarianceKind::Auto).unwrap();
    assert!(matches!(auto.factor, CovarianceFactor::Diagonal { .. }));
}

fn study_sets(n: usize) -> StudySets {
    StudySets {
        conditioning: synthetic_pool(n, 21),
        reference: synthetic_pool(n, 22),
        description: "synthetic".into(),
        requested: n,
    }
}

/// Equal JSON trees, numbers within 1e-12 relative.
fn json_close(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
            (x - y).abs() <= 1e-12 * x.abs().max(y.abs()).max(1e-300)
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| json_close(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_close(v, w)))
        }
        _ => a == b,
    }
}

#[test]
fn study_table_has_every_cell_filled_for_a_tiny_configuration() {
    let flow = flow_models();
    let diffusion = diffusion_models();
    let sets = study_sets(12);
    let mut cfg = StudyConfig::with_steps(
        ReferenceEncoder::random_like(flow.encoder.config()),
        &[1, 4],
        false,
        &[2, 10],
        true,
    );
    cfg.flow_samplers.push("dopri5-1e-2".parse().unwrap());
    cfg.batch_size = 6;
    cfg.discriminative.steps = 50;
    cfg.discriminative_folds = 3;
    cfg.bootstrap.resamples = 100;
    cfg.classifier.n_trees = 10;
    let study: GenerationStudy = generation_study(&flow, &diffusion, &sets, &cfg).unwrap();
    let labels: Vec<&str> = study.rows.iter().map(|r| r.sampler.as_str()).collect();
    assert_eq!(
        labels,
        [
            "euler-1",
            "euler-4",
            "dopri5-1e-2",
            "ddim-2",
            "ddim-10",
            "ddpm-50"
        ]
    );
    let nfe: Vec<usize> = study.rows.iter().map(|r| r.nfe).collect();
    assert_eq!(&nfe[..2], &[1, 4]);
    assert_eq!(&nfe[3..], &[2, 10, T]);
    for r in &study.rows {
        assert_eq!(r.windows, 12);
        assert_eq!(r.batch_ms_per_window.len(), 2, "two timed batches of 6");
        for (name, i, _) in r.quality.metrics() {
            assert!(
                i.estimate.is_finite() && i.lower <= i.upper,
                "{} {name} = {i:?}",
                r.sampler
            );
            // Set metrics compare 12 generated with 12 reference windows; label agreement is a
            // mean over the 12 generated windows.
            let sizes = if name == "label agreement" {
                vec![12]
            } else {
                vec![12, 12]
            };
            assert_eq!(i.sizes, sizes, "{} {name}", r.sampler);
        }
        assert!(r.ms_per_window > 0.0 && r.quality.frechet.estimate >= 0.0);
        assert!((0.0..=0.5).contains(&r.quality.discriminative.estimate));
        assert!((0.0..=1.0).contains(&r.quality.label_agreement.estimate));
        assert!((-1.0..=1.0).contains(&r.consistency.estimate));
    }
    // the floor is real vs real at the same sizes; its label agreement is the classifier's
    // accuracy on the real conditioning windows
    for (name, i, _) in study.floor.metrics() {
        assert!(i.estimate.is_finite(), "floor {name} = {i:?}");
    }
    assert_eq!(study.num_windows, 12);
    assert_eq!(study.consistency_chance.len(), 2);
    assert!(!study.speedup_note.is_empty());
    let (s, note) = study.speedup_at_matched_quality();
    assert_eq!(s.is_some(), study.speedup.is_some());
    assert_eq!(note, study.speedup_note);
    let md = study.to_markdown();
    assert!(!md.contains("n/a"), "an empty cell:\n{md}");
    let table_rows = md.lines().filter(|l| l.starts_with("| ")).count();
    assert_eq!(
        table_rows,
        2 + study.rows.len(),
        "header + floor + one line per setting:\n{md}"
    );
    // The study comes back whole from JSON. serde_json's default float parser may land one ulp
    // off the printed shortest representation, so numbers are compared to 1e-12 relative.
    let back: GenerationStudy =
        serde_json::from_str(&serde_json::to_string(&study).unwrap()).unwrap();
    let (a, b) = (
        serde_json::to_value(&study).unwrap(),
        serde_json::to_value(&back).unwrap(),
    );
    assert!(json_close(&a, &b), "the study changed through JSON");
    assert_eq!(study.efficiency().unwrap().len(), study.rows.len());
}

#[test]
fn bad_sampler_names_and_steps_are_errors_naming_the_field() {
    let parts = |name: &str, steps: Option<usize>, eta: Option<f64>, rtol: Option<f64>| {
        err_text(SamplerSpec::from_parts(name, steps, eta, rtol, None))
    };
    assert!(parts("eulr", Some(4), None, None).starts_with("sampler:"));
    assert!(parts("euler", None, None, None).starts_with("steps:"));
    assert!(parts("euler", Some(0), None, None).starts_with("steps:"));
    assert!(parts("ddpm", Some(10), None, None).starts_with("steps:"));
    assert!(parts("dopri5", Some(10), None, None).starts_with("steps:"));
    assert!(parts("ddim", Some(10), Some(-0.5), None).starts_with("eta:"));
    assert!(parts("euler", Some(4), Some(0.5), None).starts_with("eta:"));
    assert!(parts("dopri5", None, None, Some(0.0)).starts_with("rtol:"));
    assert!(parts("euler", Some(4), None, Some(1e-3)).starts_with("rtol:"));
    for (text, field) in [
        ("warp-4", "sampler:"),
        ("euler", "steps:"),
        ("euler-x", "steps:"),
        ("ddim-0", "steps:"),
        ("ddim-5-etax", "eta:"),
        ("dopri5-abc", "rtol:"),
    ] {
        let e = err_text(text.parse::<SamplerSpec>());
        assert!(e.starts_with(field), "`{text}`: {e}");
    }
    // Labels parse back to the same sampler.
    for s in [
        "euler-8",
        "rk4-2",
        "dopri5",
        "dopri5-0.001",
        "ddim-50",
        "ddim-20-eta0.5",
        "ddpm",
    ] {
        let spec: SamplerSpec = s.parse().unwrap();
        assert_eq!(
            spec.to_string().parse::<SamplerSpec>().unwrap(),
            spec,
            "{s}"
        );
    }
    // Against a model: wrong family, too many DDIM steps.
    let ddim_on_flow = SamplerSpec::Ddim { steps: 5, eta: 0.0 }.validate(GeneratorKind::Flow, T);
    assert!(err_text(ddim_on_flow).starts_with("sampler:"));
    let too_many = SamplerSpec::Ddim {
        steps: T + 1,
        eta: 0.0,
    }
    .validate(GeneratorKind::Diffusion, T);
    assert!(err_text(too_many).starts_with("steps:"));
    let models = flow_models();
    let z = Tensor::zeros((2, 64), DType::F32, &Device::Cpu).unwrap();
    assert!(err_text(models.sample(&z, &SamplerSpec::Ddpm, 2, 0)).starts_with("sampler:"));
    let wrong_dim = Tensor::zeros((2, 5), DType::F32, &Device::Cpu).unwrap();
    assert!(
        err_text(models.sample(&wrong_dim, &SamplerSpec::Euler { steps: 1 }, 2, 0))
            .starts_with("z:")
    );
}

#[test]
fn bad_inputs_are_errors_naming_the_file_or_field() {
    let empty = tempfile::tempdir().unwrap();
    let e = err_text(TrainedModels::from_run_dir(empty.path(), &Device::Cpu));
    assert!(e.contains("generator.safetensors"), "{e}");

    let models = flow_models();
    let mut short = synthetic_pool(3, 1);
    short.window_len = 100;
    short.x.truncate(3 * 3 * 100);
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("x.h5");
    let e = err_text(run_generation(
        &models,
        &short,
        &job("euler-2", 2, 0, GenerateMode::Reconstruct, &out),
    ));
    assert!(e.starts_with("windows:"), "{e}");
    assert!(!out.exists(), "nothing is written on error");

    let pool = synthetic_pool(8, 1);
    let e = err_text(run_generation(
        &models,
        &pool,
        &job("ddim-5", 2, 0, GenerateMode::Reconstruct, &out),
    ));
    assert!(e.starts_with("sampler:"), "{e}");

    // The study refuses swapped runs, too few windows and sets of different sizes.
    let diffusion = diffusion_models();
    let cfg = StudyConfig::with_steps(
        ReferenceEncoder::random_like(models.encoder.config()),
        &[1],
        false,
        &[2],
        false,
    );
    let sets = study_sets(10);
    let e = err_text(generation_study(&diffusion, &models, &sets, &cfg));
    assert!(e.starts_with("flow:"), "{e}");
    let e = err_text(generation_study(&models, &diffusion, &study_sets(5), &cfg));
    assert!(e.starts_with("conditioning:"), "{e}");
    let mut uneven = study_sets(10);
    uneven.reference = synthetic_pool(11, 3);
    let e = err_text(generation_study(&models, &diffusion, &uneven, &cfg));
    assert!(e.starts_with("reference:"), "{e}");
    let mut unlabelled = study_sets(10);
    unlabelled.reference.y[4] = -1;
    let e = err_text(generation_study(&models, &diffusion, &unlabelled, &cfg));
    assert!(e.contains("reference: window 4"), "{e}");
    let mut bad = cfg.clone();
    bad.diffusion_samplers = vec![SamplerSpec::Ddim {
        steps: 500,
        eta: 0.0,
    }];
    let e = err_text(generation_study(&models, &diffusion, &sets, &bad));
    assert!(
        e.contains("diffusion_samplers[0]") && e.contains("steps:"),
        "{e}"
    );
}
