//! `mrun COMMAND [ARGS]...`: run COMMAND as a job that can move between machines;
//! `mrun --each COMMAND ...`: a batch of such jobs, one per argument.

fn main() {
    // Hidden roles, as options so that no command name is taken: the single-threaded helper
    // that restores a returning job at home, and the home daemon.
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(|a| a.to_str())
    {
        Some("--restore-helper") => mrun_core::supervise::restore_helper(3, 4, false, false),
        Some("--daemon") => mrun::daemon::run(),
        _ => {}
    }
    // A job of `mrun --each` (started as `mrun --batch-job ...`): the batch already warned
    // about a broken config file, so the job does not repeat it.
    let mut words: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let batch_job = words.get(1).is_some_and(|w| w == "--batch-job");
    if batch_job {
        words.remove(1);
    }
    let cli: mrun::args::MrunCli = mrun::print::parse_args(words);
    if let Some(list) = cli.nodes.as_deref() {
        mrun::nodes::set_command_line(list);
    }
    // Only stdin, stdout and stderr go on to the job, unless --keep-fd says otherwise.
    let kept = mrun::fds::take_inherited(&cli.keep_fd);
    if cli.each {
        let options = mrun::each::EachOptions {
            jobs: cli.jobs,
            joblog: cli.joblog,
            home: cli.home,
            kept_fds: kept,
            keep_order: cli.keep_order,
        };
        mrun::each::run(cli.command, options)
    }
    let cfg = mrun::nodes::config().unwrap_or_else(|e| {
        if !batch_job {
            mrun::errln!("mrun: warning: {e:#}; {}", mrun::nodes::DEFAULTS_APPLY);
        }
        mrun::nodes::ConfigFile::default()
    });
    let pinned = cli.home
        || cli
            .command
            .first()
            .is_some_and(|p| mrun::nodes::stays_home(&cfg, p));
    let balanced = !pinned && cfg.balances();
    mrun::run::deputy::run(cli.command, pinned, balanced, kept)
}
