//! The node: a private OpenSSH `sshd` on 127.0.0.1 (this machine plays the node), and the client
//! side that `mrun` and `ssh` read: a HOME holding `.ssh/config`, the key and `known_hosts`.
//! Also the baseline: the same bytes pushed through an OpenSSH channel to `cat > /dev/null`.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::sys::{terminate_with_parent, wait_timeout};
use anyhow::{bail, Context};

const SSHD: &str = "/usr/sbin/sshd";
const TASKSET: &str = "/usr/bin/taskset";
const SSH: &str = "/usr/bin/ssh";
const SSH_KEYGEN: &str = "/usr/bin/ssh-keygen";

/// A running sshd and the client configuration that reaches it as `name`.
pub struct Node {
    pub name: &'static str,
    pub port: u16,
    /// The client's HOME (`.ssh/config`, `.ssh/id_ed25519`, `.ssh/known_hosts`).
    pub home: PathBuf,
    sshd: Child,
    log: PathBuf,
}

impl Node {
    /// Sets up the server in `dir/sshd` and the client in `dir/home`, starts the server and
    /// checks that `ssh` logs in.
    pub fn start(dir: &Path, name: &'static str) -> anyhow::Result<Node> {
        Node::start_on_cpus(dir, name, None)
    }

    /// As [`Node::start`], with the server pinned to `cpus` (a `taskset -c` list) when given:
    /// everything its sessions run (the agent, the jobs restored there) inherits that
    /// affinity, and mrun's agent measures the load of the tasks on those CPUs. This is how
    /// one host plays a separate machine.
    pub fn start_on_cpus(
        dir: &Path,
        name: &'static str,
        cpus: Option<&str>,
    ) -> anyhow::Result<Node> {
        Node::start_hiding(dir, name, cpus, &[])
    }

    /// As [`Node::start_on_cpus`], with the server in a mount namespace of its own where each
    /// of `hidden` is an empty tmpfs (with the directory's mode and owner): the node does not
    /// see what home keeps there, as a machine without a shared filesystem would not. Every
    /// session (mrun's agent, the jobs restored there) inherits that view; nothing mounted
    /// there reaches home (`unshare --mount --propagation private`). Needs root.
    pub fn start_hiding(
        dir: &Path,
        name: &'static str,
        cpus: Option<&str>,
        hidden: &[PathBuf],
    ) -> anyhow::Result<Node> {
        for tool in [SSHD, SSH, SSH_KEYGEN] {
            if !Path::new(tool).is_file() {
                bail!("{tool} is missing: install openssh-server and openssh-client");
            }
        }
        let server = dir.join("sshd");
        let home = dir.join("home");
        let dot_ssh = home.join(".ssh");
        for d in [&server, &home, &dot_ssh] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .recursive(true)
                .create(d)
                .with_context(|| format!("cannot create {}", d.display()))?;
        }
        // sshd refuses to start without its privilege separation directory.
        std::fs::create_dir_all("/run/sshd").context("cannot create /run/sshd")?;

        let host_key = keygen(&server.join("host_key"))?;
        let client_key = keygen(&dot_ssh.join("id_ed25519"))?;
        let authorized = server.join("authorized_keys");
        write_private(&authorized, &format!("{client_key}\n"))?;

        let port = free_port()?;
        let config = server.join("sshd_config");
        let log = server.join("log");
        write_private(&config, &format!(
            "ListenAddress 127.0.0.1\nPort {port}\nHostKey {}\nAuthorizedKeysFile {}\nPidFile {}\n\
             UsePAM no\nPasswordAuthentication no\nKbdInteractiveAuthentication no\n\
             PermitRootLogin prohibit-password\nStrictModes no\nLogLevel ERROR\n",
            server.join("host_key").display(), authorized.display(), server.join("sshd.pid").display()))?;

        // taskset sets the affinity and execs the next program (unshare, sh: all exec), so the
        // process started is sshd in the end.
        let mut argv: Vec<OsString> = Vec::new();
        if let Some(list) = cpus {
            if !Path::new(TASKSET).is_file() {
                bail!("{TASKSET} is missing: install util-linux");
            }
            argv.extend([TASKSET.into(), "-c".into(), list.into()]);
        }
        if !hidden.is_empty() {
            argv.extend(hiding_prefix(hidden)?);
        }
        argv.push(SSHD.into());
        let mut cmd = Command::new(&argv[0]);
        cmd.args(&argv[1..]);
        cmd.arg("-D")
            .arg("-f")
            .arg(&config)
            .arg("-E")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        terminate_with_parent(&mut cmd);
        let sshd = cmd
            .spawn()
            .with_context(|| format!("cannot start {SSHD}"))?;

        let user = login_name()?;
        write_private(&dot_ssh.join("config"), &format!(
            "Host {name}\n    HostName 127.0.0.1\n    Port {port}\n    User {user}\n    IdentityFile {}\n",
            dot_ssh.join("id_ed25519").display()))?;
        write_private(
            &dot_ssh.join("known_hosts"),
            &format!("[127.0.0.1]:{port} {host_key}\n"),
        )?;

        let mut node = Node {
            name,
            port,
            home,
            sshd,
            log,
        };
        node.wait_listening()?;
        for d in hidden {
            let seen = node.view(d);
            let left = std::fs::read_dir(&seen)
                .with_context(|| format!("cannot read {}", seen.display()))?
                .count();
            if left != 0 || node.mount_namespace() == mount_namespace(std::process::id()) {
                bail!(
                    "the node's sshd sees {} ({left} entries there): it should be an empty \
                     tmpfs in a mount namespace of the node's own",
                    d.display()
                );
            }
        }
        let out = node
            .ssh()
            .arg("true")
            .stdin(Stdio::null())
            .output()
            .context("cannot run ssh")?;
        if !out.status.success() {
            bail!(
                "`ssh {name} true` failed ({}): {} {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                node.log_text()
            );
        }
        Ok(node)
    }

    /// `path` as the node sees it: `/proc/SSHD/root/PATH`, which resolves in its mount
    /// namespace.
    pub fn view(&self, path: &Path) -> PathBuf {
        let rel = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{}/root", self.sshd.id())).join(rel)
    }

    fn mount_namespace(&self) -> Option<u64> {
        mount_namespace(self.sshd.id())
    }

    fn wait_listening(&mut self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if TcpStream::connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, self.port)).is_ok() {
                return Ok(());
            }
            if let Some(status) = self.sshd.try_wait().context("waitpid on sshd")? {
                bail!("sshd ended at start ({status}): {}", self.log_text());
            }
            if Instant::now() > deadline {
                bail!(
                    "sshd does not listen on 127.0.0.1:{} after 10 s: {}",
                    self.port,
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn log_text(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        if text.trim().is_empty() {
            "(sshd logged nothing)".into()
        } else {
            format!("sshd log: {}", text.trim())
        }
    }

    /// `ssh NODE` with the client configuration, never asking anything, without ssh-agent.
    pub fn ssh(&self) -> Command {
        self.ssh_logging("ERROR")
    }

    fn ssh_logging(&self, level: &str) -> Command {
        let mut cmd = Command::new(SSH);
        cmd.args(self.ssh_options(level))
            .arg(self.name)
            .env("HOME", &self.home)
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// The `ssh` command line, without the destination, for programs that run ssh themselves
    /// (GNU parallel's `--ssh`). The paths are the bench's own and hold no spaces.
    pub fn ssh_command_line(&self) -> String {
        std::iter::once(SSH.to_string())
            .chain(self.ssh_options("ERROR"))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// OpenSSH takes `~` from the password database, not HOME: every file is named.
    fn ssh_options(&self, level: &str) -> Vec<String> {
        let ssh = self.home.join(".ssh");
        vec![
            "-F".into(),
            ssh.join("config").display().to_string(),
            "-o".into(),
            format!("UserKnownHostsFile={}", ssh.join("known_hosts").display()),
            "-o".into(),
            "StrictHostKeyChecking=yes".into(),
            "-o".into(),
            "BatchMode=yes".into(),
            "-o".into(),
            format!("LogLevel={level}"),
        ]
    }

    /// The cipher OpenSSH's client negotiates with this server (as `ssh -v` tells).
    pub fn openssh_cipher(&self) -> String {
        let out = self
            .ssh_logging("DEBUG1")
            .arg("true")
            .stdin(Stdio::null())
            .output();
        let text = out
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned())
            .unwrap_or_default();
        text.lines()
            .find_map(|l| {
                l.split_once("kex: client->server cipher: ")
                    .map(|(_, c)| c.trim().to_string())
            })
            .unwrap_or_else(|| "unknown".into())
    }

    /// The baseline: `bytes` from memory through `ssh NODE 'cat > /dev/null'`. The clock starts
    /// once the remote command runs (it prints a line first), so `push` is the transfer alone,
    /// through to cat's end and ssh's exit; `setup` is connecting, authenticating and starting
    /// the command.
    pub fn push(&self, bytes: &[u8], err: &Path, timeout: Duration) -> anyhow::Result<Push> {
        self.push_with(bytes.len() as u64, err, timeout, |stdin| {
            stdin.write_all(bytes)
        })
    }

    /// The baseline of a job on the node reading a file at home: the file's bytes through
    /// `ssh NODE 'cat > /dev/null'`, timed as [`Node::push`] times them.
    pub fn push_file(&self, path: &Path, err: &Path, timeout: Duration) -> anyhow::Result<Push> {
        let mut file =
            File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
        let len = file.metadata().context("fstat")?.len();
        self.push_with(len, err, timeout, |stdin| {
            let n = std::io::copy(&mut file, stdin)?;
            if n == len {
                Ok(())
            } else {
                Err(std::io::Error::other(format!("copied {n} of {len} bytes")))
            }
        })
    }

    fn push_with(
        &self,
        len: u64,
        err: &Path,
        timeout: Duration,
        write: impl FnOnce(&mut std::process::ChildStdin) -> std::io::Result<()>,
    ) -> anyhow::Result<Push> {
        let deadline = Instant::now() + timeout;
        let err_file =
            File::create(err).with_context(|| format!("cannot create {}", err.display()))?;
        let start = Instant::now();
        let mut child = self
            .ssh()
            .arg("echo go; exec cat > /dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .context("cannot run ssh")?;
        let watchdog = Watchdog::arm(child.id(), timeout);
        let mut said = Vec::new();
        if let Some(mut out) = child.stdout.take() {
            let mut byte = [0u8; 1];
            while !said.ends_with(b"\n") && matches!(out.read(&mut byte), Ok(1)) {
                said.push(byte[0]);
            }
        }
        let setup = start.elapsed();
        let started = Instant::now();
        let wrote = match (said.as_slice(), child.stdin.take()) {
            (b"go\n", Some(mut stdin)) => write(&mut stdin).map_err(anyhow::Error::from),
            _ => Err(anyhow::anyhow!(
                "the remote command did not start (it said {:?})",
                String::from_utf8_lossy(&said)
            )),
        };
        let fired = watchdog.disarm();
        let status = wait_timeout(
            &mut child,
            deadline.saturating_duration_since(Instant::now()),
        )?;
        let push = started.elapsed();
        let Some(status) = status.filter(|_| !fired) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "ssh {} 'cat > /dev/null' of {len} bytes did not end within {timeout:?}; killed",
                self.name
            );
        };
        if wrote.is_err() || !status.success() {
            let why = wrote
                .err()
                .map_or_else(|| status.to_string(), |e| format!("{e:#}; ssh {status}"));
            let msg = std::fs::read_to_string(err).unwrap_or_default();
            bail!(
                "ssh {} 'cat > /dev/null' failed ({why}): {} {}",
                self.name,
                msg.trim(),
                self.log_text()
            );
        }
        Ok(Push { setup, push })
    }
}

impl Node {
    /// The baseline of a job on the node writing a file at home: `len` bytes from `ssh NODE
    /// 'head -c LEN /dev/zero'` written into `to` at home. OpenSSH does not compress (its
    /// default), so zeros cost what any bytes cost. The clock starts once the remote command
    /// runs (it prints a line first) and stops at ssh's exit.
    pub fn pull_to_file(
        &self,
        len: u64,
        to: &Path,
        err: &Path,
        timeout: Duration,
    ) -> anyhow::Result<Push> {
        let err_file =
            File::create(err).with_context(|| format!("cannot create {}", err.display()))?;
        let mut out =
            File::create(to).with_context(|| format!("cannot create {}", to.display()))?;
        let start = Instant::now();
        let mut child = self
            .ssh()
            .arg(format!("echo go; exec head -c {len} /dev/zero"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(err_file)
            .spawn()
            .context("cannot run ssh")?;
        let watchdog = Watchdog::arm(child.id(), timeout);
        let mut said = Vec::new();
        let mut copied = Err(anyhow::anyhow!("ssh gave no output"));
        let mut setup = Duration::ZERO;
        let mut started = Instant::now();
        if let Some(mut stdout) = child.stdout.take() {
            let mut byte = [0u8; 1];
            while !said.ends_with(b"\n") && matches!(stdout.read(&mut byte), Ok(1)) {
                said.push(byte[0]);
            }
            setup = start.elapsed();
            started = Instant::now();
            copied = if said == b"go\n" {
                std::io::copy(&mut stdout, &mut out).map_err(anyhow::Error::from)
            } else {
                Err(anyhow::anyhow!(
                    "the remote command did not start (it said {:?})",
                    String::from_utf8_lossy(&said)
                ))
            };
        }
        let fired = watchdog.disarm();
        let status = wait_timeout(&mut child, timeout)?;
        let pull = started.elapsed();
        let Some(status) = status.filter(|_| !fired) else {
            let _ = child.kill();
            let _ = child.wait();
            bail!(
                "ssh {} 'head -c {len} /dev/zero' did not end within {timeout:?}; killed",
                self.name
            );
        };
        match copied {
            Ok(n) if n == len && status.success() => Ok(Push { setup, push: pull }),
            other => {
                let msg = std::fs::read_to_string(err).unwrap_or_default();
                bail!(
                    "ssh {} 'head -c {len} /dev/zero' failed ({}; ssh {status}): {} {}",
                    self.name,
                    match other {
                        Ok(n) => format!("{n} bytes came"),
                        Err(e) => format!("{e:#}"),
                    },
                    msg.trim(),
                    self.log_text()
                )
            }
        }
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        // SIGTERM: sshd removes its pid file and leaves.
        if let Ok(pid) = i32::try_from(self.sshd.id()) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
        }
        if !matches!(
            wait_timeout(&mut self.sshd, Duration::from_secs(5)),
            Ok(Some(_))
        ) {
            let _ = self.sshd.kill();
            let _ = self.sshd.wait();
        }
    }
}

/// One baseline transfer.
#[derive(Debug, Clone, Copy)]
pub struct Push {
    /// From starting `ssh` to the remote command's first output.
    pub setup: Duration,
    /// From the first byte written to ssh's exit.
    pub push: Duration,
}

/// Kills a process that is still at it when the time is up (for blocking reads and writes on
/// its pipes). Disarm it before reaping the process, so that it can never hit a reused pid.
struct Watchdog {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<bool>,
}

impl Watchdog {
    fn arm(pid: u32, timeout: Duration) -> Watchdog {
        let (stop, rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || match rx.recv_timeout(timeout) {
            Err(mpsc::RecvTimeoutError::Timeout) => {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = nix::sys::signal::kill(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                }
                true
            }
            _ => false,
        });
        Watchdog { stop, thread }
    }

    /// Whether it fired.
    fn disarm(self) -> bool {
        let _ = self.stop.send(());
        self.thread.join().unwrap_or(true)
    }
}

/// Mounts an empty tmpfs over each directory in a fresh mount namespace, then execs the rest
/// of the command line: `unshare --mount --propagation private sh -c SCRIPT sh DIR MODE UID
/// GID ... --`, to be followed by the program and its arguments.
fn hiding_prefix(hidden: &[PathBuf]) -> anyhow::Result<Vec<OsString>> {
    const UNSHARE: &str = "/usr/bin/unshare";
    const SCRIPT: &str = r#"set -eu
while [ "$1" != -- ]; do
    /usr/bin/mount -t tmpfs -o "mode=$2,uid=$3,gid=$4" mrun-bench-hidden "$1"
    shift 4
done
shift
exec "$@""#;
    if !Path::new(UNSHARE).is_file() {
        bail!("{UNSHARE} is missing: install util-linux");
    }
    if !nix::unistd::geteuid().is_root() {
        bail!("a node that does not see home's files needs root (unshare --mount, mount -t tmpfs)");
    }
    let mut argv: Vec<OsString> = vec![
        UNSHARE.into(),
        "--mount".into(),
        "--propagation".into(),
        "private".into(),
        "/bin/sh".into(),
        "-c".into(),
        SCRIPT.into(),
        "sh".into(),
    ];
    for d in hidden {
        let meta = std::fs::metadata(d).with_context(|| format!("cannot hide {}", d.display()))?;
        if !meta.is_dir() || !d.is_absolute() {
            bail!(
                "cannot hide {}: not an absolute path to a directory",
                d.display()
            );
        }
        argv.push(d.into());
        argv.push(format!("{:o}", meta.mode() & 0o7777).into());
        argv.push(meta.uid().to_string().into());
        argv.push(meta.gid().to_string().into());
    }
    argv.push("--".into());
    Ok(argv)
}

/// The inode of `/proc/PID/ns/mnt`: which mount namespace `pid` lives in.
fn mount_namespace(pid: u32) -> Option<u64> {
    std::fs::metadata(format!("/proc/{pid}/ns/mnt"))
        .ok()
        .map(|m| m.ino())
}

/// `ssh-keygen -q -t ed25519 -N '' -f PATH`; the public key's "TYPE BASE64".
fn keygen(path: &Path) -> anyhow::Result<String> {
    let out = Command::new(SSH_KEYGEN)
        .args(["-q", "-t", "ed25519", "-N", "", "-C", "mrun-bench", "-f"])
        .arg(path)
        .stdin(Stdio::null())
        .output()
        .context("cannot run ssh-keygen")?;
    if !out.status.success() {
        bail!(
            "ssh-keygen -f {} failed: {}",
            path.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let public = PathBuf::from(format!("{}.pub", path.display()));
    let text = std::fs::read_to_string(&public)
        .with_context(|| format!("cannot read {}", public.display()))?;
    Ok(text
        .split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" "))
}

fn write_private(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("cannot chmod {}", path.display()))
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> anyhow::Result<u16> {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0))
        .context("cannot bind 127.0.0.1:0")?;
    Ok(l.local_addr().context("local_addr")?.port())
}

/// The name of the user running the bench (whom the node logs in).
fn login_name() -> anyhow::Result<String> {
    let uid = nix::unistd::getuid();
    match nix::unistd::User::from_uid(uid) {
        Ok(Some(u)) => Ok(u.name),
        _ => bail!("no passwd entry for uid {uid}"),
    }
}
