//! `reqlog` against Garage and file:// (being written).
