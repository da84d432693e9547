//! What a job running at home uses, read from /proc: CPU time got, CPU time wanted (the
//! balancer's demand), resident memory, each summed over the job's processes (the command and
//! its descendants). Reads only; a process that is gone reads as unknown.

/// The job's processes: `pid` and every descendant.
fn job_processes(pid: i32) -> Vec<i32> {
    let root = nix::unistd::Pid::from_raw(pid);
    let mut out = vec![pid];
    out.extend(
        mrun_core::sys::process::descendants(root)
            .into_iter()
            .map(|p| p.as_raw()),
    );
    out
}

/// Seconds all threads of a local process have run plus waited in the run queue, summed over
/// `/proc/PID/task/*/schedstat`: the process's own `schedstat` is its main thread alone, so a
/// job whose work runs in other threads (`xz -T2`) would look idle. A thread that ends between
/// the listing and its read is skipped. The time of threads that already ended is lost (the
/// kernel keeps no total of it), so a sample just after a thread ended reads low.
pub(crate) fn cpu_wanted_seconds(pid: i32) -> Option<f64> {
    let mut ns = 0u64;
    for (k, p) in job_processes(pid).into_iter().enumerate() {
        let process = match procfs::process::Process::new(p) {
            Ok(process) => process,
            Err(_) if k > 0 => continue, // a descendant that just ended
            Err(_) => return None,
        };
        for task in process.tasks().ok()? {
            match task.and_then(|t| t.schedstat()) {
                Ok(s) => ns += s.sum_exec_runtime + s.run_delay,
                Err(procfs::ProcError::NotFound(_)) => continue,
                Err(_) => return None,
            }
        }
    }
    Some(ns as f64 * 1e-9)
}

/// Resident memory of a local job, bytes: what a checkpoint would carry.
pub(crate) fn touched_bytes(pid: i32) -> u64 {
    job_processes(pid)
        .into_iter()
        .map(|p| {
            procfs::process::Process::new(p)
                .and_then(|p| p.statm())
                .map(|m| m.resident * procfs::page_size())
                .unwrap_or(0)
        })
        .sum()
}

/// User + system CPU seconds of a local job (see [`mrun_core::load::job::cpu_seconds`]).
pub(crate) fn cpu_seconds(pid: i32) -> Option<f64> {
    mrun_core::load::job::cpu_seconds(nix::unistd::Pid::from_raw(pid))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Barrier;

    /// Seconds the calling thread has run.
    fn own_run_seconds() -> f64 {
        let s = std::fs::read_to_string("/proc/thread-self/schedstat").unwrap();
        let ns: u64 = s.split_whitespace().next().unwrap().parse().unwrap();
        ns as f64 * 1e-9
    }

    /// A job that is a tree (`sh -c 'a | b'`) is measured whole: a busy grandchild's time
    /// counts.
    #[test]
    fn cpu_wanted_counts_descendants() {
        let me = std::process::id() as i32;
        let mut child = std::process::Command::new("sh")
            .args([
                "-c",
                "sh -c 'i=0; while [ $i -lt 3000000 ]; do i=$((i+1)); done'; sleep 5",
            ])
            .spawn()
            .expect("start sh");
        let grandchild = loop {
            let tree = job_processes(me);
            if let Some(g) = tree.iter().find(|p| **p != me && **p != child.id() as i32) {
                break *g;
            }
            std::thread::sleep(std::time::Duration::from_millis(5));
        };
        std::thread::sleep(std::time::Duration::from_millis(300));
        let theirs = cpu_wanted_seconds(grandchild).expect("the grandchild's demand");
        let whole = cpu_wanted_seconds(me).expect("the tree's demand");
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(grandchild),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.kill();
        let _ = child.wait();
        assert!(theirs > 0.1, "the busy grandchild ran only {theirs} s");
        assert!(
            whole >= theirs,
            "the tree's demand {whole} s leaves out its grandchild's {theirs} s"
        );
    }

    /// `xz -T2` looked idle to the balancer: only the main thread's schedstat was read.
    #[test]
    fn cpu_wanted_counts_every_thread() {
        const THREADS: usize = 3;
        const EACH: f64 = 0.1;
        let me = std::process::id() as i32;
        let busy = Barrier::new(THREADS + 1);
        let measured = Barrier::new(THREADS + 1);
        let (main_thread, wanted) = std::thread::scope(|s| {
            for _ in 0..THREADS {
                s.spawn(|| {
                    while own_run_seconds() < EACH {
                        for i in 0..100_000u64 {
                            std::hint::black_box(i);
                        }
                    }
                    busy.wait();
                    // Stay alive until measured: an ended thread's time is not counted.
                    measured.wait();
                });
            }
            busy.wait();
            let main = procfs::process::Process::new(me)
                .unwrap()
                .schedstat()
                .unwrap();
            let wanted = cpu_wanted_seconds(me);
            measured.wait();
            (
                (main.sum_exec_runtime + main.run_delay) as f64 * 1e-9,
                wanted,
            )
        });
        let wanted = wanted.expect("our own threads are readable");
        assert!(
            wanted >= main_thread + THREADS as f64 * EACH,
            "{THREADS} threads busy for {EACH} s each, but only {wanted} s counted \
             (main thread alone: {main_thread} s)"
        );
    }
}
