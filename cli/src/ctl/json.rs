//! What `mrunctl status --json` and `mrunctl nodes --json` print: a versioned schema,
//! documented field by field in `docs/json.md` (a test holds the two together), kept apart
//! from the messages deputies and the daemon exchange so those may change without breaking
//! scripts. Times are ISO 8601 in UTC; a quantity's unit is in its name (`_seconds`,
//! `_bytes`). Adding a field keeps `version`; renaming, removing or changing one bumps it.

use serde::Serialize;

use super::nodes::NodeReport;
use crate::jobs::JobInfo;

/// Bumped on any change a script could trip over (not on added fields).
pub const VERSION: u32 = 1;

/// `mrunctl status --json`.
#[derive(Debug, Serialize)]
pub struct Status {
    pub version: u32,
    pub jobs: Vec<Job>,
    pub nodes: Vec<Node>,
}

/// `mrunctl nodes --json`.
#[derive(Debug, Serialize)]
pub struct Nodes {
    pub version: u32,
    pub nodes: Vec<Node>,
}

#[derive(Debug, Serialize)]
pub struct Job {
    pub job: u32,
    pub pid: u32,
    pub deputy_pid: u32,
    pub command: String,
    pub place: String,
    pub state: String,
    pub started: String,
    pub age_seconds: u64,
    pub cpu_seconds: Option<f64>,
    pub memory_bytes: u64,
    pub moves: u32,
    pub pinned_home: bool,
    pub cannot_move: Option<String>,
    pub stays_home: Option<String>,
    pub shared_fds: Vec<SharedFd>,
    pub last_problem: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct SharedFd {
    pub fd: i32,
    pub what: String,
}

#[derive(Debug, Serialize)]
pub struct Node {
    pub node: String,
    pub home: bool,
    pub reachable: bool,
    pub arch: Option<String>,
    pub kernel: Option<String>,
    pub cpus: Option<u32>,
    pub speed: Option<f64>,
    pub runnable: Option<f64>,
    pub load_per_cpu: Option<f64>,
    pub mem_available_bytes: Option<u64>,
    pub jobs: usize,
    pub problem: Option<String>,
}

impl Job {
    pub fn of(j: &JobInfo, now_unix: u64) -> Job {
        Job {
            job: j.job,
            pid: j.pid,
            deputy_pid: j.deputy,
            command: j.command.clone(),
            place: j.place.clone(),
            state: j.state.clone(),
            started: crate::log::iso8601_unix(j.started_unix),
            age_seconds: now_unix.saturating_sub(j.started_unix),
            cpu_seconds: j.cpu_seconds,
            memory_bytes: j.bytes,
            moves: j.moves,
            pinned_home: j.pinned_home,
            cannot_move: j.cannot_move.clone(),
            stays_home: j.stays_home.clone(),
            shared_fds: j
                .shared_fds
                .iter()
                .map(|s| SharedFd {
                    fd: s.fd,
                    what: s.what.clone(),
                })
                .collect(),
            last_problem: j.last_problem.clone(),
        }
    }
}

impl Node {
    /// A machine's entry; `jobs` counts this user's jobs there as their deputies say.
    pub fn of(r: &NodeReport, jobs: &[JobInfo]) -> Node {
        let f = r.facts.as_ref();
        Node {
            node: r.node.clone(),
            home: r.node == "home",
            reachable: r.reachable,
            arch: f.map(|f| f.arch.clone()),
            kernel: f.map(|f| f.kernel.clone()),
            cpus: f.map(|f| f.cpus),
            speed: f.map(|f| f.speed),
            runnable: f.map(|f| f.runnable),
            load_per_cpu: f.map(|f| f.load_per_cpu),
            mem_available_bytes: f.map(|f| f.mem_available),
            jobs: super::nodes::jobs_at(jobs, &r.node),
            problem: r.problem.clone(),
        }
    }
}

/// Print `doc` as JSON on stdout and exit 0 (quietly if stdout was closed).
pub fn print(doc: &impl Serialize) -> ! {
    let text = match serde_json::to_string_pretty(doc) {
        Ok(text) => text,
        Err(e) => crate::exit::fail(
            "mrunctl",
            format!("cannot encode the output as JSON: {e}"),
            crate::exit::FAILURE,
        ),
    };
    crate::outln!("{text}");
    std::process::exit(0)
}
