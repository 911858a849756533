//! Checks for and installs what the build and tests need beyond the Rust toolchain.
//!
//! The HDF5 C library is built from source with the application (`hdf5-metno`'s `static`
//! feature: a current HDF5 from the `hdf5-metno-src` crate, linked statically; the system's
//! libhdf5 is neither needed nor used). Its build script runs CMake, which must be 3.26 or newer;
//! when the `cmake` on `PATH` is missing or older, CMake is installed with pip (the `cmake`
//! package on PyPI) and the `CMAKE` variable points the build at it. Python packages used only by
//! the interoperability tests (h5py, safetensors, numpy) are installed with pip when possible; the
//! tests that need them skip with a message when they are absent.

use anyhow::{bail, Result};
use std::ffi::{OsStr, OsString};
use std::path::Path;
use std::process::{Command, Stdio};

/// The oldest CMake that HDF5's `CMakeLists.txt` accepts.
const CMAKE_MIN: (u32, u32) = (3, 26);

/// `(major, minor)` from `cmake --version` ("cmake version 4.4.5"), `None` when it does not run.
fn cmake_version(cmake: &OsStr) -> Option<(u32, u32)> {
    let out = Command::new(cmake)
        .arg("--version")
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    parse_cmake_version(&String::from_utf8_lossy(&out.stdout))
}

fn parse_cmake_version(text: &str) -> Option<(u32, u32)> {
    let v = text.lines().next()?.strip_prefix("cmake version ")?;
    let mut parts = v.trim().split('.');
    let major = parts.next()?.parse().ok()?;
    let minor = parts.next()?.parse().ok()?;
    Some((major, minor))
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
        .unwrap_or(false)
}

/// The `cmake` executable inside the pip package, when it is installed for `python3`.
fn pip_cmake() -> Option<OsString> {
    let out = Command::new("python3")
        .args([
            "-c",
            "import cmake, os; print(os.path.join(cmake.CMAKE_BIN_DIR, 'cmake'))",
        ])
        .stderr(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let path = String::from_utf8_lossy(&out.stdout).trim().to_string();
    Path::new(&path).is_file().then(|| OsString::from(path))
}

/// Makes sure HDF5 can be built from source: a CMake of at least 3.26, found through `CMAKE`, on
/// `PATH`, or installed with pip. Sets `CMAKE` for the cargo commands this process starts when the
/// one on `PATH` is not the one to use.
pub fn ensure_system_deps() -> Result<()> {
    let new_enough = |c: &OsStr| cmake_version(c).is_some_and(|v| v >= CMAKE_MIN);
    if let Some(c) = std::env::var_os("CMAKE") {
        if new_enough(&c) {
            return Ok(());
        }
        bail!(
            "CMAKE={} is not a CMake of at least {}.{} (HDF5 is built from source with it); \
             unset CMAKE or point it at a newer one",
            c.to_string_lossy(),
            CMAKE_MIN.0,
            CMAKE_MIN.1
        );
    }
    if new_enough(OsStr::new("cmake")) {
        return Ok(());
    }
    let use_it = |c: OsString| {
        eprintln!("xtask: building HDF5 with {}", c.to_string_lossy());
        std::env::set_var("CMAKE", c);
    };
    if let Some(c) = pip_cmake().filter(|c| new_enough(c)) {
        use_it(c);
        return Ok(());
    }
    eprintln!(
        "xtask: installing CMake >= {}.{} with pip (HDF5 is built from source with it)",
        CMAKE_MIN.0, CMAKE_MIN.1
    );
    let mut pip = Command::new("python3");
    pip.args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
    ]);
    if !is_root() {
        pip.arg("--user");
    }
    let installed = pip
        .arg(format!("cmake>={}.{}", CMAKE_MIN.0, CMAKE_MIN.1))
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    match pip_cmake().filter(|c| new_enough(c)) {
        Some(c) if installed => {
            use_it(c);
            Ok(())
        }
        _ => bail!(
            "HDF5 is built from source and needs CMake {}.{} or newer, which is missing and could \
             not be installed with pip. Install it and rerun: `python3 -m pip install cmake`, or \
             from https://cmake.org/download/, or point CMAKE at one",
            CMAKE_MIN.0,
            CMAKE_MIN.1
        ),
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmake_versions_are_read_from_the_first_line() {
        assert_eq!(
            parse_cmake_version("cmake version 3.25.1\n\nCMake suite maintained"),
            Some((3, 25))
        );
        assert_eq!(parse_cmake_version("cmake version 4.4.5"), Some((4, 4)));
        assert!(parse_cmake_version("cmake version 3.25.1").unwrap() < CMAKE_MIN);
        assert!(parse_cmake_version("cmake version 3.26.0").unwrap() >= CMAKE_MIN);
        assert_eq!(parse_cmake_version("bash: cmake: not found"), None);
        assert_eq!(parse_cmake_version(""), None);
    }
}
