//! Bot definitions at run time: the current flow and settings, parsed once
//! per change and cached; import and export of whole bot files.
//!
//! Settings (price table, calendar, declared story webhooks) are a JSON
//! object kept on the bot row. A flow is saved as a new version; the cache
//! key includes the bot's `updated_at`, which every flow or settings change
//! moves, so a stale definition is never served.

use super::RuntimeError;
use crate::domain::bot::{BotId, BotType};
use crate::domain::calendar::Calendar;
use crate::domain::flow::{BotFile, Flow, FlowError, StoryWebhook};
use crate::domain::outbound;
use crate::domain::quote::{PriceTable, QuoteError};
use crate::store::{Store, StoreError};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A bot's settings document.
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Prices, for quote nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_table: Option<PriceTable>,
    /// Opening hours and slots, for booking nodes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
    /// Story webhooks declared with the bot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<StoryWebhook>,
}

impl Settings {
    /// Checks the price table, the calendar and the story webhooks.
    pub fn validate(&self) -> Result<(), Vec<FlowError>> {
        let mut errors = Vec::new();
        for (i, w) in self.webhooks.iter().enumerate() {
            errors.extend(w.problems("webhooks", &format!("[{i}].")));
        }
        if let Some(t) = &self.price_table
            && let Err(es) = t.validate()
        {
            errors.extend(es.into_iter().map(|e| match e {
                QuoteError::InvalidTable { field, message } => {
                    FlowError::new("price_table", field, message)
                }
                other => FlowError::new("price_table", "", other.to_string()),
            }));
        }
        if let Some(c) = &self.calendar
            && let Err(es) = c.validate()
        {
            errors.extend(
                es.into_iter()
                    .map(|e| FlowError::new("calendar", &e.field, &e.message)),
            );
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }
}

/// Puts back the stored secret header values that `webhooks` (a settings
/// document or bot file about to replace `stored`) sends back redacted, as
/// `GET …/settings` and `GET …/export` show them; matched by webhook name.
/// A redacted value that matches no stored secret is refused.
pub fn restore_secrets(
    webhooks: &mut [StoryWebhook],
    stored: &[StoryWebhook],
) -> Result<(), RuntimeError> {
    let none = std::collections::BTreeMap::new();
    for (i, w) in webhooks.iter_mut().enumerate() {
        let old = stored
            .iter()
            .find(|s| s.name == w.name)
            .map_or(&none, |s| &s.headers);
        outbound::restore_redacted(&mut w.headers, old).map_err(|p| {
            RuntimeError::Flow(vec![FlowError::new(
                "webhooks",
                format!("[{i}].headers.{}", p.header().unwrap_or_default()),
                p.to_string(),
            )])
        })?;
    }
    Ok(())
}

/// The settings as shown: story webhooks' secret header values redacted.
pub fn redacted(settings: &Settings) -> Settings {
    Settings {
        webhooks: settings
            .webhooks
            .iter()
            .map(StoryWebhook::redacted)
            .collect(),
        ..settings.clone()
    }
}

/// What a running conversation needs of its bot.
#[derive(Debug)]
pub struct Definition {
    /// The bot's type.
    pub bot_type: BotType,
    /// Current flow version.
    pub flow_version: i64,
    /// The current flow.
    pub flow: Flow,
    /// Its settings.
    pub settings: Settings,
    /// The bot's story-webhook secrets (JSON), when its flow calls any.
    pub story_secrets: String,
}

/// (account, bot) → (the bot's `updated_at` when parsed, when that was
/// last checked, the definition).
type Entries = HashMap<(String, String), (i64, Instant, Arc<Definition>)>;

/// Parsed definitions keyed by (account, bot), valid for one `updated_at`.
///
/// A definition checked against the database less than [`FRESH`] ago is
/// used without asking again; changes made through this process call
/// [`DefinitionCache::forget`] so they apply at once, and changes made by
/// another process apply within [`FRESH`].
#[derive(Default)]
pub struct DefinitionCache {
    entries: Mutex<Entries>,
}

/// How long a checked definition is trusted.
pub const FRESH: Duration = Duration::from_secs(1);

impl DefinitionCache {
    /// Drops the cached definition of a bot (after a change to it).
    pub fn forget(&self, account: &str, bot: &str) {
        self.entries
            .lock()
            .expect("cache lock")
            .remove(&(account.to_owned(), bot.to_owned()));
    }

    /// The bot's current definition; `NotReady` when it has no flow yet.
    pub async fn load(
        &self,
        store: &Store,
        account: &str,
        bot: &str,
    ) -> Result<Arc<Definition>, RuntimeError> {
        let key = (account.to_owned(), bot.to_owned());
        if let Some((_, checked, def)) = self.entries.lock().expect("cache lock").get(&key)
            && checked.elapsed() < FRESH
        {
            return Ok(def.clone());
        }
        let row = store.get_bot(account, bot).await?;
        {
            let mut entries = self.entries.lock().expect("cache lock");
            if let Some((stamp, checked, def)) = entries.get_mut(&key)
                && *stamp == row.updated_at
                && def.flow_version == row.flow_version
            {
                *checked = Instant::now();
                return Ok(def.clone());
            }
        }
        let flow_row = store
            .get_flow(account, bot, Some(row.flow_version))
            .await?
            .ok_or_else(|| {
                RuntimeError::NotReady(format!(
                    "bot {bot:?} has no flow yet; PUT one to /v1/bots/{bot}/flow"
                ))
            })?;
        let flow = Flow::from_json(&flow_row.document).map_err(RuntimeError::Flow)?;
        let settings: Settings = serde_json::from_str(&store.get_bot_settings(account, bot).await?)
            .map_err(|e| StoreError::Database(format!("bot settings: {e}")))?;
        let story_secrets = if flow.webhook_names().is_empty() {
            "[]".to_owned()
        } else {
            store
                .story_secrets(account, bot, super::story::fresh_secrets())
                .await?
        };
        let def = Arc::new(Definition {
            bot_type: row.bot_type,
            flow_version: row.flow_version,
            flow,
            settings,
            story_secrets,
        });
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() > 10_000 {
            entries.clear();
        }
        entries.insert(key, (row.updated_at, Instant::now(), def.clone()));
        Ok(def)
    }
}

/// Parses a flow document as YAML or JSON and validates the whole graph;
/// every story webhook it calls must be among `known_webhooks`.
pub fn parse_flow(body: &str, yaml: bool, known_webhooks: &[String]) -> Result<Flow, RuntimeError> {
    let flow = if yaml {
        Flow::from_yaml(body)
    } else {
        Flow::from_json(body)
    }
    .map_err(RuntimeError::Flow)?;
    flow.validate(Some(known_webhooks))
        .map_err(RuntimeError::Flow)?;
    Ok(flow)
}

/// Saves a validated flow as the bot's new version.
///
/// With `expected`, only when the current version is still that one
/// (a conflict otherwise; see [`Store::put_flow_if`]).
pub async fn save_flow(
    store: &Store,
    account: &str,
    bot: &str,
    flow: &Flow,
    expected: Option<i64>,
) -> Result<i64, RuntimeError> {
    Ok(store
        .put_flow_if(account, bot, flow.to_json(), expected)
        .await?)
}

/// What an import did.
#[derive(Debug)]
pub struct Imported {
    /// The bot's id.
    pub bot_id: String,
    /// Whether the bot was created (else updated).
    pub created: bool,
    /// The flow version saved.
    pub flow_version: i64,
}

/// Parses a bot file (YAML or JSON).
pub fn parse_bot_file(body: &str, yaml: bool) -> Result<BotFile, RuntimeError> {
    let file = if yaml {
        BotFile::from_yaml(body)
    } else {
        BotFile::from_json(body)
    }
    .map_err(RuntimeError::Flow)?;
    file.validate().map_err(RuntimeError::Flow)?;
    Ok(file)
}

/// Creates or updates a bot from a validated bot file: bot row, settings,
/// then a new flow version.
pub async fn import(
    store: &Store,
    account: &str,
    file: &BotFile,
) -> Result<Imported, RuntimeError> {
    // The file was validated: its id follows BotId's rule.
    let id =
        BotId::parse(file.id.as_str()).map_err(|m| RuntimeError::Invalid(format!("id: {m}")))?;
    let bot_type = file.bot_type;
    // Secrets exported redacted come back as they were stored.
    let stored: Vec<StoryWebhook> = match store.get_bot_settings(account, id.as_str()).await {
        Ok(json) => serde_json::from_str::<Settings>(&json)
            .map(|s| s.webhooks)
            .unwrap_or_default(),
        Err(StoreError::NotFound) => Vec::new(),
        Err(e) => return Err(e.into()),
    };
    let mut webhooks = file.webhooks.clone();
    restore_secrets(&mut webhooks, &stored)?;
    let created = match store
        .create_bot(account, id.clone(), &file.name, bot_type)
        .await
    {
        Ok(_) => true,
        Err(StoreError::Conflict(_)) => {
            store
                .update_bot(
                    account,
                    id.as_str(),
                    crate::store::bots::BotPatch {
                        name: Some(file.name.clone()),
                        bot_type: Some(bot_type),
                    },
                )
                .await?;
            false
        }
        Err(e) => return Err(e.into()),
    };
    let settings = Settings {
        price_table: file.price_table.clone(),
        calendar: file.calendar.clone(),
        webhooks,
    };
    store
        .put_bot_settings(
            account,
            id.as_str(),
            serde_json::to_string(&settings).expect("settings serialise"),
        )
        .await?;
    let flow_version = save_flow(store, account, id.as_str(), &file.flow, None).await?;
    Ok(Imported {
        bot_id: id.to_string(),
        created,
        flow_version,
    })
}

/// The bot as a bot file, ready to be written out, secrets in full (the
/// API shows it through [`redacted`]; the command line, run by whoever
/// holds the database, writes it whole).
pub async fn export(store: &Store, account: &str, bot: &str) -> Result<BotFile, RuntimeError> {
    let row = store.get_bot(account, bot).await?;
    let flow_row = store
        .get_flow(account, bot, None)
        .await?
        .ok_or_else(|| RuntimeError::NotReady(format!("bot {bot:?} has no flow to export")))?;
    let flow = Flow::from_json(&flow_row.document).map_err(RuntimeError::Flow)?;
    let settings: Settings = serde_json::from_str(&store.get_bot_settings(account, bot).await?)
        .map_err(|e| StoreError::Database(format!("bot settings: {e}")))?;
    Ok(BotFile {
        id: row.id,
        name: row.name,
        bot_type: row.bot_type,
        price_table: settings.price_table,
        calendar: settings.calendar,
        webhooks: settings.webhooks,
        flow,
    })
}
