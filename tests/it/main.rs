//! barmans3's integration tests: one binary, so one Garage serves the whole run and the
//! helpers in [`common`] are compiled once. Each module is one area; the real servers (Garage,
//! PostgreSQL, Barman) are started by the tests themselves on 127.0.0.1, and a missing one is
//! a failure that says how to install it, never a skip.

mod common;

mod archive;
mod bad_input;
mod barman_cloud;
mod barman_e2e;
mod barman_local;
mod cli_config;
mod cluster;
mod conformance;
mod crash;
mod crypt;
mod crypt_barman;
mod crypt_engine;
mod crypt_sync;
mod crypt_volume;
mod dba;
mod demo;
mod disk_space;
mod dplcompat;
mod drill;
mod faults;
mod follow;
mod gluster_real;
mod gpplugin;
mod hermetic;
mod memory;
mod metrics;
mod never_wrong;
mod nochange;
mod open_files;
mod operator;
mod packaging;
mod parsers_fuzz;
mod protect;
mod replicate;
mod replicate_bounds;
mod reqlog;
mod reuse;
mod secrets;
mod server_down;
mod ssec;
mod stored_checksums;
mod sync;
mod tls;
mod transfer;
mod verify;
mod versions;
mod volume;
mod walrestore;
mod walrestore_pg;
mod walrestore_spool;
mod walsync;
