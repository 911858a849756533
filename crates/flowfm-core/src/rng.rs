//! Seeded randomness: every random number in flowfm (noise, init, shuffles, augmentation) is drawn
//! from a [`SeededRng`] derived from the run seed.
//!
//! candle's CPU random ops cannot be seeded, so nothing in flowfm calls `Tensor::randn` or
//! `Tensor::rand`. Streams are derived by name ([`SeededRng::derive`]), so adding a new consumer of
//! randomness never shifts the numbers another consumer sees.

use candle_core::{DType, Device, Result, Shape, Tensor};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

/// A deterministic, portable random number generator (ChaCha8) with named sub-streams.
#[derive(Clone, Debug)]
pub struct SeededRng {
    seed: u64,
    rng: ChaCha8Rng,
}

/// The complete state of a [`SeededRng`], for checkpoints and exact resumption.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RngState {
    /// The run seed (or the derived seed of a sub-stream).
    pub seed: u64,
    /// ChaCha word position: how far the stream has advanced.
    pub word_pos: u128,
}

/// SplitMix64 finaliser: a bijective mixer used to turn (seed, label) into key material.
fn splitmix64(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// FNV-1a over the bytes of a label (stable across platforms and Rust versions).
fn fnv1a(label: &str) -> u64 {
    crate::hash::fnv1a64(label.as_bytes())
}

fn chacha_from_u64(seed: u64) -> ChaCha8Rng {
    let mut key = [0u8; 32];
    let mut s = seed;
    for chunk in key.chunks_mut(8) {
        s = splitmix64(s);
        chunk.copy_from_slice(&s.to_le_bytes());
    }
    ChaCha8Rng::from_seed(key)
}

impl SeededRng {
    /// A generator for the run seed `seed`.
    pub fn new(seed: u64) -> Self {
        Self {
            seed,
            rng: chacha_from_u64(seed),
        }
    }

    /// The seed this generator was created from.
    pub fn seed(&self) -> u64 {
        self.seed
    }

    /// An independent stream named `label`, derived from this generator's seed only (not from how
    /// far this generator has advanced).
    pub fn derive(&self, label: &str) -> SeededRng {
        SeededRng::new(splitmix64(self.seed ^ splitmix64(fnv1a(label))))
    }

    /// An independent stream named `label` with an index (an epoch, a fold, a worker).
    pub fn derive_indexed(&self, label: &str, index: u64) -> SeededRng {
        SeededRng::new(splitmix64(
            self.seed ^ splitmix64(fnv1a(label) ^ splitmix64(index.wrapping_add(1))),
        ))
    }

    /// The state needed to continue this stream exactly.
    pub fn state(&self) -> RngState {
        RngState {
            seed: self.seed,
            word_pos: self.rng.get_word_pos(),
        }
    }

    /// Restores a generator from [`SeededRng::state`].
    pub fn from_state(state: &RngState) -> Self {
        let mut r = Self::new(state.seed);
        r.rng.set_word_pos(state.word_pos);
        r
    }

    /// A uniform draw in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        self.rng.random::<f64>()
    }

    /// A uniform draw in [lo, hi).
    pub fn uniform_range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.uniform()
    }

    /// A standard normal draw.
    pub fn normal(&mut self) -> f64 {
        StandardNormal.sample(&mut self.rng)
    }

    /// A uniform integer in `0..n` (`n > 0`).
    pub fn below(&mut self, n: usize) -> usize {
        self.rng.random_range(0..n)
    }

    /// A Bernoulli draw with probability `p` of `true`.
    pub fn bernoulli(&mut self, p: f64) -> bool {
        self.uniform() < p
    }

    /// Shuffles a slice in place (Fisher-Yates).
    pub fn shuffle<T>(&mut self, xs: &mut [T]) {
        for i in (1..xs.len()).rev() {
            let j = self.below(i + 1);
            xs.swap(i, j);
        }
    }

    /// A random permutation of `0..n`.
    pub fn permutation(&mut self, n: usize) -> Vec<usize> {
        let mut p: Vec<usize> = (0..n).collect();
        self.shuffle(&mut p);
        p
    }

    /// `n` standard normal draws.
    pub fn normal_vec(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.normal()).collect()
    }

    /// `n` uniform draws in [lo, hi).
    pub fn uniform_vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform_range(lo, hi)).collect()
    }

    /// A tensor of standard normal draws.
    pub fn normal_tensor<S: Into<Shape>>(
        &mut self,
        shape: S,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.normal_vec(shape.elem_count());
        Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }

    /// A tensor of uniform draws in [lo, hi).
    pub fn uniform_tensor<S: Into<Shape>>(
        &mut self,
        lo: f64,
        hi: f64,
        shape: S,
        dtype: DType,
        device: &Device,
    ) -> Result<Tensor> {
        let shape = shape.into();
        let v = self.uniform_vec(shape.elem_count(), lo, hi);
        Tensor::from_vec(v, shape, &Device::Cpu)?
            .to_dtype(dtype)?
            .to_device(device)
    }
}

impl RngCore for SeededRng {
    fn next_u32(&mut self) -> u32 {
        self.rng.next_u32()
    }
    fn next_u64(&mut self) -> u64 {
        self.rng.next_u64()
    }
    fn fill_bytes(&mut self, dst: &mut [u8]) {
        self.rng.fill_bytes(dst)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_gives_same_noise() {
        let a = SeededRng::new(7)
            .normal_tensor((4, 3, 5), DType::F32, &Device::Cpu)
            .unwrap();
        let b = SeededRng::new(7)
            .normal_tensor((4, 3, 5), DType::F32, &Device::Cpu)
            .unwrap();
        let c = SeededRng::new(8)
            .normal_tensor((4, 3, 5), DType::F32, &Device::Cpu)
            .unwrap();
        let va = a.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vb = b.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        let vc = c.flatten_all().unwrap().to_vec1::<f32>().unwrap();
        assert_eq!(va, vb);
        assert_ne!(va, vc);
    }

    #[test]
    fn derived_streams_do_not_depend_on_parent_progress() {
        let mut parent = SeededRng::new(42);
        let before = parent.derive("init").normal_vec(8);
        let _ = parent.normal_vec(100);
        let after = parent.derive("init").normal_vec(8);
        assert_eq!(before, after);
        assert_ne!(before, parent.derive("noise").normal_vec(8));
        assert_ne!(
            parent.derive_indexed("epoch", 0).normal_vec(4),
            parent.derive_indexed("epoch", 1).normal_vec(4)
        );
    }

    #[test]
    fn state_round_trip_continues_the_stream_exactly() {
        let mut r = SeededRng::new(3);
        let _ = r.normal_vec(17);
        let state = r.state();
        let expected = r.normal_vec(10);
        let mut restored = SeededRng::from_state(&state);
        assert_eq!(restored.normal_vec(10), expected);
    }

    #[test]
    fn normal_draws_have_unit_moments() {
        let mut r = SeededRng::new(1);
        let v = r.normal_vec(200_000);
        let n = v.len() as f64;
        let mean = v.iter().sum::<f64>() / n;
        let var = v.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n;
        assert!(mean.abs() < 0.01, "mean {mean}");
        assert!((var - 1.0).abs() < 0.02, "var {var}");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut r = SeededRng::new(5);
        let mut p = r.permutation(1000);
        assert_ne!(p, (0..1000).collect::<Vec<_>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<_>>());
    }
}
