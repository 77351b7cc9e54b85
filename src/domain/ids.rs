//! Identifiers generated in Rust, never by the database.
//!
//! An id is a short type prefix, an underscore and 26 Crockford base-32
//! characters: 48 bits of milliseconds since the Unix epoch followed by 80
//! random bits. Ids of one kind therefore sort by creation time, which is
//! what cursor pagination relies on ("newest first" is "largest id first").
//! Within one process ids are also strictly increasing: an id made in the
//! same millisecond as the previous one is the previous one plus one, so
//! events written by one turn keep their order.

use std::sync::Mutex;

static LAST: Mutex<u128> = Mutex::new(0);

const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// A new time-sortable id with the given prefix, e.g. `new_id("evt")`.
pub fn new_id(prefix: &str) -> String {
    let ms = chrono::Utc::now().timestamp_millis().max(0) as u128;
    let random: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
    let mut value = (ms << 80) | random;
    {
        let mut last = LAST.lock().unwrap_or_else(|e| e.into_inner());
        if value >> 80 <= *last >> 80 {
            value = *last + 1;
        }
        *last = value;
    }
    let mut out = [0u8; 26];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    let mut id = String::with_capacity(prefix.len() + 27);
    id.push_str(prefix);
    id.push('_');
    id.push_str(std::str::from_utf8(&out).expect("alphabet is ASCII"));
    id
}

/// True when `s` looks like an id this module made with `prefix`.
pub fn is_id(prefix: &str, s: &str) -> bool {
    s.strip_prefix(prefix)
        .and_then(|rest| rest.strip_prefix('_'))
        .is_some_and(|body| body.len() == 26 && body.bytes().all(|b| ALPHABET.contains(&b)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_made_in_one_millisecond_keep_their_order() {
        let ids: Vec<String> = (0..1000).map(|_| new_id("evt")).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted);
    }

    #[test]
    fn ids_have_the_prefix_and_sort_by_time() {
        let a = new_id("evt");
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = new_id("evt");
        assert!(is_id("evt", &a), "{a}");
        assert!(a < b, "{a} should sort before {b}");
        assert!(!is_id("bot", &a));
        assert!(!is_id("evt", "evt_short"));
    }
}
