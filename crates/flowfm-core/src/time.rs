//! Time conventions, kept apart by type.
//!
//! **Flow time** `t` is an `f64` in [0, 1] with noise at `t = 0` and data at `t = 1`
//! (`x_t = (1 - t) x_0 + t x_1`). **Diffusion steps** `k` are integers in `0..T` with data at
//! `k = 0` and noise at `k = T - 1`. A sampler or objective cannot confuse the two.

use crate::error::CoreError;
use candle_core::{DType, Device, Result, Tensor};

/// A flow time in [0, 1]: 0 is noise, 1 is data.
#[derive(Clone, Copy, Debug, PartialEq, PartialOrd)]
pub struct FlowTime(f64);

impl FlowTime {
    /// Pure noise.
    pub const NOISE: FlowTime = FlowTime(0.0);
    /// Data.
    pub const DATA: FlowTime = FlowTime(1.0);

    /// A validated flow time.
    pub fn new(t: f64) -> std::result::Result<Self, CoreError> {
        if t.is_finite() && (0.0..=1.0).contains(&t) {
            Ok(Self(t))
        } else {
            Err(CoreError::InvalidFlowTime(t))
        }
    }

    /// The value in [0, 1].
    pub fn value(self) -> f64 {
        self.0
    }
}

/// A diffusion step `k` in `0..T`: 0 is (nearly) data, `T - 1` is (nearly) pure noise.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DiffusionStep(usize);

impl DiffusionStep {
    /// A validated step for a schedule of `num_steps` steps.
    pub fn new(k: usize, num_steps: usize) -> std::result::Result<Self, CoreError> {
        if k < num_steps {
            Ok(Self(k))
        } else {
            Err(CoreError::InvalidDiffusionStep { step: k, num_steps })
        }
    }

    /// The step index.
    pub fn index(self) -> usize {
        self.0
    }
}

/// Per-sample flow times for a batch: a rank-1 tensor `(batch,)` with values in [0, 1].
#[derive(Clone, Debug)]
pub struct FlowTimes(Tensor);

impl FlowTimes {
    /// Wraps a `(batch,)` tensor of flow times. The caller guarantees the range (checked values
    /// come from [`FlowTimes::from_values`]).
    pub fn from_tensor(t: Tensor) -> Result<Self> {
        if t.rank() != 1 {
            candle_core::bail!("flow times must have shape (batch,), got {:?}", t.shape());
        }
        Ok(Self(t))
    }

    /// Checked per-sample times.
    pub fn from_values(ts: &[f64], dtype: DType, device: &Device) -> Result<Self> {
        for &t in ts {
            FlowTime::new(t)?;
        }
        Self::from_tensor(Tensor::from_slice(ts, ts.len(), device)?.to_dtype(dtype)?)
    }

    /// The same time for every sample of a batch.
    pub fn constant(t: FlowTime, batch: usize, dtype: DType, device: &Device) -> Result<Self> {
        Self::from_tensor(Tensor::full(t.value(), batch, device)?.to_dtype(dtype)?)
    }

    /// The `(batch,)` tensor.
    pub fn tensor(&self) -> &Tensor {
        &self.0
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        self.0.dims()[0]
    }
}

/// Per-sample diffusion steps for a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DiffusionSteps {
    steps: Vec<usize>,
    num_steps: usize,
}

impl DiffusionSteps {
    /// Checked steps for a schedule of `num_steps` steps.
    pub fn new(steps: Vec<usize>, num_steps: usize) -> std::result::Result<Self, CoreError> {
        for &k in &steps {
            DiffusionStep::new(k, num_steps)?;
        }
        Ok(Self { steps, num_steps })
    }

    /// The same step for every sample of a batch.
    pub fn constant(
        k: DiffusionStep,
        batch: usize,
        num_steps: usize,
    ) -> std::result::Result<Self, CoreError> {
        Self::new(vec![k.index(); batch], num_steps)
    }

    /// The step indices.
    pub fn steps(&self) -> &[usize] {
        &self.steps
    }

    /// The schedule length `T`.
    pub fn num_steps(&self) -> usize {
        self.num_steps
    }

    /// Batch size.
    pub fn batch(&self) -> usize {
        self.steps.len()
    }

    /// The steps as a float tensor `(batch,)` (for time embeddings).
    pub fn to_tensor(&self, dtype: DType, device: &Device) -> Result<Tensor> {
        let v: Vec<f64> = self.steps.iter().map(|&k| k as f64).collect();
        Tensor::from_vec(v, self.steps.len(), device)?.to_dtype(dtype)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_time_rejects_values_outside_unit_interval() {
        assert!(FlowTime::new(0.0).is_ok());
        assert!(FlowTime::new(1.0).is_ok());
        assert_eq!(FlowTime::new(1.5), Err(CoreError::InvalidFlowTime(1.5)));
        assert!(FlowTime::new(f64::NAN).is_err());
        assert!(FlowTimes::from_values(&[0.2, -0.1], DType::F32, &Device::Cpu).is_err());
    }

    #[test]
    fn diffusion_steps_are_bounded_by_schedule_length() {
        assert!(DiffusionSteps::new(vec![0, 999], 1000).is_ok());
        assert_eq!(
            DiffusionSteps::new(vec![1000], 1000),
            Err(CoreError::InvalidDiffusionStep {
                step: 1000,
                num_steps: 1000
            })
        );
    }
}
