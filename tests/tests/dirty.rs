//! The dirty-page tracker (`mrun_core::engine::dirty`) against real processes on this kernel.
//!
//! The safety property: after any round, every page whose contents differ from what was read
//! at the previous round at that address is reported written, or lies in an area not tracked
//! or no longer mapped. Each test plays the pre-copy caller: it keeps a mirror of the victim's
//! memory (a hash per page), updated only from what the rounds report (and from the areas not
//! tracked, re-read every round), and after each round compares the mirror with the victim's
//! memory as it is, page by page. The victim (`victims/dirty.c`) is stopped (SIGSTOP) for the
//! round and the comparison, so that its memory holds still meanwhile.

mod common;

use common::*;
use mrun_core::engine::dirty::{probe, DirtyTracker, Round, Why};
use mrun_core::sys::{memory, Pid};
use std::collections::HashMap;
use std::time::{Duration, Instant};

const PAGE: u64 = 4096;

/// A victim process driven one command at a time.
struct Victim {
    proc: Proc,
    pid: Pid,
    commands: usize,
}

/// The file the victim maps private: 1 MiB of varied bytes, readable by the sandbox's user.
fn mapped_file(sb: &Sandbox) -> std::path::PathBuf {
    let file = sb.path("mapped.bin");
    let bytes: Vec<u8> = (0..(1u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&file, bytes).expect("writing the file the victim maps");
    sb.input(&file)
}

impl Victim {
    /// `dirty FILE MIB` as the sandbox's user.
    fn start(sb: &Sandbox, mib: u64) -> Victim {
        Victim::start_filled(sb, mib, mib)
    }

    /// `dirty FILE MIB FILLED` as the sandbox's user.
    fn start_filled(sb: &Sandbox, mib: u64, filled: u64) -> Victim {
        let file = mapped_file(sb);
        let mut cmd = sb.command(sb.victim("dirty"));
        cmd.arg(&file).arg(mib.to_string()).arg(filled.to_string());
        Victim::spawn(cmd)
    }

    fn spawn(cmd: std::process::Command) -> Victim {
        let mut proc = Proc::spawn("dirty", cmd, Input::Pipe, Output::Pipe);
        proc.wait_for_stdout("READY");
        let pid = Pid::from_raw(proc.pid());
        Victim {
            proc,
            pid,
            commands: 0,
        }
    }

    /// Run `cmd` in the victim and wait until it is done.
    fn run(&mut self, cmd: &str) {
        self.commands += 1;
        self.proc.write_stdin(format!("{cmd}\n").as_bytes());
        let acks = self.commands;
        let ok = wait_until(TIMEOUT, || {
            self.proc.stdout_text().matches("done ").count() >= acks
        });
        assert!(
            ok,
            "the victim never did {cmd:?}: {}",
            self.proc.stdout_text()
        );
    }

    /// Stop every thread (SIGSTOP) and wait until all are stopped.
    fn stop(&self) {
        // SAFETY: kill(2) has no memory-safety requirements.
        unsafe { libc::kill(self.pid.as_raw(), libc::SIGSTOP) };
        let pid = self.pid.as_raw();
        let stopped = wait_until(TIMEOUT, || {
            let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
                return false;
            };
            tasks.flatten().all(|t| {
                let tid: i32 = t.file_name().to_string_lossy().parse().unwrap_or(0);
                matches!(process_state_of_task(pid, tid), Some('T') | Some('t'))
            })
        });
        assert!(stopped, "the victim's threads never all stopped");
    }

    fn cont(&self) {
        // SAFETY: kill(2) has no memory-safety requirements.
        unsafe { libc::kill(self.pid.as_raw(), libc::SIGCONT) };
    }
}

fn process_state_of_task(pid: i32, tid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/task/{tid}/stat")).ok()?;
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

/// One line of `/proc/PID/maps`, as the test reads it (independently of the tracker).
struct Map {
    start: u64,
    end: u64,
    perms: String,
    offset: u64,
    path: String,
}

fn maps(pid: Pid) -> Vec<Map> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/maps")).expect("reading maps");
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (range, perms, offset) = (f.next()?, f.next()?, f.next()?);
            let (_dev, _inode) = (f.next()?, f.next()?);
            let path = f.collect::<Vec<_>>().join(" ");
            let (s, e) = range.split_once('-')?;
            Some(Map {
                start: u64::from_str_radix(s, 16).ok()?,
                end: u64::from_str_radix(e, 16).ok()?,
                perms: perms.to_string(),
                offset: u64::from_str_radix(offset, 16).ok()?,
                path,
            })
        })
        .collect()
}

impl Map {
    /// A file-backed mapping (whose pages are the file's until written).
    fn file(&self) -> Option<&str> {
        let p = self.path.as_str();
        (p.starts_with('/') && !p.starts_with("/dev/zero")).then_some(p)
    }
}

fn hash(page: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for w in page.chunks_exact(8) {
        let v = u64::from_le_bytes(w.try_into().unwrap_or([0; 8]));
        h = (h ^ v).wrapping_mul(0x0100_0000_01b3).rotate_left(29);
    }
    h
}

/// What the pre-copy caller holds of the victim's memory: a hash per page read.
struct Mirror {
    pid: Pid,
    pages: HashMap<u64, u64>,
    pagemap: memory::Pagemap,
    files: HashMap<String, Vec<u8>>,
    zero: u64,
    read_bytes: u64,
}

impl Mirror {
    fn new(pid: Pid) -> Mirror {
        Mirror {
            pid,
            pages: HashMap::new(),
            pagemap: memory::Pagemap::open(pid).expect("opening pagemap"),
            files: HashMap::new(),
            zero: hash(&[0u8; PAGE as usize]),
            read_bytes: 0,
        }
    }

    /// Read `[start, end)` of the victim into the mirror.
    fn read(&mut self, start: u64, end: u64) {
        let mut buf = vec![0u8; (end - start) as usize];
        memory::read(self.pid, start, &mut buf)
            .unwrap_or_else(|e| panic!("reading {start:#x}-{end:#x} of the victim: {e}"));
        self.read_bytes += end - start;
        for (i, page) in buf.chunks_exact(PAGE as usize).enumerate() {
            self.pages.insert(start + i as u64 * PAGE, hash(page));
        }
    }

    /// Take a round in, as the caller does: read what it reports, and every page of the areas
    /// it does not track (those it cannot read, the kernel's own, are left out).
    fn take(&mut self, round: &Round) {
        self.pages.retain(|at, _| !round.fresh.contains(*at));
        for r in round.written.ranges() {
            self.read(r.start, r.end);
        }
        for u in &round.untracked {
            if u.why == Why::Kernel {
                continue;
            }
            let mut entries = Vec::new();
            self.pagemap
                .entries(u.start, u.end, &mut entries)
                .expect("reading pagemap");
            for (i, e) in entries.iter().enumerate() {
                let at = u.start + i as u64 * PAGE;
                if e & (memory::PM_PRESENT | memory::PM_SWAPPED) != 0 {
                    self.read(at, at + PAGE);
                } else {
                    self.pages.remove(&at);
                }
            }
        }
    }

    /// What a page that was never read holds: zeros, or the file's bytes.
    fn unread(&mut self, m: &Map, at: u64) -> u64 {
        let Some(path) = m.file() else {
            return self.zero;
        };
        let path = path.trim_end_matches(" (deleted)").to_string();
        let bytes = self.files.entry(path.clone()).or_insert_with(|| {
            std::fs::read(format!("/proc/{}/root{}", self.pid, path)).unwrap_or_default()
        });
        let off = (m.offset + at - m.start) as usize;
        let mut page = [0u8; PAGE as usize];
        if off < bytes.len() {
            let n = (bytes.len() - off).min(PAGE as usize);
            page[..n].copy_from_slice(&bytes[off..off + n]);
        }
        hash(&page)
    }

    /// Every page of every tracked area whose mirror differs from the victim's memory now.
    fn stale(&mut self, round: &Round) -> Vec<String> {
        let mut bad = Vec::new();
        let now = maps(self.pid);
        self.pages
            .retain(|at, _| now.iter().any(|m| m.start <= *at && *at < m.end));
        for m in &now {
            if round.untracked.iter().any(|u| u.start == m.start) {
                continue;
            }
            let mut entries = Vec::new();
            self.pagemap
                .entries(m.start, m.end, &mut entries)
                .expect("reading pagemap");
            let mut buf = vec![0u8; PAGE as usize];
            for (i, e) in entries.iter().enumerate() {
                let at = m.start + i as u64 * PAGE;
                let actual = if e & memory::PM_PRESENT != 0 {
                    memory::read(self.pid, at, &mut buf)
                        .unwrap_or_else(|e| panic!("reading {at:#x} of the victim: {e}"));
                    hash(&buf)
                } else {
                    self.unread(m, at)
                };
                let expected = match self.pages.get(&at) {
                    Some(h) => *h,
                    None => self.unread(m, at),
                };
                if actual != expected {
                    bad.push(format!(
                        "{at:#x} ({} {} page {})",
                        m.perms,
                        if m.path.is_empty() { "anon" } else { &m.path },
                        (at - m.start) / PAGE
                    ));
                }
            }
        }
        bad
    }
}

/// Start tracking `v` (stopped meanwhile, so that the first round is exact).
fn start(v: &Victim) -> (DirtyTracker, Mirror) {
    v.stop();
    let (tracker, first) = DirtyTracker::start(v.pid).expect("starting the tracker");
    let mut mirror = Mirror::new(v.pid);
    mirror.take(&first);
    let stale = mirror.stale(&first);
    v.cont();
    assert!(stale.is_empty(), "after the first round: {stale:?}");
    (tracker, mirror)
}

/// Run `cmd` in `v`, then a round (with `v` stopped), and check the property.
fn step(v: &mut Victim, tracker: &mut DirtyTracker, mirror: &mut Mirror, cmd: &str) -> Round {
    v.run(cmd);
    v.stop();
    let round = tracker
        .take_written()
        .unwrap_or_else(|e| panic!("round after {cmd:?}: {e}"));
    mirror.take(&round);
    let stale = mirror.stale(&round);
    v.cont();
    assert!(
        stale.is_empty(),
        "after {cmd:?}, {} pages changed and were not reported: {:?}; reported {:?}",
        stale.len(),
        &stale[..stale.len().min(20)],
        &round.written.ranges()[..round.written.ranges().len().min(20)]
    );
    round
}

#[test]
fn this_kernel_supports_tracking() {
    assert_eq!(
        probe(),
        Ok(()),
        "the tracker is expected to work on this kernel"
    );
}

/// Every kind of change, one after another, each followed by a round and the comparison.
#[test]
fn every_change_is_reported() {
    let sb = Sandbox::new("dirty-changes");
    let mut v = Victim::start(&sb, 64);
    let (mut tracker, mut mirror) = start(&v);
    let mut reported = HashMap::new();
    for cmd in [
        "w",
        "remap",
        "move",
        "grow",
        "dontneed",
        "readzero",
        "writezero",
        "free",
        "prot",
        "unprot",
        "fork",
        "w",
        "newmap",
        "newwrite",
        "thp",
        "thpagain",
        "cow",
        "revert",
        "cow",
        "brk",
        "w",
    ] {
        let round = step(&mut v, &mut tracker, &mut mirror, cmd);
        reported.insert(cmd, round.written.bytes());
    }
    // A round with nothing done reports (almost) nothing: the stack pages the victim's
    // command loop writes.
    let idle = step(&mut v, &mut tracker, &mut mirror, "halt");
    assert!(
        idle.written.bytes() <= 64 * PAGE,
        "an idle round reported {} bytes: {:?}",
        idle.written.bytes(),
        idle.written.ranges()
    );
    eprintln!("bytes reported per change: {reported:?}");
}

/// Threads write all the time while rounds run, as pre-copy rounds do; once they stop, a last
/// round leaves nothing behind.
#[test]
fn writes_racing_with_rounds_are_not_lost() {
    let sb = Sandbox::new("dirty-race");
    let mut v = Victim::start(&sb, 64);
    let (mut tracker, mut mirror) = start(&v);
    v.run("go");
    let mut rounds = 0;
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(2) {
        let round = tracker
            .take_written()
            .expect("a round while the victim writes");
        mirror.take(&round);
        rounds += 1;
    }
    v.run("halt");
    let last = step(&mut v, &mut tracker, &mut mirror, "w");
    eprintln!(
        "{rounds} rounds while writing, {} MiB read; the last round reported {} KiB",
        mirror.read_bytes >> 20,
        last.written.bytes() >> 10
    );
}

/// A job that ends, or executes another program, ends the tracking with `Gone`.
#[test]
fn a_process_that_exits_ends_tracking() {
    let sb = Sandbox::new("dirty-gone");
    let mut v = Victim::start(&sb, 32);
    let (mut tracker, _mirror) = start(&v);
    v.proc.write_stdin(b"quit\n");
    v.proc.wait();
    match tracker.take_written() {
        Err(mrun_core::engine::dirty::DirtyError::Gone { .. }) => {}
        other => panic!("a round of an exited process: {other:?}"),
    }
}

/// A process that uses userfaultfd itself is not tracked: an area belongs to one userfaultfd
/// only, and its own registrations would fail.
#[test]
fn a_process_with_its_own_userfaultfd_is_not_tracked() {
    let sb = Sandbox::new("dirty-own-uffd");
    let mut v = Victim::start(&sb, 32);
    v.run("uffd");
    match DirtyTracker::start(v.pid) {
        Err(mrun_core::engine::dirty::DirtyError::OwnUserfaultfd { .. }) => {}
        Err(e) => panic!("starting to track a process with a userfaultfd: {e}"),
        Ok(_) => panic!("a process with a userfaultfd of its own was tracked"),
    }
    assert_eq!(userfaultfds(v.pid), 1);
    v.run("w");
}

/// Signals sent while the tracker starts (and stops the job for a moment) all arrive.
#[test]
fn signals_sent_while_starting_all_arrive() {
    const SENT: usize = 300;
    let sb = Sandbox::new("dirty-signals");
    let mut v = Victim::start(&sb, 32);
    let pid = v.pid.as_raw();
    let sender = std::thread::spawn(move || {
        for _ in 0..SENT {
            let value = libc::sigval {
                sival_ptr: std::ptr::null_mut(),
            };
            // SAFETY: sigqueue takes plain values.
            let r = unsafe { libc::sigqueue(pid, libc::SIGRTMIN(), value) };
            assert_eq!(r, 0, "sigqueue: {}", std::io::Error::last_os_error());
            std::thread::sleep(Duration::from_micros(100));
        }
    });
    for _ in 0..3 {
        let started = DirtyTracker::start(v.pid).expect("starting the tracker");
        drop(started);
    }
    sender.join().expect("the sender");
    let want = format!("signals {SENT}\n");
    let got = wait_until(TIMEOUT, || {
        v.run("signals");
        v.proc.stdout_text().contains(&want)
    });
    assert!(got, "not every signal arrived: {}", v.proc.stdout_text());
}

/// Userfaultfds a process holds (as `/proc/PID/fd` shows them).
fn userfaultfds(pid: Pid) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| {
            d.flatten()
                .filter(|e| {
                    std::fs::read_link(e.path())
                        .map(|l| l.to_string_lossy().contains("userfaultfd"))
                        .unwrap_or(false)
                })
                .count()
        })
        .unwrap_or(0)
}

/// The pages of `pid` still marked by userfaultfd write-protection (pagemap bit 57).
fn write_protected_pages(pid: Pid) -> usize {
    const PM_UFFD_WP: u64 = 1 << 57;
    let pagemap = memory::Pagemap::open(pid).expect("opening pagemap");
    let mut n = 0;
    for m in maps(pid) {
        if m.path.starts_with("[v") {
            continue;
        }
        let mut entries = Vec::new();
        if pagemap.entries(m.start, m.end, &mut entries).is_ok() {
            n += entries.iter().filter(|e| *e & PM_UFFD_WP != 0).count();
        }
    }
    n
}

/// The process holds no userfaultfd at any time; once the tracker is dropped its areas and
/// pages carry no trace of it, and it runs on: its threads write, their writes never wait.
#[test]
fn stopping_leaves_the_process_as_it_was() {
    let sb = Sandbox::new("dirty-stop");
    let mut v = Victim::start(&sb, 32);
    let fds_before: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", v.pid))
        .expect("listing fds")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    let (mut tracker, mut mirror) = start(&v);
    assert_eq!(userfaultfds(v.pid), 0, "the process holds a userfaultfd");
    step(&mut v, &mut tracker, &mut mirror, "w");
    assert!(
        write_protected_pages(v.pid) > 0,
        "nothing is write-protected"
    );
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", v.pid)).expect("smaps");
    assert!(smaps.contains(" uw"), "no area is registered (VmFlags uw)");
    tracker.stop();
    let smaps = std::fs::read_to_string(format!("/proc/{}/smaps", v.pid)).expect("smaps");
    assert!(
        !smaps
            .lines()
            .any(|l| l.starts_with("VmFlags:") && l.contains(" uw")),
        "an area is still registered for write-protection"
    );
    assert_eq!(
        write_protected_pages(v.pid),
        0,
        "pages still write-protected"
    );
    let fds_after: Vec<_> = std::fs::read_dir(format!("/proc/{}/fd", v.pid))
        .expect("listing fds")
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert_eq!(fds_before, fds_after, "the descriptor table changed");
    let began = Instant::now();
    for _ in 0..3 {
        v.run("w");
    }
    v.run("go");
    std::thread::sleep(Duration::from_millis(100));
    v.run("halt");
    assert!(
        began.elapsed() < Duration::from_secs(5),
        "the victim was slow to write after the tracker stopped: {:?}",
        began.elapsed()
    );
}

/// Set (to "VICTIM FILE") in the copy of this test binary that
/// `an_unprivileged_user_tracks_its_process` runs as nobody.
const AS_NOBODY: &str = "MRUN_DIRTY_TEST_AS_NOBODY";

/// The victim runs as nobody: the userfaultfd it is made to create is a user-mode-only one,
/// which an unprivileged process may have (vm.unprivileged_userfaultfd 0); and the tracker
/// runs as nobody too (ptrace, pidfd_getfd and PAGEMAP_SCAN of the user's own process).
#[test]
fn an_unprivileged_user_tracks_its_process() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 || std::env::var_os(AS_NOBODY).is_some() {
        return;
    }
    let sb = Sandbox::for_user("dirty-nobody", User::Nobody);
    let victim = sb.victim("dirty");
    let file = mapped_file(&sb);
    let me = std::env::current_exe().expect("current_exe");
    let mut cmd = sb.command(sb.program(&me));
    cmd.args([
        "--exact",
        "tracked_as_nobody",
        "--nocapture",
        "--test-threads",
        "1",
    ])
    .env(
        AS_NOBODY,
        format!("{} {}", victim.display(), file.display()),
    );
    let done = Proc::spawn("the tracker as nobody", cmd, Input::Null, Output::Pipe).finish();
    let out = String::from_utf8_lossy(&done.stdout);
    assert!(
        done.status.success() && out.contains("as nobody") && out.contains("1 passed"),
        "as nobody: {}\n{out}\n{}",
        done.status,
        String::from_utf8_lossy(&done.stderr)
    );
}

/// The half of `an_unprivileged_user_tracks_its_process` that runs as nobody.
#[test]
fn tracked_as_nobody() {
    let Some(spec) = std::env::var_os(AS_NOBODY) else {
        return;
    };
    let spec = spec.to_string_lossy().into_owned();
    let (victim, file) = spec.split_once(' ').expect("VICTIM FILE");
    // SAFETY: geteuid has no preconditions.
    assert_eq!(unsafe { libc::geteuid() }, NOBODY, "not running as nobody");
    assert_eq!(probe(), Ok(()));
    let mut cmd = std::process::Command::new(victim);
    cmd.arg(file).arg("32");
    let mut v = Victim::spawn(cmd);
    let (mut tracker, mut mirror) = start(&v);
    for cmd in ["w", "dontneed", "remap", "cow", "revert", "newmap", "w"] {
        step(&mut v, &mut tracker, &mut mirror, cmd);
    }
    println!("tracked pid {} as nobody", v.pid);
}

/// What a round costs: for an idle process with 512 MiB in use (the bound is about a
/// millisecond), with a little written, and to start and stop.
#[test]
fn round_costs() {
    let idle = costs(512, 512);
    assert!(
        idle < Duration::from_millis(5),
        "an idle round of 512 MiB took {idle:?}"
    );
}

/// The same with 512 MiB in use in a 2 GiB area: a round walks the whole area (arming filled
/// its page tables with markers).
#[test]
fn round_costs_sparse() {
    costs(2048, 512);
}

/// Measure start, idle rounds, rounds after writes and stop on a victim with `filled` MiB of
/// a `mib` MiB area in use; the idle round's median.
fn costs(mib: u64, filled: u64) -> Duration {
    let sb = Sandbox::new("dirty-cost");
    let mut v = Victim::start_filled(&sb, mib, filled);
    let began = Instant::now();
    let (mut tracker, first) = DirtyTracker::start(v.pid).expect("starting the tracker");
    let start_took = began.elapsed();
    let mut idle: Vec<Round> = (0..30)
        .map(|_| tracker.take_written().expect("an idle round"))
        .collect();
    idle.sort_by_key(|r| r.took);
    let mut busy = Vec::new();
    for _ in 0..10 {
        v.run("w");
        busy.push(tracker.take_written().expect("a round after writes"));
    }
    let stop = Instant::now();
    tracker.stop();
    let stop_took = stop.elapsed();
    let median = idle[idle.len() / 2].took;
    busy.sort_by_key(|r| r.took);
    let b = &busy[busy.len() / 2];
    eprintln!(
        "{filled} MiB in use in a {mib} MiB area ({} MiB held at the first round, {} areas \
         tracked, {} not): start {:.1} ms, idle round median {:.3} ms (min {:.3}, max {:.3}, {} \
         ioctls), round after ~256 page writes {:.3} ms ({} KiB reported), stop {:.1} ms",
        first.written.bytes() >> 20,
        first.tracked,
        first.untracked.len(),
        start_took.as_secs_f64() * 1e3,
        median.as_secs_f64() * 1e3,
        idle[0].took.as_secs_f64() * 1e3,
        idle[idle.len() - 1].took.as_secs_f64() * 1e3,
        idle[idle.len() / 2].ioctls,
        b.took.as_secs_f64() * 1e3,
        b.written.bytes() >> 10,
        stop_took.as_secs_f64() * 1e3,
    );
    median
}

/// A process the tracker stops inside a system call that programs never expect to fail
/// (GNU `tail -f` waits in poll(2) and dies of an EINTR) carries on with it as if never
/// stopped, and waits in poll itself again, not in the kernel's `restart_syscall`, whose
/// meaning a checkpoint cannot carry to another machine.
#[test]
fn a_process_waiting_in_poll_waits_on() {
    let sb = Sandbox::new("dirty-poll");
    let file = sb.path("tailed.txt");
    std::fs::write(&file, "1\n").expect("writing the tailed file");
    let mut cmd = sb.command("tail");
    cmd.arg("-f").arg(sb.input(&file));
    let mut tail = Proc::spawn("tail -f", cmd, Input::Null, Output::Pipe);
    tail.wait_for_stdout("1\n");
    // Let it settle in its poll.
    std::thread::sleep(Duration::from_millis(100));
    let pid = Pid::from_raw(tail.pid());
    for k in 0..3 {
        let started = DirtyTracker::start(pid).expect("starting the tracker");
        drop(started);
        let syscall = format!("/proc/{}/syscall", pid.as_raw());
        let mut now = String::new();
        let in_poll = wait_until(TIMEOUT, || {
            now = std::fs::read_to_string(&syscall).unwrap_or_default();
            now.split(' ').next() == Some(&libc::SYS_poll.to_string())
        });
        assert!(
            in_poll,
            "tail -f does not wait in poll again: {syscall}: {now}"
        );
        let line = format!("line {k}\n");
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&file)
            .expect("opening the tailed file");
        std::io::Write::write_all(&mut f, line.as_bytes()).expect("appending");
        tail.wait_for_stdout(&line);
    }
    tail.kill();
}
