//! Finite-difference gradient checking in f64 for any op or small module.
//!
//! The scalar checked is `L = sum(f(inputs) * R)` with a fixed random projection `R`, so every
//! output element contributes with its own weight. For each input, autograd's `dL/dx` is compared
//! elementwise with the central difference `(L(x + h e_i) - L(x - h e_i)) / 2h`, on every element
//! or on a seeded random subset when the input is large.

use candle_core::{DType, Result, Tensor, Var};
use flowfm_core::{SeededRng, Tolerance};

/// Settings of a gradient check.
#[derive(Clone, Debug)]
pub struct GradCheck {
    /// Finite-difference step.
    pub step: f64,
    /// Tolerance between autograd and the central difference.
    pub tolerance: Tolerance,
    /// At most this many elements are probed per input (a seeded random subset beyond it).
    pub max_probes: usize,
    /// Seed of the projection and of the probe subset.
    pub seed: u64,
}

impl Default for GradCheck {
    fn default() -> Self {
        Self {
            step: 1e-6,
            tolerance: Tolerance::new(1e-6, 1e-8),
            max_probes: 400,
            seed: 0,
        }
    }
}

/// The outcome for one input.
#[derive(Clone, Debug)]
pub struct InputReport {
    /// Index of the input.
    pub index: usize,
    /// How many elements were probed.
    pub probed: usize,
    /// Largest |autograd - finite difference|.
    pub max_abs_err: f64,
    /// Description of the first mismatch, if any.
    pub mismatch: Option<String>,
}

/// The outcome of a gradient check.
#[derive(Clone, Debug)]
pub struct GradReport {
    /// One entry per input that was checked.
    pub inputs: Vec<InputReport>,
}

impl GradReport {
    /// Whether every checked input matched.
    pub fn ok(&self) -> bool {
        self.inputs.iter().all(|r| r.mismatch.is_none())
    }

    /// Panics with the details of every failing input.
    #[track_caller]
    pub fn assert_ok(&self, what: &str) {
        let failures: Vec<String> = self
            .inputs
            .iter()
            .filter_map(|r| {
                r.mismatch
                    .as_ref()
                    .map(|m| format!("input {}: {m}", r.index))
            })
            .collect();
        if !failures.is_empty() {
            panic!("gradient check failed for {what}:\n{}", failures.join("\n"));
        }
    }

    /// The report of input `index`.
    pub fn input(&self, index: usize) -> Option<&InputReport> {
        self.inputs.iter().find(|r| r.index == index)
    }
}

impl GradCheck {
    /// Checks the gradients of `f` with respect to the inputs whose `wrt` flag is true (the
    /// others are held constant). Inputs are converted to f64.
    pub fn run<F>(&self, f: F, inputs: &[Tensor], wrt: &[bool]) -> Result<GradReport>
    where
        F: Fn(&[Tensor]) -> Result<Tensor>,
    {
        if wrt.len() != inputs.len() {
            candle_core::bail!(
                "gradcheck: {} inputs but {} wrt flags",
                inputs.len(),
                wrt.len()
            );
        }
        let base: Vec<Tensor> = inputs
            .iter()
            .map(|t| t.to_dtype(DType::F64).and_then(|t| t.contiguous()))
            .collect::<Result<_>>()?;
        let mut rng = SeededRng::new(self.seed);
        let out_shape = f(&base)?.shape().clone();
        let projection = rng.normal_tensor(out_shape, DType::F64, base[0].device())?;
        let scalar = |xs: &[Tensor]| -> Result<f64> {
            f(xs)?.mul(&projection)?.sum_all()?.to_scalar::<f64>()
        };

        // Autograd.
        let vars: Vec<Option<Var>> = base
            .iter()
            .zip(wrt)
            .map(|(t, &w)| {
                if w {
                    Var::from_tensor(t).map(Some)
                } else {
                    Ok(None)
                }
            })
            .collect::<Result<_>>()?;
        let graph_inputs: Vec<Tensor> = base
            .iter()
            .zip(&vars)
            .map(|(t, v)| {
                v.as_ref()
                    .map_or_else(|| t.clone(), |v| v.as_tensor().clone())
            })
            .collect();
        let loss = f(&graph_inputs)?.mul(&projection)?.sum_all()?;
        let grads = loss.backward()?;

        let mut reports = Vec::new();
        for (i, var) in vars.iter().enumerate() {
            let Some(var) = var else { continue };
            let shape = base[i].shape().clone();
            let n = shape.elem_count();
            let autograd: Vec<f64> = match grads.get(var.as_tensor()) {
                Some(g) => g.flatten_all()?.to_vec1()?,
                None => vec![0.0; n],
            };
            let values: Vec<f64> = base[i].flatten_all()?.to_vec1()?;
            let probes: Vec<usize> = if n <= self.max_probes {
                (0..n).collect()
            } else {
                let mut p = rng.derive_indexed("probes", i as u64).permutation(n);
                p.truncate(self.max_probes);
                p.sort_unstable();
                p
            };
            let mut numeric = Vec::with_capacity(probes.len());
            let mut analytic = Vec::with_capacity(probes.len());
            for &j in &probes {
                let eval_at = |delta: f64| -> Result<f64> {
                    let mut v = values.clone();
                    v[j] += delta;
                    let mut xs = base.clone();
                    xs[i] = Tensor::from_vec(v, shape.clone(), base[i].device())?;
                    scalar(&xs)
                };
                let plus = eval_at(self.step)?;
                let minus = eval_at(-self.step)?;
                numeric.push((plus - minus) / (2.0 * self.step));
                analytic.push(autograd[j]);
            }
            let max_abs_err = numeric
                .iter()
                .zip(&analytic)
                .map(|(a, b)| (a - b).abs())
                .fold(0.0, f64::max);
            let mismatch = self.tolerance.check(&analytic, &numeric).err().map(|m| {
                format!(
                    "{} of {} probed elements differ (shape {:?}); first at element {}: autograd {} vs finite difference {}; max |err| {}",
                    m.count, probes.len(), shape.dims(), probes[m.index], m.actual, m.expected, m.max_abs_diff
                )
            });
            reports.push(InputReport {
                index: i,
                probed: probes.len(),
                max_abs_err,
                mismatch,
            });
        }
        Ok(GradReport { inputs: reports })
    }
}

/// Checks every input of `f` with default settings.
pub fn check_gradients<F>(f: F, inputs: &[Tensor]) -> Result<GradReport>
where
    F: Fn(&[Tensor]) -> Result<Tensor>,
{
    GradCheck::default().run(f, inputs, &vec![true; inputs.len()])
}
