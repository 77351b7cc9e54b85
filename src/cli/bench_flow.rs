//! `botwire bench cel` and `botwire bench timers`: what the flow language's
//! decisions and waits cost.
//!
//! `bench cel` evaluates the `leads` example's scoring branches the way a
//! chat turn does: the roots the branch list reads are converted once from
//! the conversation's JSON (memory, user …) into one scope, then each
//! condition runs against it. It reports the cost of one condition and of a
//! whole branch list (scope included), p50 and p99.
//!
//! `bench timers` stores `--conversations` idle conversations' timers (a
//! reminder, a timeout and an expiry each, none due) in a fresh SQLite
//! database, and reports how much this process's memory grew (they live in
//! the database, not in memory) and what the due-timer scan of every tick
//! costs with nothing due and with a batch due.

use crate::domain::flow::condition::{Scope, ScopeInput};
use crate::domain::flow::{BotFile, FlowNode, Next};
use crate::store::Store;
use serde_json::{Map, Value, json};
use std::collections::BTreeSet;
use std::time::Instant;

/// Options of `bench cel`.
#[derive(clap::Args, Debug)]
pub struct CelBench {
    /// Branch lists evaluated.
    #[arg(long, default_value_t = 200_000)]
    iterations: usize,
}

/// Options of `bench timers`.
#[derive(clap::Args, Debug)]
pub struct TimersBench {
    /// Idle conversations (three timers each).
    #[arg(long, default_value_t = 1_000_000)]
    conversations: usize,
    /// Folder for the scratch database.
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

fn percentile_ns(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// Runs `bench cel`.
pub fn run_cel(b: CelBench) -> anyhow::Result<()> {
    let file = BotFile::from_yaml(include_str!("../../examples/leads.yaml"))
        .map_err(|e| anyhow::anyhow!(crate::domain::flow::join_errors(&e)))?;
    let flow = file.flow;
    let Some(FlowNode::Set {
        next: Next::Branches(branches),
        ..
    }) = flow.node("main", "score").map(|n| &n.kind)
    else {
        anyhow::bail!("the leads example has no scoring branches");
    };
    let memory: Map<String, Value> = json!({
        "email": "ana@acme.com", "budget": 150, "size": "10-49", "score": 40,
        "summary": "ana@acme.com, 150 EUR, 10-49 people"
    })
    .as_object()
    .cloned()
    .unwrap_or_default();
    let user: Map<String, Value> = json!({"segment": "smb", "plan": "free"})
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut roots = BTreeSet::new();
    for br in branches {
        if let Some(e) = &br.when {
            roots.extend(e.roots().iter().copied());
        }
    }
    let input = ScopeInput {
        memory: &memory,
        user: &user,
        contact: json!({"id": "ct_1", "phone": null, "external_id": null}),
        channel: "api",
        now: chrono::Utc::now(),
        date_keys: &flow.date_keys,
    };
    let conditions: Vec<_> = branches.iter().filter_map(|b| b.when.as_ref()).collect();
    let n = b.iterations.max(1);
    let (mut per_condition, mut per_list) = (Vec::with_capacity(n), Vec::with_capacity(n));
    let mut taken = 0usize;
    for _ in 0..n {
        let list = Instant::now();
        let scope = Scope::new(&input, &roots);
        // First match wins: score 40 fails the first condition, takes the second.
        for (i, c) in conditions.iter().enumerate() {
            let t = Instant::now();
            let hit = c.eval_bool(&scope).unwrap_or(false);
            per_condition.push(t.elapsed().as_nanos() as u64);
            if hit {
                taken += i;
                break;
            }
        }
        per_list.push(list.elapsed().as_nanos() as u64);
    }
    per_condition.sort_unstable();
    per_list.sort_unstable();
    anyhow::ensure!(
        taken == n,
        "the scoring branches did not take the second branch"
    );
    println!(
        "one condition: p50 {:.2} µs, p99 {:.2} µs ({} evaluations); a branch list with its scope: p50 {:.2} µs, p99 {:.2} µs ({} lists)",
        percentile_ns(&per_condition, 0.5) as f64 / 1000.0,
        percentile_ns(&per_condition, 0.99) as f64 / 1000.0,
        per_condition.len(),
        percentile_ns(&per_list, 0.5) as f64 / 1000.0,
        percentile_ns(&per_list, 0.99) as f64 / 1000.0,
        per_list.len()
    );
    Ok(())
}

/// This process's resident memory, KiB (Linux).
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Stores three timers for each of `count` conversations, due from
/// `first_due` on, `rows` per statement.
async fn store_timers(store: &Store, count: usize, first_due: i64) -> anyhow::Result<()> {
    const ROWS: usize = 500;
    const PER_WRITE: usize = 20_000;
    let mut done = 0;
    while done < count {
        let n = PER_WRITE.min(count - done);
        let start = done;
        store
            .write(move |c| {
                let mut i = 0;
                while i < n {
                    let chunk = ROWS.min(n - i);
                    let mut sql = String::from(
                        "INSERT INTO timers (id, account_id, bot_id, conversation_id, kind, node, due_at) VALUES ",
                    );
                    let mut params: Vec<crate::store::Value> = Vec::with_capacity(chunk * 3 * 7);
                    for k in 0..chunk {
                        let conv = start + i + k;
                        for (j, (kind, after)) in
                            [("reminder", 600_000i64), ("timeout", 1_800_000), ("expiry", 86_400_000)]
                                .into_iter()
                                .enumerate()
                        {
                            let p = params.len();
                            if k > 0 || j > 0 {
                                sql.push(',');
                            }
                            sql.push_str(&format!(
                                "(${}, ${}, ${}, ${}, ${}, ${}, ${})",
                                p + 1,
                                p + 2,
                                p + 3,
                                p + 4,
                                p + 5,
                                p + 6,
                                p + 7
                            ));
                            params.push(format!("tmr_{conv}_{j}").into());
                            params.push("acc_bench".into());
                            params.push("leads".into());
                            params.push(format!("cnv_{conv}").into());
                            params.push(kind.into());
                            params.push("budget".into());
                            params.push((first_due + after + (conv % 1000) as i64).into());
                        }
                    }
                    c.execute(&sql, &params)?;
                    i += chunk;
                }
                Ok(())
            })
            .await?;
        done += n;
    }
    Ok(())
}

/// Runs `bench timers`.
pub async fn run_timers(b: TimersBench) -> anyhow::Result<()> {
    let path = b.dir.join(format!(
        "botwire-bench-timers-{}.db",
        crate::domain::ids::new_id("b")
    ));
    let path = path.display().to_string();
    let store = Store::open(&format!("sqlite://{path}")).await?;
    eprintln!(
        "bench timers: {} idle conversations (3 timers each) in SQLite at {path}",
        b.conversations
    );
    let now = crate::store::now_ms();
    let before = rss_kib();
    let t = Instant::now();
    store_timers(&store, b.conversations, now).await?;
    let stored = t.elapsed().as_secs_f64();
    // Let the writer and the read pool settle, then measure.
    let timers = store.count_timers().await?;
    let after = rss_kib();
    // The tick's scan with nothing due.
    let mut idle = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let got = store.claim_due_timers(now, 100, 60_000).await?;
        idle.push(t.elapsed().as_nanos() as u64);
        anyhow::ensure!(got.is_empty(), "nothing should be due");
    }
    idle.sort_unstable();
    // A batch due: the first 100 reminders' time.
    let due_at = now + 600_000 + 99;
    let t = Instant::now();
    let got = store.claim_due_timers(due_at, 100, 60_000).await?;
    let batch = t.elapsed();
    println!(
        "{timers} timers stored in {stored:.1} s; RSS {:.1} MiB before, {:.1} MiB after (+{:.1} MiB); \
         due scan with nothing due: p50 {:.3} ms, p99 {:.3} ms; claiming {} due: {:.3} ms",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / 1024.0,
        percentile_ns(&idle, 0.5) as f64 / 1e6,
        percentile_ns(&idle, 0.99) as f64 / 1e6,
        got.len(),
        batch.as_secs_f64() * 1000.0
    );
    store.close().await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    Ok(())
}
