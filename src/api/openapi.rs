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
        super::flows::put_flow,
        super::flows::get_flow,
        super::flows::get_settings,
        super::flows::put_settings,
        super::flows::import_bot,
        super::flows::export_bot,
        super::chat::chat,
        super::chat::list_conversations,
        super::chat::get_conversation,
        super::events::list_events,
        super::events::get_event,
        super::events::list_event_types,
        super::events::event_type_sample,
        super::events::publish_event,
        super::appointments::list_appointments,
        super::appointments::cancel_appointment,
        super::webhooks::create_webhook,
        super::webhooks::list_webhooks,
        super::webhooks::get_webhook,
        super::webhooks::update_webhook,
        super::webhooks::delete_webhook,
        super::webhooks::list_calls,
        super::webhooks::test_webhook,
        super::webhooks::get_secret,
        super::webhooks::rotate_secret,
        super::endpoints::create_endpoint,
        super::endpoints::list_endpoints,
        super::endpoints::get_endpoint,
        super::endpoints::update_endpoint,
        super::endpoints::delete_endpoint,
        super::endpoints::get_secret,
        super::endpoints::rotate_secret,
        super::endpoints::test_endpoint,
        super::endpoints::endpoint_health,
        super::endpoints::recover_endpoint,
        super::endpoints::list_endpoint_deliveries,
        super::deliveries::list_event_deliveries,
        super::deliveries::get_delivery,
        super::deliveries::list_attempts,
        super::deliveries::retry_delivery,
        super::hooks::subscribe,
        super::hooks::unsubscribe,
        super::chatbot_webhook::register_webhook,
    ),
    modifiers(&Bearer),
    tags((name = "bots"), (name = "flows"), (name = "conversations"), (name = "events"),
        (name = "appointments"), (name = "story webhooks"), (name = "endpoints"), (name = "deliveries"), (name = "hooks"),
        (name = "keys"), (name = "health"))
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
