//! A person in the conversation: answering one in handoff
//! ([`Chat::agent_message`]) and giving it back to the bot
//! ([`Chat::release`]).
//!
//! Each is a turn of its own, run like a chat turn: under the contact's
//! lock, on the state read from the database, committed only if the
//! conversation is still at the revision it was read at (else read again
//! and retried), so it holds across API nodes. What the person writes is
//! an `agent` line of the transcript; the release's replies are an `out`
//! line marked `unprompted`. On a messaging channel both also go to the
//! channel's outbox in the same transaction, addressed to where the contact
//! last wrote from; on the chat API and the widget they wait in the
//! transcript for the next poll (`GET /v1/bots/{bot}/chat/messages`).

use super::RuntimeError;
use super::chat::{Chat, ContactRef, build_write, contact_of, merge_turns};
use crate::channels::Reply;
use crate::delivery::http::OutboundClient;
use crate::domain::engine::{self, Context, State, Turn};
use crate::domain::ids::new_id;
use crate::store::channels::{ChannelTurnWrite, OutboxWrite};
use crate::store::conversations::{ContactRow, ConversationRow, STALE};
use crate::store::{Store, StoreError};
use chrono::Utc;
use serde_json::json;
use std::sync::Arc;

/// How many times a person's action is retried when the conversation moved on.
const RETRIES: usize = 8;
/// Most story-webhook calls a release may cause.
const MAX_CALLS: usize = 5;

/// What a person did.
#[derive(Clone, Copy, Debug)]
enum Act<'a> {
    Say(&'a str),
    Release(Option<&'a str>),
}

/// What a person's action wrote.
#[derive(Clone, Debug, PartialEq)]
pub struct HandoffOutcome {
    /// The conversation's status after it: `handoff`, `active` or `completed`.
    pub status: String,
    /// What the bot said on release (nothing for a person's answer).
    pub replies: Vec<String>,
    /// Ids of the events written.
    pub event_ids: Vec<String>,
}

impl Chat {
    /// Stores and sends a person's answer to conversation `id` of `bot`,
    /// which must be in handoff; emits `agent.message`.
    pub async fn agent_message(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        id: &str,
        text: &str,
    ) -> Result<HandoffOutcome, RuntimeError> {
        self.act(store, client, account, id, Act::Say(text)).await
    }

    /// Gives conversation `id`, in handoff, back to the bot at `node` of
    /// the main flow (its start when `None`); emits `conversation.released`
    /// and sends what the bot says from there.
    pub async fn release(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        id: &str,
        node: Option<&str>,
    ) -> Result<HandoffOutcome, RuntimeError> {
        self.act(store, client, account, id, Act::Release(node))
            .await
    }

    async fn act(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        id: &str,
        act: Act<'_>,
    ) -> Result<HandoffOutcome, RuntimeError> {
        let conv = store
            .find_conversation(account, id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let (_, contact_row) = store
            .conversation_with_contact(&conv.id)
            .await?
            .ok_or(StoreError::NotFound)?;
        let contact_ref = ContactRef::of_row(&contact_row).ok_or(StoreError::NotFound)?;
        let key = format!("{account}/{}/{}", conv.bot_id, contact_ref.key());
        let lock = {
            let mut locks = self.locks.lock().expect("locks");
            locks.entry(key.clone()).or_default().clone()
        };
        let _guard = lock.lock().await;
        // This process's cached session would be one revision behind.
        self.sessions.lock().expect("sessions").remove(&key);
        for _ in 0..RETRIES {
            let (conv, contact_row) = store
                .conversation_with_contact(&conv.id)
                .await?
                .ok_or(StoreError::NotFound)?;
            match self
                .try_act(store, client, account, &conv, &contact_row, act)
                .await
            {
                Err(RuntimeError::Store(StoreError::Conflict(m))) if m == STALE => continue,
                other => return other,
            }
        }
        Err(RuntimeError::Store(StoreError::Unavailable(
            "the conversation kept changing; try again".into(),
        )))
    }

    async fn try_act(
        &self,
        store: &Store,
        client: &OutboundClient,
        account: &str,
        conv: &ConversationRow,
        contact_row: &ContactRow,
        act: Act<'_>,
    ) -> Result<HandoffOutcome, RuntimeError> {
        let bot = conv.bot_id.as_str();
        let def = self.definitions.load(store, account, bot).await?;
        let state = serde_json::from_str::<State>(&conv.state).unwrap_or_default();
        let contact = contact_of(contact_row);
        let ctx = Context {
            conversation_id: &conv.id,
            contact: &contact,
            now: Utc::now(),
            price_table: def.settings.price_table.as_ref(),
            calendar: def.settings.calendar.as_ref(),
            free_slots: &[],
            taken_slot: None,
            channel: &conv.channel,
        };
        let (turn, calls) = match act {
            Act::Say(text) => (
                engine::agent_message(&def.flow, &state, &ctx, text)?,
                Vec::new(),
            ),
            Act::Release(node) => {
                let mut turn = engine::release(&def.flow, &state, &ctx, node)?;
                let mut calls = Vec::new();
                let mut made = 0;
                while let Some(name) = turn.call_webhook.clone() {
                    let outcome = if made >= MAX_CALLS {
                        Err(format!(
                            "more than {MAX_CALLS} story webhook calls in one release"
                        ))
                    } else {
                        made += 1;
                        self.call_story(client, &def, &name, &turn, &contact, &conv.id, &mut calls)
                            .await
                    };
                    let resumed =
                        engine::resume_after_webhook(&def.flow, &turn.state, &ctx, outcome);
                    turn = merge_turns(turn, resumed);
                }
                turn.replies =
                    engine::cap_replies(std::mem::take(&mut turn.replies), &mut turn.cut);
                (turn, calls)
            }
        };
        let mut write = build_write(
            account,
            bot,
            &def,
            contact_row,
            false,
            &contact,
            &conv.id,
            conv.created_at,
            Some(conv.revision),
            None,
            &turn,
            calls,
            &conv.channel,
        );
        let texts = match act {
            Act::Say(text) => {
                write
                    .messages
                    .insert(0, ("agent".into(), json!({ "text": text }).to_string()));
                vec![text.to_owned()]
            }
            Act::Release(_) => super::inbound::texts_with_media(&turn.replies, &turn.media),
        };
        write.channel = self
            .channel_send(store, conv, contact_row, &texts, &turn)
            .await?;
        let event_ids = write.events.iter().map(|e| e.id.clone()).collect();
        let status = write.conversation.status.clone();
        store.commit_turn(write).await?;
        Ok(HandoffOutcome {
            status,
            replies: match act {
                Act::Say(_) => Vec::new(),
                Act::Release(_) => turn.replies,
            },
            event_ids,
        })
    }

    /// The outbox rows that carry `texts` to the contact of a conversation
    /// on a messaging channel; `None` for the chat API and the widget, or
    /// when the contact never wrote through a channel that still exists.
    /// Agents' answers, releases and timers send through it.
    pub(super) async fn channel_send(
        &self,
        store: &Store,
        conv: &ConversationRow,
        contact_row: &ContactRow,
        texts: &[String],
        turn: &Turn,
    ) -> Result<Option<ChannelTurnWrite>, RuntimeError> {
        if matches!(conv.channel.as_str(), "api" | "web") || texts.is_empty() {
            return Ok(None);
        }
        let Some(address) = store.channel_address(&contact_row.id).await? else {
            return Ok(None);
        };
        let Some(channel) = store.find_channel(&address.channel_id).await? else {
            return Ok(None);
        };
        let reply = Reply {
            texts,
            options: &turn.quick_replies,
        };
        let outbox = channel
            .config
            .render(&address.user, &reply)
            .into_iter()
            .map(|outgoing| OutboxWrite {
                id: new_id("out"),
                lane: conv.id.clone(),
                conversation_id: Some(conv.id.clone()),
                contact_id: Some(contact_row.id.clone()),
                recipient: address.user.clone(),
                outgoing,
            })
            .collect();
        Ok(Some(ChannelTurnWrite {
            channel: Arc::new(channel),
            inbound_id: None,
            user: address.user,
            phone: contact_row.phone.clone(),
            name: None,
            received_at: address.last_inbound_at,
            outbox,
        }))
    }
}
