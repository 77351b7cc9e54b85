//! `botwire backup FILE` and `botwire restore FILE`: a consistent copy of a
//! SQLite database taken while the server runs, and its return into place
//! (refused while any botwire process has the database open). PostgreSQL
//! has its own tools; for it these commands print the lines to use.

use crate::config::Config;
use crate::store::sqlite::{Sqlite, backup};
use anyhow::{Context, bail};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

/// Flags of `botwire backup`.
#[derive(Args, Debug)]
pub struct BackupArgs {
    /// The new file to write the copy to (never overwritten).
    file: PathBuf,
}

/// Flags of `botwire restore`.
#[derive(Args, Debug)]
pub struct RestoreArgs {
    /// A file made by `botwire backup`.
    file: PathBuf,
    /// Replace the database if it exists (it must not be in use).
    #[arg(long)]
    force: bool,
}

/// The SQLite file the configured database names, or the PostgreSQL advice.
fn sqlite(config: &Config, postgres_advice: &str) -> anyhow::Result<Sqlite> {
    let url = config.database.as_str();
    let Some(path) = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
    else {
        bail!(
            "{} is not a SQLite database; for PostgreSQL use its own tools:\n  {postgres_advice}",
            super::redact_url(url)
        );
    };
    Ok(Sqlite::new(path)?)
}

fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

/// Runs `botwire backup`.
pub async fn run_backup(args: BackupArgs, config: &Config) -> anyhow::Result<()> {
    let db = sqlite(
        config,
        "pg_dump --format=custom --file FILE 'postgres://USER@HOST/DB'",
    )?;
    let source = db.path().to_owned();
    eprintln!("backing up {source} to {} …", args.file.display());
    let started = Instant::now();
    let file = args.file.clone();
    let copied = tokio::task::spawn_blocking(move || backup::backup(&source, &file))
        .await
        .context("the backup task failed")??;
    eprintln!(
        "backed up {} (schema {}) in {} ms to {}",
        mib(copied.bytes),
        copied.schema_version,
        started.elapsed().as_millis(),
        args.file.display()
    );
    Ok(())
}

/// Runs `botwire restore`.
pub async fn run_restore(args: RestoreArgs, config: &Config) -> anyhow::Result<()> {
    let db = sqlite(
        config,
        "pg_restore --clean --if-exists --dbname 'postgres://USER@HOST/DB' FILE",
    )?;
    let target = db.path().to_owned();
    eprintln!("restoring {} into {target} …", args.file.display());
    let started = Instant::now();
    let file = args.file.clone();
    let force = args.force;
    let copied = tokio::task::spawn_blocking(move || {
        backup::restore(&file, &target, force, Sqlite::newest_migration())
    })
    .await
    .context("the restore task failed")??;
    eprintln!(
        "restored {} (schema {}) in {} ms; start botwire serve on it (newer migrations, if any, run then)",
        mib(copied.bytes),
        copied.schema_version,
        started.elapsed().as_millis()
    );
    Ok(())
}
