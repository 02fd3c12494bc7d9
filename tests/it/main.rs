//! Every integration test, in one test binary.
//!
//! Cargo makes each top-level file in `tests/` a crate of its own: each one compiled
//! `support/` again and linked the library and all its dependencies again, and the
//! binaries ran one after another. One binary builds and links once, and its tests share
//! one harness: `cargo test --test it <filter>` picks any of them by module path
//! (`routing::`, `faults::`, ...).
//!
//! One binary also means tests from every file run side by side, so nothing here may
//! depend on being alone: each test starts its own nats-server, worker and MockupDB, each
//! on a port the kernel picked and the process reported (never a "free" port guessed in
//! advance), and every wait is a wait for a condition ([`support::eventually`]), never a
//! fixed sleep.

mod support;

mod backstop;
mod chaos;
mod cli;
mod compose;
mod contract_file;
mod contract_mongodb;
mod drift;
mod faults;
mod layout;
mod loadgen;
mod mongo_cli;
mod mongo_wire;
mod nats_auth;
mod publisher;
mod pull;
mod replay;
mod routing;
mod telemetry;
