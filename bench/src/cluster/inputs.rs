//! The batch's input: text files generated deterministically into the scratch directory, their
//! reference outputs (plain `gzip -9 -n -c FILE`, made once before anything is timed), and the
//! check that a way left exactly those bytes in every `FILE.gz`.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context};

use mrun_bench::pattern;

/// gzip's arguments in every way: `-k -f` so that gzip writes FILE.gz itself (a regular file
/// is reopened by path after a migration: the node shares this filesystem) and overwrites it;
/// `-n` so that the output holds no name or time and is comparable byte for byte.
pub const GZIP_ARGS: [&str; 4] = ["-9", "-n", "-k", "-f"];

pub struct Inputs {
    pub files: Vec<PathBuf>,
    /// Size of each file.
    pub mib: u64,
    /// The files' paths, one a line (xargs reads it).
    pub list: PathBuf,
    /// `gzip -9 -n -c FILE` of each file, in the same order.
    reference: Vec<Vec<u8>>,
}

impl Inputs {
    /// Writes `count` files of `mib` MiB each into `dir` (each from its own seed), then makes
    /// the reference outputs with every CPU (untimed; it also brings gzip and the files into
    /// the page cache for all ways alike).
    pub fn create(dir: &Path, count: usize, mib: u64) -> anyhow::Result<Inputs> {
        let len = usize::try_from(mib << 20).context("file size too large")?;
        let mut files = Vec::with_capacity(count);
        for i in 0..count {
            let path = dir.join(format!("input-{i:02}.txt"));
            let seed = 0x6d72_756e_0000_0001 + i as u64;
            std::fs::write(&path, pattern::text_seeded(len, seed))
                .with_context(|| format!("cannot write {}", path.display()))?;
            files.push(path);
        }
        let list = dir.join("inputs.list");
        let names: String = files.iter().map(|f| format!("{}\n", f.display())).collect();
        std::fs::write(&list, names).with_context(|| format!("cannot write {}", list.display()))?;
        let reference = reference_outputs(&files)?;
        Ok(Inputs {
            files,
            mib,
            list,
            reference,
        })
    }

    /// Total size of the outputs, in bytes.
    pub fn output_bytes(&self) -> usize {
        self.reference.iter().map(Vec::len).sum()
    }

    /// Removes every `FILE.gz` (none may be left over from the previous way).
    pub fn clear_outputs(&self) -> anyhow::Result<()> {
        for f in &self.files {
            let gz = output_path(f);
            match std::fs::remove_file(&gz) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e).with_context(|| format!("cannot remove {}", gz.display())),
            }
        }
        Ok(())
    }

    /// Fails, naming the files, unless every `FILE.gz` that `way` left equals the reference.
    pub fn check_outputs(&self, way: &str) -> anyhow::Result<()> {
        let mut wrong = Vec::new();
        for (f, want) in self.files.iter().zip(&self.reference) {
            let gz = output_path(f);
            match std::fs::read(&gz) {
                Ok(got) if got == *want => {}
                Ok(got) => wrong.push(format!(
                    "{} ({} bytes, reference {})",
                    gz.display(),
                    got.len(),
                    want.len()
                )),
                Err(e) => wrong.push(format!("{} ({e})", gz.display())),
            }
        }
        if !wrong.is_empty() {
            bail!(
                "{way}: {} of {} outputs differ from plain `gzip -9 -n -c`: {}",
                wrong.len(),
                self.files.len(),
                wrong.join(", ")
            );
        }
        Ok(())
    }
}

fn output_path(input: &Path) -> PathBuf {
    let mut name = input.as_os_str().to_owned();
    name.push(".gz");
    PathBuf::from(name)
}

/// `gzip -9 -n -c FILE > FILE.ref.gz` for every file, as many at once as there are CPUs.
fn reference_outputs(files: &[PathBuf]) -> anyhow::Result<Vec<Vec<u8>>> {
    let at_once = std::thread::available_parallelism().map_or(1, |n| n.get());
    let mut out = Vec::with_capacity(files.len());
    for chunk in files.chunks(at_once) {
        let running: Vec<(PathBuf, Child)> = chunk
            .iter()
            .map(|f| {
                let mut path = f.as_os_str().to_owned();
                path.push(".ref.gz");
                let path = PathBuf::from(path);
                let sink = File::create(&path)
                    .with_context(|| format!("cannot create {}", path.display()))?;
                let child = Command::new("gzip")
                    .args(["-9", "-n", "-c"])
                    .arg(f)
                    .stdin(Stdio::null())
                    .stdout(sink)
                    .spawn()
                    .context("cannot run gzip")?;
                Ok((path, child))
            })
            .collect::<anyhow::Result<_>>()?;
        for (path, mut child) in running {
            let status = child.wait().context("waitpid on gzip")?;
            if !status.success() {
                bail!(
                    "the reference gzip -9 -n -c for {} failed ({status})",
                    path.display()
                );
            }
            out.push(
                std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?,
            );
            std::fs::remove_file(&path)
                .with_context(|| format!("cannot remove {}", path.display()))?;
        }
    }
    Ok(out)
}
