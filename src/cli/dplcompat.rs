//! The command line of `barmans3-dplcompat` as clap describes it, for its man page only: the
//! program reads its arguments itself ([`crate::dplcompat::protocol`]), since Bareos' storage
//! daemon, not a person, writes them and every error must be one line.

use clap::builder::PossibleValue;
use clap::{Arg, Command};

/// The operations with what each does, in the protocol's order.
const OPERATIONS: &[(&str, &str)] = &[
    (
        "options",
        "print the device options the program reads, one per line",
    ),
    (
        "testconnection",
        "reach the store with the configured credentials; exit 0 when it answers",
    ),
    (
        "list",
        "VOLUME: print a PART SIZE line per part (nothing for a volume without parts)",
    ),
    (
        "stat",
        "VOLUME PART: print the part's size; exit 1 when it does not exist",
    ),
    (
        "upload",
        "VOLUME PART: store standard input as the part, replacing it only once all of it arrived and was verified",
    ),
    (
        "download",
        "VOLUME PART: write the part to standard output, verified against the store's checksum",
    ),
    (
        "remove",
        "VOLUME PART: delete the part; exit 1 when it does not exist",
    ),
];

/// The program's command: an operation of the dplcompat protocol and its operands.
pub fn command() -> Command {
    Command::new("barmans3-dplcompat")
        .version(env!("CARGO_PKG_VERSION"))
        .about("Object-storage program for Bareos' dplcompat storage backend (Bareos 24 and later)")
        .long_about(LONG_ABOUT)
        .after_long_help(AFTER)
        .arg(
            Arg::new("OPERATION")
                .required(true)
                .help("What to do")
                .value_parser(
                    OPERATIONS
                        .iter()
                        .map(|(name, help)| PossibleValue::new(*name).help(*help))
                        .collect::<Vec<_>>(),
                ),
        )
        .arg(
            Arg::new("VOLUME")
                .help("Volume name, as Bareos names it (letters, digits, spaces and - _ . : /)"),
        )
        .arg(Arg::new("PART").help("Part (chunk) number, four digits: 0000 to 9999"))
}

const LONG_ABOUT: &str = "\
Object-storage program for Bareos' dplcompat storage backend (Bareos 24 and later). The storage \
daemon runs it once per operation, with the device options as environment variables. Parts are \
stored as <prefix>/<VOLUME>/<PART>, the layout of Bareos' droplet backend and of its s3cmd \
wrapper, so volumes move between them and `barmans3 volume get` reads them. Nothing is printed \
on standard error unless the call fails (the daemon reads it with the data). --help and \
--version answer as usual.

Device options (Device Options = \"program=/usr/bin/barmans3-dplcompat,config=...,...\"):

config: the barmans3 configuration (default: BARMANS3_CONFIG, then /etc/barmans3/barmans3.yaml); \
its s3: section says where the store is and how to reach it; it must be readable by the bareos \
user and by nobody else.

bucket: the bucket, instead of the configuration's.

prefix: the key prefix inside the bucket, instead of the configuration's.

base_url: s3://BUCKET[/PATH], as Bareos' s3cmd wrapper takes it: bucket and prefix in one.

storage_class: the storage class of the parts (STANDARD, STANDARD_IA, ...).

s3cfg: the s3cmd configuration file of a device that used Bareos' s3cmd wrapper, read instead \
of a barmans3 configuration (endpoint, region, credentials; with bucket= or base_url=), so \
that only program= changes.

s3cmd_prog: the s3cmd wrapper's option, accepted and unused.

timeout: seconds a testconnection, list, stat or remove may take, retries included (default \
20; keep it below the device's program_timeout, 30 by default); it also caps the wait for one \
answer of the store in every call (s3.connect_timeout, s3.read_timeout), so an upload or \
download whose store stops answering fails with a line saying why once its s3.max_attempts \
waits are spent, before the daemon's SIGTERM when timeout times max_attempts stays below \
program_timeout.";

const AFTER: &str = "\
Exit status: 0 success; 1 the operation failed (the store, a missing part, a checksum); 2 usage \
or configuration error (unknown operation, bad volume or part name, bad option or \
configuration), nothing was sent; 130 stopped by SIGTERM or SIGINT, an upload abandoned and the \
part left as it was.";

#[cfg(test)]
mod tests {
    #[test]
    fn the_man_page_names_every_operation_the_program_takes() {
        let names: Vec<&str> = super::OPERATIONS.iter().map(|o| o.0).collect();
        assert_eq!(names, crate::dplcompat::protocol::OPERATIONS);
        super::command().debug_assert();
        for o in crate::dplcompat::protocol::OPTION_NAMES {
            assert!(super::LONG_ABOUT.contains(&format!("{o}:")), "{o}");
        }
    }
}
