//! Events: the outbox. Rows are inserted only inside the transaction of the
//! change that caused them (a chat turn, a cancellation, a publish), so no
//! event is lost and none is invented.

use super::deliveries::{Audiences, DeliveryTicket, Lease, fan_out};
use super::{Conn, Page, PageRequest, Result, Row, Store, StoreError, now_ms};
use crate::domain::ids::new_id;

/// An event as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct EventRow {
    /// `evt_…`, time-sortable.
    pub id: String,
    /// Owning account.
    pub account_id: String,
    /// The bot it concerns.
    pub bot_id: String,
    /// e.g. `message.received`.
    pub event_type: String,
    /// The conversation, when there is one.
    pub conversation_id: Option<String>,
    /// The payload, JSON.
    pub data: String,
    /// Unix ms.
    pub created_at: i64,
    /// The W3C trace id of the request that caused it, when there was one:
    /// its deliveries send a `traceparent` in this trace.
    pub trace_id: Option<String>,
}

impl EventRow {
    /// A new event with a fresh id, stamped now, in the running task's
    /// trace ([`crate::trace::current`]) if any.
    pub fn new(
        account_id: &str,
        bot_id: &str,
        event_type: &str,
        conversation_id: Option<&str>,
        data: String,
    ) -> Self {
        Self {
            id: new_id("evt"),
            account_id: account_id.to_owned(),
            bot_id: bot_id.to_owned(),
            event_type: event_type.to_owned(),
            conversation_id: conversation_id.map(str::to_owned),
            data,
            created_at: now_ms(),
            trace_id: crate::trace::current().map(|t| t.as_str().to_owned()),
        }
    }
}

pub(super) const COLUMNS: &str =
    "id, account_id, bot_id, type, conversation_id, data, created_at, trace_id";

/// Reads an event from `row` by column name (a row of the event columns, or
/// that part of a joined row).
pub(super) fn event_from(row: &Row) -> Result<EventRow> {
    Ok(EventRow {
        id: row.text_at("id")?,
        account_id: row.text_at("account_id")?,
        bot_id: row.text_at("bot_id")?,
        event_type: row.text_at("type")?,
        conversation_id: row.opt_text_at("conversation_id")?,
        data: row.text_at("data")?,
        created_at: row.int_at("created_at")?,
        trace_id: row.opt_text_at("trace_id")?,
    })
}

/// Inserts an event inside the caller's transaction, with one delivery per
/// endpoint that wants it (written under `lease` when given); returns those.
pub(super) fn insert_event(
    c: &mut dyn Conn,
    e: &EventRow,
    idempotency: Option<(&str, &str)>,
    lease: Option<&Lease>,
) -> Result<Vec<DeliveryTicket>> {
    insert_row(c, e, idempotency)?;
    fan_out(c, &mut Audiences::default(), e, lease, false)
}

/// Inserts several events inside the caller's transaction (a turn's), with
/// their deliveries; each bot's endpoints are read once for all of them.
pub(super) fn insert_events(
    c: &mut dyn Conn,
    events: &[EventRow],
    lease: Option<&Lease>,
) -> Result<Vec<DeliveryTicket>> {
    // Every event first, then every fan-out: the same inserts one after
    // another go out as multi-row statements.
    for e in events {
        insert_row(c, e, None)?;
    }
    let mut audiences = Audiences::default();
    let mut tickets = Vec::new();
    for e in events {
        tickets.extend(fan_out(c, &mut audiences, e, lease, false)?);
    }
    Ok(tickets)
}

/// Inserts an event without fanning it out (a test event aimed at one
/// endpoint).
pub(super) fn insert_event_only(c: &mut dyn Conn, e: &EventRow) -> Result<()> {
    insert_row(c, e, None)
}

pub(super) fn insert_row(
    c: &mut dyn Conn,
    e: &EventRow,
    idempotency: Option<(&str, &str)>,
) -> Result<()> {
    c.send(
        "INSERT INTO events (id, account_id, bot_id, type, conversation_id, data, created_at, trace_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            (&e.id).into(),
            (&e.account_id).into(),
            (&e.bot_id).into(),
            (&e.event_type).into(),
            e.conversation_id.as_deref().into(),
            (&e.data).into(),
            e.created_at.into(),
            e.trace_id.as_deref().into(),
        ],
    )?;
    if let Some((key, hash)) = idempotency {
        // The key lives in its own table (a partitioned events table takes
        // no unique index without the id). A key whose event was pruned is
        // free again; one whose event is kept was taken in between by a
        // concurrent publish.
        let taken = c.execute(
            "INSERT INTO event_keys (account_id, bot_id, idempotency_key, event_id, request_hash)
             VALUES ($1, $2, $3, $4, $5)
             ON CONFLICT (account_id, bot_id, idempotency_key) DO UPDATE
                SET event_id = excluded.event_id, request_hash = excluded.request_hash
                WHERE NOT EXISTS (SELECT 1 FROM events WHERE events.id = event_keys.event_id)",
            &[
                (&e.account_id).into(),
                (&e.bot_id).into(),
                key.into(),
                (&e.id).into(),
                hash.into(),
            ],
        )?;
        if taken == 0 {
            return Err(StoreError::Conflict(
                "this Idempotency-Key is being used by a concurrent request".into(),
            ));
        }
    }
    Ok(())
}

/// Filters for listing events.
#[derive(Clone, Debug, Default)]
pub struct EventFilter {
    /// Only this bot's.
    pub bot_id: Option<String>,
    /// Only this type.
    pub event_type: Option<String>,
    /// Only events at or after this time (Unix ms).
    pub since_ms: Option<i64>,
    /// Only this conversation's.
    pub conversation_id: Option<String>,
}

/// What publishing an event did.
#[derive(Clone, Debug)]
pub enum Published {
    /// A new event was written.
    Created(EventRow),
    /// The idempotency key was seen with the same body: the earlier event.
    Replayed(EventRow),
}

impl Store {
    /// Events of an account, newest first.
    pub async fn list_events(
        &self,
        account_id: &str,
        filter: EventFilter,
        page: PageRequest,
    ) -> Result<Page<EventRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM events
             WHERE account_id = $1
               AND (CAST($2 AS TEXT) IS NULL OR bot_id = $2)
               AND (CAST($3 AS TEXT) IS NULL OR type = $3)
               AND (CAST($4 AS BIGINT) IS NULL OR created_at >= $4)
               AND (CAST($5 AS TEXT) IS NULL OR conversation_id = $5)
               AND (CAST($6 AS TEXT) IS NULL OR id < $6)
             ORDER BY id DESC LIMIT $7"
        );
        let params = vec![
            account_id.into(),
            filter.bot_id.into(),
            filter.event_type.into(),
            filter.since_ms.into(),
            filter.conversation_id.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, event_from, |e| e.id.clone())
            .await
    }

    /// One event of the account.
    pub async fn get_event(&self, account_id: &str, id: &str) -> Result<EventRow> {
        let (account_id, id) = (account_id.to_owned(), id.to_owned());
        self.read(move |c| {
            event_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM events WHERE account_id = $1 AND id = $2"),
                &[account_id.into(), id.into()],
            )?)
        })
        .await
    }
}
