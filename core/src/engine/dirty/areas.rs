//! Which mappings of a process the tracker write-protects, read from `/proc/PID/maps`. The
//! others are "not tracked": the caller treats them as always dirty.

use std::fmt;

use crate::sys::Pid;

/// Areas above this size are not tracked: arming one allocates every page table it spans
/// (2 MiB of them per GiB), however little of it is in use.
pub const MAX_TRACKED: u64 = 64 << 30;

/// `HUGETLBFS_MAGIC` (statfs `f_type` of hugetlbfs).
const HUGETLBFS_MAGIC: i64 = 0x9584_58f6;

/// One line of `/proc/PID/maps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Area<'a> {
    pub start: u64,
    pub end: u64,
    pub perms: &'a str,
    pub path: &'a str,
    /// The whole line: an area is known again by it.
    pub line: &'a str,
}

/// How a tracked area's pages come to hold something.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Anonymous: every page is the process's own.
    Anon,
    /// A private file mapping: a page is the file's until written (copied on write), and may
    /// go back to being the file's (`MADV_DONTNEED`) without a write.
    File,
}

/// Why an area is not tracked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// Shared memory: other processes may write it.
    Shared,
    /// `[vdso]`, `[vvar]` and the like, made by the kernel.
    Kernel,
    /// No access (`PROT_NONE`): nothing can be written there without changing the area.
    NoAccess,
    /// hugetlb memory, or a file whose file system cannot be told: a huge page dropped with
    /// `MADV_DONTNEED` is not reported (tried).
    Hugetlb,
    /// A mapping of a device, written by the device.
    Device,
    /// Larger than [`MAX_TRACKED`].
    TooLarge,
    /// It holds guard regions (`MADV_GUARD_INSTALL`), which write-protection must not touch.
    GuardRegions,
    /// The process registered it with a userfaultfd of its own.
    OtherUserfaultfd,
    /// The kernel refused to register it (the errno).
    Refused(i32),
    /// Registered, but the kernel's scan skips it (a special mapping).
    Skipped,
    /// It changed while being armed; tried again next round.
    Changing,
}

impl fmt::Display for Why {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Why::Shared => write!(f, "shared memory, which other processes may write"),
            Why::Kernel => write!(f, "a mapping the kernel provides"),
            Why::NoAccess => write!(f, "no access (PROT_NONE)"),
            Why::Hugetlb => write!(f, "hugetlb memory, or a file that may be on hugetlbfs"),
            Why::Device => write!(f, "a device mapping"),
            Why::TooLarge => write!(f, "larger than {} GiB", MAX_TRACKED >> 30),
            Why::GuardRegions => write!(f, "it holds guard regions (MADV_GUARD_INSTALL)"),
            Why::OtherUserfaultfd => {
                write!(f, "the process registered it with its own userfaultfd")
            }
            Why::Refused(e) => write!(
                f,
                "userfaultfd refuses it ({})",
                std::io::Error::from_raw_os_error(*e)
            ),
            Why::Skipped => write!(f, "the kernel's page scan skips it"),
            Why::Changing => write!(f, "it changed while being write-protected"),
        }
    }
}

/// The areas listed in `text` (the contents of `/proc/PID/maps`), in address order.
pub(super) fn parse(text: &str) -> Vec<Area<'_>> {
    text.lines().filter_map(parse_line).collect()
}

fn parse_line(line: &str) -> Option<Area<'_>> {
    let mut rest = line;
    let mut field = || {
        let t = rest.trim_start_matches(' ');
        let (f, r) = t.split_once(' ').unwrap_or((t, ""));
        rest = r;
        f
    };
    let (range, perms) = (field(), field());
    let (_offset, _dev, _inode) = (field(), field(), field());
    let (s, e) = range.split_once('-')?;
    Some(Area {
        start: u64::from_str_radix(s, 16).ok()?,
        end: u64::from_str_radix(e, 16).ok()?,
        perms,
        path: rest.trim_start_matches(' '),
        line,
    })
}

/// Whether `a` is tracked, and how its pages come to hold something, as its maps line tells
/// (see also [`maybe_hugetlbfs`], asked before arming).
pub(super) fn classify(a: &Area) -> Result<Kind, Why> {
    let perm = |i: usize, c: u8| a.perms.as_bytes().get(i) == Some(&c);
    if perm(3, b's') {
        return Err(Why::Shared);
    }
    if !perm(0, b'r') && !perm(1, b'w') && !perm(2, b'x') {
        return Err(Why::NoAccess);
    }
    if a.end - a.start > MAX_TRACKED {
        return Err(Why::TooLarge);
    }
    let path = a.path;
    if path.is_empty() || path == "/dev/zero" || path == "/dev/zero (deleted)" {
        return Ok(Kind::Anon);
    }
    if let Some(name) = path.strip_prefix('[') {
        return match name {
            "heap]" | "stack]" => Ok(Kind::Anon),
            n if n.starts_with("anon:") || n.starts_with("stack:") => Ok(Kind::Anon),
            _ => Err(Why::Kernel),
        };
    }
    if path.starts_with("/anon_hugepage") {
        return Err(Why::Hugetlb);
    }
    if path.starts_with("/dev/") && !path.starts_with("/dev/shm/") {
        return Err(Why::Device);
    }
    Ok(Kind::File)
}

/// Whether the file mapped at `path` (as process `pid` sees it) may live on hugetlbfs: it
/// does, or its file system cannot be told (a deleted file such as a hugetlb memfd, a path
/// gone since). Such an area is not tracked: the frozen image carries it, which costs
/// downtime, where a hugetlb page the tracker missed would cost the job's memory.
pub(super) fn maybe_hugetlbfs(pid: Pid, path: &str) -> bool {
    if path.ends_with(" (deleted)") {
        return true;
    }
    let seen = crate::resource::seen_by(pid, std::path::Path::new(path));
    nix::sys::statfs::statfs(&seen)
        .map(|s| s.filesystem_type().0 == HUGETLBFS_MAGIC)
        .unwrap_or(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c1a00000-55d0c1a02000 r--p 00000000 fe:00 5423320                    /usr/bin/cat file
55d0c1a02000-55d0c1a23000 rw-p 00000000 00:00 0                          [heap]
7f0000000000-7f0000100000 rw-s 00000000 00:01 3426                       /dev/zero (deleted)
7f0000100000-7f0000200000 ---p 00000000 00:00 0 
7f0000200000-7f0000300000 rw-p 00000000 00:00 0 
7f0000300000-7f0000400000 rw-p 00000000 00:00 0                          [anon:arena]
7f1000000000-7f2000001000 rw-p 00000000 00:00 0 
7ffe5c70c000-7ffe5c72d000 rw-p 00000000 00:00 0                          [stack]
7ffe5c72d000-7ffe5c731000 r--p 00000000 00:00 0                          [vvar]
7ffe5c731000-7ffe5c733000 r-xp 00000000 00:00 0                          [vdso]
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parses_and_classifies_maps() {
        let areas = parse(MAPS);
        assert_eq!(areas.len(), 11);
        assert_eq!(areas[0].path, "/usr/bin/cat file");
        assert_eq!(areas[0].start, 0x55d0c1a00000);
        assert_eq!(areas[3].path, "");
        let kinds: Vec<_> = areas.iter().map(classify).collect();
        assert_eq!(
            kinds,
            vec![
                Ok(Kind::File),
                Ok(Kind::Anon),
                Err(Why::Shared),
                Err(Why::NoAccess),
                Ok(Kind::Anon),
                Ok(Kind::Anon),
                Err(Why::TooLarge),
                Ok(Kind::Anon),
                Err(Why::Kernel),
                Err(Why::Kernel),
                Err(Why::Kernel),
            ]
        );
    }
}
