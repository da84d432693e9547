//! A job as a tree of processes: the root and every descendant, frozen together. Processes
//! created while the freeze runs are caught by reading the children of every frozen member
//! again until a pass finds none that is not frozen (a frozen member creates no more).

use super::checks;
use super::error::{Context, EngineError, Result};
use super::freeze::Frozen;
use super::refusal::Refusal;
use crate::sys::Pid;

/// How many passes over the members' children before giving up on a tree that keeps
/// growing.
const MAX_PASSES: usize = 100;

/// One frozen member and where it sits in the tree.
pub struct Member {
    pub frozen: Frozen,
    /// Index of the parent in [`FrozenTree::members`]; `None` for the root.
    pub parent: Option<usize>,
    /// pid, pgid and sid as the member itself sees them (innermost pid namespace); 0 for a
    /// group or session whose leader it cannot see.
    pub inner: Ids,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct Ids {
    pub pid: i32,
    pub pgid: i32,
    pub sid: i32,
}

/// A child of a member that exited and was not waited for: nothing to freeze, only its
/// status to keep.
pub struct Unreaped {
    pub parent: usize,
    pub inner: Ids,
    /// The wait status (`exit_code`, the last field of `/proc/PID/stat`).
    pub status: i32,
}

/// Every process of a job, frozen; parents before their children, the root first. Dropping it
/// resumes them all untouched.
pub struct FrozenTree {
    pub members: Vec<Member>,
    pub zombies: Vec<(Pid, Unreaped)>,
}

impl FrozenTree {
    pub fn seize(root: Pid) -> Result<FrozenTree> {
        let mut tree = FrozenTree {
            members: Vec::new(),
            zombies: Vec::new(),
        };
        tree.add(root, None)?;
        for _ in 0..MAX_PASSES {
            let mut found = Vec::new();
            for (i, m) in tree.members.iter().enumerate() {
                for child in crate::sys::process::children(m.frozen.pid()) {
                    let known = tree.members.iter().any(|o| o.frozen.pid() == child)
                        || tree.zombies.iter().any(|(z, _)| *z == child);
                    if !known {
                        found.push((child, i));
                    }
                }
            }
            if found.is_empty() {
                return Ok(tree);
            }
            for (child, parent) in found {
                // Its parent is frozen: an exited child stays a zombie until the parent runs.
                if tree.add_zombie(child, parent)? {
                    continue;
                }
                match checks::preflight_member(child).and_then(|()| tree.add(child, Some(parent))) {
                    Ok(()) => {}
                    // It exited between the listing and its freeze (a shell's `sleep 0.02`):
                    // a zombie now, kept as one, or gone if its parent lets children go.
                    Err(e) if ended(&e, child) => {
                        if !tree.add_zombie_once_exited(child, parent)? {
                            continue;
                        }
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Err(Refusal::ProcessChurn { pid: root }.into())
    }

    /// Keep `child` of member `parent` as a child that exited and was not waited for, if it
    /// is one now. `false`: it is not (yet) a zombie.
    fn add_zombie(&mut self, child: Pid, parent: usize) -> Result<bool> {
        let Some(status) = zombie_status(child) else {
            return Ok(false);
        };
        let inner = ids(child)?;
        self.zombies.push((
            child,
            Unreaped {
                parent,
                inner,
                status,
            },
        ));
        Ok(true)
    }

    /// `child` was seen exiting: wait (briefly) until it is a zombie and keep it; `false`
    /// when it is gone for good (its parent ignores SIGCHLD, so the kernel reaped it).
    fn add_zombie_once_exited(&mut self, child: Pid, parent: usize) -> Result<bool> {
        for _ in 0..200 {
            if self.add_zombie(child, parent)? {
                return Ok(true);
            }
            if !std::path::Path::new(&format!("/proc/{child}")).exists() {
                return Ok(false);
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        Err(EngineError::Died {
            pid: child.as_raw(),
            stage: "freeze",
        })
    }

    fn add(&mut self, pid: Pid, parent: Option<usize>) -> Result<()> {
        let frozen = Frozen::seize(pid)?;
        let inner = ids(pid)?;
        self.members.push(Member {
            frozen,
            parent,
            inner,
        });
        Ok(())
    }

    pub fn root(&self) -> Pid {
        self.members
            .first()
            .map(|m| m.frozen.pid())
            .unwrap_or(Pid::from_raw(0))
    }

    /// Let every member run on as if nothing happened.
    pub fn resume(self) -> Result<()> {
        let mut result = Ok(());
        for m in self.members {
            result = result.and(m.frozen.resume());
        }
        result
    }

    /// End every member: the image is complete and the job lives on elsewhere. The root
    /// first, so that no parent sees a child die and acts on it.
    pub fn kill(self) -> Result<()> {
        let mut result = Ok(());
        for m in self.members {
            result = result.and(m.frozen.kill());
        }
        result
    }
}

/// Whether `e` says `pid` ended before or while it was frozen.
fn ended(e: &EngineError, pid: Pid) -> bool {
    match e {
        EngineError::Refused(Refusal::Exited { pid: p } | Refusal::NoSuchProcess { pid: p }) => {
            *p == pid
        }
        EngineError::Died { pid: p, .. } => *p == pid.as_raw(),
        _ => false,
    }
}

/// The wait status of `pid` if it is a zombie (`exit_code`, the last field of its stat).
fn zombie_status(pid: Pid) -> Option<i32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = stat.rsplit_once(')')?.1;
    if rest.split_whitespace().next()? != "Z" {
        return None;
    }
    rest.split_whitespace().last()?.parse().ok()
}

/// The innermost pid, pgid and sid of `pid` (`NSpid`, `NSpgid`, `NSsid` in its status).
fn ids(pid: Pid) -> Result<Ids> {
    let path = format!("/proc/{pid}/status");
    let text = std::fs::read_to_string(&path).ctx(|| format!("reading {path}"))?;
    let last = |key: &str| -> Option<i32> {
        text.lines()
            .find_map(|l| l.strip_prefix(key))
            .and_then(|v| v.split_whitespace().last())
            .and_then(|v| v.parse().ok())
    };
    match (last("NSpid:"), last("NSpgid:"), last("NSsid:")) {
        (Some(pid), Some(pgid), Some(sid)) => Ok(Ids { pid, pgid, sid }),
        _ => Err(EngineError::Unrestorable(format!(
            "{path} does not show the process's ids (NSpid, NSpgid, NSsid)"
        ))),
    }
}
