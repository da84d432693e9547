use mrun_core::image::model::*;
use mrun_core::image::*;
use std::time::Instant;

fn main() {
    let total = 512usize << 20;
    let mut data = vec![0u8; total];
    let mut x = 0x9e3779b97f4a7c15u64;
    for (i, blk) in data.chunks_mut(64 << 10).enumerate() {
        if i % 2 == 0 {
            for c in blk.chunks_mut(8) { x ^= x >> 12; x ^= x << 25; x ^= x >> 27; c.copy_from_slice(&x.wrapping_mul(0x2545f4914f6cdd1d).to_le_bytes()); }
        } else {
            for (j, c) in blk.chunks_mut(8).enumerate() { if j % 3 != 0 { c.copy_from_slice(&((j as u64/ 32) ^ 0x1234).to_le_bytes()); } }
        }
    }
    if std::env::var("REAL").is_ok() {
        // real binaries and libraries, plus 1/4 zero pages
        let mut off = 0;
        let mut stack = vec![std::path::PathBuf::from("/usr/lib"), std::path::PathBuf::from("/usr/bin")];
        'outer: while let Some(d) = stack.pop() {
            let Ok(rd) = std::fs::read_dir(&d) else { continue };
            for e in rd.flatten() {
                let p = e.path();
                let Ok(m) = std::fs::symlink_metadata(&p) else { continue };
                if m.is_dir() { stack.push(p); continue; }
                if !m.is_file() { continue; }
                let Ok(b) = std::fs::read(&p) else { continue };
                for c in b.chunks(192 << 10) {
                    let n = c.len().min(total - off);
                    data[off..off + n].copy_from_slice(&c[..n]);
                    off += n;
                    let z = (64 << 10).min(total - off);
                    data[off..off + z].fill(0);
                    off += z;
                    if off >= total { break 'outer; }
                }
            }
        }
        println!("real data: {off} bytes");
    }
    let header = Header { compat: Compat { arch: "x86_64".into(), xfeatures: 0, xstate_size: 0, kernel_release: String::new(), special_layout: vec![], vdso: vec![] }, pid: 1, comm: "b".into(), created_unix: 0, writer: "b".into() };
    let st: ProcessState = serde_json_like();
    let _ = &st;
    for level in [1, 3, 1] {
      for threads in [0usize, 1, 2, 3] {
       let mut best = 0f64;
       let mut out = vec![0u8; total]; out.clear();
       for _rep in 0..3 {
        out.clear();
        let t = Instant::now();
        let mut w = ImageWriter::with_threads(&mut out, &header, level, threads).unwrap();
        w.write_state(&st).unwrap();
        for (i, c) in data.chunks(4 << 20).enumerate() { w.write_pages(0x10000000 + (i as u64) * (4 << 20), c).unwrap(); }
        w.finish().unwrap();
        let dt = t.elapsed().as_secs_f64();
        best = best.max(total as f64 / dt / 1e6);
       }
        println!("write level {level} threads {threads}: best {:.0} MB/s, ratio {:.3}", best, out.len() as f64 / total as f64);
        if level == 1 && threads == 2 {
            for rt in [0usize, 1, 2, 0, 1, 2] {
                let t = Instant::now();
                let (mut r, _) = ImageReader::open_with_threads(&out[..], rt).unwrap();
                r.read_state().unwrap();
                let mut buf = Vec::new();
                let mut n = 0usize; let mut sum = 0u64;
                while let Some(a) = r.next_pages(&mut buf).unwrap() { n += buf.len(); sum = sum.wrapping_add(a ^ buf[4095] as u64); }
                let dt = t.elapsed().as_secs_f64();
                assert_eq!(n, total);
                println!("  read threads {rt}: {:.0} MB/s ({sum})", total as f64 / dt / 1e6);
            }
        }
      }
    }
}

fn serde_json_like() -> ProcessState {
    let id = FileIdentity { dev: 0, ino: 0, size: 0, mtime_ns: 0 };
    ProcessState { exe: "x".into(), exe_identity: id, regs: GpRegs([0; 27]), xstate: vec![], sigmask: 0, sigactions: vec![], altstack: AltStack { sp: 0, flags: 0, size: 0 }, rseq: None, robust_list: (0, 0), clear_child_tid: 0, personality: 0, mm: MmFields::default(), cwd: "/".into(), umask: 0, rlimits: vec![], vmas: vec![], fds: vec![], pending_signals: vec![] }
}
