//! The dot products of the streaming resampler: `out[c] = sum_k w[k] * frames[k][c]` over the
//! kernel's taps, for every channel of one output sample, or of four output samples at once.
//!
//! Frames are stored interleaved with a stride of [`stride`] f64 (the channels rounded up to
//! whole groups of four lanes, the padding lanes zero), so one frame is one or two 4-lane
//! vectors. Every channel's products are added in tap order starting from `-0.0`, exactly as
//! `weights.iter().zip(x).map(|(w, x)| w * x).sum::<f64>()` adds them, and no fused multiply-add is
//! used: the results are the same bits on every instruction set, and equal the batch resampler's
//! (`resample::convert_rate`).
//!
//! One output's sum is a chain of dependent additions (121 of them at 100 -> 30 Hz), so it runs at
//! the adder's latency, whatever the vector width. [`Taps::four`] advances the chains of four
//! consecutive outputs together, which keeps the adders busy; `pulp` compiles the loops for the
//! best instruction set the CPU has (detected at run time) with a safe API.

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
use pulp::f64x4;

/// Lanes of one vector block.
const LANES: usize = 4;

/// The value `Iterator::sum` of f64 starts from (`-0.0`: adding it leaves every value, a zero's
/// sign included, unchanged), so the accumulations below give `sum()`'s bits.
const SUM_START: f64 = -0.0;

/// Frame stride (f64 per input sample) for `channels` channels: whole blocks of four lanes.
pub(crate) fn stride(channels: usize) -> usize {
    channels.div_ceil(LANES).max(1) * LANES
}

/// The CPU's 4-lane f64 vectors (AVX2), when it has them; plain loops otherwise.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Taps {
    #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
    v3: Option<pulp::x86::V3>,
}

impl Taps {
    pub(crate) fn new() -> Self {
        Self {
            #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
            v3: pulp::x86::V3::try_new(),
        }
    }

    /// One output: `out[c] = sum_k weights[k] * frames[k * stride + c]` for `c < out.len()`.
    /// `frames` holds `weights.len()` frames of `stride` f64.
    pub(crate) fn one(&self, weights: &[f64], frames: &[f64], stride: usize, out: &mut [f32]) {
        debug_assert_eq!(frames.len(), weights.len() * stride);
        self.four_or_one([weights; 1], [frames; 1], stride, out);
    }

    /// Four outputs at once: `out[o * C + c] = sum_k weights[o][k] * frames[o][k * stride + c]`
    /// for `C = out.len() / 4` channels, each as [`Taps::one`] computes it (the four weight rows
    /// may differ in length).
    pub(crate) fn four(
        &self,
        weights: [&[f64]; 4],
        frames: [&[f64]; 4],
        stride: usize,
        out: &mut [f32],
    ) {
        self.four_or_one(weights, frames, stride, out);
    }

    fn four_or_one<const R: usize>(
        &self,
        weights: [&[f64]; R],
        frames: [&[f64]; R],
        stride: usize,
        out: &mut [f32],
    ) {
        #[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
        if let Some(v3) = self.v3 {
            match stride / LANES {
                1 => return Rows::<R, 1>::run_in(v3, weights, frames, out),
                2 => return Rows::<R, 2>::run_in(v3, weights, frames, out),
                _ => {}
            }
        }
        let c = out.len() / R;
        for (o, chunk) in out.chunks_exact_mut(c).enumerate() {
            one_any(weights[o], frames[o], stride, chunk);
        }
    }
}

/// One output with plain loops (any stride).
fn one_any(weights: &[f64], frames: &[f64], stride: usize, out: &mut [f32]) {
    let mut acc = vec![SUM_START; out.len()];
    for (&w, frame) in weights.iter().zip(frames.chunks_exact(stride)) {
        for (a, &x) in acc.iter_mut().zip(frame) {
            *a += w * x;
        }
    }
    for (o, a) in out.iter_mut().zip(acc) {
        *o = a as f32;
    }
}

/// `R` outputs of `B` blocks of four lanes each, in AVX2 registers: a multiply and a separate
/// add per tap (no fused multiply-add), so each lane is the scalar sum bit for bit.
#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
struct Rows<'a, const R: usize, const B: usize> {
    v3: pulp::x86::V3,
    weights: [&'a [f64]; R],
    frames: [&'a [f64]; R],
    out: &'a mut [f32],
}

#[cfg(any(target_arch = "x86", target_arch = "x86_64"))]
impl<'a, const R: usize, const B: usize> Rows<'a, R, B> {
    /// Runs the rows in a function compiled with AVX2 (so the vector operations inline).
    fn run_in(
        v3: pulp::x86::V3,
        weights: [&'a [f64]; R],
        frames: [&'a [f64]; R],
        out: &'a mut [f32],
    ) {
        let rows = Self {
            v3,
            weights,
            frames,
            out,
        };
        v3.vectorize(
            #[inline(always)]
            move || rows.run(),
        )
    }

    #[inline(always)]
    fn run(self) {
        let v = self.v3;
        // Each row's frames as 4-lane vectors, cut to its taps (so indexing cannot fail).
        let frames: [&[[f64; LANES]]; R] = std::array::from_fn(|r| {
            let (blocks, _) = pulp::as_arrays::<LANES, f64>(self.frames[r]);
            &blocks[..self.weights[r].len() * B]
        });
        let weights = self.weights;
        let tap = |acc: &mut [f64x4; B], r: usize, k: usize| {
            let w = v.splat_f64x4(weights[r][k]);
            for (b, a) in acc.iter_mut().enumerate() {
                let x: f64x4 = pulp::cast(frames[r][k * B + b]);
                *a = v.add_f64x4(*a, v.mul_f64x4(w, x));
            }
        };
        // The taps every row has advance together; each row's own tail follows (still in tap
        // order, so every sum is the one a single row computes).
        let n = weights.iter().map(|w| w.len()).min().unwrap_or(0);
        let mut acc = [[v.splat_f64x4(SUM_START); B]; R];
        for k in 0..n {
            for (r, a) in acc.iter_mut().enumerate() {
                tap(a, r, k);
            }
        }
        let c = self.out.len() / R;
        for (r, (a, out)) in acc.iter_mut().zip(self.out.chunks_exact_mut(c)).enumerate() {
            for k in n..weights[r].len() {
                tap(a, r, k);
            }
            let lanes = a.iter().flat_map(|x| [x.0, x.1, x.2, x.3]);
            for (o, x) in out.iter_mut().zip(lanes) {
                *o = x as f32;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rng(seed: u64) -> impl FnMut() -> f64 {
        let mut x = seed;
        move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 11) as f64 / (1u64 << 53) as f64 - 0.5
        }
    }

    /// Interleaves planar channels with `stride` (zero padding lanes).
    fn frames_of(planar: &[Vec<f32>], stride: usize) -> Vec<f64> {
        let taps = planar[0].len();
        let mut f = vec![0.0; taps * stride];
        for (c, s) in planar.iter().enumerate() {
            for (k, &x) in s.iter().enumerate() {
                f[k * stride + c] = f64::from(x);
            }
        }
        f
    }

    fn bits(v: &[f32]) -> Vec<u32> {
        v.iter().map(|x| x.to_bits()).collect()
    }

    /// Both kernels give, bit for bit, what summing each channel's products with `Iterator::sum`
    /// gives (the batch resampler's order), for every channel count up to 11 (strides 4, 8, 12),
    /// for rows of equal and of different lengths.
    #[test]
    fn one_and_four_equal_per_channel_sums() {
        let mut rnd = rng(0x1234_5678_9abc_def1);
        let taps = Taps::new();
        for ch in 1usize..=11 {
            let s = stride(ch);
            assert!(
                s >= ch && s % LANES == 0 && s - ch < LANES,
                "stride {s} for {ch}"
            );
            for lens in [
                [1usize, 1, 1, 1],
                [121, 121, 121, 121],
                [121, 120, 121, 122],
                [5, 2, 7, 1],
            ] {
                let mut want = Vec::new();
                let mut ws = Vec::new();
                let mut fs = Vec::new();
                for &n in &lens {
                    let w: Vec<f64> = (0..n).map(|_| rnd() * 0.1).collect();
                    let planar: Vec<Vec<f32>> = (0..ch)
                        .map(|_| (0..n).map(|_| (rnd() * 4.0) as f32).collect())
                        .collect();
                    for p in &planar {
                        let acc: f64 = w.iter().zip(p).map(|(&w, &x)| w * f64::from(x)).sum();
                        want.push(acc as f32);
                    }
                    fs.push(frames_of(&planar, s));
                    ws.push(w);
                }
                let mut got_one = Vec::new();
                for (w, f) in ws.iter().zip(&fs) {
                    let mut out = vec![0f32; ch];
                    taps.one(w, f, s, &mut out);
                    got_one.extend(out);
                }
                assert_eq!(bits(&got_one), bits(&want), "one: {ch} channels, {lens:?}");
                let mut out = vec![0f32; 4 * ch];
                taps.four(
                    [&ws[0], &ws[1], &ws[2], &ws[3]],
                    [&fs[0], &fs[1], &fs[2], &fs[3]],
                    s,
                    &mut out,
                );
                assert_eq!(bits(&out), bits(&want), "four: {ch} channels, {lens:?}");
            }
        }
    }

    /// A planted difference in one tap of one row changes only that row's outputs (the test
    /// above can fail).
    #[test]
    fn four_keeps_rows_apart() {
        let mut rnd = rng(7);
        let taps = Taps::new();
        let w: Vec<f64> = (0..9).map(|_| rnd()).collect();
        let f: Vec<f64> = (0..9 * 4).map(|_| rnd()).collect();
        let mut g = f.clone();
        g[4 * 3 + 1] += 1.0;
        let mut out = vec![0f32; 12];
        taps.four([&w, &w, &w, &w], [&f, &g, &f, &f], 4, &mut out);
        assert_eq!(bits(&out[0..3]), bits(&out[6..9]));
        assert_ne!(bits(&out[3..6]), bits(&out[0..3]));
        assert_eq!(bits(&out[3..6])[0], bits(&out[0..3])[0]);
    }
}
