//! `barmans3-dplcompat`: Bareos' storage daemon runs `<program> <op> [VOL [PART]]` once per
//! operation of a dplcompat device; argv goes to the program's dispatcher as is.

fn main() -> std::process::ExitCode {
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    barmans3::dplcompat::run(&args).into()
}
