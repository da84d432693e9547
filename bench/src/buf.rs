//! Page-aligned buffers for the baseline, laid out as a process's memory is: the kernel copies
//! measurably slower to and from a destination that is not cache-line aligned (a plain
//! `Vec<u8>` of gigabytes starts 16 bytes into its mapping).

const PAGE: usize = 4096;

/// `len` zeroed bytes starting on a page boundary, never touched until written (a large
/// zeroed allocation is a fresh mapping, as the memory a restore fills is).
pub struct PageBuf {
    vec: Vec<u8>,
    start: usize,
    len: usize,
}

impl PageBuf {
    pub fn zeroed(len: usize) -> PageBuf {
        let vec = vec![0u8; len + PAGE];
        let start = vec.as_ptr().align_offset(PAGE).min(PAGE);
        PageBuf { vec, start, len }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.vec[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.vec[self.start..self.start + self.len]
    }
}
