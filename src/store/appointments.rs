//! Appointments: one row per booked seat of a slot. A partial unique index
//! over (bot, slot start, seat) among booked rows is what refuses a second
//! booking of a full slot on both backends, whatever the concurrency; the
//! booking itself is part of the chat turn's commit.

use super::events::{EventRow, insert_event};
use super::{Page, PageRequest, Result, Row, Store, StoreError, now_ms};

/// An appointment as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct AppointmentRow {
    /// Appointment id.
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// Slot start, Unix ms.
    pub slot_start: i64,
    /// Slot end, Unix ms.
    pub slot_end: i64,
    /// Which seat of the slot (0-based).
    pub seat: i64,
    /// Human label of the slot.
    pub label: String,
    /// Who booked it.
    pub contact_id: String,
    /// The conversation it was booked in.
    pub conversation_id: Option<String>,
    /// `booked` or `cancelled`.
    pub status: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms, when cancelled.
    pub cancelled_at: Option<i64>,
}

const COLUMNS: &str = "id, bot_id, slot_start, slot_end, seat, label, contact_id, conversation_id, status, created_at, cancelled_at";

fn appointment_from(r: &Row) -> Result<AppointmentRow> {
    Ok(AppointmentRow {
        id: r.text(0)?,
        bot_id: r.text(1)?,
        slot_start: r.int(2)?,
        slot_end: r.int(3)?,
        seat: r.int(4)?,
        label: r.text(5)?,
        contact_id: r.text(6)?,
        conversation_id: r.opt_text(7)?,
        status: r.text(8)?,
        created_at: r.int(9)?,
        cancelled_at: r.opt_int(10)?,
    })
}

impl Store {
    /// Booked seats per slot start in `[from, to)`.
    pub async fn booked_counts(
        &self,
        account_id: &str,
        bot_id: &str,
        from_ms: i64,
        to_ms: i64,
    ) -> Result<Vec<(i64, i64)>> {
        let (a, b) = (account_id.to_owned(), bot_id.to_owned());
        self.read(move |c| {
            c.query(
                "SELECT slot_start, COUNT(*) FROM appointments
                 WHERE account_id = $1 AND bot_id = $2 AND status = 'booked'
                   AND slot_start >= $3 AND slot_start < $4
                 GROUP BY slot_start",
                &[a.into(), b.into(), from_ms.into(), to_ms.into()],
            )?
            .iter()
            .map(|r| Ok((r.int(0)?, r.int(1)?)))
            .collect()
        })
        .await
    }

    /// Appointments of a bot, newest booking first.
    pub async fn list_appointments(
        &self,
        account_id: &str,
        bot_id: &str,
        status: Option<String>,
        page: PageRequest,
    ) -> Result<Page<AppointmentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM appointments
             WHERE account_id = $1 AND bot_id = $2
               AND (CAST($3 AS TEXT) IS NULL OR status = $3)
               AND (CAST($4 AS TEXT) IS NULL OR id < $4)
             ORDER BY id DESC LIMIT $5"
        );
        let params = vec![
            account_id.into(),
            bot_id.into(),
            status.into(),
            page.after.clone().into(),
        ];
        self.read_page(sql, params, page, appointment_from, |a| a.id.clone())
            .await
    }

    /// One appointment of a bot.
    pub async fn get_appointment(
        &self,
        account_id: &str,
        bot_id: &str,
        id: &str,
    ) -> Result<AppointmentRow> {
        let (a, b, id) = (account_id.to_owned(), bot_id.to_owned(), id.to_owned());
        self.read(move |c| {
            appointment_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM appointments WHERE account_id = $1 AND bot_id = $2 AND id = $3"),
                &[a.into(), b.into(), id.into()],
            )?)
        })
        .await
    }

    /// Cancels a booked appointment and writes `event` in the same
    /// transaction. Cancelling twice is a `Conflict`.
    pub async fn cancel_appointment(
        &self,
        account_id: &str,
        bot_id: &str,
        id: &str,
        event: impl FnOnce(&AppointmentRow) -> EventRow + Send + 'static,
    ) -> Result<AppointmentRow> {
        let (a, b, id) = (account_id.to_owned(), bot_id.to_owned(), id.to_owned());
        let lease = self.delivery_lease();
        let (row, tickets) = self.write(move |c| {
            let row = appointment_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM appointments WHERE account_id = $1 AND bot_id = $2 AND id = $3"),
                &[(&a).into(), (&b).into(), (&id).into()],
            )?)?;
            if row.status != "booked" {
                return Err(StoreError::Conflict("the appointment is already cancelled".into()));
            }
            let now = now_ms();
            let n = c.execute(
                "UPDATE appointments SET status = 'cancelled', cancelled_at = $1
                 WHERE id = $2 AND status = 'booked'",
                &[now.into(), (&id).into()],
            )?;
            if n == 0 {
                return Err(StoreError::Conflict("the appointment is already cancelled".into()));
            }
            let row = AppointmentRow {
                status: "cancelled".into(),
                cancelled_at: Some(now),
                ..row
            };
            let tickets = insert_event(c, &event(&row), None, lease.as_ref())?;
            Ok((row, tickets))
        })
        .await?;
        self.hand_over(tickets);
        Ok(row)
    }
}
