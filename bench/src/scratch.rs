//! The scratch directory on tmpfs that holds the victim, its output, images and baseline files;
//! removed with everything in it when dropped.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct Scratch {
    path: PathBuf,
    /// A tmpfs of our own is mounted on it (unmounted when dropped).
    mounted: bool,
}

impl Scratch {
    /// A fresh `/dev/shm/mrun-bench-XXXXXX`.
    pub fn new() -> anyhow::Result<Scratch> {
        let path = nix::unistd::mkdtemp("/dev/shm/mrun-bench-XXXXXX")
            .context("cannot create a scratch directory in /dev/shm")?;
        Ok(Scratch {
            path,
            mounted: false,
        })
    }

    /// A fresh `/tmp/mrun-bench-XXXXXX` with a tmpfs of its own mounted on it when we may
    /// (root), else on whatever /tmp is: for data a job uses by path, which must not be under
    /// `/dev` (every machine has its own `/dev`: mrun never serves it from home).
    pub fn outside_dev() -> anyhow::Result<Scratch> {
        let path = nix::unistd::mkdtemp("/tmp/mrun-bench-XXXXXX")
            .context("cannot create a scratch directory in /tmp")?;
        let mounted = nix::mount::mount(
            Some("mrun-bench"),
            &path,
            Some("tmpfs"),
            nix::mount::MsFlags::empty(),
            Some("mode=0755"),
        )
        .is_ok();
        Ok(Scratch { path, mounted })
    }

    /// Whether its files live in memory (a tmpfs).
    pub fn in_memory(&self) -> bool {
        self.mounted || self.path.starts_with("/dev/shm")
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// A file name inside the directory.
    pub fn file(&self, name: &str) -> PathBuf {
        self.path.join(name)
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if self.mounted {
            if let Err(e) = nix::mount::umount2(&self.path, nix::mount::MntFlags::MNT_DETACH) {
                eprintln!("mrun-bench: cannot unmount {}: {e}", self.path.display());
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("mrun-bench: cannot remove {}: {e}", self.path.display());
        }
    }
}
