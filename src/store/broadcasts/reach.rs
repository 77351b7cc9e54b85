//! Where a broadcast recipient is reached: the channel it last wrote on,
//! else (with a phone) the bot's WhatsApp channel, with when it last wrote
//! there (the messaging window).

use crate::channels::ChannelKind;
use crate::store::channels::ChannelRow;
use crate::store::{Conn, Result};
use std::collections::HashMap;
use std::sync::Arc;

/// A channel, the recipient on it, and when they last wrote there.
pub type Reach = (Arc<ChannelRow>, String, Option<i64>);

/// Where a contact can be reached: the channel it last wrote on, else (with
/// a phone) the bot's WhatsApp channel. There, with `window_by_phone`, the
/// window is the number's own: when that number last wrote to the channel
/// (as another contact, the one its messages made), since WhatsApp keeps
/// the window per number.
pub(super) fn address_of(
    c: &mut dyn Conn,
    channels: &HashMap<String, Arc<ChannelRow>>,
    contact_id: &str,
    phone: Option<&str>,
    window_by_phone: bool,
) -> Result<Option<Reach>> {
    let rows = c.query(
        "SELECT channel_id, user_id, last_inbound_at FROM channel_contacts
         WHERE contact_id = $1 ORDER BY last_inbound_at DESC",
        &[contact_id.into()],
    )?;
    for r in rows {
        if let Some(ch) = channels.get(&r.text(0)?) {
            return Ok(Some((ch.clone(), r.text(1)?, Some(r.int(2)?))));
        }
    }
    let Some(phone) = phone else { return Ok(None) };
    let wa = channels
        .values()
        .filter(|ch| ch.kind() == ChannelKind::Whatsapp)
        .min_by(|a, b| a.id.cmp(&b.id));
    let Some(ch) = wa else { return Ok(None) };
    let user = phone.trim_start_matches('+').to_owned();
    let last = if window_by_phone {
        c.query_opt(
            "SELECT MAX(last_inbound_at) FROM channel_contacts WHERE channel_id = $1 AND user_id = $2",
            &[(&ch.id).into(), (&user).into()],
        )?
        .map(|r| r.opt_int(0))
        .transpose()?
        .flatten()
    } else {
        None
    };
    Ok(Some((ch.clone(), user, last)))
}
