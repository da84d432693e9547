//! The scratch directory on tmpfs that holds the victim, its output, images and baseline files;
//! removed with everything in it when dropped.

use std::path::{Path, PathBuf};

use anyhow::Context;

pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// A fresh `/dev/shm/mrun-bench-XXXXXX`.
    pub fn new() -> anyhow::Result<Scratch> {
        let path = nix::unistd::mkdtemp("/dev/shm/mrun-bench-XXXXXX")
            .context("cannot create a scratch directory in /dev/shm")?;
        Ok(Scratch { path })
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
        if let Err(e) = std::fs::remove_dir_all(&self.path) {
            eprintln!("mrun-bench: cannot remove {}: {e}", self.path.display());
        }
    }
}
