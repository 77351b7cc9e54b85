//! The PostgreSQL backend: several botwire processes may share one server.
//!
//! Connections are tokio-postgres clients on the runtime the backend was
//! built on (no runtime or thread per connection); the store's synchronous
//! [`Conn`] calls block on that runtime's handle from the writer's thread or
//! the blocking pool ([`conn`]). Read connections come from a
//! deadpool-postgres pool and run as tasks, as does the `LISTEN` connection
//! ([`listen`]); the writer's connection is polled by the writer thread
//! while its calls wait (between calls the server has nothing to say to it
//! that cannot wait in the socket). Every connection keeps its prepared
//! statements. The URL's `sslmode` and `sslrootcert` choose TLS ([`tls`]).
//! Each process has its own group-commit writer; rows contested between
//! processes are guarded by constraints and row locks, never by
//! process-local state.

mod conn;
mod listen;
mod pipeline;
pub mod tls;

use super::{Backend, BackendKind, Conn, Listener, Result, StoreError};
use conn::{Client, PgConn};
use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod};
use tls::describe;
use tokio::runtime::Handle;

/// How many read connections a process keeps.
const READ_POOL_SIZE: usize = 8;

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
    (
        17,
        "partitions",
        include_str!("migrations/0017_partitions.sql"),
    ),
];

/// A PostgreSQL database named by a URL.
pub struct Postgres {
    settings: tls::Settings,
    readers: Pool,
    handle: Handle,
}

impl Postgres {
    /// A backend for `url` (`postgres://user@host:port/db?sslmode=…`),
    /// whose connections run on the current tokio runtime (it must be
    /// called inside one). Connects to nothing yet.
    pub fn new(url: &str) -> Result<Self> {
        let settings = tls::settings(url)?;
        let handle = Handle::try_current().map_err(|_| {
            StoreError::Unavailable("the PostgreSQL backend needs a tokio runtime".into())
        })?;
        let manager = Manager::from_config(
            settings.config.clone(),
            settings.tls.clone(),
            ManagerConfig {
                // A pooled connection is checked for being open, not with a
                // query: a broken one fails its query, and the pool drops it.
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let readers = Pool::builder(manager)
            .max_size(READ_POOL_SIZE)
            .build()
            .map_err(|e| StoreError::Invalid(format!("PostgreSQL read pool: {e}")))?;
        Ok(Self {
            settings,
            readers,
            handle,
        })
    }
}

fn unavailable(e: &(dyn std::error::Error + 'static)) -> StoreError {
    StoreError::Unavailable(format!("cannot connect to PostgreSQL: {}", describe(e)))
}

impl Backend for Postgres {
    fn kind(&self) -> BackendKind {
        BackendKind::Postgres
    }
    fn open_writer(&self) -> Result<Box<dyn Conn>> {
        Ok(Box::new(conn::open_own(&self.settings)?))
    }
    fn open_reader(&self) -> Result<Box<dyn Conn>> {
        let object = self
            .handle
            .block_on(self.readers.get())
            .map_err(|e| unavailable(&e))?;
        Ok(Box::new(PgConn {
            client: Client::Pooled(object),
            handle: self.handle.clone(),
            held: Vec::new(),
            owner: 0,
            failed_owner: None,
            memo: Default::default(),
        }))
    }
    fn pools_readers(&self) -> bool {
        true
    }
    fn begin_sql(&self) -> &'static str {
        "BEGIN"
    }
    fn migrations(&self) -> &'static [(i64, &'static str, &'static str)] {
        MIGRATIONS
    }
    fn read_pool_size(&self) -> usize {
        READ_POOL_SIZE
    }
    fn skip_locked(&self) -> &'static str {
        "FOR UPDATE SKIP LOCKED"
    }
    fn listen(&self, listener: Listener) -> bool {
        let config = self.settings.config.clone();
        let tls = self.settings.tls.clone();
        self.handle
            .spawn(listen::listen_loop(config, tls, listener));
        true
    }
}

/// Names the channel deliveries are announced on (a macro so that the
/// `NOTIFY` statement can be a constant too).
macro_rules! channel {
    () => {
        "botwire_deliveries"
    };
}

/// The channel deliveries are announced on.
const CHANNEL: &str = channel!();

/// The statement that announces them (sent pipelined, like any other).
const NOTIFY: &str = concat!("NOTIFY ", channel!());
