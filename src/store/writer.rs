//! The group-commit writer: one thread, one write connection, many callers.
//!
//! Callers queue closures on a channel. The thread takes the first queued
//! closure, then everything else already queued (up to [`MAX_BATCH`]), opens
//! one transaction, runs each closure inside its own savepoint, commits once,
//! and only after the commit answers each caller with its own result. So:
//!
//! * an answer means the write is durable (the commit, with its fsync, is
//!   done);
//! * N concurrent writes cost one commit, not N;
//! * a closure that fails (or panics) rolls back to its savepoint and does
//!   not spoil the others in its batch;
//! * a failed commit fails every write in the batch, and none is applied.
//!
//! Closures run on the writer thread and must not block on anything but the
//! database (no HTTP calls: a transaction is open while they run).

use super::{Conn, Result, StoreError};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::{mpsc, oneshot};

/// The most writes one transaction takes.
pub const MAX_BATCH: usize = 1024;

type Finish = Box<dyn FnOnce(Option<&StoreError>) + Send>;
type Job = Box<dyn FnOnce(&mut dyn Conn) -> (bool, Finish) + Send>;

/// Counters describing the writer's batching.
#[derive(Clone, Copy, Debug, Default)]
pub struct WriterStats {
    /// Transactions committed.
    pub commits: u64,
    /// Writes applied (successful or rolled back to their savepoint).
    pub writes: u64,
    /// Microseconds spent running writes.
    pub apply_us: u64,
    /// Microseconds spent in COMMIT (the fsync).
    pub commit_us: u64,
}

#[derive(Default)]
struct Counters {
    commits: AtomicU64,
    writes: AtomicU64,
    apply_us: AtomicU64,
    commit_us: AtomicU64,
}

/// Handle to the writer thread.
pub struct Writer {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Job>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer thread over `conn`; `begin` opens a transaction;
    /// a transaction takes at most `max_batch` writes (1 disables group
    /// commit, for comparison).
    pub fn start(conn: Box<dyn Conn>, begin: &'static str, max_batch: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let thread = std::thread::Builder::new()
            .name("botwire-writer".into())
            .spawn(move || run(conn, begin, max_batch.clamp(1, MAX_BATCH), rx, &c))
            .expect("spawn writer thread");
        Self {
            tx: std::sync::Mutex::new(Some(tx)),
            thread: std::sync::Mutex::new(Some(thread)),
            counters,
        }
    }

    /// Queues `f` and waits until the commit holding it is durable.
    pub async fn submit<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<R>>();
        let job: Job = Box::new(move |conn: &mut dyn Conn| {
            let outcome = match catch_unwind(AssertUnwindSafe(|| f(conn))) {
                Ok(r) => r,
                Err(_) => Err(StoreError::Database("a write panicked".into())),
            };
            let ok = outcome.is_ok();
            let finish: Finish = Box::new(move |commit_error: Option<&StoreError>| {
                let result = match commit_error {
                    Some(e) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
                    None => outcome,
                };
                let _ = reply.send(result);
            });
            (ok, finish)
        });
        {
            let guard = self.tx.lock().expect("writer lock");
            let Some(tx) = guard.as_ref() else {
                return Err(StoreError::Unavailable("the store is closed".into()));
            };
            tx.send(job)
                .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        }
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }

    /// Stops taking writes, lets queued ones commit, and joins the thread.
    pub async fn close(&self) {
        drop(self.tx.lock().expect("writer lock").take());
        let handle = self.thread.lock().expect("writer lock").take();
        if let Some(handle) = handle {
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }

    /// Batching counters.
    pub fn stats(&self) -> WriterStats {
        WriterStats {
            commits: self.counters.commits.load(Ordering::Relaxed),
            writes: self.counters.writes.load(Ordering::Relaxed),
            apply_us: self.counters.apply_us.load(Ordering::Relaxed),
            commit_us: self.counters.commit_us.load(Ordering::Relaxed),
        }
    }
}

fn run(
    mut conn: Box<dyn Conn>,
    begin: &'static str,
    max_batch: usize,
    mut rx: mpsc::UnboundedReceiver<Job>,
    counters: &Counters,
) {
    let mut batch: Vec<Job> = Vec::with_capacity(MAX_BATCH);
    let mut finishes: Vec<Finish> = Vec::with_capacity(MAX_BATCH);
    while let Some(first) = rx.blocking_recv() {
        batch.push(first);
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(job) => batch.push(job),
                Err(_) => break,
            }
        }
        let n = batch.len() as u64;
        let started = std::time::Instant::now();
        let outcome = commit_batch(&mut *conn, begin, &mut batch, &mut finishes, counters);
        match outcome {
            Ok(true) => {
                counters.commits.fetch_add(1, Ordering::Relaxed);
                crate::telemetry::commit(n as usize, started.elapsed());
            }
            Ok(false) => {}
            Err(_) => {
                let _ = conn.batch("ROLLBACK");
            }
        }
        counters.writes.fetch_add(n, Ordering::Relaxed);
        let error = outcome.err();
        for finish in finishes.drain(..) {
            finish(error.as_ref());
        }
    }
}

fn commit_batch(
    conn: &mut dyn Conn,
    begin: &'static str,
    batch: &mut Vec<Job>,
    finishes: &mut Vec<Finish>,
    counters: &Counters,
) -> Result<bool> {
    let started = std::time::Instant::now();
    if let Err(e) = conn.batch(begin) {
        // Nothing ran: answer every job with the error via the finishes.
        for job in batch.drain(..) {
            let (_, finish) = skip(job);
            finishes.push(finish);
        }
        return Err(e);
    }
    let single = batch.len() == 1;
    for job in batch.drain(..) {
        if single {
            // One write alone needs no savepoint: its failure rolls back the
            // transaction, which holds nothing else.
            let (ok, finish) = job(conn);
            finishes.push(finish);
            if !ok {
                conn.batch("ROLLBACK")?;
                return Ok(false);
            }
            continue;
        }
        // Prepared (and cached) statements: these run twice per write.
        conn.execute("SAVEPOINT w", &[])?;
        let (ok, finish) = job(conn);
        finishes.push(finish);
        if ok {
            conn.execute("RELEASE SAVEPOINT w", &[])?;
        } else {
            conn.batch("ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w")?;
        }
    }
    let applied = std::time::Instant::now();
    counters
        .apply_us
        .fetch_add((applied - started).as_micros() as u64, Ordering::Relaxed);
    let committed = conn.execute("COMMIT", &[]).map(|_| true);
    counters
        .commit_us
        .fetch_add(applied.elapsed().as_micros() as u64, Ordering::Relaxed);
    committed
}

/// Produces a job's answer without running it (its transaction never began).
fn skip(job: Job) -> (bool, Finish) {
    struct Refuse;
    impl Conn for Refuse {
        fn execute(&mut self, _: &str, _: &[super::Value]) -> Result<u64> {
            Err(StoreError::Unavailable("transaction did not start".into()))
        }
        fn query(&mut self, _: &str, _: &[super::Value]) -> Result<Vec<super::Row>> {
            Err(StoreError::Unavailable("transaction did not start".into()))
        }
        fn batch(&mut self, _: &str) -> Result<()> {
            Err(StoreError::Unavailable("transaction did not start".into()))
        }
    }
    job(&mut Refuse)
}
