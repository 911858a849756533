//! Checks for and installs what the build and tests need beyond the Rust toolchain.
//!
//! The HDF5 C library (for the `hdf5-metno` crate) is installed with apt-get when it is missing and
//! we are root; otherwise the error says exactly what to install. Python packages used only by the
//! interoperability tests (h5py, safetensors, numpy) are installed with pip when possible; the
//! tests that need them skip with a message when they are absent.

use anyhow::{bail, Result};
use std::path::Path;
use std::process::{Command, Stdio};

fn hdf5_present() -> bool {
    let pkg_config = Command::new("pkg-config")
        .args(["--exists", "hdf5"])
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    pkg_config
        || Path::new("/usr/include/hdf5/serial/hdf5.h").exists()
        || Path::new("/usr/include/hdf5.h").exists()
        || std::env::var_os("HDF5_DIR").is_some()
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// Makes sure the HDF5 development files are installed.
pub fn ensure_system_deps() -> Result<()> {
    if hdf5_present() {
        return Ok(());
    }
    let has_apt = Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    if !(has_apt && is_root()) {
        bail!(
            "the HDF5 C library is missing. Install it and rerun:\n  \
             Debian/Ubuntu: sudo apt-get install -y libhdf5-dev pkg-config\n  \
             Fedora: sudo dnf install hdf5-devel\n  macOS: brew install hdf5\n\
             or point HDF5_DIR at an existing installation"
        );
    }
    eprintln!("xtask: installing libhdf5-dev and pkg-config with apt-get");
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    if !update.success() {
        bail!("`apt-get update` failed ({update}); install libhdf5-dev and pkg-config by hand");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq", "libhdf5-dev", "pkg-config"])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !install.success() || !hdf5_present() {
        bail!("`apt-get install libhdf5-dev pkg-config` failed ({install})");
    }
    Ok(())
}

/// Makes sure GNU time is at `/usr/bin/time` (its `-v` report gives the peak resident memory of
/// the benchmarks); installs the `time` package with apt-get when missing and we are root.
pub fn ensure_gnu_time() -> Result<()> {
    apt_install_unless(Path::new("/usr/bin/time").is_file(), &["time"])?;
    if !Path::new("/usr/bin/time").is_file() {
        bail!("`apt-get install time` did not provide /usr/bin/time");
    }
    Ok(())
}

/// Installs the Debian packages `pkgs` with apt-get unless `present`; an error saying what to
/// install when we cannot (no apt-get, not root).
pub fn apt_install_unless(present: bool, pkgs: &[&str]) -> Result<()> {
    if present {
        return Ok(());
    }
    let has_apt = Command::new("apt-get")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok();
    let list = pkgs.join(" ");
    if !(has_apt && is_root()) {
        bail!("missing system package(s); install them and rerun: sudo apt-get install -y {list}");
    }
    eprintln!("xtask: installing {list} with apt-get");
    let update = Command::new("apt-get").args(["update", "-qq"]).status()?;
    if !update.success() {
        bail!("`apt-get update` failed ({update}); install {list} by hand");
    }
    let install = Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(pkgs)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()?;
    if !install.success() {
        bail!("`apt-get install {list}` failed ({install})");
    }
    Ok(())
}

/// Installs the Python packages the interoperability tests use, when pip is available.
pub fn ensure_python_test_deps() {
    let wanted = ["h5py", "safetensors", "numpy"];
    let missing: Vec<&str> = wanted
        .iter()
        .copied()
        .filter(|m| {
            !Command::new("python3")
                .args(["-c", &format!("import {m}")])
                .stderr(Stdio::null())
                .status()
                .map(|s| s.success())
                .unwrap_or(false)
        })
        .collect();
    if missing.is_empty() {
        return;
    }
    eprintln!(
        "xtask: installing Python test packages: {}",
        missing.join(", ")
    );
    let ok = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
        ])
        .args(&missing)
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        eprintln!(
            "xtask: warning: could not install {} with pip; the tests that read our files from Python will skip",
            missing.join(", ")
        );
    }
}

/// Makes sure `cargo fmt` and `cargo clippy` exist (rustup components of the toolchain); installs
/// them with rustup when they are missing. When that fails, the next command says what is missing.
pub fn ensure_rust_components() {
    let has = |sub: &str| {
        Command::new("cargo")
            .args([sub, "--version"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .map(|s| s.success())
            .unwrap_or(false)
    };
    for (sub, component) in [("fmt", "rustfmt"), ("clippy", "clippy")] {
        if !has(sub) {
            eprintln!("xtask: installing the {component} component with rustup");
            let _ = Command::new("rustup")
                .args(["component", "add", component])
                .status();
        }
    }
}
