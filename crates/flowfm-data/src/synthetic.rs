//! A deterministic synthetic wrist recording (days at 100 Hz, 3 axes in g, a mix of activities)
//! produced line by line as CSV: [`SyntheticCsv`] is a [`Read`] that never holds more than one
//! line, and [`write_synthetic_recording`] gzips it to a file atomically. For benchmarks and
//! tests of the streaming path (`cargo xtask bench-recording`); read it back with
//! [`synthetic_csv_spec`].

use std::io::{BufWriter, Read, Write};
use std::path::Path;

use crate::error::{DataError, Result};
use crate::readers::{CsvColumn, CsvFolderSpec};

/// Activities of the synthetic recording, in class order.
pub const SYNTHETIC_ACTIVITIES: [&str; 5] = ["sleep", "sit", "stand", "walk", "run"];

/// What to generate.
#[derive(Clone, Debug, PartialEq)]
pub struct SyntheticRecordingSpec {
    /// Duration in days.
    pub days: f64,
    /// Sample rate in Hz.
    pub rate_hz: f64,
    /// Seed of the activity schedule and the noise.
    pub seed: u64,
}

impl Default for SyntheticRecordingSpec {
    /// 7 days at 100 Hz, seed 0 (60 480 000 samples).
    fn default() -> Self {
        Self {
            days: 7.0,
            rate_hz: 100.0,
            seed: 0,
        }
    }
}

impl SyntheticRecordingSpec {
    /// Number of samples.
    pub fn samples(&self) -> usize {
        (self.days * 86_400.0 * self.rate_hz).round() as usize
    }

    fn validate(&self) -> Result<()> {
        let bad = |field: &str, v: f64| {
            Err(DataError::Config {
                field: field.into(),
                msg: format!("must be finite and > 0, got {v}"),
            })
        };
        if !(self.days.is_finite() && self.days > 0.0) {
            return bad("days", self.days);
        }
        if !(self.rate_hz.is_finite() && self.rate_hz > 0.0) {
            return bad("rate_hz", self.rate_hz);
        }
        Ok(())
    }
}

/// The spec that reads a synthetic recording: `t_ms,acc_x,acc_y,acc_z,activity`, g, label column,
/// the given nominal rate, classes [`SYNTHETIC_ACTIVITIES`].
pub fn synthetic_csv_spec(rate_hz: f64) -> CsvFolderSpec {
    let mut spec = CsvFolderSpec::new(
        ["acc_x", "acc_y", "acc_z"]
            .map(|s| CsvColumn::Name(s.into()))
            .to_vec(),
        rate_hz,
    );
    spec.name = "synthetic".into();
    spec.time_column = Some(CsvColumn::Name("t_ms".into()));
    spec.time_unit = "ms".into();
    spec.label_column = Some(CsvColumn::Name("activity".into()));
    spec.classes = Some(SYNTHETIC_ACTIVITIES.map(String::from).to_vec());
    spec
}

/// SplitMix64: a tiny, fully specified generator, so the file is identical on every platform and
/// with every version of the `rand` crate.
#[derive(Clone, Debug)]
struct SplitMix(u64);

impl SplitMix {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Approximately standard normal (Irwin-Hall with 4 terms, rescaled).
    fn normal(&mut self) -> f64 {
        let s: f64 = (0..4).map(|_| self.uniform()).sum();
        (s - 2.0) * (3.0f64).sqrt()
    }
}

/// The synthetic recording as CSV text, generated on demand (see the module docs).
#[derive(Clone, Debug)]
pub struct SyntheticCsv {
    rate_hz: f64,
    n: usize,
    i: usize,
    rng: SplitMix,
    activity: usize,
    bout_left: usize,
    gravity: [f64; 3],
    phase: f64,
    line: Vec<u8>,
    pos: usize,
    header_done: bool,
    ms_step: Option<u64>,
}

impl SyntheticCsv {
    /// A generator for `spec`.
    pub fn new(spec: &SyntheticRecordingSpec) -> Result<Self> {
        spec.validate()?;
        let step = 1000.0 / spec.rate_hz;
        Ok(Self {
            rate_hz: spec.rate_hz,
            n: spec.samples(),
            i: 0,
            rng: SplitMix(spec.seed ^ 0x5eed_f10f_f00d_cafe),
            activity: 0,
            bout_left: 0,
            gravity: [0.0, 0.0, 1.0],
            phase: 0.0,
            line: Vec::with_capacity(64),
            pos: 0,
            header_done: false,
            ms_step: (step.fract() == 0.0).then_some(step as u64),
        })
    }

    /// Samples still to generate.
    pub fn remaining_samples(&self) -> usize {
        self.n - self.i
    }

    /// Starts a new bout: the activity depends on the hour of the day (mostly sleep at night).
    fn new_bout(&mut self) {
        let hour = (self.i as f64 / self.rate_hz / 3600.0) % 24.0;
        let night = !(7.0..23.0).contains(&hour);
        let u = self.rng.uniform();
        self.activity = if night {
            if u < 0.85 {
                0
            } else {
                1
            }
        } else {
            match u {
                u if u < 0.40 => 1,
                u if u < 0.65 => 2,
                u if u < 0.92 => 3,
                _ => 4,
            }
        };
        let minutes = 1.0 + 19.0 * self.rng.uniform();
        self.bout_left = ((minutes * 60.0 * self.rate_hz) as usize).max(1);
        // A wrist orientation per bout: gravity mostly along -z when lying, x when hanging.
        let tilt = match self.activity {
            0 => [0.1, 0.2, -1.0],
            1 => [0.5, 0.3, 0.8],
            _ => [0.9, 0.2, 0.3],
        };
        let jitter: Vec<f64> = (0..3).map(|_| 0.15 * self.rng.normal()).collect();
        let g: Vec<f64> = tilt.iter().zip(&jitter).map(|(a, b)| a + b).collect();
        let norm = g.iter().map(|v| v * v).sum::<f64>().sqrt().max(1e-6);
        self.gravity = [g[0] / norm, g[1] / norm, g[2] / norm];
    }

    /// Formats the next sample into `self.line`.
    fn next_line(&mut self) {
        self.line.clear();
        if self.bout_left == 0 {
            self.new_bout();
        }
        self.bout_left -= 1;
        let (freq_hz, amp_g, noise_g) = match self.activity {
            0 => (0.25, 0.005, 0.004),
            1 => (0.5, 0.02, 0.01),
            2 => (0.8, 0.04, 0.015),
            3 => (1.9, 0.35, 0.05),
            _ => (2.8, 0.9, 0.1),
        };
        self.phase += 2.0 * std::f64::consts::PI * freq_hz / self.rate_hz;
        if self.phase > 2.0 * std::f64::consts::PI {
            self.phase -= 2.0 * std::f64::consts::PI;
        }
        let s = self.phase.sin();
        let h = (2.0 * self.phase).sin();
        let a = [
            self.gravity[0] + amp_g * s + noise_g * self.rng.normal(),
            self.gravity[1] + 0.5 * amp_g * h + noise_g * self.rng.normal(),
            self.gravity[2] + 0.7 * amp_g * s * h + noise_g * self.rng.normal(),
        ];
        let _ = match self.ms_step {
            Some(step) => write!(self.line, "{}", self.i as u64 * step),
            None => write!(self.line, "{:.3}", self.i as f64 * 1000.0 / self.rate_hz),
        };
        let _ = writeln!(
            self.line,
            ",{:.4},{:.4},{:.4},{}",
            a[0], a[1], a[2], SYNTHETIC_ACTIVITIES[self.activity]
        );
        self.i += 1;
    }
}

impl Read for SyntheticCsv {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        let mut written = 0;
        while written < out.len() {
            if self.pos == self.line.len() {
                if !self.header_done {
                    self.line.clear();
                    self.line
                        .extend_from_slice(b"t_ms,acc_x,acc_y,acc_z,activity\n");
                    self.header_done = true;
                } else if self.i < self.n {
                    self.next_line();
                } else {
                    break;
                }
                self.pos = 0;
            }
            let k = (self.line.len() - self.pos).min(out.len() - written);
            out[written..written + k].copy_from_slice(&self.line[self.pos..self.pos + k]);
            self.pos += k;
            written += k;
        }
        Ok(written)
    }
}

/// What [`write_synthetic_recording`] wrote.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SyntheticSummary {
    /// Samples (lines after the header).
    pub samples: usize,
    /// Uncompressed CSV bytes.
    pub csv_bytes: u64,
    /// Bytes of the gzip file.
    pub file_bytes: u64,
}

/// Writes the synthetic recording of `spec` as gzip'd CSV to `path` at gzip's default level (6,
/// what `gzip` and most tools write; until session 12 level 1, whose stream costs about a third
/// more to decompress per byte), streaming (memory does not depend on the duration) and
/// atomically (`flowfm_core::fs::write_atomic_with`: a temporary file in the same folder, synced
/// and renamed onto `path` only once complete, so an interrupted run leaves no partial file
/// behind).
pub fn write_synthetic_recording(
    path: &Path,
    spec: &SyntheticRecordingSpec,
) -> Result<SyntheticSummary> {
    let mut src = SyntheticCsv::new(spec)?;
    let mut sizes = (0u64, 0u64);
    flowfm_core::fs::write_atomic_with(path, |tmp: &Path| -> Result<()> {
        let io = |e: std::io::Error| DataError::io(tmp, e);
        let file = std::fs::File::create(tmp).map_err(io)?;
        let mut gz = flate2::write::GzEncoder::new(
            BufWriter::with_capacity(1 << 20, file),
            flate2::Compression::default(),
        );
        let csv_bytes = std::io::copy(&mut src, &mut gz).map_err(io)?;
        let mut buffered = gz.finish().map_err(io)?;
        buffered.flush().map_err(io)?;
        let file = buffered.into_inner().map_err(|e| io(e.into_error()))?;
        sizes = (csv_bytes, file.metadata().map_err(io)?.len());
        Ok(())
    })?;
    let (csv_bytes, file_bytes) = sizes;
    Ok(SyntheticSummary {
        samples: spec.samples(),
        csv_bytes,
        file_bytes,
    })
}
