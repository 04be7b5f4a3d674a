//! `sync` against Garage and file:// (being written).
