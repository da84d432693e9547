//! `mrun --each COMMAND ...`: a batch, like GNU parallel. One job per argument, each an
//! ordinary `mrun` deputy started as our child (so jobs migrate, take signals and report their
//! status as any job does), at most N at once; the next starts as soon as one ends. Each job's
//! output is shown in one piece when it ends, so outputs of different jobs never interleave;
//! with `--keep-order`, in the order of the arguments: an output waits until every earlier
//! one has been shown.
//!
//! SIGINT and SIGTERM stop the batch: no new job starts, the running ones get the signal (a
//! terminal's signal reached them already, being in our process group), and once they ended
//! we exit with 128 + the signal's number.

pub mod batch;
pub mod eta;
pub mod job;
pub mod joblog;
pub mod order;
pub mod outcome;
pub mod places;
pub mod progress;
pub mod slots;
pub mod summary;
pub mod words;

use std::collections::HashMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use mrun_core::sys::signals::Received;
use nix::sys::signal::{kill, SigSet, Signal};
use nix::unistd::Pid;
use tokio::sync::mpsc;
use tokio::task::JoinSet;

use self::batch::JobSpec;
use self::joblog::JobLog;
use self::order::Shown;
use self::progress::Progress;
use self::summary::Tally;

/// What the command line asks of the batch besides the command.
#[derive(Debug)]
pub struct EachOptions {
    /// Jobs at once; the cluster's CPUs when not given.
    pub jobs: Option<u32>,
    pub joblog: Option<PathBuf>,
    /// Every job stays home (`mrun --home`).
    pub home: bool,
    /// Inherited descriptors passed on to every job (`--keep-fd`).
    pub kept_fds: Vec<i32>,
    /// Outputs in the order of the arguments (`--keep-order`), not as jobs end.
    pub keep_order: bool,
}

/// Runs the batch of `words` (everything after the options) and exits with its status.
pub fn run(words: Vec<OsString>, options: EachOptions) -> ! {
    // Said once here; the jobs are told not to repeat it.
    if let Err(e) = crate::nodes::config() {
        crate::errln!("mrun: warning: {e:#}; {}", crate::nodes::DEFAULTS_APPLY);
    }
    let typed_as = typed_as(&words);
    let template = words::Template::parse(words, &typed_as)
        .unwrap_or_else(|e| crate::exit::fail("mrun", format!("{e:#}"), crate::exit::USAGE));
    let jobs = batch::jobs_of(template).unwrap_or_else(|e| fail(e));
    if jobs.is_empty() {
        // Only lines read can give no argument: a pipeline that found nothing to do.
        crate::errln!("mrun: no jobs: the input had no non-empty line");
        std::process::exit(0);
    }
    let joblog = options
        .joblog
        .as_deref()
        .map(JobLog::create)
        .transpose()
        .unwrap_or_else(|e| fail(e));
    let at_once = options
        .jobs
        .map(|n| n as usize)
        .unwrap_or_else(slots::cluster_cpus);
    // Taken by a thread of our own (blocked before any thread starts, so all inherit the mask).
    let mut set = SigSet::empty();
    set.add(Signal::SIGINT);
    set.add(Signal::SIGTERM);
    if let Err(e) = set.thread_block() {
        crate::exit::fail(
            "mrun",
            format!("cannot block signals: {e}"),
            crate::exit::FAILURE,
        );
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap_or_else(|e| {
            crate::exit::fail("mrun", format!("cannot start: {e}"), crate::exit::FAILURE)
        });
    let (sig_tx, sig_rx) = mpsc::channel(16);
    std::thread::spawn(move || {
        while let Ok(r) = mrun_core::sys::signals::wait(&set) {
            if sig_tx.blocking_send(r).is_err() {
                return;
            }
        }
    });
    let exe = std::env::current_exe()
        .context("finding the mrun binary to start the jobs with")
        .unwrap_or_else(|e| fail(e));
    let batch = Batch {
        exe: &exe,
        home: options.home,
        kept_fds: &options.kept_fds,
        at_once: at_once.max(1),
        joblog,
        shown: Shown::new(options.keep_order),
    };
    let tally = runtime.block_on(batch.run(jobs, sig_rx));
    crate::errln!("{}", tally.line());
    std::process::exit(tally.exit_status())
}

/// How `mrun` and its own options were typed before `words` (`mrun --each -j 4`), quoted, for
/// the commands that refusals show; `mrun --each` when the command line does not end in `words`.
fn typed_as(words: &[OsString]) -> String {
    let argv: Vec<OsString> = std::env::args_os().collect();
    match argv.len().checked_sub(words.len()) {
        Some(options) if options >= 1 && argv.ends_with(words) => std::iter::once("mrun".into())
            .chain(argv[1..options].iter().map(|w| words::quoted(w)))
            .collect::<Vec<String>>()
            .join(" "),
        _ => "mrun --each".to_string(),
    }
}

/// Ends `mrun` with `e` on one line.
fn fail(e: anyhow::Error) -> ! {
    crate::exit::fail("mrun", format!("{e:#}"), crate::exit::FAILURE)
}

/// The scheduler's fixed settings.
struct Batch<'a> {
    exe: &'a Path,
    home: bool,
    kept_fds: &'a [i32],
    at_once: usize,
    joblog: Option<JobLog>,
    shown: Shown,
}

/// A job that runs now.
struct Running {
    /// Its deputy, our child (`None` if it could not start).
    pid: Option<u32>,
    /// Where it was last seen: `home` until a look says otherwise.
    place: String,
    /// When it started: its age counts in the ETA.
    started: std::time::Instant,
    /// Why it cannot leave home, if its deputy says it cannot.
    stays_home: Option<String>,
    /// Its words, to name it.
    label: String,
}

impl Batch<'_> {
    async fn run(mut self, jobs: Vec<JobSpec>, mut signals: mpsc::Receiver<Received>) -> Tally {
        let mut tally = Tally {
            total: jobs.len(),
            ..Tally::default()
        };
        let mut progress = Progress::new(jobs.len());
        let mut places = places::watch();
        let mut queue = jobs.into_iter();
        let mut tasks = JoinSet::new();
        let mut running: HashMap<tokio::task::Id, Running> = HashMap::new();
        let mut estimator = eta::Estimator::default();
        loop {
            while tally.stopped_by.is_none() && running.len() < self.at_once {
                let Some(spec) = queue.next() else { break };
                let label = spec.display();
                let started = job::start(self.exe, self.home, self.kept_fds, spec);
                let id = tasks.spawn(started.ended).id();
                running.insert(
                    id,
                    Running {
                        pid: started.pid,
                        place: "home".to_string(),
                        started: started.started,
                        stays_home: None,
                        label,
                    },
                );
            }
            if running.is_empty() {
                break;
            }
            let waiting = if tally.stopped_by.is_some() {
                0
            } else {
                queue.len()
            };
            let mut tally_line = places::tally(running.values().map(|r| r.place.as_str()));
            let staying = places::staying(running.values().filter_map(|r| r.stays_home.as_deref()));
            if !staying.is_empty() {
                tally_line = format!("{tally_line} · {staying}");
            }
            progress.running(tally_line, || {
                let ages: Vec<_> = running.values().map(|r| r.started.elapsed()).collect();
                estimator.remaining(&ages, waiting, self.at_once)
            });
            tokio::select! {
                Some(joined) = tasks.join_next_with_id() => {
                    let (id, ended) = match joined {
                        Ok((id, outcome)) => (id, Ok(outcome)),
                        Err(e) => (e.id(), Err(e)),
                    };
                    let place = running.remove(&id).map(|r| r.place).unwrap_or_else(|| "home".to_string());
                    match ended {
                        Ok(mut outcome) => {
                            outcome.place = place;
                            estimator.ended(outcome.runtime);
                            self.record(outcome, &mut tally, &mut progress);
                        }
                        // Only a bug of ours can get here (the tasks neither panic nor get aborted).
                        Err(e) => {
                            progress.say(&format!("mrun: lost track of a job: {e}"));
                            tally.failed.push(format!("a job that was lost ({e})"));
                        }
                    }
                }
                Some(sig) = signals.recv() => {
                    tally.stopped_by.get_or_insert(sig.signal as i32);
                    // A terminal's signal went to the whole process group, jobs included.
                    if sig.from_process {
                        for pid in running.values().filter_map(|r| r.pid) {
                            let _ = kill(Pid::from_raw(pid as i32), sig.signal);
                        }
                    }
                    progress.say(&format!(
                        "mrun: {}: starting no more jobs, waiting for {} running",
                        sig.signal.as_str(),
                        running.len()
                    ));
                }
                Some(seen) = places.recv() => {
                    // A deputy that did not answer this time keeps its last known place.
                    for r in running.values_mut() {
                        if let Some(now) = r.pid.and_then(|pid| seen.get(&pid)) {
                            r.place.clone_from(&now.place);
                            if now.stays_home.is_some() && now.stays_home != r.stays_home {
                                if let Some(why) = &now.stays_home {
                                    progress.stays_home(&r.label, why);
                                }
                            }
                            r.stays_home.clone_from(&now.stays_home);
                        }
                    }
                }
            }
        }
        self.shown.flush(&mut progress);
        progress.clear();
        tally
    }

    /// A job ended: count it, log it, show its output (now or in its turn).
    fn record(&mut self, outcome: outcome::Outcome, tally: &mut Tally, progress: &mut Progress) {
        progress.ended();
        if let Some(log) = &mut self.joblog {
            if let Err(e) = log.record(&outcome) {
                progress.say(&format!("mrun: warning: {e:#}; the job log stops here"));
                self.joblog = None;
            }
        }
        if outcome.succeeded() {
            tally.succeeded += 1;
        } else {
            tally
                .failed
                .push(format!("{} ({})", outcome.spec.display(), outcome.how()));
        }
        self.shown.ended(outcome, progress);
    }
}
