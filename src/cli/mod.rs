//! The `botwire` command line: `serve`, `migrate`, `config`, `accounts`,
//! `keys`, `bots`, `channels`, `backup`, `restore`, `prune`, `verify`,
//! `listen`, `bench`.
//!
//! Every subcommand that touches data takes the same `--database` and
//! `--config` (and reads the same `BOTWIRE_*` environment), so what `serve`
//! uses is what `keys create` changes. Output meant for scripts (a new key)
//! is alone on the last line of stdout; progress goes to stderr.

mod admin;
mod backup;
mod bench;
pub mod bench_backlog;
mod bench_broadcast;
mod bench_channel;
mod bench_chat;
mod bench_client;
mod bench_cluster;
mod bench_contacts;
mod bench_deliver;
mod bench_flow;
mod bench_story;
mod channels;
pub mod listen;
mod prune;
mod serve;
pub mod verify;

use crate::auth::Pepper;
use crate::config::{Config, Overrides};
use crate::store::Store;
use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

/// botwire — chatbots that talk to the rest of a business through webhooks.
#[derive(Parser, Debug)]
#[command(name = "botwire", version, about)]
pub struct Cli {
    #[command(flatten)]
    common: Common,
    #[command(subcommand)]
    command: Command,
}

/// Options every subcommand shares.
#[derive(Args, Debug, Clone)]
pub struct Common {
    /// TOML configuration file (see `botwire config`).
    #[arg(long, global = true, env = "BOTWIRE_CONFIG")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://FILE or postgres://USER@HOST/DB.
    #[arg(long, global = true)]
    database: Option<String>,
    /// Log format: text or json.
    #[arg(long, global = true)]
    log_format: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the HTTP API, the console and the delivery workers.
    Serve(serve::ServeArgs),
    /// Apply pending database migrations and exit.
    Migrate,
    /// Print the default configuration, every key commented.
    Config,
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(admin::AccountsCommand),
    /// Manage API keys.
    #[command(subcommand)]
    Keys(admin::KeysCommand),
    /// Import and export whole bots (YAML or JSON bot files).
    #[command(subcommand)]
    Bots(admin::BotsCommand),
    /// Copy a SQLite database while the server runs.
    Backup(backup::BackupArgs),
    /// Put a backup in place of a SQLite database that is not in use.
    Restore(backup::RestoreArgs),
    /// Remove records older than the retention settings (retention.*) now.
    Prune(prune::PruneArgs),
    /// Put bots on messaging platforms (WhatsApp, Telegram, Twilio, Messenger).
    #[command(subcommand)]
    Channels(channels::ChannelsCommand),
    /// Check a webhook signature (for people writing receivers).
    Verify(verify::VerifyArgs),
    /// Run a local receiver that prints every delivery and checks its signature.
    Listen(listen::ListenArgs),
    /// Measure throughput.
    #[command(subcommand)]
    Bench(bench::BenchCommand),
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Config => {
            print!("{}", crate::config::DEFAULTS);
            Ok(())
        }
        Command::Serve(args) => {
            let config = load_config(&cli.common, args.overrides())?;
            serve::run(config).await
        }
        Command::Migrate => {
            let config = load_config(&cli.common, Overrides::default())?;
            init_logging(&config);
            eprintln!("migrating {} …", redact_url(&config.database));
            let store = open_store(&config).await?;
            store.close().await;
            eprintln!("database is up to date");
            Ok(())
        }
        Command::Accounts(cmd) => {
            let config = load_config(&cli.common, Overrides::default())?;
            admin::accounts(cmd, &config).await
        }
        Command::Keys(cmd) => {
            let config = load_config(&cli.common, Overrides::default())?;
            admin::keys(cmd, &config).await
        }
        Command::Bots(cmd) => {
            let config = load_config(&cli.common, Overrides::default())?;
            admin::bots(cmd, &config).await
        }
        Command::Backup(args) => {
            let config = load_config(&cli.common, Overrides::default())?;
            backup::run_backup(args, &config).await
        }
        Command::Restore(args) => {
            let config = load_config(&cli.common, Overrides::default())?;
            backup::run_restore(args, &config).await
        }
        Command::Channels(cmd) => {
            let config = load_config(&cli.common, Overrides::default())?;
            channels::channels(cmd, &config).await
        }
        Command::Prune(args) => {
            let config = load_config(&cli.common, Overrides::default())?;
            prune::run(args, &config).await
        }
        Command::Verify(args) => verify::run(args),
        Command::Listen(args) => listen::run(args).await,
        Command::Bench(cmd) => bench::run(cmd).await,
    }
}

fn load_config(common: &Common, mut flags: Overrides) -> anyhow::Result<Config> {
    flags.database = common.database.clone().or(flags.database);
    flags.log_format = common.log_format.clone().or(flags.log_format);
    Ok(Config::load(
        common.config.as_deref(),
        |k| std::env::var(k).ok(),
        &flags,
    )?)
}

/// Opens (and migrates) the configured database.
pub async fn open_store(config: &Config) -> anyhow::Result<Store> {
    Store::open(&config.database)
        .await
        .with_context(|| format!("cannot open database {}", redact_url(&config.database)))
}

/// The key-hash pepper: from config, else the one kept in the database.
pub async fn pepper(config: &Config, store: &Store) -> anyhow::Result<Pepper> {
    if !config.secret_key.is_empty() {
        return Ok(Pepper::new(config.secret_key.expose().as_bytes().to_vec()));
    }
    let stored = store.stored_pepper().await?;
    Ok(Pepper::new(stored.into_bytes()))
}

/// A database URL with any password hidden, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            match userinfo.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..scheme + 3], &url[at..]),
                None => url.to_owned(),
            }
        }
        _ => url.to_owned(),
    }
}

/// Sets up logging to stderr in the configured format.
pub fn init_logging(config: &Config) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("BOTWIRE_LOG")
        .unwrap_or_else(|_| EnvFilter::new("info,tower_http=info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if config.log_format == crate::config::LogFormat::Json {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_in_database_urls() {
        assert_eq!(
            redact_url("postgres://bw:s3cret@db:5432/bw"),
            "postgres://bw:***@db:5432/bw"
        );
        assert_eq!(redact_url("sqlite://botwire.db"), "sqlite://botwire.db");
        assert_eq!(redact_url("postgres://bw@db/bw"), "postgres://bw@db/bw");
    }
}
