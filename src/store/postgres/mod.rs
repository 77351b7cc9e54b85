//! The PostgreSQL backend: several botwire processes may share one server.
//!
//! Connections are plain (the server is expected on a trusted network or
//! a local socket). Each process has its own group-commit writer; rows
//! contested between processes are guarded by constraints and row locks,
//! never by process-local state.

use super::{Backend, BackendKind, Conn, Listener, Result, Row, StoreError, Value};
use postgres::fallible_iterator::FallibleIterator;
use postgres::types::{IsNull, ToSql, Type, to_sql_checked};
use postgres::{Client, NoTls};
use std::sync::Arc;
use std::time::Duration;

/// Migrations for PostgreSQL, in order.
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
];

/// A PostgreSQL database named by a URL.
pub struct Postgres {
    url: String,
}

impl Postgres {
    /// A backend for `url` (`postgres://user@host:port/db`).
    pub fn new(url: &str) -> Result<Self> {
        url.parse::<postgres::Config>()
            .map_err(|e| StoreError::Invalid(format!("bad PostgreSQL URL: {e}")))?;
        Ok(Self {
            url: url.to_owned(),
        })
    }

    fn open(&self) -> Result<Box<dyn Conn>> {
        let client = Client::connect(&self.url, NoTls)
            .map_err(|e| StoreError::Unavailable(format!("cannot connect to PostgreSQL: {e}")))?;
        Ok(Box::new(PgConn { client }))
    }
}

impl Backend for Postgres {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }
    fn open_writer(&self) -> Result<Box<dyn Conn>> {
        self.open()
    }
    fn open_reader(&self) -> Result<Box<dyn Conn>> {
        self.open()
    }
    fn begin_sql(&self) -> &'static str {
        "BEGIN"
    }
    fn migrations(&self) -> &'static [(i64, &'static str, &'static str)] {
        MIGRATIONS
    }
    fn read_pool_size(&self) -> usize {
        8
    }
    fn skip_locked(&self) -> &'static str {
        "FOR UPDATE SKIP LOCKED"
    }
    fn listen(&self, listener: Listener) -> bool {
        let url = self.url.clone();
        std::thread::Builder::new()
            .name("botwire-pg-listen".into())
            .spawn(move || listen_loop(&url, &listener))
            .is_ok()
    }
}

/// The channel deliveries are announced on.
const CHANNEL: &str = "botwire_deliveries";

/// Holds a connection that `LISTEN`s on [`CHANNEL`], reconnecting after a
/// failure (a missed notification costs at most one claim-loop poll).
fn listen_loop(url: &str, listener: &Listener) {
    let mut backoff = Duration::from_millis(200);
    while (listener.alive)() {
        let mut client = match Client::connect(url, NoTls) {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %e, "cannot connect to listen for deliveries; retrying");
                std::thread::sleep(backoff);
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")) {
            tracing::warn!(error = %e, "LISTEN failed; retrying");
            std::thread::sleep(backoff);
            continue;
        }
        backoff = Duration::from_millis(200);
        // Anything announced while (re)connecting was missed: look once.
        (listener.wake)();
        while (listener.alive)() {
            let mut notes = client.notifications();
            let mut got = notes.timeout_iter(Duration::from_secs(1));
            match got.next() {
                Ok(Some(_)) => (listener.wake)(),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "lost the listening connection; reconnecting");
                    break;
                }
            }
        }
    }
}

struct PgConn {
    client: Client,
}

impl ToSql for Value {
    fn to_sql(
        &self,
        ty: &Type,
        out: &mut postgres::types::private::BytesMut,
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

fn map_err(e: postgres::Error) -> StoreError {
    if let Some(db) = e.as_db_error() {
        let code = db.code();
        if *code == postgres::error::SqlState::UNIQUE_VIOLATION
            || *code == postgres::error::SqlState::EXCLUSION_VIOLATION
        {
            return StoreError::Conflict(db.message().to_owned());
        }
        if *code == postgres::error::SqlState::FOREIGN_KEY_VIOLATION
            || *code == postgres::error::SqlState::CHECK_VIOLATION
            || *code == postgres::error::SqlState::NOT_NULL_VIOLATION
        {
            return StoreError::Conflict(db.message().to_owned());
        }
        return StoreError::Database(format!("{}: {}", code.code(), db.message()));
    }
    if e.is_closed() {
        return StoreError::Unavailable(e.to_string());
    }
    StoreError::Unavailable(e.to_string())
}

fn params(values: &[Value]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

impl Conn for PgConn {
    fn notify_deliveries(&mut self) -> Result<()> {
        self.batch(&format!("NOTIFY {CHANNEL}"))
    }

    fn execute(&mut self, sql: &str, values: &[Value]) -> Result<u64> {
        self.client.execute(sql, &params(values)).map_err(map_err)
    }

    fn query(&mut self, sql: &str, values: &[Value]) -> Result<Vec<Row>> {
        let rows = self.client.query(sql, &params(values)).map_err(map_err)?;
        let names: Vec<Arc<str>> = rows.first().map_or_else(Vec::new, |r| {
            r.columns().iter().map(|c| Arc::from(c.name())).collect()
        });
        rows.iter()
            .map(|row| {
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
                Ok(Row::new(&names, out))
            })
            .collect()
    }

    fn batch(&mut self, sql: &str) -> Result<()> {
        self.client.batch_execute(sql).map_err(map_err)
    }
}
