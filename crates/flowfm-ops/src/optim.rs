//! AdamW (Loshchilov & Hutter, ICLR 2019) with decoupled weight decay, per-parameter decay
//! exclusion and a state that is saved and restored with training checkpoints.
//!
//! candle-nn's `AdamW` cannot export its moments nor exclude parameters from weight decay, both of
//! which exact resumption and the usual recipe (no decay on norms and biases) need.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use std::collections::HashMap;

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
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
        }
    }
}

struct Slot {
    name: String,
    var: Var,
    decay: bool,
    m: Tensor,
    v: Tensor,
}

/// AdamW over named variables.
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

impl AdamW {
    /// An optimiser over `params` (name, variable), sorted by name for a stable state layout.
    pub fn new(mut params: Vec<(String, Var)>, cfg: AdamWConfig) -> Result<Self> {
        params.sort_by(|a, b| a.0.cmp(&b.0));
        let slots = params
            .into_iter()
            .map(|(name, var)| {
                Ok(Slot {
                    decay: decays(&var),
                    m: var.zeros_like()?,
                    v: var.zeros_like()?,
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
        let t = self.step as i32;
        let c = self.cfg;
        let bc1 = 1.0 - c.beta1.powi(t);
        let bc2 = 1.0 - c.beta2.powi(t);
        for s in &mut self.slots {
            let Some(g) = grads.get(s.var.as_tensor()) else {
                continue;
            };
            let g = g.detach();
            s.m = ((&s.m * c.beta1)? + (&g * (1.0 - c.beta1))?)?;
            s.v = ((&s.v * c.beta2)? + (g.sqr()? * (1.0 - c.beta2))?)?;
            let m_hat = (&s.m / bc1)?;
            let v_hat = (&s.v / bc2)?;
            let update = (m_hat / (v_hat.sqrt()? + c.eps)?)?;
            let mut p = s.var.as_tensor().detach();
            if s.decay && c.weight_decay > 0.0 {
                p = (&p * (1.0 - lr * c.weight_decay))?;
            }
            s.var.set(&(p - (update * lr)?)?)?;
        }
        Ok(())
    }

    /// The moments as named tensors (`adam_m.<name>`, `adam_v.<name>`) for checkpoints.
    pub fn state_tensors(&self) -> Vec<(String, Tensor)> {
        let mut out = Vec::with_capacity(2 * self.slots.len());
        for s in &self.slots {
            out.push((format!("adam_m.{}", s.name), s.m.clone()));
            out.push((format!("adam_v.{}", s.name), s.v.clone()));
        }
        out
    }

    /// Restores moments and the step count saved by [`AdamW::state_tensors`].
    pub fn load_state(&mut self, tensors: &HashMap<String, Tensor>, step: u64) -> Result<()> {
        for s in &mut self.slots {
            for (prefix, slot) in [("adam_m", &mut s.m), ("adam_v", &mut s.v)] {
                let key = format!("{prefix}.{}", s.name);
                let Some(t) = tensors.get(&key) else {
                    candle_core::bail!("optimizer state `{key}` is missing from the checkpoint");
                };
                if t.shape() != slot.shape() {
                    candle_core::bail!(
                        "optimizer state `{key}` has shape {:?}, the parameter has {:?}",
                        t.dims(),
                        slot.dims()
                    );
                }
                *slot = t.to_dtype(slot.dtype())?.to_device(slot.device())?;
            }
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
