//! `mrun`, `mrunctl` and `mrun-agent` as measured: copied into the scratch directory (a rebuild
//! of the workspace during the run then changes nothing), run with a node's client HOME and a
//! private runtime directory, so that the bench gets a home daemon of its own, which ends with
//! the bench.

use std::ffi::OsStr;
use std::os::unix::fs::DirBuilderExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};

use crate::scratch::Scratch;

/// Where the binaries under test are: `given` (`--bin-dir`), else beside this bench binary.
pub fn bin_dir(given: Option<&Path>) -> anyhow::Result<PathBuf> {
    match given {
        Some(d) => Ok(d.to_path_buf()),
        None => Ok(std::env::current_exe()
            .context("cannot find this binary's path")?
            .parent()
            .context("this binary has no directory")?
            .to_path_buf()),
    }
}

/// The copies of the binaries and the environment they run in.
pub struct Mrun {
    pub mrun: PathBuf,
    pub mrunctl: PathBuf,
    pub agent: PathBuf,
    pub home: PathBuf,
    /// `XDG_RUNTIME_DIR` of our mrun: its job sockets and the daemon's socket.
    pub runtime_dir: PathBuf,
    /// The agent runs with `MRUN_TRACE=1`: the restore helper it starts for a job prints its
    /// stages on its stderr, which is the job's, and so reaches the job's `mrun`. Set it
    /// before the first command (the daemon, started on demand, keeps its environment).
    pub trace_node: bool,
}

impl Mrun {
    /// Copies the three binaries from `bin_dir` into `dir` (a rebuild of the workspace during
    /// the run then changes nothing) and makes a fresh runtime directory there.
    pub fn install(bin_dir: &Path, dir: &Scratch, home: &Path) -> anyhow::Result<Mrun> {
        let copy = |name: &str| -> anyhow::Result<PathBuf> {
            let from = bin_dir.join(name);
            if !from.is_file() {
                bail!("no {name} in {}: build it with `cargo build --release -p mrun -p mrun-agent`, \
                       or pass --bin-dir DIR", bin_dir.display());
            }
            let to = dir.file(name);
            std::fs::copy(&from, &to)
                .with_context(|| format!("cannot copy {} to {}", from.display(), to.display()))?;
            Ok(to)
        };
        let (mrun, mrunctl, agent) = (copy("mrun")?, copy("mrunctl")?, copy("mrun-agent")?);
        let runtime_dir = dir.file("runtime");
        std::fs::DirBuilder::new()
            .mode(0o700)
            .create(&runtime_dir)
            .with_context(|| format!("cannot create {}", runtime_dir.display()))?;
        Ok(Mrun {
            mrun,
            mrunctl,
            agent,
            home: home.to_path_buf(),
            runtime_dir,
            trace_node: false,
        })
    }

    /// `program` (one of ours, or anything else) in mrun's environment.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HOME", &self.home)
            .env("XDG_RUNTIME_DIR", &self.runtime_dir)
            // The node is this machine: its agent is ours, by absolute path (a command line
            // for the node's shell).
            .env("MRUN_REMOTE_AGENT", self.agent_command())
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("MRUN_NODES")
            .env_remove("MRUN_NO_DAEMON")
            .env_remove("MRUN_TRACE")
            // Pre-copy on unless a bench turns it off for a job.
            .env_remove("MRUN_PRECOPY");
        cmd
    }

    /// `MRUN_REMOTE_AGENT`: the agent's path, after `MRUN_TRACE=1 ` when `trace_node`.
    pub fn agent_command(&self) -> String {
        if self.trace_node {
            format!("MRUN_TRACE=1 {}", self.agent.display())
        } else {
            self.agent.display().to_string()
        }
    }

    /// `mrun VERSION` as it reports itself.
    pub fn version(&self) -> String {
        let out = self
            .command(&self.mrunctl)
            .arg("--version")
            .stdin(Stdio::null())
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default()
    }

    /// Ends the home daemon our `mrun` started (found by its command line: our copy of mrun
    /// with `--daemon`), and waits up to 5 s for it to go. Without this it would idle for two
    /// minutes with its SSH connection open.
    fn stop_daemon(&self) {
        let mut pids = Vec::new();
        for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<i32>().ok())
            else {
                continue;
            };
            let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
                continue;
            };
            let mut args = cmdline.split(|&b| b == 0);
            if args.next() == Some(self.mrun.as_os_str().as_encoded_bytes())
                && args.next() == Some(b"--daemon")
            {
                let pid = nix::unistd::Pid::from_raw(pid);
                if nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM).is_ok() {
                    pids.push(pid);
                }
            }
        }
        let deadline = Instant::now() + Duration::from_secs(5);
        while pids
            .iter()
            .any(|&p| nix::sys::signal::kill(p, None).is_ok())
            && Instant::now() < deadline
        {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Mrun {
    fn drop(&mut self) {
        self.stop_daemon();
    }
}

/// The job's id: the pid of mrun's child (waited for up to 10 s), once its job socket listens
/// (mrun binds it right after starting the command).
pub fn job_pid(mrun: &Child, runtime_dir: &Path) -> anyhow::Result<u32> {
    let children = format!("/proc/{0}/task/{0}/children", mrun.id());
    let deadline = Instant::now() + Duration::from_secs(10);
    let text = loop {
        let text = std::fs::read_to_string(&children)
            .with_context(|| format!("cannot read {children}"))?;
        if !text.trim().is_empty() || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(2));
    };
    let pid: u32 = match text.split_whitespace().collect::<Vec<_>>().as_slice() {
        [one] => one
            .parse()
            .with_context(|| format!("bad pid {one:?} in {children}"))?,
        other => bail!("mrun has {} children, not 1: {other:?}", other.len()),
    };
    let socket = runtime_dir.join("mrun").join(format!("job-{pid}.sock"));
    while !socket.exists() {
        if Instant::now() > deadline {
            bail!("mrun does not listen on {} after 10 s", socket.display());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    Ok(pid)
}

/// A running `mrun` and the write end of its stdin. Dropping it closes the stdin (a job still
/// waiting on it ends: the victims check their memory and exit), gives mrun 10 s to end, then
/// kills it.
pub struct MrunJob {
    pub child: std::process::Child,
    pub stdin: Option<std::process::ChildStdin>,
}

impl MrunJob {
    pub fn new(mut child: std::process::Child) -> MrunJob {
        let stdin = child.stdin.take();
        MrunJob { child, stdin }
    }
}

impl Drop for MrunJob {
    fn drop(&mut self) {
        self.stdin = None;
        if !matches!(
            crate::sys::wait_timeout(&mut self.child, std::time::Duration::from_secs(10)),
            Ok(Some(_))
        ) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}
