//! Heads on top of a representation `z` `(batch, d)`: the downstream classifier, a linear
//! probe, SSL-Wearables' three multi-task binary heads and the projection head of contrastive
//! terms. Every head maps `(batch, in_dim)` to `(batch, out)` logits or features.

use crate::error::ModelError;
use candle_core::{Module, Result, Tensor};
use candle_nn::VarBuilder;
use flowfm_ops::activation::relu;
use flowfm_ops::Linear;
use serde::{Deserialize, Serialize};

fn check_positive(fields: &[(&str, usize)]) -> std::result::Result<(), ModelError> {
    for &(field, v) in fields {
        if v == 0 {
            return Err(ModelError::config(field, "must be > 0"));
        }
    }
    Ok(())
}

fn check_input(what: &str, z: &Tensor, in_dim: usize) -> Result<()> {
    let (_, d) = z.dims2()?;
    if d != in_dim {
        candle_core::bail!(
            "{what}: expected input (batch, {in_dim}), got {:?}",
            z.dims()
        );
    }
    Ok(())
}

/// Configuration of the downstream [`Classifier`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClassifierConfig {
    /// Representation dimension `d`.
    pub in_dim: usize,
    /// Hidden width (512 in SSL-Wearables).
    pub hidden: usize,
    /// Number of classes `K`.
    pub classes: usize,
}

impl ClassifierConfig {
    /// SSL-Wearables' evaluation head: `Linear(d, 512) -> ReLU -> Linear(512, classes)`.
    pub fn new(in_dim: usize, classes: usize) -> Self {
        Self {
            in_dim,
            hidden: 512,
            classes,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> std::result::Result<(), ModelError> {
        check_positive(&[
            ("in_dim", self.in_dim),
            ("hidden", self.hidden),
            ("classes", self.classes),
        ])
    }
}

/// `Linear(d, hidden) -> ReLU -> Linear(hidden, K)`; parameters `fc1.*`, `fc2.*`.
#[derive(Clone, Debug)]
pub struct Classifier {
    cfg: ClassifierConfig,
    fc1: Linear,
    fc2: Linear,
}

impl Classifier {
    /// Builds the head; weights come from `vb`.
    pub fn new(cfg: ClassifierConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            fc1: Linear::new(cfg.in_dim, cfg.hidden, true, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.hidden, cfg.classes, true, vb.pp("fc2"))?,
            cfg,
        })
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `z`: `(batch, in_dim)`; returns `(batch, classes)`
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        check_input("Classifier", z, self.cfg.in_dim)?;
        self.fc2.forward(&relu(&self.fc1.forward(z)?)?)
    }
}

/// A linear probe `Linear(d, K)`; parameters `fc.*`.
#[derive(Clone, Debug)]
pub struct LinearProbe {
    in_dim: usize,
    fc: Linear,
}

impl LinearProbe {
    /// Builds the probe for `in_dim` features and `classes` classes.
    pub fn new(in_dim: usize, classes: usize, vb: VarBuilder) -> Result<Self> {
        check_positive(&[("in_dim", in_dim), ("classes", classes)])?;
        Ok(Self {
            in_dim,
            fc: Linear::new(in_dim, classes, true, vb.pp("fc"))?,
        })
    }

    /// Class logits.
    ///
    /// # Shapes
    /// - `z`: `(batch, in_dim)`; returns `(batch, classes)`
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        check_input("LinearProbe", z, self.in_dim)?;
        self.fc.forward(z)
    }
}

/// Logits `(batch, 2)` of the three SSL-Wearables pretext tasks (class 1: transformed).
#[derive(Clone, Debug)]
pub struct MultiTaskLogits {
    /// Arrow of time (was the window reversed?).
    pub arrow_of_time: Tensor,
    /// Permutation (were segments shuffled?).
    pub permutation: Tensor,
    /// Time warping (was the window warped?).
    pub time_warp: Tensor,
}

/// SSL-Wearables' multi-task heads: three independent `Linear(d, 2)` heads (as the reference
/// implementation's single-layer classifiers); parameters `arrow_of_time.*`, `permutation.*`,
/// `time_warp.*`.
#[derive(Clone, Debug)]
pub struct MultiTaskHeads {
    in_dim: usize,
    arrow_of_time: Linear,
    permutation: Linear,
    time_warp: Linear,
}

impl MultiTaskHeads {
    /// Builds the three heads over `in_dim` features.
    pub fn new(in_dim: usize, vb: VarBuilder) -> Result<Self> {
        check_positive(&[("in_dim", in_dim)])?;
        Ok(Self {
            in_dim,
            arrow_of_time: Linear::new(in_dim, 2, true, vb.pp("arrow_of_time"))?,
            permutation: Linear::new(in_dim, 2, true, vb.pp("permutation"))?,
            time_warp: Linear::new(in_dim, 2, true, vb.pp("time_warp"))?,
        })
    }

    /// The three tasks' logits.
    ///
    /// # Shapes
    /// - `z`: `(batch, in_dim)`; each output `(batch, 2)`
    pub fn forward(&self, z: &Tensor) -> Result<MultiTaskLogits> {
        check_input("MultiTaskHeads", z, self.in_dim)?;
        Ok(MultiTaskLogits {
            arrow_of_time: self.arrow_of_time.forward(z)?,
            permutation: self.permutation.forward(z)?,
            time_warp: self.time_warp.forward(z)?,
        })
    }
}

/// Configuration of the [`ProjectionHead`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProjectionConfig {
    /// Representation dimension `d`.
    pub in_dim: usize,
    /// Hidden width (`d` by default).
    pub hidden: usize,
    /// Output dimension (128 by default).
    pub out_dim: usize,
}

impl ProjectionConfig {
    /// `d -> d -> 128`, as SimCLR-style projection heads.
    pub fn new(in_dim: usize) -> Self {
        Self {
            in_dim,
            hidden: in_dim,
            out_dim: 128,
        }
    }

    /// Checks every field.
    pub fn validate(&self) -> std::result::Result<(), ModelError> {
        check_positive(&[
            ("in_dim", self.in_dim),
            ("hidden", self.hidden),
            ("out_dim", self.out_dim),
        ])
    }
}

/// `Linear(d, hidden) -> ReLU -> Linear(hidden, out_dim)` for contrastive terms; parameters
/// `fc1.*`, `fc2.*`.
#[derive(Clone, Debug)]
pub struct ProjectionHead {
    cfg: ProjectionConfig,
    fc1: Linear,
    fc2: Linear,
}

impl ProjectionHead {
    /// Builds the head; weights come from `vb`.
    pub fn new(cfg: ProjectionConfig, vb: VarBuilder) -> Result<Self> {
        cfg.validate()?;
        Ok(Self {
            fc1: Linear::new(cfg.in_dim, cfg.hidden, true, vb.pp("fc1"))?,
            fc2: Linear::new(cfg.hidden, cfg.out_dim, true, vb.pp("fc2"))?,
            cfg,
        })
    }

    /// Projected features.
    ///
    /// # Shapes
    /// - `z`: `(batch, in_dim)`; returns `(batch, out_dim)`
    pub fn forward(&self, z: &Tensor) -> Result<Tensor> {
        check_input("ProjectionHead", z, self.cfg.in_dim)?;
        self.fc2.forward(&relu(&self.fc1.forward(z)?)?)
    }
}
