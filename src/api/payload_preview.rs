//! `POST /v1/bots/{bot}/payload-preview`: the exact JSON body an endpoint of
//! a given format would receive for the events one node of the bot's current
//! flow produces, rendered by the delivery engine's own formatter
//! ([`crate::delivery::format::render`]) from a sample conversation.
//!
//! The sample is the event catalog's (`/v1/event-types`), with the node's
//! own id, label, flow, saved field and menu options put in, so what the
//! console shows beside a node is what a receiver gets, `date` aside.

use super::AppState;
use super::bots::load;
use super::error::{ApiError, ApiResult, ErrorBody};
use super::extract::{ApiJson, Auth};
use crate::delivery::format::{self, EventView, PayloadFormat};
use crate::domain::event::{EventType, info};
use crate::domain::flow::{Flow, FlowNode, Node};
use crate::domain::validate::Validation;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use utoipa::ToSchema;

/// What to preview.
#[derive(Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PreviewRequest {
    /// A node id of the main flow, or `campaign/node`.
    pub node: String,
    /// `standard`, `bot9` or `flat` (default `standard`).
    #[serde(default)]
    #[schema(value_type = String, example = "flat")]
    pub format: PayloadFormat,
    /// Extra body params, merged into the top level as an endpoint's are.
    #[serde(default)]
    #[schema(value_type = Object)]
    pub extra_body: Option<Map<String, Value>>,
}

/// One event the node produces and its body.
#[derive(Debug, Serialize, ToSchema)]
pub struct PreviewPayload {
    /// The event type, e.g. `response.received`.
    pub event_type: String,
    /// For a menu option: its label.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub option: Option<String>,
    /// The JSON body, as the endpoint would receive it.
    #[schema(value_type = Object)]
    pub body: Value,
}

/// The preview of one node.
#[derive(Serialize, ToSchema)]
pub struct PayloadPreview {
    /// The node, as asked.
    pub node: String,
    /// The format rendered.
    #[schema(value_type = String)]
    pub format: PayloadFormat,
    /// The flow version the node was read from.
    pub flow_version: i64,
    /// One entry per event the node can send (empty when it sends none).
    pub payloads: Vec<PreviewPayload>,
    /// Why there is nothing, when `payloads` is empty.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// A believable answer for a question with this validation.
fn sample_answer(v: Option<&Validation>) -> String {
    match v {
        Some(Validation::Number { .. }) => "42".into(),
        Some(Validation::Email {}) => "jane@example.com".into(),
        Some(Validation::Phone {}) => "+525500000000".into(),
        Some(Validation::Date {}) => "2024-06-18".into(),
        Some(Validation::Choice { options }) => options.first().cloned().unwrap_or_default(),
        _ => "John Doe".into(),
    }
}

/// The events `node` produces: (type, option label, extra data).
fn events_of(node: &Node) -> Vec<(EventType, Option<String>, Value)> {
    match &node.kind {
        FlowNode::Ask {
            save_as,
            validate,
            notify,
            datapoint,
            ..
        } => {
            let answer = sample_answer(validate.as_ref());
            let mut out = Vec::new();
            if *notify {
                out.push((
                    EventType::ResponseReceived,
                    None,
                    json!({"field": save_as, "response": answer}),
                ));
            }
            if *datapoint {
                out.push((
                    EventType::DatapointCollected,
                    None,
                    json!({"field": save_as, "value": answer}),
                ));
            }
            out
        }
        FlowNode::Menu { options, .. } => options
            .iter()
            .filter(|o| o.notify)
            .map(|o| {
                (
                    EventType::OptionSelected,
                    Some(o.label.clone()),
                    json!({"option": o.label, "keyword": o.keyword}),
                )
            })
            .collect(),
        FlowNode::Quote { .. } => vec![(EventType::QuoteGenerated, None, json!({}))],
        FlowNode::Booking { .. } => vec![(EventType::AppointmentBooked, None, json!({}))],
        FlowNode::End { .. } => vec![(EventType::ConversationCompleted, None, json!({}))],
        _ => Vec::new(),
    }
}

/// Renders the preview of `node_ref` (`node` or `campaign/node`) of `flow`.
pub fn preview(
    flow: &Flow,
    node_ref: &str,
    bot_id: &str,
    fmt: PayloadFormat,
    extra_body: Option<&Map<String, Value>>,
    now_ms: i64,
) -> Result<(Vec<PreviewPayload>, Option<String>), String> {
    let (graph, id) = node_ref.split_once('/').unwrap_or(("main", node_ref));
    let node = flow.node(graph, id).ok_or_else(|| {
        format!("node {node_ref:?} is not in the current flow; name a node id, or campaign/node for a campaign's")
    })?;
    let events = events_of(node);
    let note = events.is_empty().then(|| {
        format!(
            "node {node_ref:?} sends nothing to endpoints: turn on its webhook (notify) to send its answer or choice"
        )
    });
    let payloads = events
        .into_iter()
        .map(|(t, option, extra)| {
            let mut data = info(t).sample;
            if let (Some(d), Value::Object(e)) = (data.as_object_mut(), extra) {
                d.extend(e);
                d.insert("flow".into(), Value::from(graph));
                d.insert("node".into(), Value::from(node.id.as_str()));
                d.insert("label".into(), Value::from(node.label()));
            }
            let view = EventView {
                id: "evt_preview",
                event_type: t.as_str(),
                bot_id,
                occurred_at_ms: now_ms,
                data: &data,
            };
            let bytes = format::render(fmt, &view, extra_body);
            PreviewPayload {
                event_type: t.as_str().to_string(),
                option,
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            }
        })
        .collect();
    Ok((payloads, note))
}

/// The JSON bodies an endpoint of `format` would receive for one node.
#[utoipa::path(post, path = "/v1/bots/{bot}/payload-preview", tag = "flows", params(("bot" = String, Path)),
    request_body = PreviewRequest,
    responses((status = 200, body = PayloadPreview), (status = 404, body = ErrorBody),
        (status = 422, body = ErrorBody, description = "Unknown node or format")),
    security(("bearer" = [])))]
pub async fn preview_payload(
    State(state): State<AppState>,
    auth: Auth,
    Path(bot): Path<String>,
    ApiJson(req): ApiJson<PreviewRequest>,
) -> ApiResult<Json<PayloadPreview>> {
    let p = auth.bot(&bot)?;
    load(&state, &p.account_id, &bot).await?;
    let row = state
        .store
        .get_flow(&p.account_id, &bot, None)
        .await?
        .ok_or_else(|| {
            ApiError::unprocessable(format!("bot {bot:?} has no flow yet: save one first"))
        })?;
    let flow = Flow::from_json(&row.document)
        .map_err(|e| ApiError::internal(crate::domain::flow::join_errors(&e)))?;
    let now = chrono::Utc::now().timestamp_millis();
    let (payloads, note) = preview(
        &flow,
        &req.node,
        &bot,
        req.format,
        req.extra_body.as_ref(),
        now,
    )
    .map_err(ApiError::unprocessable)?;
    Ok(Json(PayloadPreview {
        node: req.node,
        format: req.format,
        flow_version: row.version,
        payloads,
        note,
    }))
}

/// Routes of this module.
pub fn routes() -> Router<AppState> {
    Router::new().route("/v1/bots/{bot}/payload-preview", post(preview_payload))
}

#[cfg(test)]
mod tests {
    use super::*;

    const ELI: &str = include_str!("../../examples/elipackage.yaml");

    fn eli() -> Flow {
        let file = crate::domain::flow::BotFile::from_yaml(ELI).unwrap();
        file.flow
    }

    #[test]
    fn the_welcome_question_previews_as_seed_003s_flat_response() {
        let (p, note) = preview(
            &eli(),
            "welcome",
            "elipackage",
            PayloadFormat::Flat,
            None,
            1_718_752_956_560,
        )
        .unwrap();
        assert!(note.is_none());
        assert_eq!(p.len(), 1);
        assert_eq!(p[0].event_type, "response.received");
        assert_eq!(
            p[0].body,
            json!({"campaignId": "main", "label": "Welcome Message", "phoneNumber": "+525500000000",
                   "date": "2024-06-18T23:22:36.560Z", "response": "John Doe", "event": "response.received"})
        );
    }

    #[test]
    fn a_menu_previews_each_notifying_option_with_the_extra_body() {
        let extra: Map<String, Value> =
            serde_json::from_value(json!({"source": "bot", "label": "not mine"})).unwrap();
        let (p, _) = preview(
            &eli(),
            "membership",
            "elipackage",
            PayloadFormat::Flat,
            Some(&extra),
            0,
        )
        .unwrap();
        let options: Vec<_> = p.iter().map(|x| x.option.clone().unwrap()).collect();
        assert_eq!(options, ["One month", "Six months", "One year"]);
        assert_eq!(p[1].body["keyword"], json!(2));
        assert_eq!(p[1].body["source"], json!("bot"));
        assert_eq!(
            p[1].body["label"],
            json!("Membership"),
            "extra never overrides"
        );
    }

    #[test]
    fn unknown_nodes_and_silent_nodes_say_why() {
        let err = preview(&eli(), "nowhere", "b", PayloadFormat::Standard, None, 0).unwrap_err();
        assert!(err.contains("\"nowhere\""), "{err}");
        let (p, note) = preview(&eli(), "thanks", "b", PayloadFormat::Standard, None, 0).unwrap();
        assert!(p.is_empty());
        assert!(note.unwrap().contains("sends nothing"));
        let (p, _) = preview(&eli(), "raffle/r2", "b", PayloadFormat::Standard, None, 0).unwrap();
        assert_eq!(p[0].body["type"], json!("conversation.completed"));
        assert_eq!(p[0].body["data"]["flow"], json!("raffle"));
    }
}
