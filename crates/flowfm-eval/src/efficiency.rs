//! Efficiency records (serde-serialisable, rendered as Markdown): training wall time per epoch and
//! to a validation target, and generation time per window with the number of function evaluations
//! (NFE) of each sampler. Flow and diffusion are measured on the same machine in one run; the
//! records carry the device so tables from different machines are never mixed silently.

use serde::{Deserialize, Serialize};

use crate::error::{EvalError, Result};
use crate::markdown;

/// When a validation metric first reached a target during training.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TimeToTarget {
    /// Name of the validation metric (`val_macro_f1`, `val_loss`).
    pub metric: String,
    /// The target value.
    pub target: f64,
    /// Whether larger values are better (`>= target` counts) or smaller (`<= target`).
    pub higher_is_better: bool,
    /// First epoch (0-based) at whose end the target was met; `None` if never.
    pub epoch: Option<usize>,
    /// Cumulative training wall time to the end of that epoch, in seconds.
    pub wall_secs: Option<f64>,
}

impl TimeToTarget {
    /// Finds the first epoch whose validation value meets `target`, and the cumulative wall time
    /// to it. `epoch_secs[i]` and `values[i]` belong to epoch `i`.
    pub fn from_curve(
        metric: impl Into<String>,
        target: f64,
        higher_is_better: bool,
        epoch_secs: &[f64],
        values: &[f64],
    ) -> Result<Self> {
        if epoch_secs.len() != values.len() {
            return Err(EvalError::mismatch(
                "epoch_secs",
                "values",
                format!("{} vs {} epochs", epoch_secs.len(), values.len()),
            ));
        }
        check_secs("epoch_secs", epoch_secs)?;
        let mut elapsed = 0.0;
        let mut hit = None;
        for (i, (&s, &v)) in epoch_secs.iter().zip(values).enumerate() {
            elapsed += s;
            let met = if higher_is_better {
                v >= target
            } else {
                v <= target
            };
            if met {
                hit = Some((i, elapsed));
                break;
            }
        }
        Ok(Self {
            metric: metric.into(),
            target,
            higher_is_better,
            epoch: hit.map(|h| h.0),
            wall_secs: hit.map(|h| h.1),
        })
    }
}

/// Training cost of one method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainingEfficiency {
    /// Method name.
    pub method: String,
    /// Where it ran (`cpu`, `NVIDIA H100`).
    pub device: String,
    /// Wall time of each epoch in seconds.
    pub epoch_secs: Vec<f64>,
    /// Time to a validation target, when one was set.
    pub time_to_target: Option<TimeToTarget>,
}

impl TrainingEfficiency {
    /// Mean and sample sd of the epoch times (`None` with no epochs).
    pub fn epoch_secs_summary(&self) -> Option<crate::stats::MeanSd> {
        crate::stats::mean_sd(&self.epoch_secs).ok()
    }

    /// Total training wall time in seconds.
    pub fn total_secs(&self) -> f64 {
        self.epoch_secs.iter().sum()
    }

    /// The header matching [`TrainingEfficiency::markdown_row`].
    pub fn markdown_header() -> String {
        "| Method | Device | Epochs | s / epoch | Total s | Time to target (s) |\n\
         |---|---|---:|---:|---:|---:|"
            .to_string()
    }

    /// One Markdown row.
    pub fn markdown_row(&self) -> String {
        let per_epoch = self
            .epoch_secs_summary()
            .map_or_else(|| "n/a".to_string(), |m| markdown::mean_sd(&m, 2));
        let ttt = match &self.time_to_target {
            None => "n/a".to_string(),
            Some(t) => match (t.wall_secs, t.epoch) {
                (Some(s), Some(e)) => format!(
                    "{} ({} {} {} at epoch {e})",
                    markdown::number(s, 1),
                    markdown::escape(&t.metric),
                    if t.higher_is_better { ">=" } else { "<=" },
                    t.target
                ),
                _ => format!("not reached ({} {})", markdown::escape(&t.metric), t.target),
            },
        };
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            markdown::escape(&self.method),
            markdown::escape(&self.device),
            self.epoch_secs.len(),
            per_epoch,
            markdown::number(self.total_secs(), 1),
            ttt
        )
    }
}

/// Generation cost of one sampler of one method.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GenerationEfficiency {
    /// Method name.
    pub method: String,
    /// Sampler (`euler-10`, `dopri5`, `ddpm-1000`, `ddim-50`).
    pub sampler: String,
    /// Where it ran.
    pub device: String,
    /// Network evaluations per generated batch.
    pub nfe: usize,
    /// Windows generated in the measurement.
    pub windows: usize,
    /// Wall time of the measurement in seconds.
    pub total_secs: f64,
    /// `1000 * total_secs / windows`.
    pub ms_per_window: f64,
}

impl GenerationEfficiency {
    /// A record from a timed run of `windows` windows.
    pub fn new(
        method: impl Into<String>,
        sampler: impl Into<String>,
        device: impl Into<String>,
        nfe: usize,
        windows: usize,
        total_secs: f64,
    ) -> Result<Self> {
        if windows == 0 {
            return Err(EvalError::invalid("windows", "no windows generated"));
        }
        check_secs("total_secs", &[total_secs])?;
        Ok(Self {
            method: method.into(),
            sampler: sampler.into(),
            device: device.into(),
            nfe,
            windows,
            total_secs,
            ms_per_window: 1000.0 * total_secs / windows as f64,
        })
    }

    /// How many times faster per window this record is than `baseline` (on the same device).
    pub fn speedup_over(&self, baseline: &GenerationEfficiency) -> Result<f64> {
        if self.device != baseline.device {
            return Err(EvalError::mismatch(
                "self.device",
                "baseline.device",
                format!(
                    "'{}' vs '{}': timings from different machines",
                    self.device, baseline.device
                ),
            ));
        }
        if self.ms_per_window <= 0.0 {
            return Err(EvalError::invalid(
                "ms_per_window",
                "zero time cannot be compared",
            ));
        }
        Ok(baseline.ms_per_window / self.ms_per_window)
    }

    /// The header matching [`GenerationEfficiency::markdown_row`].
    pub fn markdown_header() -> String {
        "| Method | Sampler | Device | NFE | Windows | ms / window |\n\
         |---|---|---|---:|---:|---:|"
            .to_string()
    }

    /// One Markdown row.
    pub fn markdown_row(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            markdown::escape(&self.method),
            markdown::escape(&self.sampler),
            markdown::escape(&self.device),
            self.nfe,
            self.windows,
            markdown::number(self.ms_per_window, 3)
        )
    }
}

fn check_secs(field: &str, secs: &[f64]) -> Result<()> {
    if let Some(i) = secs.iter().position(|s| !(s.is_finite() && *s >= 0.0)) {
        return Err(EvalError::invalid(
            format!("{field}[{i}]"),
            format!("{} is not a non-negative duration", secs[i]),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn time_to_target_sums_epochs_up_to_the_first_hit() {
        let secs = [10.0, 12.0, 11.0, 9.0];
        let f1 = [0.40, 0.61, 0.58, 0.70];
        let t = TimeToTarget::from_curve("val_macro_f1", 0.6, true, &secs, &f1).unwrap();
        assert_eq!(t.epoch, Some(1));
        assert!(Tolerance::F64.close(t.wall_secs.unwrap(), 22.0));
        let loss = [1.0, 0.5, 0.4, 0.3];
        let t = TimeToTarget::from_curve("val_loss", 0.35, false, &secs, &loss).unwrap();
        assert_eq!(t.epoch, Some(3));
        let never = TimeToTarget::from_curve("val_loss", 0.1, false, &secs, &loss).unwrap();
        assert!(never.wall_secs.is_none() && never.epoch.is_none());
        assert!(TimeToTarget::from_curve("x", 0.1, false, &secs, &loss[..2]).is_err());
        assert!(TimeToTarget::from_curve("x", 0.1, false, &[-1.0], &[0.0]).is_err());
    }

    #[test]
    fn generation_records_give_ms_per_window_and_speedups() {
        let flow = GenerationEfficiency::new("FlowFM", "euler-10", "cpu", 10, 200, 0.5).unwrap();
        let ddpm = GenerationEfficiency::new("DDPM", "ddpm-1000", "cpu", 1000, 200, 51.0).unwrap();
        assert!(Tolerance::F64.close(flow.ms_per_window, 2.5));
        assert!(Tolerance::F64.close(flow.speedup_over(&ddpm).unwrap(), 102.0));
        let gpu = GenerationEfficiency::new("DDPM", "ddpm-1000", "cuda", 1000, 200, 5.0).unwrap();
        assert!(flow.speedup_over(&gpu).is_err());
        assert_eq!(
            flow.markdown_row(),
            "| FlowFM | euler-10 | cpu | 10 | 200 | 2.500 |"
        );
        assert!(GenerationEfficiency::new("a", "b", "c", 1, 0, 1.0).is_err());
    }

    #[test]
    fn training_rows_render_epoch_statistics() {
        let secs = vec![10.0, 12.0];
        let t = TrainingEfficiency {
            method: "FlowFM".into(),
            device: "cpu".into(),
            time_to_target: Some(
                TimeToTarget::from_curve("val_macro_f1", 0.5, true, &secs, &[0.6, 0.7]).unwrap(),
            ),
            epoch_secs: secs,
        };
        // mean 11, sample sd sqrt(2)
        assert_eq!(
            t.markdown_row(),
            "| FlowFM | cpu | 2 | 11.00 ± 1.41 | 22.0 | 10.0 (val_macro_f1 >= 0.5 at epoch 0) |"
        );
        assert_eq!(
            TrainingEfficiency::markdown_header()
                .lines()
                .next()
                .map(|l| l.matches('|').count()),
            Some(7)
        );
    }
}
