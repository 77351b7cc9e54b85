//! Benchmark and load-test helpers: a large backlog built fast, outside
//! the product path (nothing but `botwire bench backlog` and tests call it).

use crate::domain::ids::new_id;
use crate::store::endpoints::EndpointRow;
use crate::store::{Conn, Result, Store, Value, now_ms};

/// Rows per multi-row INSERT in [`Store::insert_backlog`] (8 parameters a
/// row stays far below both backends' parameter limits).
const BACKLOG_ROWS_PER_STATEMENT: usize = 200;

impl Store {
    /// Writes `n` events of `event_type` carrying `data` for the endpoint's
    /// bot, each with one delivery to that endpoint alone, due now and
    /// unleased (as an API-only node writes them), `per_commit` events per
    /// transaction. Answers how many were written.
    ///
    /// For load tests and `botwire bench backlog`: the fast way to build a
    /// large backlog (multi-row inserts in big transactions instead of one
    /// publish per event). No other endpoint gets a delivery.
    pub async fn insert_backlog(
        &self,
        account_id: &str,
        endpoint_id: &str,
        event_type: &str,
        data: &str,
        n: u64,
        per_commit: usize,
    ) -> Result<u64> {
        let (a, id) = (account_id.to_owned(), endpoint_id.to_owned());
        let ep = self
            .read(move |c| crate::store::endpoints::load(c, &a, &id))
            .await?;
        let per_commit = per_commit.max(1) as u64;
        let mut written = 0;
        while written < n {
            let count = (n - written).min(per_commit) as usize;
            let (ep, event_type, data) = (ep.clone(), event_type.to_owned(), data.to_owned());
            self.write(move |c| insert_backlog_chunk(c, &ep, &event_type, &data, count))
                .await?;
            written += count as u64;
        }
        Ok(written)
    }
}

fn insert_backlog_chunk(
    c: &mut dyn Conn,
    ep: &EndpointRow,
    event_type: &str,
    data: &str,
    count: usize,
) -> Result<()> {
    let marks = |rows: usize, width: usize| {
        (0..rows)
            .map(|r| {
                let cols = (1..=width)
                    .map(|k| format!("${}", r * width + k))
                    .collect::<Vec<_>>()
                    .join(", ");
                format!("({cols})")
            })
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut left = count;
    while left > 0 {
        let rows = left.min(BACKLOG_ROWS_PER_STATEMENT);
        left -= rows;
        let now = now_ms();
        let mut events = Vec::with_capacity(rows * 6);
        let mut deliveries = Vec::with_capacity(rows * 8);
        for _ in 0..rows {
            let event_id = new_id("evt");
            events.extend([
                Value::from(&event_id),
                (&ep.account_id).into(),
                (&ep.bot_id).into(),
                event_type.into(),
                data.into(),
                now.into(),
            ]);
            deliveries.extend([
                Value::from(new_id("dlv")),
                (&ep.account_id).into(),
                (&ep.bot_id).into(),
                (&ep.id).into(),
                event_id.into(),
                now.into(),
                now.into(),
                now.into(),
            ]);
        }
        c.execute(
            &format!(
                "INSERT INTO events (id, account_id, bot_id, type, data, created_at) VALUES {}",
                marks(rows, 6)
            ),
            &events,
        )?;
        c.execute(
            &format!(
                "INSERT INTO deliveries (id, account_id, bot_id, endpoint_id, event_id, next_attempt_at,
                    created_at, updated_at, status, attempts) VALUES {}",
                marks(rows, 8).replace(')', ", 'pending', 0)")
            ),
            &deliveries,
        )?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use crate::store::testing::TestStore;

    #[tokio::test]
    async fn a_backlog_is_written_for_one_endpoint_and_counted() {
        let t = TestStore::open().await;
        let ep = t.endpoint("alpha", None).await;
        let other = t.endpoint("alpha", None).await;
        let n = t
            .store
            .insert_backlog(&t.account, &ep.id, "load.test", "{}", 450, 300)
            .await
            .unwrap();
        assert_eq!(n, 450);
        let b = t.store.backlog(5).await.unwrap();
        assert_eq!(b.pending, 450);
        assert_eq!(b.top.len(), 1, "{} gets nothing", other.id);
        assert_eq!(b.top[0].endpoint_id, ep.id);
        assert_eq!(b.top[0].pending, 450);
        assert!(b.earliest_ms.is_some());
    }
}
