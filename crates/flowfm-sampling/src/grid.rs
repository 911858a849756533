//! Time grids for the ODE solvers: strictly increasing flow times in [0, 1] (noise at 0).

use flowfm_core::CoreError;

/// A validated, strictly increasing grid of flow times `t_0 < t_1 < ... < t_n` in [0, 1].
///
/// Fixed-step solvers take one step per interval; the adaptive solver integrates each interval
/// with its own step control and lands exactly on every grid point.
#[derive(Clone, Debug, PartialEq)]
pub struct TimeGrid(Vec<f64>);

fn bad(reason: String) -> CoreError {
    CoreError::InvalidParameter {
        name: "time_grid",
        reason,
    }
}

impl TimeGrid {
    /// A grid from explicit times (at least two, finite, in [0, 1], strictly increasing).
    pub fn new(times: Vec<f64>) -> Result<Self, CoreError> {
        if times.len() < 2 {
            return Err(bad(format!("needs at least 2 times, got {}", times.len())));
        }
        if let Some((i, t)) = times
            .iter()
            .enumerate()
            .find(|(_, t)| !(t.is_finite() && (0.0..=1.0).contains(*t)))
        {
            return Err(bad(format!(
                "time [{i}] = {t} is not a flow time in [0, 1]"
            )));
        }
        if let Some(i) = (1..times.len()).find(|&i| times[i] <= times[i - 1]) {
            return Err(bad(format!(
                "times must be strictly increasing: [{}] = {} then [{i}] = {}",
                i - 1,
                times[i - 1],
                times[i]
            )));
        }
        Ok(Self(times))
    }

    /// `steps` equal steps from `t0` to `t1`.
    pub fn uniform(t0: f64, t1: f64, steps: usize) -> Result<Self, CoreError> {
        if steps == 0 {
            return Err(bad("needs at least 1 step".into()));
        }
        let h = (t1 - t0) / steps as f64;
        let mut times: Vec<f64> = (0..steps).map(|i| t0 + h * i as f64).collect();
        times.push(t1);
        Self::new(times)
    }

    /// `steps` equal steps over the whole flow, noise (0) to data (1).
    pub fn noise_to_data(steps: usize) -> Result<Self, CoreError> {
        Self::uniform(0.0, 1.0, steps)
    }

    /// The times.
    pub fn times(&self) -> &[f64] {
        &self.0
    }

    /// Number of intervals (steps of a fixed-step solver).
    pub fn num_steps(&self) -> usize {
        self.0.len() - 1
    }

    /// First time.
    pub fn start(&self) -> f64 {
        self.0[0]
    }

    /// Last time.
    pub fn end(&self) -> f64 {
        self.0[self.0.len() - 1]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    #[test]
    fn uniform_grid_ends_exactly_at_its_endpoints() {
        let g = TimeGrid::uniform(0.0, 1.0, 3).unwrap();
        assert_eq!(g.num_steps(), 3);
        Tolerance::F64.assert_close(g.times(), &[0.0, 1.0 / 3.0, 2.0 / 3.0, 1.0]);
    }

    #[test]
    fn non_increasing_or_out_of_range_grids_are_rejected() {
        for times in [
            vec![0.0, 0.5, 0.5, 1.0],
            vec![0.0, 0.6, 0.4],
            vec![0.5],
            vec![-0.1, 0.5],
            vec![0.0, f64::NAN],
            vec![0.0, 1.5],
        ] {
            assert!(
                matches!(
                    TimeGrid::new(times.clone()),
                    Err(CoreError::InvalidParameter {
                        name: "time_grid",
                        ..
                    })
                ),
                "{times:?} accepted"
            );
        }
        assert!(TimeGrid::uniform(0.0, 1.0, 0).is_err());
        assert!(TimeGrid::uniform(1.0, 0.0, 4).is_err());
    }
}
