//! Deliveries and attempts: the durable side of the delivery engine.
//!
//! One folder, one concern per file:
//!
//! * `fan_out.rs`: the outbox side. Inside the transaction that writes an
//!   event, one `deliveries` row per enabled endpoint that wants it (and the
//!   test delivery aimed at one endpoint). When this process runs a delivery
//!   engine the rows are written already leased to it and handed to it in
//!   memory once the commit is durable (the hot path); otherwise they are
//!   written due now and unleased, for any worker's claim loop.
//! * `claims.rs`: leasing due rows ([`Store::claim_due`]), a manual retry's
//!   lease, and recovering failed and dead deliveries. On PostgreSQL
//!   concurrent claimers skip each other's rows; a claim takes each
//!   endpoint's rows through its own slice of the due index and only as
//!   many as the claimer allows that endpoint ([`ClaimLimits`]).
//! * `outcomes.rs`: results written in batches: the attempt, the delivery's
//!   new state, the endpoint's failure streak, and any disable (with its
//!   `endpoint.disabled` event) in one transaction.
//! * `queries.rs`: what the API, the health charts and `/metrics` read.
//! * `bench.rs`: building large backlogs fast, for load tests and the
//!   `bench backlog` command only.
//!
//! This file holds the types they share and the sink committed deliveries
//! are handed to.
//!
//! Nothing here runs while an HTTP request is in flight: leases, not open
//! transactions, keep two workers off one delivery, and a delivery is
//! at-least-once (a worker that dies after sending but before recording
//! sends again after its lease expires).

mod bench;
mod claims;
mod fan_out;
mod outcomes;
mod queries;
mod rows;

pub use claims::ClaimLimits;
pub use fan_out::EndpointMemo;
pub(super) use fan_out::{Audiences, endpoints_changed, fan_out};
pub use queries::{Backlog, DeliveryFilter, EndpointBacklog, HealthFigures, HourFigures};
pub use rows::{AttemptRow, DeliveryRow};

use super::Store;
use super::events::EventRow;
use crate::store::endpoints::EndpointRow;
use std::sync::Arc;

/// A worker's hold on the deliveries it writes or claims.
#[derive(Clone, Debug)]
pub struct Lease {
    /// The node holding it (`locked_by`).
    pub node: Arc<str>,
    /// How long a hold lasts, ms.
    pub ms: i64,
}

/// One delivery ready to be attempted: everything the sender needs, so the
/// hot path reads nothing back from the database.
#[derive(Clone, Debug)]
pub struct DeliveryTicket {
    /// `dlv_…`
    pub delivery_id: String,
    /// Attempts already made.
    pub attempts: u32,
    /// Whether this attempt is the last whatever the schedule: a manual
    /// retry of a dead delivery, or a test ping. A failure makes it `dead`.
    pub final_attempt: bool,
    /// The endpoint as it was when the ticket was made.
    pub endpoint: Arc<EndpointRow>,
    /// The event to deliver.
    pub event: Arc<EventRow>,
}

/// Where committed deliveries go: the delivery engine of this process.
pub trait DeliverySink: Send + Sync {
    /// The lease new deliveries are written under; `None` writes them
    /// unleased and due now (an API-only node).
    fn lease(&self) -> Option<Lease>;
    /// Takes deliveries whose rows are durable.
    fn hand_over(&self, tickets: Vec<DeliveryTicket>);
    /// An endpoint changed (`None`: deleted).
    fn endpoint_changed(&self, id: &str, row: Option<Arc<EndpointRow>>);
    /// Deliveries fell due outside the hot path (a recover, a re-enable).
    fn wake(&self);
}

impl Store {
    /// Connects (or with `None` disconnects) this process's delivery engine.
    pub fn set_delivery_sink(&self, sink: Option<Arc<dyn DeliverySink>>) {
        *self.sink.write().expect("sink lock") = sink;
    }

    /// Disconnects `sink` if it is the one connected (an engine stopping
    /// must not disconnect its successor).
    pub fn remove_delivery_sink(&self, sink: &Arc<dyn DeliverySink>) {
        let mut current = self.sink.write().expect("sink lock");
        if current
            .as_ref()
            .is_some_and(|c| std::ptr::addr_eq(Arc::as_ptr(c), Arc::as_ptr(sink)))
        {
            *current = None;
        }
    }

    pub(super) fn delivery_sink(&self) -> Option<Arc<dyn DeliverySink>> {
        self.sink.read().expect("sink lock").clone()
    }

    /// The lease new deliveries are written under.
    pub(super) fn delivery_lease(&self) -> Option<Lease> {
        self.delivery_sink().and_then(|s| s.lease())
    }

    /// Hands committed deliveries to the engine (dropped when there is none:
    /// their rows are due and unleased, or leased and will fall due).
    pub(super) fn hand_over(&self, tickets: Vec<DeliveryTicket>) {
        if tickets.is_empty() {
            return;
        }
        if let Some(sink) = self.delivery_sink() {
            sink.hand_over(tickets);
        }
    }
}

/// What a delivery becomes after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum NextState {
    /// A 2xx: done.
    Succeeded,
    /// Failed; try again at this time (Unix ms).
    RetryAt(i64),
    /// Failed and out of attempts.
    Dead,
    /// Not attempted (its endpoint is disabled or gone): release the lease,
    /// keep the state.
    Held,
}

/// The result of one attempt, ready to be recorded.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The delivery.
    pub delivery_id: String,
    /// Its endpoint.
    pub endpoint_id: String,
    /// Its account.
    pub account_id: String,
    /// The attempt, unless the delivery was held.
    pub attempt: Option<AttemptRow>,
    /// The delivery's new state.
    pub next: NextState,
    /// The receiver answered 410 Gone: disable the endpoint now (delete it
    /// when it is a REST hook).
    pub gone: bool,
}

/// An endpoint a batch of outcomes disabled (or deleted).
#[derive(Clone, Debug)]
pub struct DisabledEndpoint {
    /// The endpoint as it now is.
    pub endpoint: EndpointRow,
    /// Whether it was deleted (a REST hook answering 410).
    pub deleted: bool,
}
