//! The store: durable state behind one [`Backend`] trait, with a SQLite and a
//! PostgreSQL implementation.
//!
//! # Shape
//!
//! Each backend ([`sqlite`], [`postgres`]) owns its connections, its SQL
//! dialect quirks and its migrations, and exposes plain synchronous
//! connections through [`Conn`]. The resource modules ([`accounts`],
//! [`keys`], [`bots`], [`conversations`], [`events`], [`endpoints`],
//! [`deliveries`], [`channels`], …) hold the queries, written once in the SQL both
//! backends speak (`$1` placeholders, `BIGINT` epoch milliseconds, ids and
//! JSON as `TEXT`), and the conformance suite in `tests/` runs the same
//! operations against both backends.
//!
//! # Writes: group commit
//!
//! Every write goes through [`writer`]: one thread owns the write connection,
//! drains whatever writes are queued, applies each in its own savepoint inside
//! one transaction, commits once (one fsync for the whole batch) and only then
//! answers each caller. An acknowledged write is therefore durable, and
//! concurrent writers share the cost of the commit. A write that fails rolls
//! back to its savepoint without disturbing its batch-mates.
//!
//! # Reads
//!
//! Reads run on a small pool of read connections on the blocking thread pool;
//! they see every acknowledged write.

pub mod accounts;
pub mod appointments;
pub mod audit;
pub mod bots;
pub mod broadcasts;
pub mod channels;
pub mod contacts;
pub mod conversations;
pub mod deliveries;
pub mod endpoints;
pub mod events;
pub mod flows;
pub mod keys;
pub mod migrate;
mod pool;
pub mod postgres;
mod publish;
pub mod retention;
mod row;
pub mod segments;
pub mod sqlite;
pub mod story;
#[cfg(test)]
pub(crate) mod testing;
pub mod timers;
pub mod writer;

use std::sync::Arc;
use std::time::Duration;

pub use pool::ReadPool;
pub use row::{Cell, Row, Value};
pub use writer::Writer;

/// What went wrong in the store. Client errors (`NotFound`, `Conflict`,
/// `Invalid`) are the caller's to explain; the rest are operational.
#[derive(Clone, Debug, thiserror::Error)]
pub enum StoreError {
    /// The row asked for does not exist (or belongs to someone else).
    #[error("not found")]
    NotFound,
    /// A uniqueness rule refused the write; the text names what clashed.
    #[error("conflict: {0}")]
    Conflict(String),
    /// The request cannot be carried out as asked.
    #[error("invalid: {0}")]
    Invalid(String),
    /// A configured limit refused the write; the text names the limit and
    /// what to do.
    #[error("limit reached: {0}")]
    LimitReached(String),
    /// The database could not be reached or refused to work.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database answered something this code did not expect.
    #[error("database error: {0}")]
    Database(String),
}

/// Shorthand for store results.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// A synchronous connection of either backend.
///
/// SQL uses `$1`-style placeholders; the SQLite backend rewrites them.
pub trait Conn: Send {
    /// Runs a statement, returning the number of rows it changed.
    fn execute(&mut self, sql: &str, params: &[Value]) -> Result<u64>;
    /// Runs a query, returning every row.
    fn query(&mut self, sql: &str, params: &[Value]) -> Result<Vec<Row>>;
    /// Runs several `;`-separated statements without parameters.
    fn batch(&mut self, sql: &str) -> Result<()>;
    /// Runs a statement whose answer the caller does not need. A backend
    /// may hold it and send it with the next statement that needs an
    /// answer: the PostgreSQL writer pipelines them, one round trip for
    /// all. A held statement's error then comes back from that next
    /// statement, or from [`Conn::flush`]; so a caller that handles a later
    /// statement's error itself (rather than failing the write) flushes
    /// first. The writer flushes after every write.
    fn send(&mut self, sql: &str, params: &[Value]) -> Result<()> {
        self.execute(sql, params).map(|_| ())
    }
    /// Like [`Conn::send`] for a statement that must change exactly `rows`
    /// rows; when it changes another number, the write fails with
    /// `otherwise` (then, or where a held statement's error comes back).
    fn send_expecting(
        &mut self,
        sql: &str,
        params: &[Value],
        rows: u64,
        otherwise: StoreError,
    ) -> Result<()> {
        if self.execute(sql, params)? == rows {
            Ok(())
        } else {
            Err(otherwise)
        }
    }
    /// Sends every held statement and answers the first error among them.
    fn flush(&mut self) -> Result<()> {
        Ok(())
    }
    /// Marks the statements sent from now on as write `owner`'s (the writer
    /// numbers the writes of a batch), so that a held statement's error can
    /// be traced to the write that sent it.
    fn set_owner(&mut self, owner: usize) {
        let _ = owner;
    }
    /// When the last call failed because of a held statement: its owner.
    fn failed_owner(&self) -> Option<usize> {
        None
    }
    /// The endpoints this write transaction has read, for later writes in
    /// it to reuse; `None` where reads are cheap enough not to keep.
    fn endpoint_memo(&mut self) -> Option<&mut deliveries::EndpointMemo> {
        None
    }
    /// Whether the connection is gone for good (the server ended it), so
    /// that its owner should open another.
    fn is_broken(&self) -> bool {
        false
    }
    /// Tells other processes, when this transaction commits, that
    /// deliveries are due (PostgreSQL `NOTIFY`; nothing on SQLite, whose
    /// file has one writing process).
    fn notify_deliveries(&mut self) -> Result<()> {
        Ok(())
    }

    /// The first row of a query, if any.
    fn query_opt(&mut self, sql: &str, params: &[Value]) -> Result<Option<Row>> {
        Ok(self.query(sql, params)?.into_iter().next())
    }
    /// Exactly one row, or `NotFound`.
    fn query_one(&mut self, sql: &str, params: &[Value]) -> Result<Row> {
        self.query_opt(sql, params)?.ok_or(StoreError::NotFound)
    }
}

/// Which database a store runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BackendKind {
    /// One file, one machine.
    Sqlite,
    /// A server several botwire processes can share.
    Postgres,
}

/// A database backend: opens connections and knows its migrations.
pub trait Backend: Send + Sync + 'static {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;
    /// Opens the connection the group-commit writer will own.
    fn open_writer(&self) -> Result<Box<dyn Conn>>;
    /// Opens a connection for the read pool.
    fn open_reader(&self) -> Result<Box<dyn Conn>>;
    /// The statement that opens a write transaction.
    fn begin_sql(&self) -> &'static str;
    /// This backend's migrations, in order: (version, name, SQL).
    fn migrations(&self) -> &'static [(i64, &'static str, &'static str)];
    /// How many read connections to keep.
    fn read_pool_size(&self) -> usize;
    /// Whether [`Backend::open_reader`] lends a connection from a pool of
    /// the backend's own, which dropping the connection gives back (the
    /// read pool then keeps none itself).
    fn pools_readers(&self) -> bool {
        false
    }
    /// What a claiming subquery appends so concurrent claimers skip each
    /// other's rows instead of waiting (`FOR UPDATE SKIP LOCKED` on
    /// PostgreSQL; nothing on SQLite, whose single writer already excludes
    /// concurrent claims).
    fn skip_locked(&self) -> &'static str;
    /// Starts listening for other processes' [`Conn::notify_deliveries`]
    /// and calls `listener.wake` on each, until `listener.alive` answers
    /// false. Answers whether this backend can listen at all.
    fn listen(&self, listener: Listener) -> bool {
        let _ = listener;
        false
    }
}

/// Callbacks of a [`Backend::listen`] loop.
pub struct Listener {
    /// Called on each notification.
    pub wake: Box<dyn Fn() + Send>,
    /// Asked now and then; the loop ends when it answers false.
    pub alive: Box<dyn Fn() -> bool + Send>,
}

/// Opens the backend a URL names: `sqlite://path` or `postgres://…`.
pub fn backend_for_url(url: &str) -> Result<Arc<dyn Backend>> {
    if let Some(path) = url.strip_prefix("sqlite://") {
        return Ok(Arc::new(sqlite::Sqlite::new(path)?));
    }
    if let Some(path) = url.strip_prefix("sqlite:") {
        return Ok(Arc::new(sqlite::Sqlite::new(path)?));
    }
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        return Ok(Arc::new(postgres::Postgres::new(url)?));
    }
    Err(StoreError::Invalid(format!(
        "database URL must start with sqlite:// or postgres://, got {:?}",
        url.split(':').next().unwrap_or("")
    )))
}

/// The store: a group-commit writer and a read pool over one backend.
#[derive(Clone)]
pub struct Store {
    backend: Arc<dyn Backend>,
    writer: Arc<Writer>,
    readers: Arc<ReadPool>,
    /// Where deliveries created by a commit go once it is durable (the
    /// delivery engine, when this process runs one).
    sink: Arc<std::sync::RwLock<Option<Arc<dyn deliveries::DeliverySink>>>>,
    /// Where outbox messages created by a commit go once it is durable (the
    /// channel sender, when this process runs one).
    outbox_sink: Arc<std::sync::RwLock<Option<Arc<dyn channels::OutboxSink>>>>,
    /// Where inbound messages go once stored (the inbound processor, when
    /// this process runs one).
    inbound_sink: Arc<std::sync::RwLock<Option<Arc<dyn channels::InboundSink>>>>,
    /// Publishes waiting for their shared write ([`publish`]).
    publishes: Arc<publish::PublishQueue>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Store({:?})", self.backend.kind())
    }
}

impl Store {
    /// Opens the database a URL names, runs pending migrations and starts the
    /// writer.
    pub async fn open(url: &str) -> Result<Self> {
        let backend = backend_for_url(url)?;
        Self::open_backend(backend).await
    }

    /// Calls `listener.wake` whenever another process writes deliveries
    /// for any worker to claim (see [`Backend::listen`]); answers whether
    /// this backend can.
    pub fn listen_for_deliveries(&self, listener: Listener) -> bool {
        self.backend.listen(listener)
    }

    /// Opens a store over an already-built backend.
    pub async fn open_backend(backend: Arc<dyn Backend>) -> Result<Self> {
        Self::open_with(backend, writer::MAX_BATCH).await
    }

    /// Opens a store whose transactions take at most `max_batch` writes
    /// (1 = one commit per write, the baseline the benchmark compares with).
    pub async fn open_with(backend: Arc<dyn Backend>, max_batch: usize) -> Result<Self> {
        let b = backend.clone();
        let writer = tokio::task::spawn_blocking(move || -> Result<Writer> {
            let mut conn = b.open_writer()?;
            migrate::run(&mut *conn, &*b)?;
            let again = b.clone();
            let reopen: writer::Reopen = Box::new(move || again.open_writer());
            Ok(Writer::start(conn, reopen, b.begin_sql(), max_batch))
        })
        .await
        .map_err(|e| StoreError::Unavailable(format!("writer start-up failed: {e}")))??;
        let readers = ReadPool::new(backend.clone());
        Ok(Self {
            backend,
            writer: Arc::new(writer),
            readers: Arc::new(readers),
            sink: Arc::default(),
            outbox_sink: Arc::default(),
            inbound_sink: Arc::default(),
            publishes: Arc::default(),
        })
    }

    /// Which backend this store runs on.
    pub fn kind(&self) -> BackendKind {
        self.backend.kind()
    }

    /// Runs `f` inside the next group commit; answers once that commit is
    /// durable. An `Err` from `f` rolls back `f`'s own changes only.
    pub async fn write<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<R> + Send + 'static,
    {
        self.writer.submit(f).await
    }

    /// Like [`Store::write`] for a write that may be run more than once: a
    /// batch-mate's failure rolls the transaction back and runs `f` again
    /// (so `f` must not consume what it captures). It costs less than a
    /// write in its own savepoint (see [`writer`]).
    pub async fn write_again<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn Conn) -> Result<R> + Send + 'static,
    {
        self.writer.submit_again(f).await
    }

    /// Runs `f` on a read connection.
    pub async fn read<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<R> + Send + 'static,
    {
        self.readers.run(f).await
    }

    /// Runs a list query and pages it. `sql` ends with `LIMIT $n`, where
    /// `$n` is the parameter after `params` (one more than the page size
    /// is fetched, to know whether another page follows); `key` gives the
    /// cursor of an item.
    pub(crate) async fn read_page<T: Send + 'static>(
        &self,
        sql: String,
        mut params: Vec<Value>,
        page: PageRequest,
        from: fn(&Row) -> Result<T>,
        key: fn(&T) -> String,
    ) -> Result<Page<T>> {
        params.push((page.limit as i64 + 1).into());
        let items = self
            .read(move |c| c.query(&sql, &params)?.iter().map(from).collect())
            .await?;
        Ok(page.finish(items, key))
    }

    /// Waits for queued writes to commit and stops the writer thread.
    pub async fn close(&self) {
        self.writer.close().await;
    }

    /// A cheap liveness check: one read round trip.
    pub async fn ping(&self) -> Result<()> {
        self.read(|c| c.query("SELECT 1", &[]).map(|_| ())).await
    }

    /// The group-commit writer's counters (commits, writes, time spent).
    pub fn writer_stats(&self) -> writer::WriterStats {
        self.writer.stats()
    }

    /// The read pool's size and the connections in use now.
    pub fn read_pool_usage(&self) -> (usize, usize) {
        self.readers.usage()
    }
}

/// A page of results and the cursor for the next one.
#[derive(Clone, Debug)]
pub struct Page<T> {
    /// The items of this page.
    pub items: Vec<T>,
    /// Pass back as `cursor` for the next page; `None` on the last page.
    pub next_cursor: Option<String>,
}

/// Paging parameters, already validated.
#[derive(Clone, Debug)]
pub struct PageRequest {
    /// At most this many items (1..=200).
    pub limit: usize,
    /// Continue after this sort key, exclusive.
    pub after: Option<String>,
}

impl PageRequest {
    /// Splits `limit + 1` fetched rows into a page and its cursor.
    pub fn finish<T>(&self, mut items: Vec<T>, key: impl Fn(&T) -> String) -> Page<T> {
        let next_cursor = if items.len() > self.limit {
            items.truncate(self.limit);
            items.last().map(key)
        } else {
            None
        };
        Page { items, next_cursor }
    }
}

/// Milliseconds since the Unix epoch, the store's one time format.
pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// How long to wait for a busy database before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The writer's counters as (metric name, help, value) for `/metrics`.
pub fn writer_stats_fields(s: &writer::WriterStats) -> [(&'static str, &'static str, u64); 2] {
    [
        (
            "botwire_store_commits_total",
            "Transactions committed by the group-commit writer.",
            s.commits,
        ),
        (
            "botwire_store_writes_total",
            "Writes applied by the group-commit writer.",
            s.writes,
        ),
    ]
}
