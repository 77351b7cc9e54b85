//! `botwire serve`: the HTTP API (and, as they land, the console and the
//! delivery workers) over one database.
//!
//! On first start with an empty database it creates the first account and
//! prints its admin key once. SIGINT/SIGTERM stop accepting connections,
//! let in-flight requests finish, then close the store (committing any
//! queued writes) and exit.

use crate::api::{self, AppState, RouterOptions};
use crate::config::{Config, Overrides};
use anyhow::Context;
use clap::Args;
use std::time::Duration;

/// Flags of `botwire serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// A network outbound calls may reach despite the SSRF guard (CIDR;
    /// repeatable).
    #[arg(long = "allow-net", value_name = "CIDR")]
    allow_net: Vec<String>,
    /// Which work this process does: all, api or worker.
    #[arg(long)]
    role: Option<String>,
}

impl ServeArgs {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            allow_nets: self.allow_net.clone(),
            role: self.role.clone(),
            ..Default::default()
        }
    }
}

/// Runs the server until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    super::init_logging(&config);
    let store = super::open_store(&config).await?;
    let pepper = super::pepper(&config, &store).await?;
    if let Some((account, key)) = store.bootstrap(&pepper).await? {
        println!();
        println!(
            "Created the first account ({}). Its admin API key, shown only this once:",
            account.id
        );
        println!();
        println!("    {key}");
        println!();
        println!(
            "Use it as:  curl -H 'Authorization: Bearer {key}' http://{}/v1/bots",
            config.listen
        );
        println!();
    }
    let state = AppState::new(store.clone(), pepper);
    let app = api::router(
        state,
        &RouterOptions {
            body_limit: config.body_limit_bytes,
        },
    );
    let listener = tokio::net::TcpListener::bind(&config.listen)
        .await
        .with_context(|| format!("cannot listen on {}", config.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(
        %addr,
        database = %super::redact_url(&config.database),
        role = %config.role,
        allow_nets = ?config.allow_nets,
        "botwire is listening"
    );
    eprintln!(
        "botwire {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    api::serve(listener, app, shutdown_signal(), Duration::from_secs(30)).await?;
    tracing::info!("stopped accepting connections; closing the store");
    store.close().await;
    eprintln!("botwire stopped cleanly");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown signal received");
}
