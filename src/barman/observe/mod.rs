//! Observation: what operators and monitoring see of shipping and recovery: status, check and
//! queue administration, Prometheus metrics, and verify (re-reading the bucket against our
//! records).

pub mod admin;
pub mod judge;
pub mod lockcheck;
pub mod metrics;
pub mod verify;
