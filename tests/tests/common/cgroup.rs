//! CPU slices: cgroups with a CPU quota, so that several "machines" (home and the nodes) share
//! this host and each has its own CPU capacity and run queue, as separate machines would.
//! mrun measures load within the cgroup that limits it (see `core/src/load/scope.rs`).
//!
//! Works with cgroup v2 (`cpu.max`) and v1 (`cpu.cfs_quota_us`); needs root.

use std::path::{Path, PathBuf};
use std::process::Command;

pub struct CpuSlice {
    dir: PathBuf,
}

const V2_ROOT: &str = "/sys/fs/cgroup";
const V1_CPU: &str = "/sys/fs/cgroup/cpu";

impl CpuSlice {
    /// A new cgroup named after `name` (and this process, so parallel runs do not meet), with
    /// `cpus` CPUs' worth of quota.
    pub fn new(name: &str, cpus: f64) -> CpuSlice {
        let period = 100_000u64;
        let quota = (cpus * period as f64) as u64;
        let leaf = format!("mrun-test-{}-{name}", std::process::id());
        let v2 = std::fs::read_to_string(Path::new(V2_ROOT).join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|w| w == "cpu"));
        let (dir, file, value) = if v2 {
            let _ = std::fs::write(Path::new(V2_ROOT).join("cgroup.subtree_control"), "+cpu");
            (
                Path::new(V2_ROOT).join(&leaf),
                "cpu.max",
                format!("{quota} {period}"),
            )
        } else if Path::new(V1_CPU).join("cpu.cfs_quota_us").exists() {
            (
                Path::new(V1_CPU).join(&leaf),
                "cpu.cfs_quota_us",
                quota.to_string(),
            )
        } else {
            panic!(
                "these tests need a cgroup CPU controller (cgroup v2 with `cpu` in {V2_ROOT}/cgroup.controllers, \
                 or v1 at {V1_CPU}) to give home and each node one CPU of their own"
            );
        };
        let _ = std::fs::create_dir(&dir);
        if !v2 {
            std::fs::write(dir.join("cpu.cfs_period_us"), period.to_string())
                .unwrap_or_else(|e| panic!("setting the period of {}: {e}", dir.display()));
        }
        std::fs::write(dir.join(file), value)
            .unwrap_or_else(|e| panic!("setting the quota of {}: {e}", dir.display()));
        CpuSlice { dir }
    }

    /// Its `cgroup.procs` file (what [`enter`] takes).
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// `cmd` started inside this slice.
    pub fn wrap(&self, cmd: Command) -> Command {
        enter(&self.procs_file(), cmd)
    }

    /// Processes in the slice now.
    pub fn processes(&self) -> Vec<i32> {
        std::fs::read_to_string(self.dir.join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILL every process in the slice, until none is left: the machine goes down.
    pub fn kill_all(&self) {
        for _ in 0..100 {
            let procs = self.processes();
            if procs.is_empty() {
                return;
            }
            for p in procs {
                // SAFETY: kill(2) has no memory-safety requirements.
                unsafe { libc::kill(p, libc::SIGKILL) };
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

impl Drop for CpuSlice {
    fn drop(&mut self) {
        self.kill_all();
        // Removal waits for the killed processes to be reaped.
        for _ in 0..100 {
            if std::fs::remove_dir(&self.dir).is_ok() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }
}

/// `cmd` started inside the cgroup whose `cgroup.procs` is `procs`: through `sh`, which moves
/// itself in and execs the command.
pub fn enter(procs: &Path, cmd: Command) -> Command {
    let mut wrapped = Command::new("sh");
    wrapped
        .arg("-c")
        .arg("echo $$ > \"$0\" && exec \"$@\"")
        .arg(procs)
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => {
                wrapped.env(k, v);
            }
            None => {
                wrapped.env_remove(k);
            }
        }
    }
    if let Some(d) = cmd.get_current_dir() {
        wrapped.current_dir(d);
    }
    wrapped
}
