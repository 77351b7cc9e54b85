//! Messages received on channels, turned into chat turns.
//!
//! The API stores a verified webhook's messages before it answers the
//! platform ([`Store::receive`]); this module processes them:
//!
//! * each becomes a turn of the channel's bot for the contact
//!   `{kind}:{platform user id}` (with the phone the platform gave), with
//!   the tapped option's id, the text, or the media as input;
//! * the turn commits the inbound row as `done`, the person's channel
//!   contact and the replies rendered for the platform (the outbox) in its
//!   own transaction, so a message is processed once: a second attempt (a
//!   restart, another node) finds the row done and commits nothing;
//! * a message that cannot become a turn (the bot has no flow, the channel
//!   was deleted) is marked `failed` with the reason; a store failure leaves
//!   it pending, for the claim path.
//!
//! [`Processor`] runs this in a worker: rows stored by this process are
//! handed over in memory once durable (leased to it); rows stored by an
//! API-only node, or left by a node that died (lease expired), are claimed
//! every `poll` interval, and at start.

use super::RuntimeError;
use super::chat::{Chat, ContactRef, Source};
use crate::channels::Reply;
use crate::delivery::http::OutboundClient;
use crate::domain::engine::Input;
use crate::domain::flow::Media;
use crate::domain::ids::new_id;
use crate::store::channels::{
    ALREADY_PROCESSED, ChannelRow, ChannelTurnWrite, InboundRow, InboundSink, OutboxWrite,
};
use crate::store::deliveries::Lease;
use crate::store::{Store, StoreError};
use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Notify;
use tokio::task::JoinHandle;

/// The message a turn answers and the channel it came through.
#[derive(Clone, Debug)]
pub struct ChannelSource {
    /// The channel.
    pub channel: Arc<ChannelRow>,
    /// The stored message.
    pub inbound: InboundRow,
}

/// The texts a messaging channel sends for a turn: each reply with the
/// media sent with it as a link on lines of their own (caption, then URL),
/// since no platform renderer sends media natively yet; an empty reply
/// that only carried media becomes just its links.
pub(super) fn texts_with_media(replies: &[String], media: &[(usize, Media)]) -> Vec<String> {
    let mut texts = replies.to_vec();
    for (index, m) in media {
        let link = match m.caption.as_deref().map(str::trim) {
            Some(c) if !c.is_empty() => format!("{c}\n{}", m.url),
            _ => m.url.clone(),
        };
        match texts.get_mut(*index) {
            Some(t) if t.trim().is_empty() => *t = link,
            Some(t) => {
                t.push('\n');
                t.push_str(&link);
            }
            None => texts.push(link),
        }
    }
    texts.retain(|t| !t.trim().is_empty());
    texts
}

impl ChannelSource {
    /// What answering the message writes with the turn: the row marked
    /// done, the channel contact, and the replies as the platform shows
    /// them (after the acknowledgement a tapped Telegram key needs).
    pub(super) fn turn_write(
        &self,
        conversation_id: &str,
        contact_id: &str,
        replies: &[String],
        options: &[String],
    ) -> ChannelTurnWrite {
        let config = &self.channel.config;
        let m = &self.inbound.message;
        let reply = Reply {
            texts: replies,
            options,
        };
        let outbox = config
            .acknowledge(m)
            .into_iter()
            .chain(config.render(&m.user, &reply))
            .map(|outgoing| OutboxWrite {
                id: new_id("out"),
                lane: conversation_id.to_owned(),
                conversation_id: Some(conversation_id.to_owned()),
                contact_id: Some(contact_id.to_owned()),
                recipient: m.user.clone(),
                outgoing,
            })
            .collect();
        ChannelTurnWrite {
            channel: self.channel.clone(),
            inbound_id: Some(self.inbound.id.clone()),
            user: m.user.clone(),
            phone: m.phone.clone(),
            name: m.name.clone(),
            received_at: self.inbound.received_at,
            outbox,
        }
    }
}

/// Channels by id, each entry trusted for a second; changes made through
/// the API forget their entry at once.
#[derive(Default)]
pub struct ChannelCache {
    entries: Mutex<HashMap<String, (Arc<ChannelRow>, Instant)>>,
    /// The last refused webhook request per channel (time, reason), kept
    /// in memory only: a refused request writes nothing to the store.
    refusals: Mutex<HashMap<String, (i64, String)>>,
}

/// How long a cached channel is used without looking again.
const CACHE_FOR: Duration = Duration::from_secs(1);

impl ChannelCache {
    /// The channel, from the cache or the store; `None` when there is none.
    pub async fn get(
        &self,
        store: &Store,
        id: &str,
    ) -> Result<Option<Arc<ChannelRow>>, StoreError> {
        if let Some((row, at)) = self.entries.lock().expect("cache lock").get(id)
            && at.elapsed() < CACHE_FOR
        {
            return Ok(Some(row.clone()));
        }
        let row = store.find_channel(id).await?.map(Arc::new);
        let mut entries = self.entries.lock().expect("cache lock");
        if entries.len() > 10_000 {
            entries.clear();
        }
        match &row {
            Some(r) => {
                entries.insert(id.to_owned(), (r.clone(), Instant::now()));
            }
            None => {
                entries.remove(id);
            }
        }
        Ok(row)
    }

    /// Forgets a channel after it changed or was deleted.
    pub fn forget(&self, id: &str) {
        self.entries.lock().expect("cache lock").remove(id);
    }

    /// Notes why a webhook request to a channel was refused.
    pub fn note_refusal(&self, id: &str, reason: String) {
        let mut r = self.refusals.lock().expect("cache lock");
        if r.len() > 10_000 {
            r.clear();
        }
        r.insert(id.to_owned(), (crate::store::now_ms(), reason));
    }

    /// The last refusal noted for a channel.
    pub fn refusal(&self, id: &str) -> Option<(i64, String)> {
        self.refusals.lock().expect("cache lock").get(id).cloned()
    }
}

/// Turns stored inbound messages into chat turns. Cheap to clone.
#[derive(Clone)]
pub struct Inbound {
    store: Store,
    chat: Chat,
    client: OutboundClient,
    channels: Arc<ChannelCache>,
}

impl Inbound {
    /// Processes with `chat` (sharing its caches with the API) and calls
    /// story webhooks with `client`.
    pub fn new(
        store: Store,
        chat: Chat,
        client: OutboundClient,
        channels: Arc<ChannelCache>,
    ) -> Self {
        Self {
            store,
            chat,
            client,
            channels,
        }
    }

    /// Runs one stored message as a turn of its channel's bot.
    pub async fn process(&self, row: InboundRow) -> Result<(), RuntimeError> {
        let Some(channel) = self.channels.get(&self.store, &row.channel_id).await? else {
            self.store
                .fail_inbound(&row.id, "the channel was deleted".into())
                .await?;
            return Ok(());
        };
        let kind = channel.kind();
        let m = row.message.clone();
        let contact = ContactRef::Channel {
            id: format!("{kind}:{}", m.user),
            phone: m.phone.clone(),
        };
        let input = match (&m.media, m.input_text()) {
            (Some(media), caption) if m.choice_id.is_none() => Input::Media {
                kind: &media.kind,
                id: media.id.as_deref(),
                caption,
            },
            (_, Some(text)) => Input::Text(text),
            (_, None) => Input::Text(""),
        };
        let source = Source::Channel(Box::new(ChannelSource {
            channel: channel.clone(),
            inbound: row.clone(),
        }));
        // The turn (its events, its replies' sends) continues the trace of
        // the request that brought the message.
        let trace = row
            .trace_id
            .as_deref()
            .and_then(crate::trace::TraceId::parse)
            .unwrap_or_default();
        let outcome = crate::trace::scope(
            trace,
            self.chat.handle(
                &self.store,
                &self.client,
                &row.account_id,
                &row.bot_id,
                &contact,
                input,
                &source,
            ),
        )
        .await;
        match outcome {
            Ok(_) => Ok(()),
            Err(RuntimeError::Store(StoreError::Conflict(m))) if m == ALREADY_PROCESSED => Ok(()),
            Err(RuntimeError::Store(
                e @ (StoreError::Unavailable(_) | StoreError::Database(_)),
            )) => Err(e.into()),
            Err(e) => {
                let reason = match &e {
                    RuntimeError::Store(StoreError::NotFound) => "the bot no longer exists".into(),
                    other => other.to_string(),
                };
                tracing::warn!(inbound = %row.id, channel = %row.channel_id, error = %reason, "inbound message not processed");
                self.store.fail_inbound(&row.id, reason).await?;
                Ok(())
            }
        }
    }

    /// Processes rows in order, logging failures (they stay pending).
    async fn process_all(&self, rows: Vec<InboundRow>) {
        for row in rows {
            let id = row.id.clone();
            if let Err(e) = self.process(row).await {
                tracing::error!(inbound = %id, error = %e, "could not process an inbound message; it stays pending");
            }
        }
    }
}

struct Shared {
    inbound: Inbound,
    lease: Lease,
    pending: AtomicUsize,
    settled: Notify,
}

impl Shared {
    fn spawn(self: &Arc<Self>, rows: Vec<InboundRow>) {
        if rows.is_empty() {
            return;
        }
        let n = rows.len();
        self.pending.fetch_add(n, Ordering::SeqCst);
        let me = self.clone();
        tokio::spawn(async move {
            me.inbound.process_all(rows).await;
            me.pending.fetch_sub(n, Ordering::SeqCst);
            me.settled.notify_waiters();
        });
    }
}

struct Sink(Arc<Shared>);

impl InboundSink for Sink {
    fn lease(&self) -> Option<Lease> {
        Some(self.0.lease.clone())
    }
    fn hand_over(&self, rows: Vec<InboundRow>) {
        self.0.spawn(rows);
    }
}

/// A worker's inbound processor: the hot path and the claim loop.
pub struct Processor {
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
}

/// Most rows one claim takes.
const CLAIM_BATCH: usize = 64;

impl Processor {
    /// Starts processing and connects to the store as its inbound sink.
    /// With `poll: None` there is no claim loop (tests call
    /// [`Processor::run_pending_once`]). Must run inside a Tokio runtime.
    pub fn start(inbound: Inbound, lease: Duration, poll: Option<Duration>) -> Self {
        let lease = Lease {
            node: Arc::from(new_id("node")),
            ms: i64::try_from(lease.as_millis()).unwrap_or(i64::MAX / 4),
        };
        let store = inbound.store.clone();
        let shared = Arc::new(Shared {
            inbound,
            lease,
            pending: AtomicUsize::new(0),
            settled: Notify::new(),
        });
        let task = poll.map(|every| {
            let shared = shared.clone();
            tokio::spawn(async move {
                loop {
                    shared.claim_and_process().await;
                    tokio::time::sleep(every).await;
                }
            })
        });
        let sink: Arc<dyn InboundSink> = Arc::new(Sink(shared.clone()));
        store.set_inbound_sink(Some(sink));
        Self { shared, task }
    }

    /// Claims what is pending and unheld now, processes it, and waits for
    /// everything in hand; answers how many rows were claimed.
    pub async fn run_pending_once(&self) -> usize {
        let n = self.shared.claim_and_process().await;
        self.idle().await;
        n
    }

    /// Waits until every row handed over has been processed.
    pub async fn idle(&self) {
        loop {
            let settled = self.shared.settled.notified();
            if self.shared.pending.load(Ordering::SeqCst) == 0 {
                return;
            }
            let _ = tokio::time::timeout(Duration::from_millis(50), settled).await;
        }
    }

    /// Disconnects from the store and stops claiming; rows in hand finish
    /// (up to `grace`).
    pub async fn shutdown(&mut self, grace: Duration) {
        let store = self.shared.inbound.store.clone();
        store.set_inbound_sink(None);
        if let Some(t) = self.task.take() {
            t.abort();
        }
        let _ = tokio::time::timeout(grace, self.idle()).await;
    }
}

impl Drop for Processor {
    fn drop(&mut self) {
        if let Some(t) = self.task.take() {
            t.abort();
        }
    }
}

impl Shared {
    async fn claim_and_process(self: &Arc<Self>) -> usize {
        let store = &self.inbound.store;
        match store
            .claim_inbound(crate::store::now_ms(), self.lease.clone(), CLAIM_BATCH)
            .await
        {
            Ok(rows) => {
                let n = rows.len();
                self.spawn(rows);
                n
            }
            Err(e) => {
                tracing::error!(error = %e, "could not claim inbound messages");
                0
            }
        }
    }
}

#[cfg(test)]
mod media_tests {
    use super::texts_with_media;
    use crate::domain::flow::{Media, MediaKind};

    fn media(url: &str, caption: Option<&str>) -> Media {
        Media {
            kind: MediaKind::Image,
            url: url.into(),
            caption: caption.map(str::to_owned),
        }
    }

    #[test]
    fn media_goes_to_channels_as_links_beside_its_reply() {
        let replies = vec![
            "Our boxes:".to_owned(),
            String::new(),
            "Which one?".to_owned(),
        ];
        let sent = texts_with_media(
            &replies,
            &[
                (0, media("https://cdn.example/boxes.png", Some("Sizes"))),
                (1, media("https://cdn.example/price.pdf", None)),
            ],
        );
        assert_eq!(
            sent,
            [
                "Our boxes:\nSizes\nhttps://cdn.example/boxes.png",
                "https://cdn.example/price.pdf",
                "Which one?",
            ]
        );
        // Without media nothing changes, and empty texts are not sent.
        assert_eq!(
            texts_with_media(&replies, &[]),
            ["Our boxes:", "Which one?"]
        );
    }
}
