//! `cargo xtask reproduce`: runs the study end to end by driving the `flowfm` binary.

use anyhow::{bail, Result};

/// Options of a reproduce run.
#[derive(Debug, Default)]
pub struct Options {
    /// Profile: "quick", "default" or "full".
    pub profile: String,
    /// Extra raw datasets.
    pub data_dir: Option<String>,
    /// Rerun stages whose outputs exist.
    pub force: bool,
    /// Report name.
    pub name: Option<String>,
    /// Seed of the whole study (recorded in the report).
    pub seed: Option<String>,
    /// Use `target/release/flowfm` as it is (CI: `cargo xtask test` just built it; building
    /// `-p flowfm` alone resolves dependency features differently and recompiles candle).
    pub no_build: bool,
    /// `--device` for `flowfm reproduce` (`cpu`, `cuda`, `cuda:N`; checked there).
    pub device: Option<String>,
}

fn parse(args: &[String]) -> Result<Options> {
    let mut o = Options {
        profile: "default".into(),
        ..Default::default()
    };
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--quick" => o.profile = "quick".into(),
            "--full" => o.profile = "full".into(),
            "--force" => o.force = true,
            "--no-build" => o.no_build = true,
            "--data-dir" => match it.next() {
                Some(d) => o.data_dir = Some(d.clone()),
                None => bail!("--data-dir needs a directory"),
            },
            "--seed" => match it.next() {
                Some(n) if n.parse::<u64>().is_ok() => o.seed = Some(n.clone()),
                Some(n) => bail!("--seed needs a non-negative integer, got `{n}`"),
                None => bail!("--seed needs a value"),
            },
            "--device" => match it.next() {
                Some(d) => o.device = Some(d.clone()),
                None => bail!("--device needs a value: cpu, cuda or cuda:N"),
            },
            "--name" => match it.next() {
                Some(n) => o.name = Some(n.clone()),
                None => bail!("--name needs a value"),
            },
            other => bail!("reproduce: unknown option `{other}`"),
        }
    }
    Ok(o)
}

/// Runs the study.
pub fn run(args: &[String]) -> Result<()> {
    let opts = parse(args)?;
    crate::deps::ensure_system_deps()?;
    let cuda = opts.device.as_deref().is_some_and(|d| d != "cpu");
    // On a GPU the study runs the cuda build (target/cuda, `cargo xtask build-cuda`), with the
    // CUDA libraries of the pinned wheels on the loader's path.
    let bin = if cuda {
        crate::cuda::target_dir()?.join("release/flowfm")
    } else {
        crate::workspace_root().join("target/release/flowfm")
    };
    if !opts.no_build {
        if cuda {
            crate::cuda::run(&[])?;
        } else {
            crate::cargo(&["build", "--release", "-p", "flowfm"])?;
        }
    } else if !bin.is_file() {
        bail!(
            "--no-build: {} does not exist; build it first",
            bin.display()
        );
    }
    let mut cmd = std::process::Command::new(&bin);
    if cuda {
        let libs = crate::cuda::runtime_lib_dir()?;
        let path = match std::env::var_os("LD_LIBRARY_PATH") {
            Some(p) if !p.is_empty() => {
                let mut v = libs.into_os_string();
                v.push(":");
                v.push(p);
                v
            }
            _ => libs.into_os_string(),
        };
        cmd.env("LD_LIBRARY_PATH", path);
    }
    cmd.arg("reproduce").arg("--profile").arg(&opts.profile);
    if let Some(d) = &opts.data_dir {
        cmd.arg("--data-dir").arg(d);
    }
    if opts.force {
        cmd.arg("--force");
    }
    if let Some(seed) = &opts.seed {
        cmd.arg("--seed").arg(seed);
    }
    if let Some(d) = &opts.device {
        cmd.arg("--device").arg(d);
    }
    cmd.arg("--config-dir")
        .arg(crate::workspace_root().join("configs"));
    let name = opts.name.clone().unwrap_or_else(|| opts.profile.clone());
    cmd.arg("--report-dir")
        .arg(crate::workspace_root().join("reports").join(name));
    let status = cmd.status()?;
    if !status.success() {
        bail!("`flowfm reproduce` failed ({status})");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn options_parse_and_reject_what_they_should() {
        let o = parse(&args(&["--full", "--device", "cuda:1", "--seed", "3"])).unwrap();
        assert_eq!(o.profile, "full");
        assert_eq!(o.device.as_deref(), Some("cuda:1"));
        assert_eq!(o.seed.as_deref(), Some("3"));
        assert_eq!(parse(&args(&[])).unwrap().device, None);
        for bad in [&["--device"][..], &["--seed", "-1"], &["--bogus"]] {
            assert!(parse(&args(bad)).is_err(), "{bad:?}");
        }
    }
}
