//! The HTTP server under the API: accepting connections and serving each
//! with hyper's HTTP/1.
//!
//! `axum::serve` sets no deadline for a request's head and no bound on
//! connections, so clients that open a connection, send part of a request
//! line and then nothing can hold file descriptors until the process runs
//! out of them, and then `/healthz` stops answering too. This loop adds:
//!
//! * **a header deadline** (`http.header_read_timeout`, 10 s by default): a
//!   connection that has not delivered a complete request head this long
//!   after it opened — or, kept alive, after its previous answer — is closed
//!   without an answer;
//! * **a connection bound** (`http.max_connections`): at the bound, a new
//!   connection makes room by closing the oldest connection that has no
//!   request in progress (idle clients and half-sent requests), so a crowd
//!   of idle clients cannot lock `/healthz` out; only when every open
//!   connection has a request in progress is the new one refused. Either is
//!   logged at `warn`, at most once every 10 s, with how many connections
//!   were closed and refused since the previous line;
//! * **an open-file check** at start: when the soft `RLIMIT_NOFILE` (read
//!   from `/proc/self/limits`) cannot hold the bound plus
//!   [`RESERVED_FILES`], a warning says what to set, and the bound is
//!   lowered to what fits, so the bound is met before `accept` fails;
//! * **graceful shutdown**: stop accepting, close connections with no
//!   request in progress, let the others finish for up to `grace`.
//!
//! Invariant: a connection whose request head has arrived is never closed to
//! make room until its answer has been written (a request is "in progress"
//! from the call of the router until the last byte of its response body is
//! handed to the socket).

use crate::config::Config;
use axum::Router;
use axum::body::Body;
use axum::extract::ConnectInfo;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, watch};
use tower::ServiceExt;

/// Open files a botwire process needs besides its client connections: the
/// listener, database files or connections, outbound calls (up to
/// `delivery.max_in_flight` plus idle pooled ones), logs.
pub const RESERVED_FILES: u64 = 1024;

/// How often, at most, the "connection limit reached" warning is logged.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// How the server treats connections; see `[http]` in the configuration.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerOptions {
    /// Longest time a connection may take to deliver a complete request
    /// head (counted from its opening, or from its previous answer).
    pub header_read_timeout: Duration,
    /// Connections open at once at most.
    pub max_connections: usize,
    /// After a shutdown signal, how long requests in progress may take to
    /// finish before the server stops anyway.
    pub grace: Duration,
}

impl Default for ServerOptions {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            max_connections: 10_000,
            grace: Duration::from_secs(30),
        }
    }
}

impl ServerOptions {
    /// Options from the configuration's `[http]` section.
    pub fn from_config(config: &Config) -> Self {
        Self {
            header_read_timeout: config.http.header_read_timeout,
            max_connections: config.http.max_connections,
            ..Self::default()
        }
    }
}

/// The soft open-file limit (`ulimit -n`) of this process, from
/// `/proc/self/limits`; `None` where that file does not exist.
pub fn open_file_limit() -> Option<u64> {
    parse_open_file_limit(&std::fs::read_to_string("/proc/self/limits").ok()?)
}

/// Reads the soft "Max open files" limit out of `/proc/self/limits` text.
fn parse_open_file_limit(text: &str) -> Option<u64> {
    let rest = text
        .lines()
        .find_map(|l| l.strip_prefix("Max open files"))?;
    match rest.split_whitespace().next()? {
        "unlimited" => Some(u64::MAX),
        soft => soft.parse().ok(),
    }
}

/// The connection bound that fits in the open-file limit `limit`: `max`
/// itself when `max` + [`RESERVED_FILES`] fit, else what fits, with a
/// warning saying what to set.
pub fn connection_bound(max: usize, limit: Option<u64>) -> (usize, Option<String>) {
    let Some(limit) = limit else {
        return (max, None);
    };
    let needed = (max as u64).saturating_add(RESERVED_FILES);
    if limit >= needed {
        return (max, None);
    }
    let reserve = RESERVED_FILES.min(limit / 2);
    let fits = usize::try_from(limit - reserve)
        .unwrap_or(usize::MAX)
        .clamp(1, max);
    let warning = format!(
        "the open-file limit (ulimit -n) is {limit}, but http.max_connections = {max} needs \
         {needed} ({RESERVED_FILES} more for the database, outbound calls and logs); serving \
         at most {fits} connections at once. Raise the limit (`ulimit -n {needed}`, or \
         LimitNOFILE={needed} in a systemd unit) or lower http.max_connections"
    );
    (fits, Some(warning))
}

/// One open connection, as the bound sees it.
#[derive(Default)]
struct Conn {
    /// Requests whose head has arrived and whose answer is not yet written.
    in_flight: AtomicUsize,
    /// Told when the bound closes this connection to make room.
    close: Notify,
}

/// Marks a request in progress on its connection while alive.
struct InFlight(Arc<Conn>);

impl InFlight {
    fn start(conn: &Arc<Conn>) -> Self {
        conn.in_flight.fetch_add(1, Ordering::SeqCst);
        InFlight(conn.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// What the bound did since its last warning.
#[derive(Default)]
struct Pressure {
    last_warning: Option<Instant>,
    closed: u64,
    refused: u64,
}

/// The open connections, oldest first (ids grow with acceptance).
struct Tracker {
    max: usize,
    open: Mutex<(u64, BTreeMap<u64, Arc<Conn>>, Pressure)>,
}

impl Tracker {
    fn new(max: usize) -> Self {
        Self {
            max,
            open: Mutex::new((0, BTreeMap::new(), Pressure::default())),
        }
    }

    /// Admits a new connection, closing the oldest one with no request in
    /// progress if the bound is reached; `None` when every connection is
    /// busy and the new one must be refused.
    fn admit(&self) -> Option<(u64, Arc<Conn>)> {
        let mut warning = None;
        let admitted = {
            let mut guard = self.open.lock().unwrap_or_else(|e| e.into_inner());
            let (next_id, open, pressure) = &mut *guard;
            let mut admitted = true;
            if open.len() >= self.max {
                let victim = open
                    .iter()
                    .find(|(_, c)| c.in_flight.load(Ordering::SeqCst) == 0)
                    .map(|(id, _)| *id);
                match victim.and_then(|id| open.remove(&id)) {
                    Some(conn) => {
                        conn.close.notify_one();
                        pressure.closed += 1;
                    }
                    None => {
                        pressure.refused += 1;
                        admitted = false;
                    }
                }
                let now = Instant::now();
                if pressure
                    .last_warning
                    .is_none_or(|t| now.duration_since(t) >= WARN_EVERY)
                {
                    warning = Some((pressure.closed, pressure.refused));
                    pressure.last_warning = Some(now);
                    pressure.closed = 0;
                    pressure.refused = 0;
                }
            }
            admitted.then(|| {
                let id = *next_id;
                *next_id += 1;
                let conn = Arc::new(Conn::default());
                open.insert(id, conn.clone());
                (id, conn)
            })
        };
        if let Some((closed, refused)) = warning {
            tracing::warn!(
                max_connections = self.max,
                closed_idle = closed,
                refused,
                "connection limit reached (http.max_connections = {}): the oldest connections \
                 with no request in progress are closed to make room, new ones refused while \
                 every connection is busy (counts since the previous such line); raise \
                 http.max_connections and the open-file limit if these are real clients",
                self.max
            );
        }
        admitted
    }

    fn release(&self, id: u64) {
        self.open
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .1
            .remove(&id);
    }
}

/// Removes a connection from the tracker when its task ends.
struct Release(Arc<Tracker>, u64);

impl Drop for Release {
    fn drop(&mut self) {
        self.0.release(self.1);
    }
}

/// Serves `app` on `listener` until `shutdown` resolves, then closes idle
/// connections and lets requests in progress finish (up to
/// `options.grace`).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    options: &ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (max, warning) = connection_bound(options.max_connections, open_file_limit());
    if let Some(w) = warning {
        tracing::warn!("{w}");
    }
    tracing::debug!(
        max_connections = max,
        header_read_timeout = ?options.header_read_timeout,
        "serving HTTP/1"
    );
    let tracker = Arc::new(Tracker::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    // Every connection task holds a receiver; `closed()` waits for them all.
    let (done_tx, done_rx) = watch::channel(());
    let mut shutdown = std::pin::pin!(shutdown);
    let mut last_accept_warning: Option<Instant> = None;
    loop {
        let accepted = tokio::select! {
            r = listener.accept() => r,
            () = &mut shutdown => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                accept_failed(e, &mut last_accept_warning).await;
                continue;
            }
        };
        let Some((id, conn)) = tracker.admit() else {
            drop(stream);
            continue;
        };
        let _ = stream.set_nodelay(true);
        let release = Release(tracker.clone(), id);
        tokio::spawn(serve_connection(
            stream,
            peer,
            app.clone(),
            conn,
            options.header_read_timeout,
            stop_rx.clone(),
            done_rx.clone(),
            release,
        ));
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drop(done_rx);
    if tokio::time::timeout(options.grace, done_tx.closed())
        .await
        .is_err()
    {
        tracing::warn!(
            "requests in progress did not finish within {:?}; stopping anyway",
            options.grace
        );
    }
    Ok(())
}

/// Waits out an `accept` failure. Out of file descriptors (or memory),
/// accepting again at once would spin; a connection that died in the queue
/// is no reason to wait.
async fn accept_failed(e: std::io::Error, last_warning: &mut Option<Instant>) {
    use std::io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    let now = Instant::now();
    if last_warning.is_none_or(|t| now.duration_since(t) >= WARN_EVERY) {
        *last_warning = Some(now);
        tracing::warn!(
            error = %e,
            "cannot accept connections (out of file descriptors? see http.max_connections \
             and the open-file limit); retrying every 100 ms"
        );
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
}

#[allow(clippy::too_many_arguments)]
async fn serve_connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: Router,
    conn: Arc<Conn>,
    header_read_timeout: Duration,
    mut stop: watch::Receiver<bool>,
    _done: watch::Receiver<()>,
    _release: Release,
) {
    let tracked = conn.clone();
    let service = hyper::service::service_fn(move |mut req: hyper::Request<Incoming>| {
        req.extensions_mut().insert(ConnectInfo(peer));
        // Alive from here until the response body is dropped, i.e. written.
        let in_flight = InFlight::start(&tracked);
        let app = app.clone();
        async move {
            let response = app.oneshot(req).await?;
            Ok::<_, std::convert::Infallible>(response.map(|body| {
                Body::new(body.map_frame(move |frame| {
                    let _ = &in_flight;
                    frame
                }))
            }))
        }
    });
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(header_read_timeout);
    let mut connection = std::pin::pin!(builder.serve_connection(TokioIo::new(stream), service));
    let mut stopping = false;
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    if e.is_timeout() {
                        tracing::debug!(%peer, "closed a connection that sent no complete request head in time");
                    } else {
                        tracing::debug!(%peer, error = %e, "connection ended with an error");
                    }
                }
                break;
            }
            () = conn.close.notified(), if !closing => {
                closing = true;
                if conn.in_flight.load(Ordering::SeqCst) == 0 {
                    tracing::debug!(%peer, "closed an idle connection to make room");
                    break;
                }
                // A request arrived meanwhile: answer it, then close.
                connection.as_mut().graceful_shutdown();
            }
            _ = stop.changed(), if !stopping => {
                stopping = true;
                if conn.in_flight.load(Ordering::SeqCst) == 0 {
                    break;
                }
                connection.as_mut().graceful_shutdown();
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_open_file_limit_is_read_from_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_open_file_limit(text), Some(1024));
        let text = "Max open files            unlimited            unlimited            files\n";
        assert_eq!(parse_open_file_limit(text), Some(u64::MAX));
        assert_eq!(parse_open_file_limit("Max processes 10 10\n"), None);
        if cfg!(target_os = "linux") {
            assert!(open_file_limit().is_some_and(|n| n > 0));
        }
    }

    #[test]
    fn the_bound_is_lowered_to_fit_the_open_file_limit() {
        assert_eq!(connection_bound(10_000, None), (10_000, None));
        assert_eq!(connection_bound(10_000, Some(65_536)), (10_000, None));
        assert_eq!(connection_bound(10_000, Some(11_024)), (10_000, None));
        let (max, warning) = connection_bound(10_000, Some(1024));
        assert_eq!(max, 512);
        let warning = warning.unwrap();
        assert!(warning.contains("ulimit -n 11024"), "{warning}");
        assert!(warning.contains("LimitNOFILE=11024"), "{warning}");
        let (max, _) = connection_bound(10_000, Some(4096));
        assert_eq!(max, 3072);
        assert_eq!(connection_bound(10, Some(1)).0, 1);
    }

    #[test]
    fn at_the_bound_the_oldest_idle_connection_makes_room() {
        let t = Tracker::new(2);
        let (a, conn_a) = t.admit().unwrap();
        let (b, conn_b) = t.admit().unwrap();
        // `a` has a request in progress, `b` is idle: `b` goes.
        let busy = InFlight::start(&conn_a);
        let (c, conn_c) = t.admit().unwrap();
        assert!(c > b && b > a);
        let open: Vec<u64> = t.open.lock().unwrap().1.keys().copied().collect();
        assert_eq!(open, vec![a, c]);
        // Told to close (a stored permit: the task sees it when it polls).
        let told = conn_b.close.notified();
        let mut told = std::pin::pin!(told);
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        assert!(told.as_mut().poll(&mut cx).is_ready());
        // Both remaining are busy: the next one is refused.
        let busy_c = InFlight::start(&conn_c);
        assert!(t.admit().is_none());
        // A finished request makes its connection evictable again.
        drop(busy);
        let (d, _) = t.admit().unwrap();
        let open: Vec<u64> = t.open.lock().unwrap().1.keys().copied().collect();
        assert_eq!(open, vec![c, d]);
        drop(busy_c);
        t.release(c);
        assert_eq!(t.open.lock().unwrap().1.len(), 1);
    }
}
