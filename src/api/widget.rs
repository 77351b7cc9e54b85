//! The website chat widget: `/widget.js`, the script a page includes to
//! show a chat bubble, and `/widget/demo`, a page that shows it working.
//!
//! The widget talks to `POST /v1/bots/{bot}/chat` with a publishable key
//! (see [`super::keys`]); the chat route answers CORS for it. Both files
//! are embedded in the binary.

use super::AppState;
use axum::Router;
use axum::extract::Query;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;

const WIDGET_JS: &str = include_str!("../../widget/widget.js");

/// `GET /widget.js`
async fn widget_js() -> Response {
    (
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/javascript; charset=utf-8"),
            ),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=300"),
            ),
            (
                header::ACCESS_CONTROL_ALLOW_ORIGIN,
                HeaderValue::from_static("*"),
            ),
        ],
        WIDGET_JS,
    )
        .into_response()
}

/// `?bot=&key=` of the demo page.
#[derive(Deserialize)]
struct DemoQuery {
    bot: Option<String>,
    key: Option<String>,
}

/// `GET /widget/demo`: a sample shop page with the widget on it, or a form
/// asking for the bot and its publishable key.
async fn demo(headers: HeaderMap, Query(q): Query<DemoQuery>) -> Response {
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost:8080");
    let base = format!("http://{host}");
    let bot = q.bot.unwrap_or_default();
    let key = q.key.unwrap_or_default();
    let snippet = format!(
        r#"<script src="{base}/widget.js" data-bot="{}" data-key="{}" defer></script>"#,
        if bot.is_empty() { "BOT_ID" } else { &bot },
        if key.is_empty() {
            "PUBLISHABLE_KEY"
        } else {
            &key
        },
    );
    let widget = if bot.is_empty() || key.is_empty() {
        String::new()
    } else {
        format!(
            r#"<script src="/widget.js" data-bot="{}" data-key="{}" data-title="Ask {}" defer></script>"#,
            escape(&bot),
            escape(&key),
            escape(&bot)
        )
    };
    let page = format!(
        r#"<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Chat widget demo · botwire</title>
<link rel="icon" href="data:,">
<style>
  *, *::before, *::after {{ box-sizing: border-box; }}
  body {{ margin: 0; font-family: system-ui, -apple-system, "Segoe UI", sans-serif; color: #1f2933; background: #f5f7fa; line-height: 1.5; }}
  main {{ max-width: 720px; margin: 0 auto; padding: 24px 16px 120px; }}
  h1 {{ font-size: 26px; margin: 0 0 8px; }}
  .card {{ background: #fff; border: 1px solid #e4e7eb; border-radius: 10px; padding: 16px; margin: 16px 0; }}
  code, pre {{ font-family: ui-monospace, "SFMono-Regular", Menlo, monospace; font-size: 13px; }}
  pre {{ white-space: pre-wrap; overflow-wrap: anywhere; background: #1f2933; color: #f5f7fa; padding: 12px; border-radius: 8px; }}
  label {{ display: block; font-weight: 600; margin: 10px 0 4px; }}
  input {{ width: 100%; padding: 8px 10px; border: 1px solid #9aa5b1; border-radius: 8px; font-size: 15px; }}
  button {{ margin-top: 12px; background: #1c64f2; color: #fff; border: none; border-radius: 8px; padding: 9px 16px; font-size: 15px; cursor: pointer; }}
  :focus-visible {{ outline: 3px solid #f59f00; outline-offset: 2px; }}
</style>
</head>
<body>
<main>
<h1>Parcel &amp; Co. — a sample shop page</h1>
<p>This page shows botwire's chat widget as a visitor would meet it: the bubble in the corner opens a chat with the bot.</p>
<div class="card">
<h2>Put it on your site</h2>
<p>Create a <strong>publishable key</strong> for the bot that lists your website's origin (for this page: <code>{origin}</code>), then add one tag:</p>
<pre>{snippet}</pre>
<p>A publishable key can only chat with its bot, and only from the origins listed on it; it reads and manages nothing.</p>
</div>
<form class="card" method="get" action="/widget/demo">
<h2>Try a bot here</h2>
<label for="bot">Bot id</label>
<input id="bot" name="bot" value="{bot}" required>
<label for="key">Publishable key</label>
<input id="key" name="key" value="{key}" required>
<button type="submit">Show the widget</button>
</form>
</main>
{widget}
</body>
</html>
"#,
        origin = escape(&base),
        snippet = escape(&snippet),
        bot = escape(&bot),
        key = escape(&key),
    );
    let mut resp = Html(page).into_response();
    resp.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:; frame-ancestors 'none'",
        ),
    );
    resp
}

/// Text safe in HTML content and attribute values.
fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&#39;")
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/widget.js", get(widget_js))
        .route("/widget/demo", get(demo))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markup_is_escaped() {
        assert_eq!(
            escape(r#"<script>"a" & 'b'</script>"#),
            "&lt;script&gt;&quot;a&quot; &amp; &#39;b&#39;&lt;/script&gt;"
        );
    }
}
