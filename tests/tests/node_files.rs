//! The harness behind `home_files.rs` (issue 12): SSH nodes that do not see home's files
//! (`common/node_files.rs`, `NodeOptions::files`). These tests check the harness, not mrun:
//! that each view really is what the node sees, from outside (`/proc/LISTENER/root/DIR`),
//! through `nsenter` into the node's mount namespace and through an OpenSSH session of the
//! node (where mrun's agent and the jobs it restores run); that home sees nothing of it; that
//! the node's own files and the binaries stay visible, so mrun still moves a job there whose
//! files the node does see; and that the node's processes end with the test, including one
//! that detached from its session.
//!
//! Runs as root (sshd logs the user in, and the nodes mount tmpfs in their namespaces).

mod common;

use common::*;
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// Node `name` with `files`, and a client home that knows it and may log in to it.
fn node_with(sb: &Sandbox, name: &str, files: NodeFiles) -> (Node, ClientHome) {
    let node = Node::start_with(
        sb,
        name,
        NodeOptions {
            files,
            ..NodeOptions::default()
        },
    );
    // authorized_keys is written after sshd started: a login proves the node sees its own
    // files as they change, not a copy.
    let client = ClientHome::for_nodes(sb, &[(name, &node)]);
    (node, client)
}

fn write(path: &Path, data: &[u8]) {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    }
    std::fs::write(path, data).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

/// A data directory `sb/REL` holding a few files, a subdirectory, an empty file and a symlink,
/// with old times and assorted modes.
fn data_dir(sb: &Sandbox, rel: &str) -> PathBuf {
    let dir = sb.mkdir(rel);
    write(&dir.join("big.txt"), &read(&text_file(2 * MIB)));
    write(&dir.join("empty.txt"), b"");
    write(&dir.join("sub/small.txt"), b"home's small file\n");
    write(&dir.join("sub/deeper/x.bin"), &[0u8, 1, 2, 3, 255]);
    std::os::unix::fs::symlink("big.txt", dir.join("link")).expect("symlink");
    std::fs::set_permissions(
        dir.join("sub/small.txt"),
        std::fs::Permissions::from_mode(0o640),
    )
    .expect("chmod");
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_600_000_000);
    for f in ["big.txt", "empty.txt", "sub/small.txt", "sub/deeper/x.bin"] {
        std::fs::File::open(dir.join(f))
            .and_then(|h| h.set_modified(old))
            .unwrap_or_else(|e| panic!("set the mtime of {f}: {e}"));
    }
    dir
}

/// What a tree holds: relative path -> (kind, mode, mtime, bytes or link target).
type Tree = BTreeMap<PathBuf, (char, u32, i64, Vec<u8>)>;

fn tree(root: &Path) -> Tree {
    fn walk(root: &Path, dir: &Path, out: &mut Tree) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
            .flatten()
            .collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let p = e.path();
            let rel = p.strip_prefix(root).expect("below the root").to_path_buf();
            let m = std::fs::symlink_metadata(&p).expect("lstat");
            let (kind, data) = if m.is_dir() {
                walk(root, &p, out);
                ('d', Vec::new())
            } else if m.file_type().is_symlink() {
                let target = std::fs::read_link(&p).expect("readlink");
                ('l', target.into_os_string().into_encoded_bytes())
            } else {
                ('f', read(&p))
            };
            out.insert(rel, (kind, m.mode() & 0o7777, m.mtime(), data));
        }
    }
    let mut out = Tree::new();
    walk(root, root, &mut out);
    out
}

/// Runs `cmd` to its end, asserting success; its stdout.
fn output_of(label: &str, cmd: Command) -> String {
    let done = Proc::spawn(label, cmd, Input::Null, Output::Pipe).finish();
    done.assert_success();
    done.stdout_text()
}

/// `sh -c SCRIPT` in a session of the node.
fn on_node(client: &ClientHome, node: &str, script: &str) -> String {
    output_of(&format!("ssh {node} {script:?}"), client.ssh(node, script))
}

/// `sh -c SCRIPT` in the node's mount namespace, entered with nsenter.
fn in_namespace(node: &Node, script: &str) -> String {
    let mut cmd = node.nsenter();
    cmd.args(["/bin/sh", "-c", script]);
    output_of(&format!("nsenter into {}: {script:?}", node.name()), cmd)
}

/// `sh -c SCRIPT` at home.
fn at_home(script: &str) -> String {
    let mut cmd = Command::new("/bin/sh");
    cmd.args(["-c", script]);
    output_of(&format!("at home: {script:?}"), cmd)
}

/// The file system type of `path` (statfs f_type).
fn fs_type(path: &Path) -> i64 {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).expect("no NUL");
    // SAFETY: statfs writes one struct statfs into the zeroed buffer we own.
    unsafe {
        let mut buf: libc::statfs = std::mem::zeroed();
        assert_eq!(
            libc::statfs(c.as_ptr(), &mut buf),
            0,
            "statfs {}: {}",
            path.display(),
            std::io::Error::last_os_error()
        );
        buf.f_type as i64
    }
}

const TMPFS_MAGIC: i64 = 0x0102_1994;

/// Whether this process's mount table has a mount at `path` (it must not: a node's mounts
/// stay in its own namespace).
fn mounted_at_home(path: &Path) -> bool {
    let table = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    let want = path.display().to_string();
    table
        .lines()
        .any(|l| l.split_whitespace().nth(4) == Some(want.as_str()))
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

// ---------------------------------------------------------------------------------------------
// Each view
// ---------------------------------------------------------------------------------------------

/// The default: the node shares home's mount namespace and sees home's files.
#[test]
fn shared_node_sees_home_files() {
    let sb = Sandbox::new("files-shared");
    let work = data_dir(&sb, "work");
    let (a, client) = node_with(&sb, "a", NodeFiles::Shared);
    assert_eq!(a.files(), &NodeFiles::Shared);
    assert_eq!(
        a.mount_namespace(),
        common_namespace(),
        "a shared node runs in home's mount namespace"
    );
    assert_eq!(tree(&a.view(&work)), tree(&work));
    let seen = on_node(
        &client,
        "a",
        &format!("cat {}/sub/small.txt", work.display()),
    );
    assert_eq!(seen, "home's small file\n");
    assert!(a.namespace_processes().is_empty());
}

fn common_namespace() -> Option<(u64, u64)> {
    let m = std::fs::metadata("/proc/self/ns/mnt").ok()?;
    Some((m.dev(), m.ino()))
}

/// `Hidden`: the directory is an empty tmpfs on the node (same mode and owner), seen so from
/// outside, through nsenter and through ssh; home keeps its files and has no such mount; what
/// the node writes there stays on the node.
#[test]
fn hidden_directory_is_empty_on_the_node() {
    let sb = Sandbox::new("files-hidden");
    let work = data_dir(&sb, "work");
    let before = tree(&work);
    let (a, client) = node_with(&sb, "a", NodeFiles::Hidden(vec![work.clone()]));
    let w = work.display();

    let seen = a.view(&work);
    assert_eq!(names(&seen), Vec::<String>::new(), "{} on node a", w);
    assert_eq!(fs_type(&seen), TMPFS_MAGIC, "{} on node a is no tmpfs", w);
    let (home_meta, node_meta) = (
        std::fs::metadata(&work).expect("stat"),
        std::fs::metadata(&seen).expect("stat"),
    );
    assert_eq!(
        (node_meta.mode(), node_meta.uid(), node_meta.gid()),
        (home_meta.mode(), home_meta.uid(), home_meta.gid()),
        "the node's {w} has another mode or owner than home's"
    );
    assert_ne!(node_meta.dev(), home_meta.dev());

    assert_eq!(
        on_node(
            &client,
            "a",
            &format!("ls -A {w}; stat -f -c %T {w}; echo end")
        ),
        "tmpfs\nend\n"
    );
    assert_eq!(
        in_namespace(&a, &format!("ls -A {w}; echo end")),
        "end\n",
        "nsenter into node a"
    );
    // The node's own files, the binaries under test and the client home stay visible.
    let agent = agent_path();
    assert_eq!(
        on_node(
            &client,
            "a",
            &format!(
                "test -x {} && test -f {}/sshd_config && test -d {} && echo visible",
                agent.display(),
                a.dir().display(),
                client.home().display()
            )
        ),
        "visible\n"
    );

    // What the node writes there stays there.
    on_node(&client, "a", &format!("echo from-node > {w}/new.txt"));
    assert_eq!(read(&seen.join("new.txt")), b"from-node\n");
    assert!(
        !work.join("new.txt").exists(),
        "node a's write reached home"
    );

    // Home: its files, no mount at the directory, nothing else at all.
    assert!(!mounted_at_home(&work), "node a's tmpfs shows at home");
    assert_eq!(fs_type(&work), fs_type(sb.dir()));
    assert_eq!(tree(&work), before, "home's {w} changed");
    assert_eq!(
        at_home(&format!("cat {w}/sub/small.txt")),
        "home's small file\n"
    );
}

/// `Different`: the same names, modes, owners and times, other bytes of another length in
/// every regular file; symlinks as at home; later changes at home do not reach the node.
#[test]
fn different_directory_has_other_bytes_under_the_same_names() {
    let sb = Sandbox::new("files-different");
    let work = data_dir(&sb, "work");
    let home = tree(&work);
    let (b, client) = node_with(&sb, "b", NodeFiles::Different(vec![work.clone()]));
    let w = work.display();

    let seen = b.view(&work);
    assert_eq!(fs_type(&seen), TMPFS_MAGIC, "{w} on node b is no tmpfs");
    let node = tree(&seen);
    assert_eq!(
        node.keys().collect::<Vec<_>>(),
        home.keys().collect::<Vec<_>>(),
        "node b has other names in {w}"
    );
    for (rel, (kind, mode, mtime, data)) in &home {
        let (nkind, nmode, nmtime, ndata) = &node[rel];
        assert_eq!(
            (nkind, nmode),
            (kind, mode),
            "{}: kind or mode",
            rel.display()
        );
        match kind {
            'f' => {
                assert_eq!(nmtime, mtime, "{}: mtime", rel.display());
                assert_ne!(ndata.len(), data.len(), "{}: same length", rel.display());
                assert_eq!(
                    ndata,
                    different_content("b", rel, data.len() as u64).as_bytes(),
                    "{}",
                    rel.display()
                );
            }
            'l' => assert_eq!(ndata, data, "{}: symlink target", rel.display()),
            _ => {}
        }
    }

    // A program on the node reads the node's bytes, so its output would be wrong.
    let sums = format!(
        "cd {w} && sha256sum big.txt sub/small.txt link && gzip -9 -n -c big.txt | sha256sum"
    );
    let (there, here) = (on_node(&client, "b", &sums), at_home(&sums));
    assert_eq!(there.lines().count(), 4);
    for (t, h) in there.lines().zip(here.lines()) {
        assert_ne!(t, h, "node b and home agree");
    }
    assert_eq!(in_namespace(&b, &sums), there);

    // Taken when the node started: a file made at home afterwards is not there.
    write(
        &work.join("later.txt"),
        b"made at home after the node started\n",
    );
    assert!(!seen.join("later.txt").exists());
    assert!(!mounted_at_home(&work));
    assert_eq!(fs_type(&work), fs_type(sb.dir()));
}

/// `Missing`: the directory does not exist on the node (its parent is an empty tmpfs there).
#[test]
fn missing_directory_does_not_exist_on_the_node() {
    let sb = Sandbox::new("files-missing");
    let work = data_dir(&sb, "nest/work");
    let nest = sb.path("nest");
    let before = tree(&nest);
    let (a, client) = node_with(&sb, "a", NodeFiles::Missing(vec![work.clone()]));
    let (w, n) = (work.display(), nest.display());

    assert!(
        !a.view(&work).exists(),
        "{w} exists on node a: {:?}",
        std::fs::symlink_metadata(a.view(&work))
    );
    assert_eq!(names(&a.view(&nest)), Vec::<String>::new());
    assert_eq!(fs_type(&a.view(&nest)), TMPFS_MAGIC);
    let probe = format!("if cd {w} 2>/dev/null; then echo there; else echo missing; fi; ls -A {n}");
    assert_eq!(on_node(&client, "a", &probe), "missing\n");
    assert_eq!(in_namespace(&a, &probe), "missing\n");
    assert_eq!(at_home(&probe), "there\nwork\n");
    // The sandbox beside the parent is untouched on the node.
    assert!(a.view(&a.dir().join("sshd_config")).is_file());
    assert!(!mounted_at_home(&nest));
    assert_eq!(tree(&nest), before);
}

/// Several directories at once, each with its own tmpfs.
#[test]
fn hidden_several_directories() {
    let sb = Sandbox::new("files-hidden-two");
    let one = data_dir(&sb, "one");
    let two = data_dir(&sb, "two");
    let (a, _client) = node_with(&sb, "a", NodeFiles::Hidden(vec![one.clone(), two.clone()]));
    for d in [&one, &two] {
        assert_eq!(names(&a.view(d)), Vec::<String>::new());
        assert_eq!(fs_type(&a.view(d)), TMPFS_MAGIC);
        assert!(!names(d).is_empty());
    }
}

/// A directory the node needs (here the sandbox, which holds the node's own files) cannot be
/// hidden: the harness says so instead of starting a node that cannot log anyone in.
#[test]
#[should_panic(expected = "which the node needs")]
fn hiding_the_nodes_own_files_is_refused() {
    let sb = Sandbox::new("files-refused-hide");
    let _ = Node::start_with(
        &sb,
        "a",
        NodeOptions {
            files: NodeFiles::Hidden(vec![sb.dir().to_path_buf()]),
            ..NodeOptions::default()
        },
    );
}

/// `Missing` of a directory whose parent holds other things is refused (they would vanish on
/// the node too).
#[test]
#[should_panic(expected = "give the directory a parent of its own")]
fn missing_needs_a_parent_of_its_own() {
    let sb = Sandbox::new("files-refused-missing");
    let work = sb.mkdir("work");
    let _ = Node::start_with(
        &sb,
        "a",
        NodeOptions {
            files: NodeFiles::Missing(vec![work]),
            ..NodeOptions::default()
        },
    );
}

// ---------------------------------------------------------------------------------------------
// mrun on such a node, and the end of the node
// ---------------------------------------------------------------------------------------------

/// mrun works with a namespaced node as with any other when the job uses nothing hidden (the
/// hopper polls the sandbox, which the node sees): home -> a -> home, same pid, right output.
/// So a failure of `home_files.rs` on such a node is about the hidden files, not the harness.
/// Then a process that detached from its ssh session on the node, and everything else of the
/// node, ends when the node is dropped; the node's tmpfs never showed at home.
#[test]
fn namespaced_node_moves_jobs_and_leaves_nothing_behind() {
    let sb = Sandbox::new("files-ends");
    let work = data_dir(&sb, "work");
    let (a, client) = node_with(&sb, "a", NodeFiles::Hidden(vec![work.clone()]));
    let m = SshMrun::new(&sb, &client, RemoteAgent::Built);
    let mut job = m.start(
        "hopper",
        sb.victim("hopper"),
        &[sb.dir().as_os_str(), OsStr::new("handle")],
        Input::Null,
        Output::Pipe,
    );
    job.mrun.wait_for_stdout("READY\n");
    let id = job.id;
    for (k, node) in [(1, "a"), (2, "home")] {
        m.mrun.migrate_ok(&job, node);
        let want = if node == "home" {
            At::Home
        } else {
            At::Node(node.into())
        };
        assert_at(&job, &[&a], want);
        write_atomically(&sb.path(&format!("step-{k}")), "");
        job.mrun
            .wait_for_stdout(&format!("STEP {k} PID {id} SYSPID {id} TID {id}\n"));
    }
    write_atomically(&sb.path("end"), "exit 0");
    let done = job.finish();
    done.assert_quiet_success("the hopper moved to a namespaced node and back");
    assert!(
        done.stdout_text().ends_with("EXIT 0\n"),
        "{}",
        done.describe()
    );

    // A process that leaves its session (and so the listener's tree) for good.
    on_node(
        &client,
        "a",
        "setsid sleep 300 </dev/null >/dev/null 2>&1 & echo started",
    );
    let mut detached = Vec::new();
    let found = wait_until(TIMEOUT, || {
        detached = a
            .namespace_processes()
            .into_iter()
            .filter(|&p| status_field(p, "Name").as_deref() == Some("sleep"))
            .filter(|&p| !descendants(a.listener_pid().unwrap_or(0)).contains(&p))
            .collect();
        !detached.is_empty()
    });
    assert!(
        found,
        "the detached sleep never showed in node a's namespace"
    );
    let ns = a.mount_namespace().expect("node a's namespace");
    let listener = a.listener_pid().expect("node a's listener");
    drop(a);
    for p in detached.iter().copied().chain([listener]) {
        assert!(
            matches!(process_state(p), None | Some('Z') | Some('X')),
            "pid {p} ({:?}) of node a survives it",
            status_field(p, "Name")
        );
    }
    let left: Vec<i32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|&p| mount_ns(p) == Some(ns))
        .collect();
    assert!(
        left.is_empty(),
        "processes left in node a's namespace: {left:?}"
    );
    assert!(!mounted_at_home(&work));
}

fn mount_ns(pid: i32) -> Option<(u64, u64)> {
    let m = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok()?;
    Some((m.dev(), m.ino()))
}

/// After `kill_sshd` (the node dies), its sessions' processes and what they left end with the
/// node as for any node, and its namespace is empty once it is dropped.
#[test]
fn killed_namespaced_node_leaves_nothing_behind() {
    let sb = Sandbox::new("files-killed");
    let work = data_dir(&sb, "work");
    let (mut a, client) = node_with(&sb, "a", NodeFiles::Different(vec![work.clone()]));
    let mut session = Proc::spawn(
        "ssh a sleep",
        client.ssh("a", "echo up; exec sleep 300"),
        Input::Null,
        Output::Pipe,
    );
    session.wait_for_stdout("up\n");
    on_node(
        &client,
        "a",
        "setsid sleep 301 </dev/null >/dev/null 2>&1 & echo started",
    );
    let ns = a.mount_namespace().expect("node a's namespace");
    let mut inside = Vec::new();
    wait_until(TIMEOUT, || {
        inside = a
            .namespace_processes()
            .into_iter()
            .filter(|&p| status_field(p, "Name").as_deref() == Some("sleep"))
            .collect();
        inside.len() == 2
    });
    assert_eq!(inside.len(), 2, "two sleeps in node a's namespace");
    let killed = a.kill_sshd();
    assert!(!killed.is_empty());
    let _ = session.wait();
    drop(a);
    for p in inside {
        assert!(
            matches!(process_state(p), None | Some('Z') | Some('X')),
            "pid {p} of node a survives it"
        );
    }
    let left: Vec<i32> = std::fs::read_dir("/proc")
        .expect("/proc")
        .flatten()
        .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
        .filter(|&p| mount_ns(p) == Some(ns))
        .collect();
    assert!(
        left.is_empty(),
        "processes left in node a's namespace: {left:?}"
    );
    assert!(!mounted_at_home(&work));
}
