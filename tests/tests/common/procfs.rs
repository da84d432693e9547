//! Reading `/proc` about the processes under test: state, tracer, pid namespaces, children,
//! file offsets.

use super::process::TIMEOUT;
use std::time::{Duration, Instant};

/// The value of `Field:` in `/proc/PID/status`, or None if the process is gone.
pub fn status_field(pid: i32, field: &str) -> Option<String> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        (k == field).then(|| v.trim().to_string())
    })
}

/// The one-letter state from `/proc/PID/stat` ('R', 'S', 't', 'T', 'Z'...).
pub fn process_state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The comm field may hold spaces and parentheses: the state follows the last ')'.
    let after = &stat[stat.rfind(')')? + 1..];
    after.trim_start().chars().next()
}

pub fn tracer_pid(pid: i32) -> Option<i32> {
    status_field(pid, "TracerPid")?.parse().ok()
}

/// `NSpid` of `pid`: its pid in each namespace from ours down to its own.
pub fn ns_pids(pid: i32) -> Vec<i32> {
    status_field(pid, "NSpid")
        .map(|v| {
            v.split_whitespace()
                .filter_map(|p| p.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// Direct children of `pid` (over all its threads).
pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return out;
    };
    for task in tasks.flatten() {
        if let Ok(list) = std::fs::read_to_string(task.path().join("children")) {
            out.extend(
                list.split_whitespace()
                    .filter_map(|p| p.parse::<i32>().ok()),
            );
        }
    }
    out
}

/// All descendants of `pid`, parents before their children.
pub fn descendants(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut next = vec![pid];
    while let Some(p) = next.pop() {
        for c in children(p) {
            if !out.contains(&c) && c != pid {
                out.push(c);
                next.push(c);
            }
        }
    }
    out
}

/// The outer pid of the process `mrunctl restore` (pid `restore_pid`) brought back: the
/// descendant living in a nested pid namespace whose own pid is `original_pid`. A pid-1 reaper
/// the restorer may have started in that namespace is skipped (its own pid is 1). Waits until
/// the restorer has let go of it (TracerPid 0), i.e. the restore is complete.
pub fn find_restored(restore_pid: i32, original_pid: i32) -> i32 {
    let mut found = None;
    let ok = wait_until(TIMEOUT, || {
        found = descendants(restore_pid).into_iter().find(|&d| {
            let ns = ns_pids(d);
            // Untraced, and no longer the restorer's own fork (which has the pid but is not yet
            // traced in the instant before PTRACE_TRACEME): restored and let go.
            let restorer = std::fs::read_link(format!("/proc/{d}/exe"))
                .map(|e| e.to_string_lossy().contains("mrunctl"))
                .unwrap_or(true);
            ns.len() >= 2
                && ns.last() == Some(&original_pid)
                && tracer_pid(d) == Some(0)
                && !restorer
        });
        found.is_some()
    });
    assert!(
        ok,
        "no untraced descendant of mrunctl restore (pid {restore_pid}) has pid {original_pid} in \
         a nested pid namespace; its descendants (pid, NSpid, name, TracerPid): {:?}",
        descendants(restore_pid)
            .into_iter()
            .map(|d| (d, ns_pids(d), status_field(d, "Name"), tracer_pid(d)))
            .collect::<Vec<_>>()
    );
    found.unwrap_or_default()
}

/// The file offset of `fd` in `pid` (`pos:` in `/proc/PID/fdinfo/FD`).
pub fn fd_offset(pid: i32, fd: i32) -> Option<u64> {
    let info = std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{fd}")).ok()?;
    info.lines()
        .find_map(|l| l.strip_prefix("pos:"))
        .and_then(|v| v.trim().parse().ok())
}

/// How many threads `pid` has (entries of `/proc/PID/task`; 0 if it is gone).
pub fn thread_count(pid: i32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Polls `cond` every 5 ms until it holds (true) or `timeout` passes (false).
pub fn wait_until(timeout: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Waits until `pid` is asleep in the kernel (state 'S'), e.g. blocked in nanosleep or read.
pub fn wait_until_sleeping(pid: i32) {
    let ok = wait_until(TIMEOUT, || process_state(pid) == Some('S'));
    assert!(
        ok,
        "pid {pid} never went to sleep; state {:?}",
        process_state(pid)
    );
}
