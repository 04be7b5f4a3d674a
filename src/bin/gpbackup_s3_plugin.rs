//! `gpbackup_s3_plugin`: gpbackup runs `<executable> <command> <config> ...`; argv goes to the
//! plugin dispatcher as is.

fn main() -> std::process::ExitCode {
    let argv: Vec<String> = std::env::args().collect();
    barmans3::gpplugin::run(&argv, &mut std::io::stdout(), &mut std::io::stderr()).into()
}
