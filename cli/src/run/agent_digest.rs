//! The SHA-256 of our own `mrun-agent`, which names and checks the copy installed on a node.
//! Computed once per process (streamed, off the async threads), not once per connection: the
//! daemon connects to every node at once, and reading the whole agent each time kept one copy
//! of it in memory per node being connected, and the runtime's threads busy hashing.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::Digest;
use tokio::sync::OnceCell;

/// The agent's path, size and change time when hashed, and its digest (hex).
struct Hashed {
    path: PathBuf,
    stamp: (u64, i64, i64),
    hex: String,
}

static CACHE: OnceCell<Hashed> = OnceCell::const_new();

fn stamp(path: &Path) -> Result<(u64, i64, i64)> {
    let m = std::fs::metadata(path).with_context(|| format!("reading {}", path.display()))?;
    Ok((m.size(), m.mtime(), m.mtime_nsec()))
}

fn hash_file(path: &Path) -> Result<String> {
    let mut file =
        std::fs::File::open(path).with_context(|| format!("reading {}", path.display()))?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = std::io::Read::read(&mut file, &mut buf)
            .with_context(|| format!("reading {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(buf.get(..n).unwrap_or_default());
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect())
}

async fn hash(path: &Path) -> Result<Hashed> {
    let owned = path.to_path_buf();
    let (stamp, hex) = tokio::task::spawn_blocking(move || -> Result<_> {
        Ok((stamp(&owned)?, hash_file(&owned)?))
    })
    .await
    .context("hashing the agent")??;
    Ok(Hashed {
        path: path.to_path_buf(),
        stamp,
        hex,
    })
}

/// The digest of the agent at `path` (hex). Hashed again only if it is another file, or the
/// file changed since.
pub async fn of(path: &Path) -> Result<String> {
    let cached = CACHE.get_or_try_init(|| hash(path)).await?;
    if cached.path == path && stamp(path)? == cached.stamp {
        return Ok(cached.hex.clone());
    }
    Ok(hash(path).await?.hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digest_is_the_files_sha256() {
        let dir = std::env::temp_dir().join(format!("mrun-digest-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let path = dir.join("agent");
        std::fs::write(&path, b"abc").expect("write");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let hex = runtime.block_on(of(&path)).expect("digest");
        // SHA-256("abc"), FIPS 180-2's example.
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        std::fs::write(&path, b"abcd").expect("rewrite");
        let again = runtime.block_on(of(&path)).expect("digest");
        assert_ne!(again, hex, "a changed file is hashed again");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
