//! `botwire bench contacts`: how fast a filtered contacts list answers over
//! a large bot. It imports N contacts (through the same store path as the
//! CSV import, attribute index included) into a scratch SQLite database,
//! then times pages of `GET /v1/bots/{bot}/contacts` as the handler runs
//! them (`Store::filter_contacts`: the indexed SQL plus the CEL on each
//! candidate), first pages and pages reached by cursor, and a segment count.

use crate::domain::people::ContactFilter;
use crate::store::Store;
use crate::store::contacts::ImportRow;
use serde_json::{Map, json};
use std::time::Instant;

/// Options of `bench contacts`.
#[derive(clap::Args, Debug)]
pub struct ContactsBench {
    /// Contacts in the bot.
    #[arg(long, default_value_t = 1_000_000)]
    contacts: usize,
    /// Pages timed per filter.
    #[arg(long, default_value_t = 200)]
    pages: usize,
    /// Folder for the scratch database.
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

const CITIES: [&str; 20] = [
    "Madrid",
    "Lima",
    "Quito",
    "Bogota",
    "Santiago",
    "Caracas",
    "Panama",
    "Havana",
    "Asuncion",
    "Montevideo",
    "Cordoba",
    "Rosario",
    "Cusco",
    "Cali",
    "Medellin",
    "Valencia",
    "Sevilla",
    "Bilbao",
    "Malaga",
    "Murcia",
];

/// The filters timed: indexed equality, equality with a range, a channel
/// with a range, and an equality with an opt-out test.
const FILTERS: [&str; 4] = [
    r#"user.plan == "vip""#,
    r#"user.plan == "vip" && user.age >= 30"#,
    r#"contact.channel == "whatsapp" && user.age < 20"#,
    r#"user.city == "Lima" && !contact.opted_out"#,
];

fn row(i: usize) -> ImportRow {
    // Spread values with a multiplicative hash so neighbours differ.
    let h = i.wrapping_mul(2_654_435_761) % 1_000_003;
    let plan = match h % 100 {
        0..5 => "vip",
        5..20 => "gold",
        _ => "free",
    };
    let mut attributes = Map::new();
    attributes.insert("plan".into(), json!(plan));
    attributes.insert("age".into(), json!((h / 7) % 90 + 10));
    attributes.insert("city".into(), json!(CITIES[(h / 13) % CITIES.len()]));
    let (phone, external_id) = if h % 10 < 3 {
        (None, Some(format!("whatsapp:52{i:010}")))
    } else {
        (Some(format!("+5255{i:08}")), None)
    };
    ImportRow {
        line: i + 2,
        phone,
        external_id,
        attributes,
        opted_out: Some(h.is_multiple_of(33)),
    }
}

fn percentile_us(sorted: &[u128], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)] as f64 / 1000.0
}

/// Runs `bench contacts`.
pub async fn run(b: ContactsBench) -> anyhow::Result<()> {
    let path = b.dir.join(format!(
        "botwire-bench-contacts-{}.db",
        crate::domain::ids::new_id("b")
    ));
    let path = path.display().to_string();
    let store = Store::open(&format!("sqlite://{path}")).await?;
    let (_, account, _) = super::bench::fresh_account(&store).await?;
    eprintln!(
        "bench contacts: importing {} contacts into SQLite at {path}",
        b.contacts
    );
    let t = Instant::now();
    let mut pending = Vec::new();
    for start in (0..b.contacts).step_by(5_000) {
        let rows: Vec<_> = (start..(start + 5_000).min(b.contacts)).map(row).collect();
        pending.push(store.import_contacts(&account.id, "bench", rows));
        if pending.len() == 4 {
            for p in pending.drain(..) {
                p.await?;
            }
        }
    }
    for p in pending {
        p.await?;
    }
    eprintln!(
        "imported in {:.1} s ({:.0} contacts/s)",
        t.elapsed().as_secs_f64(),
        b.contacts as f64 / t.elapsed().as_secs_f64()
    );
    let mut all = Vec::new();
    for source in FILTERS {
        let filter = ContactFilter::compile(source).map_err(|e| anyhow::anyhow!("{e}"))?;
        let mut times = Vec::with_capacity(b.pages);
        let mut after = None;
        let mut matched = 0usize;
        for _ in 0..b.pages {
            let t = Instant::now();
            let page = store
                .filter_contacts(&account.id, "bench", Some(filter.clone()), None, after, 50)
                .await?;
            times.push(t.elapsed().as_nanos());
            matched += page.items.len();
            // Follow the cursor; start over at the end.
            after = page.next_after;
        }
        let t = Instant::now();
        let count = store
            .count_contacts(&account.id, "bench", filter.clone())
            .await?;
        let count_ms = t.elapsed().as_secs_f64() * 1000.0;
        all.extend_from_slice(&times);
        times.sort_unstable();
        println!(
            "{source}: pages of 50 p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms ({matched} contacts over {} pages); count {count} in {count_ms:.0} ms",
            percentile_us(&times, 0.5) / 1000.0,
            percentile_us(&times, 0.99) / 1000.0,
            percentile_us(&times, 1.0) / 1000.0,
            b.pages,
        );
    }
    all.sort_unstable();
    println!(
        "contacts list over {} contacts: p50 {:.2} ms, p99 {:.2} ms (target p99 <= 50 ms)",
        b.contacts,
        percentile_us(&all, 0.5) / 1000.0,
        percentile_us(&all, 0.99) / 1000.0
    );
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    Ok(())
}
