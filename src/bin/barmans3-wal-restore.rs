//! `barmans3-wal-restore`: PostgreSQL's lean `restore_command`, the arguments of `barmans3
//! wal-restore`; see [`barmans3::app::lean_wal_restore`].

fn main() -> std::process::ExitCode {
    barmans3::app::lean_wal_restore(std::env::args_os().skip(1).collect()).into()
}
