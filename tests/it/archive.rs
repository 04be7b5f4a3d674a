//! `archive` against Garage and file:// (being written).
