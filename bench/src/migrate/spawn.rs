//! What `mrun` adds to starting a command: `mrun CMD` against plain `CMD`, run alternately so
//! that both see the same machine, each timed from spawn to reaping.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mrun_bench::sys::wait_timeout;

use mrun_bench::mrun::Mrun;

/// The wall times of `runs` runs each of a command alone and under mrun.
pub struct Spawns {
    pub command: String,
    pub plain: Vec<Duration>,
    pub mrun: Vec<Duration>,
}

pub fn compare(m: &Mrun, argv: &[&str], runs: u32) -> anyhow::Result<Spawns> {
    let plain = || {
        let mut cmd = m.command(argv[0]);
        cmd.args(&argv[1..]);
        cmd
    };
    let under_mrun = || {
        let mut cmd = m.command(&m.mrun);
        cmd.args(argv);
        cmd
    };
    // One of each unmeasured first: the binaries' pages into the cache.
    time(&mut plain())?;
    time(&mut under_mrun())?;
    let mut s = Spawns {
        command: argv.join(" "),
        plain: Vec::new(),
        mrun: Vec::new(),
    };
    for _ in 0..runs {
        s.plain.push(time(&mut plain())?);
        s.mrun.push(time(&mut under_mrun())?);
    }
    Ok(s)
}

fn time(cmd: &mut Command) -> anyhow::Result<Duration> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let start = Instant::now();
    let mut child = cmd.spawn().with_context(|| format!("cannot run {cmd:?}"))?;
    let Some(status) = wait_timeout(&mut child, Duration::from_secs(30))? else {
        let _ = child.kill();
        let _ = child.wait();
        bail!("{cmd:?} did not end within 30 s; killed");
    };
    let elapsed = start.elapsed();
    if !status.success() {
        // Once more, to hear why.
        let again = cmd
            .stderr(Stdio::piped())
            .output()
            .map(|o| String::from_utf8_lossy(&o.stderr).into_owned());
        bail!(
            "{cmd:?} failed ({status}): {}",
            again.unwrap_or_default().trim()
        );
    }
    Ok(elapsed)
}
