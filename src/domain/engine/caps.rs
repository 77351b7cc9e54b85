//! Output caps: a reply is at most [`MAX_REPLY_BYTES`], a turn's replies
//! at most [`MAX_TURN_BYTES`] (cut with [`CUT_MARKER`] or dropped, and
//! counted in [`ReplyCut`]); memory and contact attributes stay within
//! [`MAX_MEMORY_BYTES`] and [`MAX_ATTRIBUTES_BYTES`].

use super::*;

/// What the output caps did to a turn's replies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ReplyCut {
    /// Replies cut short (they end with [`CUT_MARKER`]).
    pub shortened: usize,
    /// Replies left out because the turn had said [`MAX_TURN_BYTES`] already.
    pub dropped: usize,
}

impl ReplyCut {
    /// Nothing was cut.
    pub fn is_empty(&self) -> bool {
        self.shortened == 0 && self.dropped == 0
    }

    /// Adds another count to this one.
    pub fn add(&mut self, other: ReplyCut) {
        self.shortened += other.shortened;
        self.dropped += other.dropped;
    }
}

/// Cuts `text` to at most `max` bytes on a char boundary, ending it with
/// [`CUT_MARKER`]; a text that fits is left alone. Returns whether it cut.
pub(super) fn shorten(text: &mut String, max: usize) -> bool {
    if text.len() <= max {
        return false;
    }
    mark_cut(text, max);
    true
}

/// Ends `text` with [`CUT_MARKER`] within `max` bytes (`max` at least the
/// marker's length), dropping a marker it had already.
pub(super) fn mark_cut(text: &mut String, max: usize) {
    if text.ends_with(CUT_MARKER) {
        text.truncate(text.len() - CUT_MARKER.len());
    }
    let keep = merge::prefix_within(text, max.saturating_sub(CUT_MARKER.len())).len();
    text.truncate(keep);
    text.push_str(CUT_MARKER);
}

/// The reply text a turn has said so far, against [`MAX_TURN_BYTES`].
#[derive(Debug, Default)]
pub(super) struct ReplyBudget {
    used: usize,
}

impl ReplyBudget {
    pub(super) fn exhausted(&self) -> bool {
        self.used >= MAX_TURN_BYTES
    }

    /// Adds a reply within the caps: blank text is skipped, a reply over
    /// [`MAX_REPLY_BYTES`] is cut, the reply that crosses [`MAX_TURN_BYTES`] is
    /// cut to what is left (or, with less than the marker left, dropped and
    /// the previous reply given the marker), and later ones are dropped.
    pub(super) fn admit(
        &mut self,
        replies: &mut Vec<String>,
        mut text: String,
        cut: &mut ReplyCut,
    ) {
        if text.trim().is_empty() {
            return;
        }
        if shorten(&mut text, MAX_REPLY_BYTES) {
            cut.shortened += 1;
        }
        let room = MAX_TURN_BYTES.saturating_sub(self.used);
        if text.len() <= room {
            self.used += text.len();
            replies.push(text);
            return;
        }
        if self.exhausted() {
            cut.dropped += 1;
            return;
        }
        self.used = MAX_TURN_BYTES;
        if room >= CUT_MARKER.len() {
            if !text.ends_with(CUT_MARKER) {
                cut.shortened += 1;
            }
            mark_cut(&mut text, room);
            replies.push(text);
            return;
        }
        cut.dropped += 1;
        if let Some(last) = replies.last_mut()
            && !last.ends_with(CUT_MARKER)
            && last.len() + room >= CUT_MARKER.len()
        {
            let max = last.len() + room;
            mark_cut(last, max);
            cut.shortened += 1;
        }
    }
}

/// Applies the output caps to a whole turn's replies, counting into `cut`.
/// The engine caps each call it answers; the caller joining the replies of a
/// turn and of the calls that resumed it after story webhooks applies this to
/// the joined list, so the whole turn stays within [`MAX_TURN_BYTES`].
pub fn cap_replies(replies: Vec<String>, cut: &mut ReplyCut) -> Vec<String> {
    let mut budget = ReplyBudget::default();
    let mut out = Vec::with_capacity(replies.len());
    for text in replies {
        budget.admit(&mut out, text, cut);
    }
    out
}

/// Why a change to memory or to the contact's attributes was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TooLarge {
    /// Memory would pass [`MAX_MEMORY_BYTES`].
    #[error(
        "the answer would grow the conversation's memory past {MAX_MEMORY_BYTES} bytes of JSON"
    )]
    Memory,
    /// The contact's attributes would pass [`MAX_ATTRIBUTES_BYTES`].
    #[error(
        "the answer would grow the contact's attributes past {MAX_ATTRIBUTES_BYTES} bytes of JSON"
    )]
    UserAttributes,
}

pub(super) fn json_len(map: &Map<String, Value>) -> usize {
    serde_json::to_string(map).map_or(usize::MAX, |s| s.len())
}

/// `base` with `changes` merged in (`null` deletes).
pub(super) fn merged(
    base: &Map<String, Value>,
    changes: &Map<String, Value>,
) -> Map<String, Value> {
    let mut out = base.clone();
    for (k, v) in changes {
        if v.is_null() {
            out.remove(k);
        } else {
            out.insert(k.clone(), v.clone());
        }
    }
    out
}

/// Whether going from `before` to `after` is refused: it ends over `max`
/// bytes and bigger than it was (so shrinking is always allowed).
pub(super) fn grows_past(
    before: &Map<String, Value>,
    after: &Map<String, Value>,
    max: usize,
) -> bool {
    let size = json_len(after);
    size > max && size > json_len(before)
}

/// Checks that a webhook reply keeps memory and the contact's attributes
/// within their bounds. `pending_user` holds attribute changes made earlier
/// in the same turn and not yet stored on `contact`.
pub fn check_reply_size(
    reply: &WebhookReply,
    state: &State,
    contact: &Contact,
    pending_user: &Map<String, Value>,
) -> Result<(), TooLarge> {
    if !reply.memory.is_empty()
        && grows_past(
            &state.memory,
            &merged(&state.memory, &reply.memory),
            MAX_MEMORY_BYTES,
        )
    {
        return Err(TooLarge::Memory);
    }
    if !reply.user_attributes.is_empty() {
        let now = merged(&contact.attributes, pending_user);
        if grows_past(
            &now,
            &merged(&now, &reply.user_attributes),
            MAX_ATTRIBUTES_BYTES,
        ) {
            return Err(TooLarge::UserAttributes);
        }
    }
    Ok(())
}
