//! The SQLite backend: one file, WAL, one writer.
//!
//! Durability: `synchronous = FULL`, so a commit is on disk when it returns
//! (the group-commit writer makes that affordable). Readers use their own
//! connections and see every committed write (WAL). `busy_timeout` covers
//! the moments a checkpoint holds the file. New files use `auto_vacuum =
//! INCREMENTAL`, so the pruner can shrink them.

use super::{Backend, BackendKind, Conn, Result, Row, StoreError, Value};
use rusqlite::types::{ToSqlOutput, ValueRef};
use std::sync::Arc;

pub mod backup;

/// Migrations for SQLite, in order.
static MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "init", include_str!("migrations/0001_init.sql")),
    (2, "delivery", include_str!("migrations/0002_delivery.sql")),
    (
        3,
        "story_webhooks",
        include_str!("migrations/0003_story_webhooks.sql"),
    ),
    (
        4,
        "publishable_keys",
        include_str!("migrations/0004_publishable_keys.sql"),
    ),
    (
        5,
        "claim_by_endpoint",
        include_str!("migrations/0005_claim_by_endpoint.sql"),
    ),
    (
        6,
        "attempt_node",
        include_str!("migrations/0006_attempt_node.sql"),
    ),
    (
        7,
        "plain_headers",
        include_str!("migrations/0007_plain_headers.sql"),
    ),
    (8, "channels", include_str!("migrations/0008_channels.sql")),
    (9, "timers", include_str!("migrations/0009_timers.sql")),
    (10, "audit", include_str!("migrations/0010_audit.sql")),
    (11, "people", include_str!("migrations/0011_people.sql")),
    (12, "handoff", include_str!("migrations/0012_handoff.sql")),
    (
        13,
        "broadcasts",
        include_str!("migrations/0013_broadcasts.sql"),
    ),
    (
        14,
        "channel_trace",
        include_str!("migrations/0014_channel_trace.sql"),
    ),
    (
        15,
        "outbox_sending",
        include_str!("migrations/0015_outbox_sending.sql"),
    ),
    (
        16,
        "retention",
        include_str!("migrations/0016_retention.sql"),
    ),
    (
        17,
        "event_keys",
        include_str!("migrations/0017_event_keys.sql"),
    ),
];

/// A SQLite database file.
pub struct Sqlite {
    path: String,
    /// A shared `flock` on the database file, held while this backend is
    /// in use, so `botwire restore` can tell a live database (see
    /// [`backup`]). SQLite's own locks are `fcntl` locks, which `flock`
    /// does not touch.
    in_use: std::sync::OnceLock<std::fs::File>,
}

impl Sqlite {
    /// A backend for the file at `path` (created on first use).
    pub fn new(path: &str) -> Result<Self> {
        if path.is_empty() {
            return Err(StoreError::Invalid(
                "sqlite:// URL needs a file path, e.g. sqlite://botwire.db".into(),
            ));
        }
        let path = path.split('?').next().unwrap_or(path).to_owned();
        if let Some(dir) = std::path::Path::new(&path).parent()
            && !dir.as_os_str().is_empty()
            && !dir.exists()
        {
            return Err(StoreError::Unavailable(format!(
                "folder {} does not exist",
                dir.display()
            )));
        }
        Ok(Self {
            path,
            in_use: std::sync::OnceLock::new(),
        })
    }

    /// The database file's path.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// The newest migration this binary knows for SQLite.
    pub fn newest_migration() -> i64 {
        MIGRATIONS.last().map_or(0, |m| m.0)
    }

    fn open(&self, writer: bool) -> Result<Box<dyn Conn>> {
        let conn = rusqlite::Connection::open(&self.path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {}: {e}", self.path)))?;
        conn.busy_timeout(super::BUSY_TIMEOUT).map_err(map_err)?;
        conn.set_prepared_statement_cache_capacity(256);
        let mut c = SqliteConn { conn };
        if writer && self.in_use.get().is_none() {
            let _ = self.in_use.set(backup::hold_in_use(&self.path)?);
        }
        if writer {
            // temp_store = MEMORY: the sub-journal each write's savepoint
            // keeps (see `writer`) stays in memory instead of a temporary
            // file; its pwrite calls took a tenth of a chat turn's CPU.
            // auto_vacuum = INCREMENTAL takes effect only on a file with no
            // table yet (a new one): pruned pages can then be handed back
            // to the file system (see `store::retention`). On an older file
            // it changes nothing until a `VACUUM` converts it.
            c.batch(
                "PRAGMA auto_vacuum = INCREMENTAL;
                 PRAGMA journal_mode = WAL;
                 PRAGMA synchronous = FULL;
                 PRAGMA foreign_keys = ON;
                 PRAGMA wal_autocheckpoint = 4000;
                 PRAGMA temp_store = MEMORY;",
            )?;
        } else {
            c.batch("PRAGMA foreign_keys = ON; PRAGMA query_only = ON;")?;
        }
        Ok(Box::new(c))
    }
}

impl Backend for Sqlite {
    fn kind(&self) -> BackendKind {
        BackendKind::Sqlite
    }
    fn open_writer(&self) -> Result<Box<dyn Conn>> {
        self.open(true)
    }
    fn open_reader(&self) -> Result<Box<dyn Conn>> {
        self.open(false)
    }
    fn begin_sql(&self) -> &'static str {
        // Take the write lock up front: read-then-write inside a batch must
        // not fail half-way with SQLITE_BUSY.
        "BEGIN IMMEDIATE"
    }
    fn migrations(&self) -> &'static [(i64, &'static str, &'static str)] {
        MIGRATIONS
    }
    fn read_pool_size(&self) -> usize {
        8
    }
    fn skip_locked(&self) -> &'static str {
        ""
    }
}

/// A SQLite connection behind [`Conn`].
struct SqliteConn {
    conn: rusqlite::Connection,
}

impl rusqlite::ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        Ok(match self {
            Value::Null => ToSqlOutput::Borrowed(ValueRef::Null),
            Value::Int(v) => ToSqlOutput::Borrowed(ValueRef::Integer(*v)),
            Value::Bool(b) => ToSqlOutput::Borrowed(ValueRef::Integer(i64::from(*b))),
            Value::Text(s) => ToSqlOutput::Borrowed(ValueRef::Text(s.as_bytes())),
            Value::Float(f) => ToSqlOutput::Borrowed(ValueRef::Real(*f)),
        })
    }
}

/// Rewrites `$1` placeholders to SQLite's `?1`.
fn dialect(sql: &str) -> std::borrow::Cow<'_, str> {
    if sql.contains('$') {
        std::borrow::Cow::Owned(sql.replace('$', "?"))
    } else {
        std::borrow::Cow::Borrowed(sql)
    }
}

fn map_err(e: rusqlite::Error) -> StoreError {
    match &e {
        rusqlite::Error::SqliteFailure(f, msg) => match f.code {
            rusqlite::ErrorCode::ConstraintViolation => {
                StoreError::Conflict(msg.clone().unwrap_or_else(|| e.to_string()))
            }
            rusqlite::ErrorCode::DatabaseBusy
            | rusqlite::ErrorCode::DatabaseLocked
            | rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::SystemIoFailure => StoreError::Unavailable(e.to_string()),
            _ => StoreError::Database(e.to_string()),
        },
        _ => StoreError::Database(e.to_string()),
    }
}

impl Conn for SqliteConn {
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64> {
        let mut stmt = self.conn.prepare_cached(&dialect(sql)).map_err(map_err)?;
        let n = stmt
            .execute(rusqlite::params_from_iter(params.iter()))
            .map_err(map_err)?;
        Ok(n as u64)
    }

    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>> {
        let mut stmt = self.conn.prepare_cached(&dialect(sql)).map_err(map_err)?;
        let width = stmt.column_count();
        let names: Vec<Arc<str>> = stmt.column_names().map(Arc::from).collect();
        let mut rows = stmt
            .query(rusqlite::params_from_iter(params.iter()))
            .map_err(map_err)?;
        let mut out = Vec::new();
        while let Some(row) = rows.next().map_err(map_err)? {
            let mut values = Vec::with_capacity(width);
            for i in 0..width {
                values.push(match row.get_ref(i).map_err(map_err)? {
                    ValueRef::Null => Value::Null,
                    ValueRef::Integer(v) => Value::Int(v),
                    ValueRef::Text(t) => Value::Text(String::from_utf8_lossy(t).into_owned()),
                    ValueRef::Real(f) => Value::Int(f as i64),
                    ValueRef::Blob(b) => Value::Text(String::from_utf8_lossy(b).into_owned()),
                });
            }
            out.push(Row::new(&names, values));
        }
        Ok(out)
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.conn.execute_batch(sql).map_err(map_err)
    }
}
