//! The read pool: a few read connections used from the blocking thread pool.
//!
//! At most the backend's pool size of reads run at once. SQLite's
//! connections are opened lazily and kept here; a connection whose query
//! failed for an operational reason is dropped rather than returned, so a
//! broken connection heals by reconnecting. PostgreSQL lends its connections
//! from its own pool (deadpool-postgres, [`Backend::pools_readers`]), which
//! takes each back when the read is done and checks it on the next loan.

use super::{Backend, Conn, Result, StoreError};
use std::sync::{Arc, Mutex};
use tokio::sync::Semaphore;

/// A bounded pool of read connections.
pub struct ReadPool {
    backend: Arc<dyn Backend>,
    idle: Mutex<Vec<Box<dyn Conn>>>,
    permits: Arc<Semaphore>,
    size: usize,
}

impl ReadPool {
    /// A pool for `backend`, sized by the backend.
    pub fn new(backend: Arc<dyn Backend>) -> Self {
        let size = backend.read_pool_size().max(1);
        Self {
            backend,
            idle: Mutex::new(Vec::new()),
            permits: Arc::new(Semaphore::new(size)),
            size,
        }
    }

    /// The pool's size and how many of its connections are in use now.
    pub fn usage(&self) -> (usize, usize) {
        (
            self.size,
            self.size.saturating_sub(self.permits.available_permits()),
        )
    }

    /// Runs `f` on a pooled connection.
    pub async fn run<R, F>(self: &Arc<Self>, f: F) -> Result<R>
    where
        R: Send + 'static,
        F: FnOnce(&mut dyn Conn) -> Result<R> + Send + 'static,
    {
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| StoreError::Unavailable("read pool closed".into()))?;
        let pool = self.clone();
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            if pool.backend.pools_readers() {
                let mut conn = pool.backend.open_reader()?;
                return f(&mut *conn);
            }
            let existing = pool.idle.lock().expect("pool lock").pop();
            let mut conn = match existing {
                Some(c) => c,
                None => pool.backend.open_reader()?,
            };
            let result = f(&mut *conn);
            if !matches!(
                result,
                Err(StoreError::Unavailable(_)) | Err(StoreError::Database(_))
            ) {
                pool.idle.lock().expect("pool lock").push(conn);
            }
            result
        })
        .await
        .map_err(|e| StoreError::Database(format!("read task failed: {e}")))?
    }
}
