//! Contrastive losses for the optional echo-contrast term: InfoNCE (van den Oord et al. 2018)
//! between each window's representation and its echo's, and the symmetric NT-Xent of SimCLR
//! (Chen et al. 2020).

use candle_core::{DType, Result, Tensor};

/// Rows scaled to unit L2 norm (with a small floor against division by zero).
fn l2_normalize(z: &Tensor) -> Result<Tensor> {
    let norm = z.sqr()?.sum_keepdim(1)?.affine(1.0, 1e-12)?.sqrt()?;
    z.broadcast_div(&norm)
}

fn check_pair(a: &Tensor, b: &Tensor, temperature: f64) -> Result<()> {
    if a.rank() != 2 || a.shape() != b.shape() {
        candle_core::bail!(
            "contrastive views must both be (batch, dim), got {:?} and {:?}",
            a.shape(),
            b.shape()
        );
    }
    if !(temperature.is_finite() && temperature > 0.0) {
        return Err(flowfm_core::CoreError::InvalidParameter {
            name: "temperature",
            reason: format!("must be finite and > 0, got {temperature}"),
        }
        .into());
    }
    Ok(())
}

fn arange_targets(n: usize, offset: usize, device: &candle_core::Device) -> Result<Tensor> {
    let v: Vec<u32> = (0..n).map(|i| ((i + offset) % n) as u32).collect();
    Tensor::from_vec(v, n, device)
}

/// InfoNCE with cosine similarity: row `i` of `z` must pick row `i` of `z_echo` among all echoes
/// of the batch. `mean_i -log softmax_j(cos(z_i, e_j) / temperature)[i]`.
///
/// # Shapes
/// - `z`, `z_echo`: `(batch, dim)`
/// - returns a scalar `()`
pub fn info_nce(z: &Tensor, z_echo: &Tensor, temperature: f64) -> Result<Tensor> {
    check_pair(z, z_echo, temperature)?;
    let logits = l2_normalize(z)?
        .matmul(&l2_normalize(z_echo)?.t()?)?
        .affine(1.0 / temperature, 0.0)?;
    let targets = arange_targets(z.dims()[0], 0, z.device())?;
    candle_nn::loss::cross_entropy(&logits, &targets)
}

/// NT-Xent (SimCLR): the `2 batch` views are pooled; each view must pick its partner among the
/// other `2 batch - 1` views.
///
/// # Shapes
/// - `z_a`, `z_b`: `(batch, dim)`
/// - returns a scalar `()`
pub fn nt_xent(z_a: &Tensor, z_b: &Tensor, temperature: f64) -> Result<Tensor> {
    check_pair(z_a, z_b, temperature)?;
    let n = z_a.dims()[0];
    let z = l2_normalize(&Tensor::cat(&[z_a, z_b], 0)?)?;
    let sim = z.matmul(&z.t()?)?.affine(1.0 / temperature, 0.0)?;
    // Exclude self-similarity with a large negative on the diagonal.
    let eye = Tensor::eye(2 * n, DType::F64, z.device())?
        .affine(-1e9, 0.0)?
        .to_dtype(sim.dtype())?;
    let logits = sim.add(&eye)?;
    let targets = arange_targets(2 * n, n, z.device())?;
    candle_nn::loss::cross_entropy(&logits, &targets)
}
