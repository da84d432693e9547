//! What a job running at home uses, read from /proc: CPU time got, CPU time wanted (the
//! balancer's demand), resident memory. Reads only; a process that is gone reads as unknown.

/// Seconds all threads of a local process have run plus waited in the run queue, summed over
/// `/proc/PID/task/*/schedstat`: the process's own `schedstat` is its main thread alone, so a
/// job whose work runs in other threads (`xz -T2`) would look idle. A thread that ends between
/// the listing and its read is skipped. The time of threads that already ended is lost (the
/// kernel keeps no total of it), so a sample just after a thread ended reads low.
pub(crate) fn cpu_wanted_seconds(pid: i32) -> Option<f64> {
    let process = procfs::process::Process::new(pid).ok()?;
    let mut ns = 0u64;
    for task in process.tasks().ok()? {
        match task.and_then(|t| t.schedstat()) {
            Ok(s) => ns += s.sum_exec_runtime + s.run_delay,
            Err(procfs::ProcError::NotFound(_)) => continue,
            Err(_) => return None,
        }
    }
    Some(ns as f64 * 1e-9)
}

/// Resident memory of a local process, bytes: what a checkpoint would carry.
pub(crate) fn touched_bytes(pid: i32) -> u64 {
    procfs::process::Process::new(pid)
        .and_then(|p| p.statm())
        .map(|m| m.resident * procfs::page_size())
        .unwrap_or(0)
}

/// User + system CPU seconds of a local process (all its threads, `/proc/PID/stat`).
pub(crate) fn cpu_seconds(pid: i32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: f64 = fields.get(11)?.parse().ok()?;
    let stime: f64 = fields.get(12)?.parse().ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some((utime + stime) / hz)
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
