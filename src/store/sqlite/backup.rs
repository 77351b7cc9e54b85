//! Online backup and restore of a SQLite database file.
//!
//! A backup is `VACUUM INTO` on a connection of its own: it reads one
//! consistent snapshot (a WAL read transaction), so it runs while a server
//! writes, without stopping it, and the copy holds exactly the transactions
//! committed when it began. The copy is compacted and fsynced before the
//! backup reports success.
//!
//! A restore replaces a database file with a backup, and must never do so
//! under a running botwire: every process that opens the database to write
//! holds a shared `flock` on its file ([`hold_in_use`]); restore takes the
//! exclusive one, so it is refused while any holder lives, and a server
//! cannot start half-way through a restore. The backup is checked first
//! (SQLite's integrity check, a botwire schema no newer than this binary),
//! written beside the target, fsynced and renamed over it, so a crash leaves
//! either the old database or the new one, never a mix; the old file's WAL
//! and shared-memory files go with it.

use super::{Result, StoreError};
use std::fs::{File, OpenOptions, TryLockError};
use std::path::{Path, PathBuf};

/// What a backup or a restore did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    /// Size of the copy in bytes.
    pub bytes: u64,
    /// The newest migration the copy's schema has.
    pub schema_version: i64,
}

/// Takes the shared in-use lock on the database at `path` (created if
/// missing); held for as long as the returned file stays open.
pub fn hold_in_use(path: &str) -> Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .map_err(|e| StoreError::Unavailable(format!("cannot open {path}: {e}")))?;
    match file.try_lock_shared() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(StoreError::Unavailable(format!(
            "{path} is being restored from a backup; start again when the restore has finished"
        ))),
        Err(TryLockError::Error(e)) => {
            Err(StoreError::Unavailable(format!("cannot lock {path}: {e}")))
        }
    }
}

/// Copies the database at `source` into a new file `dest` while it may be
/// in use. Refuses to overwrite an existing file.
pub fn backup(source: &str, dest: &Path) -> Result<Copied> {
    if !Path::new(source).exists() {
        return Err(StoreError::Invalid(format!(
            "{source} does not exist: there is nothing to back up"
        )));
    }
    if dest.exists() {
        return Err(StoreError::Invalid(format!(
            "{} exists already; choose a new file name (a backup never overwrites)",
            dest.display()
        )));
    }
    let conn = rusqlite::Connection::open_with_flags(
        source,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Unavailable(format!("cannot open {source}: {e}")))?;
    conn.busy_timeout(super::super::BUSY_TIMEOUT)
        .map_err(super::map_err)?;
    let dest_text = dest
        .to_str()
        .ok_or_else(|| StoreError::Invalid("the backup file name must be valid UTF-8".into()))?;
    conn.execute("VACUUM INTO ?1", [dest_text])
        .map_err(|e| StoreError::Database(format!("backup of {source} failed: {e}")))?;
    drop(conn);
    sync_file(dest)?;
    sync_parent(dest)?;
    let schema_version = check(dest)?;
    Ok(Copied {
        bytes: file_len(dest)?,
        schema_version,
    })
}

/// Replaces the database at `target` with the backup `source`. Refuses
/// while any botwire process has `target` open, and refuses to replace an
/// existing database unless `replace` is set. `newest_known` is the newest
/// migration this binary knows: a backup made by a newer botwire is refused.
pub fn restore(source: &Path, target: &str, replace: bool, newest_known: i64) -> Result<Copied> {
    if !source.exists() {
        return Err(StoreError::Invalid(format!(
            "{} does not exist",
            source.display()
        )));
    }
    let schema_version = check(source)?;
    if schema_version > newest_known {
        return Err(StoreError::Invalid(format!(
            "{} was made by a newer botwire (schema {schema_version}, this one knows up to {newest_known}); restore it with that version",
            source.display()
        )));
    }
    let target_path = Path::new(target);
    // Held until the new file is in place: no server starts meanwhile.
    let _exclusive = if target_path.exists() {
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(target_path)
            .map_err(|e| StoreError::Unavailable(format!("cannot open {target}: {e}")))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => {
                return Err(StoreError::Conflict(format!(
                    "{target} is in use by a running botwire (serve or another command); stop it before restoring"
                )));
            }
            Err(TryLockError::Error(e)) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot lock {target}: {e}"
                )));
            }
        }
        if !replace {
            return Err(StoreError::Conflict(format!(
                "{target} exists; pass --force to replace it with the backup"
            )));
        }
        Some(file)
    } else {
        None
    };
    let tmp = sibling(target_path, ".restoring");
    std::fs::copy(source, &tmp)
        .map_err(|e| StoreError::Unavailable(format!("cannot write {}: {e}", tmp.display())))?;
    sync_file(&tmp)?;
    for suffix in ["-wal", "-shm"] {
        let stale = sibling(target_path, suffix);
        match std::fs::remove_file(&stale) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(StoreError::Unavailable(format!(
                    "cannot remove {}: {e}",
                    stale.display()
                )));
            }
        }
    }
    std::fs::rename(&tmp, target_path)
        .map_err(|e| StoreError::Unavailable(format!("cannot replace {target}: {e}")))?;
    sync_parent(target_path)?;
    Ok(Copied {
        bytes: file_len(target_path)?,
        schema_version,
    })
}

/// Checks that `path` is an intact botwire database; answers its newest
/// migration.
fn check(path: &Path) -> Result<i64> {
    let conn = rusqlite::Connection::open_with_flags(
        path,
        rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|e| StoreError::Invalid(format!("cannot open {}: {e}", path.display())))?;
    let not_botwire = |e: rusqlite::Error| {
        StoreError::Invalid(format!(
            "{} is not a botwire database ({e})",
            path.display()
        ))
    };
    let verdict: String = conn
        .query_row("PRAGMA integrity_check", [], |r| r.get(0))
        .map_err(not_botwire)?;
    if verdict != "ok" {
        return Err(StoreError::Invalid(format!(
            "{} fails SQLite's integrity check: {verdict}",
            path.display()
        )));
    }
    conn.query_row("SELECT MAX(version) FROM schema_migrations", [], |r| {
        r.get::<_, Option<i64>>(0)
    })
    .map_err(not_botwire)?
    .ok_or_else(|| {
        StoreError::Invalid(format!(
            "{} is not a botwire database (no migrations recorded)",
            path.display()
        ))
    })
}

fn sibling(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

fn file_len(path: &Path) -> Result<u64> {
    std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|e| StoreError::Unavailable(format!("cannot read {}: {e}", path.display())))
}

fn sync_file(path: &Path) -> Result<()> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Unavailable(format!("cannot sync {}: {e}", path.display())))
}

/// Makes a new or renamed directory entry durable.
fn sync_parent(path: &Path) -> Result<()> {
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|f| f.sync_all())
        .map_err(|e| StoreError::Unavailable(format!("cannot sync {}: {e}", parent.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!(
            "botwire-backup-{name}-{}",
            crate::domain::ids::new_id("t")
        ));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    fn make_db(path: &Path, rows: i64) {
        let c = rusqlite::Connection::open(path).unwrap();
        c.execute_batch(
            "PRAGMA journal_mode = WAL;
             CREATE TABLE schema_migrations (version BIGINT PRIMARY KEY, name TEXT, applied_at BIGINT);
             INSERT INTO schema_migrations VALUES (3, 'x', 0);
             CREATE TABLE t (n BIGINT);",
        )
        .unwrap();
        for n in 0..rows {
            c.execute("INSERT INTO t VALUES (?1)", [n]).unwrap();
        }
    }

    fn count(path: &Path) -> i64 {
        rusqlite::Connection::open(path)
            .unwrap()
            .query_row("SELECT COUNT(*) FROM t", [], |r| r.get(0))
            .unwrap()
    }

    #[test]
    fn backup_copies_committed_rows_and_never_overwrites() {
        let dir = temp("copy");
        let db = dir.join("a.db");
        make_db(&db, 100);
        let dest = dir.join("b.db");
        let copied = backup(db.to_str().unwrap(), &dest).unwrap();
        assert_eq!(copied.schema_version, 3);
        assert!(copied.bytes > 0);
        assert_eq!(count(&dest), 100);
        let again = backup(db.to_str().unwrap(), &dest).unwrap_err();
        assert!(again.to_string().contains("never overwrites"), "{again}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn restore_is_refused_while_the_database_is_in_use() {
        let dir = temp("live");
        let live = dir.join("live.db");
        make_db(&live, 5);
        let copy = dir.join("copy.db");
        backup(live.to_str().unwrap(), &copy).unwrap();
        let holder = hold_in_use(live.to_str().unwrap()).unwrap();
        let err = restore(&copy, live.to_str().unwrap(), true, 10).unwrap_err();
        assert!(matches!(err, StoreError::Conflict(_)), "{err}");
        assert!(err.to_string().contains("in use"), "{err}");
        drop(holder);
        // Not in use any more, but it exists: only with --force.
        let err = restore(&copy, live.to_str().unwrap(), false, 10).unwrap_err();
        assert!(err.to_string().contains("--force"), "{err}");
        restore(&copy, live.to_str().unwrap(), true, 10).unwrap();
        assert_eq!(count(&live), 5);
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn a_server_cannot_start_during_a_restore() {
        let dir = temp("during");
        let db = dir.join("d.db");
        make_db(&db, 1);
        let f = File::open(&db).unwrap();
        f.try_lock().unwrap();
        let err = hold_in_use(db.to_str().unwrap()).unwrap_err();
        assert!(err.to_string().contains("being restored"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }

    #[test]
    fn restore_refuses_damaged_foreign_and_newer_files() {
        let dir = temp("bad");
        let junk = dir.join("junk.db");
        std::fs::write(&junk, b"not a database at all, just text").unwrap();
        let target = dir.join("t.db");
        let err = restore(&junk, target.to_str().unwrap(), false, 10).unwrap_err();
        assert!(err.to_string().contains("not a botwire database"), "{err}");

        let foreign = dir.join("foreign.db");
        rusqlite::Connection::open(&foreign)
            .unwrap()
            .execute_batch("CREATE TABLE x (a)")
            .unwrap();
        let err = restore(&foreign, target.to_str().unwrap(), false, 10).unwrap_err();
        assert!(err.to_string().contains("not a botwire database"), "{err}");

        let newer = dir.join("newer.db");
        make_db(&newer, 1);
        let err = restore(&newer, target.to_str().unwrap(), false, 2).unwrap_err();
        assert!(err.to_string().contains("newer botwire"), "{err}");
        assert!(!target.exists(), "nothing was written");
        let _ = std::fs::remove_dir_all(dir);
    }
}
