//! `volume` against Garage and file:// (being written).
