//! botwire: a self-hosted chatbot platform whose bots talk to the rest of a
//! business through webhooks.
//!
//! The crate is laid out by concern, so each room can be found by its name:
//!
//! * [`domain`] — bots, flows, conversations and events. Pure: no I/O, no HTTP
//!   framework, no SQL driver.
//! * [`store`] — durable state. One [`store::Backend`] trait with a SQLite and a
//!   PostgreSQL implementation, one group-commit writer in front of both.
//! * [`delivery`] — getting events to the endpoints that subscribed to them.
//! * [`api`] — the JSON HTTP API, one module per resource.
//! * [`runtime`] — runs chat turns and imports bots; between the API and the store.
//! * [`cli`] — the `botwire` command line.
//! * [`config`] — layered configuration: defaults, file, environment, flags.
//! * [`auth`] — API keys: generation, keyed hashing, scopes.
#![forbid(unsafe_code)]

pub mod api;
pub mod auth;
pub mod cli;
pub mod config;
pub mod delivery;
pub mod domain;
pub mod runtime;
pub mod store;
pub mod trace;
