//! `LISTEN` for deliveries other processes announced: one connection held
//! by a task on the server's runtime, reconnecting after a failure (a
//! missed notification costs at most one claim-loop poll).

use super::super::Listener;
use super::CHANNEL;
use super::tls::{MakeRustls, describe};
use std::future::poll_fn;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_postgres::AsyncMessage;

/// Holds a connection that `LISTEN`s on [`CHANNEL`] and calls
/// `listener.wake` for each notification, until `listener.alive` answers
/// false.
pub(super) async fn listen_loop(
    config: tokio_postgres::Config,
    tls: MakeRustls,
    listener: Listener,
) {
    let mut backoff = Duration::from_millis(200);
    while (listener.alive)() {
        let (client, mut connection) = match config.connect(tls.clone()).await {
            Ok(c) => c,
            Err(e) => {
                tracing::warn!(error = %describe(&e), "cannot connect to listen for deliveries; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(10));
                continue;
            }
        };
        // The connection delivers notifications only to whoever polls it
        // for messages: a task of its own forwards them, and ends (closing
        // the channel) when the connection does.
        let (tx, mut notes) = mpsc::unbounded_channel();
        let driver = tokio::spawn(async move {
            loop {
                match poll_fn(|cx| connection.poll_message(cx)).await {
                    Some(Ok(AsyncMessage::Notification(_))) => {
                        if tx.send(()).is_err() {
                            break;
                        }
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => {
                        tracing::warn!(error = %describe(&e), "lost the listening connection; reconnecting");
                        break;
                    }
                    None => break,
                }
            }
        });
        if let Err(e) = client.batch_execute(&format!("LISTEN {CHANNEL}")).await {
            tracing::warn!(error = %describe(&e), "LISTEN failed; retrying");
            driver.abort();
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(200);
        // Anything announced while (re)connecting was missed: look once.
        (listener.wake)();
        while (listener.alive)() {
            match tokio::time::timeout(Duration::from_secs(1), notes.recv()).await {
                Ok(Some(())) => (listener.wake)(),
                Ok(None) => break,
                Err(_) => {}
            }
        }
        drop(client);
        driver.abort();
    }
}
