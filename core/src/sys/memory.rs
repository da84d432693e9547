//! Reading and writing another process's memory, and its pagemap.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::{last_err, Pid};

/// Copy `buf.len()` bytes at `addr` of `pid` into `buf` (process_vm_readv), falling back to
/// `/proc/PID/mem` (which can read pages the process itself may not, e.g. PROT_NONE).
pub fn read(pid: Pid, addr: u64, buf: &mut [u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: buf.as_mut_ptr().cast(),
        iov_len: buf.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: buf.len(),
    };
    // SAFETY: `local` covers exactly `buf`, which we own mutably; the kernel checks `remote`.
    let n = unsafe { libc::process_vm_readv(pid.as_raw(), &local, 1, &remote, 1, 0) };
    if n >= 0 && n as usize == buf.len() {
        return Ok(());
    }
    let mem = File::open(format!("/proc/{}/mem", pid.as_raw()))?;
    mem.read_exact_at(buf, addr)
}

/// Write `data` at `addr` of `pid` (process_vm_writev), falling back to `/proc/PID/mem`,
/// which writes through read-only private mappings by copy-on-write.
pub fn write(pid: Pid, addr: u64, data: &[u8]) -> io::Result<()> {
    let local = libc::iovec {
        iov_base: data.as_ptr() as *mut libc::c_void,
        iov_len: data.len(),
    };
    let remote = libc::iovec {
        iov_base: addr as *mut libc::c_void,
        iov_len: data.len(),
    };
    // SAFETY: `local` covers exactly `data`, which outlives the call; the kernel only reads it.
    let n = unsafe { libc::process_vm_writev(pid.as_raw(), &local, 1, &remote, 1, 0) };
    if n >= 0 && n as usize == data.len() {
        return Ok(());
    }
    let err = last_err();
    let mem = std::fs::OpenOptions::new()
        .write(true)
        .open(format!("/proc/{}/mem", pid.as_raw()))?;
    mem.write_all_at(data, addr)
        .map_err(|e| if n < 0 { err } else { e })
}

/// Pagemap bits (Documentation/admin-guide/mm/pagemap.rst).
pub const PM_PRESENT: u64 = 1 << 63;
pub const PM_SWAPPED: u64 = 1 << 62;
pub const PM_FILE: u64 = 1 << 61;
/// The page is in a guard region (`MADV_GUARD_INSTALL`; bit shown since Linux 6.14).
pub const PM_GUARD_REGION: u64 = 1 << 58;

/// `PAGEMAP_SCAN` = `_IOWR('f', 16, struct pm_scan_arg)` (Linux 6.7+).
const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// `PAGE_IS_GUARD` category of `PAGEMAP_SCAN` (Linux 6.14+).
const PAGE_IS_GUARD: u64 = 1 << 8;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
struct PmScanArg {
    pub(crate) size: u64,
    pub(crate) flags: u64,
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) walk_end: u64,
    pub(crate) vec: u64,
    pub(crate) vec_len: u64,
    pub(crate) max_pages: u64,
    pub(crate) category_inverted: u64,
    pub(crate) category_mask: u64,
    pub(crate) category_anyof_mask: u64,
    pub(crate) return_mask: u64,
}

/// `struct page_region`.
#[repr(C)]
#[derive(Default, Clone, Copy, Debug, PartialEq, Eq)]
struct PageRegion {
    pub(crate) start: u64,
    pub(crate) end: u64,
    pub(crate) categories: u64,
}

/// One pagemap entry per page of `[start, end)`, read in one go.
pub struct Pagemap {
    file: File,
}

impl Pagemap {
    pub fn open(pid: Pid) -> io::Result<Self> {
        Ok(Pagemap {
            file: File::open(format!("/proc/{}/pagemap", pid.as_raw()))?,
        })
    }

    pub fn entries(&self, start: u64, end: u64, out: &mut Vec<u64>) -> io::Result<()> {
        let pages = ((end - start) / 4096) as usize;
        out.clear();
        out.resize(pages, 0);
        // SAFETY: u64 has no invalid bit patterns; the byte view covers exactly `out`.
        let bytes =
            unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<u8>(), pages * 8) };
        self.file.read_exact_at(bytes, (start / 4096) * 8)
    }
}

/// One `PAGEMAP_SCAN` question (see Documentation/admin-guide/mm/pagemap.rst).
#[derive(Debug, Clone, Copy, Default)]
pub struct Scan {
    pub start: u64,
    pub end: u64,
    /// `PM_SCAN_*` flags.
    pub flags: u64,
    /// Categories a page must have (after `inverted`).
    pub mask: u64,
    /// Categories flipped before matching.
    pub inverted: u64,
    /// Categories reported with each region.
    pub report: u64,
}

/// A run of pages with the same reported categories.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    pub categories: u64,
}

/// Regions asked for per call; a walk that finds more goes on where it stopped.
const REGIONS_PER_CALL: usize = 512;

/// Run `scan` on `pagemap` (an open `/proc/PID/pagemap`) over its whole range, appending the
/// regions to `out` (adjacent regions with the same categories merged). Returns the number of
/// `ioctl` calls it took.
pub fn scan(pagemap: &File, scan: &Scan, out: &mut Vec<Region>) -> io::Result<u32> {
    use std::os::fd::AsRawFd;
    let mut buf = [PageRegion::default(); REGIONS_PER_CALL];
    let mut at = scan.start;
    let mut calls = 0;
    while at < scan.end {
        let mut arg = PmScanArg {
            size: std::mem::size_of::<PmScanArg>() as u64,
            flags: scan.flags,
            start: at,
            end: scan.end,
            vec: buf.as_mut_ptr() as u64,
            vec_len: REGIONS_PER_CALL as u64,
            category_inverted: scan.inverted,
            category_mask: scan.mask,
            return_mask: scan.report,
            ..PmScanArg::default()
        };
        // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `buf`, which has room for
        // `vec_len` regions and outlives the call.
        let n = unsafe { libc::ioctl(pagemap.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
        calls += 1;
        if n < 0 {
            return Err(last_err());
        }
        for r in buf.iter().take(n as usize) {
            match out.last_mut() {
                Some(last) if last.end == r.start && last.categories == r.categories => {
                    last.end = r.end
                }
                _ => out.push(Region {
                    start: r.start,
                    end: r.end,
                    categories: r.categories,
                }),
            }
        }
        // The walk ends early only when the buffer is full.
        if (n as usize) < REGIONS_PER_CALL || arg.walk_end <= at {
            break;
        }
        at = arg.walk_end;
    }
    Ok(calls)
}

impl Pagemap {
    /// The guard regions (`MADV_GUARD_INSTALL`) in `[start, end)`, as `(start, end)` ranges in
    /// address order, asked with one `PAGEMAP_SCAN` walk. `None` when this kernel cannot tell
    /// (before Linux 6.14: no `PAGEMAP_SCAN` or no guard category); kernels before 6.13 have
    /// no guard regions at all.
    pub fn guard_regions(&self, start: u64, end: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
        let guards = Scan {
            start,
            end,
            mask: PAGE_IS_GUARD,
            report: PAGE_IS_GUARD,
            ..Scan::default()
        };
        let mut regions = Vec::new();
        match scan(&self.file, &guards, &mut regions) {
            Ok(_) => Ok(Some(regions.iter().map(|r| (r.start, r.end)).collect())),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTTY) | Some(libc::EINVAL)) => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }
}
