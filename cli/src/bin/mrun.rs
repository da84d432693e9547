//! `mrun COMMAND [ARGS]...`: run COMMAND as a job that can move between machines;
//! `mrun --each COMMAND ...`: a batch of such jobs, one per argument.

use clap::Parser;

fn main() {
    // Hidden roles, as options so that no command name is taken: the single-threaded helper
    // that restores a returning job at home, and the home daemon.
    match std::env::args_os()
        .nth(1)
        .as_deref()
        .and_then(|a| a.to_str())
    {
        Some("--restore-helper") => mrun_core::supervise::restore_helper(3, 4, false),
        Some("--daemon") => mrun::daemon::run(),
        _ => {}
    }
    let cli = mrun::args::MrunCli::parse();
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
        };
        mrun::each::run(cli.command, options)
    }
    let cfg = mrun::nodes::config().unwrap_or_else(|e| {
        eprintln!("mrun: warning: {e:#}");
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
