//! Which device the networks run on: the CPU, or a CUDA GPU in a build with `--features cuda`.
//!
//! Every tensor flowfm makes starts on the CPU (seeded randomness and initialisation are drawn
//! there, so a seed means the same numbers on every device) and is moved to the chosen device.
//! A CUDA device runs flowfm-ops' portable compositions of candle primitives; the CPU runs
//! flowfm's own kernels.

use candle_core::Device;
use std::fmt;
use std::str::FromStr;

/// A device as named on the command line or in a test's environment: `cpu`, `cuda` (GPU 0) or
/// `cuda:N`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeviceChoice {
    /// The CPU.
    #[default]
    Cpu,
    /// The CUDA GPU of this ordinal.
    Cuda(usize),
}

impl FromStr for DeviceChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim() {
            "cpu" => Ok(Self::Cpu),
            "cuda" | "gpu" => Ok(Self::Cuda(0)),
            other => match other
                .strip_prefix("cuda:")
                .or_else(|| other.strip_prefix("gpu:"))
            {
                Some(n) => n.parse::<usize>().map(Self::Cuda).map_err(|_| {
                    format!("device `{s}`: the GPU ordinal after `cuda:` must be a number")
                }),
                None => Err(format!(
                    "device `{s}` is not one of `cpu`, `cuda`, `cuda:N`"
                )),
            },
        }
    }
}

impl fmt::Display for DeviceChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Cpu => write!(f, "cpu"),
            Self::Cuda(n) => write!(f, "cuda:{n}"),
        }
    }
}

/// Whether this build can drive a CUDA GPU (built with `--features cuda`).
pub const CUDA_BUILD: bool = cfg!(feature = "cuda");

impl DeviceChoice {
    /// Opens the device, or says why it cannot: a build without the `cuda` feature, or no
    /// usable GPU of that ordinal (driver, library or ordinal missing; candle's reason quoted).
    pub fn open(self) -> Result<Device, String> {
        match self {
            Self::Cpu => Ok(Device::Cpu),
            Self::Cuda(_) if !CUDA_BUILD => Err(format!(
                "device {self}: this flowfm was built without CUDA support; build it with \
                 `cargo xtask build-cuda` (docs/cuda-build.md)"
            )),
            // candle's error carries a backtrace after its first line when RUST_BACKTRACE is
            // set; the reason is the first line.
            Self::Cuda(n) => Device::new_cuda(n).map_err(|e| {
                let reason = e.to_string();
                let reason = reason.lines().next().unwrap_or("unknown error").to_string();
                format!("device {self}: cannot open the GPU: {reason}")
            }),
        }
    }
}

/// The GPU that device tests run on: `FLOWFM_TEST_DEVICE` (`cuda:N`, default `cuda:0`) in a
/// `--features cuda` build when that GPU opens; `None` otherwise (a CPU build, no driver, no
/// GPU), and the tests skip through [`crate::testing::skip_without_gpu`].
pub fn test_gpu() -> Option<Device> {
    if !CUDA_BUILD {
        return None;
    }
    let choice = std::env::var("FLOWFM_TEST_DEVICE")
        .ok()
        .and_then(|s| s.parse::<DeviceChoice>().ok())
        .filter(|c| *c != DeviceChoice::Cpu)
        .unwrap_or(DeviceChoice::Cuda(0));
    match choice.open() {
        Ok(d) => Some(d),
        Err(e) => {
            eprintln!("no GPU for the device tests: {e}");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_names_parse_and_print_back() {
        for (s, want) in [
            ("cpu", DeviceChoice::Cpu),
            ("cuda", DeviceChoice::Cuda(0)),
            ("cuda:3", DeviceChoice::Cuda(3)),
            (" gpu:1 ", DeviceChoice::Cuda(1)),
        ] {
            assert_eq!(s.parse::<DeviceChoice>().unwrap(), want, "{s}");
        }
        assert_eq!(DeviceChoice::Cuda(2).to_string(), "cuda:2");
        for bad in ["", "tpu", "cuda:", "cuda:x", "cuda:-1", "metal"] {
            let e = bad.parse::<DeviceChoice>().unwrap_err();
            assert!(e.contains("device"), "{bad}: {e}");
        }
    }

    #[test]
    fn the_cpu_always_opens_and_a_gpu_needs_the_cuda_build() {
        assert!(DeviceChoice::Cpu.open().unwrap().is_cpu());
        if !CUDA_BUILD {
            let e = DeviceChoice::Cuda(0).open().unwrap_err();
            assert!(e.contains("without CUDA support"), "{e}");
            assert!(test_gpu().is_none());
        }
    }
}
