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

/// Characters of an id's body that encode its time (48 bits of
/// milliseconds, the top two bits of the first character always zero).
pub const TIME_CHARS: usize = 10;

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
    render(prefix, value)
}

/// An id with `prefix` made at `unix_ms` (clamped to what 48 bits hold),
/// for records whose time is given rather than now: imports, and tests
/// that need rows of the past.
pub fn new_id_at(prefix: &str, unix_ms: i64) -> String {
    let ms = unix_ms.clamp(0, MAX_MS) as u128;
    let random: u128 = rand::random::<u128>() & ((1u128 << 80) - 1);
    render(prefix, (ms << 80) | random)
}

/// The largest time an id holds: 48 bits of milliseconds.
const MAX_MS: i64 = (1 << 48) - 1;

/// The smallest string every id with `prefix` made at or after `unix_ms`
/// sorts at or after (byte order), and every one made before it sorts
/// before: `prefix_` and the time part. So the ids of `[t0, t1)` are
/// exactly those in `[id_floor(p, t0), id_floor(p, t1))`. Times are clamped
/// to what ids hold.
pub fn id_floor(prefix: &str, unix_ms: i64) -> String {
    let mut value = unix_ms.clamp(0, MAX_MS) as u64;
    let mut out = [0u8; TIME_CHARS];
    for slot in out.iter_mut().rev() {
        *slot = ALPHABET[(value & 31) as usize];
        value >>= 5;
    }
    let mut id = String::with_capacity(prefix.len() + 1 + TIME_CHARS);
    id.push_str(prefix);
    id.push('_');
    id.extend(out.iter().map(|b| char::from(*b)));
    id
}

/// The time (Unix ms) an id or id floor with `prefix` encodes; `None` for
/// strings of another shape.
pub fn id_time(prefix: &str, s: &str) -> Option<i64> {
    let body = s.strip_prefix(prefix)?.strip_prefix('_')?;
    let time = body.as_bytes().get(..TIME_CHARS)?;
    let mut ms: i64 = 0;
    for b in time {
        let digit = ALPHABET.iter().position(|a| a == b)?;
        ms = (ms << 5) | digit as i64;
    }
    (ms <= MAX_MS).then_some(ms)
}

fn render(prefix: &str, mut value: u128) -> String {
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

    #[test]
    fn an_id_made_at_t_sorts_between_the_floors_of_t_and_t_plus_one() {
        for t in [
            0,
            1,
            31,
            32,
            1_765_000_000_000,
            1_765_000_000_999,
            MAX_MS - 1,
        ] {
            let floor = id_floor("evt", t);
            let next = id_floor("evt", t + 1);
            assert!(floor < next, "{floor} < {next}");
            for _ in 0..50 {
                let id = new_id_at("evt", t);
                assert!(is_id("evt", &id), "{id}");
                assert!(floor.as_str() <= id.as_str(), "{floor} <= {id}");
                assert!(id < next, "{id} < {next}");
                assert_eq!(id_time("evt", &id), Some(t));
            }
        }
    }

    #[test]
    fn floors_sort_like_their_times_and_decode_back() {
        let times = [
            0,
            5,
            1_000,
            86_400_000,
            1_765_065_600_000,
            1_765_152_000_000,
        ];
        for w in times.windows(2) {
            assert!(id_floor("dlv", w[0]) < id_floor("dlv", w[1]));
        }
        for t in times {
            assert_eq!(id_time("dlv", &id_floor("dlv", t)), Some(t));
        }
        let now = new_id("att");
        let t = id_time("att", &now).unwrap();
        assert!(id_floor("att", t).as_str() <= now.as_str());
        assert!(now < id_floor("att", t + 1));
        assert_eq!(id_floor("evt", -5), id_floor("evt", 0));
        assert_eq!(id_time("evt", "evt_old"), None);
        assert_eq!(id_time("evt", "dlv_0000000000"), None);
        assert_eq!(id_time("evt", "evt_000000000i"), None);
    }
}
