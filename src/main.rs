//! `barmans3`: the arguments go through `cli` into a validated invocation, which `app` runs; a
//! command line `cli` rejects exits with the code its command promises. Exit with the documented
//! code.

use barmans3::{Exit, app, barman, cli};

fn main() -> std::process::ExitCode {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let exit = match cli::parse(args.clone()) {
        Ok(inv) => app::run(inv),
        Err(rejected) => {
            rejected.print();
            let subcommand = cli::subcommand_name(&args);
            Exit::rejected(
                subcommand.as_deref(),
                rejected.exit_code(),
                barman::ship::basesync::retry_hook,
            )
        }
    };
    exit.into()
}
