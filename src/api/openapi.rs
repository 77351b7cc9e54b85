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
        super::health::readyz,
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
        super::flows::check_flow,
        super::flows::get_settings,
        super::flows::put_settings,
        super::flows::import_bot,
        super::flows::export_bot,
        super::payload_preview::preview_payload,
        super::chat::chat,
        super::chat::list_conversations,
        super::chat::get_conversation,
        super::chat::chat_messages,
        super::conversations::list_inbox,
        super::conversations::send_agent_message,
        super::conversations::release,
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
        super::endpoints::endpoint_health_chart,
        super::endpoints::recover_endpoint,
        super::deliveries::list_endpoint_deliveries,
        super::deliveries::list_deliveries,
        super::deliveries::list_event_deliveries,
        super::deliveries::get_delivery,
        super::deliveries::list_attempts,
        super::deliveries::retry_delivery,
        super::hooks::subscribe,
        super::hooks::unsubscribe,
        super::chatbot_webhook::register_webhook,
        super::audit::list_audit,
        super::channels::create_channel,
        super::channels::list_channels,
        super::channels::get_channel,
        super::channels::update_channel,
        super::channels::delete_channel,
        super::channels::send_message,
        super::channels::list_messages,
        super::channels::list_message_attempts,
        super::contacts::list_contacts,
        super::contacts::export_contacts,
        super::contacts::import_contacts,
        super::contacts::get_contact,
        super::contacts::update_contact,
        super::contacts::list_contact_conversations,
        super::segments::create_segment,
        super::segments::list_segments,
        super::segments::get_segment,
        super::segments::update_segment,
        super::segments::delete_segment,
        super::broadcasts::create_broadcast,
        super::broadcasts::preview_broadcast,
        super::broadcasts::list_broadcasts,
        super::broadcasts::get_broadcast,
        super::broadcasts::cancel_broadcast,
        super::broadcasts::pause_broadcast,
        super::broadcasts::resume_broadcast,
    ),
    modifiers(&Bearer, &CommonErrors),
    tags((name = "bots"), (name = "flows"), (name = "conversations"), (name = "events"),
        (name = "appointments"), (name = "story webhooks"), (name = "endpoints"), (name = "deliveries"), (name = "hooks"), (name = "channels"), (name = "contacts"), (name = "segments"), (name = "broadcasts"),
        (name = "keys"), (name = "audit"), (name = "health"))
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

/// Documents the error answers every authenticated route can give (a bad
/// key, a bad request, a body too large or of the wrong type, …) on each
/// operation that does not already describe them, so the document lists
/// every status the server may send.
struct CommonErrors;

impl Modify for CommonErrors {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::{Ref, RefOr, ResponseBuilder, content::ContentBuilder};
        let errors: [(&str, &str); 8] = [
            ("400", "The request is malformed: bad JSON, query or path."),
            ("401", "No valid API key."),
            ("403", "The key may not do this."),
            ("404", "Not found, or not visible to this key."),
            ("409", "Conflicts with what exists."),
            ("413", "The body is larger than the server accepts."),
            ("415", "The body's content type is not accepted."),
            (
                "422",
                "Well-formed, but not acceptable; the message names the field.",
            ),
        ];
        for (path, item) in openapi.paths.paths.iter_mut() {
            if !path.starts_with("/v1/") && !path.starts_with("/api/") {
                continue;
            }
            let operations = [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
                &mut item.patch,
            ];
            for op in operations.into_iter().flatten() {
                for (code, description) in errors {
                    if !op.responses.responses.contains_key(code) {
                        let response = ResponseBuilder::new()
                            .description(description)
                            .content(
                                "application/json",
                                ContentBuilder::new()
                                    .schema(Some(RefOr::<utoipa::openapi::schema::Schema>::Ref(
                                        Ref::from_schema_name("ErrorBody"),
                                    )))
                                    .build(),
                            )
                            .build();
                        op.responses
                            .responses
                            .insert(code.to_owned(), RefOr::T(response));
                    }
                }
            }
        }
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
