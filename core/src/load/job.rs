//! What one job (a process and its descendants) has used so far, read from /proc: the CPU time
//! `time` would count. Home's deputy and a node's agent measure it the same way, each for the
//! copy of the job that runs there.

use crate::sys::Pid;

/// User + system CPU seconds of the job rooted at `pid`: every thread of its processes, and
/// the children they already waited for (`/proc/PID/stat`). `None` when `pid` is gone; a
/// descendant that ends meanwhile is passed over.
pub fn cpu_seconds(pid: Pid) -> Option<f64> {
    let mut ticks = process_ticks(pid)?;
    for p in crate::sys::process::descendants(pid) {
        ticks += process_ticks(p).unwrap_or(0.0);
    }
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100) as f64;
    Some(ticks / hz)
}

/// utime + stime + cutime + cstime of one process, in clock ticks.
fn process_ticks(pid: Pid) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let mut sum = 0.0;
    for i in 11..=14 {
        sum += fields.get(i)?.parse::<f64>().ok()?;
    }
    Some(sum)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_busy_child_that_was_waited_for_counts() {
        let before = cpu_seconds(nix::unistd::getpid()).expect("our own times");
        let status = std::process::Command::new("sh")
            .args(["-c", "i=0; while [ $i -lt 400000 ]; do i=$((i+1)); done"])
            .status()
            .expect("run sh");
        assert!(status.success());
        let after = cpu_seconds(nix::unistd::getpid()).expect("our own times");
        assert!(after > before, "{after} s after, {before} s before");
    }
}
