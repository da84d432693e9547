//! The restored job's view of home's files on a node: in a mount namespace of its own, the
//! FUSE file system its agent serves (home's whole tree, `/` included) becomes its root, with
//! the node's own `/proc`, `/sys` and `/dev` bound into it. Done by the restore helper before
//! it restores, so everything of the job sees home's paths and nothing else on the node does.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::MetadataExt;

use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Where the FUSE file system is mounted before it becomes the root (inside the private
/// namespace, on a tmpfs of its own: nothing on the node's disk is touched).
const STAGE: &str = "/tmp";

fn os(what: &str) -> impl Fn(nix::errno::Errno) -> io::Error + '_ {
    move |e| io::Error::new(io::Error::from(e).kind(), format!("{what}: {e}"))
}

/// Make home's files, served on `fuse` (a `/dev/fuse` descriptor), the root of this process
/// (and of all it starts). Must run after the user namespace is entered (when unprivileged)
/// and before any thread is started. Returns the device number of the served tree. `fuse`
/// is closed once mounted: a process that holds it would keep the connection alive after the
/// agent that serves it died, and wait for an answer forever.
pub fn enter_home_root(fuse: OwnedFd) -> io::Result<u64> {
    let fuse_fd = fuse.as_raw_fd();
    nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNS)
        .map_err(os("cannot get a mount namespace of its own"))?;
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(os("making the mounts private"))?;
    mount(
        Some("mrun-stage"),
        STAGE,
        Some("tmpfs"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("size=64k,mode=0700"),
    )
    .map_err(os("mounting a private tmpfs"))?;
    let root = format!("{STAGE}/root");
    std::fs::create_dir(&root)?;
    let (uid, gid) = (nix::unistd::getuid(), nix::unistd::getgid());
    let options = format!("fd={fuse_fd},rootmode=40755,user_id={uid},group_id={gid}");
    mount(
        Some("mrun-home"),
        root.as_str(),
        Some("fuse.mrun-home"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(options.as_str()),
    )
    .map_err(os("mounting home's files (FUSE)"))?;
    drop(fuse);
    for own in ["/proc", "/sys", "/dev"] {
        let at = format!("{root}{own}");
        mount(
            Some(own),
            at.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .map_err(|e| {
            io::Error::new(
                io::Error::from(e).kind(),
                format!("binding this node's {own} into home's tree: {e}"),
            )
        })?;
    }
    nix::unistd::chdir(root.as_str()).map_err(os("entering home's tree"))?;
    nix::unistd::pivot_root(".", ".").map_err(os("making home's tree the root"))?;
    umount2(".", MntFlags::MNT_DETACH).map_err(os("leaving the node's root"))?;
    nix::unistd::chdir("/").map_err(os("entering home's root"))?;
    Ok(std::fs::metadata("/")?.dev())
}
