//! The benches' load generator: one plain HTTP/1.1 keep-alive connection per
//! simulated client, requests built once and sent as bytes.
//!
//! A bench shares the machine's cores with the server it measures, so the
//! client should cost as little as a dedicated load generator would (wrk,
//! oha): no connection pool, no URL parsing or header map per request.

use axum::body::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One connection to the server under test.
pub struct Connection {
    addr: std::net::SocketAddr,
    send: Option<SendRequest<Full<Bytes>>>,
}

impl Connection {
    /// A connection to `addr`, opened on first use (and again if the server
    /// closed it).
    pub fn new(addr: std::net::SocketAddr) -> Self {
        Self { addr, send: None }
    }

    async fn ready(&mut self) -> anyhow::Result<&mut SendRequest<Full<Bytes>>> {
        if self.send.as_ref().is_none_or(|s| s.is_closed()) {
            let stream = tokio::net::TcpStream::connect(self.addr).await?;
            stream.set_nodelay(true)?;
            let (send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
            tokio::spawn(async move {
                let _ = conn.await;
            });
            self.send = Some(send);
        }
        let send = self.send.as_mut().expect("connection just opened");
        send.ready().await?;
        Ok(send)
    }

    /// POSTs a JSON body to `path` with a bearer key; answers the status
    /// and the whole answer body.
    pub async fn post_json(
        &mut self,
        path: &str,
        key: &str,
        body: Bytes,
    ) -> anyhow::Result<(hyper::StatusCode, Bytes)> {
        let request = hyper::Request::post(path)
            .header(hyper::header::HOST, self.addr.to_string())
            .header(hyper::header::AUTHORIZATION, key)
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .body(Full::new(body))?;
        let send = self.ready().await?;
        let answer = match send.send_request(request).await {
            Ok(a) => a,
            Err(e) => {
                self.send = None;
                return Err(e.into());
            }
        };
        let status = answer.status();
        let body = answer.into_body().collect().await?.to_bytes();
        Ok((status, body))
    }
}
