//! Delivery: getting events to the endpoints that subscribed to them.
//!
//! Events are written by the store in the same transaction as the change that
//! caused them, together with one delivery per endpoint that wants them; this
//! room sends those deliveries, signs them, and records each attempt.
//!
//! The pieces, in the order a delivery meets them:
//!
//! - [`engine`] — one process's engine: takes committed deliveries in memory
//!   (the hot path), claims due ones from the database under a lease
//!   (retries, restarts, other nodes), and can be stepped by tests.
//! - [`dispatcher`] — the in-memory queue: per-endpoint lanes with bounded
//!   concurrency and rate limits ([`ratelimit`]), so one slow endpoint cannot
//!   starve the others.
//! - [`attempt`] — one attempt: render the payload ([`format`](mod@format)),
//!   sign it ([`signing`]), send it through the guarded client ([`http`],
//!   [`ssrf`]) and decide what the delivery becomes ([`schedule`]).
//! - [`recorder`] — writes attempt results in batches.
//! - [`rules`] — what an endpoint may be configured with.
//! - [`clock`] — the scheduling clock (steppable in tests).
//! - [`outbox`] — the channel sender: the bots' replies to messaging
//!   platforms, in order per conversation, with the same retries, attempt
//!   log and SSRF guard.
//!
//! Invariants shared by the modules: nothing here panics on user input, no
//! database transaction is open while a request is in flight, no outbound
//! connection is opened to an address the SSRF guard has not approved, and
//! delivery is at-least-once with the event id as `webhook-id` on every try.

pub mod attempt;
pub mod clock;
pub mod dispatcher;
pub mod engine;
pub mod format;
pub mod http;
pub mod outbox;
pub mod ratelimit;
pub mod recorder;
pub mod rules;
pub mod schedule;
pub mod signing;
pub mod ssrf;

pub use attempt::{Delivery, Settings};
pub use engine::Engine;
