//! The descriptors a job inherits from outside it.
//!
//! Policy (as sudo's closefrom): a job gets stdin, stdout and stderr, and nothing else that
//! `mrun` inherited. A shell started by `make -j` (its jobserver pipe), a CI runner or an IDE
//! leaves extra pipes open; handed on, they would pin the job at home for its whole life (a
//! pipe shared with a process outside the job cannot move with it), and they would keep those
//! pipes open in processes (the daemon, a local agent) that outlive the job. `mrun --keep-fd N`
//! (repeatable, or `3,4`; `all` for every one) passes descriptor N on to the job under the same
//! number. A job that then holds a pipe, socket, terminal or device it shares with a process
//! outside it cannot move while it does: a move is refused with one sentence naming the
//! descriptor, `mrunctl status` says so, the log says so once, and the balancer leaves the job
//! alone. Regular files and directories move as any other (reopened by path).

use std::os::unix::fs::FileTypeExt;

use serde::{Deserialize, Serialize};

/// One value of `--keep-fd`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeepFd {
    /// Every inherited descriptor.
    All,
    Fd(i32),
}

/// Parses a `--keep-fd` value: a descriptor number of 3 or more, or `all`.
pub fn parse_keep_fd(s: &str) -> Result<KeepFd, String> {
    if s == "all" {
        return Ok(KeepFd::All);
    }
    match s.parse::<i32>() {
        Ok(n) if n >= 3 => Ok(KeepFd::Fd(n)),
        Ok(n) if n >= 0 => Err(format!(
            "fd {n} is always passed on (stdin, stdout and stderr are the job's own)"
        )),
        _ => Err(format!(
            "{s:?} is not a descriptor number of 3 or more, nor `all`"
        )),
    }
}

/// Applies the policy to this process, first thing in `mrun`: every descriptor above stderr
/// becomes close-on-exec, so nothing we start inherits it by accident (the job, the daemon, a
/// local agent); the ones `keep` names that are open are returned, for the job alone (see
/// [`mrun_core::sys::process::keep_fds_in_child`]).
pub fn take_inherited(keep: &[KeepFd]) -> Vec<i32> {
    let open = mrun_core::sys::process::open_fds_above_stdio().unwrap_or_default();
    for &fd in &open {
        let _ = mrun_core::sys::process::set_cloexec(fd);
    }
    let all = keep.contains(&KeepFd::All);
    open.into_iter()
        .filter(|fd| all || keep.contains(&KeepFd::Fd(*fd)))
        .collect()
}

/// The `--keep-fd` value that passes `kept` on to another `mrun` (those of `mrun --each`).
pub fn keep_arg(kept: &[i32]) -> Option<String> {
    (!kept.is_empty()).then(|| {
        kept.iter()
            .map(|fd| fd.to_string())
            .collect::<Vec<_>>()
            .join(",")
    })
}

/// A descriptor of a job shared with a process outside it, which keeps the job from moving.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SharedFd {
    /// Its number in the job.
    pub fd: i32,
    /// What it is: `a pipe`, `a socket`, `a terminal (/dev/pts/3)`...
    pub what: String,
}

/// What `target` (a `/proc/PID/fd/N` link) is, when a copy of it on a node could not be the
/// same object: `None` for regular files, directories and stateless devices, which a move
/// reopens by path.
fn unmovable_kind(link: &std::path::Path, target: &str) -> Option<String> {
    if target.starts_with("pipe:") {
        return Some("a pipe".into());
    }
    if target.starts_with("socket:") {
        return Some("a socket".into());
    }
    if let Some(anon) = target.strip_prefix("anon_inode:") {
        return Some(format!("a kernel object ({anon})"));
    }
    if [
        "/dev/null",
        "/dev/zero",
        "/dev/full",
        "/dev/random",
        "/dev/urandom",
    ]
    .contains(&target)
    {
        return None;
    }
    if target.starts_with("/dev/pts/") || target.starts_with("/dev/tty") {
        return Some(format!("a terminal ({target})"));
    }
    let ft = std::fs::metadata(link).ok()?.file_type();
    if ft.is_fifo() {
        Some(format!("a named pipe ({target})"))
    } else if ft.is_char_device() || ft.is_block_device() {
        Some(format!("a device ({target})"))
    } else if ft.is_socket() {
        Some(format!("a socket ({target})"))
    } else {
        None
    }
}

/// The descriptors of the job process `pid` (at home) that are one of `kept` (the descriptors
/// this deputy passed on, and still holds itself): the same pipe, socket, terminal or device
/// as the outside process that gave it to us, which cannot move with the job.
pub fn shared_with_outside(pid: i32, kept: &[i32]) -> Vec<SharedFd> {
    if kept.is_empty() {
        return Vec::new();
    }
    let ours: Vec<String> = kept
        .iter()
        .filter_map(|fd| std::fs::read_link(format!("/proc/self/fd/{fd}")).ok())
        .map(|t| t.to_string_lossy().into_owned())
        .collect();
    let dir = format!("/proc/{pid}/fd");
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<SharedFd> = entries
        .filter_map(|e| {
            let e = e.ok()?;
            let fd: i32 = e.file_name().to_str()?.parse().ok()?;
            if fd <= 2 {
                return None;
            }
            let link = e.path();
            let target = std::fs::read_link(&link).ok()?;
            let target = target.to_string_lossy();
            if !ours.iter().any(|o| *o == target) {
                return None;
            }
            Some(SharedFd {
                fd,
                what: unmovable_kind(&link, &target)?,
            })
        })
        .collect();
    out.sort_by_key(|s| s.fd);
    out
}

/// One sentence: why the job cannot move (`shared` is not empty).
pub fn cannot_move(shared: &[SharedFd]) -> String {
    let list = shared
        .iter()
        .map(|s| format!("fd {} ({})", s.fd, s.what))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "the job cannot move: it holds {list} shared with a process outside the job (passed \
         on by `mrun --keep-fd`), which cannot go with it"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keep_fd_values() {
        assert_eq!(parse_keep_fd("9"), Ok(KeepFd::Fd(9)));
        assert_eq!(parse_keep_fd("all"), Ok(KeepFd::All));
        assert!(parse_keep_fd("2").unwrap_err().contains("always passed on"));
        assert!(parse_keep_fd("x").is_err());
        assert!(parse_keep_fd("-1").is_err());
        assert_eq!(keep_arg(&[3, 9]).as_deref(), Some("3,9"));
        assert_eq!(keep_arg(&[]), None);
    }

    #[test]
    fn the_sentence_names_each_descriptor_and_why() {
        let one = cannot_move(&[SharedFd {
            fd: 9,
            what: "a pipe".into(),
        }]);
        assert!(one.contains("fd 9 (a pipe)"), "{one}");
        assert!(
            one.contains("shared with a process outside the job"),
            "{one}"
        );
        let two = cannot_move(&[
            SharedFd {
                fd: 4,
                what: "a pipe".into(),
            },
            SharedFd {
                fd: 9,
                what: "a socket".into(),
            },
        ]);
        assert!(two.contains("fd 4 (a pipe), fd 9 (a socket)"), "{two}");
    }

    #[test]
    fn a_pipe_we_pass_on_is_found_in_a_child_and_a_file_is_not() {
        let (r, _w) = nix::unistd::pipe().expect("pipe");
        let file = std::fs::File::open("/proc/self/status").expect("a file");
        use std::os::fd::AsRawFd;
        let (rfd, ffd) = (r.as_raw_fd(), file.as_raw_fd());
        // This process stands in for the job as well as for the deputy: the same objects.
        let me = std::process::id() as i32;
        let found = shared_with_outside(me, &[rfd, ffd]);
        // Both ends are the same pipe (the write end is found too); the file is not listed.
        assert!(
            found.contains(&SharedFd {
                fd: rfd,
                what: "a pipe".into()
            }),
            "{found:?}"
        );
        assert!(found.iter().all(|s| s.fd != ffd), "{found:?}");
        assert!(shared_with_outside(me, &[]).is_empty());
    }
}
