//! Load measurement: what a machine reports to the balancer. The agent on each node and the
//! home daemon measure the same way: CPUs (capacity), a per-CPU speed figure, the run queue
//! (runnable tasks, sampled several times a second and averaged), free memory, and how many
//! mrun jobs the machine hosts. "The machine" is defined by [`scope::Scope`].

pub mod job;
pub mod scope;
pub mod speed;

use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};

use crate::wire::NodeFacts;
use scope::Scope;

/// How far back the run-queue average looks.
pub const WINDOW: Duration = Duration::from_secs(1);
/// How often to sample within the window.
pub const SAMPLE_EVERY: Duration = Duration::from_millis(200);

/// Samples this machine's run queue and reports its facts.
pub struct Meter {
    scope: Scope,
    samples: VecDeque<(Instant, f64)>,
}

impl Default for Meter {
    fn default() -> Self {
        Meter::new()
    }
}

impl Meter {
    pub fn new() -> Meter {
        Meter {
            scope: Scope::detect(),
            samples: VecDeque::new(),
        }
    }

    pub fn scope(&self) -> &Scope {
        &self.scope
    }

    /// Take one sample of the run queue now.
    pub fn sample(&mut self) {
        let now = Instant::now();
        self.samples.push_back((now, runnable_now(&self.scope)));
        while self
            .samples
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > WINDOW)
        {
            self.samples.pop_front();
        }
    }

    /// Runnable tasks, averaged over the window (sampling once if nothing was sampled yet).
    pub fn runnable(&mut self) -> f64 {
        if self.samples.is_empty() {
            self.sample();
        }
        self.samples.iter().map(|(_, r)| r).sum::<f64>() / self.samples.len().max(1) as f64
    }

    /// This machine's facts, with the run queue averaged over the window. `jobs` is left at 0:
    /// only a node hosts jobs, and counting them scans every process ([`Meter::hosted_jobs`]).
    pub fn facts(&mut self) -> NodeFacts {
        let runnable = self.runnable();
        let cpus = self.scope.cpus();
        NodeFacts {
            arch: std::env::consts::ARCH.to_string(),
            kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .map(|s| s.trim().to_string())
                .unwrap_or_default(),
            cpus: cpus.round().max(1.0) as u32,
            speed: speed::per_cpu(),
            runnable,
            load_per_cpu: runnable / cpus,
            mem_available: mem_available(),
            jobs: 0,
        }
    }

    /// mrun jobs of this user restored on this machine: processes of ours running
    /// `mrun-agent restore-helper` (each supervises one job), within the scope.
    pub fn hosted_jobs(&self) -> u32 {
        hosted_jobs(&self.scope)
    }
}

/// Our own threads: the measurer is not the load it measures.
fn own_threads() -> HashSet<i32> {
    std::fs::read_dir("/proc/self/task")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

fn thread_running(tid: i32) -> Option<(bool, Option<i32>)> {
    let stat = procfs::process::Process::new(tid).ok()?.stat().ok()?;
    Some((stat.state == 'R', stat.processor))
}

/// Runnable tasks in the scope right now, not counting ourselves.
pub fn runnable_now(scope: &Scope) -> f64 {
    if let Some(tids) = scope.cgroup_threads() {
        let mine = own_threads();
        return tids
            .into_iter()
            .filter(|t| !mine.contains(t))
            .filter(|&t| thread_running(t).is_some_and(|(r, _)| r))
            .count() as f64;
    }
    if scope.pinned() {
        // Tasks queued on our CPUs.
        let mine = own_threads();
        let allowed: HashSet<i32> = scope.allowed.iter().map(|&c| c as i32).collect();
        let mut n = 0usize;
        if let Ok(all) = procfs::process::all_processes() {
            for p in all.flatten() {
                let Ok(tasks) = p.tasks() else { continue };
                for t in tasks.flatten() {
                    if mine.contains(&t.tid) {
                        continue;
                    }
                    if let Ok(st) = t.stat() {
                        if st.state == 'R' && st.processor.is_some_and(|c| allowed.contains(&c)) {
                            n += 1;
                        }
                    }
                }
            }
        }
        return n as f64;
    }
    // The whole machine: the kernel's count, less the thread reading it.
    use procfs::CurrentSI;
    procfs::KernelStats::current()
        .ok()
        .and_then(|k| k.procs_running)
        .map(|r| r.saturating_sub(1) as f64)
        .unwrap_or(0.0)
}

/// Free memory: the kernel's estimate of what can be allocated without swapping, or less if
/// a memory cgroup limit leaves less.
fn mem_available() -> u64 {
    use procfs::Current;
    let machine = procfs::Meminfo::current()
        .ok()
        .and_then(|m| m.mem_available)
        .unwrap_or(0);
    match scope::memory_headroom() {
        Some(headroom) => machine.min(headroom),
        None => machine,
    }
}

fn hosted_jobs(scope: &Scope) -> u32 {
    let me = nix::unistd::getuid().as_raw();
    let candidates: Vec<i32> = match scope.cgroup_processes() {
        Some(pids) => pids,
        None => procfs::process::all_processes()
            .map(|all| all.flatten().map(|p| p.pid).collect())
            .unwrap_or_default(),
    };
    candidates
        .into_iter()
        .filter_map(|pid| procfs::process::Process::new(pid).ok())
        .filter(|p| p.uid().is_ok_and(|u| u == me))
        .filter(|p| {
            p.cmdline().is_ok_and(|args| {
                args.first().is_some_and(|a| a.ends_with("mrun-agent"))
                    && args.get(1).is_some_and(|a| a == "restore-helper")
            })
        })
        .count() as u32
}
