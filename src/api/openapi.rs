//! The OpenAPI 3.1 document, generated from the handlers' annotations and
//! served at `/openapi.json`.

use super::AppState;
use axum::routing::get;
use axum::{Json, Router};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

/// The API description.
#[derive(OpenApi)]
#[openapi(
    info(title = "botwire", description = "Chatbots that talk to the rest of a business through webhooks."),
    paths(
        super::health::healthz,
        super::health::metrics,
        super::bots::create_bot,
        super::bots::list_bots,
        super::bots::get_bot,
        super::bots::update_bot,
        super::bots::delete_bot,
        super::keys::create_key,
        super::keys::list_keys,
        super::keys::revoke_key,
    ),
    modifiers(&Bearer),
    tags((name = "bots"), (name = "keys"), (name = "health"))
)]
pub struct ApiDoc;

struct Bearer;

impl Modify for Bearer {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// The document as JSON.
pub fn document() -> serde_json::Value {
    serde_json::to_value(ApiDoc::openapi()).expect("the OpenAPI document serialises")
}

async fn openapi_json() -> Json<serde_json::Value> {
    Json(document())
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/openapi.json", get(openapi_json))
}
