//! Plain-array views the metrics work on: windows `(N, C, L)` and row matrices `(N, d)`, borrowed
//! from slices or owned after copying out of a candle tensor.

use std::borrow::Cow;

use candle_core::{DType, Device, Tensor};

use crate::error::{EvalError, Result};

/// A batch of sensor windows, row-major `(N, C, L)`: element `(n, c, l)` is at `(n * C + c) * L + l`.
///
/// Values must be finite; constructors check this, so every metric can rely on it.
#[derive(Clone, Debug)]
pub struct Windows<'a> {
    data: Cow<'a, [f32]>,
    n: usize,
    channels: usize,
    len: usize,
}

impl<'a> Windows<'a> {
    /// Borrows `data` as `n` windows of `channels x len` samples.
    ///
    /// # Shapes
    /// - `data`: `(n, channels, len)` flattened row-major.
    pub fn new(data: &'a [f32], n: usize, channels: usize, len: usize) -> Result<Self> {
        Self::build(Cow::Borrowed(data), n, channels, len)
    }

    fn build(data: Cow<'a, [f32]>, n: usize, channels: usize, len: usize) -> Result<Self> {
        if channels == 0 || len == 0 {
            return Err(EvalError::invalid(
                "windows",
                format!("channels ({channels}) and samples ({len}) must be positive"),
            ));
        }
        let expected = n
            .checked_mul(channels)
            .and_then(|v| v.checked_mul(len))
            .ok_or_else(|| EvalError::invalid("windows", "shape overflows usize"))?;
        if data.len() != expected {
            return Err(EvalError::invalid(
                "windows",
                format!(
                    "{} values cannot be viewed as ({n}, {channels}, {len}) = {expected}",
                    data.len()
                ),
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            let (w, c, l) = (i / (channels * len), (i / len) % channels, i % len);
            return Err(EvalError::invalid(
                format!("windows[{w}][{c}][{l}]"),
                format!("value {} is not finite", data[i]),
            ));
        }
        Ok(Self {
            data,
            n,
            channels,
            len,
        })
    }

    /// Copies a `(N, C, L)` tensor (any float dtype, any device) into an owned view.
    ///
    /// # Shapes
    /// - `t`: `(batch, channels, samples)`.
    pub fn from_tensor(t: &Tensor) -> Result<Windows<'static>> {
        let (n, c, l) = t.dims3().map_err(|e| {
            EvalError::invalid("windows", format!("expected a (N, C, L) tensor: {e}"))
        })?;
        let v = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Windows::build(Cow::Owned(v), n, c, l)
    }

    /// Number of windows `N`.
    pub fn num_windows(&self) -> usize {
        self.n
    }

    /// Number of channels `C`.
    pub fn channels(&self) -> usize {
        self.channels
    }

    /// Samples per channel `L`.
    pub fn len_samples(&self) -> usize {
        self.len
    }

    /// Whether there are no windows.
    pub fn is_empty(&self) -> bool {
        self.n == 0
    }

    /// All values, row-major `(N, C, L)`.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Window `i` as `(C, L)` row-major.
    pub fn window(&self, i: usize) -> &[f32] {
        let s = self.channels * self.len;
        &self.data[i * s..(i + 1) * s]
    }

    /// Channel `c` of window `i` (`L` samples).
    pub fn channel(&self, i: usize, c: usize) -> &[f32] {
        let start = (i * self.channels + c) * self.len;
        &self.data[start..start + self.len]
    }

    /// Checks that `other` has the same channels and samples per window as `self`.
    pub(crate) fn check_same_layout(&self, other: &Windows<'_>, a: &str, b: &str) -> Result<()> {
        if self.channels != other.channels || self.len != other.len {
            return Err(EvalError::mismatch(
                a,
                b,
                format!(
                    "windows of ({}, {}) vs ({}, {}) (channels, samples)",
                    self.channels, self.len, other.channels, other.len
                ),
            ));
        }
        Ok(())
    }
}

/// A row matrix `(N, d)` of f32 values (representations, embeddings, feature vectors).
///
/// Values must be finite; constructors check this.
#[derive(Clone, Debug)]
pub struct Embeddings<'a> {
    data: Cow<'a, [f32]>,
    rows: usize,
    dim: usize,
}

impl<'a> Embeddings<'a> {
    /// Borrows `data` as `rows` vectors of `dim` values.
    ///
    /// # Shapes
    /// - `data`: `(rows, dim)` flattened row-major.
    pub fn new(data: &'a [f32], rows: usize, dim: usize) -> Result<Self> {
        Self::build(Cow::Borrowed(data), rows, dim)
    }

    /// Takes ownership of `data` as `rows` vectors of `dim` values.
    pub fn from_vec(data: Vec<f32>, rows: usize, dim: usize) -> Result<Embeddings<'static>> {
        Embeddings::build(Cow::Owned(data), rows, dim)
    }

    fn build(data: Cow<'a, [f32]>, rows: usize, dim: usize) -> Result<Self> {
        if dim == 0 {
            return Err(EvalError::invalid(
                "embeddings",
                "dimension must be positive",
            ));
        }
        let expected = rows
            .checked_mul(dim)
            .ok_or_else(|| EvalError::invalid("embeddings", "shape overflows usize"))?;
        if data.len() != expected {
            return Err(EvalError::invalid(
                "embeddings",
                format!(
                    "{} values cannot be viewed as ({rows}, {dim}) = {expected}",
                    data.len()
                ),
            ));
        }
        if let Some(i) = data.iter().position(|v| !v.is_finite()) {
            return Err(EvalError::invalid(
                format!("embeddings[{}][{}]", i / dim, i % dim),
                format!("value {} is not finite", data[i]),
            ));
        }
        Ok(Self { data, rows, dim })
    }

    /// Copies an `(N, d)` tensor (any float dtype, any device) into an owned matrix.
    ///
    /// # Shapes
    /// - `t`: `(batch, dim)`.
    pub fn from_tensor(t: &Tensor) -> Result<Embeddings<'static>> {
        let (rows, dim) = t.dims2().map_err(|e| {
            EvalError::invalid("embeddings", format!("expected an (N, d) tensor: {e}"))
        })?;
        let v = t
            .to_device(&Device::Cpu)?
            .to_dtype(DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        Embeddings::build(Cow::Owned(v), rows, dim)
    }

    /// Number of rows `N`.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Row length `d`.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Whether there are no rows.
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// All values, row-major `(N, d)`.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// Row `i`.
    pub fn row(&self, i: usize) -> &[f32] {
        &self.data[i * self.dim..(i + 1) * self.dim]
    }

    /// The rows as an f64 nalgebra matrix `(N, d)`.
    pub(crate) fn to_dmatrix(&self) -> nalgebra::DMatrix<f64> {
        nalgebra::DMatrix::from_row_iterator(
            self.rows,
            self.dim,
            self.data.iter().map(|&v| f64::from(v)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use flowfm_core::Tolerance;

    fn f64s(x: &[f32]) -> Vec<f64> {
        x.iter().map(|&v| f64::from(v)).collect()
    }

    #[test]
    fn windows_index_channels_row_major() {
        let data: Vec<f32> = (0..12).map(|v| v as f32).collect();
        let w = Windows::new(&data, 2, 2, 3).unwrap();
        Tolerance::F32.assert_close(&f64s(w.channel(1, 0)), &[6.0, 7.0, 8.0]);
        Tolerance::F32.assert_close(&f64s(w.window(0)), &[0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
    }

    #[test]
    fn non_finite_window_value_is_an_error_naming_its_position() {
        let mut data = vec![0.0f32; 12];
        data[10] = f32::NAN;
        let err = Windows::new(&data, 2, 2, 3).unwrap_err().to_string();
        assert!(err.contains("windows[1][1][1]"), "{err}");
    }

    #[test]
    fn wrong_length_is_an_error_not_a_panic() {
        assert!(Windows::new(&[0.0; 5], 2, 1, 3).is_err());
        assert!(Embeddings::new(&[0.0; 5], 2, 3).is_err());
        assert!(Embeddings::new(&[], 0, 0).is_err());
    }

    #[test]
    fn tensors_round_trip_into_views() {
        let t = Tensor::arange(0f32, 24f32, &Device::Cpu)
            .unwrap()
            .reshape((2, 3, 4))
            .unwrap();
        let w = Windows::from_tensor(&t).unwrap();
        assert_eq!((w.num_windows(), w.channels(), w.len_samples()), (2, 3, 4));
        Tolerance::F32.assert_close(&f64s(w.channel(1, 2)), &[20.0, 21.0, 22.0, 23.0]);
        let e = Embeddings::from_tensor(&t.reshape((6, 4)).unwrap()).unwrap();
        Tolerance::F32.assert_close(&f64s(e.row(5)), &[20.0, 21.0, 22.0, 23.0]);
        assert!(Embeddings::from_tensor(&t).is_err());
    }
}
