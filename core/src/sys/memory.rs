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
