//! What a restore changed in the file system before it knew it would succeed: files it made
//! (a shared memory file, a listening socket's file), removed again if the restore fails, and
//! files it moved aside to take their place (the stale socket file of the job's own listener),
//! put back if it fails and removed once it succeeds.

use std::io;

/// The file system changes of one restore, undone on drop unless [`MadeFiles::keep`] is called.
#[derive(Default)]
pub struct MadeFiles {
    made: Vec<String>,
    /// `(where it waits, its path)`.
    aside: Vec<(String, String)>,
}

impl MadeFiles {
    /// Note that the restore made the file at `path`.
    pub fn made(&mut self, path: &str) {
        self.made.push(path.to_string());
    }

    pub fn contains(&self, path: &str) -> bool {
        self.made.iter().any(|p| p == path)
    }

    /// Move the file at `path` aside (renamed within its directory, so it stays on its file
    /// system) to let a new one take its place.
    pub fn move_aside(&mut self, path: &str) -> io::Result<()> {
        let (dir, name) = path.rsplit_once('/').unwrap_or((".", path));
        let dir = if dir.is_empty() { "/" } else { dir };
        let aside = format!("{dir}/.{name}.mrun-aside-{}", std::process::id());
        std::fs::rename(path, &aside)?;
        self.aside.push((aside, path.to_string()));
        Ok(())
    }

    /// The restore succeeded: what it made stays, what it moved aside goes.
    pub fn keep(mut self) {
        self.made.clear();
        for (aside, _) in self.aside.drain(..) {
            let _ = std::fs::remove_file(aside);
        }
    }
}

impl Drop for MadeFiles {
    fn drop(&mut self) {
        for path in self.made.iter().rev() {
            let _ = std::fs::remove_file(path);
        }
        for (aside, path) in self.aside.iter().rev() {
            let _ = std::fs::rename(aside, path);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("mrun-made-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        dir
    }

    #[test]
    fn a_failed_restore_puts_everything_back() {
        let dir = scratch("undo");
        let old = dir.join("s.sock").to_string_lossy().into_owned();
        let new = dir.join("new").to_string_lossy().into_owned();
        std::fs::write(&old, "old").expect("write");
        let mut made = MadeFiles::default();
        made.move_aside(&old).expect("move aside");
        assert!(!std::path::Path::new(&old).exists());
        std::fs::write(&old, "replacement").expect("write");
        made.made(&old);
        std::fs::write(&new, "new").expect("write");
        made.made(&new);
        drop(made);
        assert_eq!(std::fs::read_to_string(&old).expect("read"), "old");
        assert!(!std::path::Path::new(&new).exists());
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_successful_restore_keeps_what_it_made() {
        let dir = scratch("keep");
        let path = dir.join("s.sock").to_string_lossy().into_owned();
        std::fs::write(&path, "old").expect("write");
        let mut made = MadeFiles::default();
        made.move_aside(&path).expect("move aside");
        std::fs::write(&path, "new").expect("write");
        made.made(&path);
        made.keep();
        assert_eq!(std::fs::read_to_string(&path).expect("read"), "new");
        assert_eq!(std::fs::read_dir(&dir).expect("list").count(), 1);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
