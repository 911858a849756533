//! The one tolerance type every float comparison in flowfm goes through (never `==` on floats).

use candle_core::{DType, Tensor};

/// A combined relative and absolute tolerance: `|a - b| <= abs + rel * max(|a|, |b|)`.
///
/// NaN is never close to anything; equal infinities are close.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative part.
    pub rel: f64,
    /// Absolute part.
    pub abs: f64,
}

/// The first element where two sequences differ by more than the tolerance.
#[derive(Clone, Debug, PartialEq)]
pub struct Mismatch {
    /// Flat index of the first mismatch.
    pub index: usize,
    /// Value found.
    pub actual: f64,
    /// Value expected.
    pub expected: f64,
    /// Number of mismatching elements.
    pub count: usize,
    /// Largest absolute difference over all elements.
    pub max_abs_diff: f64,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} element(s) differ; first at index {}: actual {} vs expected {}; max |diff| {}",
            self.count, self.index, self.actual, self.expected, self.max_abs_diff
        )
    }
}

impl Tolerance {
    /// A tolerance from its parts.
    pub const fn new(rel: f64, abs: f64) -> Self {
        Self { rel, abs }
    }

    /// Suited to f32 results of short computations.
    pub const F32: Tolerance = Tolerance::new(1e-5, 1e-6);
    /// Suited to f64 results of short computations.
    pub const F64: Tolerance = Tolerance::new(1e-10, 1e-12);

    /// Whether `a` and `b` are within tolerance.
    pub fn close(&self, a: f64, b: f64) -> bool {
        if a.is_nan() || b.is_nan() {
            return false;
        }
        if a.is_infinite() || b.is_infinite() {
            // Infinities are close only to themselves: same sign, exactly.
            return a.is_infinite()
                && b.is_infinite()
                && a.is_sign_positive() == b.is_sign_positive();
        }
        (a - b).abs() <= self.abs + self.rel * a.abs().max(b.abs())
    }

    /// Compares two sequences of equal length; `Err` describes the first mismatch.
    pub fn check(&self, actual: &[f64], expected: &[f64]) -> Result<(), Mismatch> {
        if actual.len() != expected.len() {
            return Err(Mismatch {
                index: actual.len().min(expected.len()),
                actual: f64::NAN,
                expected: f64::NAN,
                count: actual.len().abs_diff(expected.len()),
                max_abs_diff: f64::INFINITY,
            });
        }
        let mut first = None;
        let mut count = 0;
        let mut max_abs_diff: f64 = 0.0;
        for (i, (&a, &e)) in actual.iter().zip(expected).enumerate() {
            let d = (a - e).abs();
            if d.is_nan() {
                max_abs_diff = f64::NAN;
            } else if !max_abs_diff.is_nan() {
                max_abs_diff = max_abs_diff.max(d);
            }
            if !self.close(a, e) {
                count += 1;
                first.get_or_insert((i, a, e));
            }
        }
        match first {
            None => Ok(()),
            Some((index, actual, expected)) => Err(Mismatch {
                index,
                actual,
                expected,
                count,
                max_abs_diff,
            }),
        }
    }

    /// Compares two tensors of the same shape (any float dtype).
    pub fn check_tensors(&self, actual: &Tensor, expected: &Tensor) -> Result<(), String> {
        if actual.shape() != expected.shape() {
            return Err(format!(
                "shape mismatch: actual {:?} vs expected {:?}",
                actual.shape(),
                expected.shape()
            ));
        }
        let a = tensor_to_f64(actual).map_err(|e| e.to_string())?;
        let e = tensor_to_f64(expected).map_err(|e| e.to_string())?;
        self.check(&a, &e).map_err(|m| m.to_string())
    }

    /// Panics with a descriptive message when the sequences differ.
    #[track_caller]
    pub fn assert_close(&self, actual: &[f64], expected: &[f64]) {
        if let Err(m) = self.check(actual, expected) {
            panic!("not close within {self:?}: {m}");
        }
    }

    /// Panics with a descriptive message when the tensors differ.
    #[track_caller]
    pub fn assert_tensors_close(&self, actual: &Tensor, expected: &Tensor) {
        if let Err(m) = self.check_tensors(actual, expected) {
            panic!("not close within {self:?}: {m}");
        }
    }
}

/// Flattens any tensor to a `Vec<f64>` (for comparisons and reports).
pub fn tensor_to_f64(t: &Tensor) -> candle_core::Result<Vec<f64>> {
    t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_and_absolute_parts_combine() {
        let t = Tolerance::new(1e-3, 1e-6);
        assert!(t.close(1000.0, 1000.9));
        assert!(!t.close(1000.0, 1001.1));
        assert!(t.close(0.0, 5e-7));
        assert!(!t.close(0.0, 2e-6));
    }

    #[test]
    fn nan_is_never_close() {
        assert!(!Tolerance::new(1.0, 1.0).close(f64::NAN, f64::NAN));
        assert!(Tolerance::F64.close(f64::INFINITY, f64::INFINITY));
        assert!(!Tolerance::F64.close(f64::INFINITY, f64::NEG_INFINITY));
    }

    #[test]
    fn check_reports_first_mismatch_and_count() {
        let m = Tolerance::F64
            .check(&[1.0, 2.0, 3.0, 4.0], &[1.0, 2.5, 3.0, 5.0])
            .unwrap_err();
        assert_eq!(m.index, 1);
        assert_eq!(m.count, 2);
        assert!(Tolerance::F64.close(m.max_abs_diff, 1.0));
        assert!(Tolerance::F64.check(&[1.0], &[1.0, 2.0]).is_err());
    }
}
