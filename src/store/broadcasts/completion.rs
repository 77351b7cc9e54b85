//! Completing a broadcast: once no recipient is pending, a running
//! broadcast becomes `completed` and writes `broadcast.completed` with its
//! final tally, in the transaction that handled its last recipient.

use super::{BroadcastRow, load};
use crate::domain::broadcast::BroadcastState;
use crate::domain::event::EventType;
use crate::store::events::{EventRow, insert_event};
use crate::store::{Conn, Result, Store};
use serde_json::json;

/// Completes a running broadcast that has no pending recipient left, with
/// its `broadcast.completed`; answers whether none is left.
pub(super) fn finish_if_done(c: &mut dyn Conn, b: &BroadcastRow, now: i64) -> Result<bool> {
    let left = c.query_opt(
        "SELECT 1 FROM broadcast_recipients WHERE broadcast_id = $1 AND status = 'pending' LIMIT 1",
        &[(&b.id).into()],
    )?;
    if left.is_some() {
        return Ok(false);
    }
    let n = c.execute(
        "UPDATE broadcasts SET state = 'completed', finished_at = $1, updated_at = $1
         WHERE id = $2 AND state = 'running'",
        &[now.into(), (&b.id).into()],
    )?;
    if n == 1 {
        completed_event(c, b)?;
    }
    Ok(true)
}

/// Writes `broadcast.completed` with the broadcast's final tally.
fn completed_event(c: &mut dyn Conn, b: &BroadcastRow) -> Result<()> {
    let rows = c.query(
        "SELECT status, COALESCE(reason, ''), COUNT(*) FROM broadcast_recipients
         WHERE broadcast_id = $1 GROUP BY status, COALESCE(reason, '')",
        &[(&b.id).into()],
    )?;
    let mut sent = 0;
    let mut skipped = json!({"opted_out": 0, "no_channel": 0, "outside_window": 0});
    if b.message.campaign.is_some() {
        skipped["in_handoff"] = json!(0);
        skipped["no_campaign"] = json!(0);
    }
    for r in rows {
        let n = r.int(2)?;
        match (r.text(0)?.as_str(), r.text(1)?) {
            ("sent", _) => sent += n,
            ("skipped", reason) if skipped.get(&reason).is_some() => {
                skipped[reason.as_str()] = json!(n)
            }
            _ => {}
        }
    }
    let data = json!({"broadcast_id": b.id, "sent": sent, "skipped": skipped});
    let event = EventRow::new(
        &b.account_id,
        &b.bot_id,
        EventType::BroadcastCompleted.as_str(),
        None,
        data.to_string(),
    );
    insert_event(c, &event, None, None).map(|_| ())
}

impl Store {
    /// Completes a running broadcast with no pending recipient left;
    /// answers whether none is left.
    pub async fn finish_broadcast_if_done(&self, id: &str, now: i64) -> Result<bool> {
        let id = id.to_owned();
        self.write(move |c| {
            let b = load(c, &id)?;
            if b.state != BroadcastState::Running {
                return Ok(false);
            }
            finish_if_done(c, &b, now)
        })
        .await
    }
}
