//! The domain: accounts, bots, flows and how conversations run through
//! them, merge tags, answer validation, quotes, calendars, the event
//! catalog, the rules for outbound calls' URLs and headers, endpoint
//! policies (event filter, disable policy, health) and signing secrets.
//!
//! Nothing here does I/O, touches a database or knows about HTTP: every
//! function is a plain computation over its arguments (the current time is
//! passed in), so the store, the API and the workers can call it freely and
//! tests need no setup.

pub mod account;
pub mod bot;
pub mod broadcast;
pub mod calendar;
pub mod csv;
pub mod endpoint;
pub mod endpoint_health;
pub mod engine;
pub mod event;
pub mod expansion;
pub mod flow;
pub mod ids;
pub mod merge;
pub mod outbound;
pub mod people;
pub mod quote;
pub mod retention;
pub mod secret;
pub mod validate;
