//! `cargo xtask build-cuda [--check] [--compute-cap N] [--jobs N] [--print-env]`: builds the
//! `flowfm` crate with `--features cuda` (release) on any Linux x86_64 machine, GPU or not, with
//! the CUDA compiler and headers from pinned PyPI wheels (docs/cuda-build.md).
//!
//! - The wheels of [`TOOLKIT`] (nvcc, cicc, the C runtime headers, cudart, CCCL) are installed with
//!   `pip install --no-deps --target` into `$FLOWFM_CACHE/cuda-<nvcc version>` (default
//!   `~/.cache/flowfm`), once; a marker file records the pins, so changing a pin reinstalls. They
//!   all unpack into one CUDA root, `nvidia/cu13/` (bin, nvvm, include, lib).
//! - The build gets `nvcc` on `PATH`, `CUDA_HOME`/`CUDA_PATH` (read by cudarc's and cudaforge's
//!   build scripts), and `CUDA_COMPUTE_CAP` (no GPU to ask: default 90, H100/H200; candle-kernels
//!   compiles its PTX and its static MoE library for that one architecture). Its own target folder,
//!   `target/cuda`, so the CPU build in `target/release` is never invalidated.
//! - `--check` runs `cargo check` (every CUDA kernel compiled by nvcc, every Rust crate type-checked,
//!   nothing linked): what CI runs. Without it, `cargo build` also links: candle 0.11.1 builds
//!   cudarc with `dynamic-linking`, so cuBLAS(Lt), cuRAND, NVRTC ([`LINK`], installed too), cudart
//!   and the driver's `libcuda.so` are linked, not loaded at run time. No wheel ships `libcuda.so`:
//!   the first of `$CUDA_STUBS`, the system's or `/usr/local/cuda/lib64/stubs` that has one is
//!   used, else a link-time stub is generated from cudarc's declarations (`make_libcuda_stub`),
//!   and `<cuda root>/no-driver/libcuda.so.1` links to it, for starting the binary's CPU path on
//!   a machine without a driver (`LD_LIBRARY_PATH=<cuda root>/lib:<cuda root>/no-driver`).

use anyhow::{bail, Context, Result};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The compile-time wheels (name, pinned version): nvcc and its tools, cicc (nvvm), the C runtime
/// headers (crt), the runtime API headers and cudart, CCCL (cub, thrust, libcu++). CUDA 13.0: the
/// first CUDA whose PyPI `nvcc` wheel ships the `nvcc` driver itself (the `-cu12` wheels carry
/// only `ptxas` and libnvvm), and a version cudarc 0.19 knows (`cuda-13000`).
pub const TOOLKIT: [(&str, &str); 5] = [
    ("nvidia-cuda-nvcc", "13.0.88"),
    ("nvidia-nvvm", "13.0.88"),
    ("nvidia-cuda-crt", "13.0.88"),
    ("nvidia-cuda-runtime", "13.0.96"),
    ("nvidia-cuda-cccl", "13.0.85"),
];

/// The libraries a linked (`cargo build`) cuda binary needs besides `libcuda.so`: cuBLAS(Lt),
/// cuRAND, NVRTC, of the same CUDA 13.0.
pub const LINK: [(&str, &str); 3] = [
    ("nvidia-cublas", "13.0.0.19"),
    ("nvidia-curand", "10.4.0.35"),
    ("nvidia-cuda-nvrtc", "13.0.88"),
];

/// Default compute capability: 9.0 (H100, H200), the GPUs the full study is sized for.
pub const DEFAULT_COMPUTE_CAP: u32 = 90;

/// The oldest compute capability CUDA 13 compiles for (Turing).
const MIN_COMPUTE_CAP: u32 = 75;

#[derive(Debug, PartialEq)]
struct Options {
    check: bool,
    compute_cap: u32,
    jobs: Option<u32>,
    print_env: bool,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        check: false,
        compute_cap: DEFAULT_COMPUTE_CAP,
        jobs: None,
        print_env: false,
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--check" => o.check = true,
            "--print-env" => o.print_env = true,
            "--compute-cap" => {
                let v = it.next().context("--compute-cap needs a value, e.g. 90")?;
                o.compute_cap = parse_compute_cap(v)?;
            }
            "--jobs" | "-j" => {
                let v = it.next().context("--jobs needs a value")?;
                o.jobs = Some(v.parse().ok().filter(|j| *j > 0).with_context(|| {
                    format!("--jobs: expected a positive integer, got `{v}`")
                })?);
            }
            other => bail!(
                "build-cuda: unknown option `{other}` \
                 (usage: cargo xtask build-cuda [--check] [--compute-cap N] [--jobs N] [--print-env])"
            ),
        }
    }
    Ok(o)
}

/// `90`, `9.0` or `sm_90` as 90; at least [`MIN_COMPUTE_CAP`].
pub(crate) fn parse_compute_cap(v: &str) -> Result<u32> {
    let digits: String = v
        .trim()
        .trim_start_matches("sm_")
        .trim_start_matches("compute_")
        .chars()
        .filter(|c| *c != '.')
        .collect();
    let cap: u32 = digits.parse().ok().with_context(|| {
        format!("--compute-cap: expected a compute capability such as 90, 9.0 or sm_90, got `{v}`")
    })?;
    if !(MIN_COMPUTE_CAP..=130).contains(&cap) {
        bail!(
            "--compute-cap {v}: CUDA 13 compiles for compute capabilities {MIN_COMPUTE_CAP} to 121 \
             (75 Turing, 80 A100, 86/89 RTX, 90 H100/H200, 100 B200)"
        );
    }
    Ok(cap)
}

/// The cache folder: `$FLOWFM_CACHE`, else `$XDG_CACHE_HOME/flowfm`, else `~/.cache/flowfm`.
fn cache_root(var: impl Fn(&str) -> Option<OsString>) -> Result<PathBuf> {
    if let Some(d) = var("FLOWFM_CACHE").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d));
    }
    if let Some(d) = var("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("flowfm"));
    }
    match var("HOME").filter(|d| !d.is_empty()) {
        Some(h) => Ok(PathBuf::from(h).join(".cache").join("flowfm")),
        None => bail!("neither FLOWFM_CACHE nor HOME is set: set FLOWFM_CACHE to a writable folder for the CUDA wheels"),
    }
}

/// Where the wheels go: one folder per nvcc version.
fn install_dir(cache: &Path) -> PathBuf {
    cache.join(format!("cuda-{}", TOOLKIT[0].1))
}

/// The CUDA root inside the install folder (all CUDA 13 wheels unpack into `nvidia/cu13`).
fn cuda_root(install: &Path) -> PathBuf {
    install.join("nvidia").join("cu13")
}

/// The `pip install` requirement strings, `name==version`.
fn requirements(link: bool) -> Vec<String> {
    let extra: &[(&str, &str)] = if link { &LINK } else { &[] };
    TOOLKIT
        .iter()
        .chain(extra)
        .map(|(n, v)| format!("{n}=={v}"))
        .collect()
}

/// The marker file's text: the requirements, one a line.
fn marker_text(link: bool) -> String {
    requirements(link).join("\n") + "\n"
}

fn marker(install: &Path, link: bool) -> PathBuf {
    install.join(if link {
        ".flowfm-link-complete"
    } else {
        ".flowfm-toolkit-complete"
    })
}

/// Installs the pinned wheels into `install` unless its marker says they are there.
fn ensure_wheels(install: &Path, link: bool) -> Result<()> {
    let m = marker(install, link);
    if std::fs::read_to_string(&m).ok().as_deref() == Some(marker_text(link).as_str()) {
        return Ok(());
    }
    let reqs = requirements(link);
    if !link {
        // pip --target --upgrade replaces the whole `nvidia/` folder: the link libraries go too.
        let _ = std::fs::remove_file(marker(install, true));
    }
    eprintln!(
        "xtask: installing CUDA wheels into {}: {}",
        install.display(),
        reqs.join(" ")
    );
    std::fs::create_dir_all(install)
        .with_context(|| format!("could not create {}", install.display()))?;
    let status = Command::new("python3")
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "--no-deps",
            "--upgrade",
            "--target",
        ])
        .arg(install)
        .args(&reqs)
        .status()
        .context("could not run `python3 -m pip`: install Python 3 with pip (Debian: apt-get install python3-pip)")?;
    if !status.success() {
        bail!(
            "`pip install --target {} {}` failed ({status}); it needs network access to PyPI \
             (or a pip index/--find-links that has these wheels)",
            install.display(),
            reqs.join(" ")
        );
    }
    let nvcc = cuda_root(install).join("bin").join("nvcc");
    if !nvcc.is_file() {
        bail!(
            "the wheels installed but {} is missing; remove {} and rerun",
            nvcc.display(),
            install.display()
        );
    }
    if link {
        link_names(&cuda_root(install))?;
    }
    std::fs::write(&m, marker_text(link))
        .with_context(|| format!("could not write {}", m.display()))?;
    Ok(())
}

/// The wheels ship only versioned shared libraries (`libcublas.so.13`); the linker's `-lcublas`
/// wants `libcublas.so`. Symlinks in `lib/` (cudart from the runtime wheel, cuBLAS, cuRAND and
/// NVRTC from [`LINK`], each under `nvidia/cu13/lib`).
fn link_names(root: &Path) -> Result<()> {
    let lib = root.join("lib");
    let entries =
        std::fs::read_dir(&lib).with_context(|| format!("could not read {}", lib.display()))?;
    for e in entries {
        let name = e?.file_name().to_string_lossy().into_owned();
        if let Some(plain) = unversioned(&name) {
            let dst = lib.join(&plain);
            if !dst.exists() {
                std::os::unix::fs::symlink(&name, &dst)
                    .with_context(|| format!("could not link {} -> {name}", dst.display()))?;
            }
        }
    }
    Ok(())
}

/// `libcublas.so.13` -> `libcublas.so`; `None` for names that are not a versioned `.so`.
fn unversioned(name: &str) -> Option<String> {
    let (stem, version) = name.split_once(".so.")?;
    (stem.starts_with("lib") && !version.is_empty()).then(|| format!("{stem}.so"))
}

/// The environment of the cuda build: (name, value) pairs to set.
fn build_env(
    root: &Path,
    cap: u32,
    path: Option<OsString>,
    target_dir: Option<OsString>,
    workspace: &Path,
) -> Result<Vec<(String, OsString)>> {
    let mut dirs = vec![root.join("bin")];
    if let Some(p) = path {
        dirs.extend(std::env::split_paths(&p));
    }
    let path = std::env::join_paths(dirs).context("a PATH entry contains `:`")?;
    let target = target_dir
        .filter(|t| !t.is_empty())
        .unwrap_or_else(|| workspace.join("target").join("cuda").into_os_string());
    Ok(vec![
        ("PATH".into(), path),
        ("CUDA_HOME".into(), root.as_os_str().to_owned()),
        ("CUDA_PATH".into(), root.as_os_str().to_owned()),
        ("CUDA_COMPUTE_CAP".into(), cap.to_string().into()),
        ("CARGO_TARGET_DIR".into(), target),
    ])
}

/// The cargo arguments of the build.
fn cargo_args(o: &Options) -> Vec<String> {
    let mut a: Vec<String> = [
        if o.check { "check" } else { "build" },
        "--release",
        "-p",
        "flowfm",
        "--features",
        "cuda",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    if let Some(j) = o.jobs {
        a.push("-j".into());
        a.push(j.to_string());
    }
    a
}

/// A `libcuda.so` the linker can find: `$CUDA_STUBS`, the driver's (Debian/Ubuntu or RHEL paths)
/// or a toolkit's stub.
fn libcuda_dir(var: impl Fn(&str) -> Option<OsString>) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = var("CUDA_STUBS") {
        dirs.push(d.into());
    }
    dirs.extend(
        [
            "/usr/lib/x86_64-linux-gnu",
            "/usr/lib64",
            "/usr/local/cuda/lib64/stubs",
        ]
        .iter()
        .map(PathBuf::from),
    );
    dirs.into_iter().find(|d| d.join("libcuda.so").exists())
}

/// The version of `name` in Cargo.lock's text (the first entry).
fn locked_version(lock: &str, name: &str) -> Option<String> {
    let key = format!("name = \"{name}\"");
    let mut lines = lock.lines();
    while let Some(l) = lines.next() {
        if l.trim() == key {
            let v = lines.next()?.trim().strip_prefix("version = \"")?;
            return Some(v.trim_end_matches('"').to_string());
        }
    }
    None
}

/// The CUDA driver entry points cudarc declares (`pub unsafe fn cuXxx(` in its
/// `driver/sys/mod.rs`), sorted, without duplicates.
fn driver_symbols(bindings: &str) -> Vec<String> {
    let mut syms: Vec<String> = bindings
        .lines()
        .filter_map(|l| l.strip_prefix("pub unsafe fn cu"))
        .filter_map(|rest| rest.split_once('(').map(|(n, _)| format!("cu{n}")))
        .filter(|n| n.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .collect();
    syms.sort();
    syms.dedup();
    syms
}

/// C source of the stub: every entry point returns CUDA_ERROR_STUB_LIBRARY (34).
fn stub_source(syms: &[String]) -> String {
    let mut c = String::from(
        "/* flowfm link-time stub of libcuda.so.1 (cargo xtask build-cuda): never load it at run time. */\n",
    );
    for s in syms {
        c.push_str(&format!("int {s}(void) {{ return 34; }}\n"));
    }
    c
}

/// Puts a `libcuda.so` into `<cuda root>/lib/stubs`, a folder cudarc's build script already
/// gives the linker (`CUDA_HOME/lib/stubs`), so the build's flags never change: a link to the
/// first real one [`libcuda_dir`] finds, else a generated stub ([`make_libcuda_stub`]).
fn ensure_libcuda(
    root: &Path,
    workspace: &Path,
    var: impl Fn(&str) -> Option<OsString>,
) -> Result<()> {
    let dir = root.join("lib").join("stubs");
    let dst = dir.join("libcuda.so");
    if dst.exists() {
        return Ok(());
    }
    std::fs::create_dir_all(&dir).with_context(|| format!("could not create {}", dir.display()))?;
    match libcuda_dir(var) {
        Some(found) => {
            let src = found.join("libcuda.so");
            std::os::unix::fs::symlink(&src, &dst).with_context(|| {
                format!("could not link {} -> {}", dst.display(), src.display())
            })?;
            Ok(())
        }
        None => {
            make_libcuda_stub(&dir, workspace)?;
            // For starting the binary where there is no driver (the CPU path, e.g. `--help`):
            // `LD_LIBRARY_PATH=<cuda root>/lib:<cuda root>/no-driver`. Never on a GPU machine.
            let nd = root.join("no-driver");
            std::fs::create_dir_all(&nd)
                .with_context(|| format!("could not create {}", nd.display()))?;
            let so1 = nd.join("libcuda.so.1");
            if !so1.exists() {
                std::os::unix::fs::symlink(&dst, &so1)
                    .with_context(|| format!("could not link {}", so1.display()))?;
            }
            Ok(())
        }
    }
}

/// Writes `dir/libcuda.so` (soname `libcuda.so.1`), a stub with the entry points of the locked
/// cudarc, built with the C compiler (`$CC`, else `cc`) that nvcc needs anyway: no PyPI wheel
/// ships the driver library, and the linker only needs its symbols. At run time the dynamic
/// loader finds the driver's real `libcuda.so.1`; the stub folder is never on its path.
fn make_libcuda_stub(dir: &Path, workspace: &Path) -> Result<()> {
    let lock_path = workspace.join("Cargo.lock");
    let lock = std::fs::read_to_string(&lock_path)
        .with_context(|| format!("could not read {}", lock_path.display()))?;
    let version = locked_version(&lock, "cudarc")
        .context("Cargo.lock has no cudarc: is the `cuda` feature still wired to candle?")?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let registry = cargo_home.join("registry").join("src");
    let rel = Path::new("src").join("driver").join("sys").join("mod.rs");
    let bindings = std::fs::read_dir(&registry)
        .with_context(|| {
            format!(
                "could not read {} (run `cargo fetch` first)",
                registry.display()
            )
        })?
        .filter_map(|e| e.ok())
        .map(|e| e.path().join(format!("cudarc-{version}")).join(&rel))
        .find(|p| p.is_file())
        .with_context(|| {
            format!(
                "cudarc {version}'s sources are not under {}: run `cargo fetch` and rerun",
                registry.display()
            )
        })?;
    let text = std::fs::read_to_string(&bindings)
        .with_context(|| format!("could not read {}", bindings.display()))?;
    let syms = driver_symbols(&text);
    if syms.len() < 100 {
        bail!(
            "found only {} driver entry points in {}: cudarc's layout changed; point CUDA_STUBS at \
             a folder with a libcuda.so instead",
            syms.len(),
            bindings.display()
        );
    }
    let src = dir.join("libcuda_stub.c");
    std::fs::write(&src, stub_source(&syms))
        .with_context(|| format!("could not write {}", src.display()))?;
    let cc = std::env::var("CC").unwrap_or_else(|_| "cc".into());
    let tmp = dir.join("libcuda.so.tmp");
    let status = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O1", "-Wl,-soname,libcuda.so.1", "-o"])
        .arg(&tmp)
        .arg(&src)
        .status()
        .with_context(|| format!("could not run the C compiler `{cc}` (install gcc, or set CC)"))?;
    if !status.success() {
        bail!(
            "`{cc}` could not build the libcuda stub from {} ({status})",
            src.display()
        );
    }
    std::fs::rename(&tmp, dir.join("libcuda.so"))
        .with_context(|| format!("could not move the stub into {}", dir.display()))?;
    eprintln!(
        "xtask: wrote a link-time libcuda.so stub ({} entry points of cudarc {version}) to {}",
        syms.len(),
        dir.display()
    );
    Ok(())
}

/// `cargo xtask build-cuda ...`.
/// The build environment for compute capability `cap` and the CUDA root it points at, without
/// installing anything.
fn environment(cap: u32) -> Result<(Vec<(String, OsString)>, PathBuf)> {
    let var = |k: &str| std::env::var_os(k);
    let install = install_dir(&cache_root(var)?);
    let root = cuda_root(&install);
    let env = build_env(
        &root,
        cap,
        var("PATH"),
        var("CARGO_TARGET_DIR"),
        &crate::workspace_root(),
    )?;
    Ok((env, root))
}

/// The cuda build's target folder (`CARGO_TARGET_DIR` of its environment, default
/// `target/cuda`).
pub(crate) fn target_dir() -> Result<PathBuf> {
    let (env, _) = environment(DEFAULT_COMPUTE_CAP)?;
    Ok(env
        .into_iter()
        .find(|(k, _)| k == "CARGO_TARGET_DIR")
        .map(|(_, v)| PathBuf::from(v))
        .unwrap_or_else(|| crate::workspace_root().join("target/cuda")))
}

/// Where the wheels' cuBLAS, cuRAND and CUDA runtime libraries are, for `LD_LIBRARY_PATH` when
/// a cuda binary runs on a GPU machine (the driver's `libcuda.so.1` comes from the system).
pub(crate) fn runtime_lib_dir() -> Result<PathBuf> {
    Ok(environment(DEFAULT_COMPUTE_CAP)?.1.join("lib"))
}

/// Installs what a cuda build needs (the toolkit wheels; with `link`, the libraries and a
/// `libcuda.so` for the linker too) and returns the environment for cargo.
pub(crate) fn toolchain(cap: u32, link: bool) -> Result<Vec<(String, OsString)>> {
    let var = |k: &str| std::env::var_os(k);
    let (env, root) = environment(cap)?;
    let install = install_dir(&cache_root(var)?);
    ensure_wheels(&install, false)?;
    // cudarc's build script passes `<cuda root>/lib/stubs` to the linker only if the folder
    // exists when the script first runs, and cargo keeps that output: a `--check` run before the
    // stub existed made every later link fail with "unable to find library -lcuda". The folder
    // is made up front, so check and build see the same search paths.
    let stubs = root.join("lib").join("stubs");
    std::fs::create_dir_all(&stubs)
        .with_context(|| format!("cannot create {}", stubs.display()))?;
    if link {
        ensure_wheels(&install, true)?;
        ensure_libcuda(&root, &crate::workspace_root(), var)?;
    }
    Ok(env)
}

pub fn run(args: &[String]) -> Result<()> {
    let o = parse(args)?;
    if o.print_env {
        for (k, v) in &environment(o.compute_cap)?.0 {
            println!(
                "export {k}='{}'",
                v.to_string_lossy().replace('\'', "'\\''")
            );
        }
        return Ok(());
    }
    let env = toolchain(o.compute_cap, !o.check)?;
    let args = cargo_args(&o);
    let secs = cargo_with(&env, &args)?;
    eprintln!("xtask: cuda {} done in {secs:.0} s", args[0]);
    Ok(())
}

/// `cargo args` from the workspace root in the cuda build environment `env`, not yet run.
pub(crate) fn cargo_command<S: AsRef<std::ffi::OsStr>>(
    env: &[(String, OsString)],
    args: &[S],
) -> Command {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(args).current_dir(crate::workspace_root());
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd
}

/// Runs `cargo args` from the workspace root in the cuda build environment `env`; the seconds it
/// took, or an error naming the command.
pub(crate) fn cargo_with(env: &[(String, OsString)], args: &[String]) -> Result<f64> {
    let mut cmd = cargo_command(env, args);
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map_or_else(String::new, |(_, v)| v.to_string_lossy().into_owned())
    };
    eprintln!(
        "xtask: CUDA_HOME={} CUDA_COMPUTE_CAP={} cargo {}",
        get("CUDA_HOME"),
        get("CUDA_COMPUTE_CAP"),
        args.join(" ")
    );
    let start = Instant::now();
    let status = cmd
        .status()
        .context("could not run cargo for the cuda build")?;
    let secs = start.elapsed().as_secs_f64();
    if !status.success() {
        bail!(
            "`cargo {}` failed ({status}) after {secs:.0} s; docs/cuda-build.md lists what it needs",
            args.join(" ")
        );
    }
    Ok(secs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(v: &[&str]) -> Result<Options> {
        parse(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn options() {
        let d = a(&[]).unwrap();
        assert_eq!(
            d,
            Options {
                check: false,
                compute_cap: 90,
                jobs: None,
                print_env: false
            }
        );
        let o = a(&["--check", "--compute-cap", "8.6", "-j", "1"]).unwrap();
        assert!(o.check);
        assert_eq!((o.compute_cap, o.jobs), (86, Some(1)));
        assert_eq!(a(&["--compute-cap", "sm_100"]).unwrap().compute_cap, 100);
        assert!(a(&["--compute-cap", "70"]).is_err(), "CUDA 13 has no sm_70");
        assert!(a(&["--compute-cap", "ninety"]).is_err());
        assert!(a(&["--compute-cap"]).is_err());
        assert!(a(&["--jobs", "0"]).is_err());
        assert!(a(&["--release"]).is_err());
    }

    #[test]
    fn cargo_command() {
        let o = a(&["--check", "--jobs", "2"]).unwrap();
        assert_eq!(
            cargo_args(&o).join(" "),
            "check --release -p flowfm --features cuda -j 2"
        );
        assert_eq!(
            cargo_args(&a(&[]).unwrap()).join(" "),
            "build --release -p flowfm --features cuda"
        );
    }

    #[test]
    fn cache_and_install_paths() {
        let env = |pairs: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| OsString::from(v))
            }
        };
        assert_eq!(
            cache_root(env(&[("FLOWFM_CACHE", "/c"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/c")
        );
        assert_eq!(
            cache_root(env(&[("HOME", "/h")])).unwrap(),
            PathBuf::from("/h/.cache/flowfm")
        );
        assert_eq!(
            cache_root(env(&[("XDG_CACHE_HOME", "/x"), ("HOME", "/h")])).unwrap(),
            PathBuf::from("/x/flowfm")
        );
        assert!(cache_root(env(&[])).is_err());
        let install = install_dir(Path::new("/c"));
        assert_eq!(install, PathBuf::from("/c/cuda-13.0.88"));
        assert_eq!(
            cuda_root(&install),
            PathBuf::from("/c/cuda-13.0.88/nvidia/cu13")
        );
    }

    #[test]
    fn environment() {
        let root = Path::new("/c/cuda-13.0.88/nvidia/cu13");
        let env = build_env(
            root,
            90,
            Some("/usr/bin:/bin".into()),
            None,
            Path::new("/w"),
        )
        .unwrap();
        let get = |k: &str| {
            env.iter()
                .find(|(n, _)| n == k)
                .map(|(_, v)| v.to_string_lossy().into_owned())
        };
        assert_eq!(
            get("PATH").as_deref(),
            Some("/c/cuda-13.0.88/nvidia/cu13/bin:/usr/bin:/bin")
        );
        assert_eq!(get("CUDA_HOME").as_deref(), Some(root.to_str().unwrap()));
        assert_eq!(get("CUDA_PATH"), get("CUDA_HOME"));
        assert_eq!(get("CUDA_COMPUTE_CAP").as_deref(), Some("90"));
        assert_eq!(get("CARGO_TARGET_DIR").as_deref(), Some("/w/target/cuda"));
        let own = build_env(root, 86, None, Some("/t".into()), Path::new("/w")).unwrap();
        assert!(own
            .iter()
            .any(|(k, v)| k == "CARGO_TARGET_DIR" && v == "/t"));
        assert!(own
            .iter()
            .any(|(k, v)| k == "CUDA_COMPUTE_CAP" && v == "86"));
    }

    #[test]
    fn pins() {
        let toolkit = requirements(false);
        assert_eq!(toolkit.len(), TOOLKIT.len());
        assert!(toolkit.iter().all(|r| r.contains("==")));
        assert_eq!(toolkit[0], "nvidia-cuda-nvcc==13.0.88");
        assert_eq!(requirements(true).len(), TOOLKIT.len() + LINK.len());
        assert!(marker_text(true).starts_with(&marker_text(false)));
        assert_ne!(marker_text(true), marker_text(false));
    }

    #[test]
    fn libcuda_stub() {
        let lock = "[[package]]\nname = \"cudarc\"\nversion = \"0.19.10\"\nsource = \"x\"\n";
        assert_eq!(locked_version(lock, "cudarc").as_deref(), Some("0.19.10"));
        assert_eq!(locked_version(lock, "candle-core"), None);
        let bindings = "pub type CUresult = u32;\npub unsafe fn cuInit(Flags: u32) -> CUresult {\n\
                        pub unsafe fn cuCtxCreate_v2(p: *mut u8) -> CUresult {\n\
                        pub unsafe fn cuInit(Flags: u32) -> CUresult {\n\
                            fn cuInit(Flags: u32) -> CUresult;\n";
        assert_eq!(driver_symbols(bindings), ["cuCtxCreate_v2", "cuInit"]);
        let c = stub_source(&driver_symbols(bindings));
        assert!(c.contains("int cuInit(void) { return 34; }"));
        assert_eq!(c.lines().count(), 3);
    }

    #[test]
    fn shared_library_names() {
        assert_eq!(
            unversioned("libcublas.so.13").as_deref(),
            Some("libcublas.so")
        );
        assert_eq!(
            unversioned("libnvrtc.so.13.0.88").as_deref(),
            Some("libnvrtc.so")
        );
        assert_eq!(unversioned("libcudart_static.a"), None);
        assert_eq!(unversioned("libcudart.so"), None);
        assert_eq!(unversioned("cmake"), None);
    }
}
