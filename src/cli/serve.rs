//! `botwire serve`: the HTTP API and the workers over one database.
//!
//! The workers are the delivery engine (dispatcher, recorder and claim
//! loop), the channel outbox sender, the channel inbound processor and the
//! pruner (retention, every minute).
//! `--role all` (the default) runs the API and the workers; `--role api`
//! only serves the API (its deliveries, channel messages received and test
//! sends are written unleased, for workers to claim); `--role worker` only
//! runs the workers.
//!
//! On first start with an empty database it creates the first account and
//! prints its admin key once. Connections are served by [`api::server`]
//! (header deadline, connection bound) from the first moment: while the
//! store opens, a front door answers `/healthz` and `/readyz` (503,
//! migrating) and holds other requests for the API. SIGINT/SIGTERM turn
//! `/readyz` to 503, wait `shutdown_delay`, stop accepting connections, let
//! in-flight requests finish, then close the store (committing any queued
//! writes) and exit.

use crate::api::health::{Phase, Readiness, ReadyStatus};
use crate::api::{self, AppState, RouterOptions, ServerOptions};
use crate::config::{Config, Overrides};
use anyhow::Context;
use axum::Router;
use axum::extract::Request;
use axum::response::{IntoResponse, Response};
use clap::Args;
use std::sync::Arc;
use std::time::Duration;
use tower::ServiceExt;

/// How long a request that arrives while the store opens waits for the API.
const STARTUP_WAIT: Duration = Duration::from_secs(30);

/// The router the listener serves: the API once it exists. Before that,
/// `/healthz` says the process is alive, `/readyz` says it is migrating,
/// and any other request waits for the API (up to [`STARTUP_WAIT`]).
fn front_door(
    readiness: Arc<Readiness>,
    api: tokio::sync::watch::Receiver<Option<Router>>,
) -> Router {
    Router::new().fallback(move |req: Request| {
        let mut api = api.clone();
        let readiness = readiness.clone();
        async move {
            let ready = api.borrow().clone();
            let app = match ready {
                Some(app) => app,
                None => match req.uri().path() {
                    "/healthz" => {
                        return axum::Json(serde_json::json!({
                            "status": "starting",
                            "version": env!("CARGO_PKG_VERSION"),
                        }))
                        .into_response();
                    }
                    "/readyz" if readiness.phase() == Phase::ShuttingDown => {
                        return ReadyStatus::not_ready(
                            "shutting_down",
                            "a shutdown signal arrived before the API started",
                        );
                    }
                    "/readyz" => {
                        return ReadyStatus::not_ready(
                            "migrating",
                            "the database is opening and migrations are running",
                        );
                    }
                    _ => match tokio::time::timeout(STARTUP_WAIT, api.wait_for(Option::is_some))
                        .await
                    {
                        Ok(Ok(app)) => app.clone().expect("waited for Some"),
                        _ => return starting(),
                    },
                },
            };
            match app.oneshot(req).await {
                Ok(response) => response,
                Err(never) => match never {},
            }
        }
    })
}

fn starting() -> Response {
    crate::api::error::ApiError::new(
        axum::http::StatusCode::SERVICE_UNAVAILABLE,
        "starting",
        "botwire is still starting (migrations are running); try again shortly",
    )
    .into_response()
}

/// Flags of `botwire serve`.
#[derive(Args, Debug)]
pub struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8080.
    #[arg(long)]
    listen: Option<String>,
    /// The address messaging platforms reach this server at, e.g.
    /// https://bots.example.com (default http://{listen}).
    #[arg(long)]
    public_url: Option<String>,
    /// A network outbound calls may reach despite the SSRF guard (CIDR;
    /// repeatable).
    #[arg(long = "allow-net", value_name = "CIDR")]
    allow_net: Vec<String>,
    /// Which work this process does: all, api or worker.
    #[arg(long)]
    role: Option<String>,
    /// Any configuration key, e.g. `--set delivery.timeout=30s` (repeatable;
    /// the keys are those `botwire config` prints, values as in the
    /// environment variables).
    #[arg(long = "set", value_name = "KEY=VALUE")]
    set: Vec<String>,
}

impl ServeArgs {
    /// The flags as configuration overrides.
    pub fn overrides(&self) -> Overrides {
        Overrides {
            listen: self.listen.clone(),
            public_url: self.public_url.clone(),
            allow_nets: self.allow_net.clone(),
            role: self.role.clone(),
            set: self.set.clone(),
            ..Default::default()
        }
    }
}

/// Runs the server until a shutdown signal.
pub async fn run(config: Config) -> anyhow::Result<()> {
    super::init_logging(&config);
    let shutdown_delay = config.shutdown_delay;
    let server_options = ServerOptions::from_config(&config);
    // The API and worker roles listen from the start, so `/healthz` and
    // `/readyz` answer while migrations run; other requests wait for the API.
    let readiness = Arc::new(Readiness::new(Phase::Migrating));
    let (api_tx, api_rx) = tokio::sync::watch::channel(None);
    let listener = if !config.role.serves_api() {
        None
    } else {
        let listener = tokio::net::TcpListener::bind(&config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let addr = listener.local_addr()?;
        let front = front_door(readiness.clone(), api_rx);
        let signal_readiness = readiness.clone();
        let shutdown = async move {
            shutdown_signal().await;
            signal_readiness.set(Phase::ShuttingDown);
            if !shutdown_delay.is_zero() {
                tracing::info!(
                    ?shutdown_delay,
                    "/readyz answers 503; closing after the delay"
                );
                tokio::time::sleep(shutdown_delay).await;
            }
        };
        let options = server_options.clone();
        Some((
            addr,
            tokio::spawn(async move { api::serve(listener, front, &options, shutdown).await }),
        ))
    };
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
    // Retention: nodes that run workers prune (several may; every batch is
    // idempotent).
    let pruner = config.role.runs_workers().then(|| {
        let pruner = crate::runtime::retention::Pruner::new(
            store.clone(),
            config.retention.policy(),
            Arc::new(crate::delivery::clock::SystemClock),
        );
        tokio::spawn(pruner.run(crate::runtime::retention::EVERY))
    });
    // Broadcasts go out from every node; the store hands each recipient to
    // one of them, once.
    let broadcast_rate = config.broadcasts.rate;
    let settings =
        crate::delivery::Settings::from_config(&config).map_err(|e| anyhow::anyhow!(e))?;
    let delivery = crate::delivery::Delivery::new(settings)
        .context("cannot build the outbound HTTP client")?;
    let engine = config
        .role
        .runs_workers()
        .then(|| crate::delivery::Engine::start(store.clone(), delivery.clone()));
    if let Some(engine) = &engine {
        tracing::info!(node = engine.node(), "delivery engine started");
    }
    let chat = crate::runtime::chat::Chat::default();
    // Campaign broadcasts' recipients are chat turns of this node's chat
    // runtime, under the same per-contact locks as its other turns.
    let broadcaster = tokio::spawn(
        crate::runtime::broadcasts::BroadcastWorker::with_chat(
            chat.clone(),
            delivery.client().clone(),
        )
        .run(store.clone(), Duration::from_millis(200)),
    );
    let channels = std::sync::Arc::new(crate::runtime::inbound::ChannelCache::default());
    let workers = config.role.runs_workers().then(|| {
        let sender = crate::delivery::outbox::Sender::start_throttled(
            store.clone(),
            delivery.clone(),
            &config.public_url(),
            config.channels.clone(),
        );
        let inbound = crate::runtime::inbound::Inbound::new(
            store.clone(),
            chat.clone(),
            delivery.client().clone(),
            channels.clone(),
        );
        let processor = crate::runtime::inbound::Processor::start(
            inbound,
            delivery.settings().lease,
            delivery.settings().poll,
        );
        (sender, processor)
    });
    if !config.role.serves_api() {
        eprintln!(
            "botwire {} delivering events (role worker)",
            env!("CARGO_PKG_VERSION")
        );
        shutdown_signal().await;
        if let Some(p) = &pruner {
            p.abort();
        }
        broadcaster.abort();
        stop(engine, workers, &store).await;
        eprintln!("botwire stopped cleanly");
        return Ok(());
    }
    let mut state =
        AppState::new(store.clone(), pepper, delivery).with_public_url(&config.public_url());
    let shared = state.edit();
    shared.chat = chat;
    shared.channels = channels;
    shared.readiness = readiness.clone();
    shared.limits = config.limits.clone();
    shared.broadcast_rate = broadcast_rate;
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
    let (addr, server) = listener.expect("api and all roles listen");
    if readiness.phase() == Phase::Migrating {
        readiness.set(Phase::Ready);
    }
    let _ = api_tx.send(Some(app));
    tracing::info!(
        %addr,
        database = %super::redact_url(&config.database),
        role = %config.role,
        allow_nets = ?config.allow_nets,
        max_connections = server_options.max_connections,
        header_read_timeout = ?server_options.header_read_timeout,
        system_dns = config.delivery.system_dns,
        "botwire is listening"
    );
    eprintln!(
        "botwire {} listening on http://{addr}",
        env!("CARGO_PKG_VERSION")
    );
    server.await.context("the HTTP server task failed")??;
    timers.abort();
    tracing::info!("stopped accepting connections; closing the store");
    if let Some(p) = &pruner {
        p.abort();
    }
    broadcaster.abort();
    stop(engine, workers, &store).await;
    eprintln!("botwire stopped cleanly");
    Ok(())
}

/// The channel workers of a process: the outbox sender and the inbound
/// processor.
type ChannelWorkers = (
    crate::delivery::outbox::Sender,
    crate::runtime::inbound::Processor,
);

/// Lets deliveries, channel messages and inbound messages in flight finish
/// (briefly), then closes the store.
async fn stop(
    engine: Option<crate::delivery::Engine>,
    workers: Option<ChannelWorkers>,
    store: &crate::store::Store,
) {
    if let Some((sender, mut processor)) = workers {
        processor.shutdown(Duration::from_secs(10)).await;
        sender.shutdown(Duration::from_secs(10)).await;
    }
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

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use axum::routing::get;

    fn request(path: &str) -> Request {
        Request::builder().uri(path).body(Body::empty()).unwrap()
    }

    async fn text(response: Response) -> (u16, String) {
        let status = response.status().as_u16();
        let bytes = axum::body::to_bytes(response.into_body(), 1 << 16)
            .await
            .unwrap();
        (status, String::from_utf8_lossy(&bytes).into_owned())
    }

    #[tokio::test]
    async fn the_front_door_answers_health_while_migrating_and_holds_the_rest() {
        let readiness = Arc::new(Readiness::new(Phase::Migrating));
        let (tx, rx) = tokio::sync::watch::channel(None);
        let front = front_door(readiness.clone(), rx);

        let (status, body) = text(front.clone().oneshot(request("/readyz")).await.unwrap()).await;
        assert_eq!(status, 503);
        assert!(body.contains("\"migrating\""), "{body}");
        let (status, body) = text(front.clone().oneshot(request("/healthz")).await.unwrap()).await;
        assert_eq!(status, 200);
        assert!(body.contains("starting"), "{body}");

        // An API request waits for the API instead of failing.
        let waiting = tokio::spawn(front.clone().oneshot(request("/v1/bots")));
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        let api = Router::new().route("/v1/bots", get(|| async { "the api" }));
        tx.send(Some(api)).unwrap();
        let (status, body) = text(waiting.await.unwrap().unwrap()).await;
        assert_eq!((status, body.as_str()), (200, "the api"));

        // Once the API exists, every path is its.
        let (status, _) = text(front.oneshot(request("/readyz")).await.unwrap()).await;
        assert_eq!(status, 404, "the stand-in API has no /readyz");
    }
}
