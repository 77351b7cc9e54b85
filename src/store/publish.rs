//! Publishing events from outside (`POST /v1/bots/{bot}/events`): the
//! publishes that wait at the same moment go into the database as one
//! write.
//!
//! Each publish joins a queue; the one that finds it empty submits a write
//! that, when the writer runs it, takes everything queued by then. So a
//! busy API turns N concurrent publishes into one write whose fan-out
//! reads each bot's endpoints once (on PostgreSQL: one round trip for the
//! lot instead of one each), and an idle one still writes a lone publish at
//! once. Each caller is answered with its own result once the commit is
//! durable.
//!
//! A publish that fails (an unknown bot, an Idempotency-Key used with
//! another body) fails the shared write. Its caller gets that error and
//! the others are written again one by one, so nobody pays for another's
//! mistake with more than a retry.

use super::deliveries::{Audiences, DeliveryTicket, Lease, fan_out};
use super::events::{COLUMNS, EventRow, Published, event_from, insert_row};
use super::{Conn, Result, Store, StoreError};
use crate::domain::endpoint;
use std::sync::{Arc, Mutex};
use tokio::sync::oneshot;

/// One publish waiting for its write.
struct Queued {
    event: EventRow,
    idempotency: Option<(String, String)>,
    reply: oneshot::Sender<Result<Published>>,
}

/// Publishes waiting to be taken by a write.
#[derive(Default)]
pub(super) struct PublishQueue(Mutex<Vec<Queued>>);

/// The publishes one write took, and which of them failed it.
#[derive(Default)]
struct Taken {
    items: Vec<Queued>,
    failed: Option<usize>,
}

impl Store {
    /// Publishes an event from outside. With an idempotency key, the same
    /// key and body return the first event; the same key with another body
    /// is a `Conflict`. A bot that does not exist is `NotFound`.
    pub async fn publish_event(
        &self,
        event: EventRow,
        idempotency: Option<(String, String)>,
    ) -> Result<Published> {
        let (reply, answer) = oneshot::channel();
        let lead = {
            let mut queue = self.publishes.0.lock().expect("publish queue");
            queue.push(Queued {
                event,
                idempotency,
                reply,
            });
            queue.len() == 1
        };
        if lead {
            // Its own task: the write must be answered even if this
            // caller goes away (a client that hangs up).
            let store = self.clone();
            tokio::spawn(async move { store.write_queued().await });
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the publish was not answered".into()))?
    }

    /// Writes what is queued when the writer gets to it, and answers each.
    async fn write_queued(&self) {
        let lease = self.delivery_lease();
        let queue = self.publishes.clone();
        let taken = Arc::new(Mutex::new(Taken::default()));
        let state = taken.clone();
        // Without a savepoint: a write that may run again (see
        // `Store::write_again`). Its first run takes the queue; a run
        // again writes the same publishes.
        let outcome = self
            .write_again(move |c| {
                let mut state = state.lock().expect("taken publishes");
                if state.items.is_empty() {
                    state.items = std::mem::take(&mut *queue.0.lock().expect("publish queue"));
                }
                state.failed = None;
                // Every event first, then every fan-out: the same inserts
                // one after another go out as multi-row statements.
                let mut admitted = Vec::with_capacity(state.items.len());
                for (i, q) in state.items.iter().enumerate() {
                    let idempotency = q
                        .idempotency
                        .as_ref()
                        .map(|(k, h)| (k.as_str(), h.as_str()));
                    match admit(c, &q.event, idempotency) {
                        Ok(replayed) => admitted.push(replayed),
                        Err(e) => {
                            state.failed = Some(i);
                            return Err(e);
                        }
                    }
                }
                let mut audiences = Audiences::default();
                let mut results = Vec::with_capacity(state.items.len());
                for ((i, q), replayed) in state.items.iter().enumerate().zip(admitted) {
                    if let Some(earlier) = replayed {
                        results.push((Published::Replayed(earlier), Vec::new()));
                        continue;
                    }
                    match fan_out(c, &mut audiences, &q.event, lease.as_ref(), true) {
                        Ok(tickets) => results.push((Published::Created(q.event.clone()), tickets)),
                        Err(e) => {
                            state.failed = Some(i);
                            return Err(e);
                        }
                    }
                }
                Ok(results)
            })
            .await;
        let Taken { mut items, failed } =
            std::mem::take(&mut *taken.lock().expect("taken publishes"));
        if items.is_empty() {
            // The write never ran (the writer has stopped): what waits is
            // answered with its error, or the queue would never empty.
            items = std::mem::take(&mut *self.publishes.0.lock().expect("publish queue"));
        }
        match (outcome, failed) {
            (Ok(results), _) => {
                let mut tickets = Vec::new();
                for (q, (published, t)) in items.into_iter().zip(results) {
                    tickets.extend(t);
                    let _ = q.reply.send(Ok(published));
                }
                self.hand_over(tickets);
            }
            (Err(e), Some(bad)) => {
                // One publish failed the write: it gets the error, the
                // others go again, each in a write of its own.
                for (i, q) in items.into_iter().enumerate() {
                    if i == bad {
                        let _ = q.reply.send(Err(e.clone()));
                        continue;
                    }
                    let store = self.clone();
                    tokio::spawn(async move { store.write_alone(q).await });
                }
            }
            (Err(e), None) => {
                // The commit failed: nothing was written.
                for q in items {
                    let _ = q.reply.send(Err(e.clone()));
                }
            }
        }
    }

    /// Writes one publish on its own.
    async fn write_alone(&self, q: Queued) {
        let lease = self.delivery_lease();
        let Queued {
            event,
            idempotency,
            reply,
        } = q;
        let outcome = self
            .write_again(move |c| {
                let idempotency = idempotency.as_ref().map(|(k, h)| (k.as_str(), h.as_str()));
                publish_one(
                    c,
                    &mut Audiences::default(),
                    &event,
                    idempotency,
                    lease.as_ref(),
                )
            })
            .await;
        let _ = reply.send(outcome.map(|(published, tickets)| {
            self.hand_over(tickets);
            published
        }));
    }
}

/// Writes one publish inside the caller's transaction.
fn publish_one(
    c: &mut dyn Conn,
    audiences: &mut Audiences,
    event: &EventRow,
    idempotency: Option<(&str, &str)>,
    lease: Option<&Lease>,
) -> Result<(Published, Vec<DeliveryTicket>)> {
    if let Some(earlier) = admit(c, event, idempotency)? {
        return Ok((Published::Replayed(earlier), Vec::new()));
    }
    let tickets = fan_out(c, audiences, event, lease, true)?;
    Ok((Published::Created(event.clone()), tickets))
}

/// Checks a publish and writes its event (not its deliveries); answers
/// the earlier event when its Idempotency-Key replays one.
fn admit(
    c: &mut dyn Conn,
    event: &EventRow,
    idempotency: Option<(&str, &str)>,
) -> Result<Option<EventRow>> {
    // The bot is checked in the transaction, not by a read before it: no
    // event for a bot deleted in between. For an event of one bot the
    // fan-out's own query checks it.
    if endpoint::account_wide(&event.event_type) {
        c.query_one(
            "SELECT 1 FROM bots WHERE account_id = $1 AND id = $2",
            &[(&event.account_id).into(), (&event.bot_id).into()],
        )?;
    }
    if let Some((key, hash)) = idempotency {
        let existing = c.query_opt(
            &format!(
                "SELECT {COLUMNS}, request_hash FROM events
                 JOIN (SELECT event_id, request_hash FROM event_keys
                       WHERE account_id = $1 AND bot_id = $2 AND idempotency_key = $3) k
                   ON k.event_id = id"
            ),
            &[
                (&event.account_id).into(),
                (&event.bot_id).into(),
                key.into(),
            ],
        )?;
        if let Some(row) = existing {
            if row.opt_text_at("request_hash")?.as_deref() == Some(hash) {
                return Ok(Some(event_from(&row)?));
            }
            return Err(StoreError::Conflict(
                "this Idempotency-Key was already used with a different request body".into(),
            ));
        }
    }
    insert_row(c, event, idempotency)?;
    Ok(None)
}

#[cfg(test)]
mod tests {
    use crate::store::StoreError;
    use crate::store::events::EventRow;
    use crate::store::testing::TestStore;
    use std::time::Duration;

    /// A publish to a store whose writer has stopped is answered with the
    /// error, and so is the next: the queue does not stay full.
    #[tokio::test]
    async fn publishes_after_the_writer_stopped_are_answered() {
        let t = TestStore::open().await;
        t.store.close().await;
        for _ in 0..2 {
            let event = EventRow::new(&t.account, "alpha", "order.paid", None, "{}".into());
            let answer =
                tokio::time::timeout(Duration::from_secs(5), t.store.publish_event(event, None))
                    .await
                    .expect("answered");
            assert!(
                matches!(answer, Err(StoreError::Unavailable(_))),
                "{answer:?}"
            );
        }
    }
}
