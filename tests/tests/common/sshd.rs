//! SSH nodes for the migration tests: real OpenSSH `sshd` instances on 127.0.0.1, each with its
//! own host key, `authorized_keys` and login environment, and the client side that `mrun` reads
//! (a `HOME` holding `.ssh/config`, `.ssh/id_ed25519` and `.ssh/known_hosts`).
//!
//! A [`Node`] is an `sshd -D` child of the test (never on 0.0.0.0), logging in the invoking user
//! (root in CI) with public keys only. Its sessions get `HOME` set to a directory of the node's
//! own (or whatever the test asks for) with `SetEnv`, so nothing a node does touches the real
//! home directory, and `PATH=/usr/bin:/bin`, so `mrun-agent` is not found on it unless a test
//! says where it is. Dropping a node SIGKILLs its listener, every session below it, and any
//! process of its sessions that outlived them (see [`Node::kill_sshd`]).
//!
//! A node sees home's files unless told otherwise ([`NodeFiles`]): with `Hidden`, `Different` or
//! `Missing`, its sshd runs in a mount namespace of its own (`unshare -m`, every mount private,
//! so nothing leaks back to home) where the given directories are an empty tmpfs, a tmpfs with
//! other bytes under the same names, or absent; every session, agent and restored job of the
//! node inherits that view. [`Node::view`] reads a path as the node sees it, from outside.
//!
//! Jobs are started with [`start_ssh_job`], which gives `mrun` the client `HOME`, no ssh-agent
//! and, unless told otherwise, `MRUN_REMOTE_AGENT` pointing at the freshly built agent. Where a
//! job runs is read from `/proc` ([`locate`]): below `mrun` (home) or below a node's listener.

use super::mrun::{Job, Mrun};
use super::node_files::{mount_namespace_of, processes_in_namespace, MountPlan, NodeFiles};
use super::paths::{agent_path, mrun_path};
use super::process::{kill_tree, Finished, Input, Output, Proc, TIMEOUT};
use super::procfs::{
    children, descendants, ns_pids, process_state, status_field, tracer_pid, wait_until,
};
use super::sandbox::Sandbox;
use std::ffi::{OsStr, OsString};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

const SSHD: &str = "/usr/sbin/sshd";

/// The login name of the invoking user (the user every node logs in).
pub fn login_name() -> String {
    // SAFETY: getuid has no preconditions; getpwuid returns NULL or a pointer to static storage
    // that we copy out of before any other call.
    unsafe {
        let pw = libc::getpwuid(libc::getuid());
        assert!(!pw.is_null(), "no passwd entry for uid {}", libc::getuid());
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

fn check_tools() {
    for tool in [SSHD, "/usr/bin/ssh-keygen"] {
        assert!(
            Path::new(tool).is_file(),
            "{tool} is missing: install openssh-server and openssh-client \
             (scripts/install-deps, or apt-get install -y openssh-server)"
        );
    }
    // sshd refuses to start without its privilege separation directory.
    let run = Path::new("/run/sshd");
    if !run.is_dir() {
        std::fs::create_dir_all(run).unwrap_or_else(|e| panic!("mkdir {}: {e}", run.display()));
        let _ = std::fs::set_permissions(run, std::fs::Permissions::from_mode(0o755));
    }
}

/// `ssh-keygen -q -t ed25519 -N '' -f PATH -C COMMENT`; returns the public key line
/// ("ssh-ed25519 AAAA... COMMENT").
pub fn keygen(path: &Path, comment: &str) -> String {
    let _ = std::fs::remove_file(path);
    let _ = std::fs::remove_file(path.with_extension("pub"));
    let out = Command::new("/usr/bin/ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-C", comment, "-f"])
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen: {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen -f {} failed: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    let pub_path = PathBuf::from(format!("{}.pub", path.display()));
    let text = std::fs::read_to_string(&pub_path)
        .unwrap_or_else(|e| panic!("read {}: {e}", pub_path.display()));
    text.trim().to_string()
}

/// Signs the host key at `key` (its `.pub`) as `how` says; returns the certificate's path.
fn sign_host_key(key: &Path, node: &str, how: &HostCertificate) -> PathBuf {
    let public = PathBuf::from(format!("{}.pub", key.display()));
    let mut cmd = Command::new("/usr/bin/ssh-keygen");
    cmd.arg("-q").arg("-s").arg(&how.ca).args([
        "-h",
        "-I",
        &format!("node-{node}"),
        "-n",
        &how.principals,
    ]);
    if let Some(v) = &how.validity {
        cmd.args(["-V", v]);
    }
    let out = cmd
        .arg(&public)
        .output()
        .unwrap_or_else(|e| panic!("cannot run ssh-keygen -s: {e}"));
    assert!(
        out.status.success(),
        "ssh-keygen -s {} {}: {}",
        how.ca.display(),
        public.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    PathBuf::from(format!("{}-cert.pub", key.display()))
}

/// "TYPE BASE64" of a public key line (without its comment).
fn key_fields(line: &str) -> String {
    line.split_whitespace()
        .take(2)
        .collect::<Vec<_>>()
        .join(" ")
}

/// A port on 127.0.0.1 that was free a moment ago.
fn free_port() -> u16 {
    let l = TcpListener::bind(SocketAddrV4::new(Ipv4Addr::LOCALHOST, 0)).expect("bind 127.0.0.1:0");
    l.local_addr().expect("local_addr").port()
}

/// The `HOME` a node's sessions get.
#[derive(Clone, Debug)]
pub enum NodeHome {
    /// `DIR/home`, an empty directory of the node's own.
    Own,
    /// This path, as given (it need not exist, e.g. `/proc/nonexistent`).
    At(PathBuf),
}

/// How a node is set up.
#[derive(Clone, Debug)]
pub struct NodeOptions {
    pub home: NodeHome,
    /// `PATH` of its sessions.
    pub path: String,
    /// Run sshd (and so everything of its sessions) in this cgroup (its `cgroup.procs`).
    pub cgroup_procs: Option<PathBuf>,
    /// Serve a certificate of its host key too (`HostCertificate`), signed as said.
    pub host_certificate: Option<HostCertificate>,
    /// What it sees of some of home's directories (default: everything, as home does).
    pub files: NodeFiles,
}

/// How a node's host certificate is signed: `ssh-keygen -s CA -h -I node-NAME -n PRINCIPALS
/// [-V VALIDITY]`.
#[derive(Clone, Debug)]
pub struct HostCertificate {
    /// The CA's private key.
    pub ca: PathBuf,
    /// Comma-separated host names it is valid for.
    pub principals: String,
    /// `-V` of ssh-keygen (e.g. "20200101:20200102"), or None for forever.
    pub validity: Option<String>,
}

impl Default for NodeOptions {
    fn default() -> Self {
        NodeOptions {
            home: NodeHome::Own,
            path: "/usr/bin:/bin".to_string(),
            cgroup_procs: None,
            host_certificate: None,
            files: NodeFiles::Shared,
        }
    }
}

/// A process seen on the node, remembered so that it can be killed even after it was
/// reparented away from the node's sshd: pid and start time (against pid reuse).
#[derive(Clone, Copy, Debug)]
struct Seen {
    pid: i32,
    start: u64,
}

fn start_time(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 22 of stat is starttime; after the comm, state is field 3.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// A running OpenSSH server on 127.0.0.1 (see the module comment).
pub struct Node {
    name: String,
    dir: PathBuf,
    home: PathBuf,
    port: u16,
    host_key: String,
    sshd: Option<Proc>,
    config: PathBuf,
    /// Processes of its sessions seen by [`Node::kill_sshd`] (killed again on drop).
    leftovers: Vec<Seen>,
    /// What it sees of home's files.
    files: NodeFiles,
    /// Its own mount namespace (unless it shares home's files), held open so that its identity
    /// cannot be reused while the node exists: what runs in it is the node's, and is killed on
    /// drop.
    namespace: Option<(std::fs::File, (u64, u64))>,
}

impl Node {
    /// Starts a node with the default options under `sb` (its files in `sb/node-NAME/`).
    pub fn start(sb: &Sandbox, name: &str) -> Node {
        Node::start_with(sb, name, NodeOptions::default())
    }

    pub fn start_with(sb: &Sandbox, name: &str, opts: NodeOptions) -> Node {
        check_tools();
        let dir = sb.mkdir(&format!("node-{name}"));
        let files = opts.files.clone();
        // What the node needs to see: its own files, sshd, the binaries under test.
        let keep = [
            dir.clone(),
            PathBuf::from(SSHD),
            PathBuf::from("/run/sshd"),
            mrun_path(),
            agent_path(),
        ];
        let plan = MountPlan::new(&files, name, &dir, &keep);
        let host_key = keygen(&dir.join("host_key"), &format!("node-{name}-host"));
        let authorized = dir.join("authorized_keys");
        std::fs::write(&authorized, b"")
            .unwrap_or_else(|e| panic!("{}: {e}", authorized.display()));
        std::fs::set_permissions(&authorized, std::fs::Permissions::from_mode(0o600))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", authorized.display()));
        let home = match &opts.home {
            NodeHome::Own => {
                let h = dir.join("home");
                std::fs::create_dir_all(&h)
                    .unwrap_or_else(|e| panic!("mkdir {}: {e}", h.display()));
                h
            }
            NodeHome::At(p) => p.clone(),
        };
        let certificate = opts
            .host_certificate
            .as_ref()
            .map(|c| sign_host_key(&dir.join("host_key"), name, c));
        let config = dir.join("sshd_config");
        let log = dir.join("log");
        let mut last_failure = String::new();
        // The port was free when picked; another process may take it before sshd binds it.
        for _attempt in 0..5 {
            let port = free_port();
            let text = format!(
                "ListenAddress 127.0.0.1\n\
                 Port {port}\n\
                 HostKey {hk}\n\
                 AuthorizedKeysFile {ak}\n\
                 PidFile {pid}\n\
                 UsePAM no\n\
                 PasswordAuthentication no\n\
                 KbdInteractiveAuthentication no\n\
                 PermitRootLogin prohibit-password\n\
                 StrictModes no\n\
                 LogLevel ERROR\n\
                 SetEnv HOME={home} PATH={path}\n\
                 {cert}",
                hk = dir.join("host_key").display(),
                ak = authorized.display(),
                pid = dir.join("sshd.pid").display(),
                home = home.display(),
                path = opts.path,
                cert = certificate
                    .as_ref()
                    .map(|c| format!("HostCertificate {}\n", c.display()))
                    .unwrap_or_default(),
            );
            std::fs::write(&config, text).unwrap_or_else(|e| panic!("{}: {e}", config.display()));
            let mut cmd = match &plan {
                Some(plan) => plan.command(Path::new(SSHD)),
                None => Command::new(SSHD),
            };
            cmd.arg("-D").arg("-f").arg(&config).arg("-E").arg(&log);
            if let Some(procs) = &opts.cgroup_procs {
                cmd = super::cgroup::enter(procs, cmd);
            }
            let mut sshd = Proc::spawn(
                format!("sshd of node {name}"),
                cmd,
                Input::Null,
                Output::Null,
            );
            let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
            let up = wait_until(TIMEOUT, || {
                sshd.try_status().is_some()
                    || TcpStream::connect_timeout(&addr.into(), Duration::from_millis(200)).is_ok()
            });
            if up && sshd.try_status().is_none() {
                let namespace = plan.as_ref().map(|_| own_namespace(name, sshd.pid()));
                return Node {
                    name: name.to_string(),
                    dir,
                    home,
                    port,
                    host_key,
                    sshd: Some(sshd),
                    config,
                    leftovers: Vec::new(),
                    files,
                    namespace,
                };
            }
            sshd.kill();
            last_failure = format!(
                "sshd on port {port}: {:?}; stderr: {}; log: {}",
                sshd.try_status(),
                sshd.stderr_text(),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("node {name}: sshd never started: {last_failure}");
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// What it sees of home's files.
    pub fn files(&self) -> &NodeFiles {
        &self.files
    }

    /// `path` as the node sees it, from outside: `/proc/LISTENER/root/PATH`, which resolves in
    /// the node's mount namespace.
    pub fn view(&self, path: &Path) -> PathBuf {
        let pid = self
            .listener_pid()
            .unwrap_or_else(|| panic!("node {}: its sshd was killed", self.name));
        let rel = path.strip_prefix("/").unwrap_or(path);
        PathBuf::from(format!("/proc/{pid}/root")).join(rel)
    }

    /// The identity (device, inode of `/proc/PID/ns/mnt`) of its listener's mount namespace.
    pub fn mount_namespace(&self) -> Option<(u64, u64)> {
        self.listener_pid().and_then(mount_namespace_of)
    }

    /// `nsenter -t LISTENER -m --`: the caller adds a program and its arguments, which then
    /// run in the node's mount namespace (and nothing else of the node's).
    pub fn nsenter(&self) -> Command {
        let pid = self
            .listener_pid()
            .unwrap_or_else(|| panic!("node {}: its sshd was killed", self.name));
        let mut cmd = Command::new("/usr/bin/nsenter");
        cmd.arg("-t").arg(pid.to_string()).arg("-m").arg("--");
        cmd
    }

    /// Live processes in its own mount namespace (none for a node that shares home's files).
    pub fn namespace_processes(&self) -> Vec<i32> {
        self.namespace
            .as_ref()
            .map(|(_, ns)| processes_in_namespace(*ns))
            .unwrap_or_default()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The `HOME` of its sessions.
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn config_path(&self) -> &Path {
        &self.config
    }

    /// Its host public key, "ssh-ed25519 AAAA..." (no comment).
    pub fn host_key(&self) -> String {
        key_fields(&self.host_key)
    }

    /// Its line for a known_hosts file: `[127.0.0.1]:PORT ssh-ed25519 AAAA...`.
    pub fn known_hosts_line(&self) -> String {
        format!("[127.0.0.1]:{} {}", self.port, self.host_key())
    }

    /// Makes `public_keys` (lines "ssh-ed25519 AAAA...") the only keys it lets in.
    pub fn authorize(&self, public_keys: &[&str]) {
        let path = self.dir.join("authorized_keys");
        let mut text = String::new();
        for k in public_keys {
            text.push_str(k.trim());
            text.push('\n');
        }
        std::fs::write(&path, text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    }

    /// The pid of the listening sshd (None once killed).
    pub fn listener_pid(&self) -> Option<i32> {
        self.sshd.as_ref().map(Proc::pid)
    }

    /// Every process below the listener: per-connection sshd processes and what they run.
    pub fn session_processes(&self) -> Vec<i32> {
        self.listener_pid().map(descendants).unwrap_or_default()
    }

    /// Live (not zombie) `mrun-agent` processes below the listener (the agent and its restore
    /// helpers; an installed agent's name is cut to 15 bytes, "mrun-agent-0.1.").
    pub fn agent_processes(&self) -> Vec<i32> {
        self.session_processes()
            .into_iter()
            .filter(|&p| {
                status_field(p, "Name").is_some_and(|n| n.starts_with("mrun-agent"))
                    && !matches!(process_state(p), Some('Z') | Some('X') | None)
            })
            .collect()
    }

    /// What sshd logged (LogLevel ERROR).
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Cuts every SSH connection of the node the hard way: SIGKILLs the listener and every
    /// sshd process below it (not what the sessions run, e.g. `mrun-agent`, which are
    /// remembered and killed when the node is dropped). Afterwards nothing listens on the port.
    pub fn kill_sshd(&mut self) -> Vec<i32> {
        let Some(mut listener) = self.sshd.take() else {
            return Vec::new();
        };
        let lpid = listener.pid();
        let below = descendants(lpid);
        for &p in &below {
            if let Some(start) = start_time(p) {
                self.leftovers.push(Seen { pid: p, start });
            }
        }
        // The listener first, so that it forks nothing more; then the sessions.
        // SAFETY: kill(2) has no memory-safety requirements.
        unsafe { libc::kill(lpid, libc::SIGKILL) };
        let sshds: Vec<i32> = below
            .iter()
            .copied()
            .filter(|&p| status_field(p, "Name").as_deref() == Some("sshd"))
            .collect();
        for &p in &sshds {
            // SAFETY: as above.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
        // Reaped: dropping the Proc now kills nothing (its kill() stops at a known status),
        // so what the sessions ran sees its connection die.
        let _ = listener.wait();
        drop(listener);
        sshds
    }

    /// The processes remembered by [`Node::kill_sshd`] that still run (same pid, same start).
    pub fn surviving_leftovers(&self) -> Vec<i32> {
        self.leftovers
            .iter()
            .filter(|s| {
                start_time(s.pid) == Some(s.start)
                    && !matches!(process_state(s.pid), Some('Z') | None)
            })
            .map(|s| s.pid)
            .collect()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        if let Some(mut sshd) = self.sshd.take() {
            for p in descendants(sshd.pid()) {
                if let Some(start) = start_time(p) {
                    self.leftovers.push(Seen { pid: p, start });
                }
            }
            kill_tree(sshd.pid());
            sshd.kill();
        }
        for s in &self.leftovers {
            if start_time(s.pid) == Some(s.start) {
                kill_tree(s.pid);
            }
        }
        // Whatever its sessions left in its namespace (a process that detached from them).
        if let Some((_held, ns)) = self.namespace.take() {
            let gone = wait_until(Duration::from_secs(10), || {
                let left = processes_in_namespace(ns);
                for &p in &left {
                    // SAFETY: kill(2) has no memory-safety requirements.
                    unsafe { libc::kill(p, libc::SIGKILL) };
                }
                left.is_empty()
            });
            if !gone && !std::thread::panicking() {
                eprintln!(
                    "node {}: processes of its mount namespace survive SIGKILL: {:?}",
                    self.name,
                    processes_in_namespace(ns)
                );
            }
        }
    }
}

/// Opens the mount namespace of the node's sshd (pid `pid`), checking that it is not ours.
fn own_namespace(name: &str, pid: i32) -> (std::fs::File, (u64, u64)) {
    let path = format!("/proc/{pid}/ns/mnt");
    let file =
        std::fs::File::open(&path).unwrap_or_else(|e| panic!("node {name}: open {path}: {e}"));
    let meta = file
        .metadata()
        .unwrap_or_else(|e| panic!("node {name}: stat {path}: {e}"));
    let id = (meta.dev(), meta.ino());
    assert_ne!(
        Some(id),
        mount_namespace_of(std::process::id() as i32),
        "node {name}: its sshd runs in the test's own mount namespace"
    );
    (file, id)
}

/// The client side: a `HOME` for `mrun` with `.ssh/config`, `.ssh/id_ed25519` and
/// `.ssh/known_hosts`.
pub struct ClientHome {
    home: PathBuf,
    public_key: String,
    config: String,
    known_hosts: String,
}

impl ClientHome {
    /// An empty client home in `sb/client-home` with a fresh key pair and no hosts.
    pub fn new(sb: &Sandbox) -> ClientHome {
        let home = sb.mkdir("client-home");
        let ssh = home.join(".ssh");
        std::fs::create_dir_all(&ssh).unwrap_or_else(|e| panic!("mkdir {}: {e}", ssh.display()));
        std::fs::set_permissions(&ssh, std::fs::Permissions::from_mode(0o700))
            .unwrap_or_else(|e| panic!("chmod {}: {e}", ssh.display()));
        let public_key = keygen(&ssh.join("id_ed25519"), "mrun-tests-client");
        let c = ClientHome {
            home,
            public_key,
            config: String::new(),
            known_hosts: String::new(),
        };
        c.write();
        c
    }

    /// A client home with Host blocks for `nodes` (alias, node), their host keys in
    /// known_hosts, and its key authorized on each of them.
    pub fn for_nodes(sb: &Sandbox, nodes: &[(&str, &Node)]) -> ClientHome {
        let mut c = ClientHome::new(sb);
        for (alias, node) in nodes {
            c.add_host(alias, node, &[]);
            c.add_known(&node.known_hosts_line());
            node.authorize(&[c.public_key()]);
        }
        c
    }

    /// The directory `mrun` gets as `HOME`.
    pub fn home(&self) -> &Path {
        &self.home
    }

    pub fn ssh_dir(&self) -> PathBuf {
        self.home.join(".ssh")
    }

    pub fn known_hosts_path(&self) -> PathBuf {
        self.ssh_dir().join("known_hosts")
    }

    /// Our public key, "ssh-ed25519 AAAA... comment".
    pub fn public_key(&self) -> &str {
        &self.public_key
    }

    /// Adds `Host ALIAS` for `node` (HostName 127.0.0.1, its Port, our login name, our key)
    /// followed by `extra` lines (e.g. "StrictHostKeyChecking accept-new").
    pub fn add_host(&mut self, alias: &str, node: &Node, extra: &[&str]) {
        self.config.push_str(&format!(
            "Host {alias}\n    HostName 127.0.0.1\n    Port {}\n    User {}\n    IdentityFile {}\n",
            node.port(),
            login_name(),
            self.ssh_dir().join("id_ed25519").display()
        ));
        for line in extra {
            self.config.push_str(&format!("    {line}\n"));
        }
        self.write();
    }

    /// Adds a line to known_hosts.
    pub fn add_known(&mut self, line: &str) {
        self.known_hosts.push_str(line.trim());
        self.known_hosts.push('\n');
        self.write();
    }

    /// OpenSSH's `ssh ALIAS REMOTE_COMMAND` with this client's files (OpenSSH takes `~` from
    /// the password database, not HOME, so each is named), never asking anything, no
    /// ssh-agent: what runs, runs in the node's sessions as mrun's agent does.
    pub fn ssh(&self, alias: &str, remote_command: &str) -> Command {
        let ssh = self.ssh_dir();
        let mut cmd = Command::new("/usr/bin/ssh");
        cmd.arg("-F")
            .arg(ssh.join("config"))
            .arg("-o")
            .arg(format!(
                "UserKnownHostsFile={}",
                self.known_hosts_path().display()
            ))
            .args([
                "-o",
                "GlobalKnownHostsFile=/dev/null",
                "-o",
                "StrictHostKeyChecking=yes",
                "-o",
                "BatchMode=yes",
                "-o",
                "LogLevel=ERROR",
            ])
            .arg(alias)
            .arg(remote_command)
            .env("HOME", &self.home)
            .env_remove("SSH_AUTH_SOCK");
        cmd
    }

    /// What known_hosts holds now (mrun may have added to it).
    pub fn read_known_hosts(&self) -> String {
        std::fs::read_to_string(self.known_hosts_path()).unwrap_or_default()
    }

    fn write(&self) {
        let ssh = self.ssh_dir();
        let config = ssh.join("config");
        std::fs::write(&config, &self.config)
            .unwrap_or_else(|e| panic!("{}: {e}", config.display()));
        let known = self.known_hosts_path();
        std::fs::write(&known, &self.known_hosts)
            .unwrap_or_else(|e| panic!("{}: {e}", known.display()));
    }
}

/// `mrun --daemon` processes serving `home` (the daemon is keyed to the HOME it was started
/// with, see cli/src/daemon): pid and start time.
pub fn daemons_for(home: &Path) -> Vec<i32> {
    let want = format!("HOME={}", home.display());
    all_pids()
        .into_iter()
        .filter(|&p| {
            let cmdline = std::fs::read(format!("/proc/{p}/cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmdline.split(|&b| b == 0).collect();
            args.len() >= 2
                && args[0].ends_with(b"mrun")
                && args[1] == b"--daemon"
                && !matches!(process_state(p), Some('Z') | Some('X') | None)
                && std::fs::read(format!("/proc/{p}/environ"))
                    .unwrap_or_default()
                    .split(|&b| b == 0)
                    .any(|e| e == want.as_bytes())
        })
        .collect()
}

impl Drop for ClientHome {
    /// The daemon started for this HOME outlives the jobs (it idles for two minutes): it is
    /// the test's, so it ends with the test.
    fn drop(&mut self) {
        for p in daemons_for(&self.home) {
            // SAFETY: kill(2) has no memory-safety requirements.
            unsafe { libc::kill(p, libc::SIGKILL) };
        }
    }
}

/// How `mrun` reaches the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Via {
    /// Through the home daemon (the default: started on demand, keyed to HOME).
    Daemon,
    /// Each deputy connects itself (`MRUN_NO_DAEMON=1`).
    Direct,
}

/// What `mrun` gets as `MRUN_REMOTE_AGENT`.
#[derive(Clone, Debug)]
pub enum RemoteAgent {
    /// The agent built beside `mrun` (`target/release/mrun-agent`), run in place on the node.
    Built,
    /// A command line for the node's shell, as is.
    Command(String),
    /// Removed from the environment: mrun looks for the agent on the node, or installs it.
    Unset,
}

impl RemoteAgent {
    /// The built agent started with `env VARS...` in front of it.
    pub fn built_with_env(vars: &str) -> RemoteAgent {
        RemoteAgent::Command(format!("env {vars} {}", agent_path().display()))
    }
}

/// `mrun` set up to reach SSH nodes: `HOME` = the client home, no ssh-agent, the remote agent
/// command, no accept-new override (unless given in `envs`).
pub struct SshMrun<'a> {
    pub mrun: Mrun<'a>,
    home: PathBuf,
    agent: RemoteAgent,
    via: Via,
    envs: Vec<(String, String)>,
    cgroup_procs: Option<PathBuf>,
}

impl<'a> SshMrun<'a> {
    pub fn new(sb: &'a Sandbox, client: &ClientHome, agent: RemoteAgent) -> SshMrun<'a> {
        SshMrun {
            mrun: Mrun::new(sb),
            home: client.home().to_path_buf(),
            agent,
            via: Via::Daemon,
            envs: Vec::new(),
            cgroup_procs: None,
        }
    }

    /// Reach the nodes through the daemon (default) or directly.
    pub fn via(mut self, via: Via) -> SshMrun<'a> {
        self.via = via;
        self
    }

    /// `mrunctl migrate JOB NODE`, failing the test if it takes longer than `limit` (a refusal
    /// must come well within mrun's own 20 s connection timeout).
    pub fn migrate_within(&self, job: &Job, node: &str, limit: Duration) -> Finished {
        let mut cmd = self.mrun.sandbox().command(super::paths::mrunctl_path());
        cmd.env_remove("XDG_RUNTIME_DIR")
            .args(["migrate", &job.id.to_string(), node]);
        let label = format!("mrunctl migrate {} {node}", job.id);
        let mut proc = Proc::spawn(label.clone(), cmd, Input::Null, Output::Pipe);
        if !wait_until(limit, || proc.try_status().is_some()) {
            proc.kill();
            panic!(
                "{label} did not answer within {limit:?} (killed); its stderr: {:?}; the job's \
                 mrun (pid {}) stderr so far: {:?}",
                proc.stderr_text(),
                job.mrun.pid(),
                job.mrun.stderr_text()
            );
        }
        proc.finish()
    }

    /// Start `mrun` (and so the job, and the daemon it starts) in the cgroup whose
    /// `cgroup.procs` file this is.
    pub fn in_cgroup(mut self, procs: PathBuf) -> SshMrun<'a> {
        self.cgroup_procs = Some(procs);
        self
    }

    /// Adds `KEY=VALUE` to mrun's (and so the job's) environment.
    pub fn env(mut self, key: &str, value: &str) -> SshMrun<'a> {
        self.envs.push((key.to_string(), value.to_string()));
        self
    }

    /// Starts `mrun PROGRAM ARGS...` and waits until the job exists and can be moved (as
    /// [`Mrun::start`] does).
    pub fn start<S: AsRef<OsStr>>(
        &self,
        label: &str,
        program: impl AsRef<OsStr>,
        args: &[S],
        stdin: Input,
        stdout: Output,
    ) -> Job {
        let cmd = self.command(program, args);
        self.mrun.spawn_job(label, cmd, stdin, stdout)
    }

    /// Runs `mrun PROGRAM ARGS...` to its end (for jobs too short to catch while they run).
    pub fn run<S: AsRef<OsStr>>(
        &self,
        label: &str,
        program: impl AsRef<OsStr>,
        args: &[S],
    ) -> Finished {
        let cmd = self.command(program, args);
        Proc::spawn(format!("mrun {label}"), cmd, Input::Null, Output::Pipe).finish()
    }

    /// `mrun PROGRAM ARGS...` as this client, not started.
    pub fn command<S: AsRef<OsStr>>(&self, program: impl AsRef<OsStr>, args: &[S]) -> Command {
        let mut cmd = self.mrun.command(program, args);
        cmd.env("HOME", &self.home)
            .env_remove("SSH_AUTH_SOCK")
            .env_remove("SSH_AGENT_PID")
            .env_remove("MRUN_ACCEPT_NEW_HOST_KEYS")
            .env_remove("MRUN_AGENT_FAULT")
            .env_remove("MRUN_AGENT_PROTOCOL")
            .env_remove("MRUN_NO_DAEMON")
            .env_remove("MRUN_DAEMON_IDLE_SECS")
            .env_remove("MRUN_NODES");
        if self.via == Via::Direct {
            cmd.env("MRUN_NO_DAEMON", "1");
        }
        match &self.agent {
            RemoteAgent::Built => {
                cmd.env("MRUN_REMOTE_AGENT", agent_path());
            }
            RemoteAgent::Command(c) => {
                cmd.env("MRUN_REMOTE_AGENT", c);
            }
            RemoteAgent::Unset => {
                cmd.env_remove("MRUN_REMOTE_AGENT");
            }
        }
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(procs) = &self.cgroup_procs {
            cmd = super::cgroup::enter(procs, cmd);
        }
        cmd
    }
}

/// Where a job runs: at home (below `mrun`) or below the sshd of a node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum At {
    Home,
    Node(String),
}

fn all_pids() -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default()
}

fn parent(pid: i32) -> Option<i32> {
    status_field(pid, "PPid").and_then(|v| v.parse().ok())
}

/// Where `pid` lives: below `mrun` or a node's listener, else None.
fn place_of(pid: i32, mrun: i32, nodes: &[&Node]) -> Option<At> {
    let mut p = pid;
    for _ in 0..64 {
        let up = parent(p)?;
        if up == mrun {
            return Some(At::Home);
        }
        if let Some(n) = nodes.iter().find(|n| n.listener_pid() == Some(up)) {
            return Some(At::Node(n.name().to_string()));
        }
        if up <= 1 {
            return None;
        }
        p = up;
    }
    None
}

/// A live, untraced process that is the job: its own pid (last NSpid entry) is the job id, and
/// it is either the original or a restored copy in a pid namespace of its own.
fn is_job_process(pid: i32, id: u32) -> bool {
    let ns = ns_pids(pid);
    let id = id as i32;
    ns.last() == Some(&id)
        && (ns.len() >= 2 || pid == id)
        && !matches!(process_state(pid), Some('Z') | Some('X') | None)
        && tracer_pid(pid) == Some(0)
}

/// The job process (its pid here) and where it runs, among home and `nodes`. Waits until
/// exactly one live, untraced copy of the job runs at one of them.
pub fn locate(job: &Job, nodes: &[&Node]) -> (i32, At) {
    let mrun = job.mrun_pid();
    let mut found: Vec<(i32, At)> = Vec::new();
    let ok = wait_until(TIMEOUT, || {
        found = all_pids()
            .into_iter()
            .filter(|&p| is_job_process(p, job.id))
            .filter_map(|p| place_of(p, mrun, nodes).map(|at| (p, at)))
            .collect();
        found.len() == 1
    });
    assert!(
        ok,
        "{}: expected exactly one live job process with pid {} at home (below mrun, pid {mrun}) \
         or on the nodes {:?}, found {found:?}; every process with that pid (pid, NSpid, name, \
         state, TracerPid, PPid): {:?}",
        job.label,
        job.id,
        nodes
            .iter()
            .map(|n| (n.name(), n.listener_pid()))
            .collect::<Vec<_>>(),
        all_pids()
            .into_iter()
            .filter(|&p| ns_pids(p).last() == Some(&(job.id as i32)))
            .map(|p| (
                p,
                ns_pids(p),
                status_field(p, "Name"),
                process_state(p),
                tracer_pid(p),
                parent(p)
            ))
            .collect::<Vec<_>>()
    );
    found.remove(0)
}

/// Asserts the job runs at `want` (for a node: a restored copy, in a pid namespace where it
/// has the job id).
pub fn assert_at(job: &Job, nodes: &[&Node], want: At) -> i32 {
    let (pid, at) = locate(job, nodes);
    assert_eq!(
        at, want,
        "{}: the job process (pid {pid} here) runs at {at:?}, expected {want:?}",
        job.label
    );
    if let At::Node(_) = want {
        let ns = ns_pids(pid);
        assert!(
            ns.len() >= 2 && ns.last() == Some(&(job.id as i32)),
            "{}: the job process {pid} on {want:?} has NSpid {ns:?}",
            job.label
        );
    }
    pid
}
