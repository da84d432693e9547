//! A per-test scratch directory and the user the test's processes run as.
//!
//! A [`Sandbox`] for [`User::Nobody`] is a 0777 directory under the system temp dir, holding
//! copies of everything nobody must run or read (victims, `mrunctl`, inputs), and every command
//! it builds runs through `setpriv --reuid=65534 --regid=65534 --clear-groups`. The directory is
//! removed when the test passes and kept (its path printed) when it fails.

use super::paths::mrunctl_path;
use super::process::{Finished, Input, Output, Proc};
use super::victims::victim;
use std::ffi::OsStr;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

pub const NOBODY: u32 = 65534;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum User {
    /// Whoever runs the tests (root in CI).
    Invoker,
    /// uid/gid 65534, no supplementary groups.
    Nobody,
}

static COUNTER: AtomicUsize = AtomicUsize::new(0);

pub struct Sandbox {
    dir: PathBuf,
    user: User,
}

impl Sandbox {
    /// A sandbox whose processes run as the invoking user.
    pub fn new(name: &str) -> Sandbox {
        Sandbox::for_user(name, User::Invoker)
    }

    pub fn for_user(name: &str, user: User) -> Sandbox {
        let root = std::env::temp_dir().join("mrun-tests");
        std::fs::create_dir_all(&root).unwrap_or_else(|e| panic!("mkdir {}: {e}", root.display()));
        // Sticky and world-writable like /tmp, so nobody can reach its sandboxes.
        let _ = std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o1777));
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = root.join(format!("{name}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
        let sb = Sandbox { dir, user };
        sb.open_up(&sb.dir, 0o777);
        sb
    }

    pub fn user(&self) -> User {
        self.user
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// Makes `path` usable by the sandbox's user: chmod `mode` (for nobody) and chown to nobody.
    fn open_up(&self, path: &Path, mode: u32) {
        if self.user != User::Nobody {
            return;
        }
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
        std::os::unix::fs::chown(path, Some(NOBODY), Some(NOBODY))
            .unwrap_or_else(|e| panic!("chown {}: {e}", path.display()));
    }

    /// Creates the directory `name` in the sandbox, owned by the sandbox's user.
    pub fn mkdir(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::create_dir_all(&p).unwrap_or_else(|e| panic!("mkdir {}: {e}", p.display()));
        self.open_up(&p, 0o777);
        p
    }

    /// Creates the empty file `name` (a go or stop flag for a victim).
    pub fn touch(&self, name: &str) -> PathBuf {
        let p = self.path(name);
        std::fs::write(&p, b"").unwrap_or_else(|e| panic!("create {}: {e}", p.display()));
        self.open_up(&p, 0o666);
        p
    }

    /// Creates an empty file `name` owned by the sandbox's user, for a process's output.
    pub fn output_file(&self, name: &str) -> PathBuf {
        self.touch(name)
    }

    /// A file the sandbox's user may run or read: `src` itself, or a copy in the sandbox.
    fn reachable(&self, src: &Path, mode: u32) -> PathBuf {
        if self.user != User::Nobody {
            return src.to_path_buf();
        }
        let bin = self.mkdir("bin");
        let name = src
            .file_name()
            .unwrap_or_else(|| panic!("no file name in {}", src.display()));
        let dst = bin.join(name);
        if !dst.exists() {
            // Copied by `cp`, not here: a copy written by this process would be open for
            // writing while other test threads fork, and a child that has not exec'd yet keeps
            // it so, which makes running the copy fail with ETXTBSY ("Text file busy").
            let copied = Command::new("cp")
                .arg("--")
                .arg(src)
                .arg(&dst)
                .status()
                .unwrap_or_else(|e| panic!("cp {} {}: {e}", src.display(), dst.display()));
            assert!(
                copied.success(),
                "cp {} {}: {copied}",
                src.display(),
                dst.display()
            );
            self.open_up(&dst, mode);
        }
        dst
    }

    /// The compiled victim `name`, runnable by the sandbox's user.
    pub fn victim(&self, name: &str) -> PathBuf {
        self.reachable(&victim(name), 0o755)
    }

    /// A program the sandbox's user may run: `src` itself, or a copy in the sandbox's `bin/`
    /// (all such copies share that directory, so programs found beside each other stay so).
    pub fn program(&self, src: &Path) -> PathBuf {
        self.reachable(src, 0o755)
    }

    /// An input file readable by the sandbox's user.
    pub fn input(&self, path: &Path) -> PathBuf {
        self.reachable(path, 0o644)
    }

    /// A command running `program` as the sandbox's user, with the sandbox as its cwd.
    pub fn command(&self, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = match self.user {
            User::Invoker => Command::new(program),
            User::Nobody => {
                let mut c = Command::new("setpriv");
                c.arg(format!("--reuid={NOBODY}"))
                    .arg(format!("--regid={NOBODY}"))
                    .arg("--clear-groups")
                    .arg("--")
                    .arg(program);
                c
            }
        };
        cmd.current_dir(&self.dir);
        cmd
    }

    /// Starts `program args...` as the sandbox's user.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        label: &str,
        program: impl AsRef<OsStr>,
        args: &[S],
        stdin: Input,
        stdout: Output,
    ) -> Proc {
        let mut cmd = self.command(program);
        cmd.args(args);
        Proc::spawn(label, cmd, stdin, stdout)
    }

    /// Runs `program args...` to the end with stdout captured.
    pub fn run<S: AsRef<OsStr>>(
        &self,
        label: &str,
        program: impl AsRef<OsStr>,
        args: &[S],
        stdin: Input,
    ) -> Finished {
        self.spawn(label, program, args, stdin, Output::Pipe)
            .finish()
    }

    /// Starts the victim `name` with stdout piped to the test.
    pub fn spawn_victim<S: AsRef<OsStr>>(&self, name: &str, args: &[S], stdin: Input) -> Proc {
        self.spawn(name, self.victim(name), args, stdin, Output::Pipe)
    }

    /// `mrunctl`, run as the sandbox's user.
    pub fn mrunctl(&self) -> Mrunctl<'_> {
        Mrunctl {
            sb: self,
            exe: self.reachable(&mrunctl_path(), 0o755),
        }
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if std::thread::panicking() || std::env::var_os("MRUN_TESTS_KEEP").is_some() {
            eprintln!("kept the test's files in {}", self.dir.display());
        } else {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// The `mrunctl` binary under test, run as a sandbox's user.
pub struct Mrunctl<'a> {
    sb: &'a Sandbox,
    exe: PathBuf,
}

impl Mrunctl<'_> {
    pub fn command(&self) -> Command {
        self.sb.command(&self.exe)
    }

    /// `mrunctl checkpoint PID -o IMAGE`, run to the end.
    pub fn checkpoint(&self, pid: i32, image: &Path) -> Finished {
        self.checkpoint_with(pid, image.as_os_str(), &[], &[])
    }

    /// `mrunctl checkpoint PID -o IMAGE EXTRA...` with extra environment variables.
    pub fn checkpoint_with(
        &self,
        pid: i32,
        image: &OsStr,
        extra: &[&str],
        envs: &[(&str, &str)],
    ) -> Finished {
        let mut cmd = self.command();
        cmd.arg("checkpoint")
            .arg(pid.to_string())
            .arg("-o")
            .arg(image)
            .args(extra);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc::spawn(
            format!("mrunctl checkpoint {pid}"),
            cmd,
            Input::Null,
            Output::Pipe,
        )
        .finish()
    }

    /// Checkpoints `pid` into `image` and asserts it worked (exit 0, a non-empty image).
    pub fn checkpoint_ok(&self, pid: i32, image: &Path) {
        let out = self.checkpoint(pid, image);
        out.assert_success();
        let len = std::fs::metadata(image).map(|m| m.len()).unwrap_or(0);
        assert!(
            len > 0,
            "checkpoint of {pid} succeeded but {} is empty or missing",
            image.display()
        );
    }

    /// Starts `mrunctl restore IMAGE` in the foreground.
    pub fn restore(&self, image: &Path, stdin: Input, stdout: Output) -> Proc {
        self.restore_with_env(image, &[], stdin, stdout)
    }

    /// [`Self::restore`] with `envs` added to mrunctl's environment.
    pub fn restore_with_env(
        &self,
        image: &Path,
        envs: &[(&str, &str)],
        stdin: Input,
        stdout: Output,
    ) -> Proc {
        let mut cmd = self.command();
        cmd.arg("restore").arg(image);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        Proc::spawn(
            format!("mrunctl restore {}", image.display()),
            cmd,
            stdin,
            stdout,
        )
    }

    /// Starts `mrunctl restore -`, the image coming on stdin.
    pub fn restore_from_stdin(&self, image: Input, stdout: Output) -> Proc {
        let mut cmd = self.command();
        cmd.arg("restore").arg("-");
        Proc::spawn("mrunctl restore -", cmd, image, stdout)
    }
}
