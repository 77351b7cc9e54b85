//! The web console: a single-page app served at `/`, its files at
//! `/console/{file}`, and the example bot files at `/console/examples.json`.
//!
//! Everything is compiled into the binary (`include_str!`), so the console
//! needs no build step, no files beside the binary and nothing from a CDN.
//! Every answer carries a Content-Security-Policy that allows scripts, styles
//! and requests from this origin only (no inline script), and an ETag so a
//! browser revalidates cheaply (`Cache-Control: no-cache` + 304). The console
//! talks to the same `/v1` API as any other client, with the key the user
//! signs in with; these routes need no key and are not in the OpenAPI
//! document.

use super::AppState;
use axum::Router;
use axum::extract::Path;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use sha2::{Digest, Sha256};
use std::sync::OnceLock;

/// What the console's pages may load: this origin only. Styles are files
/// too, so `style-src` needs no `'unsafe-inline'`; SVG charts come from the
/// API as text and are inserted as elements.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; \
    img-src 'self' data:; connect-src 'self'; object-src 'none'; base-uri 'none'; \
    form-action 'self'; frame-ancestors 'none'";

/// One embedded file: its name under `/console/`, type and bytes.
struct Asset {
    name: &'static str,
    content_type: &'static str,
    body: &'static str,
}

/// An [`Asset`] for `console/{name}`, compiled in.
macro_rules! asset {
    ($name:literal, $content_type:expr) => {
        Asset {
            name: $name,
            content_type: $content_type,
            body: include_str!(concat!("../../console/", $name)),
        }
    };
}

const JS: &str = "text/javascript; charset=utf-8";
const INDEX: Asset = asset!("index.html", "text/html; charset=utf-8");

const ASSETS: &[Asset] = &[
    INDEX,
    asset!("app.css", "text/css; charset=utf-8"),
    asset!("app.js", JS),
    asset!("api.js", JS),
    asset!("ui.js", JS),
    asset!("flow.js", JS),
    asset!("build.js", JS),
    asset!("conditions.js", JS),
    asset!("flowmap.js", JS),
    asset!("wizard.js", JS),
    asset!("payload.js", JS),
    asset!("fields.js", JS),
    asset!("problems.js", JS),
    asset!("pages.js", JS),
    asset!("webhooks.js", JS),
    asset!("keys.js", JS),
    asset!("audit.js", JS),
    asset!("channels.js", JS),
    asset!("inbox.js", JS),
    asset!("users.js", JS),
    asset!("broadcasts.js", JS),
    asset!("favicon.svg", "image/svg+xml"),
];

/// The example bot files offered by "Create from an example", in the order
/// shown.
const EXAMPLES: &[(&str, &str)] = &[
    ("elipackage", include_str!("../../examples/elipackage.yaml")),
    ("incident", include_str!("../../examples/incident.yaml")),
    ("quote", include_str!("../../examples/quote.yaml")),
    (
        "appointment",
        include_str!("../../examples/appointment.yaml"),
    ),
    ("support", include_str!("../../examples/support.yaml")),
    ("stories", include_str!("../../examples/stories.yaml")),
    ("leads", include_str!("../../examples/leads.yaml")),
    ("helpdesk", include_str!("../../examples/helpdesk.yaml")),
];

/// `[{"name", "title", "summary", "yaml"}]`: each example with its bot's
/// display name and the first paragraph of its opening comment (up to a
/// list) as a summary.
fn examples_json() -> &'static str {
    static JSON: OnceLock<String> = OnceLock::new();
    JSON.get_or_init(|| {
        let list: Vec<serde_json::Value> = EXAMPLES
            .iter()
            .map(|(name, yaml)| {
                let summary = yaml
                    .lines()
                    .take_while(|l| l.starts_with('#'))
                    .map(|l| l.trim_start_matches('#').trim())
                    .take_while(|l| !l.is_empty() && !l.starts_with('-'))
                    .collect::<Vec<_>>()
                    .join(" ");
                let title = yaml
                    .lines()
                    .find_map(|l| l.strip_prefix("name:"))
                    .map(|t| t.trim().trim_matches('"'))
                    .unwrap_or(name);
                serde_json::json!({"name": name, "title": title, "summary": summary, "yaml": yaml})
            })
            .collect();
        serde_json::to_string(&list).unwrap_or_else(|_| "[]".into())
    })
}

/// A strong ETag from the content, so a new binary invalidates old copies.
fn etag(body: &str) -> String {
    let digest = Sha256::digest(body.as_bytes());
    format!("\"{}\"", hex::encode(&digest[..12]))
}

fn serve(content_type: &'static str, body: &'static str, headers: &HeaderMap) -> Response {
    let tag = etag(body);
    let fresh = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == tag));
    let mut resp = if fresh {
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        ([(header::CONTENT_TYPE, content_type)], body).into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if let Ok(v) = HeaderValue::from_str(&tag) {
        h.insert(header::ETAG, v);
    }
    resp
}

async fn index(headers: HeaderMap) -> Response {
    serve(INDEX.content_type, INDEX.body, &headers)
}

async fn asset(Path(file): Path<String>, headers: HeaderMap) -> Response {
    if file == "examples.json" {
        return serve("application/json", examples_json(), &headers);
    }
    match ASSETS.iter().find(|a| a.name == file) {
        Some(a) => serve(a.content_type, a.body, &headers),
        None => {
            super::error::ApiError::not_found(format!("no console file {file:?}")).into_response()
        }
    }
}

/// Routes of the console (no key needed: the files hold no data).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/", get(index))
        .route("/console/{file}", get(asset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_is_offered_with_a_summary() {
        let list: Vec<serde_json::Value> = serde_json::from_str(examples_json()).unwrap();
        assert_eq!(list.len(), EXAMPLES.len());
        for e in &list {
            assert!(!e["summary"].as_str().unwrap().is_empty(), "{e}");
            assert!(e["yaml"].as_str().unwrap().contains("flow:"), "{e}");
        }
    }

    #[test]
    fn etags_change_with_the_content() {
        assert_ne!(etag("a"), etag("b"));
        assert_eq!(etag("a"), etag("a"));
    }
}
