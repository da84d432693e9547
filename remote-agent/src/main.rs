//! `mrun-agent`: started on a node (over an SSH exec channel, or as a local subprocess for the
//! node named `local`), it speaks the mrun wire protocol on its stdin/stdout: it restores the
//! process images it receives, relays their stdio, delivers signals, reports their end, and
//! checkpoints them again to send them on.

#![forbid(unsafe_code)]

mod home;
mod pty;
mod served;
mod session;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    // Hidden: the single-threaded process that restores one image and supervises it.
    if args.get(1).map(String::as_str) == Some("restore-helper") {
        let terminal = args.iter().any(|a| a == "--terminal");
        let home_files = args.iter().any(|a| a == "--home-files");
        mrun_core::supervise::restore_helper(3, 4, terminal, home_files);
    }
    match args.get(1).map(String::as_str) {
        None => {}
        Some("--version" | "-V") => {
            println!(
                "mrun-agent {} (protocol {})",
                env!("CARGO_PKG_VERSION"),
                mrun_core::wire::PROTOCOL_VERSION
            );
            return;
        }
        Some(other) => {
            eprintln!(
                "mrun-agent: unexpected argument {other:?}; it takes none (it is started by mrun)"
            );
            std::process::exit(2);
        }
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("mrun-agent: cannot start: {e}");
            std::process::exit(1);
        }
    };
    let done = runtime.block_on(session::run());
    // The reader of stdin may sit in a blocking read that nothing can cancel (tokio's stdin):
    // everything for home was written already, so do not wait for it.
    runtime.shutdown_background();
    if let Err(e) = done {
        eprintln!("mrun-agent: {e:#}");
        std::process::exit(1);
    }
}
