//! `barmans3`: parse arguments, run, exit with the documented code.

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = barmans3::cli::Cli::parse();
    barmans3::app::main_with(cli).into()
}
