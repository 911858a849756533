//! AdamW (Loshchilov & Hutter, ICLR 2019) with decoupled weight decay, per-parameter decay
//! exclusion and a state that is saved and restored with training checkpoints.
//!
//! candle-nn's `AdamW` cannot export its moments nor exclude parameters from weight decay, both of
//! which exact resumption and the usual recipe (no decay on norms and biases) need.

use candle_core::backend::BackendStorage;
use candle_core::backprop::GradStore;
use candle_core::{CpuStorage, DType, InplaceOp2, Layout, Result, Tensor, Var, WithDType};
use rayon::prelude::*;
use std::collections::HashMap;
use std::sync::Mutex;

/// Hyper-parameters of AdamW.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    /// First-moment decay.
    pub beta1: f64,
    /// Second-moment decay.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// Decoupled weight decay (applied as `p -= lr * wd * p`).
    pub weight_decay: f64,
    /// AMSGrad (Reddi et al., ICLR 2018): the update divides by the root of the running maximum
    /// of the second moment instead of the moment itself, as PyTorch's `amsgrad=True` does (the
    /// maximum is taken over the moments before bias correction).
    pub amsgrad: bool,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            amsgrad: false,
        }
    }
}

/// The state of one parameter: first moment, second moment and, with AMSGrad, the running
/// maximum of the second moment (empty otherwise).
enum Moments {
    /// CPU parameters of `f32`: flat host vectors, updated in place by one fused pass.
    Host32 {
        m: Vec<f32>,
        v: Vec<f32>,
        v_max: Vec<f32>,
    },
    /// CPU parameters of `f64`, likewise.
    Host64 {
        m: Vec<f64>,
        v: Vec<f64>,
        v_max: Vec<f64>,
    },
    /// Other devices and dtypes: tensors, updated by composed candle ops.
    Tensors {
        m: Tensor,
        v: Tensor,
        v_max: Option<Tensor>,
    },
}

/// The state names of one parameter, in checkpoint order: `adam_m`, `adam_v` and, with AMSGrad,
/// `adam_vmax`.
fn state_prefixes(amsgrad: bool) -> &'static [&'static str] {
    if amsgrad {
        &["adam_m", "adam_v", "adam_vmax"]
    } else {
        &["adam_m", "adam_v"]
    }
}

impl Moments {
    fn zeros(var: &Var, amsgrad: bool) -> Result<Self> {
        let n = var.elem_count();
        let n_max = if amsgrad { n } else { 0 };
        Ok(match (crate::uses_own_kernels(var.device()), var.dtype()) {
            (true, DType::F32) => Moments::Host32 {
                m: vec![0.0; n],
                v: vec![0.0; n],
                v_max: vec![0.0; n_max],
            },
            (true, DType::F64) => Moments::Host64 {
                m: vec![0.0; n],
                v: vec![0.0; n],
                v_max: vec![0.0; n_max],
            },
            _ => Moments::Tensors {
                m: var.zeros_like()?,
                v: var.zeros_like()?,
                v_max: if amsgrad {
                    Some(var.zeros_like()?)
                } else {
                    None
                },
            },
        })
    }

    /// The state as tensors of the parameter's shape, dtype and device (copies), in the order of
    /// [`state_prefixes`].
    fn tensors(&self, var: &Var, amsgrad: bool) -> Result<Vec<Tensor>> {
        let (shape, dev) = (var.shape(), var.device());
        let n = state_prefixes(amsgrad).len();
        Ok(match self {
            Moments::Host32 { m, v, v_max } => [m, v, v_max][..n]
                .iter()
                .map(|x| Tensor::from_slice(x, shape, dev))
                .collect::<Result<_>>()?,
            Moments::Host64 { m, v, v_max } => [m, v, v_max][..n]
                .iter()
                .map(|x| Tensor::from_slice(x, shape, dev))
                .collect::<Result<_>>()?,
            Moments::Tensors { m, v, v_max } => [Some(m), Some(v), v_max.as_ref()]
                .into_iter()
                .flatten()
                .map(Tensor::copy)
                .collect::<Result<_>>()?,
        })
    }

    /// Replaces the state with copies of `new` (in the order of [`state_prefixes`], already
    /// checked to have the parameter's shape and to be as many as the state holds).
    fn set(&mut self, new: &[&Tensor]) -> Result<()> {
        fn host<T: WithDType>(t: &Tensor) -> Result<Vec<T>> {
            t.to_dtype(T::DTYPE)?.flatten_all()?.to_vec1()
        }
        match self {
            Moments::Host32 { m, v, v_max } => {
                *m = host(new[0])?;
                *v = host(new[1])?;
                if let Some(t) = new.get(2) {
                    *v_max = host(t)?;
                }
            }
            Moments::Host64 { m, v, v_max } => {
                *m = host(new[0])?;
                *v = host(new[1])?;
                if let Some(t) = new.get(2) {
                    *v_max = host(t)?;
                }
            }
            Moments::Tensors { m, v, v_max } => {
                let like = |t: &Tensor, to: &Tensor| {
                    t.to_dtype(to.dtype())?.to_device(to.device())?.copy()
                };
                *m = like(new[0], m)?;
                *v = like(new[1], v)?;
                if let (Some(t), Some(old)) = (new.get(2), v_max.as_mut()) {
                    *old = like(t, old)?;
                }
            }
        }
        Ok(())
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    moments: Moments,
}

/// AdamW over named variables.
///
/// On the CPU each parameter is updated by one fused pass over `(p, g, m, v)` (in place, in
/// parallel over chunks, no temporary tensors); the arithmetic is the composed candle-op update of
/// [`adamw_step_composed`] operation for operation, so both give bit-identical parameters (tested),
/// and the result does not depend on the number of threads (the update is elementwise).
pub struct AdamW {
    slots: Vec<Slot>,
    cfg: AdamWConfig,
    step: u64,
}

/// Whether a parameter is decayed: matrices and kernels are; vectors (biases, norm scales and
/// shifts) are not.
pub fn decays(var: &Var) -> bool {
    var.rank() >= 2
}

/// The scalar coefficients of one AdamW update, in f64 (each is rounded to the parameter's dtype
/// exactly where candle's scalar ops round it).
#[derive(Clone, Copy, Debug)]
struct Coefficients {
    beta1: f64,
    one_minus_beta1: f64,
    beta2: f64,
    one_minus_beta2: f64,
    inv_bias1: f64,
    inv_bias2: f64,
    eps: f64,
    /// `1 - lr * weight_decay` when the parameter decays.
    decay: Option<f64>,
    lr: f64,
    amsgrad: bool,
}

impl Coefficients {
    fn new(cfg: &AdamWConfig, step: u64, lr: f64, decays: bool) -> Self {
        let t = step as i32;
        Self {
            beta1: cfg.beta1,
            one_minus_beta1: 1.0 - cfg.beta1,
            beta2: cfg.beta2,
            one_minus_beta2: 1.0 - cfg.beta2,
            inv_bias1: 1.0 / (1.0 - cfg.beta1.powi(t)),
            inv_bias2: 1.0 / (1.0 - cfg.beta2.powi(t)),
            eps: cfg.eps,
            decay: (decays && cfg.weight_decay > 0.0).then_some(1.0 - lr * cfg.weight_decay),
            lr,
            amsgrad: cfg.amsgrad,
        }
    }
}

/// Floating-point element types the fused update runs on.
trait Real: WithDType {
    fn sqrt(self) -> Self;
    /// The larger of two values (NaN propagates from either, as `torch.maximum` does).
    fn max_nan(self, other: Self) -> Self;
}

impl Real for f32 {
    fn sqrt(self) -> Self {
        f32::sqrt(self)
    }
    fn max_nan(self, other: Self) -> Self {
        if self.is_nan() || other.is_nan() {
            f32::NAN
        } else {
            self.max(other)
        }
    }
}

impl Real for f64 {
    fn sqrt(self) -> Self {
        f64::sqrt(self)
    }
    fn max_nan(self, other: Self) -> Self {
        if self.is_nan() || other.is_nan() {
            f64::NAN
        } else {
            self.max(other)
        }
    }
}

/// Elements per parallel chunk of the fused update.
const CHUNK: usize = 16 * 1024;

/// The fused update of one parameter. Every operation mirrors one candle op of
/// [`adamw_step_composed`] (`affine` is `x * mul + add`), so the results are bit-identical.
/// `v_max` is the running maximum of `v` with AMSGrad, empty without.
fn fused_update<T: Real>(
    p: &mut [T],
    g: &[T],
    m: &mut [T],
    v: &mut [T],
    v_max: &mut [T],
    k: &Coefficients,
) {
    let c = |x: f64| T::from_f64(x);
    let (b1, c1, b2, c2) = (
        c(k.beta1),
        c(k.one_minus_beta1),
        c(k.beta2),
        c(k.one_minus_beta2),
    );
    let (ih1, ih2, eps, lr, one, zero) = (
        c(k.inv_bias1),
        c(k.inv_bias2),
        c(k.eps),
        c(k.lr),
        T::one(),
        T::zero(),
    );
    let decay = k.decay.map(c);
    let amsgrad = k.amsgrad;
    let run = |p: &mut [T], g: &[T], m: &mut [T], v: &mut [T], v_max: &mut [T]| {
        for (i, (((p, &g), m), v)) in p
            .iter_mut()
            .zip(g)
            .zip(m.iter_mut())
            .zip(v.iter_mut())
            .enumerate()
        {
            *m = (*m * b1 + zero) + (g * c1 + zero);
            *v = (*v * b2 + zero) + ((g * g) * c2 + zero);
            let m_hat = *m * ih1 + zero;
            let second = if amsgrad {
                v_max[i] = v_max[i].max_nan(*v);
                v_max[i]
            } else {
                *v
            };
            let v_hat = second * ih2 + zero;
            let update = m_hat / (v_hat.sqrt() * one + eps);
            let base = match decay {
                Some(d) => *p * d + zero,
                None => *p,
            };
            *p = base - (update * lr + zero);
        }
    };
    // Without AMSGrad `v_max` is empty and never indexed.
    if p.len() < 2 * CHUNK {
        run(p, g, m, v, v_max);
    } else if amsgrad {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .zip(v_max.par_chunks_mut(CHUNK))
            .for_each(|((((p, g), m), v), x)| run(p, g, m, v, x));
    } else {
        p.par_chunks_mut(CHUNK)
            .zip(g.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK))
            .zip(v.par_chunks_mut(CHUNK))
            .for_each(|(((p, g), m), v)| run(p, g, m, v, &mut []));
    }
}

/// The in-place op: the parameter's storage is the destination, the gradient the source, the
/// moments are borrowed from the optimiser.
struct FusedAdamW<'a> {
    moments: Mutex<&'a mut Moments>,
    coefficients: Coefficients,
}

impl InplaceOp2 for FusedAdamW<'_> {
    fn name(&self) -> &'static str {
        "flowfm-fused-adamw"
    }

    fn cpu_fwd(
        &self,
        s1: &mut CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> Result<()> {
        let (Some((p0, p1)), Some((g0, g1))) = (l1.contiguous_offsets(), l2.contiguous_offsets())
        else {
            candle_core::bail!("{}: parameter and gradient must be contiguous", self.name());
        };
        let mut moments = self
            .moments
            .lock()
            .map_err(|_| candle_core::Error::Msg("fused AdamW: poisoned lock".into()))?;
        let k = &self.coefficients;
        match (s1, s2, &mut **moments) {
            (CpuStorage::F32(p), CpuStorage::F32(g), Moments::Host32 { m, v, v_max }) => {
                fused_update(&mut p[p0..p1], &g[g0..g1], m, v, v_max, k)
            }
            (CpuStorage::F64(p), CpuStorage::F64(g), Moments::Host64 { m, v, v_max }) => {
                fused_update(&mut p[p0..p1], &g[g0..g1], m, v, v_max, k)
            }
            (p, g, _) => candle_core::bail!(
                "{}: parameter {:?}, gradient {:?} and moments do not match",
                self.name(),
                p.dtype(),
                g.dtype()
            ),
        }
        Ok(())
    }
}

/// The optimiser state of one parameter as tensors: first and second moment, and with AMSGrad
/// the running maximum of the second moment.
#[derive(Clone, Debug)]
pub struct ComposedState {
    /// First moment.
    pub m: Tensor,
    /// Second moment.
    pub v: Tensor,
    /// Running maximum of `v` (AMSGrad only).
    pub v_max: Option<Tensor>,
}

impl ComposedState {
    /// The state before the first step (zeros), for `cfg`.
    pub fn zeros(var: &Var, cfg: &AdamWConfig) -> Result<Self> {
        Ok(Self {
            m: var.zeros_like()?,
            v: var.zeros_like()?,
            v_max: if cfg.amsgrad {
                Some(var.zeros_like()?)
            } else {
                None
            },
        })
    }
}

/// One AdamW update of `var` from its gradient `g` with candle ops (the reference the fused
/// update is tested against, and the path on devices other than the CPU). Returns the new state.
///
/// # Shapes
/// - `var`, `g` and every tensor of `state`: the parameter's shape
pub fn adamw_step_composed(
    var: &Var,
    g: &Tensor,
    state: &ComposedState,
    cfg: &AdamWConfig,
    step: u64,
    lr: f64,
) -> Result<ComposedState> {
    let k = Coefficients::new(cfg, step, lr, decays(var));
    let g = g.detach();
    let m = ((&state.m * k.beta1)? + (&g * k.one_minus_beta1)?)?;
    let v = ((&state.v * k.beta2)? + (g.sqr()? * k.one_minus_beta2)?)?;
    let m_hat = m.affine(k.inv_bias1, 0.0)?;
    let v_max = match (&state.v_max, cfg.amsgrad) {
        (Some(old), true) => Some(old.maximum(&v)?),
        (None, false) => None,
        _ => candle_core::bail!("AdamW: AMSGrad state does not match the configuration"),
    };
    let v_hat = v_max.as_ref().unwrap_or(&v).affine(k.inv_bias2, 0.0)?;
    let update = (m_hat / (v_hat.sqrt()? + k.eps)?)?;
    let mut p = var.as_tensor().detach();
    if let Some(d) = k.decay {
        p = (&p * d)?;
    }
    var.set(&(p - (update * lr)?)?)?;
    Ok(ComposedState { m, v, v_max })
}

impl AdamW {
    /// An optimiser over `params` (name, variable), sorted by name for a stable state layout.
    pub fn new(mut params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    decay: decays(&var),
                    moments: Moments::zeros(&var, cfg.amsgrad)?,
                    name,
                    var,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Self {
            slots,
            cfg,
            step: 0,
        })
    }

    /// Number of steps taken.
    pub fn steps_taken(&self) -> u64 {
        self.step
    }

    /// One update with learning rate `lr` from `grads`; parameters without a gradient are left
    /// untouched (their moments too).
    pub fn step(&mut self, grads: &GradStore, lr: f64) -> Result<()> {
        self.step += 1;
        let step = self.step;
        let cfg = self.cfg;
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            if g.shape() != s.var.shape() {
                candle_core::bail!(
                    "AdamW: gradient of `{}` has shape {:?}, the parameter {:?}",
                    s.name,
                    g.dims(),
                    s.var.dims()
                );
            }
            match &mut s.moments {
                Moments::Tensors { m, v, v_max } => {
                    let state = ComposedState {
                        m: m.clone(),
                        v: v.clone(),
                        v_max: v_max.clone(),
                    };
                    let new = adamw_step_composed(&s.var, g, &state, &cfg, step, lr)?;
                    (*m, *v, *v_max) = (new.m, new.v, new.v_max);
                }
                moments => {
                    let op = FusedAdamW {
                        coefficients: Coefficients::new(&cfg, step, lr, s.decay),
                        moments: Mutex::new(moments),
                    };
                    let g = g.detach().to_dtype(s.var.dtype())?.contiguous()?;
                    s.var.as_tensor().inplace_op2(&g, &op)?;
                }
            }
        }
        Ok(())
    }

    /// The state as named tensors (`adam_m.<name>`, `adam_v.<name>`, and with AMSGrad
    /// `adam_vmax.<name>`) for checkpoints (copies: later steps do not change them).
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let prefixes = state_prefixes(self.cfg.amsgrad);
        let mut out = Vec::with_capacity(prefixes.len() * self.slots.len());
        for s in &self.slots {
            // Building a tensor from a host vector of the parameter's own shape cannot fail on
            // the CPU; on other devices a failed copy leaves the state out, which `load_state`
            // then reports by name.
            if let Ok(tensors) = s.moments.tensors(&s.var, self.cfg.amsgrad) {
                for (prefix, t) in prefixes.iter().zip(tensors) {
                    out.push((format!("{prefix}.{}", s.name), t));
                }
            }
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        let prefixes = state_prefixes(self.cfg.amsgrad);
        for s in &mut self.slots {
            let mut pair = Vec::with_capacity(prefixes.len());
            for prefix in prefixes {
                let key = format!("{prefix}.{}", s.name);
                let Some(t) = tensors.get(&key) else {
                    let why = if *prefix == "adam_vmax" {
                        " (the run uses AMSGrad; was the checkpoint written without it?)"
                    } else {
                        ""
                    };
                    candle_core::bail!(
                        "optimizer state `{key}` is missing from the checkpoint{why}"
                    );
                };
                if t.shape() != s.var.shape() {
                    candle_core::bail!(
                        "optimizer state `{key}` has shape {:?}, the parameter has {:?}",
                        t.dims(),
                        s.var.dims()
                    );
                }
                pair.push(t);
            }
            s.moments.set(&pair)?;
        }
        self.step = step;
        Ok(())
    }
}

/// The global L2 norm of the gradients of `vars`; if it exceeds `max_norm` (> 0), the gradients are
/// scaled in place so that it equals `max_norm`. Returns the norm before clipping (NaN/inf if any
/// gradient is not finite).
pub fn clip_grad_norm(grads: &mut GradStore, vars: &[Var], max_norm: Option<f64>) -> Result<f64> {
    let mut sq = 0.0f64;
    for v in vars {
        if let Some(g) = grads.get(v.as_tensor()) {
            sq += g
                .sqr()?
                .sum_all()?
                .to_dtype(candle_core::DType::F64)?
                .to_scalar::<f64>()?;
        }
    }
    let norm = sq.sqrt();
    if let Some(max) = max_norm {
        if norm.is_finite() && norm > max && max > 0.0 {
            let scale = max / norm;
            for v in vars {
                if let Some(g) = grads.remove(v.as_tensor()) {
                    grads.insert(v.as_tensor(), (g * scale)?);
                }
            }
        }
    }
    Ok(norm)
}

/// Learning rate with linear warm-up from 0 and cosine decay to `min_lr` at `total_steps`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct WarmupCosine {
    /// Peak learning rate.
    pub lr: f64,
    /// Final learning rate.
    pub min_lr: f64,
    /// Warm-up steps.
    pub warmup_steps: u64,
    /// Total steps.
    pub total_steps: u64,
}

impl WarmupCosine {
    /// The learning rate at 0-based `step` (the rate used for the update numbered `step + 1`).
    pub fn at(&self, step: u64) -> f64 {
        if self.warmup_steps > 0 && step < self.warmup_steps {
            return self.lr * (step + 1) as f64 / self.warmup_steps as f64;
        }
        let decay_steps = self.total_steps.saturating_sub(self.warmup_steps).max(1);
        let progress = ((step - self.warmup_steps.min(step)) as f64 / decay_steps as f64).min(1.0);
        self.min_lr
            + 0.5 * (self.lr - self.min_lr) * (1.0 + (std::f64::consts::PI * progress).cos())
    }
}

/// Exponential moving average of a set of tensors (the generator's weights, for sampling).
///
/// The decay warms up: update `n` (1-based) uses `min(decay, (1 + n) / (10 + n))`. Without it a
/// short run samples from mostly random weights (with 0.999, the initial weights still make up
/// 0.999^300 = 74 % of the average after 300 steps); long runs are unaffected.
pub struct Ema {
    decay: f64,
    updates: u64,
    shadow: Vec<(String, Var, Tensor)>,
}

impl Ema {
    /// Starts the average at the current values of `params`.
    pub fn new(params: &[(String, Var)], decay: f64) -> Result<Self> {
        let shadow = params
            .iter()
            .map(|(n, v)| Ok((n.clone(), v.clone(), v.as_tensor().detach().copy()?)))
            .collect::<Result<_>>()?;
        Ok(Self {
            decay,
            updates: 0,
            shadow,
        })
    }

    /// The decay used by update number `n` (1-based).
    pub fn decay_at(&self, n: u64) -> f64 {
        self.decay.min((1.0 + n as f64) / (10.0 + n as f64))
    }

    /// `shadow = d * shadow + (1 - d) * param` with the warmed-up decay `d` of this update.
    pub fn update(&mut self) -> Result<()> {
        self.updates += 1;
        let d = self.decay_at(self.updates);
        for (_, var, s) in &mut self.shadow {
            *s = ((&*s * d)? + (var.as_tensor().detach() * (1.0 - d))?)?;
        }
        Ok(())
    }

    /// Sets the number of updates done (on resume: the checkpoint's step).
    pub fn set_updates(&mut self, n: u64) {
        self.updates = n;
    }

    /// The averaged tensors by parameter name.
    pub fn tensors(&self) -> Vec<(String, Tensor)> {
        self.shadow
            .iter()
            .map(|(n, _, s)| (n.clone(), s.clone()))
            .collect()
    }

    /// Restores averaged tensors saved from [`Ema::tensors`] (keys as `ema.<name>`).
    pub fn load(&mut self, tensors: &HashMap<String, Tensor>) -> Result<()> {
        for (n, _, s) in &mut self.shadow {
            let key = format!("ema.{n}");
            match tensors.get(&key) {
                Some(t) if t.shape() == s.shape() => *s = t.clone(),
                Some(t) => candle_core::bail!(
                    "EMA tensor `{key}` has shape {:?}, expected {:?}",
                    t.dims(),
                    s.dims()
                ),
                None => candle_core::bail!("EMA tensor `{key}` is missing from the checkpoint"),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use flowfm_core::Tolerance;

    #[test]
    fn first_adamw_step_moves_each_parameter_by_lr_against_the_gradient_sign() {
        // After one step, m_hat = g and v_hat = g^2, so the update is lr * g / (|g| + eps).
        let w =
            Var::from_tensor(&Tensor::new(&[[1.0f64, -2.0], [0.5, 3.0]], &Device::Cpu).unwrap())
                .unwrap();
        let b = Var::from_tensor(&Tensor::new(&[0.25f64, -0.5], &Device::Cpu).unwrap()).unwrap();
        let cfg = AdamWConfig {
            weight_decay: 0.1,
            ..Default::default()
        };
        let mut opt =
            AdamW::new(vec![("w".into(), w.clone()), ("b".into(), b.clone())], cfg).unwrap();
        let loss = (w.as_tensor().sum_all().unwrap() * 3.0)
            .unwrap()
            .add(&b.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap();
        let grads = loss.backward().unwrap();
        opt.step(&grads, 0.01).unwrap();
        let lr = 0.01;
        // w decays: p * (1 - lr * wd) - lr * sign(g), g = 3 everywhere.
        let expected_w: Vec<f64> = [1.0, -2.0, 0.5, 3.0]
            .iter()
            .map(|p| p * (1.0 - lr * 0.1) - lr)
            .collect();
        let got_w: Vec<f64> = w.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
        Tolerance::new(1e-9, 1e-9).assert_close(&got_w, &expected_w);
        // b does not decay (a vector); g = 2b.
        let expected_b = [0.25 - lr, -0.5 + lr];
        Tolerance::new(1e-9, 1e-9)
            .assert_close(&b.as_tensor().to_vec1::<f64>().unwrap(), &expected_b);
    }

    /// Runs `steps` AdamW steps on a 2-D f32 parameter (decayed) and a 1-D one (not decayed)
    /// large enough for the parallel path, with gradients `sin(k * p)`; returns the parameters.
    fn run_fused(steps: usize) -> Vec<Vec<f32>> {
        let mut rng = flowfm_core::SeededRng::new(7);
        let dev = Device::Cpu;
        let w =
            Var::from_tensor(&rng.normal_tensor((300, 250), DType::F32, &dev).unwrap()).unwrap();
        let b = Var::from_tensor(&rng.normal_tensor(40_000, DType::F32, &dev).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("w".into(), w.clone()), ("b".into(), b.clone())],
            AdamWConfig::default(),
        )
        .unwrap();
        for k in 0..steps {
            let loss = ((w.as_tensor() * (k as f64 + 1.0))
                .unwrap()
                .cos()
                .unwrap()
                .sum_all())
            .unwrap()
            .add(&b.as_tensor().sqr().unwrap().sum_all().unwrap())
            .unwrap();
            opt.step(&loss.backward().unwrap(), 1e-2).unwrap();
        }
        [w, b]
            .iter()
            .map(|v| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap())
            .collect()
    }

    #[test]
    fn fused_update_is_bit_identical_to_the_composed_candle_ops() {
        let mut rng = flowfm_core::SeededRng::new(3);
        let dev = Device::Cpu;
        for (shape, lr, amsgrad) in [
            (vec![64usize, 33], 1e-3, false),
            (vec![40_000], 3e-2, false),
            (vec![64usize, 33], 1e-3, true),
            (vec![40_000], 3e-2, true),
        ] {
            let cfg = AdamWConfig {
                amsgrad,
                ..AdamWConfig::default()
            };
            let init = rng
                .normal_tensor(shape.as_slice(), DType::F32, &dev)
                .unwrap();
            let fused = Var::from_tensor(&init.copy().unwrap()).unwrap();
            let composed = Var::from_tensor(&init.copy().unwrap()).unwrap();
            let mut opt = AdamW::new(vec![("p".into(), fused.clone())], cfg).unwrap();
            let mut state = ComposedState::zeros(&composed, &cfg).unwrap();
            for step in 1..=4u64 {
                // Large gradients first, then small ones: the running maximum of the second
                // moment parts from the moment itself.
                let scale = if step <= 2 { 3.0 } else { 0.1 };
                let g = (rng
                    .normal_tensor(shape.as_slice(), DType::F32, &dev)
                    .unwrap()
                    * scale)
                    .unwrap();
                let loss = fused.as_tensor().mul(&g).unwrap().sum_all().unwrap();
                opt.step(&loss.backward().unwrap(), lr).unwrap();
                state = adamw_step_composed(&composed, &g, &state, &cfg, step, lr).unwrap();
                let a: Vec<f32> = fused.as_tensor().flatten_all().unwrap().to_vec1().unwrap();
                let b: Vec<f32> = composed
                    .as_tensor()
                    .flatten_all()
                    .unwrap()
                    .to_vec1()
                    .unwrap();
                let differ = a
                    .iter()
                    .zip(&b)
                    .filter(|(x, y)| x.to_bits() != y.to_bits())
                    .count();
                assert_eq!(
                    differ, 0,
                    "step {step}, shape {shape:?}: {differ} elements differ"
                );
            }
            let saved: HashMap<String, Tensor> = opt.state_tensors().into_iter().collect();
            let flat = |t: &Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
            assert_eq!(flat(&saved["adam_m.p"]), flat(&state.m));
            assert_eq!(flat(&saved["adam_v.p"]), flat(&state.v));
            match &state.v_max {
                Some(v_max) => {
                    assert_eq!(flat(&saved["adam_vmax.p"]), flat(v_max));
                    // The maximum did part from the moment, so the AMSGrad path was exercised.
                    assert_ne!(flat(v_max), flat(&state.v));
                }
                None => assert!(!saved.contains_key("adam_vmax.p")),
            }
        }
    }

    #[test]
    fn fused_steps_do_not_depend_on_the_thread_count() {
        let one = rayon::ThreadPoolBuilder::new()
            .num_threads(1)
            .build()
            .unwrap();
        let three = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .unwrap();
        let a = one.install(|| run_fused(3));
        let b = three.install(|| run_fused(3));
        assert_eq!(a, b);
        // The parameters did move.
        let c = run_fused(0);
        assert_ne!(a, c);
    }

    #[test]
    fn adamw_minimises_a_quadratic() {
        let x = Var::from_tensor(&Tensor::new(&[5.0f32, -3.0], &Device::Cpu).unwrap()).unwrap();
        let mut opt = AdamW::new(
            vec![("x".into(), x.clone())],
            AdamWConfig {
                weight_decay: 0.0,
                ..Default::default()
            },
        )
        .unwrap();
        for _ in 0..500 {
            let loss = x.as_tensor().sqr().unwrap().sum_all().unwrap();
            opt.step(&loss.backward().unwrap(), 0.05).unwrap();
        }
        let v = x.as_tensor().to_vec1::<f32>().unwrap();
        assert!(v.iter().all(|a| a.abs() < 0.05), "{v:?}");
    }

    #[test]
    fn amsgrad_state_resumes_identically_and_is_required() {
        let cfg = AdamWConfig {
            amsgrad: true,
            ..AdamWConfig::default()
        };
        let make =
            || Var::from_tensor(&Tensor::new(&[1.0f64, 2.0, -1.0], &Device::Cpu).unwrap()).unwrap();
        // Gradients that shrink step by step: the maximum of the second moment matters.
        let loss_of = |v: &Var, k: usize| {
            let w = Tensor::new(&[4.0 / (1.0 + k as f64), -1.0, 0.5], &Device::Cpu).unwrap();
            v.as_tensor().mul(&w).unwrap().sum_all().unwrap()
        };
        let a = make();
        let mut oa = AdamW::new(vec![("p".into(), a.clone())], cfg).unwrap();
        for k in 0..5 {
            oa.step(&loss_of(&a, k).backward().unwrap(), 0.1).unwrap();
        }
        let state: HashMap<String, Tensor> = oa.state_tensors().into_iter().collect();
        assert!(state.contains_key("adam_vmax.p"));
        let b = Var::from_tensor(&a.as_tensor().copy().unwrap()).unwrap();
        let mut ob = AdamW::new(vec![("p".into(), b.clone())], cfg).unwrap();
        ob.load_state(&state, oa.steps_taken()).unwrap();
        for k in 5..10 {
            oa.step(&loss_of(&a, k).backward().unwrap(), 0.1).unwrap();
            ob.step(&loss_of(&b, k).backward().unwrap(), 0.1).unwrap();
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f64>().unwrap(),
            b.as_tensor().to_vec1::<f64>().unwrap()
        );
        // A checkpoint without the maximum cannot resume an AMSGrad run.
        let mut without = state.clone();
        without.remove("adam_vmax.p");
        let mut oc = AdamW::new(vec![("p".into(), make())], cfg).unwrap();
        let err = oc.load_state(&without, 5).unwrap_err().to_string();
        assert!(
            err.contains("adam_vmax.p") && err.contains("AMSGrad"),
            "{err}"
        );
    }

    #[test]
    fn saved_state_resumes_identically() {
        let make =
            || Var::from_tensor(&Tensor::new(&[1.0f64, 2.0, -1.0], &Device::Cpu).unwrap()).unwrap();
        let loss_of = |v: &Var| {
            v.as_tensor()
                .sqr()
                .unwrap()
                .sum_all()
                .unwrap()
                .mul(&Tensor::new(3.0f64, &Device::Cpu).unwrap())
                .unwrap()
        };
        let a = make();
        let mut oa = AdamW::new(vec![("p".into(), a.clone())], AdamWConfig::default()).unwrap();
        for _ in 0..5 {
            oa.step(&loss_of(&a).backward().unwrap(), 0.1).unwrap();
        }
        let state: HashMap<String, Tensor> = oa.state_tensors().into_iter().collect();
        let b = Var::from_tensor(&a.as_tensor().copy().unwrap()).unwrap();
        let mut ob = AdamW::new(vec![("p".into(), b.clone())], AdamWConfig::default()).unwrap();
        ob.load_state(&state, oa.steps_taken()).unwrap();
        for _ in 0..5 {
            oa.step(&loss_of(&a).backward().unwrap(), 0.1).unwrap();
            ob.step(&loss_of(&b).backward().unwrap(), 0.1).unwrap();
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f64>().unwrap(),
            b.as_tensor().to_vec1::<f64>().unwrap()
        );
    }

    #[test]
    fn clipping_scales_the_global_norm_to_the_limit() {
        let a = Var::from_tensor(&Tensor::new(&[3.0f64], &Device::Cpu).unwrap()).unwrap();
        let b = Var::from_tensor(&Tensor::new(&[4.0f64], &Device::Cpu).unwrap()).unwrap();
        // d/da (a^2/2) = 3, d/db (b^2/2) = 4: global norm 5.
        let loss = ((a.as_tensor().sqr().unwrap() + b.as_tensor().sqr().unwrap()).unwrap() * 0.5)
            .unwrap()
            .sum_all()
            .unwrap();
        let mut grads = loss.backward().unwrap();
        let vars = [a.clone(), b.clone()];
        let norm = clip_grad_norm(&mut grads, &vars, Some(1.0)).unwrap();
        assert!(Tolerance::F64.close(norm, 5.0));
        let ga = grads.get(a.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0];
        let gb = grads.get(b.as_tensor()).unwrap().to_vec1::<f64>().unwrap()[0];
        assert!(Tolerance::F64.close(ga, 0.6) && Tolerance::F64.close(gb, 0.8));
    }

    #[test]
    fn warmup_then_cosine_hits_its_landmarks() {
        let s = WarmupCosine {
            lr: 1.0,
            min_lr: 0.1,
            warmup_steps: 10,
            total_steps: 110,
        };
        assert!(Tolerance::F64.close(s.at(0), 0.1));
        assert!(Tolerance::F64.close(s.at(9), 1.0));
        assert!(Tolerance::F64.close(s.at(10), 1.0));
        assert!(Tolerance::F64.close(s.at(60), 0.55));
        assert!(Tolerance::F64.close(s.at(110), 0.1));
        assert!(Tolerance::F64.close(s.at(500), 0.1));
    }

    #[test]
    fn ema_converges_to_a_constant_parameter() {
        let p = Var::from_tensor(&Tensor::zeros(2, DType::F64, &Device::Cpu).unwrap()).unwrap();
        let mut ema = Ema::new(&[("p".into(), p.clone())], 0.5).unwrap();
        p.set(&Tensor::new(&[1.0f64, 2.0], &Device::Cpu).unwrap())
            .unwrap();
        ema.update().unwrap();
        ema.update().unwrap();
        // Warm-up decays 2/11 then 3/12 (both below 0.5): 0 -> 9/11 x -> (3/12)(9/11) x + (9/12) x.
        let k = 0.25 * 9.0 / 11.0 + 0.75;
        let got = ema.tensors()[0].1.to_vec1::<f64>().unwrap();
        Tolerance::F64.assert_close(&got, &[k, 2.0 * k]);
        // Far into a run the configured decay takes over: (1 + n) / (10 + n) >= 0.5 from n = 8.
        assert!((ema.decay_at(8) - 0.5).abs() < 1e-15);
        assert!((ema.decay_at(1) - 2.0 / 11.0).abs() < 1e-15);
    }

    #[test]
    fn a_short_run_s_average_forgets_the_initial_weights() {
        // With decay 0.999 and no warm-up, 300 updates towards 1 from 0 would reach only
        // 1 - 0.999^300 = 0.26; with the warm-up the average is within 1e-3 of the parameter.
        let p = Var::from_tensor(&Tensor::zeros(1, DType::F64, &Device::Cpu).unwrap()).unwrap();
        let mut ema = Ema::new(&[("p".into(), p.clone())], 0.999).unwrap();
        p.set(&Tensor::new(&[1.0f64], &Device::Cpu).unwrap())
            .unwrap();
        for _ in 0..300 {
            ema.update().unwrap();
        }
        let got = ema.tensors()[0].1.to_vec1::<f64>().unwrap()[0];
        assert!(got > 0.999, "EMA after 300 updates: {got}");
    }
}
