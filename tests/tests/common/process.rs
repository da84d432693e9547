//! Running processes with captured output and hard timeouts.
//!
//! [`Proc`] is a started process whose stdout (when piped) and stderr are read by background
//! threads, so a test can wait for a marker line without blocking forever; dropping a `Proc`
//! that has not exited kills it and all its descendants. [`Finished`] is what is left after it
//! exited: status and all output.

use super::procfs::descendants;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The longest any single wait may take before the test kills what it started and fails.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// What a started process gets as stdin.
pub enum Input {
    Null,
    /// A pipe the test writes with [`Proc::write_stdin`] and closes with [`Proc::close_stdin`].
    Pipe,
    File(PathBuf),
    /// Anything else, e.g. another process's stdout.
    Stdio(Stdio),
}

/// Where a started process's stdout goes. Stderr is always captured.
pub enum Output {
    /// Captured by the test (a pipe).
    Pipe,
    /// Created (truncated) by the test.
    File(PathBuf),
    Null,
    /// Anything else, e.g. the write end of a pipe another process reads.
    Stdio(Stdio),
}

#[derive(Default)]
struct Buffer {
    data: Vec<u8>,
    eof: bool,
}

/// Bytes read from a pipe by a background thread.
struct Capture {
    shared: Arc<(Mutex<Buffer>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Capture {
    fn start(mut source: impl Read + Send + 'static) -> Capture {
        let shared = Arc::new((Mutex::new(Buffer::default()), Condvar::new()));
        let theirs = Arc::clone(&shared);
        let thread = std::thread::spawn(move || {
            let mut chunk = vec![0u8; 256 * 1024];
            loop {
                let n = match source.read(&mut chunk) {
                    Ok(n) => n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                    Err(_) => 0,
                };
                let (lock, cond) = &*theirs;
                let mut buf = lock.lock().unwrap_or_else(|e| e.into_inner());
                if n == 0 {
                    buf.eof = true;
                    cond.notify_all();
                    return;
                }
                buf.data.extend_from_slice(&chunk[..n]);
                cond.notify_all();
            }
        });
        Capture {
            shared,
            thread: Some(thread),
        }
    }

    fn snapshot(&self) -> Vec<u8> {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .data
            .clone()
    }

    fn len(&self) -> usize {
        self.shared
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .data
            .len()
    }

    /// Waits until `pred(data, eof)` holds; false on timeout.
    fn wait(&self, timeout: Duration, pred: impl Fn(&[u8], bool) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let (lock, cond) = &*self.shared;
        let mut buf = lock.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if pred(&buf.data, buf.eof) {
                return true;
            }
            let now = Instant::now();
            if now >= deadline {
                return false;
            }
            buf = cond
                .wait_timeout(buf, deadline - now)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
    }

    fn join(mut self) -> Vec<u8> {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        std::mem::take(&mut self.shared.0.lock().unwrap_or_else(|e| e.into_inner()).data)
    }
}

/// A running process started by a test.
pub struct Proc {
    label: String,
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<Capture>,
    stderr: Option<Capture>,
    status: Option<ExitStatus>,
}

impl Proc {
    /// Starts `cmd` (already holding its arguments, env and cwd). `label` names it in failures.
    pub fn spawn(label: impl Into<String>, mut cmd: Command, stdin: Input, stdout: Output) -> Proc {
        let label = label.into();
        let want_stdin = matches!(stdin, Input::Pipe);
        cmd.stdin(match stdin {
            Input::Null => Stdio::null(),
            Input::Pipe => Stdio::piped(),
            Input::File(p) => Stdio::from(
                File::open(&p).unwrap_or_else(|e| panic!("{label}: open {}: {e}", p.display())),
            ),
            Input::Stdio(s) => s,
        });
        let want_stdout = matches!(stdout, Output::Pipe);
        cmd.stdout(match stdout {
            Output::Pipe => Stdio::piped(),
            Output::Null => Stdio::null(),
            Output::File(p) => Stdio::from(
                File::create(&p).unwrap_or_else(|e| panic!("{label}: create {}: {e}", p.display())),
            ),
            Output::Stdio(s) => s,
        });
        cmd.stderr(Stdio::piped());
        // The test binary may have inherited fds without close-on-exec (cargo's jobserver
        // pipe, for one); a process under test must not hold them, or the engine rightly
        // refuses it for an unknown pipe.
        // Likewise, SIGINT and SIGQUIT come ignored when the tests run from a background job of
        // a non-interactive shell (as some CI runners start them), and an ignored disposition
        // survives exec: the signal tests need them as a user's terminal has them.
        // SAFETY: the closure only makes async-signal-safe system calls.
        unsafe {
            cmd.pre_exec(|| {
                libc::syscall(
                    libc::SYS_close_range,
                    3u32,
                    u32::MAX,
                    libc::CLOSE_RANGE_CLOEXEC,
                );
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                libc::signal(libc::SIGQUIT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {label} ({cmd:?}): {e}"));
        let stdin = if want_stdin { child.stdin.take() } else { None };
        let stdout = if want_stdout {
            child.stdout.take().map(Capture::start)
        } else {
            None
        };
        let stderr = child.stderr.take().map(Capture::start);
        Proc {
            label,
            child,
            stdin,
            stdout,
            stderr,
            status: None,
        }
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn label(&self) -> &str {
        &self.label
    }

    /// Everything read from stdout so far (empty unless stdout is [`Output::Pipe`]).
    pub fn stdout_bytes(&self) -> Vec<u8> {
        self.stdout
            .as_ref()
            .map(Capture::snapshot)
            .unwrap_or_default()
    }

    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout_bytes()).into_owned()
    }

    pub fn stdout_len(&self) -> usize {
        self.stdout.as_ref().map(Capture::len).unwrap_or(0)
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(
            &self
                .stderr
                .as_ref()
                .map(Capture::snapshot)
                .unwrap_or_default(),
        )
        .into_owned()
    }

    fn describe(&self) -> String {
        format!(
            "{} (pid {})\n--- stdout so far ---\n{}\n--- stderr so far ---\n{}",
            self.label,
            self.pid(),
            tail(&self.stdout_text(), 3000),
            tail(&self.stderr_text(), 3000)
        )
    }

    /// Waits until stdout contains `needle`; fails the test (after killing) on timeout or EOF.
    pub fn wait_for_stdout(&mut self, needle: &str) {
        let found = {
            let cap = self
                .stdout
                .as_ref()
                .unwrap_or_else(|| panic!("{}: stdout not piped", self.label));
            let n = needle.as_bytes();
            cap.wait(TIMEOUT, |d, eof| contains(d, n) || eof) && contains(&cap.snapshot(), n)
        };
        if !found {
            let why = self.fail_context();
            panic!("{needle:?} never appeared on the stdout of {why}");
        }
    }

    /// Waits until at least `n` bytes were read from stdout.
    pub fn wait_for_stdout_len(&mut self, n: usize) {
        let ok = {
            let cap = self
                .stdout
                .as_ref()
                .unwrap_or_else(|| panic!("{}: stdout not piped", self.label));
            cap.wait(TIMEOUT, |d, eof| d.len() >= n || eof) && cap.len() >= n
        };
        if !ok {
            let why = self.fail_context();
            panic!("fewer than {n} bytes ever came out of {why}");
        }
    }

    /// Kills everything, then describes the process for a failure message.
    fn fail_context(&mut self) -> String {
        self.kill();
        std::thread::sleep(Duration::from_millis(50));
        self.describe()
    }

    pub fn write_stdin(&mut self, data: &[u8]) {
        let label = self.label.clone();
        let stdin = self
            .stdin
            .as_mut()
            .unwrap_or_else(|| panic!("{label}: stdin not piped"));
        stdin
            .write_all(data)
            .unwrap_or_else(|e| panic!("{label}: writing stdin: {e}"));
    }

    /// The raw fd of the test's end of the stdin pipe.
    pub fn stdin_fd(&self) -> i32 {
        use std::os::fd::AsRawFd;
        self.stdin.as_ref().map(|s| s.as_raw_fd()).unwrap_or(-1)
    }

    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Exit status if it has exited, without waiting.
    pub fn try_status(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits for the exit (at most [`TIMEOUT`], then kills and fails).
    pub fn wait(&mut self) -> ExitStatus {
        self.wait_timeout(TIMEOUT)
    }

    pub fn wait_timeout(&mut self, timeout: Duration) -> ExitStatus {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = self.try_status() {
                return st;
            }
            if Instant::now() >= deadline {
                let why = self.fail_context();
                panic!("timed out after {timeout:?} waiting for {why}");
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for the exit and for the end of its output (anything still holding the pipes, such
    /// as a restored process under `mrunctl restore`, must be gone too).
    pub fn finish(mut self) -> Finished {
        let status = self.wait();
        let deadline = Instant::now() + TIMEOUT;
        let ended = [self.stdout.as_ref(), self.stderr.as_ref()]
            .into_iter()
            .flatten()
            .all(|cap| {
                let left = deadline.saturating_duration_since(Instant::now());
                cap.wait(left, |_, eof| eof)
            });
        if !ended {
            let why = self.fail_context();
            panic!(
                "{} exited ({status}) but its output never ended: {why}",
                self.label
            );
        }
        let stdout = self.stdout.take().map(Capture::join).unwrap_or_default();
        let stderr = self.stderr.take().map(Capture::join).unwrap_or_default();
        Finished {
            label: self.label.clone(),
            status,
            stdout,
            stderr,
        }
    }

    /// SIGKILLs the process and everything below it.
    pub fn kill(&mut self) {
        if self.try_status().is_some() {
            return;
        }
        kill_tree(self.pid());
        let _ = self.child.kill();
        if let Ok(st) = self.child.wait() {
            self.status = Some(st);
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A pipe as (read end, write end), both close-on-exec in the test process.
pub fn pipe() -> (File, File) {
    let mut fds = [0i32; 2];
    // SAFETY: pipe2 writes two fds into the array, which has room for them.
    let r = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(r, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe {
        use std::os::fd::FromRawFd;
        (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1]))
    }
}

/// SIGKILLs `pid` and every descendant. The tree is stopped first, parents before children and
/// again until no new member shows up, so that nothing in it forks meanwhile: killed child
/// first, a shell loop (`while ...; do sleep 1000; done`) would start its next command before
/// its own SIGKILL, and that one would outlive the test.
pub fn kill_tree(pid: i32) {
    // SAFETY: kill(2) has no memory-safety requirements (here and below).
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let mut stopped: Vec<i32> = Vec::new();
    for _ in 0..20 {
        let new: Vec<i32> = descendants(pid)
            .into_iter()
            .filter(|p| !stopped.contains(p))
            .collect();
        if new.is_empty() {
            break;
        }
        for &p in &new {
            unsafe { libc::kill(p, libc::SIGSTOP) };
        }
        stopped.extend(new);
    }
    for &p in stopped.iter().rev() {
        unsafe { libc::kill(p, libc::SIGKILL) };
    }
    unsafe { libc::kill(pid, libc::SIGKILL) };
}

/// A process that has exited, with all its output.
pub struct Finished {
    pub label: String,
    pub status: ExitStatus,
    pub stdout: Vec<u8>,
    pub stderr: Vec<u8>,
}

impl Finished {
    pub fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    pub fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }

    pub fn describe(&self) -> String {
        format!(
            "{}: {}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.label,
            self.status,
            tail(&self.stdout_text(), 4000),
            tail(&self.stderr_text(), 4000)
        )
    }

    pub fn assert_success(&self) -> &Self {
        assert!(
            self.status.success(),
            "expected success from {}",
            self.describe()
        );
        assert_no_panic(self);
        self
    }

    /// Success with nothing on stderr (`what` names the run in the failure).
    pub fn assert_quiet_success(&self, what: &str) -> &Self {
        self.assert_success();
        assert!(
            self.stderr.is_empty(),
            "{what}: mrun printed on stderr: {}",
            self.describe()
        );
        self
    }

    pub fn assert_exit_code(&self, code: i32) -> &Self {
        assert_eq!(
            self.status.code(),
            Some(code),
            "unexpected exit of {}",
            self.describe()
        );
        self
    }

    pub fn assert_signal(&self, signal: i32) -> &Self {
        assert_eq!(
            self.status.signal(),
            Some(signal),
            "expected death by signal {signal} of {}",
            self.describe()
        );
        self
    }

    /// A clean refusal: a non-zero exit code (not a crash), exactly one line on stderr that
    /// mentions one of `keywords` (case-insensitive), and no panic.
    pub fn assert_one_line_error(&self, keywords: &[&str]) -> &Self {
        assert_no_panic(self);
        assert!(
            matches!(self.status.code(), Some(c) if c != 0),
            "expected a non-zero exit code (not success, not a signal) from {}",
            self.describe()
        );
        let err = self.stderr_text();
        let lines: Vec<&str> = err.lines().collect();
        assert!(
            lines.len() == 1 && !lines[0].trim().is_empty(),
            "expected exactly one line on stderr, got {}: {}",
            lines.len(),
            self.describe()
        );
        let lower = lines[0].to_lowercase();
        assert!(
            keywords.iter().any(|k| lower.contains(&k.to_lowercase())),
            "the error line {:?} mentions none of {keywords:?}",
            lines[0]
        );
        self
    }
}

fn assert_no_panic(f: &Finished) {
    assert!(
        !f.stderr_text().contains("panicked at"),
        "{} panicked: {}",
        f.label,
        f.describe()
    );
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    needle.is_empty() || hay.windows(needle.len()).any(|w| w == needle)
}

fn tail(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut start = s.len() - max;
    while !s.is_char_boundary(start) {
        start += 1;
    }
    format!("[... {start} bytes cut ...]{}", &s[start..])
}

/// Byte-for-byte comparison that reports lengths and the first difference, never a dump.
pub fn assert_same_bytes(what: &str, got: &[u8], want: &[u8]) {
    if got == want {
        return;
    }
    let first = got
        .iter()
        .zip(want)
        .position(|(a, b)| a != b)
        .unwrap_or(got.len().min(want.len()));
    let around = |d: &[u8]| {
        let s = first.saturating_sub(16);
        let e = (first + 16).min(d.len());
        format!("{:?}", String::from_utf8_lossy(&d[s.min(e)..e]))
    };
    panic!(
        "{what}: output differs from the uninterrupted run: got {} bytes, want {}; first \
         difference at offset {first}: got {} want {}",
        got.len(),
        want.len(),
        around(got),
        around(want)
    );
}

/// kill(2), which must succeed.
pub fn send_signal(pid: i32, sig: i32) {
    // SAFETY: kill(2) has no memory-safety requirements.
    let r = unsafe { libc::kill(pid, sig) };
    assert_eq!(
        r,
        0,
        "kill({pid}, {sig}): {}",
        std::io::Error::last_os_error()
    );
}
