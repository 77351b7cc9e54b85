//! Fixtures for the store's unit tests: a fresh SQLite store in a temporary
//! file with one account and two bots, and small helpers to add endpoints
//! and events. Compiled for tests only.

use super::Store;
use super::endpoints::{EndpointRow, NewEndpoint, kind};
use super::events::{EventRow, Published};
use crate::domain::bot::{BotId, BotType};
use std::path::PathBuf;

/// A store over a temporary SQLite file, removed on drop.
pub(crate) struct TestStore {
    /// The store.
    pub store: Store,
    /// Its one account.
    pub account: String,
    dir: PathBuf,
}

/// The bots every test store has.
pub(crate) const BOTS: [&str; 2] = ["alpha", "beta"];

impl TestStore {
    /// Opens a fresh store with an account and the bots [`BOTS`].
    pub async fn open() -> Self {
        let dir = std::env::temp_dir().join(crate::domain::ids::new_id("botwire-store-test"));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let url = format!("sqlite://{}", dir.join("t.db").display());
        let store = Store::open(&url).await.expect("open store");
        let (account, _key) = store
            .create_account("test", &crate::auth::Pepper::new(b"pepper".to_vec()))
            .await
            .expect("account");
        for bot in BOTS {
            store
                .create_bot(
                    &account.id,
                    BotId::parse(bot).expect("bot id"),
                    bot,
                    BotType::Support,
                )
                .await
                .expect("bot");
        }
        Self {
            store,
            account: account.id,
            dir,
        }
    }

    /// Adds an endpoint of `bot` taking `types` (`None`: every type).
    pub async fn endpoint(&self, bot: &str, types: Option<&[&str]>) -> EndpointRow {
        self.endpoint_of_kind(bot, types, kind::ENDPOINT).await
    }

    /// Adds an endpoint of `kind`.
    pub async fn endpoint_of_kind(
        &self,
        bot: &str,
        types: Option<&[&str]>,
        kind: &'static str,
    ) -> EndpointRow {
        let mut new = NewEndpoint::new(bot, "http://127.0.0.1:9/hook", kind);
        new.event_types = types.map(|t| t.iter().map(|s| s.to_string()).collect());
        self.store
            .create_endpoint(&self.account, new, 100)
            .await
            .expect("endpoint")
    }

    /// Publishes an event of `event_type` about `bot`.
    pub async fn publish(&self, bot: &str, event_type: &str) -> EventRow {
        let event = EventRow::new(&self.account, bot, event_type, None, "{}".into());
        match self
            .store
            .publish_event(event, None)
            .await
            .expect("publish")
        {
            Published::Created(e) => e,
            Published::Replayed(e) => panic!("replayed {}", e.id),
        }
    }
}

impl Drop for TestStore {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
