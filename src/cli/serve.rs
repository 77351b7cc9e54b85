//! `botwire serve`: the HTTP API and the delivery engine over one database.
//!
//! `--role all` (the default) runs both; `--role api` only serves the API
//! (its deliveries are written due and unleased, for workers to claim);
//! `--role worker` only runs the delivery engine (dispatcher, recorder and
//! claim loop).
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
        // One write, and a closed stdout (a reader that took the key and
        // went) must not stop the server.
        let text = format!(
            "\nCreated the first account ({}). Its admin API key, shown only this once:\n\n    {key}\n\nUse it as:  curl -H 'Authorization: Bearer {key}' http://{}/v1/bots\n\n",
            account.id, config.listen
        );
        let mut out = std::io::stdout().lock();
        let _ = std::io::Write::write_all(&mut out, text.as_bytes());
        let _ = std::io::Write::flush(&mut out);
    }
    let settings =
        crate::delivery::Settings::from_config(&config).map_err(|e| anyhow::anyhow!(e))?;
    let delivery = crate::delivery::Delivery::new(settings)
        .context("cannot build the outbound HTTP client")?;
    let engine = (config.role != "api")
        .then(|| crate::delivery::Engine::start(store.clone(), delivery.clone()));
    if let Some(engine) = &engine {
        tracing::info!(node = engine.node(), "delivery engine started");
    }
    if config.role == "worker" {
        eprintln!(
            "botwire {} delivering events (role worker)",
            env!("CARGO_PKG_VERSION")
        );
        shutdown_signal().await;
        stop(engine, &store).await;
        eprintln!("botwire stopped cleanly");
        return Ok(());
    }
    let state = AppState::new(store.clone(), pepper, delivery);
    // Conversation timers (reminders, timeouts, expiries) fire on every API
    // node; the store's leases make each fire once.
    let timers = tokio::spawn(
        state
            .chat
            .clone()
            .run_timers(store.clone(), Duration::from_secs(1)),
    );
    let app = api::router(
        state,
        &RouterOptions {
            body_limit: config.body_limit_bytes,
            ..Default::default()
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
    timers.abort();
    tracing::info!("stopped accepting connections; closing the store");
    stop(engine, &store).await;
    eprintln!("botwire stopped cleanly");
    Ok(())
}

/// Lets deliveries in flight finish (briefly), then closes the store.
async fn stop(engine: Option<crate::delivery::Engine>, store: &crate::store::Store) {
    if let Some(engine) = engine {
        engine.shutdown(Duration::from_secs(10)).await;
    }
    store.close().await;
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
