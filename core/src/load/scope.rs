//! Which CPUs and which tasks make up "this machine" for load measurement.
//!
//! Usually the whole machine. But a node may be a container or a slice of a machine: when our
//! cgroup (or an ancestor) has a CPU quota, the machine is that cgroup's subtree with the
//! quota's capacity; when our CPU affinity excludes some CPUs, it is the tasks on our CPUs.
//! This is what lets several nodes share one host (as they do in the tests and the cluster
//! benchmark) and still each see their own load, as separate machines would.

use std::path::{Path, PathBuf};

/// A cgroup that limits our CPU time.
#[derive(Debug, Clone)]
pub struct LimitedCgroup {
    /// Its directory in the cgroup file system.
    pub dir: PathBuf,
    /// The file listing its threads (`tasks` in v1, `cgroup.threads` in v2).
    threads_file: &'static str,
    /// Its quota, in CPUs.
    pub cpus: f64,
}

#[derive(Debug, Clone)]
pub struct Scope {
    /// CPUs we may run on (affinity).
    pub allowed: Vec<usize>,
    /// CPUs online on the host.
    pub online: usize,
    pub cgroup: Option<LimitedCgroup>,
}

impl Scope {
    /// The scope of the calling process.
    pub fn detect() -> Scope {
        let allowed = affinity();
        let online = nix::unistd::sysconf(nix::unistd::SysconfVar::_NPROCESSORS_ONLN)
            .ok()
            .flatten()
            .map(|n| n as usize)
            .unwrap_or(allowed.len())
            .max(1);
        Scope {
            allowed,
            online,
            cgroup: limited_cgroup(),
        }
    }

    /// CPU capacity: the allowed CPUs, or fewer when a quota says so (never below one).
    pub fn cpus(&self) -> f64 {
        let n = self.allowed.len().max(1) as f64;
        match &self.cgroup {
            Some(cg) => cg.cpus.min(n).max(1.0),
            None => n,
        }
    }

    /// Whether only some of the host's CPUs are ours.
    pub fn pinned(&self) -> bool {
        self.allowed.len() < self.online
    }

    /// Thread ids in the limiting cgroup's subtree (None when no cgroup limits us).
    pub fn cgroup_threads(&self) -> Option<Vec<i32>> {
        let cg = self.cgroup.as_ref()?;
        let mut out = Vec::new();
        collect_threads(&cg.dir, cg.threads_file, &mut out);
        Some(out)
    }

    /// Process ids in the limiting cgroup's subtree (None when no cgroup limits us).
    pub fn cgroup_processes(&self) -> Option<Vec<i32>> {
        let cg = self.cgroup.as_ref()?;
        let mut out = Vec::new();
        collect_threads(&cg.dir, "cgroup.procs", &mut out);
        Some(out)
    }
}

fn affinity() -> Vec<usize> {
    let all = || {
        (0..std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1))
            .collect()
    };
    match nix::sched::sched_getaffinity(nix::unistd::Pid::from_raw(0)) {
        Ok(set) => {
            let cpus: Vec<usize> = (0..nix::sched::CpuSet::count())
                .filter(|&c| set.is_set(c).unwrap_or(false))
                .collect();
            if cpus.is_empty() {
                all()
            } else {
                cpus
            }
        }
        Err(_) => all(),
    }
}

/// Our cgroup directory for `controller` and its ancestors up to the hierarchy's root, nearest
/// first, and whether the hierarchy is v2.
fn cgroup_chain(controller: &str) -> Option<(Vec<PathBuf>, bool)> {
    let me = procfs::process::Process::myself().ok()?;
    let groups = me.cgroups().ok()?;
    let mounts = me.mountinfo().ok()?;
    // A v1 hierarchy with the controller wins; else the v2 hierarchy (where every controller is).
    let v1 = groups
        .0
        .iter()
        .find(|g| g.hierarchy != 0 && g.controllers.iter().any(|c| c == controller));
    let (group, v2) = match v1 {
        Some(g) => (g, false),
        None => (groups.0.iter().find(|g| g.hierarchy == 0)?, true),
    };
    let mount = mounts.0.iter().find(|m| {
        if v2 {
            m.fs_type == "cgroup2"
        } else {
            m.fs_type == "cgroup" && m.super_options.contains_key(controller)
        }
    })?;
    // The mount may show a subtree of the hierarchy (in a container): strip its root.
    let rel = group
        .pathname
        .strip_prefix(mount.root.as_str())
        .unwrap_or(&group.pathname);
    let mut dir = mount.mount_point.join(rel.trim_start_matches('/'));
    let mut chain = vec![dir.clone()];
    while dir != mount.mount_point && dir.pop() {
        chain.push(dir.clone());
    }
    Some((chain, v2))
}

/// The nearest cgroup, ours or an ancestor, with a CPU quota (v2 `cpu.max`, v1
/// `cpu.cfs_quota_us`).
fn limited_cgroup() -> Option<LimitedCgroup> {
    let (chain, v2) = cgroup_chain("cpu")?;
    chain.into_iter().find_map(|dir| {
        let cpus = if v2 { quota_v2(&dir) } else { quota_v1(&dir) }?;
        let threads_file = if v2 { "cgroup.threads" } else { "tasks" };
        Some(LimitedCgroup {
            dir,
            threads_file,
            cpus,
        })
    })
}

/// Memory our cgroups still allow (the tightest limit less its usage, over our cgroup and
/// its ancestors), or None when no memory limit applies.
pub fn memory_headroom() -> Option<u64> {
    let (chain, v2) = cgroup_chain("memory")?;
    let (limit_file, usage_file) = if v2 {
        ("memory.max", "memory.current")
    } else {
        ("memory.limit_in_bytes", "memory.usage_in_bytes")
    };
    let read = |dir: &Path, f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse::<u64>()
            .ok()
    };
    chain
        .iter()
        .filter_map(|dir| {
            let limit = read(dir, limit_file)?; // "max" does not parse: no limit
                                                // v1 writes "no limit" as a huge page-rounded number.
            (limit < 1 << 60).then(|| limit.saturating_sub(read(dir, usage_file).unwrap_or(0)))
        })
        .min()
}

fn quota_v2(dir: &Path) -> Option<f64> {
    let text = std::fs::read_to_string(dir.join("cpu.max")).ok()?;
    let mut parts = text.split_whitespace();
    let quota: f64 = parts.next()?.parse().ok()?; // "max" does not parse: no limit
    let period: f64 = parts.next()?.parse().ok()?;
    (period > 0.0).then(|| quota / period)
}

fn quota_v1(dir: &Path) -> Option<f64> {
    let read = |f: &str| {
        std::fs::read_to_string(dir.join(f))
            .ok()?
            .trim()
            .parse::<f64>()
            .ok()
    };
    let quota = read("cpu.cfs_quota_us")?;
    let period = read("cpu.cfs_period_us")?;
    (quota > 0.0 && period > 0.0).then(|| quota / period)
}

fn collect_threads(dir: &Path, file: &str, out: &mut Vec<i32>) {
    if let Ok(text) = std::fs::read_to_string(dir.join(file)) {
        out.extend(text.lines().filter_map(|l| l.trim().parse::<i32>().ok()));
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            if e.file_type().is_ok_and(|t| t.is_dir()) {
                collect_threads(&e.path(), file, out);
            }
        }
    }
}
