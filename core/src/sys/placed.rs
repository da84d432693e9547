//! Pages placed at their own addresses: anonymous private mappings this process makes at the
//! very addresses a job had them, so that a process forked from here later finds them in
//! place (its page tables copied, the pages shared until written) instead of having each one
//! allocated, zeroed and copied into it. A restore uses this for what pre-copy sent ahead.
//!
//! The mappings are `MADV_DONTFORK` except around the one fork that is to take them
//! ([`PlacedPages::inherit_on_fork`]), and are unmapped when the [`PlacedPages`] is dropped.

use std::io;

use nix::sys::mman::{madvise, mmap_anonymous, munmap, MapFlags, MmapAdvise, ProtFlags};

use crate::ranges::RangeSet;

const PAGE: u64 = 4096;
/// Room left below this process's own stack for it to grow into (beyond its rlimit).
const STACK_MARGIN: u64 = 16 << 20;

/// Address ranges held here.
pub struct PlacedPages {
    ranges: RangeSet,
    /// Where nothing may be held: this process's main stack and the room it may grow into
    /// (read at the first placement: most restores have nothing to place).
    forbidden: Option<(u64, u64)>,
}

impl PlacedPages {
    pub fn new() -> PlacedPages {
        PlacedPages {
            ranges: RangeSet::new(),
            forbidden: None,
        }
    }

    /// The ranges held.
    pub fn ranges(&self) -> &RangeSet {
        &self.ranges
    }

    /// Hold `data` at `addr` (page aligned): map the part not held yet, then copy it in.
    /// False, with nothing changed, where any part of it cannot be mapped at that address
    /// (this process uses it, or it is not page aligned).
    pub fn place(&mut self, addr: u64, data: &[u8]) -> bool {
        let len = data.len() as u64;
        let Some(end) = addr.checked_add(len) else {
            return false;
        };
        let misplaced = addr % PAGE != 0 || len % PAGE != 0 || len == 0;
        let (low, high) = *self
            .forbidden
            .get_or_insert_with(|| own_stack_reach().unwrap_or((0, u64::MAX)));
        if misplaced || (end > low && addr < high) {
            return false;
        }
        let mut mapped = Vec::new();
        for r in self.ranges.gaps_in(addr, end).ranges() {
            if map_fixed(r.start, r.end - r.start).is_err() {
                for r in mapped {
                    unmap(&r);
                }
                return false;
            }
            mapped.push(r.clone());
        }
        for r in mapped {
            self.ranges.insert(r);
        }
        // SAFETY: [addr, end) lies within ranges this struct mapped read-write above or
        // earlier and unmaps only when dropped; nothing else in this process uses them, and
        // `data` is ordinary memory of ours, disjoint from them (they were free until now).
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
        true
    }

    /// The `len` bytes held at `addr`, if all of them are.
    pub fn bytes(&self, addr: u64, len: usize) -> Option<&[u8]> {
        let end = addr.checked_add(len as u64)?;
        self.ranges.covers(addr, end).then(|| {
            // SAFETY: the range is mapped, readable and written only by `place`, which
            // takes `&mut self` and so cannot run while this borrow lives.
            unsafe { std::slice::from_raw_parts(addr as *const u8, len) }
        })
    }

    /// Let the next fork take the held pages (true), or keep them out of forks (false).
    pub fn inherit_on_fork(&self, inherit: bool) -> io::Result<()> {
        let advice = if inherit {
            MmapAdvise::MADV_DOFORK
        } else {
            MmapAdvise::MADV_DONTFORK
        };
        for r in self.ranges.ranges() {
            advise(r.start, r.end - r.start, advice)?;
        }
        Ok(())
    }
}

impl Default for PlacedPages {
    fn default() -> PlacedPages {
        PlacedPages::new()
    }
}

impl Drop for PlacedPages {
    fn drop(&mut self) {
        for r in self.ranges.ranges() {
            unmap(r);
        }
    }
}

/// Map `len` bytes at exactly `addr`, failing if anything is there; kept out of forks.
fn map_fixed(addr: u64, len: u64) -> io::Result<()> {
    let (Some(at), Some(size)) = (
        std::num::NonZeroUsize::new(addr as usize),
        std::num::NonZeroUsize::new(len as usize),
    ) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: MAP_FIXED_NOREPLACE never replaces a mapping of ours; the kernel refuses
    // (EEXIST) where anything is mapped, and an old kernel that ignores the flag is caught
    // below by the address it returns.
    let got = unsafe {
        mmap_anonymous(
            Some(at),
            size,
            ProtFlags::PROT_READ | ProtFlags::PROT_WRITE,
            MapFlags::MAP_PRIVATE | MapFlags::MAP_FIXED_NOREPLACE,
        )
    }?;
    if got.as_ptr() as u64 != addr {
        // SAFETY: this mapping was just made by us and nothing refers to it.
        let _ = unsafe { munmap(got, len as usize) };
        return Err(io::Error::from_raw_os_error(libc::EEXIST));
    }
    advise(addr, len, MmapAdvise::MADV_DONTFORK)
}

fn advise(addr: u64, len: u64, advice: MmapAdvise) -> io::Result<()> {
    let Some(at) = std::ptr::NonNull::new(addr as *mut libc::c_void) else {
        return Err(io::Error::from_raw_os_error(libc::EINVAL));
    };
    // SAFETY: DONTFORK/DOFORK only change how a fork treats the range, which is ours.
    unsafe { madvise(at, len as usize, advice) }.map_err(io::Error::from)
}

fn unmap(r: &std::ops::Range<u64>) {
    if let Some(at) = std::ptr::NonNull::new(r.start as *mut libc::c_void) {
        // SAFETY: the range was mapped by `map_fixed` for this struct; no borrow of it
        // outlives the struct (see `bytes`).
        let _ = unsafe { munmap(at, (r.end - r.start) as usize) };
    }
}

/// Our main stack and what it may grow into: `[its start - rlimit - margin, its end)`.
fn own_stack_reach() -> Option<(u64, u64)> {
    let maps = std::fs::read_to_string("/proc/self/maps").ok()?;
    let line = maps.lines().find(|l| l.ends_with("[stack]"))?;
    let (s, e) = line.split_whitespace().next()?.split_once('-')?;
    let (s, e) = (
        u64::from_str_radix(s, 16).ok()?,
        u64::from_str_radix(e, 16).ok()?,
    );
    let limit = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_STACK)
        .map(|(soft, _)| soft)
        .unwrap_or(u64::MAX)
        .min(1 << 30);
    Some((s.saturating_sub(limit + STACK_MARGIN), e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn holds_pages_at_their_address_and_refuses_taken_ones() {
        let mut held = PlacedPages::new();
        // A free address: map somewhere, note where, unmap, hold there.
        let probe = vec![7u8; 8192];
        let at = probe.as_ptr() as u64;
        // The heap is taken: refused, nothing held.
        assert!(!held.place(at & !(PAGE - 1), &[0u8; 4096]));
        assert!(held.ranges().is_empty());
        let free = free_address(3 * PAGE);
        assert!(held.place(free, &[1u8; 4096]));
        assert!(held.place(free + 2 * PAGE, &[3u8; 4096]));
        assert!(held.place(free, &[9u8; 12288]));
        assert_eq!(held.ranges().ranges().to_vec(), vec![free..free + 3 * PAGE]);
        assert_eq!(held.bytes(free + PAGE, 4096), Some(&[9u8; 4096][..]));
        assert!(held.bytes(free + PAGE, 3 * 4096).is_none());
    }

    fn free_address(len: u64) -> u64 {
        let size = std::num::NonZeroUsize::new(len as usize).expect("a length");
        // SAFETY: a fresh mapping, unmapped at once; only its address is kept.
        unsafe {
            let p = mmap_anonymous(None, size, ProtFlags::PROT_READ, MapFlags::MAP_PRIVATE)
                .expect("mmap");
            munmap(p, len as usize).expect("munmap");
            p.as_ptr() as u64
        }
    }
}
