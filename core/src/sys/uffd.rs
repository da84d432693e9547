//! userfaultfd write-protection (asynchronous mode) and the `PAGEMAP_SCAN` ioctl that reads
//! and re-arms it: the kernel half of dirty-page tracking. Thin typed wrappers; which areas to
//! track and what a scan means live in `engine::dirty`.
//!
//! Also a few operations on a private mapping of our own, used only to try the mechanism on
//! this kernel before relying on it (`engine::dirty::probe`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use super::last_err;

/// `userfaultfd(2)` flag: only faults raised in user mode (Linux 5.11+); what an unprivileged
/// process may ask for when `vm.unprivileged_userfaultfd` is 0.
pub const UFFD_USER_MODE_ONLY: u64 = 1;

/// `UFFD_API`, the only protocol version.
const UFFD_API: u64 = 0xaa;
/// `UFFD_FEATURE_WP_UNPOPULATED` (Linux 6.4): write-protecting also marks never-touched pages.
pub const FEATURE_WP_UNPOPULATED: u64 = 1 << 13;
/// `UFFD_FEATURE_WP_ASYNC` (Linux 6.7): the kernel resolves write-protect faults itself and
/// only records them (no message, the faulting thread never waits).
pub const FEATURE_WP_ASYNC: u64 = 1 << 15;

/// `UFFDIO_API` = `_IOWR(0xAA, 0x3F, struct uffdio_api)`.
const UFFDIO_API: libc::c_ulong = 0xc018_aa3f;
/// `UFFDIO_REGISTER` = `_IOWR(0xAA, 0x00, struct uffdio_register)`.
const UFFDIO_REGISTER: libc::c_ulong = 0xc020_aa00;
/// `UFFDIO_UNREGISTER` = `_IOR(0xAA, 0x01, struct uffdio_range)`.
const UFFDIO_UNREGISTER: libc::c_ulong = 0x8010_aa01;
/// `UFFDIO_REGISTER_MODE_WP`.
const REGISTER_MODE_WP: u64 = 1 << 1;

/// `PAGEMAP_SCAN` flag: write-protect the pages reported written, atomically with the report.
pub const PM_SCAN_WP_MATCHING: u64 = 1 << 0;
/// `PAGEMAP_SCAN` flag: fail (`EPERM`) on an area not registered for asynchronous
/// write-protection instead of skipping it.
pub const PM_SCAN_CHECK_WPASYNC: u64 = 1 << 1;

/// `PAGEMAP_SCAN` page categories (`PAGE_IS_*`).
pub const PAGE_IS_WRITTEN: u64 = 1 << 1;
pub const PAGE_IS_FILE: u64 = 1 << 2;
pub const PAGE_IS_PRESENT: u64 = 1 << 3;
pub const PAGE_IS_SWAPPED: u64 = 1 << 4;

#[repr(C)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

#[repr(C)]
struct UffdioRange {
    start: u64,
    len: u64,
}

#[repr(C)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// A userfaultfd. Its memory is that of the process that created it, whoever holds it now.
pub struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    /// A userfaultfd of this process (`UFFD_USER_MODE_ONLY`, close-on-exec, non-blocking).
    pub fn new_own() -> io::Result<Uffd> {
        let flags = UFFD_USER_MODE_ONLY | (libc::O_CLOEXEC | libc::O_NONBLOCK) as u64;
        // SAFETY: userfaultfd takes one integer.
        let fd = unsafe { libc::syscall(libc::SYS_userfaultfd, flags) };
        if fd < 0 {
            return Err(last_err());
        }
        // SAFETY: userfaultfd returned a new descriptor that nothing else owns.
        Ok(Uffd {
            fd: unsafe { OwnedFd::from_raw_fd(fd as i32) },
        })
    }

    /// A userfaultfd made by another process and copied here (`pidfd_getfd`).
    pub fn from_fd(fd: OwnedFd) -> Uffd {
        Uffd { fd }
    }

    /// `UFFDIO_API` (once per userfaultfd): enable `features`. Returns every feature this
    /// kernel knows (`features` 0 just asks).
    pub fn api(&self, features: u64) -> io::Result<u64> {
        let mut arg = UffdioApi {
            api: UFFD_API,
            features,
            ioctls: 0,
        };
        // SAFETY: `arg` is a valid uffdio_api that outlives the call.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_API, &mut arg) } != 0 {
            return Err(last_err());
        }
        Ok(arg.features)
    }

    /// `UFFDIO_REGISTER` of `[start, end)` for write-protection. The range must be mapped
    /// without holes; it splits the areas it covers only in part.
    pub fn register_wp(&self, start: u64, end: u64) -> io::Result<()> {
        let mut arg = UffdioRegister {
            range: UffdioRange {
                start,
                len: end.saturating_sub(start),
            },
            mode: REGISTER_MODE_WP,
            ioctls: 0,
        };
        // SAFETY: `arg` is a valid uffdio_register that outlives the call.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_REGISTER, &mut arg) } != 0 {
            return Err(last_err());
        }
        Ok(())
    }

    /// `UFFDIO_UNREGISTER` of `[start, end)`: its pages lose their write-protection.
    pub fn unregister(&self, start: u64, end: u64) -> io::Result<()> {
        let arg = UffdioRange {
            start,
            len: end.saturating_sub(start),
        };
        // SAFETY: `arg` is a valid uffdio_range that outlives the call; the kernel only reads it.
        if unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_UNREGISTER, &arg) } != 0 {
            return Err(last_err());
        }
        Ok(())
    }
}

/// A private anonymous mapping of this process, unmapped on drop: the ground on which the
/// probe tries the mechanism.
pub struct OwnMapping {
    addr: u64,
    len: u64,
}

impl OwnMapping {
    /// `len` bytes, readable and writable, at an address the kernel picks.
    pub fn new(len: u64) -> io::Result<OwnMapping> {
        // SAFETY: a fresh anonymous mapping at an address of the kernel's choice touches no
        // existing memory.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len as usize,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err());
        }
        Ok(OwnMapping {
            addr: p as u64,
            len,
        })
    }

    /// `len` bytes starting at a multiple of `align` (a power of two), with the `align`
    /// bytes after them left unmapped (so that the mapping can grow there).
    pub fn aligned(len: u64, align: u64) -> io::Result<OwnMapping> {
        let mut whole = OwnMapping::new(len + 2 * align)?;
        let start = (whole.addr + align - 1) & !(align - 1);
        let head = (whole.addr, start - whole.addr);
        let tail = (start + len, whole.end() - (start + len));
        for (at, n) in [head, tail] {
            // SAFETY: the range lies inside the mapping just made, which nothing else uses.
            if n > 0 && unsafe { libc::munmap(at as *mut libc::c_void, n as usize) } != 0 {
                let e = last_err();
                // What is left of it is unmapped by hand: the freed part may be another's now.
                // SAFETY: the aligned part is still ours.
                unsafe { libc::munmap(start as *mut libc::c_void, len as usize) };
                whole.len = 0;
                return Err(e);
            }
        }
        whole.addr = start;
        whole.len = len;
        Ok(whole)
    }

    pub fn start(&self) -> u64 {
        self.addr
    }

    pub fn end(&self) -> u64 {
        self.addr + self.len
    }

    /// Store `byte` at `offset` (a page of our own mapping, so the write faults as a
    /// process's would).
    pub fn write(&self, offset: u64, byte: u8) {
        if offset < self.len {
            // SAFETY: `offset` is inside our own live, writable mapping.
            unsafe { std::ptr::write_volatile((self.addr + offset) as *mut u8, byte) };
        }
    }

    /// Ask for small pages only (`MADV_NOHUGEPAGE`), so that each page faults on its own.
    pub fn no_huge_pages(&self) {
        // SAFETY: advice on our own mapping; it changes no contents. Failure leaves the
        // kernel's default, which the caller tolerates.
        unsafe {
            libc::madvise(
                self.addr as *mut libc::c_void,
                self.len as usize,
                libc::MADV_NOHUGEPAGE,
            )
        };
    }

    /// `madvise(MADV_DONTNEED)` on `[offset, offset + len)`: those pages read as zero again.
    pub fn drop_pages(&self, offset: u64, len: u64) -> io::Result<()> {
        if offset + len > self.len {
            return Err(io::Error::from_raw_os_error(libc::EINVAL));
        }
        // SAFETY: the range lies inside our own mapping, whose contents nothing else uses.
        let r = unsafe {
            libc::madvise(
                (self.addr + offset) as *mut libc::c_void,
                len as usize,
                libc::MADV_DONTNEED,
            )
        };
        if r != 0 {
            return Err(last_err());
        }
        Ok(())
    }

    /// Grow the mapping in place to `len` bytes (`mremap` without moving it).
    pub fn grow(&mut self, len: u64) -> io::Result<()> {
        // SAFETY: mremap of our own mapping without MREMAP_MAYMOVE: it grows in place over
        // free addresses or fails, never touching another mapping.
        let p = unsafe {
            libc::mremap(
                self.addr as *mut libc::c_void,
                self.len as usize,
                len as usize,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(last_err());
        }
        self.len = len;
        Ok(())
    }
}

impl Drop for OwnMapping {
    fn drop(&mut self) {
        if self.len > 0 {
            // SAFETY: our own mapping, unmapped once; nothing refers to it any more.
            unsafe { libc::munmap(self.addr as *mut libc::c_void, self.len as usize) };
        }
    }
}
