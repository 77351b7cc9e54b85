//! The integration tests: one test binary, so the crate is linked once.
//!
//! Each file beside this one is a module of that binary, named after what
//! it tests; `common` holds the harness (a real server over a fresh
//! database, the browser driver, the lock heavy tests take). To add tests,
//! put them in an existing module or add `NAME.rs` here and a `mod NAME;`
//! line below. Run one module with `cargo test --test it NAME::`.
//!
//! Every test of every module runs in this one process: anything
//! process-wide (the metrics recorder, environment variables, the current
//! folder, fixed ports) is shared, so a test never changes it and reads
//! shared counters as before/after differences; see `common`.

mod common;

mod api;
mod audit;
mod backlog;
mod broadcast_console;
mod broadcasts;
mod browser;
mod builder;
mod channels;
mod chaos;
mod cli;
mod cluster;
mod config;
mod conversations;
mod delivery;
mod hostile;
mod inbox;
mod outbox;
mod partitions;
mod people;
mod pg_client;
mod reliability;
mod retention;
mod ssrf;
mod store_conformance;
mod story;
mod widget;
