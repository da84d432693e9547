//! Deterministic, semi-compressible input data for the real programs, cached in the target dir.
//!
//! Lines look like `k0042 73021 lorem ipsum ...`: a skewed key (for awk to aggregate and sort
//! to order), a number, then words from a fixed synthetic vocabulary picked with a skew, so gzip
//! compresses it about 3:1 and the compressors have real work to do. The same size always gives
//! the same bytes; files are generated once and reused by later runs.

use super::paths::scratch_root;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

pub const MIB: usize = 1024 * 1024;

const FORMAT_VERSION: u32 = 1;

static GENERATING: Mutex<()> = Mutex::new(());

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        (self.next() >> 33) % n
    }

    /// Small values much more often than large ones.
    fn skewed(&mut self, n: u64) -> u64 {
        self.below(n) * self.below(n) / n
    }
}

/// A text file of exactly `bytes` bytes (ending in a newline), generated once and cached.
pub fn text_file(bytes: usize) -> PathBuf {
    let dir = scratch_root().join("data");
    let path = dir.join(format!("text-v{FORMAT_VERSION}-{bytes}.txt"));
    let _guard = GENERATING.lock().unwrap_or_else(|e| e.into_inner());
    if std::fs::metadata(&path)
        .map(|m| m.len() == bytes as u64)
        .unwrap_or(false)
    {
        return path;
    }
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("mkdir {}: {e}", dir.display()));
    let tmp = dir.join(format!(
        "text-v{FORMAT_VERSION}-{bytes}.tmp-{}",
        std::process::id()
    ));
    let file = std::fs::File::create(&tmp).unwrap_or_else(|e| panic!("{}: {e}", tmp.display()));
    let mut out = std::io::BufWriter::with_capacity(MIB, file);
    generate(bytes, &mut out).unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    out.into_inner()
        .map_err(|e| e.into_error())
        .and_then(|f| f.sync_all())
        .unwrap_or_else(|e| panic!("writing {}: {e}", tmp.display()));
    std::fs::rename(&tmp, &path).unwrap_or_else(|e| panic!("rename {}: {e}", path.display()));
    // Readable by every user (the unprivileged tests copy it).
    path
}

fn generate(bytes: usize, out: &mut impl Write) -> std::io::Result<()> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let vocabulary: Vec<String> = (0..4096)
        .map(|_| {
            let len = 2 + rng.below(8) as usize;
            (0..len)
                .map(|_| (b'a' + rng.below(26) as u8) as char)
                .collect()
        })
        .collect();
    let mut written = 0usize;
    let mut line = String::with_capacity(256);
    while written < bytes {
        line.clear();
        let key = rng.skewed(2000);
        let value = rng.below(100_000);
        line.push_str(&format!("k{key:04} {value}"));
        let words = 3 + rng.below(10);
        for _ in 0..words {
            line.push(' ');
            line.push_str(&vocabulary[rng.skewed(vocabulary.len() as u64) as usize]);
        }
        line.push('\n');
        let room = bytes - written;
        if line.len() > room {
            // Last line: cut it to fit, still ending in a newline.
            line.truncate(room.saturating_sub(1));
            line.push('\n');
            line.truncate(room);
        }
        out.write_all(line.as_bytes())?;
        written += line.len();
    }
    Ok(())
}
