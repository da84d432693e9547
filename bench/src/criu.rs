//! CRIU, the reference `mrun-bench` measures mrun against: CRIU 4.2 built from source in the
//! bench's own cache (`~/.cache/mrun-bench/criu-4.2`), never a dependency of mrun. Debian 12's
//! package (3.17) does not work on recent kernels, so the bench clones the v4.2 tag and runs
//! `make criu`, when asked to (`--criu build`).

use std::os::fd::AsFd;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

use anyhow::{bail, Context};

/// The tag built.
pub const VERSION: &str = "v4.2";
/// Where it is cloned from, unless `MRUN_BENCH_CRIU_GIT` names another repository (a mirror,
/// or a local clone where GitHub cannot be reached).
pub const GIT: &str = "https://github.com/checkpoint-restore/criu";

/// Debian packages `make criu` needs (from CRIU's contrib/dependencies/apt-packages.sh and
/// criu/Makefile.packages, less what only its tests and docs need).
pub const DEBIAN_BUILD_DEPS: &[&str] = &[
    "build-essential",
    "pkg-config",
    "git",
    "libprotobuf-dev",
    "libprotobuf-c-dev",
    "protobuf-c-compiler",
    "protobuf-compiler",
    "python3-protobuf",
    "libnl-3-dev",
    "libnl-route-3-dev",
    "libcap-dev",
    "libnet1-dev",
    "uuid-dev",
    "libbsd-dev",
    "libgnutls28-dev",
    "libdrm-dev",
    "libaio-dev",
    "libnftables-dev",
];

/// The cache: `$XDG_CACHE_HOME/mrun-bench`, else `~/.cache/mrun-bench`.
pub fn cache_dir() -> anyhow::Result<PathBuf> {
    if let Some(d) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(d).join("mrun-bench"));
    }
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .context("HOME is not set: cannot find ~/.cache/mrun-bench")?;
    Ok(PathBuf::from(home).join(".cache").join("mrun-bench"))
}

/// The source tree in the cache, and the binary `make criu` makes there.
pub fn cached() -> anyhow::Result<(PathBuf, PathBuf)> {
    let src = cache_dir()?.join("criu-4.2");
    let bin = src.join("criu").join("criu");
    Ok((src, bin))
}

/// What the bench does about CRIU.
#[derive(Debug, Clone)]
pub enum Criu {
    /// Measured with this binary; `version` is its `--version` line.
    Ready { bin: PathBuf, version: String },
    /// Not measured, for this reason (printed in the CRIU columns).
    Absent(String),
}

/// Resolves `--criu`: `None` (the cached build if there is one), `build` (that, or build it
/// now), `off`, or the path of a criu binary.
pub fn resolve(arg: Option<&str>) -> anyhow::Result<Criu> {
    let bin = match arg {
        Some("off") => return Ok(Criu::Absent("not measured (--criu off)".into())),
        Some("build") => {
            let (src, bin) = cached()?;
            if !bin.is_file() {
                build(&src)?;
            }
            bin
        }
        Some(path) => PathBuf::from(path),
        None => {
            let (_, bin) = cached()?;
            if !bin.is_file() {
                return Ok(Criu::Absent("not built (run with --criu build)".into()));
            }
            bin
        }
    };
    if !nix::unistd::geteuid().is_root() {
        return Ok(Criu::Absent(format!(
            "not measured: {} needs root",
            bin.display()
        )));
    }
    let out = Command::new(&bin)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {} --version", bin.display()))?;
    if !out.status.success() {
        bail!(
            "`{} --version` failed ({}): {}",
            bin.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let version = String::from_utf8_lossy(&out.stdout)
        .lines()
        .next()
        .unwrap_or_default()
        .trim()
        .to_string();
    Ok(Criu::Ready { bin, version })
}

/// Clones CRIU's v4.2 into `src` and runs `make criu` there, after installing its Debian build
/// dependencies that are missing (as root, with apt-get). Prints each step and its time on
/// stderr.
pub fn build(src: &Path) -> anyhow::Result<()> {
    let start = Instant::now();
    let missing = missing_packages();
    if !missing.is_empty() {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "-q", "--no-install-recommends"])
            .args(&missing)
            .env("DEBIAN_FRONTEND", "noninteractive");
        if !nix::unistd::geteuid().is_root() {
            bail!(
                "CRIU's build needs these Debian packages: run `sudo apt-get install {}` first",
                missing.join(" ")
            );
        }
        step(&mut cmd, "installing CRIU's build dependencies")?;
    }
    if !src.join("Makefile").is_file() {
        let git = std::env::var("MRUN_BENCH_CRIU_GIT").unwrap_or_else(|_| GIT.to_string());
        if src.exists() {
            std::fs::remove_dir_all(src)
                .with_context(|| format!("cannot remove the partial clone {}", src.display()))?;
        }
        if let Some(parent) = src.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("cannot create {}", parent.display()))?;
        }
        let mut cmd = Command::new("git");
        cmd.args(["clone", "-q", "--depth", "1", "--branch", VERSION])
            .arg(&git)
            .arg(src)
            .env("GIT_TERMINAL_PROMPT", "0");
        step(
            &mut cmd,
            &format!("cloning CRIU {VERSION} from {git} (set MRUN_BENCH_CRIU_GIT for a mirror)"),
        )?;
    }
    let jobs = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut cmd = Command::new("make");
    cmd.arg(format!("-j{jobs}")).arg("criu").current_dir(src);
    step(&mut cmd, &format!("make criu in {}", src.display()))?;
    eprintln!(
        "mrun-bench: CRIU built in {:.0} s",
        start.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Runs one build step with its output on stderr; fails in the step's own words.
fn step(cmd: &mut Command, what: &str) -> anyhow::Result<()> {
    eprintln!("mrun-bench: {what}");
    let t = Instant::now();
    let status = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::from(std::io::stderr().as_fd().try_clone_to_owned()?))
        .status()
        .with_context(|| format!("cannot run {cmd:?}"))?;
    if !status.success() {
        bail!("{what}: {cmd:?} failed ({status}) (its output is above)");
    }
    eprintln!(
        "mrun-bench: {what}: done in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The build dependencies that dpkg does not report installed (all of them if dpkg-query is
/// missing: apt-get then says what it can).
fn missing_packages() -> Vec<String> {
    DEBIAN_BUILD_DEPS
        .iter()
        .filter(|p| {
            let out = Command::new("dpkg-query")
                .args(["-W", "-f=${Status}"])
                .arg(p)
                .stderr(Stdio::null())
                .output();
            !matches!(out, Ok(o) if o.status.success()
                && String::from_utf8_lossy(&o.stdout).contains("install ok installed"))
        })
        .map(|p| p.to_string())
        .collect()
}
