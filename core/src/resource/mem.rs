//! Memory: the mappings of a process and the pages it touched.
//!
//! Capture reads `/proc/PID/maps` and the pagemap, and streams only touched pages: every
//! present or swapped page of private anonymous memory, and the copy-on-written pages of
//! private file mappings (the rest is mapped again from the same file, after checking it is the
//! same file). Apply maps each area at its address and writes the pages into it.

use std::path::Path;
use std::sync::Arc;

use procfs::process::{MMPermissions, MMapPath, Process};

use crate::engine::error::{Context, Result};
use crate::engine::inject::{Call, Injector, Scratch};
use crate::engine::precopy::Sent;
use crate::engine::Refusal;
use crate::image::model::{Backing, SharedFile, SharedObject, Vma};
use crate::image::{ImageWriter, PageSource, PAGE_SIZE};
use crate::ranges::RangeSet;
use crate::sys::{memory, Pid};

const SPECIAL: [&str; 3] = ["[vvar]", "[vvar_vclock]", "[vdso]"];

fn prot_of(p: MMPermissions) -> u32 {
    let mut prot = 0;
    if p.contains(MMPermissions::READ) {
        prot |= libc::PROT_READ;
    }
    if p.contains(MMPermissions::WRITE) {
        prot |= libc::PROT_WRITE;
    }
    if p.contains(MMPermissions::EXECUTE) {
        prot |= libc::PROT_EXEC;
    }
    prot as u32
}

/// The shared memory objects of a job being captured, keyed by the device and inode the
/// kernel shows for their mappings. Each byte of an object travels once: with the first
/// process (in capture order) that maps it.
#[derive(Default)]
pub struct SharedTable {
    pub objects: Vec<SharedObject>,
    keys: Vec<(u64, u64)>,
    /// Per object, the offset ranges some process already carries.
    covered: Vec<RangeSet>,
    /// The address ranges of mapping `(process index, start)` whose pages it carries.
    carry: std::collections::HashMap<(u32, u64), Vec<(u64, u64)>>,
}

impl SharedTable {
    /// The object behind the shared mapping at `start` of process `index`, of object bytes
    /// `[offset, offset + len)`; `file` is the named file that holds it, if any. The part of
    /// the mapping no earlier process carries is this one's to carry.
    fn object(
        &mut self,
        key: (u64, u64),
        (index, start): (u32, u64),
        offset: u64,
        len: u64,
        file: Option<SharedFile>,
    ) -> u32 {
        let end = offset + len;
        let size = end.max(file.as_ref().map_or(0, |f| f.identity.size));
        let object = match self.keys.iter().position(|k| *k == key) {
            Some(i) => {
                if let Some(o) = self.objects.get_mut(i) {
                    o.size = o.size.max(size);
                }
                i
            }
            None => {
                self.keys.push(key);
                self.covered.push(RangeSet::new());
                self.objects.push(SharedObject {
                    size,
                    owner: index,
                    file,
                });
                self.objects.len() - 1
            }
        };
        if let Some(covered) = self.covered.get_mut(object) {
            let fresh = covered.gaps_in(offset, end);
            let ranges = fresh
                .ranges()
                .iter()
                .map(|r| (start + (r.start - offset), start + (r.end - offset)))
                .collect();
            self.carry.insert((index, start), ranges);
            *covered = covered.union(&fresh);
        }
        object as u32
    }

    /// Whether the file of device `dev` (a `st_dev`) and inode `ino` is one of the objects.
    pub fn holds(&self, dev: u64, ino: u64) -> bool {
        let key = (
            (libc::major(dev) as u64) << 32 | libc::minor(dev) as u64,
            ino,
        );
        self.keys.contains(&key)
    }

    /// The address ranges of the shared mapping at `start` of process `index` whose pages it
    /// carries.
    fn carried_by(&self, index: u32, start: u64) -> &[(u64, u64)] {
        self.carry
            .get(&(index, start))
            .map(|v| v.as_slice())
            .unwrap_or(&[])
    }
}

/// The mappings of process `index` (`pid`) of the job, or a refusal naming the first one that
/// cannot be checkpointed. Shared memory objects are noted in `shared`.
pub fn capture_vmas(pid: Pid, index: u32, shared_objects: &mut SharedTable) -> Result<Vec<Vma>> {
    let maps = Process::new(pid.as_raw())?.maps()?;
    let advice = super::madvise::capture_advice(pid)?;
    // User space below [vsyscall] (which is no mapping of the process's own).
    let user: Vec<(u64, u64)> = maps
        .iter()
        .filter(|m| !matches!(m.pathname, MMapPath::Vsyscall))
        .map(|m| m.address)
        .collect();
    let guards = match (user.first(), user.last()) {
        (Some(first), Some(last)) => super::madvise::capture_guards(pid, first.0, last.1)?,
        _ => Vec::new(),
    };
    let mut vmas = Vec::new();
    for m in maps {
        let (start, end) = m.address;
        let shared = m.perms.contains(MMPermissions::SHARED);
        let prot = prot_of(m.perms);
        let backing = match &m.pathname {
            MMapPath::Vsyscall => continue,
            MMapPath::Vdso => Backing::Special {
                name: "[vdso]".into(),
            },
            MMapPath::Vvar => Backing::Special {
                name: "[vvar]".into(),
            },
            MMapPath::Other(name) if name == "vvar_vclock" || name == "[vvar_vclock]" => {
                Backing::Special {
                    name: "[vvar_vclock]".into(),
                }
            }
            MMapPath::Heap | MMapPath::Stack | MMapPath::Anonymous | MMapPath::TStack(_) => {
                if shared {
                    return Err(Refusal::SharedAnonymous { pid, at: start }.into());
                }
                Backing::Anonymous
            }
            MMapPath::Vsys(key) => {
                return Err(Refusal::SysvShm {
                    pid,
                    key: *key as u64,
                }
                .into())
            }
            MMapPath::Path(p) => {
                let text = p.to_string_lossy();
                // No name left (anonymous shared memory shows as a deleted /dev/zero): its
                // contents live only in memory, shared by whoever maps it.
                let nameless = text.ends_with(" (deleted)") || text.starts_with("/memfd:");
                let memory_file = if shared && !nameless {
                    memory_file(&super::seen_by(pid, p), p, m.inode)
                } else {
                    None
                };
                if shared && (nameless || memory_file.is_some()) {
                    let key = ((m.dev.0 as u64) << 32 | m.dev.1 as u64, m.inode);
                    let object = shared_objects.object(
                        key,
                        (index, start),
                        m.offset,
                        end - start,
                        memory_file,
                    );
                    Backing::Shared {
                        object,
                        offset: m.offset,
                    }
                } else if nameless {
                    // The file is gone: carry every page of the mapping instead.
                    Backing::Carried {
                        path: text.into_owned(),
                    }
                } else {
                    file_backing(pid, start, p, m.offset, m.inode, shared)?
                }
            }
            other => {
                return Err(Refusal::UnsupportedMapping {
                    pid,
                    kind: format!("{other:?}"),
                    at: start,
                }
                .into())
            }
        };
        let guards = match backing {
            Backing::Special { .. } => Vec::new(),
            _ => super::madvise::guards_within(&guards, start, end),
        };
        if !guards.is_empty() && matches!(backing, Backing::Shared { .. }) {
            return Err(Refusal::GuardInSharedMemory { pid, at: start }.into());
        }
        vmas.push(Vma {
            start,
            end,
            prot,
            shared,
            grows_down: matches!(m.pathname, MMapPath::Stack),
            advice: advice.get(&start).copied().unwrap_or(0),
            guards,
            backing,
        });
    }
    Ok(vmas)
}

/// The file at `path` if it is the one mapped (`inode`) and lives in a memory file system
/// (tmpfs: `/dev/shm`, POSIX shared memory): its contents are memory, carried like shared
/// anonymous memory, and the file is made again where it does not exist.
fn memory_file(seen: &Path, path: &Path, inode: u64) -> Option<SharedFile> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(seen).ok()?;
    let fs = nix::sys::statfs::statfs(seen).ok()?;
    (meta.ino() == inode && fs.filesystem_type() == nix::sys::statfs::TMPFS_MAGIC).then(|| {
        SharedFile {
            path: path.to_string_lossy().into_owned(),
            mode: meta.mode() & 0o7777,
            identity: super::identity_of(&meta),
        }
    })
}

/// Write the dirty pages of file `path` back to it (a writable shared mapping's bytes live in
/// the file; a node that reads the file over a network file system must find them there).
fn write_back(pid: Pid, path: &Path) -> Result<()> {
    let f = std::fs::File::open(super::seen_by(pid, path))
        .ctx(|| format!("opening {} (mapped shared by pid {pid})", path.display()))?;
    f.sync_data().ctx(|| {
        format!(
            "writing back {} (mapped shared by pid {pid})",
            path.display()
        )
    })
}

/// A file mapping is re-mapped from the file only if the file on disk is the very one mapped;
/// otherwise its pages are carried in the image (as anonymous memory).
fn file_backing(
    pid: Pid,
    start: u64,
    path: &Path,
    offset: u64,
    inode: u64,
    shared: bool,
) -> Result<Backing> {
    match std::fs::metadata(super::seen_by(pid, path)) {
        Ok(meta) if std::os::unix::fs::MetadataExt::ino(&meta) == inode => {
            if shared {
                write_back(pid, path)?;
            }
            Ok(Backing::File {
                path: path.to_string_lossy().into_owned(),
                offset,
                identity: super::identity_of(&meta),
            })
        }
        _ if shared => Err(Refusal::SharedReplacedFile {
            pid,
            at: start,
            path: path.display().to_string(),
        }
        .into()),
        _ => Ok(Backing::Carried {
            path: path.to_string_lossy().into_owned(),
        }),
    }
}

/// Queue the touched pages of `vmas` of process `index` of the job into `out`, whose worker
/// threads read them from the frozen process. With `sent` (what pre-copy left, see
/// [`Sent`]), a page sent ahead and not written since is only named, a page written since is
/// carried, and any other holds nothing and is left out. Returns the number of pages.
pub fn dump_pages<W: std::io::Write>(
    pid: Pid,
    index: u32,
    (shared, sent): (&SharedTable, Option<&Sent>),
    vmas: &[Vma],
    out: &mut ImageWriter<W>,
) -> Result<u64> {
    let mut pages = PageDumper {
        pid,
        index,
        sent,
        pagemap: memory::Pagemap::open(pid).ctx(|| format!("opening /proc/{pid}/pagemap"))?,
        entries: Vec::new(),
        memory: Arc::new(ProcessMemory { pid }),
        out,
    };
    let mut total = 0u64;
    for vma in vmas {
        let wanted: fn(u64) -> bool = match (&vma.backing, vma.shared) {
            // Every page of a shared object, once: the ranges this process carries.
            (Backing::Shared { .. }, _) => {
                for &range in shared.carried_by(index, vma.start) {
                    total += pages.range(range, |_| true, false)?;
                }
                continue;
            }
            (Backing::Special { .. }, _) | (_, true) => continue,
            // Guard regions have no contents: never read (reading one fails with EIO).
            (Backing::Carried { .. }, _) => |e| e & memory::PM_GUARD_REGION == 0,
            (Backing::Anonymous, _) => |e| {
                e & (memory::PM_PRESENT | memory::PM_SWAPPED) != 0
                    && e & memory::PM_GUARD_REGION == 0
            },
            (Backing::File { .. }, _) => |e| {
                ((e & memory::PM_PRESENT != 0 && e & memory::PM_FILE == 0)
                    || e & memory::PM_SWAPPED != 0)
                    && e & memory::PM_GUARD_REGION == 0
            },
        };
        // Pre-copy tracked private memory; an area carried whole (its file will not be
        // there) is read whole, as are shared objects (above).
        let tracked = matches!(vma.backing, Backing::Anonymous | Backing::File { .. });
        // An anonymous area the tracker watched: its sets say it all (a page it never saw
        // written and was never sent holds nothing), no pagemap to read in the freeze.
        let watched = sent.filter(|s| {
            matches!(vma.backing, Backing::Anonymous) && !s.untracked.touches(vma.start, vma.end)
        });
        if watched.is_some() {
            let guards: RangeSet = vma.guards.iter().map(|&(s, e)| s..e).collect();
            total += pages.run(vma.start, vma.end, &guards, true)?;
            continue;
        }
        total += pages.range((vma.start, vma.end), wanted, tracked)?;
    }
    Ok(total)
}

/// A process's memory as the image writer's workers read it.
struct ProcessMemory {
    pid: Pid,
}

impl PageSource for ProcessMemory {
    fn read_pages(&self, addr: u64, buf: &mut [u8]) -> std::io::Result<()> {
        memory::read(self.pid, addr, buf)
    }
}

/// Picks the pages of one process to put into an image.
struct PageDumper<'a, W: std::io::Write> {
    pid: Pid,
    index: u32,
    sent: Option<&'a Sent>,
    pagemap: memory::Pagemap,
    entries: Vec<u64>,
    memory: Arc<dyn PageSource>,
    out: &'a mut ImageWriter<W>,
}

impl<W: std::io::Write> PageDumper<'_, W> {
    /// Queue the runs of pages of `[from, to)` that `wanted` picks (by pagemap entry);
    /// returns how many pages.
    fn range(
        &mut self,
        (from, to): (u64, u64),
        wanted: fn(u64) -> bool,
        tracked: bool,
    ) -> Result<u64> {
        let pid = self.pid;
        self.pagemap
            .entries(from, to, &mut self.entries)
            .ctx(|| format!("reading the pagemap of pid {pid}"))?;
        let entries = std::mem::take(&mut self.entries);
        let mut total = 0u64;
        let mut i = 0;
        while i < entries.len() {
            if !wanted(entries[i]) {
                i += 1;
                continue;
            }
            let mut j = i + 1;
            while j < entries.len() && wanted(entries[j]) {
                j += 1;
            }
            let addr = from + (i * PAGE_SIZE) as u64;
            let end = addr + ((j - i) * PAGE_SIZE) as u64;
            let queued = self.run(addr, end, &RangeSet::new(), tracked);
            match queued {
                Ok(pages) => total += pages,
                Err(e) => {
                    self.entries = entries;
                    return Err(e);
                }
            }
            i = j;
        }
        self.entries = entries;
        Ok(total)
    }
}

impl<W: std::io::Write> PageDumper<'_, W> {
    /// Queue the pages of `[start, end)`: read them, or, after pre-copy, name those sent
    /// and read those written since, outside `guards` (which have no contents). Returns how
    /// many pages.
    fn run(&mut self, start: u64, end: u64, guards: &RangeSet, tracked: bool) -> Result<u64> {
        let index = self.index;
        let tag = |a| crate::image::page_address(index, a);
        let Some(sent) = self.sent.filter(|_| tracked) else {
            self.out
                .read_pages(&self.memory, tag(start), start, (end - start) as usize)?;
            return Ok((end - start) / PAGE_SIZE as u64);
        };
        let named = sent.valid.within(start, end).minus(guards);
        let carried = sent.dirty.within(start, end).minus(&named).minus(guards);
        for r in named.ranges() {
            self.out
                .write_precopied(tag(r.start), (r.end - r.start) as usize)?;
        }
        for r in carried.ranges() {
            let len = (r.end - r.start) as usize;
            self.out
                .read_pages(&self.memory, tag(r.start), r.start, len)?;
        }
        Ok((named.bytes() + carried.bytes()) / PAGE_SIZE as u64)
    }
}

/// The address range a set of special mappings occupies, in image order.
pub fn specials(vmas: &[Vma]) -> Vec<(&str, u64, u64)> {
    vmas.iter()
        .filter_map(|v| match &v.backing {
            Backing::Special { name } => Some((name.as_str(), v.start, v.end)),
            _ => None,
        })
        .collect()
}

pub fn is_special_name(name: &str) -> bool {
    SPECIAL.contains(&name)
}

/// Files opened per injected batch: their table (64 bytes a call) at the scratch area's
/// start, their paths after it.
const OPENS_PER_BATCH: usize = 256;

/// Map every non-special area of the image into the tracee, writable so pages can be filled.
/// Files are opened inside the tracee (paths written to `scratch`), each once, and closed
/// again. Three kinds of batch, one stop each: the opens, the maps, the closes.
pub fn map_vmas(
    inj: &Injector,
    scratch: &Scratch,
    vmas: &[Vma],
    kept: &RangeSet,
    shared_fd: impl Fn(u32) -> Option<i32>,
) -> Result<()> {
    let files = open_files(inj, scratch, vmas)?;
    let fd_of = |path: &str, access: i32| {
        files
            .iter()
            .find(|(p, a, _)| *p == path && *a == access)
            .map(|(_, _, fd)| *fd)
    };
    let mut calls = Vec::with_capacity(vmas.len());
    let mut what = Vec::with_capacity(vmas.len());
    let rw = (libc::PROT_READ | libc::PROT_WRITE) as u32;
    for vma in vmas {
        let len = vma.end - vma.start;
        match &vma.backing {
            Backing::Special { .. } => {}
            Backing::Shared { object, offset } => {
                let Some(fd) = shared_fd(*object) else {
                    return Err(crate::engine::EngineError::Unrestorable(format!(
                        "the image maps shared memory object {object}, which it does not hold"
                    )));
                };
                let flags = libc::MAP_SHARED | libc::MAP_FIXED;
                calls.push(Call::new(
                    libc::SYS_mmap,
                    [
                        vma.start,
                        len,
                        (vma.prot | rw) as u64,
                        flags as u64,
                        fd as u64,
                        *offset,
                    ],
                ));
                what.push("mmap of shared memory".to_owned());
            }
            Backing::Anonymous | Backing::Carried { .. } => {
                let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED;
                if vma.grows_down {
                    flags |= libc::MAP_GROWSDOWN;
                }
                // Around what the process kept from birth (see `ChildPlan::keep`).
                for r in kept.gaps_in(vma.start, vma.end).ranges() {
                    let prot = (vma.prot | rw) as u64;
                    calls.push(Call::new(
                        libc::SYS_mmap,
                        [r.start, r.end - r.start, prot, flags as u64, u64::MAX, 0],
                    ));
                    what.push("mmap of anonymous memory".to_owned());
                }
            }
            Backing::File { path, offset, .. } => {
                let fd = fd_of(path, file_access(vma)).ok_or_else(|| {
                    crate::engine::EngineError::Unrestorable(format!("{path} was not opened"))
                })?;
                let (prot, flags) = if vma.shared {
                    (vma.prot, libc::MAP_SHARED | libc::MAP_FIXED)
                } else {
                    (vma.prot | rw, libc::MAP_PRIVATE | libc::MAP_FIXED)
                };
                calls.push(Call::new(
                    libc::SYS_mmap,
                    [vma.start, len, prot as u64, flags as u64, fd, *offset],
                ));
                what.push(format!("mmap of {path}"));
            }
        }
    }
    let mapped = batches(inj, scratch, &calls, &what);
    let closes: Vec<Call> = files
        .iter()
        .map(|(_, _, fd)| Call::new(libc::SYS_close, [*fd, 0, 0, 0, 0, 0]))
        .collect();
    batches(
        inj,
        scratch,
        &closes,
        &vec!["close".to_owned(); closes.len()],
    )?;
    mapped
}

/// Runs `calls` in batches; the first that failed is named by its `what`.
fn batches(inj: &Injector, scratch: &Scratch, calls: &[Call], what: &[String]) -> Result<()> {
    let name = |i: usize| what.get(i).cloned().unwrap_or_default();
    inj.batch_call_each(name, scratch, 0, calls).map(drop)
}

/// How a file area needs its file open: a writable shared mapping writes to the file.
fn file_access(vma: &Vma) -> i32 {
    if vma.shared && vma.prot & libc::PROT_WRITE as u32 != 0 {
        libc::O_RDWR
    } else {
        libc::O_RDONLY
    }
}

/// Opens, inside the tracee, each file the areas map (once per path and access): `(path,
/// access, fd)`. Paths go to the scratch area after the batch table's room.
fn open_files<'v>(
    inj: &Injector,
    scratch: &Scratch,
    vmas: &'v [Vma],
) -> Result<Vec<(&'v str, i32, u64)>> {
    let mut wanted: Vec<(&str, i32)> = Vec::new();
    for vma in vmas {
        if let Backing::File { path, .. } = &vma.backing {
            let key = (path.as_str(), file_access(vma));
            if !wanted.contains(&key) {
                wanted.push(key);
            }
        }
    }
    let table = (OPENS_PER_BATCH * crate::arch::BATCH_ENTRY_LEN) as u64;
    let mut out = Vec::with_capacity(wanted.len());
    let mut rest = wanted.as_slice();
    while !rest.is_empty() {
        // As many paths as fit after the table (at least one: a path fits on its own).
        let mut at = table;
        let mut calls = Vec::new();
        for (path, access) in rest.iter().take(OPENS_PER_BATCH) {
            if at + path.len() as u64 + 1 > scratch.len && !calls.is_empty() {
                break;
            }
            let p = scratch.write_cstr(inj.pid(), at, path)?;
            at += path.len() as u64 + 1;
            let flags = (access | libc::O_CLOEXEC) as u64;
            calls.push(Call::new(
                libc::SYS_openat,
                [libc::AT_FDCWD as u64, p, flags, 0, 0, 0],
            ));
        }
        let (now, later) = rest.split_at(calls.len());
        let results = inj.batch(scratch, 0, &calls)?;
        for ((path, access), r) in now.iter().zip(results) {
            out.push((*path, *access, r as u64));
            if (-4095..0).contains(&r) {
                // Whatever opened is closed with the process, which the failed restore kills.
                return Err(crate::engine::EngineError::Os {
                    what: format!("open of {path} in pid {}", inj.pid()),
                    source: std::io::Error::from_raw_os_error(-r as i32),
                });
            }
        }
        rest = later;
    }
    Ok(out)
}

/// Give every area its final protection once its pages are in (one batch).
pub fn protect_vmas(inj: &Injector, scratch: &Scratch, vmas: &[Vma]) -> Result<()> {
    let mut calls = Vec::new();
    let mut what = Vec::new();
    for vma in vmas {
        let own_shared = matches!(vma.backing, Backing::Shared { .. });
        if matches!(vma.backing, Backing::Special { .. }) || (vma.shared && !own_shared) {
            continue;
        }
        if vma.prot != (libc::PROT_READ | libc::PROT_WRITE) as u32 {
            let len = vma.end - vma.start;
            calls.push(Call::new(
                libc::SYS_mprotect,
                [vma.start, len, vma.prot as u64, 0, 0, 0],
            ));
            what.push(format!("mprotect of {:#x}-{:#x}", vma.start, vma.end));
        }
    }
    batches(inj, scratch, &calls, &what)
}

/// The shared memory objects of a restore, opened here before the processes are, so each
/// process that maps one inherits it: a memfd for memory with no name; a named file found
/// again at its path when it is the very file (same machine), or created there when the path
/// is free. Their pages are written by the processes that carry them.
pub fn create_shared(
    objects: &[SharedObject],
    same_machine: bool,
) -> Result<(Vec<std::os::fd::OwnedFd>, super::made_files::MadeFiles)> {
    use nix::sys::memfd::{memfd_create, MFdFlags};
    let mut out = Vec::with_capacity(objects.len());
    let mut made = super::made_files::MadeFiles::default();
    for (i, o) in objects.iter().enumerate() {
        let fd = match &o.file {
            None => memfd_create(c"mrun-shared", MFdFlags::MFD_CLOEXEC)
                .ctx(|| format!("creating shared memory object {i}"))?,
            Some(file) => {
                let (fd, created) = open_shared_file(file, same_machine)?;
                if created {
                    made.made(&file.path);
                }
                fd
            }
        };
        let size = nix::sys::stat::fstat(&fd)
            .ctx(|| format!("stat of shared memory object {i}"))?
            .st_size as u64;
        if size < o.size {
            nix::unistd::ftruncate(&fd, o.size as i64)
                .ctx(|| format!("sizing shared memory object {i} to {} bytes", o.size))?;
        }
        out.push(fd);
    }
    Ok((out, made))
}

/// The named file of a shared memory object: the very file on the machine that checkpointed
/// it, or a new one where its path is free (`true`: created here). A different file at the
/// path is not overwritten.
fn open_shared_file(file: &SharedFile, same_machine: bool) -> Result<(std::os::fd::OwnedFd, bool)> {
    use std::os::unix::fs::OpenOptionsExt;
    let path = &file.path;
    let open = |create: bool| {
        let mut o = std::fs::OpenOptions::new();
        o.read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NOFOLLOW);
        if create {
            o.create_new(true).mode(file.mode);
        }
        o.open(path)
    };
    match open(true) {
        Ok(f) => {
            // The mode asked for is filtered by the umask; give the file the one it had.
            let fd = std::os::fd::OwnedFd::from(f);
            nix::sys::stat::fchmod(&fd, nix::sys::stat::Mode::from_bits_truncate(file.mode))
                .ctx(|| format!("chmod of {path}"))?;
            Ok((fd, true))
        }
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            let f = open(false).ctx(|| format!("opening {path}"))?;
            let meta = f.metadata().ctx(|| format!("stat of {path}"))?;
            if !(same_machine && super::same_file(&file.identity, &meta, true, false)) {
                return Err(crate::engine::EngineError::Unrestorable(format!(
                    "{path} already exists here and is not the shared memory file the job \
                     had; remove it or restore elsewhere"
                )));
            }
            Ok((f.into(), false))
        }
        Err(e) => Err(crate::engine::EngineError::Os {
            what: format!("creating {path}"),
            source: e,
        }),
    }
}

/// The shared objects `vmas` map.
pub fn shared_objects_of(vmas: &[Vma]) -> Vec<u32> {
    let mut out: Vec<u32> = vmas
        .iter()
        .filter_map(|v| match v.backing {
            Backing::Shared { object, .. } => Some(object),
            _ => None,
        })
        .collect();
    out.sort_unstable();
    out.dedup();
    out
}
