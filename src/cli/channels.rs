//! `botwire channels add|list|remove`: a bot's messaging channels from the
//! shell, over the same database `serve` uses. Secrets are taken as flags
//! (or from the environment, e.g. `BOTWIRE_CHANNEL_ACCESS_TOKEN`) and never
//! printed back.

use crate::channels::{ChannelConfig, ChannelFields, ChannelKind, Secret};
use crate::config::Config;
use crate::store::PageRequest;
use anyhow::{Context, bail};
use clap::{Args, Subcommand};

/// `botwire channels`
#[derive(Subcommand, Debug)]
pub enum ChannelsCommand {
    /// Bind a messaging channel to a bot; prints its id and the inbound URL
    /// to paste into the platform.
    Add(Box<AddArgs>),
    /// A bot's channels (never their secrets).
    List {
        /// The bot.
        #[arg(long)]
        bot: String,
        /// The account (default: the first one).
        #[arg(long)]
        account: Option<String>,
    },
    /// Delete a channel with its messages.
    Remove {
        /// The channel's id (`ch_…`).
        id: String,
        /// The account (default: the first one).
        #[arg(long)]
        account: Option<String>,
    },
}

/// Flags of `botwire channels add`: the kind and its fields.
#[derive(Args, Debug)]
pub struct AddArgs {
    /// whatsapp, telegram, twilio or messenger.
    #[arg(long)]
    kind: String,
    /// The bot.
    #[arg(long)]
    bot: String,
    /// A name for people.
    #[arg(long, default_value = "")]
    name: String,
    /// The account (default: the first one).
    #[arg(long)]
    account: Option<String>,
    /// WhatsApp: the number's id in the Cloud API.
    #[arg(long)]
    phone_number_id: Option<String>,
    /// WhatsApp: access token.
    #[arg(long, env = "BOTWIRE_CHANNEL_ACCESS_TOKEN", hide_env_values = true)]
    access_token: Option<String>,
    /// WhatsApp, Messenger: the Meta app secret.
    #[arg(long, env = "BOTWIRE_CHANNEL_APP_SECRET", hide_env_values = true)]
    app_secret: Option<String>,
    /// WhatsApp, Messenger: the handshake's verify token.
    #[arg(long)]
    verify_token: Option<String>,
    /// Telegram: the bot token.
    #[arg(long, env = "BOTWIRE_CHANNEL_BOT_TOKEN", hide_env_values = true)]
    bot_token: Option<String>,
    /// Telegram: the webhook secret token.
    #[arg(long, env = "BOTWIRE_CHANNEL_SECRET_TOKEN", hide_env_values = true)]
    secret_token: Option<String>,
    /// Twilio: the account SID.
    #[arg(long)]
    account_sid: Option<String>,
    /// Twilio: the auth token.
    #[arg(long, env = "BOTWIRE_CHANNEL_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
    /// Twilio: the sending number, +E164 or whatsapp:+E164.
    #[arg(long)]
    from: Option<String>,
    /// Messenger: the page id.
    #[arg(long)]
    page_id: Option<String>,
    /// Messenger: the page access token.
    #[arg(
        long,
        env = "BOTWIRE_CHANNEL_PAGE_ACCESS_TOKEN",
        hide_env_values = true
    )]
    page_access_token: Option<String>,
    /// The platform API's base URL (default: the platform's own).
    #[arg(long)]
    api_base: Option<String>,
}

/// Runs a channels subcommand.
pub async fn channels(cmd: ChannelsCommand, config: &Config) -> anyhow::Result<()> {
    let store = super::open_store(config).await?;
    let public = config.public_url();
    match cmd {
        ChannelsCommand::Add(a) => {
            let a = *a;
            let Some(kind) = ChannelKind::parse(&a.kind) else {
                bail!("--kind must be whatsapp, telegram, twilio or messenger");
            };
            let fields = ChannelFields {
                phone_number_id: a.phone_number_id,
                access_token: a.access_token.map(Secret::new),
                app_secret: a.app_secret.map(Secret::new),
                verify_token: a.verify_token,
                bot_token: a.bot_token.map(Secret::new),
                secret_token: a.secret_token.map(Secret::new),
                account_sid: a.account_sid,
                auth_token: a.auth_token.map(Secret::new),
                from: a.from,
                page_id: a.page_id,
                page_access_token: a.page_access_token.map(Secret::new),
                api_base: a.api_base,
            };
            let config = ChannelConfig::create(kind, &fields).map_err(|e| anyhow::anyhow!(e))?;
            let account = super::admin::account_id(&store, a.account).await?;
            let id = crate::domain::ids::new_id("ch");
            store
                .create_channel(&account, &a.bot, &id, a.name.trim(), config)
                .await
                .with_context(|| format!("cannot add a channel to bot {:?}", a.bot))?;
            eprintln!(
                "added {kind} channel {id} to bot {}; point the platform's webhook at:",
                a.bot
            );
            println!("{public}/channels/{id}/webhook");
        }
        ChannelsCommand::List { bot, account } => {
            let account = super::admin::account_id(&store, account).await?;
            let page = store
                .list_channels(
                    &account,
                    &bot,
                    PageRequest {
                        limit: 200,
                        after: None,
                    },
                )
                .await?;
            for c in page.items {
                let (public_fields, _) = c.config.public();
                println!(
                    "{}\t{}\t{}\t{public}/channels/{}/webhook\t{}",
                    c.id,
                    c.kind(),
                    c.name,
                    c.id,
                    serde_json::Value::Object(public_fields)
                );
            }
        }
        ChannelsCommand::Remove { id, account } => {
            let account = super::admin::account_id(&store, account).await?;
            store
                .delete_channel(&account, &id)
                .await
                .with_context(|| format!("channel {id:?} not found"))?;
            eprintln!("removed channel {id}");
        }
    }
    store.close().await;
    Ok(())
}
