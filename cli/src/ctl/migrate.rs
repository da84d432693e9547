//! `mrunctl migrate JOB NODE|home`: move a running job.

use clap::Args;

use crate::exit;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The job: its id, which is the pid `mrun` started it with.
    pub job: u32,
    /// Where to: a node name (`local` is an agent on this machine), or `home`.
    pub node: String,
}

pub fn run(args: MigrateArgs) -> ! {
    match crate::jobs::ask(args.job, &format!("migrate {}", args.node)) {
        Ok(text) => {
            crate::outln!("{text}");
            std::process::exit(0)
        }
        // Said as it is: "cannot migrate" would add nothing.
        Err(e @ crate::jobs::AskError::NoJob(_)) => exit::fail("mrunctl", e, exit::FAILURE),
        Err(e) => {
            let e = anyhow::Error::from(e);
            let code = exit::code_of(&e);
            exit::fail(
                "mrunctl",
                format!("cannot migrate job {}: {e:#}", args.job),
                code,
            )
        }
    }
}
