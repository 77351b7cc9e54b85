//! Story webhooks in a turn: the answer's shape ([`WebhookReply`]) and how
//! the conversation continues once the call is made
//! ([`resume_after_webhook`]).

use super::*;

/// A story webhook's answer (seed 002).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct WebhookReply {
    /// Texts added to the bot's reply, shown as written (never rendered as
    /// merge tags).
    #[serde(default)]
    pub responses: Vec<String>,
    /// Memory changes; `null` deletes a key.
    #[serde(default)]
    pub memory: Map<String, Value>,
    /// Contact attribute changes; `null` deletes.
    #[serde(default)]
    pub user_attributes: Map<String, Value>,
    /// Quick replies to offer.
    #[serde(default)]
    pub quickreplies: Vec<String>,
}

impl WebhookReply {
    /// Reads a webhook's JSON answer: unknown keys are ignored, a wrong type is
    /// an error naming the key (the caller logs it and takes the failure path).
    pub fn from_json(v: &Value) -> Result<WebhookReply, String> {
        let obj = v.as_object().ok_or("the answer is not a JSON object")?;
        let strings = |key: &str| -> Result<Vec<String>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Vec::new()),
                Some(Value::Array(items)) => {
                    if items.len() > MAX_WEBHOOK_ITEMS {
                        return Err(format!("\"{key}\" has more than {MAX_WEBHOOK_ITEMS} items"));
                    }
                    items
                        .iter()
                        .map(|i| {
                            i.as_str()
                                .filter(|s| s.chars().count() <= MAX_TEXT)
                                .map(str::to_string)
                                .ok_or_else(|| format!("\"{key}\" must be an array of strings of at most {MAX_TEXT} characters"))
                        })
                        .collect()
                }
                Some(_) => Err(format!("\"{key}\" must be an array of strings")),
            }
        };
        let object = |key: &str| -> Result<Map<String, Value>, String> {
            match obj.get(key) {
                None | Some(Value::Null) => Ok(Map::new()),
                Some(Value::Object(m)) => Ok(m.clone()),
                Some(_) => Err(format!("\"{key}\" must be an object")),
            }
        };
        Ok(WebhookReply {
            responses: strings("responses")?,
            memory: object("memory")?,
            user_attributes: object("user_attributes")?,
            quickreplies: strings("quickreplies")?,
        })
    }
}

/// Continues a conversation after the story webhook asked for by the previous
/// turn was called; `state` is the state that turn returned.
pub fn resume_after_webhook(
    flow: &Flow,
    state: &State,
    ctx: &Context,
    result: Result<WebhookReply, String>,
) -> Turn {
    let mut r = Runner::new(flow, ctx, state.clone());
    let Some(pending) = r.turn.state.pending_webhook.take() else {
        return r.turn;
    };
    let result = result.and_then(|reply| {
        check_reply_size(&reply, &r.turn.state, ctx.contact, &Map::new())
            .map(|()| reply)
            .map_err(|e| e.to_string())
    });
    match result {
        Ok(reply) => {
            r.turn.state.memory = merged(&r.turn.state.memory, &reply.memory);
            r.turn.user_attributes = reply.user_attributes;
            // Returned text is text: an API may echo what the user typed.
            for text in reply.responses {
                r.say_plain(text);
            }
            r.turn.state.quick_replies = reply.quickreplies.clone();
            r.turn.quick_replies.extend(reply.quickreplies);
            r.run(pending.on_success);
        }
        Err(_) => match pending.on_error {
            Some(j) => r.run(j),
            None => {
                r.say_plain(SORRY_WEBHOOK.into());
                r.run(pending.on_success);
            }
        },
    }
    plan_timers(flow, &mut r.turn, ctx.now);
    r.turn
}
