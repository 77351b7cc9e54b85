//! `botwire listen`: a local receiver for trying webhooks out. It prints
//! every request it gets (method, path, headers, pretty JSON body) and,
//! given the endpoint's secret, whether the signature verifies. It answers
//! 200, or `--status` to see how botwire retries, or 401 when a signature
//! does not verify.

use crate::delivery::signing::{self, Secret};
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, Method, StatusCode, Uri};
use clap::Args;
use std::sync::Arc;

/// Flags of `botwire listen`.
#[derive(Args, Debug)]
pub struct ListenArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 9000)]
    port: u16,
    /// The endpoint secret (`whsec_…`) to verify signatures with.
    #[arg(long)]
    secret: Option<String>,
    /// Answer every request with this status (e.g. 500 to watch retries).
    #[arg(long, default_value_t = 200)]
    status: u16,
}

struct Receiver {
    secret: Option<Secret>,
    status: StatusCode,
}

/// What `listen` prints for one request, and the status it answers.
pub fn describe(
    secret: Option<&Secret>,
    method: &Method,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
    now_secs: i64,
) -> (String, bool) {
    let mut out = format!("{method} {uri}\n");
    for (k, v) in headers {
        out.push_str(&format!(
            "  {k}: {}\n",
            String::from_utf8_lossy(v.as_bytes())
        ));
    }
    match serde_json::from_slice::<serde_json::Value>(body) {
        Ok(v) => out.push_str(&serde_json::to_string_pretty(&v).unwrap_or_default()),
        Err(_) => out.push_str(&String::from_utf8_lossy(body)),
    }
    out.push('\n');
    let mut valid = true;
    if let Some(secret) = secret {
        let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("");
        match signing::verify(
            std::slice::from_ref(secret),
            h(signing::HEADER_ID),
            h(signing::HEADER_TIMESTAMP),
            h(signing::HEADER_SIGNATURE),
            body,
            now_secs,
            signing::DEFAULT_TOLERANCE_SECS,
        ) {
            Ok(()) => out.push_str("signature: valid\n"),
            Err(e) => {
                valid = false;
                out.push_str(&format!("signature: INVALID ({e})\n"));
            }
        }
    }
    (out, valid)
}

async fn receive(
    State(r): State<Arc<Receiver>>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, &'static str) {
    let (text, valid) = describe(
        r.secret.as_ref(),
        &method,
        &uri,
        &headers,
        &body,
        chrono::Utc::now().timestamp(),
    );
    println!("{}\n{text}", "-".repeat(60));
    if !valid {
        return (StatusCode::UNAUTHORIZED, "signature does not verify\n");
    }
    (r.status, "ok\n")
}

/// Runs the receiver until Ctrl-C.
pub async fn run(args: ListenArgs) -> anyhow::Result<()> {
    let secret = args
        .secret
        .as_deref()
        .map(Secret::parse)
        .transpose()
        .map_err(|e| anyhow::anyhow!("--secret: {e}"))?;
    let status = StatusCode::from_u16(args.status)
        .map_err(|_| anyhow::anyhow!("--status must be an HTTP status such as 200 or 500"))?;
    let app = Router::new()
        .fallback(receive)
        .with_state(Arc::new(Receiver { secret, status }));
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.port)).await?;
    let addr = listener.local_addr()?;
    eprintln!(
        "listening on http://{addr}/ — register it (with --allow-net 127.0.0.0/8 on the server) and watch deliveries arrive; Ctrl-C stops"
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_the_request_and_the_verdict() {
        let s = Secret::generate();
        let body = br#"{"type":"webhook.test","data":{"message":"hi"}}"#;
        let now = 1_800_000_000;
        let mut h = HeaderMap::new();
        h.insert("webhook-id", "evt_1".parse().unwrap());
        h.insert("webhook-timestamp", now.to_string().parse().unwrap());
        h.insert(
            "webhook-signature",
            signing::sign(&s, "evt_1", now, body).parse().unwrap(),
        );
        let uri: Uri = "/hook".parse().unwrap();
        let (text, ok) = describe(Some(&s), &Method::POST, &uri, &h, body, now);
        assert!(ok);
        assert!(text.starts_with("POST /hook\n"), "{text}");
        assert!(text.contains("\"message\": \"hi\""), "pretty JSON: {text}");
        assert!(text.contains("signature: valid"));
        let (text, ok) = describe(Some(&s), &Method::POST, &uri, &h, b"{}", now);
        assert!(!ok);
        assert!(text.contains("signature: INVALID"), "{text}");
        let (_, ok) = describe(None, &Method::POST, &uri, &h, b"{}", now);
        assert!(ok, "without a secret nothing is checked");
    }
}
