//! The domain: accounts, bots, flows, conversations and events.
//!
//! Everything here is pure — no I/O, no HTTP framework, no SQL driver — so
//! it can be tested in isolation and reused by every front end.

pub mod account;
pub mod bot;
pub mod ids;
