//! `botwire bench story`: what a story-webhook call adds to a chat turn.
//!
//! Two bots in one server process over a fresh SQLite database: one whose
//! menu answer leads to a plain message, one whose menu answer calls a
//! story webhook (signed, through the SSRF guard) on a receiver in the same
//! process that answers at once. The same client sends the same message to
//! each, one turn at a time, and the report compares the latencies.

use crate::delivery::ssrf::AllowList;
use crate::delivery::{Delivery, Settings};
use crate::store::Store;
use serde_json::json;
use std::time::{Duration, Instant};

/// Options of `bench story`.
#[derive(clap::Args, Debug)]
pub struct StoryBench {
    /// Turns measured per bot.
    #[arg(long, default_value_t = 3000)]
    turns: usize,
    /// Folder for the scratch database.
    #[arg(long, default_value = ".")]
    dir: std::path::PathBuf,
}

const PLAIN: &str = r#"
id: plain
name: Plain
type: support
flow:
  start: menu
  nodes:
    menu:
      menu: "Pick one"
      options: [ { keyword: 1, label: Go, next: said } ]
    said: { message: "Done", next: menu }
"#;

const STORY: &str = r#"
id: story
name: Story
type: support
webhooks:
  - name: ping
    method: POST
    url: "RECEIVER/ping"
    params: { who: "{{contact.id}}" }
flow:
  start: menu
  nodes:
    menu:
      menu: "Pick one"
      options: [ { keyword: 1, label: Go, next: call } ]
    call: { webhook: ping, next: menu }
"#;

fn percentile(sorted: &[u64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p) as usize).min(sorted.len().saturating_sub(1));
    sorted.get(i).copied().unwrap_or(0) as f64 / 1000.0
}

/// Runs the benchmark and prints its figures.
pub async fn run(b: StoryBench) -> anyhow::Result<()> {
    // The user's API: answers at once.
    let receiver = axum::Router::new().route(
        "/ping",
        axum::routing::post(|| async { axum::Json(json!({"responses": ["pong"]})) }),
    );
    let (raddr, _) = super::bench::spawn_local(receiver).await?;
    let receiver_base = format!("http://{raddr}");

    let path = b
        .dir
        .join(format!(
            "botwire-bench-story-{}.db",
            crate::domain::ids::new_id("b")
        ))
        .display()
        .to_string();
    let store = Store::open(&format!("sqlite://{path}")).await?;
    let (pepper, account, key) = super::bench::fresh_account(&store).await?;
    for text in [PLAIN.to_owned(), STORY.replace("RECEIVER", &receiver_base)] {
        let file = crate::runtime::bots::parse_bot_file(&text, true)?;
        crate::runtime::bots::import(&store, &account.id, &file).await?;
    }
    let delivery = Delivery::new(Settings {
        allow: AllowList::parse(["127.0.0.0/8"])?,
        ..Settings::default()
    })?;
    let (addr, _) = super::bench::serve_locally(&store, pepper, delivery).await?;
    let base = format!("http://{addr}");
    let client = reqwest::Client::new();
    let turn = |bot: &'static str, text: &'static str| {
        let req = client
            .post(format!("{base}/v1/bots/{bot}/chat"))
            .bearer_auth(&key)
            .json(&json!({"contact": {"id": "bench"}, "text": text}));
        async move {
            let t = Instant::now();
            let r = req.send().await?;
            anyhow::ensure!(r.status().is_success(), "chat answered {}", r.status());
            let body: serde_json::Value = r.json().await?;
            Ok::<_, anyhow::Error>((t.elapsed(), body))
        }
    };
    eprintln!(
        "bench story: {} turns per bot, one at a time, SQLite (synchronous=FULL), receiver in process",
        b.turns
    );
    let (_, first) = turn("story", "hi").await?;
    turn("plain", "hi").await?;
    let (_, check) = turn("story", "1").await?;
    anyhow::ensure!(
        check["replies"].to_string().contains("pong"),
        "the story webhook did not answer: {first} {check}"
    );
    let mut plain = Vec::with_capacity(b.turns);
    let mut story = Vec::with_capacity(b.turns);
    let mut warm = 200;
    for _ in 0..b.turns + 200 {
        let (p, _) = turn("plain", "1").await?;
        let (s, _) = turn("story", "1").await?;
        if warm > 0 {
            warm -= 1;
            continue;
        }
        plain.push(p.as_micros() as u64);
        story.push(s.as_micros() as u64);
    }
    plain.sort_unstable();
    story.sort_unstable();
    let (p50p, p50s) = (percentile(&plain, 0.5), percentile(&story, 0.5));
    println!(
        "plain turn: p50 {p50p:.3} ms, p99 {:.3} ms; turn with a story webhook: p50 {p50s:.3} ms, p99 {:.3} ms; added p50 {:.3} ms",
        percentile(&plain, 0.99),
        percentile(&story, 0.99),
        p50s - p50p
    );
    store.close().await;
    tokio::time::sleep(Duration::from_millis(10)).await;
    for suffix in ["", "-wal", "-shm"] {
        let _ = std::fs::remove_file(format!("{path}{suffix}"));
    }
    Ok(())
}
