//! Pipelining on the writer's connection: statements held until the next
//! one that needs an answer ([`Conn::send`](crate::store::Conn::send)),
//! the same one-row insert from one write joined into a multi-row one, and
//! all of them sent back to back with that statement, the first failure
//! answered with its place (so the connection can say whose write it was).

use super::super::{StoreError, Value};
use std::future::{Future, poll_fn};
use std::task::Poll;

/// A statement waiting to be sent.
pub(super) struct Held {
    pub(super) sql: String,
    pub(super) values: Vec<Value>,
    pub(super) owner: usize,
    /// The rows it must change, and the error its write fails with when it
    /// does not ([`Conn::send_expecting`](crate::store::Conn::send_expecting)).
    pub(super) expect: Option<(u64, StoreError)>,
    /// For a one-row `INSERT … VALUES (…)`: its parameters per row, so the
    /// same statement sent next by the same write joins it as another row.
    pub(super) per_row: Option<usize>,
    /// Rows joined so far.
    pub(super) rows: usize,
}

/// Most rows one held `INSERT` takes (each count is a prepared statement of
/// its own, so this also bounds how many one text can make).
pub(super) const MERGE_ROWS: usize = 16;

impl Held {
    /// Turns joined rows into one multi-row statement.
    pub(super) fn seal(&mut self) {
        if self.rows > 1
            && let Some(k) = self.per_row
        {
            self.sql = multi_row(&self.sql, self.rows, k);
        }
        self.rows = 1;
        self.per_row = None;
    }
}

/// The parameters per row of a one-row `INSERT INTO … VALUES (…)` whose
/// placeholders all sit in its one row (and that has no `SELECT`,
/// `ON CONFLICT` or `RETURNING`), or `None`.
pub(super) fn insert_row_width(sql: &str) -> Option<usize> {
    let t = sql.trim();
    if !t.starts_with("INSERT INTO")
        || t.contains("SELECT")
        || t.contains("ON CONFLICT")
        || t.contains("RETURNING")
    {
        return None;
    }
    let at = t.find("VALUES (")? + "VALUES ".len();
    let (head, tuple) = t.split_at(at);
    if head.contains('$') || t.matches("VALUES (").count() != 1 {
        return None;
    }
    // The row is the whole rest: its opening parenthesis closes at the end
    // (and no `$` hides in a quoted literal).
    let (mut depth, mut quoted) = (0usize, false);
    for (i, ch) in tuple.char_indices() {
        match ch {
            '\'' => quoted = !quoted,
            '$' if quoted => return None,
            '(' if !quoted => depth += 1,
            ')' if !quoted => {
                depth = depth.checked_sub(1)?;
                if depth == 0 && i + 1 != tuple.len() {
                    return None;
                }
            }
            _ => {}
        }
    }
    placeholders(tuple).max().filter(|&k| k > 0)
}

/// The numbers of the `$n` placeholders in `text`.
fn placeholders(text: &str) -> impl Iterator<Item = usize> + '_ {
    text.split('$').skip(1).filter_map(|rest| {
        let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
        digits.parse().ok()
    })
}

/// `sql` (a one-row insert of `k` parameters per row) for `rows` rows: the
/// row repeated with its placeholders renumbered.
fn multi_row(sql: &str, rows: usize, k: usize) -> String {
    let t = sql.trim();
    let at = t.find("VALUES (").map_or(t.len(), |i| i + "VALUES ".len());
    let (head, tuple) = t.split_at(at);
    let mut out = String::with_capacity(head.len() + (tuple.len() + 8) * rows);
    out.push_str(head);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        let mut chars = tuple.chars().peekable();
        while let Some(ch) = chars.next() {
            out.push(ch);
            if ch != '$' {
                continue;
            }
            let mut n = 0usize;
            while let Some(d) = chars.peek().and_then(|c| c.to_digit(10)) {
                n = n * 10 + d as usize;
                chars.next();
            }
            out.push_str(&(n + r * k).to_string());
        }
    }
    out
}

/// Why a held statement failed.
pub(super) enum Refused {
    /// The server refused it.
    Server(tokio_postgres::Error),
    /// It changed another number of rows than it had to.
    Rows(StoreError),
}

pub(super) type Answer<T> = std::result::Result<T, tokio_postgres::Error>;
pub(super) type Pending<'a> =
    std::pin::Pin<Box<dyn Future<Output = std::result::Result<u64, Refused>> + Send + 'a>>;

/// Polls `held` (in order) and then `call` together until all are done, so
/// their requests go out back to back; answers the first error among
/// `held` with its place, then `call`'s own answer.
pub(super) async fn pipelined<T>(
    held: Vec<Pending<'_>>,
    call: impl Future<Output = Answer<T>>,
) -> (HeldAnswer, Answer<T>) {
    let mut held: Vec<Option<Pending<'_>>> = held.into_iter().map(Some).collect();
    let mut errors: Vec<Option<Refused>> = held.iter().map(|_| None).collect();
    let mut call = std::pin::pin!(call);
    let mut answer = None;
    poll_fn(|cx| {
        let mut waiting = false;
        for (slot, error) in held.iter_mut().zip(errors.iter_mut()) {
            if let Some(f) = slot {
                match f.as_mut().poll(cx) {
                    Poll::Ready(r) => {
                        *error = r.err();
                        *slot = None;
                    }
                    Poll::Pending => waiting = true,
                }
            }
        }
        if answer.is_none() {
            match call.as_mut().poll(cx) {
                Poll::Ready(r) => answer = Some(r),
                Poll::Pending => waiting = true,
            }
        }
        if waiting {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    let first = errors
        .into_iter()
        .enumerate()
        .find_map(|(i, e)| e.map(|e| (i, e)));
    (
        first.map_or(Ok(()), Err),
        answer.expect("polled to completion"),
    )
}

/// How the held statements went: the first failure and its place.
pub(super) type HeldAnswer = std::result::Result<(), (usize, Refused)>;

#[cfg(test)]
mod tests {
    use super::{insert_row_width, multi_row};

    const DELIVERY: &str = "INSERT INTO deliveries (id, status, at, until, created_at)
         VALUES ($1, 'pending', $2, $3, $2)";

    #[test]
    fn one_row_inserts_are_recognised_with_their_width() {
        assert_eq!(insert_row_width(DELIVERY), Some(3));
        assert_eq!(
            insert_row_width("INSERT INTO t (a) VALUES (COALESCE($1, $2))"),
            Some(2)
        );
        for refused in [
            "INSERT INTO t (a) SELECT $1 WHERE EXISTS (SELECT 1)",
            "INSERT INTO t (a) VALUES ($1) ON CONFLICT (a) DO NOTHING",
            "INSERT INTO t (a) VALUES ($1) RETURNING a",
            "INSERT INTO t (a) VALUES ($1), ($2)",
            "INSERT INTO t (a) VALUES ('$1')",
            "UPDATE t SET a = $1",
            "INSERT INTO t (a) VALUES ('x')",
        ] {
            assert_eq!(insert_row_width(refused), None, "{refused}");
        }
    }

    #[test]
    fn rows_are_repeated_with_their_placeholders_renumbered() {
        assert_eq!(
            multi_row(DELIVERY, 3, 3),
            "INSERT INTO deliveries (id, status, at, until, created_at)
         VALUES ($1, 'pending', $2, $3, $2), ($4, 'pending', $5, $6, $5), ($7, 'pending', $8, $9, $8)"
        );
        let wide = "INSERT INTO t (a, b, c, d, e, f, g, h, i, j, k) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)";
        assert!(
            multi_row(wide, 2, 11)
                .ends_with("($12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22)")
        );
    }
}
