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
//! **Writes that may run again** ([`Writer::submit_again`], the chat turn's
//! commit) skip the savepoint. A savepoint is not free: SQLite copies every
//! page a write touches into its statement journal first, so it can roll
//! back to it (measured: 18 % of the writer's time with a savepoint per
//! turn). These writes run first in a batch, without savepoints; if one
//! fails, the transaction is rolled back, that write is answered with its
//! error, and the others run again from the start (their earlier run left
//! nothing). After two failures in one batch the rest take savepoints, so
//! a batch never runs more than three times. Only the last run's result is
//! answered.
//!
//! **Held statements.** A write may hand statements whose answers it does
//! not need to [`Conn::send`]; on PostgreSQL they go out pipelined with the
//! next statement that needs an answer, whoever's it is. A write in a
//! savepoint is flushed before the next one runs (its release is held for
//! the next), so its held statements' errors are its own. Writes that may
//! run again are not waited for: the writer numbers them
//! ([`Conn::set_owner`]), flushes once after the last, and a held
//! statement's error is charged to the write that sent it
//! ([`Conn::failed_owner`]), which fails alone while the rest run again. A
//! published event then costs one round trip, not two.
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
type Once = Box<dyn FnOnce(&mut dyn Conn) -> (bool, Finish) + Send>;

/// A write the writer may run more than once (after a rollback).
trait Again: Send {
    /// Runs the write, keeping its result; answers whether it succeeded.
    /// With `settle`, sends what the write left held before answering (so
    /// that the answer covers them).
    fn run(&mut self, conn: &mut dyn Conn, settle: bool) -> bool;
    /// Takes the last run's error, if it failed.
    fn take_error(&mut self) -> Option<StoreError>;
    /// Makes `error` this write's result (a held statement of its failed
    /// after it ran).
    fn fail(&mut self, error: StoreError);
    /// Answers the caller with the last run's result (or the commit's
    /// error).
    fn finish(self: Box<Self>, commit_error: Option<&StoreError>);
}

struct Rerun<R, F> {
    f: F,
    outcome: Option<Result<R>>,
    reply: oneshot::Sender<Result<R>>,
}

impl<R, F> Again for Rerun<R, F>
where
    R: Send + 'static,
    F: FnMut(&mut dyn Conn) -> Result<R> + Send + 'static,
{
    fn run(&mut self, conn: &mut dyn Conn, settle: bool) -> bool {
        let f = &mut self.f;
        let outcome = match catch_unwind(AssertUnwindSafe(|| {
            if settle { settled(conn, f) } else { f(conn) }
        })) {
            Ok(r) => r,
            Err(_) => Err(StoreError::Database("a write panicked".into())),
        };
        let ok = outcome.is_ok();
        self.outcome = Some(outcome);
        ok
    }

    fn take_error(&mut self) -> Option<StoreError> {
        match self.outcome.take() {
            Some(Err(e)) => Some(e),
            other => {
                self.outcome = other;
                None
            }
        }
    }

    fn fail(&mut self, error: StoreError) {
        self.outcome = Some(Err(error));
    }

    fn finish(self: Box<Self>, commit_error: Option<&StoreError>) {
        let result = match (commit_error, self.outcome) {
            (Some(e), _) => Err(StoreError::Unavailable(format!("commit failed: {e}"))),
            (None, Some(outcome)) => outcome,
            (None, None) => Err(StoreError::Unavailable("the write did not run".into())),
        };
        let _ = self.reply.send(result);
    }
}

/// Runs a write and sends what it left held ([`Conn::send`]), so that its
/// result is known before the next write runs: a held statement's error is
/// this write's.
fn settled<R>(conn: &mut dyn Conn, f: impl FnOnce(&mut dyn Conn) -> Result<R>) -> Result<R> {
    let out = f(conn)?;
    conn.flush()?;
    Ok(out)
}

enum Job {
    /// Runs once, inside a savepoint.
    Once(Once),
    /// May run again; runs without a savepoint.
    Again(Box<dyn Again>),
}

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

/// Opens a new write connection (on the writer's thread).
pub type Reopen = Box<dyn Fn() -> Result<Box<dyn Conn>> + Send>;

/// Handle to the writer thread.
pub struct Writer {
    tx: std::sync::Mutex<Option<mpsc::UnboundedSender<Job>>>,
    thread: std::sync::Mutex<Option<std::thread::JoinHandle<()>>>,
    counters: Arc<Counters>,
}

impl Writer {
    /// Starts the writer thread over `conn`; `begin` opens a transaction;
    /// a transaction takes at most `max_batch` writes (1 disables group
    /// commit, for comparison). When `conn` breaks (the server ended the
    /// session), `reopen` makes a new one before the next batch.
    pub fn start(
        conn: Box<dyn Conn>,
        reopen: Reopen,
        begin: &'static str,
        max_batch: usize,
    ) -> Self {
        let (tx, rx) = mpsc::unbounded_channel::<Job>();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        let max_batch = max_batch.clamp(1, MAX_BATCH);
        let thread = std::thread::Builder::new()
            .name("botwire-writer".into())
            .spawn(move || run(conn, &reopen, begin, max_batch, rx, &c))
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
        let job: Once = Box::new(move |conn: &mut dyn Conn| {
            let outcome = match catch_unwind(AssertUnwindSafe(|| settled(conn, f))) {
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
        self.send(Job::Once(job))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }

    /// Queues `f`, which the writer may run more than once (each run after a
    /// rollback of the one before: `f` must not consume what it captured),
    /// and waits until the commit holding its last run is durable. Cheaper
    /// than [`Writer::submit`]: no savepoint (see the module's notes).
    pub async fn submit_again<R, F>(&self, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnMut(&mut dyn Conn) -> Result<R> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel::<Result<R>>();
        self.send(Job::Again(Box::new(Rerun {
            f,
            outcome: None,
            reply,
        })))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the writer stopped before answering".into()))?
    }

    fn send(&self, job: Job) -> Result<()> {
        {
            let guard = self.tx.lock().expect("writer lock");
            let Some(tx) = guard.as_ref() else {
                return Err(StoreError::Unavailable("the store is closed".into()));
            };
            tx.send(job)
                .map_err(|_| StoreError::Unavailable("the writer has stopped".into()))?;
        }
        Ok(())
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
    reopen: &Reopen,
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
        if conn.is_broken() {
            // The server ended the session (a restart, a failover): a new
            // connection for this batch. If none can be had, this batch
            // fails on the broken one, and the next tries again.
            match reopen() {
                Ok(fresh) => {
                    tracing::info!("write connection reopened");
                    conn = fresh;
                }
                Err(e) => tracing::warn!(error = %e, "cannot reopen the write connection"),
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

/// Most failed re-runnable writes one batch rolls back for before the rest
/// take savepoints.
const MAX_RERUNS: usize = 2;

fn commit_batch(
    conn: &mut dyn Conn,
    begin: &'static str,
    batch: &mut Vec<Job>,
    finishes: &mut Vec<Finish>,
    counters: &Counters,
) -> Result<bool> {
    let started = std::time::Instant::now();
    let single = batch.len() == 1;
    let mut again: Vec<Box<dyn Again>> = Vec::new();
    let mut once: Vec<Once> = Vec::new();
    for job in batch.drain(..) {
        match job {
            Job::Once(j) => once.push(j),
            Job::Again(j) => again.push(j),
        }
    }
    if let Err(e) = conn.batch(begin) {
        // Nothing ran: answer every job with the error via the finishes.
        for job in once {
            let (_, finish) = skip(job);
            finishes.push(finish);
        }
        for job in again {
            finishes.push(Box::new(move |e: Option<&StoreError>| job.finish(e)));
        }
        return Err(e);
    }
    // Re-runnable writes first, without savepoints and without waiting
    // for their held statements, while they succeed.
    let mut reruns = 0;
    while !again.is_empty() {
        let (culprit, error) = match run_unguarded(conn, &mut again) {
            Ok(()) => break,
            Err(Failure::Unknown(e)) => {
                // A held statement failed and nobody owns it: the batch
                // cannot be sorted out; it fails whole.
                for job in again.drain(..) {
                    finishes.push(Box::new(move |e: Option<&StoreError>| job.finish(e)));
                }
                for job in once {
                    let (_, finish) = skip(job);
                    finishes.push(finish);
                }
                return Err(e);
            }
            Err(Failure::Write(culprit, error)) => (culprit, error),
        };
        let mut failed = again.remove(culprit);
        if let Some(e) = error {
            failed.fail(e);
        }
        // Its own error, whatever the commit does.
        failed.finish(None);
        // The others ran in a transaction that is now void: roll it back
        // and run them again.
        conn.batch("ROLLBACK")?;
        conn.batch(begin)?;
        reruns += 1;
        if reruns >= MAX_RERUNS {
            run_guarded(conn, &mut again)?;
            break;
        }
    }
    for job in again {
        finishes.push(Box::new(move |e: Option<&StoreError>| job.finish(e)));
    }
    for job in once {
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
        conn.send("SAVEPOINT w", &[])?;
        let (ok, finish) = job(conn);
        finishes.push(finish);
        if ok {
            conn.send("RELEASE SAVEPOINT w", &[])?;
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

/// Why a pass of re-runnable writes stopped.
enum Failure {
    /// The write at this index failed; with an error when it is not the one
    /// its run kept (a held statement of its failed during a later call).
    Write(usize, Option<StoreError>),
    /// A held statement failed that no write owns.
    Unknown(StoreError),
}

/// Runs every write in `again` once, in one go, without savepoints; their
/// held statements go out with later calls and a last flush. Stops at the
/// first failure, naming the write it belongs to (the owner the connection
/// reports for a held statement, else the write that was running).
fn run_unguarded(conn: &mut dyn Conn, again: &mut [Box<dyn Again>]) -> Result<(), Failure> {
    for (i, job) in again.iter_mut().enumerate() {
        conn.set_owner(i);
        if job.run(conn, false) {
            continue;
        }
        return Err(match conn.failed_owner() {
            Some(k) if k < i => Failure::Write(k, job.take_error()),
            _ => Failure::Write(i, None),
        });
    }
    match conn.flush() {
        Ok(()) => Ok(()),
        Err(e) => Err(match conn.failed_owner() {
            Some(k) if k < again.len() => Failure::Write(k, Some(e)),
            _ => Failure::Unknown(e),
        }),
    }
}

/// Runs every write in `again` once, each in its own savepoint and settled
/// before the next: a failure rolls back that write alone.
fn run_guarded(conn: &mut dyn Conn, again: &mut Vec<Box<dyn Again>>) -> Result<()> {
    let mut i = 0;
    while i < again.len() {
        conn.send("SAVEPOINT w", &[])?;
        if again[i].run(conn, true) {
            conn.send("RELEASE SAVEPOINT w", &[])?;
            i += 1;
        } else {
            conn.batch("ROLLBACK TO SAVEPOINT w; RELEASE SAVEPOINT w")?;
            // Its own error, whatever the commit does.
            again.remove(i).finish(None);
        }
    }
    Ok(())
}

/// Produces a job's answer without running it (its transaction never began).
fn skip(job: Once) -> (bool, Finish) {
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

#[cfg(test)]
mod tests {
    use crate::store::testing::TestStore;
    use crate::store::{Conn, Result, StoreError};

    async fn count(store: &crate::store::Store, name: &str) -> i64 {
        let name = name.to_owned();
        store
            .read(move |c| {
                c.query_one("SELECT COUNT(*) FROM kv WHERE k = $1", &[name.into()])?
                    .int(0)
            })
            .await
            .unwrap()
    }

    fn put(c: &mut dyn Conn, k: &str, fail: bool) -> Result<u64> {
        c.execute("INSERT INTO kv (k) VALUES ($1)", &[k.into()])?;
        if fail {
            return Err(StoreError::Invalid(format!("{k} fails after writing")));
        }
        Ok(1)
    }

    /// Re-runnable and once-only writes share batches: a failing write of
    /// either kind leaves nothing behind, every other write is committed
    /// exactly once, and each caller gets its own result.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_write_spoils_no_batch_mate() {
        let t = TestStore::open().await;
        let store = t.store.clone();
        store
            .write(|c| c.batch("CREATE TABLE kv (k TEXT NOT NULL)"))
            .await
            .unwrap();
        let mut tasks = Vec::new();
        for round in 0..20 {
            for i in 0..12 {
                let store = store.clone();
                let key = format!("r{round}-{i}");
                // Every fourth write fails after it wrote its row; the odd
                // ones may run again, the even ones run once.
                let fail = i % 4 == 3;
                tasks.push(tokio::spawn(async move {
                    let result = if i % 2 == 1 {
                        let k = key.clone();
                        store.write_again(move |c| put(c, &k, fail)).await
                    } else {
                        let k = key.clone();
                        store.write(move |c| put(c, &k, fail)).await
                    };
                    (key, fail, result)
                }));
            }
        }
        for task in tasks {
            let (key, fail, result) = task.await.unwrap();
            if fail {
                assert!(
                    matches!(&result, Err(StoreError::Invalid(m)) if m.contains(&key)),
                    "{key}: {result:?}"
                );
                assert_eq!(count(&store, &key).await, 0, "{key} left its row");
            } else {
                assert_eq!(result.unwrap(), 1, "{key}");
                assert_eq!(count(&store, &key).await, 1, "{key} committed once");
            }
        }
        let stats = store.writer_stats();
        assert!(
            stats.commits < stats.writes,
            "writes shared commits: {stats:?}"
        );
    }

    /// A batch in which many re-runnable writes fail still ends: after two
    /// reruns the rest take savepoints.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn many_failures_in_one_batch_end() {
        let t = TestStore::open().await;
        let store = t.store.clone();
        store
            .write(|c| c.batch("CREATE TABLE kv (k TEXT NOT NULL)"))
            .await
            .unwrap();
        let runs = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for i in 0..64 {
            let (store, runs) = (store.clone(), runs.clone());
            tasks.push(tokio::spawn(async move {
                let key = format!("k{i}");
                store
                    .write_again(move |c| {
                        runs.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        put(c, &key, i % 2 == 0)
                    })
                    .await
            }));
        }
        let mut ok = 0;
        for task in tasks {
            ok += usize::from(task.await.unwrap().is_ok());
        }
        assert_eq!(ok, 32);
        for i in 0..64 {
            assert_eq!(count(&store, &format!("k{i}")).await, i64::from(i % 2 == 1));
        }
        // Each write runs at most MAX_RERUNS + 1 times per batch it is in.
        let runs = runs.load(std::sync::atomic::Ordering::SeqCst);
        assert!(runs <= 64 * (super::MAX_RERUNS + 1), "{runs} runs");
    }
}
