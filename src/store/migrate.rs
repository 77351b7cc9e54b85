//! Migrations: each backend ships its own ordered SQL files; this module
//! applies the ones a database has not seen, each in its own transaction,
//! and records them in `schema_migrations`.
//!
//! Running it twice is harmless. On PostgreSQL several processes may start
//! at once: the backend's `begin_sql` takes the lock that serialises them.

use super::{Backend, BackendKind, Conn, Result, StoreError};

/// Applies every pending migration; returns the versions applied now.
pub fn run(conn: &mut dyn Conn, backend: &dyn Backend) -> Result<Vec<i64>> {
    conn.batch(backend.begin_sql())?;
    lock(conn, backend)?;
    conn.batch(
        "CREATE TABLE IF NOT EXISTS schema_migrations (
            version BIGINT PRIMARY KEY,
            name TEXT NOT NULL,
            applied_at BIGINT NOT NULL
        )",
    )?;
    conn.batch("COMMIT")?;
    let mut applied = Vec::new();
    for &(version, name, sql) in backend.migrations() {
        conn.batch(backend.begin_sql())?;
        lock(conn, backend)?;
        let done = conn.query_opt(
            "SELECT version FROM schema_migrations WHERE version = $1",
            &[version.into()],
        )?;
        if done.is_some() {
            conn.batch("COMMIT")?;
            continue;
        }
        let outcome = conn.batch(sql).and_then(|_| {
            conn.execute(
                "INSERT INTO schema_migrations (version, name, applied_at) VALUES ($1, $2, $3)",
                &[version.into(), name.into(), super::now_ms().into()],
            )
        });
        match outcome {
            Ok(_) => conn.batch("COMMIT")?,
            Err(e) => {
                let _ = conn.batch("ROLLBACK");
                return Err(StoreError::Database(format!(
                    "migration {version} ({name}) failed: {e}"
                )));
            }
        }
        applied.push(version);
    }
    Ok(applied)
}

/// Serialises concurrent migrators on PostgreSQL; released at COMMIT.
/// (SQLite's write transaction already excludes other writers.)
fn lock(conn: &mut dyn Conn, backend: &dyn Backend) -> Result<()> {
    if backend.kind() == BackendKind::Postgres {
        conn.batch("SELECT pg_advisory_xact_lock(7280417)")?;
    }
    Ok(())
}
