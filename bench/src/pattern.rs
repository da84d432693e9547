//! The victim's memory contents and checksum, ported from `victim.c` so that the baseline copies
//! exactly the bytes the victim holds. The bench checks this by comparing checksums; a drift
//! between the two files is reported, never silently measured.

use std::fmt;

use clap::ValueEnum;

use crate::buf::PageBuf;

/// What the victim fills its memory with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Contents {
    /// xorshift64* output: incompressible.
    Random,
    /// Words from a 64-word list with a little punctuation: zstd -1 makes about 3.4x of it.
    Text,
}

impl Contents {
    pub fn name(self) -> &'static str {
        match self {
            Contents::Random => "random",
            Contents::Text => "text",
        }
    }
}

impl fmt::Display for Contents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

const WORDS: [&str; 64] = [
    "the",
    "of",
    "and",
    "to",
    "in",
    "a",
    "is",
    "that",
    "for",
    "it",
    "as",
    "was",
    "with",
    "be",
    "by",
    "on",
    "not",
    "he",
    "this",
    "are",
    "or",
    "his",
    "from",
    "at",
    "which",
    "but",
    "have",
    "an",
    "had",
    "they",
    "you",
    "were",
    "their",
    "one",
    "all",
    "we",
    "can",
    "her",
    "has",
    "there",
    "been",
    "if",
    "more",
    "when",
    "will",
    "would",
    "who",
    "so",
    "process",
    "memory",
    "image",
    "page",
    "restore",
    "checkpoint",
    "kernel",
    "signal",
    "file",
    "machine",
    "network",
    "thread",
    "migrate",
    "register",
    "window",
    "system",
];

/// xorshift64*, seeded as in `victim.c`.
struct Rng(u64);

/// The seed of `victim.c`.
const VICTIM_SEED: u64 = 0x9E37_79B9_7F4A_7C15;

impl Rng {
    fn new() -> Rng {
        Rng::seeded(VICTIM_SEED)
    }

    /// xorshift never leaves zero: a zero seed becomes the victim's.
    fn seeded(seed: u64) -> Rng {
        Rng(if seed == 0 { VICTIM_SEED } else { seed })
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
}

/// The victim's memory: `len` bytes (a multiple of 32) of `contents`.
pub fn generate(contents: Contents, len: usize) -> PageBuf {
    let mut page_buf = PageBuf::zeroed(len);
    let buf = page_buf.as_mut_slice();
    let mut rng = Rng::new();
    match contents {
        Contents::Random => {
            for word in buf.chunks_exact_mut(8) {
                word.copy_from_slice(&rng.next().to_le_bytes());
            }
        }
        Contents::Text => fill_text(buf, &mut rng),
    }
    page_buf
}

/// `len` bytes of text as [`Contents::Text`], from another seed (files that differ from each
/// other and from the victim's memory, each the same in every run).
pub fn text_seeded(len: usize, seed: u64) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    fill_text(&mut buf, &mut Rng::seeded(seed));
    buf
}

fn fill_text(buf: &mut [u8], rng: &mut Rng) {
    let mut slots = [[b' '; 16]; 64];
    for (slot, word) in slots.iter_mut().zip(WORDS) {
        slot[..word.len()].copy_from_slice(word.as_bytes());
    }
    let n = buf.len();
    let mut p = 0;
    // Each round writes at most 4 * (10 + 1) bytes plus a 16-byte slot overhang: 64 is enough.
    while p + 64 <= n {
        let r = rng.next();
        for k in 0..4 {
            let v = (r >> (16 * k)) as usize & 0xffff;
            let (w, s) = (v & 63, (v >> 6) & 63);
            buf[p..p + 16].copy_from_slice(&slots[w]);
            p += WORDS[w].len();
            buf[p] = match s {
                0 => b'.',
                1 => b',',
                2 => b'\n',
                _ => b' ',
            };
            p += 1;
        }
    }
    buf[p..].fill(b'\n');
}

/// Writes `len` bytes of [`Contents::Random`] (from another seed) to `out`, a chunk at a time:
/// an incompressible file of any size without holding it in memory.
pub fn write_random(out: &mut impl std::io::Write, len: u64, seed: u64) -> std::io::Result<()> {
    const CHUNK: usize = 8 << 20;
    let mut rng = Rng::seeded(seed);
    let mut buf = vec![0u8; CHUNK];
    let mut left = len;
    while left > 0 {
        for word in buf.chunks_exact_mut(8) {
            word.copy_from_slice(&rng.next().to_le_bytes());
        }
        let n = left.min(CHUNK as u64) as usize;
        out.write_all(&buf[..n])?;
        left -= n as u64;
    }
    Ok(())
}

/// The victim's checksum: four lanes of rotate-xor-multiply over little-endian words.
pub fn checksum(buf: &[u8]) -> u64 {
    const K: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = [1u64, 2, 3, 4];
    for block in buf.chunks_exact(32) {
        for (lane, word) in h.iter_mut().zip(block.chunks_exact(8)) {
            let mut w = [0u8; 8];
            w.copy_from_slice(word);
            *lane = (*lane ^ u64::from_le_bytes(w))
                .rotate_left(23)
                .wrapping_mul(K);
        }
    }
    h[0] ^ h[1].rotate_left(16) ^ h[2].rotate_left(32) ^ h[3].rotate_left(48)
}
