//! `botwire accounts …` and `botwire keys …`: administration from the shell.

use crate::config::Config;
use crate::store::PageRequest;
use anyhow::{Context, bail};
use clap::Subcommand;

/// `botwire accounts`
#[derive(Subcommand, Debug)]
pub enum AccountsCommand {
    /// Create an account; its admin key is printed alone on the last line.
    Create {
        /// Display name.
        name: String,
    },
}

/// `botwire keys`
#[derive(Subcommand, Debug)]
pub enum KeysCommand {
    /// Create a key; it is printed alone on the last line.
    Create {
        /// Scope the key to one bot.
        #[arg(long)]
        bot: Option<String>,
        /// A label for the key.
        #[arg(long, default_value = "cli")]
        name: String,
        /// Make a publishable key for the chat widget, usable from this
        /// website origin (repeatable; needs --bot), e.g.
        /// `--origin https://shop.example.com`.
        #[arg(long = "origin", requires = "bot")]
        origins: Vec<String>,
        /// The account (default: the first one; created on a fresh database).
        #[arg(long)]
        account: Option<String>,
    },
    /// List keys (never the keys themselves).
    List {
        /// The account (default: the first one).
        #[arg(long)]
        account: Option<String>,
    },
    /// Revoke a key at once.
    Revoke {
        /// The key's id (`key_…`).
        id: String,
        /// The account (default: the first one).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Runs an accounts subcommand.
pub async fn accounts(cmd: AccountsCommand, config: &Config) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let pepper = super::pepper(config, &store).await?;
    match cmd {
        AccountsCommand::Create { name } => {
            if name.trim().is_empty() {
                bail!("the account name must not be empty");
            }
            let (account, key) = store.create_account(name.trim(), &pepper).await?;
            let changes = serde_json::json!({"name": account.name});
            audit(
                &store,
                &account.id,
                "account.created",
                "account",
                &account.id,
                changes,
            )
            .await?;
            eprintln!(
                "created account {} ({}); its admin key follows — it is shown only once",
                account.id, account.name
            );
            println!("{key}");
        }
    }
    store.close().await;
    Ok(())
}

/// Records a change made from the command line in the audit log.
async fn audit(
    store: &crate::store::Store,
    account: &str,
    action: &str,
    resource_type: &str,
    resource_id: &str,
    changes: serde_json::Value,
) -> anyhow::Result<()> {
    store
        .record_audit(crate::store::audit::NewAudit {
            account_id: account.to_owned(),
            actor: crate::store::audit::Actor::Cli,
            request_id: None,
            action: action.to_owned(),
            resource_type: resource_type.to_owned(),
            resource_id: Some(resource_id.to_owned()),
            changes,
        })
        .await
        .context("the change was made but could not be recorded in the audit log")?;
    Ok(())
}

async fn account_id(store: &crate::store::Store, given: Option<String>) -> anyhow::Result<String> {
    match given {
        Some(id) => Ok(store
            .get_account(&id)
            .await
            .with_context(|| format!("account {id:?} not found"))?
            .id),
        None => Ok(store
            .first_account()
            .await?
            .context("no account yet: run `botwire serve` once or `botwire accounts create NAME`")?
            .id),
    }
}

/// Runs a keys subcommand.
pub async fn keys(cmd: KeysCommand, config: &Config) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let pepper = super::pepper(config, &store).await?;
    match cmd {
        KeysCommand::Create {
            bot,
            name,
            origins,
            account,
        } => {
            if account.is_none()
                && let Some((acc, _)) = store.bootstrap(&pepper).await?
            {
                eprintln!("created the first account ({})", acc.id);
            }
            let account = account_id(&store, account).await?;
            // Recorded in the key's own transaction (see `store::audit`).
            let cli =
                crate::store::audit::Pending::new(Some(crate::store::audit::Actor::Cli), None);
            let created = match (bot.as_deref(), origins.is_empty()) {
                (Some(bot), false) => {
                    let origins = origins
                        .iter()
                        .map(|o| crate::domain::account::parse_origin(o))
                        .collect::<Result<Vec<_>, _>>()
                        .map_err(|e| anyhow::anyhow!("cannot create the key: {e}"))?;
                    let create =
                        store.create_publishable_key(&account, bot, &name, origins, &pepper);
                    crate::store::audit::scope(cli, create).await
                }
                _ => {
                    let create = store.create_key(&account, bot.as_deref(), &name, &pepper);
                    crate::store::audit::scope(cli, create).await
                }
            };
            let (row, key) = created.map_err(|e| anyhow::anyhow!("cannot create the key: {e}"))?;
            match &row.bot_id {
                Some(b) if row.publishable => eprintln!(
                    "created publishable key {} for bot {b}, chat only, from {}; shown only once:",
                    row.id,
                    row.origins.join(", ")
                ),
                Some(b) => eprintln!("created key {} scoped to bot {b}; shown only once:", row.id),
                None => eprintln!("created account-wide key {}; shown only once:", row.id),
            }
            println!("{key}");
        }
        KeysCommand::List { account } => {
            let account = account_id(&store, account).await?;
            let mut after = None;
            println!(
                "{:<32} {:<12} {:<20} {:<12} {:<12} STATE",
                "ID", "PREFIX", "NAME", "BOT", "KIND"
            );
            loop {
                let page = store
                    .list_keys(&account, PageRequest { limit: 200, after })
                    .await?;
                for k in &page.items {
                    println!(
                        "{:<32} {:<12} {:<20} {:<12} {:<12} {}",
                        k.id,
                        k.prefix,
                        k.name,
                        k.bot_id.as_deref().unwrap_or("-"),
                        if k.publishable {
                            "publishable"
                        } else {
                            "secret"
                        },
                        if k.revoked_at.is_some() {
                            "revoked"
                        } else {
                            "live"
                        }
                    );
                }
                match page.next_cursor {
                    Some(c) => after = Some(c),
                    None => break,
                }
            }
        }
        KeysCommand::Revoke { id, account } => {
            let account = account_id(&store, account).await?;
            // Recorded in the revocation's own transaction.
            let cli =
                crate::store::audit::Pending::new(Some(crate::store::audit::Actor::Cli), None);
            let key = crate::store::audit::scope(cli, store.revoke_key(&account, &id))
                .await
                .with_context(|| format!("key {id:?} not found in account {account}"))?;
            eprintln!("revoked key {} ({})", key.id, key.name);
        }
    }
    store.close().await;
    Ok(())
}

/// `botwire bots`
#[derive(Subcommand, Debug)]
pub enum BotsCommand {
    /// Create or update a bot from a bot file (.yaml, .yml or .json).
    Import {
        /// The bot file.
        file: std::path::PathBuf,
        /// The account (default: the first one; created on a fresh database).
        #[arg(long)]
        account: Option<String>,
    },
    /// Write a bot as a bot file to stdout.
    Export {
        /// The bot's id.
        id: String,
        /// `yaml` (default) or `json`.
        #[arg(long, default_value = "yaml")]
        format: String,
        /// The account (default: the first one).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Runs a bots subcommand.
pub async fn bots(cmd: BotsCommand, config: &Config) -> anyhow::Result<()> {
    use crate::runtime::bots as rb;
    let store = super::open_store(config).await?;
    let pepper = super::pepper(config, &store).await?;
    match cmd {
        BotsCommand::Import { file, account } => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("cannot read {}", file.display()))?;
            let yaml = !file
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("json"));
            let bot = rb::parse_bot_file(&text, yaml)
                .map_err(|e| anyhow::anyhow!("{} is not a valid bot file:\n{e}", file.display()))?;
            if account.is_none()
                && let Some((acc, key)) = store.bootstrap(&pepper).await?
            {
                eprintln!(
                    "created the first account ({}); its admin key, shown only once:",
                    acc.id
                );
                eprintln!("{key}");
            }
            let account = account_id(&store, account).await?;
            let done = rb::import(&store, &account, &bot)
                .await
                .map_err(|e| anyhow::anyhow!("import failed: {e}"))?;
            let changes = serde_json::json!({
                "created": done.created,
                "flow_version": done.flow_version,
            });
            audit(
                &store,
                &account,
                "bot.imported",
                "bot",
                &done.bot_id,
                changes,
            )
            .await?;
            eprintln!(
                "{} bot {} (flow version {})",
                if done.created { "created" } else { "updated" },
                done.bot_id,
                done.flow_version
            );
        }
        BotsCommand::Export {
            id,
            format,
            account,
        } => {
            let account = account_id(&store, account).await?;
            let file = rb::export(&store, &account, &id)
                .await
                .map_err(|e| anyhow::anyhow!("cannot export bot {id:?}: {e}"))?;
            match format.as_str() {
                "yaml" => print!("{}", file.to_yaml()),
                "json" => println!("{}", file.to_json()),
                other => bail!("--format must be yaml or json, got {other:?}"),
            }
        }
    }
    store.close().await;
    Ok(())
}
