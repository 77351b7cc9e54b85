//! One PostgreSQL connection behind the store's synchronous [`Conn`] trait.
//!
//! The connection is a tokio-postgres client whose connection task runs on
//! the server's runtime; each call blocks the calling thread (the writer's
//! own thread or a blocking-pool thread, never a runtime worker) on that
//! runtime's handle until the answer is in. Every statement is prepared once
//! per connection and kept, keyed by its SQL text, so a repeated statement
//! costs one round trip (bind and execute) and no parse or plan.

use super::super::{Conn, Result, Row, StoreError, Value};
use super::CHANNEL;
use super::tls::describe;
use deadpool_postgres::ClientWrapper;
use std::sync::Arc;
use tokio::runtime::Handle;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::{IsNull, ToSql, Type, to_sql_checked};

/// Statements kept per connection before the cache is emptied and refilled:
/// the store's SQL is a fixed set of texts, but a few are built with a
/// variable number of placeholders.
const STATEMENT_CACHE_LIMIT: usize = 512;

/// Where a connection came from.
pub(super) enum Client {
    /// The writer's own connection.
    Own(ClientWrapper),
    /// A read connection borrowed from the pool; dropping it returns it.
    Pooled(deadpool_postgres::Object),
}

/// A PostgreSQL connection driven by the server's runtime.
pub(super) struct PgConn {
    pub(super) client: Client,
    pub(super) handle: Handle,
}

impl PgConn {
    fn wrapper(&self) -> &ClientWrapper {
        match &self.client {
            Client::Own(c) => c,
            Client::Pooled(o) => o,
        }
    }

    /// Runs `sql` as a cached prepared statement through `run`.
    fn prepared<T, F>(&mut self, sql: &str, values: &[Value], run: F) -> Result<T>
    where
        F: AsyncFnOnce(
            &tokio_postgres::Client,
            &tokio_postgres::Statement,
            &[&(dyn ToSql + Sync)],
        ) -> std::result::Result<T, tokio_postgres::Error>,
    {
        let client = self.wrapper();
        let cache = &client.statement_cache;
        let params: Vec<&(dyn ToSql + Sync)> =
            values.iter().map(|v| v as &(dyn ToSql + Sync)).collect();
        let result = self.handle.block_on(async {
            if cache.size() >= STATEMENT_CACHE_LIMIT {
                cache.clear();
            }
            let statement = client.prepare_cached(sql).await?;
            run(client, &statement, &params).await
        });
        result.map_err(|e| {
            // Another process changed the schema under a kept plan: forget
            // the plans so the next call prepares afresh.
            if e.code() == Some(&SqlState::FEATURE_NOT_SUPPORTED) {
                cache.clear();
            }
            map_err(&e)
        })
    }
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
/// exclusion, foreign-key, check or not-null rule) is a `Conflict`, any other
/// answer of the server a `Database` error, and everything else (a closed
/// or broken connection) `Unavailable`.
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
        self.batch(&format!("NOTIFY {CHANNEL}"))
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        self.prepared(sql, values, async |client, statement, params| {
            client.execute(statement, params).await
        })
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let (names, rows) = self.prepared(sql, values, async |client, statement, params| {
            let names: Vec<Arc<str>> = statement
                .columns()
                .iter()
                .map(|c| Arc::from(c.name()))
                .collect();
            Ok((names, client.query(statement, params).await?))
        })?;
        rows.iter().map(|row| decode(row, &names)).collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        let client = self.wrapper();
        self.handle
            .block_on(client.batch_execute(sql))
            .map_err(|e| map_err(&e))
    }
}
