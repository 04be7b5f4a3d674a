//! `barmans3`: hand the arguments to the application, exit with the documented code.

fn main() -> std::process::ExitCode {
    barmans3::app::main(std::env::args_os().collect()).into()
}
