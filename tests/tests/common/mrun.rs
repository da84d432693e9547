//! Jobs under `mrun` and their moves with `mrunctl migrate`, as a sandbox's user; where a job
//! runs right now, read from `/proc`.
//!
//! A job's id is the pid `mrun` started the command with. The job process is found among
//! `mrun`'s descendants by its pid as it sees itself (the last `NSpid` entry): at first the
//! child of `mrun` itself, later a restored process in a nested pid namespace, under
//! `mrun-agent` while it is away, under `mrun`'s restore helper once it is back home.

use super::paths::{agent_path, mrun_path, mrunctl_path};
use super::process::{Finished, Input, Output, Proc, TIMEOUT};
use super::procfs::{
    children, descendants, ns_pids, process_state, status_field, tracer_pid, wait_until,
};
use super::sandbox::{Sandbox, User, NOBODY};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

/// What `mrun` and `mrunctl` get as `XDG_RUNTIME_DIR`, which decides where job sockets live.
#[derive(Clone, Debug)]
pub enum RuntimeDir {
    /// Removed from the environment: sockets go to `/tmp/mrun-UID`.
    Unset,
    /// Sockets go to `DIR/mrun`.
    At(PathBuf),
}

/// Where the job process runs, judged by its ancestors below `mrun`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Home,
    /// Below an `mrun-agent` process (the node `local`).
    Away,
}

/// `mrun`, `mrun-agent` (beside it) and `mrunctl`, run as a sandbox's user.
pub struct Mrun<'a> {
    sb: &'a Sandbox,
    mrun: PathBuf,
    mrunctl: PathBuf,
    runtime: RuntimeDir,
}

impl<'a> Mrun<'a> {
    /// The binaries under test (copied into the sandbox for nobody, `mrun-agent` beside
    /// `mrun`), with `XDG_RUNTIME_DIR` unset.
    pub fn new(sb: &'a Sandbox) -> Mrun<'a> {
        let mrun = sb.program(&mrun_path());
        let agent = sb.program(&agent_path());
        assert_eq!(
            mrun.parent(),
            agent.parent(),
            "mrun-agent must be beside mrun"
        );
        let mrunctl = sb.program(&mrunctl_path());
        Mrun {
            sb,
            mrun,
            mrunctl,
            runtime: RuntimeDir::Unset,
        }
    }

    pub fn with_runtime_dir(mut self, runtime: RuntimeDir) -> Mrun<'a> {
        self.runtime = runtime;
        self
    }

    pub fn sandbox(&self) -> &Sandbox {
        self.sb
    }

    /// The uid the sandbox's processes run as.
    pub fn uid(&self) -> u32 {
        match self.sb.user() {
            // SAFETY: getuid has no preconditions.
            User::Invoker => unsafe { libc::getuid() },
            User::Nobody => NOBODY,
        }
    }

    /// The directory holding this user's job sockets.
    pub fn socket_dir(&self) -> PathBuf {
        match &self.runtime {
            RuntimeDir::Unset => PathBuf::from(format!("/tmp/mrun-{}", self.uid())),
            RuntimeDir::At(d) => d.join("mrun"),
        }
    }

    pub fn socket_path(&self, job: u32) -> PathBuf {
        self.socket_dir().join(format!("job-{job}.sock"))
    }

    fn apply_env(&self, cmd: &mut Command) {
        match &self.runtime {
            RuntimeDir::Unset => {
                cmd.env_remove("XDG_RUNTIME_DIR");
            }
            RuntimeDir::At(d) => {
                cmd.env("XDG_RUNTIME_DIR", d);
            }
        }
    }

    /// `mrun PROGRAM ARGS...` as a command (not started).
    pub fn command<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Command {
        let mut cmd = self.sb.command(&self.mrun);
        cmd.arg(program).args(args);
        self.apply_env(&mut cmd);
        cmd
    }

    /// Starts `mrun PROGRAM ARGS...` (with `envs` added to its environment, which the job
    /// inherits) and waits until the job exists and its socket is there to migrate it.
    pub fn start<S: AsRef<OsStr>>(
        &self,
        label: &str,
        program: impl AsRef<OsStr>,
        args: &[S],
        envs: &[(&str, &str)],
        stdin: Input,
        stdout: Output,
    ) -> Job {
        let mut cmd = self.command(program, args);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        self.spawn_job(label, cmd, stdin, stdout)
    }

    /// Starts the prepared `mrun ...` command and waits until its job exists and the job's
    /// socket is there to migrate it (shared by every way of starting a job).
    pub fn spawn_job(&self, label: &str, cmd: Command, stdin: Input, stdout: Output) -> Job {
        let mut proc = Proc::spawn(format!("mrun {label}"), cmd, stdin, stdout);
        let pid = proc.pid();
        let mut child = None;
        let ok = wait_until(TIMEOUT, || {
            child = children(pid).first().copied();
            child.is_some() || proc.try_status().is_some()
        });
        let id = match child {
            Some(c) if ok => c as u32,
            _ => {
                proc.kill();
                panic!(
                    "mrun {label} (pid {pid}) never started its command: {:?}; stderr: {}",
                    proc.try_status(),
                    proc.stderr_text()
                )
            }
        };
        let socket = self.socket_path(id);
        if !wait_until(TIMEOUT, || socket.exists() || proc.try_status().is_some())
            || !socket.exists()
        {
            proc.kill();
            panic!(
                "mrun {label} (pid {pid}, job {id}) never created {}: {:?}; stderr: {}",
                socket.display(),
                proc.try_status(),
                proc.stderr_text()
            );
        }
        Job {
            label: label.to_string(),
            id,
            mrun: proc,
        }
    }

    /// `mrunctl ARGS...` run to the end.
    pub fn mrunctl<S: AsRef<OsStr>>(&self, args: &[S]) -> Finished {
        let cmd = self.mrunctl_command(args);
        let label = format!(
            "mrunctl {}",
            args.iter()
                .map(|a| a.as_ref().to_string_lossy().into_owned())
                .collect::<Vec<_>>()
                .join(" ")
        );
        Proc::spawn(label, cmd, Input::Null, Output::Pipe).finish()
    }

    /// `mrunctl ARGS...` as a command (not started).
    pub fn mrunctl_command<S: AsRef<OsStr>>(&self, args: &[S]) -> Command {
        let mut cmd = self.sb.command(&self.mrunctl);
        cmd.args(args);
        self.apply_env(&mut cmd);
        cmd
    }

    /// `mrunctl migrate JOB NODE`, run to the end.
    pub fn migrate(&self, job: u32, node: &str) -> Finished {
        self.mrunctl(&["migrate", &job.to_string(), node])
    }

    /// Moves `job` to `node` (or `home`) and asserts it worked: exit 0, the one expected line
    /// on stdout, nothing on stderr.
    pub fn migrate_ok(&self, job: &Job, node: &str) {
        let out = self.migrate(job.id, node);
        let want = if node == "home" {
            format!("job {} is back home\n", job.id)
        } else {
            format!("job {} now runs on {node}\n", job.id)
        };
        assert!(
            out.status.success() && out.stdout_text() == want && out.stderr.is_empty(),
            "{}: expected exit 0 and {want:?}, got {}\n--- mrun's stderr so far ---\n{}",
            job.label,
            out.describe(),
            job.mrun.stderr_text()
        );
    }
}

/// A running `mrun` and its job.
pub struct Job {
    pub label: String,
    /// The job id: the pid `mrun` started the command with, which the job keeps everywhere.
    pub id: u32,
    pub mrun: Proc,
}

fn is_job_process(pid: i32, id: u32) -> bool {
    let ns = ns_pids(pid);
    let id = id as i32;
    ns.last() == Some(&id)
        && (ns.len() >= 2 || pid == id)
        && !matches!(process_state(pid), Some('Z') | Some('X') | None)
        && tracer_pid(pid) == Some(0)
}

impl Job {
    pub fn mrun_pid(&self) -> i32 {
        self.mrun.pid()
    }

    /// The job process (its pid in our namespace) and where it runs. Waits until exactly one
    /// live, untraced process below `mrun` is the job (a copy being checkpointed or killed
    /// right after a move is traced or a zombie). The job must be running.
    pub fn locate(&self) -> (i32, Place) {
        let mrun = self.mrun_pid();
        let mut found = Vec::new();
        let ok = wait_until(TIMEOUT, || {
            found = descendants(mrun)
                .into_iter()
                .filter(|&d| is_job_process(d, self.id))
                .collect();
            found.len() == 1
        });
        assert!(
            ok,
            "{}: expected exactly one live job process with pid {} below mrun (pid {mrun}), \
             found {found:?}; mrun's descendants (pid, NSpid, name, state, TracerPid): {:?}",
            self.label,
            self.id,
            descendants(mrun)
                .into_iter()
                .map(|d| (
                    d,
                    ns_pids(d),
                    status_field(d, "Name"),
                    process_state(d),
                    tracer_pid(d)
                ))
                .collect::<Vec<_>>()
        );
        let pid = found[0];
        let mut place = Place::Home;
        let mut p = pid;
        loop {
            let parent: i32 = status_field(p, "PPid")
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{}: no parent for pid {p}", self.label));
            if parent == mrun {
                break;
            }
            assert!(
                parent > 1,
                "{}: pid {pid} is not below mrun (pid {mrun})",
                self.label
            );
            if status_field(parent, "Name").as_deref() == Some("mrun-agent") {
                place = Place::Away;
            }
            p = parent;
        }
        (pid, place)
    }

    pub fn place(&self) -> Place {
        self.locate().1
    }

    /// Asserts the job runs at `want`.
    pub fn assert_place(&self, want: Place) {
        let (pid, got) = self.locate();
        assert_eq!(
            got, want,
            "{}: the job process (pid {pid} here) runs at {got:?}, expected {want:?}",
            self.label
        );
    }

    /// Waits for `mrun` to end and for the end of its output.
    pub fn finish(self) -> Finished {
        self.mrun.finish()
    }
}

/// Writes `text` to `path` atomically (a temporary file renamed into place), so a victim
/// polling for `path` never reads it half-written.
pub fn write_atomically(path: &Path, text: &str) {
    let tmp = path.with_extension("tmp-write");
    std::fs::write(&tmp, text).unwrap_or_else(|e| panic!("write {}: {e}", tmp.display()));
    std::fs::rename(&tmp, path).unwrap_or_else(|e| panic!("rename to {}: {e}", path.display()));
}
