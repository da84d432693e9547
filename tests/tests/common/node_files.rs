//! What a test node sees of home's files (issue 12: nodes without a shared filesystem).
//!
//! Every node runs on this machine, so by default it sees home's files at the same paths, and a
//! job moved there finds them whether or not mrun serves them. A node set up with
//! [`NodeFiles::Hidden`], [`NodeFiles::Different`] or [`NodeFiles::Missing`] runs its sshd in a
//! mount namespace of its own: `unshare -m --propagation private` (every mount of the copy is
//! made private first, so nothing mounted there reaches home), then tmpfs mounts over the given
//! directories (or their parents), then `exec sshd`. Every session, `mrun-agent` and restored
//! job of the node inherits that namespace, so a job there that read the node's own copy of a
//! file would fail or produce wrong output, and a test cannot pass by reading home's files
//! directly. The node's own files (`sb/node-NAME/`: host key, config, `authorized_keys`), the
//! binaries under test and the client home stay visible: only the given directories change, and
//! the harness refuses a directory that holds any of those.
//!
//! [`NodeFiles::effective`] honours `MRUN_TESTS_NODE_FILES=shared`, with which the tests of
//! `home_files.rs` give every node home's files whatever they ask for (said once on stderr): a
//! check of those tests' own steps against an mrun that does not serve files. The harness
//! itself always does what it is asked (`node_files.rs` checks it).

use std::ffi::OsString;
use std::fs::FileTimes;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;

const UNSHARE: &str = "/usr/bin/unshare";

/// The environment variable that makes every node share home's files (see the module comment).
pub const NODE_FILES_ENV: &str = "MRUN_TESTS_NODE_FILES";

/// What a node (its sshd, and so every session, agent and job restored there) sees of some of
/// home's directories. Each directory must exist at home when the node starts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum NodeFiles {
    /// Everything, as home sees it: the node shares home's mount namespace.
    #[default]
    Shared,
    /// Each directory is empty on the node: a fresh tmpfs (with the directory's mode and owner)
    /// is mounted over it.
    Hidden(Vec<PathBuf>),
    /// Each directory holds other bytes under the same names on the node: a tmpfs mounted over
    /// it holds a copy made when the node starts, in which every regular file holds one line
    /// naming the node and the file, of another length than home's file, with home's mode,
    /// owner and times. Subdirectories and symbolic links are as at home; other special files
    /// (FIFOs, sockets, devices) are left out.
    Different(Vec<PathBuf>),
    /// Each directory does not exist on the node: an empty tmpfs (with the parent's mode and
    /// owner) is mounted over its parent, so the parent's other entries are gone on the node
    /// too. The parent must hold nothing but the directory when the node starts: give it a
    /// parent of its own (`sb.path("nest/work")`, never a directory of the sandbox itself).
    Missing(Vec<PathBuf>),
}

impl NodeFiles {
    /// The directories it is about (none for `Shared`).
    pub fn dirs(&self) -> &[PathBuf] {
        match self {
            NodeFiles::Shared => &[],
            NodeFiles::Hidden(d) | NodeFiles::Different(d) | NodeFiles::Missing(d) => d,
        }
    }

    pub fn is_shared(&self) -> bool {
        matches!(self, NodeFiles::Shared)
    }

    /// What node `node` sees, in words, for failure messages.
    pub fn describe(&self, node: &str) -> String {
        let list = |d: &[PathBuf]| {
            d.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match self {
            NodeFiles::Shared => format!("node {node} sees home's files"),
            NodeFiles::Hidden(d) => format!(
                "node {node} does not see home's {} (an empty tmpfs there)",
                list(d)
            ),
            NodeFiles::Different(d) => format!(
                "node {node} has other bytes under the same names in {} (its own tmpfs there)",
                list(d)
            ),
            NodeFiles::Missing(d) => {
                format!("node {node} has no {} at all", list(d))
            }
        }
    }

    /// This, or `Shared` when `MRUN_TESTS_NODE_FILES=shared` (said once on stderr).
    pub fn effective(&self) -> NodeFiles {
        match std::env::var(NODE_FILES_ENV).as_deref() {
            Ok("shared") if !self.is_shared() => {
                static SAID: Once = Once::new();
                SAID.call_once(|| {
                    eprintln!(
                        "{NODE_FILES_ENV}=shared: every node shares home's files, whatever the \
                         test asked for (a check of the tests' own steps, not of mrun)"
                    )
                });
                NodeFiles::Shared
            }
            Ok("shared") | Err(_) => self.clone(),
            Ok(other) => panic!("{NODE_FILES_ENV}={other:?}: the only value it takes is `shared`"),
        }
    }
}

/// How a node's sshd gets its view: the arguments of the setup script, one mount each.
pub struct MountPlan {
    specs: Vec<OsString>,
}

/// The script `unshare -m` runs in the fresh namespace: each mount as its arguments say, then
/// `exec` of the command after `--`. Arguments, not text: no path is ever quoted.
const SETUP_SCRIPT: &str = r#"set -eu
while [ "$1" != -- ]; do
    what=$1 dir=$2 mode=$3 uid=$4 gid=$5
    shift 5
    /usr/bin/mount -t tmpfs -o "mode=$mode,uid=$uid,gid=$gid" "mrun-test-$what" "$dir"
    if [ "$what" = different ]; then
        /usr/bin/cp -a "$1/." "$dir/"
        shift
    fi
done
shift
exec "$@""#;

impl MountPlan {
    /// The mounts that give node `node` the view `files` says (None for `Shared`). `own` is a
    /// directory of the node's own (the copies of `Different` are made there); `keep` are
    /// paths the node needs (its own files, the binaries under test): no mount may hide one.
    pub fn new(files: &NodeFiles, node: &str, own: &Path, keep: &[PathBuf]) -> Option<MountPlan> {
        if files.is_shared() {
            return None;
        }
        for tool in [UNSHARE, "/usr/bin/mount", "/usr/bin/cp", "/usr/bin/nsenter"] {
            assert!(
                Path::new(tool).is_file(),
                "{tool} is missing: install util-linux and coreutils"
            );
        }
        let mut specs: Vec<OsString> = Vec::new();
        let mount = |specs: &mut Vec<OsString>, what: &str, target: &Path| {
            let meta = std::fs::metadata(target)
                .unwrap_or_else(|e| panic!("node {node}: {}: {e}", target.display()));
            assert!(
                meta.is_dir(),
                "node {node}: {} is not a directory",
                target.display()
            );
            assert!(
                target.is_absolute() && target.parent().is_some(),
                "node {node}: cannot mount over {} (an absolute path below /, please)",
                target.display()
            );
            for k in keep {
                assert!(
                    !k.starts_with(target),
                    "node {node}: a tmpfs over {} would hide {}, which the node needs",
                    target.display(),
                    k.display()
                );
            }
            specs.push(what.into());
            specs.push(target.into());
            specs.push(format!("{:o}", meta.mode() & 0o7777).into());
            specs.push(meta.uid().to_string().into());
            specs.push(meta.gid().to_string().into());
        };
        match files {
            NodeFiles::Shared => return None,
            NodeFiles::Hidden(dirs) => {
                for d in dirs {
                    mount(&mut specs, "hidden", d);
                }
            }
            NodeFiles::Different(dirs) => {
                for (i, d) in dirs.iter().enumerate() {
                    mount(&mut specs, "different", d);
                    let copy = own.join(format!("different-{i}"));
                    let _ = std::fs::remove_dir_all(&copy);
                    different_copy(d, &copy, node, Path::new(""));
                    specs.push(copy.into());
                }
            }
            NodeFiles::Missing(dirs) => {
                for d in dirs {
                    let parent = d
                        .parent()
                        .unwrap_or_else(|| panic!("node {node}: {} has no parent", d.display()));
                    let others: Vec<String> = std::fs::read_dir(parent)
                        .unwrap_or_else(|e| panic!("node {node}: {}: {e}", parent.display()))
                        .flatten()
                        .map(|e| e.file_name())
                        .filter(|n| Some(n.as_os_str()) != d.file_name())
                        .map(|n| n.to_string_lossy().into_owned())
                        .collect();
                    assert!(
                        others.is_empty(),
                        "node {node}: to make {} missing, an empty tmpfs goes over its parent, \
                         which also holds {others:?}: give the directory a parent of its own",
                        d.display()
                    );
                    mount(&mut specs, "missing", parent);
                }
            }
        }
        Some(MountPlan { specs })
    }

    /// `unshare -m --propagation private sh -c SCRIPT sh MOUNTS... -- PROGRAM`: the caller adds
    /// the program's own arguments. unshare and sh exec, so the process is PROGRAM in the end.
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(UNSHARE);
        cmd.args(["--mount", "--propagation", "private", "/bin/sh", "-c"])
            .arg(SETUP_SCRIPT)
            .arg("sh")
            .args(&self.specs)
            .arg("--")
            .arg(program);
        cmd
    }
}

/// The content node `node` has for the file `rel` of `len` bytes at home: one line, of another
/// length than home's.
pub fn different_content(node: &str, rel: &Path, len: u64) -> String {
    let mut text = format!("node {node}'s own {}: not home's bytes\n", rel.display());
    if text.len() as u64 == len {
        text.insert(0, '#');
    }
    text
}

/// Copies the tree `src` to `dst` (which must not exist) with other bytes in every regular file
/// ([`different_content`]), and home's modes, owners and times.
fn different_copy(src: &Path, dst: &Path, node: &str, rel: &Path) {
    let fail = |what: &str, p: &Path, e: std::io::Error| -> ! {
        panic!("node {node}: {what} {}: {e}", p.display())
    };
    std::fs::create_dir_all(dst).unwrap_or_else(|e| fail("mkdir", dst, e));
    let mut entries: Vec<_> = std::fs::read_dir(src)
        .unwrap_or_else(|e| fail("read", src, e))
        .flatten()
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let rel = rel.join(entry.file_name());
        let meta = std::fs::symlink_metadata(&from).unwrap_or_else(|e| fail("stat", &from, e));
        let kind = meta.file_type();
        if kind.is_dir() {
            different_copy(&from, &to, node, &rel);
        } else if kind.is_file() {
            std::fs::write(&to, different_content(node, &rel, meta.len()))
                .unwrap_or_else(|e| fail("write", &to, e));
            same_attributes(&meta, &to);
        } else if kind.is_symlink() {
            let target = std::fs::read_link(&from).unwrap_or_else(|e| fail("readlink", &from, e));
            std::os::unix::fs::symlink(&target, &to).unwrap_or_else(|e| fail("symlink", &to, e));
            std::os::unix::fs::lchown(&to, Some(meta.uid()), Some(meta.gid()))
                .unwrap_or_else(|e| fail("lchown", &to, e));
        }
    }
    let meta = std::fs::metadata(src).unwrap_or_else(|e| fail("stat", src, e));
    same_attributes(&meta, dst);
}

/// Gives `path` the mode, owner, access and modification times of `meta`.
fn same_attributes(meta: &std::fs::Metadata, path: &Path) {
    let fail = |what: &str, e: std::io::Error| -> ! { panic!("{what} {}: {e}", path.display()) };
    std::os::unix::fs::chown(path, Some(meta.uid()), Some(meta.gid()))
        .unwrap_or_else(|e| fail("chown", e));
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(meta.mode() & 0o7777))
        .unwrap_or_else(|e| fail("chmod", e));
    let times = FileTimes::new()
        .set_accessed(meta.accessed().unwrap_or_else(|e| fail("atime of", e)))
        .set_modified(meta.modified().unwrap_or_else(|e| fail("mtime of", e)));
    std::fs::File::open(path)
        .and_then(|f| f.set_times(times))
        .unwrap_or_else(|e| fail("set the times of", e));
}

/// The identity (device, inode) of the mount namespace of `pid`, None if it is gone.
pub fn mount_namespace_of(pid: i32) -> Option<(u64, u64)> {
    let meta = std::fs::metadata(format!("/proc/{pid}/ns/mnt")).ok()?;
    Some((meta.dev(), meta.ino()))
}

/// Live processes in the mount namespace `ns`.
pub fn processes_in_namespace(ns: (u64, u64)) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse::<i32>().ok()))
                .filter(|&p| mount_namespace_of(p) == Some(ns))
                .collect()
        })
        .unwrap_or_default()
}
