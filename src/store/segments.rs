//! Segments: named contact filters of a bot. A segment stores its rule (the
//! filter's source), never a list of contacts, so who is in it is decided
//! whenever it is used.

use super::{Page, PageRequest, Result, Row, Store, now_ms};

/// A segment as stored.
#[derive(Clone, Debug, PartialEq)]
pub struct SegmentRow {
    /// `seg_…`
    pub id: String,
    /// The bot.
    pub bot_id: String,
    /// Human name.
    pub name: String,
    /// The filter's CEL source.
    pub filter: String,
    /// Unix ms.
    pub created_at: i64,
    /// Unix ms.
    pub updated_at: i64,
}

const COLUMNS: &str = "id, bot_id, name, filter, created_at, updated_at";

fn segment_from(r: &Row) -> Result<SegmentRow> {
    Ok(SegmentRow {
        id: r.text(0)?,
        bot_id: r.text(1)?,
        name: r.text(2)?,
        filter: r.text(3)?,
        created_at: r.int(4)?,
        updated_at: r.int(5)?,
    })
}

impl Store {
    /// Saves a new segment (its filter already compiled by the caller).
    pub async fn create_segment(
        &self,
        account_id: &str,
        bot_id: &str,
        name: &str,
        filter: &str,
    ) -> Result<SegmentRow> {
        let now = now_ms();
        let row = SegmentRow {
            id: crate::domain::ids::new_id("seg"),
            bot_id: bot_id.to_owned(),
            name: name.to_owned(),
            filter: filter.to_owned(),
            created_at: now,
            updated_at: now,
        };
        let (a, r) = (account_id.to_owned(), row.clone());
        self.write(move |c| {
            c.execute(
                &format!("INSERT INTO segments (account_id, {COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7)"),
                &[
                    a.into(),
                    (&r.id).into(),
                    (&r.bot_id).into(),
                    (&r.name).into(),
                    (&r.filter).into(),
                    r.created_at.into(),
                    r.updated_at.into(),
                ],
            )
            .map(|_| ())
        })
        .await?;
        Ok(row)
    }

    /// One segment of a bot.
    pub async fn get_segment(
        &self,
        account_id: &str,
        bot_id: &str,
        id: &str,
    ) -> Result<SegmentRow> {
        let (a, b, id) = (account_id.to_owned(), bot_id.to_owned(), id.to_owned());
        self.read(move |c| {
            segment_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM segments WHERE account_id = $1 AND bot_id = $2 AND id = $3"),
                &[a.into(), b.into(), id.into()],
            )?)
        })
        .await
    }

    /// A bot's segments, newest first.
    pub async fn list_segments(
        &self,
        account_id: &str,
        bot_id: &str,
        page: PageRequest,
    ) -> Result<Page<SegmentRow>> {
        let sql = format!(
            "SELECT {COLUMNS} FROM segments
             WHERE account_id = $1 AND bot_id = $2 AND (CAST($3 AS TEXT) IS NULL OR id < $3)
             ORDER BY id DESC LIMIT $4"
        );
        let params = vec![account_id.into(), bot_id.into(), page.after.clone().into()];
        self.read_page(sql, params, page, segment_from, |s| s.id.clone())
            .await
    }

    /// Renames a segment or changes its filter.
    pub async fn update_segment(
        &self,
        account_id: &str,
        bot_id: &str,
        id: &str,
        name: Option<String>,
        filter: Option<String>,
    ) -> Result<SegmentRow> {
        let (a, b, id) = (account_id.to_owned(), bot_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "UPDATE segments SET name = COALESCE($1, name), filter = COALESCE($2, filter), updated_at = $3
                 WHERE account_id = $4 AND bot_id = $5 AND id = $6",
                &[
                    name.into(),
                    filter.into(),
                    now_ms().into(),
                    (&a).into(),
                    (&b).into(),
                    (&id).into(),
                ],
            )?;
            if n == 0 {
                return Err(super::StoreError::NotFound);
            }
            segment_from(&c.query_one(
                &format!("SELECT {COLUMNS} FROM segments WHERE id = $1"),
                &[id.into()],
            )?)
        })
        .await
    }

    /// Deletes a segment.
    pub async fn delete_segment(&self, account_id: &str, bot_id: &str, id: &str) -> Result<()> {
        let (a, b, id) = (account_id.to_owned(), bot_id.to_owned(), id.to_owned());
        self.write(move |c| {
            let n = c.execute(
                "DELETE FROM segments WHERE account_id = $1 AND bot_id = $2 AND id = $3",
                &[a.into(), b.into(), id.into()],
            )?;
            if n == 0 {
                return Err(super::StoreError::NotFound);
            }
            Ok(())
        })
        .await
    }
}
