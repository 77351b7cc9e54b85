//! Starting due broadcasts: `scheduled` becomes `running` with one pending
//! recipient per contact the segment matches at that moment, and the
//! `broadcast.started` event, all in one transaction.

use super::load;
use crate::domain::event::EventType;
use crate::domain::people::ContactFilter;
use crate::store::contacts::scan;
use crate::store::events::{EventRow, insert_event};
use crate::store::{Result, Store};
use serde_json::json;

impl Store {
    /// Starts the broadcasts due at `now` (at most `limit`): each becomes
    /// `running` with one pending recipient per contact its segment matches
    /// now. Returns the ids started. A broadcast whose segment is gone
    /// starts with no recipients, and so completes.
    pub async fn start_due_broadcasts(&self, now: i64, limit: usize) -> Result<Vec<String>> {
        let skip = self.backend.skip_locked();
        self.write(move |c| {
            let due = c.query(
                &format!(
                    "SELECT id FROM broadcasts WHERE state = 'scheduled' AND schedule_at <= $1
                     ORDER BY schedule_at LIMIT $2 {skip}"
                ),
                &[now.into(), i64::try_from(limit).unwrap_or(1).into()],
            )?;
            let mut started = Vec::new();
            for r in due {
                let b = load(c, &r.text(0)?)?;
                let filter = c
                    .query_opt(
                        "SELECT filter FROM segments WHERE account_id = $1 AND bot_id = $2 AND id = $3",
                        &[(&b.account_id).into(), (&b.bot_id).into(), (&b.segment_id).into()],
                    )?
                    .map(|r| r.text(0))
                    .transpose()?
                    .and_then(|f| ContactFilter::compile(&f).ok());
                if let Some(filter) = filter {
                    let mut after = None;
                    loop {
                        let page = scan(
                            c,
                            (&b.account_id, &b.bot_id),
                            Some(&filter),
                            None,
                            after,
                            10_000,
                            10_000,
                        )?;
                        for contact in &page.items {
                            c.execute(
                                "INSERT INTO broadcast_recipients (broadcast_id, contact_id, status, updated_at)
                                 VALUES ($1, $2, 'pending', $3)",
                                &[(&b.id).into(), (&contact.id).into(), now.into()],
                            )?;
                        }
                        match page.next_after {
                            Some(next) => after = Some(next),
                            None => break,
                        }
                    }
                }
                c.execute(
                    "UPDATE broadcasts SET state = 'running', started_at = $1, updated_at = $1 WHERE id = $2",
                    &[now.into(), (&b.id).into()],
                )?;
                let recipients = c
                    .query_one(
                        "SELECT COUNT(*) FROM broadcast_recipients WHERE broadcast_id = $1",
                        &[(&b.id).into()],
                    )?
                    .int(0)?;
                let data = json!({"broadcast_id": b.id, "segment_id": b.segment_id, "recipients": recipients});
                let event = EventRow::new(&b.account_id, &b.bot_id, EventType::BroadcastStarted.as_str(), None, data.to_string());
                insert_event(c, &event, None, None)?;
                started.push(b.id);
            }
            Ok(started)
        })
        .await
    }

    /// Ids of the running broadcasts with their rates.
    pub async fn running_broadcasts(&self) -> Result<Vec<(String, i64)>> {
        self.read(|c| {
            c.query(
                "SELECT id, rate FROM broadcasts WHERE state = 'running' ORDER BY id",
                &[],
            )?
            .iter()
            .map(|r| Ok((r.text(0)?, r.int(1)?)))
            .collect()
        })
        .await
    }
}
