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
pub(crate) const PAGEMAP_SCAN: libc::c_ulong = 0xc060_6610;
/// `PAGE_IS_GUARD` category of `PAGEMAP_SCAN` (Linux 6.14+).
const PAGE_IS_GUARD: u64 = 1 << 8;
/// Regions asked for per `PAGEMAP_SCAN` call.
const SCAN_REGIONS: usize = 256;

/// `struct pm_scan_arg`.
#[repr(C)]
#[derive(Default)]
pub(crate) struct PmScanArg {
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
pub(crate) struct PageRegion {
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

impl Pagemap {
    /// The guard regions (`MADV_GUARD_INSTALL`) in `[start, end)`, as `(start, end)` ranges in
    /// address order, asked with one `PAGEMAP_SCAN` walk. `None` when this kernel cannot tell
    /// (before Linux 6.14: no `PAGEMAP_SCAN` or no guard category); kernels before 6.13 have
    /// no guard regions at all.
    pub fn guard_regions(&self, start: u64, end: u64) -> io::Result<Option<Vec<(u64, u64)>>> {
        use std::os::fd::AsRawFd;
        let mut out: Vec<(u64, u64)> = Vec::new();
        let mut regions = [PageRegion::default(); SCAN_REGIONS];
        let mut at = start;
        while at < end {
            let mut arg = PmScanArg {
                size: std::mem::size_of::<PmScanArg>() as u64,
                start: at,
                end,
                vec: regions.as_mut_ptr() as u64,
                vec_len: SCAN_REGIONS as u64,
                category_mask: PAGE_IS_GUARD,
                return_mask: PAGE_IS_GUARD,
                ..PmScanArg::default()
            };
            // SAFETY: `arg` is a valid pm_scan_arg whose `vec` points at `regions`, which has
            // room for `vec_len` entries and outlives the call.
            let n = unsafe { libc::ioctl(self.file.as_raw_fd(), PAGEMAP_SCAN, &mut arg) };
            if n < 0 {
                let e = last_err();
                return match e.raw_os_error() {
                    Some(libc::ENOTTY) | Some(libc::EINVAL) => Ok(None),
                    _ => Err(e),
                };
            }
            for r in regions.iter().take(n as usize) {
                match out.last_mut() {
                    Some(last) if last.1 == r.start => last.1 = r.end,
                    _ => out.push((r.start, r.end)),
                }
            }
            if (n as usize) < SCAN_REGIONS || arg.walk_end <= at {
                break;
            }
            at = arg.walk_end;
        }
        Ok(Some(out))
    }
}
