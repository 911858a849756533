//! The portable path, which is what every op runs on a CUDA GPU: gradient checks against central
//! differences in f64, and forward values and gradients equal to the CPU kernels' for every op
//! the models use (convolution over many geometries, with and without bias, blur downsampling,
//! nearest upsampling, the group-norm layer with activation and with FiLM modulation, batch norm
//! in training and evaluation, linear layers, pooling) and for an AdamW step.
//!
//! Each check runs on a [`Target`]: the CPU with the portable path forced
//! ([`flowfm_ops::with_portable_ops`], always), and a GPU when one opens
//! ([`flowfm_core::device::test_gpu`]). A CPU build counts the GPU tests as ignored (`cfg_attr`
//! on the `cuda` feature); a cuda build without a usable GPU skips them with a message, or fails
//! them under `FLOWFM_REQUIRE_GPU=1`.

use candle_core::{DType, Device, Result, Tensor, Var};
use candle_nn::VarMap;
use flowfm_core::init::seeded_var_builder;
use flowfm_core::testing::skip_without_gpu;
use flowfm_core::tolerance::tensor_to_f64;
use flowfm_core::{ForwardMode, SeededRng, Tolerance};
use flowfm_ops::fused_norm::Activation;
use flowfm_ops::gradcheck::check_gradients;
use flowfm_ops::optim::{AdamW, AdamWConfig};
use flowfm_ops::*;

mod common;

/// Where a check runs.
enum Target {
    /// The CPU, with the portable path forced.
    CpuPortable,
    /// A GPU (which always takes the portable path).
    Gpu(Device),
}

impl Target {
    fn device(&self) -> Device {
        match self {
            Target::CpuPortable => Device::Cpu,
            Target::Gpu(d) => d.clone(),
        }
    }

    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        match self {
            Target::CpuPortable => with_portable_ops(f),
            Target::Gpu(_) => f(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Target::CpuPortable => "cpu (portable path)",
            Target::Gpu(_) => "gpu",
        }
    }
}

type Op = Box<dyn Fn(&[Tensor]) -> Result<Tensor>>;

/// One op under test: the function of its inputs, its inputs, and the layer parameters it owns.
struct Case {
    name: String,
    f: Op,
    inputs: Vec<Tensor>,
    params: VarMap,
}

fn randn(rng: &mut SeededRng, shape: &[usize], dtype: DType, dev: &Device) -> Tensor {
    rng.normal_tensor(shape, dtype, dev).unwrap()
}

/// Every case, built on `dev` in `dtype` with fixed seeds, so the CPU and the target get the
/// same numbers. Layers are built inside the target's setting (batch norm's running statistics
/// are primed by a training forward).
fn cases(dev: &Device, dtype: DType) -> Vec<Case> {
    let mut rng = SeededRng::new(42);
    let mut out = Vec::new();
    // The geometries of the CPU gradient checks, HARNet10's kind of layer among them.
    for common::ConvCase {
        batch: b,
        c_in,
        len: l,
        c_out,
        kernel: k,
        spec,
    } in common::conv_cases()
    {
        let groups = spec.groups;
        let x = randn(&mut rng, &[b, c_in, l], dtype, dev);
        let w = randn(&mut rng, &[c_out, c_in / groups, k], dtype, dev);
        out.push(Case {
            name: format!(
                "conv1d {spec:?} x ({b},{c_in},{l}) w ({c_out},{},{k})",
                c_in / groups
            ),
            f: Box::new(move |xs| conv1d(&xs[0], &xs[1], &spec)),
            inputs: vec![x, w],
            params: VarMap::new(),
        });
    }
    // Convolution with the bias inside (conv1d_bias), as the layers call it.
    let spec = Conv1dSpec {
        padding: 2,
        padding_mode: PaddingMode::Circular,
        ..Default::default()
    };
    let (x, w, bias) = (
        randn(&mut rng, &[2, 3, 11], dtype, dev),
        randn(&mut rng, &[4, 3, 5], dtype, dev),
        randn(&mut rng, &[4], dtype, dev),
    );
    out.push(Case {
        name: "conv1d_bias circular".into(),
        f: Box::new(move |xs| conv1d_bias(&xs[0], &xs[1], &xs[2], &spec)),
        inputs: vec![x, w, bias],
        params: VarMap::new(),
    });
    for (factor, order, len) in [(2, 2, 16), (5, 1, 15), (3, 1, 10), (2, 2, 11)] {
        let down = BlurDownsample::new(factor, order).unwrap();
        out.push(Case {
            name: format!("blur factor {factor} order {order} len {len}"),
            f: Box::new(move |xs| down.forward(&xs[0])),
            inputs: vec![randn(&mut rng, &[2, 3, len], dtype, dev)],
            params: VarMap::new(),
        });
    }
    out.push(Case {
        name: "upsample x2".into(),
        f: Box::new(|xs| upsample_nearest1d(&xs[0], 2)),
        inputs: vec![randn(&mut rng, &[2, 3, 5], dtype, dev)],
        params: VarMap::new(),
    });
    // The group-norm layer (fused on the CPU): with SiLU, and modulated (FiLM) as the U-Net's
    // residual blocks call it.
    let vm = VarMap::new();
    let gn = GroupNorm::new(2, 4, 1e-5, seeded_var_builder(&vm, 1, dtype, dev)).unwrap();
    // Non-trivial affine parameters (the layer starts at ones and zeros).
    for (name, var) in vm.data().lock().unwrap().iter() {
        let v = randn(
            &mut SeededRng::new(name.len() as u64),
            var.dims(),
            dtype,
            dev,
        );
        var.set(&v.affine(0.5, 1.0).unwrap()).unwrap();
    }
    let gn2 = gn.clone();
    out.push(Case {
        name: "group norm + silu".into(),
        f: Box::new(move |xs| gn.forward_act(&xs[0], Activation::Silu)),
        inputs: vec![randn(&mut rng, &[2, 4, 9], dtype, dev)],
        params: vm.clone(),
    });
    out.push(Case {
        name: "group norm modulated + silu".into(),
        f: Box::new(move |xs| gn2.forward_modulated(&xs[0], &xs[1], &xs[2], Activation::Silu)),
        inputs: vec![
            randn(&mut rng, &[2, 4, 9], dtype, dev),
            randn(&mut rng, &[2, 4], dtype, dev),
            randn(&mut rng, &[2, 4], dtype, dev),
        ],
        params: vm,
    });
    for mode in [ForwardMode::Train, ForwardMode::Eval] {
        let vm = VarMap::new();
        let bn = BatchNorm1d::new(
            3,
            BatchNormConfig::default(),
            seeded_var_builder(&vm, 2, dtype, dev),
        )
        .unwrap();
        bn.forward(
            &randn(&mut SeededRng::new(9), &[4, 3, 6], dtype, dev),
            ForwardMode::Train,
        )
        .unwrap();
        out.push(Case {
            name: format!("batch norm + relu ({mode:?})"),
            f: Box::new(move |xs| bn.forward_act(&xs[0], mode, Activation::Relu)),
            inputs: vec![randn(&mut rng, &[2, 3, 7], dtype, dev)],
            params: vm,
        });
    }
    let (w, b) = (
        randn(&mut rng, &[4, 3], dtype, dev),
        randn(&mut rng, &[4], dtype, dev),
    );
    out.push(Case {
        name: "linear on a transposed view".into(),
        f: Box::new(|xs| linear(&xs[0].transpose(1, 2)?, &xs[1], Some(&xs[2]))),
        inputs: vec![randn(&mut rng, &[2, 3, 6], dtype, dev), w, b],
        params: VarMap::new(),
    });
    out.push(Case {
        name: "pooling".into(),
        f: Box::new(|xs| cat_channels(&[&global_avg_pool1d(&xs[0])?, &global_max_pool1d(&xs[0])?])),
        inputs: vec![randn(&mut rng, &[2, 3, 5], dtype, dev)],
        params: VarMap::new(),
    });
    out
}

/// Builds the cases under `target`'s setting.
fn target_cases(target: &Target, dtype: DType) -> Vec<Case> {
    let dev = target.device();
    target.run(|| cases(&dev, dtype))
}

fn portable_gradients_match_finite_differences(target: &Target) {
    for case in target_cases(target, DType::F64) {
        target.run(|| {
            check_gradients(|xs| (case.f)(xs), &case.inputs)
                .unwrap()
                .assert_ok(&format!("{} on {}", case.name, target.name()))
        });
    }
}

/// The output, the gradient of `sum(output * R)` with respect to every input and every layer
/// parameter (by name), all as f64 vectors on the host.
fn value_and_gradients(case: &Case) -> (Vec<f64>, Vec<(String, Vec<f64>)>) {
    let vars: Vec<Var> = case
        .inputs
        .iter()
        .map(|t| Var::from_tensor(t).unwrap())
        .collect();
    let xs: Vec<Tensor> = vars.iter().map(|v| v.as_tensor().clone()).collect();
    let y = (case.f)(&xs).unwrap();
    let r = SeededRng::new(7)
        .normal_tensor(y.shape(), y.dtype(), y.device())
        .unwrap();
    let grads = y.mul(&r).unwrap().sum_all().unwrap().backward().unwrap();
    let mut named: Vec<(String, Vec<f64>)> = vars
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let g = grads.get(v).expect("every input gets a gradient");
            (format!("input {i}"), tensor_to_f64(g).unwrap())
        })
        .collect();
    let mut params: Vec<(String, Var)> = case
        .params
        .data()
        .lock()
        .unwrap()
        .iter()
        .filter(|(n, _)| !flowfm_ops::norm::is_buffer_name(n))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    params.sort_by(|a, b| a.0.cmp(&b.0));
    for (n, v) in params {
        let g = grads.get(&v).expect("every parameter gets a gradient");
        named.push((n, tensor_to_f64(g).unwrap()));
    }
    (tensor_to_f64(&y).unwrap(), named)
}

/// Every case's output and gradients on `target` equal the CPU kernels' within `tol`.
fn target_equals_cpu_kernels(target: &Target, dtype: DType, tol: Tolerance) {
    let reference = cases(&Device::Cpu, dtype);
    let on_target = target_cases(target, dtype);
    for (cpu, tgt) in reference.iter().zip(&on_target) {
        let (y_cpu, g_cpu) = value_and_gradients(cpu);
        let (y_tgt, g_tgt) = target.run(|| value_and_gradients(tgt));
        let what = format!("{} on {} ({dtype:?})", cpu.name, target.name());
        if let Err(m) = tol.check(&y_tgt, &y_cpu) {
            panic!("{what}: forward differs: {m}");
        }
        assert_eq!(g_cpu.len(), g_tgt.len(), "{what}");
        for ((name, a), (_, b)) in g_tgt.iter().zip(&g_cpu) {
            if let Err(m) = tol.check(a, b) {
                panic!("{what}: gradient of {name} differs: {m}");
            }
        }
    }
}

/// One AdamW step on a small model's parameters gives the same parameters on `target` as the
/// CPU's fused update.
fn adamw_step_equals_cpu(target: &Target, tol: Tolerance) {
    let step = |dev: &Device| -> Vec<f64> {
        let mut rng = SeededRng::new(3);
        let w = Var::from_tensor(&randn(&mut rng, &[4, 3, 5], DType::F32, dev)).unwrap();
        let b = Var::from_tensor(&randn(&mut rng, &[4], DType::F32, dev)).unwrap();
        let x = randn(&mut rng, &[2, 3, 20], DType::F32, dev);
        let mut opt = AdamW::new(
            vec![("w".into(), w.clone()), ("b".into(), b.clone())],
            AdamWConfig::default(),
        )
        .unwrap();
        for _ in 0..3 {
            let spec = Conv1dSpec {
                padding: 2,
                ..Default::default()
            };
            let loss = conv1d_bias(&x, w.as_tensor(), b.as_tensor(), &spec)
                .unwrap()
                .sqr()
                .unwrap()
                .mean_all()
                .unwrap();
            opt.step(&loss.backward().unwrap(), 1e-2).unwrap();
        }
        let mut v = tensor_to_f64(w.as_tensor()).unwrap();
        v.extend(tensor_to_f64(b.as_tensor()).unwrap());
        v
    };
    let cpu = step(&Device::Cpu);
    let dev = target.device();
    let got = target.run(|| step(&dev));
    if let Err(m) = tol.check(&got, &cpu) {
        panic!("AdamW after 3 steps on {}: {m}", target.name());
    }
}

#[test]
fn portable_path_gradients_match_finite_differences_on_the_cpu() {
    portable_gradients_match_finite_differences(&Target::CpuPortable);
}

#[test]
fn portable_path_equals_the_cpu_kernels_in_value_and_gradient() {
    target_equals_cpu_kernels(
        &Target::CpuPortable,
        DType::F64,
        Tolerance::new(1e-9, 1e-11),
    );
    target_equals_cpu_kernels(&Target::CpuPortable, DType::F32, Tolerance::new(1e-4, 1e-5));
    adamw_step_equals_cpu(&Target::CpuPortable, Tolerance::new(1e-6, 1e-7));
}

#[test]
fn the_comparison_detects_a_portable_path_that_differs() {
    // A case whose function reads the thread's setting: it gives x on the CPU kernels and 2x on
    // the portable path. The comparison must reject it.
    let case = |dev: &Device| Case {
        name: "differs".into(),
        f: Box::new(|xs| {
            if portable_forced() {
                xs[0].affine(2.0, 0.0)
            } else {
                Ok(xs[0].clone())
            }
        }),
        inputs: vec![randn(&mut SeededRng::new(1), &[2, 3], DType::F64, dev)],
        params: VarMap::new(),
    };
    let cpu = value_and_gradients(&case(&Device::Cpu));
    let portable = with_portable_ops(|| value_and_gradients(&case(&Device::Cpu)));
    assert!(Tolerance::new(1e-9, 1e-11)
        .check(&portable.0, &cpu.0)
        .is_err());
    // And the setting is restored after the closure.
    assert!(!portable_forced());
}

#[test]
fn the_portable_setting_reaches_the_pool_worker_and_is_restored() {
    assert!(!portable_forced());
    let inside = with_portable_ops(|| on_worker(portable_forced));
    assert!(inside);
    assert!(!portable_forced());
    assert!(!on_worker(portable_forced));
    let caught = std::panic::catch_unwind(|| with_portable_ops(|| panic!("inside")));
    assert!(caught.is_err());
    assert!(!portable_forced(), "restored after a panic");
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "needs a GPU: a `--features cuda` build on a machine with one (counted as ignored here)"
)]
fn gpu_gradients_match_finite_differences() {
    let Some(dev) = flowfm_core::device::test_gpu() else {
        skip_without_gpu("gpu_gradients_match_finite_differences");
        return;
    };
    portable_gradients_match_finite_differences(&Target::Gpu(dev));
}

#[test]
#[cfg_attr(
    not(feature = "cuda"),
    ignore = "needs a GPU: a `--features cuda` build on a machine with one (counted as ignored here)"
)]
fn gpu_equals_the_cpu_kernels_in_value_and_gradient() {
    let Some(dev) = flowfm_core::device::test_gpu() else {
        skip_without_gpu("gpu_equals_the_cpu_kernels_in_value_and_gradient");
        return;
    };
    let gpu = Target::Gpu(dev);
    target_equals_cpu_kernels(&gpu, DType::F64, Tolerance::new(1e-9, 1e-11));
    // f32 on the GPU: cuBLAS may use another summation order (and TF32 only if enabled, which
    // candle leaves off by default).
    target_equals_cpu_kernels(&gpu, DType::F32, Tolerance::new(1e-4, 1e-5));
    adamw_step_equals_cpu(&gpu, Tolerance::new(1e-5, 1e-6));
}
