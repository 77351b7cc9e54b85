//! One PostgreSQL connection behind the store's synchronous [`Conn`] trait.
//!
//! Each call blocks the calling thread (the writer's own thread or a
//! blocking-pool thread, never a runtime worker) until the answer is in. A
//! pooled read connection is a tokio-postgres client on the server's
//! runtime, driven by a task. The writer's connection has a runtime of its
//! own (one thread, its own I/O driver) that the writer thread runs while a
//! call waits: the socket's readiness reaches the writer thread directly,
//! never through the server's busy worker threads (measured: an answer
//! otherwise waits for a worker to poll the shared driver).
//! Every statement is prepared once per connection and kept, keyed by its
//! SQL text, so a repeated statement costs one round trip (bind and
//! execute) and no parse or plan.
//!
//! The writer's connection pipelines: a statement given to [`Conn::send`]
//! is held, and goes out with the next statement that needs an answer, all
//! of them in one round trip (tokio-postgres sends requests in the order
//! their futures are first polled, and they are polled together). Inside a
//! transaction a failed statement aborts it, so everything after it fails
//! too; the first error in order is the one answered.

use super::super::deliveries::EndpointMemo;
use super::super::{Conn, Result, Row, StoreError, Value};
use super::NOTIFY;
use super::pipeline::{
    Answer, Held, HeldAnswer, MERGE_ROWS, Pending, Refused, insert_row_width, pipelined,
};
use super::tls::{RustlsStream, describe};
use std::collections::HashMap;
use std::future::{Future, poll_fn};
use std::sync::Arc;
use std::task::Poll;
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use tokio_postgres::{AsyncMessage, Statement};

/// Statements kept per connection before the cache is emptied and refilled:
/// the store's SQL is a fixed set of texts, but a few are built with a
/// variable number of placeholders.
const STATEMENT_CACHE_LIMIT: usize = 512;

/// The writer's connection: the socket side of its client.
pub(super) type Connection =
    tokio_postgres::Connection<tokio_postgres::Socket, RustlsStream<tokio_postgres::Socket>>;

/// Where a connection came from.
pub(super) enum Client {
    /// The writer's own connection. Nothing else uses it, so instead of a
    /// task of its own it is polled by the writer thread while a call
    /// waits: a round trip then wakes one thread, not a task and a thread.
    Own {
        /// `None` only while the connection is being dropped.
        client: Option<tokio_postgres::Client>,
        /// `None` once the connection has ended (later calls then fail as
        /// closed). Boxed: it holds the socket's buffers.
        connection: Option<Box<Connection>>,
        statements: HashMap<String, Statement>,
        /// The connection's own runtime (its socket is registered there).
        runtime: tokio::runtime::Runtime,
    },
    /// A read connection borrowed from the pool (its connection runs as a
    /// task); dropping it returns it.
    Pooled(deadpool_postgres::Object),
}

/// A PostgreSQL connection driven by the server's runtime.
pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) handle: Handle,
    /// Statements given to [`Conn::send`] and not yet sent (the writer's
    /// connection only; a pooled one runs them at once).
    pub(super) held: Vec<Held>,
    /// Who sends statements now ([`Conn::set_owner`]).
    pub(super) owner: usize,
    /// Whose held statement the last call's error came from.
    pub(super) failed_owner: Option<usize>,
    /// What the current write transaction read of endpoints (the writer's
    /// connection; forgotten at each `BEGIN` and `ROLLBACK`).
    pub(super) memo: EndpointMemo,
}

/// Runs `call` on `runtime`, polling `connection` beside it until `call`
/// is done. A connection that ends is dropped, which fails the calls
/// waiting on it.
fn drive<T>(
    runtime: &tokio::runtime::Runtime,
    connection: &mut Option<Box<Connection>>,
    call: impl Future<Output = T>,
) -> T {
    runtime.block_on(async {
        let mut call = std::pin::pin!(call);
        poll_fn(|cx| {
            loop {
                if let Poll::Ready(out) = call.as_mut().poll(cx) {
                    return Poll::Ready(out);
                }
                let Some(conn) = connection.as_mut() else {
                    return Poll::Pending;
                };
                match conn.poll_message(cx) {
                    Poll::Ready(Some(Ok(AsyncMessage::Notice(notice)))) => {
                        tracing::info!(notice = %notice.message(), "PostgreSQL notice");
                    }
                    Poll::Ready(Some(Ok(_))) => {}
                    Poll::Ready(Some(Err(e))) => {
                        tracing::warn!(error = %describe(&e), "PostgreSQL write connection failed");
                        *connection = None;
                    }
                    Poll::Ready(None) => *connection = None,
                    Poll::Pending => return Poll::Pending,
                }
            }
        })
        .await
    })
}

impl Drop for PgConn {
    fn drop(&mut self) {
        // The writer's connection sends its goodbye (Terminate) and closes
        // once the client is gone.
        if let Client::Own {
            client,
            connection,
            runtime,
            ..
        } = &mut self.client
        {
            drop(client.take());
            if let Some(connection) = connection.take() {
                runtime.block_on(async {
                    let _ = tokio::time::timeout(GOODBYE, *connection).await;
                });
            }
        }
    }
}

/// How long a closing write connection waits for its goodbye to go out.
const GOODBYE: std::time::Duration = std::time::Duration::from_millis(250);

/// Opens the writer's connection on a runtime of its own.
pub(super) fn open_own(settings: &super::tls::Settings) -> Result<PgConn> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| StoreError::Unavailable(format!("cannot start the writer's runtime: {e}")))?;
    let (client, connection) = runtime
        .block_on(settings.config.connect(settings.tls.clone()))
        .map_err(|e| super::unavailable(&e))?;
    let handle = runtime.handle().clone();
    Ok(PgConn {
        client: Client::Own {
            client: Some(client),
            connection: Some(Box::new(connection)),
            statements: HashMap::new(),
            runtime,
        },
        handle,
        held: Vec::new(),
        owner: 0,
        failed_owner: None,
        memo: EndpointMemo::default(),
    })
}

impl PgConn {
    /// Runs `sql` (a kept prepared statement; `None`: `run` needs none)
    /// through `run`, after the held statements and pipelined with them.
    /// Answers the first held statement's error, if any, else `run`'s;
    /// `ignore_held` answers `run`'s whatever the held ones did (a
    /// rollback, which undoes them anyway).
    fn prepared<T, F>(
        &mut self,
        sql: Option<&str>,
        values: &[Value],
        ignore_held: bool,
        run: F,
    ) -> Result<T>
    where
        F: AsyncFnOnce(
            &tokio_postgres::Client,
            Option<&tokio_postgres::Statement>,
            &[&(dyn ToSql + Sync)],
        ) -> Answer<T>,
    {
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        self.failed_owner = None;
        for h in &mut self.held {
            h.seal();
        }
        if let Err((place, e)) = self.keep_statements(sql) {
            match place {
                Some(i) => {
                    // Nothing ran. The ones before it go with the next call.
                    let owner = self.held[i].owner;
                    self.held.truncate(i);
                    if !ignore_held {
                        self.failed_owner = Some(owner);
                        return Err(map_err(&e));
                    }
                }
                None => return Err(map_err(&e)),
            }
        }
        let held = std::mem::take(&mut self.held);
        let (held_answer, result): (HeldAnswer, Answer<T>) = match &mut self.client {
            Client::Own {
                client,
                connection,
                statements,
                runtime,
            } => {
                let client = client.as_ref().expect("open until dropped");
                let statements = &*statements;
                drive(runtime, connection, async {
                    let pending: Vec<Pending<'_>> = held
                        .iter()
                        .map(|h| {
                            let statement = &statements[h.sql.as_str()];
                            Box::pin(async move {
                                let params: Vec<&(dyn ToSql + Sync)> =
                                    h.values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
                                let n = client
                                    .execute(statement, &params)
                                    .await
                                    .map_err(Refused::Server)?;
                                match &h.expect {
                                    Some((rows, error)) if *rows != n => {
                                        Err(Refused::Rows(error.clone()))
                                    }
                                    _ => Ok(n),
                                }
                            }) as Pending<'_>
                        })
                        .collect();
                    let statement = sql.map(|text| &statements[text]);
                    pipelined(pending, run(client, statement, &params)).await
                })
            }
            Client::Pooled(object) => {
                let cache = &object.statement_cache;
                let result = self.handle.block_on(async {
                    let statement = match sql {
                        Some(text) => {
                            if cache.size() >= STATEMENT_CACHE_LIMIT {
                                cache.clear();
                            }
                            Some(object.prepare_cached(text).await?)
                        }
                        None => None,
                    };
                    run(object, statement.as_ref(), &params).await
                });
                if is_stale_plan(&result) {
                    cache.clear();
                }
                (Ok(()), result)
            }
        };
        let stale = is_stale_plan(&result)
            || matches!(&held_answer, Err((_, Refused::Server(e))) if stale_plan(e));
        if stale && let Client::Own { statements, .. } = &mut self.client {
            statements.clear();
        }
        match held_answer {
            Err((i, refused)) if !ignore_held => {
                self.failed_owner = Some(held[i].owner);
                Err(match refused {
                    Refused::Server(e) => map_err(&e),
                    Refused::Rows(e) => e,
                })
            }
            _ => result.map_err(|e| map_err(&e)),
        }
    }

    /// Prepares and keeps what the held statements and `sql` need that is
    /// not kept yet (the writer's connection; rarely anything). A failure
    /// names the held statement's place, or `None` for `sql`.
    fn keep_statements(
        &mut self,
        sql: Option<&str>,
    ) -> std::result::Result<(), (Option<usize>, tokio_postgres::Error)> {
        let Client::Own {
            client,
            connection,
            statements,
            runtime,
        } = &mut self.client
        else {
            return Ok(());
        };
        let missing: Vec<(Option<usize>, &str)> = self
            .held
            .iter()
            .enumerate()
            .map(|(i, h)| (Some(i), h.sql.as_str()))
            .chain(sql.map(|text| (None, text)))
            .filter(|(_, text)| !statements.contains_key(*text))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let client = client.as_ref().expect("open until dropped");
        drive(runtime, connection, async {
            for (place, text) in missing {
                if statements.contains_key(text) {
                    continue;
                }
                if statements.len() >= STATEMENT_CACHE_LIMIT {
                    statements.clear();
                }
                let statement = client.prepare(text).await.map_err(|e| (place, e))?;
                statements.insert(text.to_owned(), statement);
            }
            Ok(())
        })
    }
}

/// Whether a call failed because another process changed the schema under
/// a kept plan ("cached plan must not change result type"): the plans are
/// then forgotten, so the next call prepares afresh.
fn is_stale_plan<T>(result: &std::result::Result<T, tokio_postgres::Error>) -> bool {
    matches!(result, Err(e) if stale_plan(e))
}

fn stale_plan(e: &tokio_postgres::Error) -> bool {
    e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED)
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut tokio_postgres::types::private::BytesMut,
    ) -> std::result::Result<IsNull, Box<dyn std::error::Error + Sync + Send>> {
        match self {
            Value::Null => Ok(IsNull::Yes),
            Value::Int(v) => match *ty {
                Type::INT4 => i32::try_from(*v)?.to_sql(ty, out),
                Type::INT2 => i16::try_from(*v)?.to_sql(ty, out),
                Type::BOOL => (*v != 0).to_sql(ty, out),
                _ => v.to_sql(ty, out),
            },
            Value::Bool(b) => match *ty {
                Type::INT8 => i64::from(*b).to_sql(ty, out),
                _ => b.to_sql(ty, out),
            },
            Value::Text(s) => s.as_str().to_sql(ty, out),
            Value::Float(f) => f.to_sql(ty, out),
        }
    }

    fn accepts(ty: &Type) -> bool {
        matches!(
            *ty,
            Type::INT8
                | Type::FLOAT8
                | Type::INT4
                | Type::INT2
                | Type::BOOL
                | Type::TEXT
                | Type::VARCHAR
                | Type::BPCHAR
                | Type::NAME
                | Type::UNKNOWN
        )
    }

    to_sql_checked!();
}

/// Sorts a database error into the store's kinds: a refused write (unique,
/// exclusion, foreign-key, check or not-null rule) is a `Conflict`; a
/// session the server ended or a broken or closed connection is
/// `Unavailable`; any other answer of the server a `Database` error.
pub(super) fn map_err(e: &tokio_postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == SqlState::UNIQUE_VIOLATION
            || *code == SqlState::EXCLUSION_VIOLATION
            || *code == SqlState::FOREIGN_KEY_VIOLATION
            || *code == SqlState::CHECK_VIOLATION
            || *code == SqlState::NOT_NULL_VIOLATION
        {
            return StoreError::Conflict(db.message().to_owned());
        }
        // The server ended the session (shut down, administrator command)
        // or the connection broke: the connection is gone, not the query.
        if code.code().starts_with("08")
            || *code == SqlState::ADMIN_SHUTDOWN
            || *code == SqlState::CRASH_SHUTDOWN
            || *code == SqlState::CANNOT_CONNECT_NOW
        {
            return StoreError::Unavailable(format!("{}: {}", code.code(), db.message()));
        }
        return StoreError::Database(format!("{}: {}", code.code(), db.message()));
    }
    StoreError::Unavailable(describe(e))
}

fn decode(row: &tokio_postgres::Row, names: &[Arc<str>]) -> Result<Row> {
    let mut out = Vec::with_capacity(row.len());
    for (i, col) in row.columns().iter().enumerate() {
        let v = match *col.type_() {
            Type::INT8 => row.get::<_, Option<i64>>(i).map(Value::Int),
            Type::INT4 => row.get::<_, Option<i32>>(i).map(|v| Value::Int(v.into())),
            Type::INT2 => row.get::<_, Option<i16>>(i).map(|v| Value::Int(v.into())),
            Type::BOOL => row.get::<_, Option<bool>>(i).map(Value::Bool),
            Type::TEXT | Type::VARCHAR | Type::NAME | Type::BPCHAR => {
                row.get::<_, Option<String>>(i).map(Value::Text)
            }
            ref other => {
                return Err(StoreError::Database(format!(
                    "column {} has unsupported type {other}",
                    col.name()
                )));
            }
        };
        out.push(v.unwrap_or(Value::Null));
    }
    Ok(Row::new(names, out))
}

impl Conn for PgConn {
    fn notify_deliveries(&mut self) -> Result<()> {
        self.send(NOTIFY, &[])
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        self.prepared(
            Some(sql),
            values,
            false,
            async |client, statement, params| {
                client.execute(statement.expect("prepared"), params).await
            },
        )
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let (names, rows) = self.prepared(
            Some(sql),
            values,
            false,
            async |client, statement, params| {
                let statement = statement.expect("prepared");
                let names: Vec<Arc<str>> = statement
                    .columns()
                    .iter()
                    .map(|c| Arc::from(c.name()))
                    .collect();
                Ok((names, client.query(statement, params).await?))
            },
        )?;
        rows.iter().map(|row| decode(row, &names)).collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let rollback = sql.trim_start().starts_with("ROLLBACK");
        if rollback || sql.trim_start().starts_with("BEGIN") {
            // A new transaction, or one (or a savepoint) undone: what was
            // read may no longer hold.
            self.memo.clear();
        }
        self.prepared(None, &[], rollback, async |client, _, _| {
            client.batch_execute(sql).await
        })
    }

    fn send(&mut self, sql: &str, values: &[Value]) -> Result<()> {
        match self.client {
            Client::Own { .. } => {
                // The same insert again from the same write: one more row
                // of the held one (the order of statements is kept).
                if let Some(last) = self.held.last_mut()
                    && last.owner == self.owner
                    && last.rows < MERGE_ROWS
                    && last.per_row == Some(values.len())
                    && last.sql == sql
                {
                    last.values.extend_from_slice(values);
                    last.rows += 1;
                    return Ok(());
                }
                self.held.push(Held {
                    sql: sql.to_owned(),
                    values: values.to_vec(),
                    owner: self.owner,
                    expect: None,
                    per_row: insert_row_width(sql).filter(|&k| k == values.len()),
                    rows: 1,
                });
                Ok(())
            }
            Client::Pooled(_) => self.execute(sql, values).map(|_| ()),
        }
    }

    fn send_expecting(
        &mut self,
        sql: &str,
        values: &[Value],
        rows: u64,
        otherwise: StoreError,
    ) -> Result<()> {
        match self.client {
            Client::Own { .. } => {
                self.held.push(Held {
                    sql: sql.to_owned(),
                    values: values.to_vec(),
                    owner: self.owner,
                    expect: Some((rows, otherwise)),
                    per_row: None,
                    rows: 1,
                });
                Ok(())
            }
            Client::Pooled(_) => {
                if self.execute(sql, values)? == rows {
                    Ok(())
                } else {
                    Err(otherwise)
                }
            }
        }
    }

    fn endpoint_memo(&mut self) -> Option<&mut EndpointMemo> {
        matches!(self.client, Client::Own { .. }).then_some(&mut self.memo)
    }

    fn set_owner(&mut self, owner: usize) {
        self.owner = owner;
    }

    fn failed_owner(&self) -> Option<usize> {
        self.failed_owner
    }

    fn is_broken(&self) -> bool {
        match &self.client {
            Client::Own {
                client, connection, ..
            } => connection.is_none() || client.as_ref().is_none_or(|c| c.is_closed()),
            Client::Pooled(object) => object.is_closed(),
        }
    }

    fn flush(&mut self) -> Result<()> {
        if self.held.is_empty() {
            return Ok(());
        }
        self.prepared(None, &[], false, async |_, _, _| Ok(()))
    }
}
