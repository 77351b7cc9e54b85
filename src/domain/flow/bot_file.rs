//! The bot file: a whole bot as imported or exported (`botwire bots import
//! FILE`, `POST /v1/bots/import`): its id and type (the rules of
//! [`BotId`] and [`BotType`], the same as the API's), name, price table,
//! calendar, story webhooks and flow, checked together.

use super::document::{check_expansion, check_nesting, check_size};
use super::{Flow, FlowError, StoryWebhook};
use crate::domain::bot::{BotId, BotType};
use crate::domain::calendar::Calendar;
use crate::domain::quote::PriceTable;
use serde::{Deserialize, Serialize};

/// A whole bot as imported or exported (`botwire bots import FILE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BotFile {
    /// Bot id (seed 000's `uniqueId`).
    pub id: BotId,
    /// Display name.
    pub name: String,
    /// `data_collection`, `quote_generation`, `appointment` or `support`
    /// (any other word is refused when the file is read).
    #[serde(rename = "type")]
    pub bot_type: BotType,
    /// Prices, for quote bots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub price_table: Option<PriceTable>,
    /// Slots, for appointment bots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub calendar: Option<Calendar>,
    /// Story webhooks used by the flow.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub webhooks: Vec<StoryWebhook>,
    /// The flow.
    pub flow: Flow,
}

impl BotFile {
    /// Parses a YAML bot file (shape only; see [`BotFile::validate`]).
    pub fn from_yaml(src: &str) -> Result<BotFile, Vec<FlowError>> {
        check_size(src)?;
        check_nesting(src)?;
        check_expansion(src)?;
        serde_yaml_ng::from_str(src).map_err(|e| {
            // A flow that does not parse reports its own errors, by node,
            // field and column, rather than as one line of the whole file.
            serde_yaml_ng::from_str::<serde_yaml_ng::Value>(src)
                .ok()
                .and_then(|v| v.get("flow").cloned())
                .and_then(|flow| serde_yaml_ng::to_string(&flow).ok())
                .and_then(|flow| Flow::from_yaml(&flow).err())
                .unwrap_or_else(|| vec![FlowError::new("", "", e.to_string())])
        })
    }

    /// Parses a JSON bot file (shape only; see [`BotFile::validate`]).
    pub fn from_json(src: &str) -> Result<BotFile, Vec<FlowError>> {
        check_size(src)?;
        serde_json::from_str(src).map_err(|e| {
            serde_json::from_str::<serde_json::Value>(src)
                .ok()
                .and_then(|v| v.get("flow").map(|f| f.to_string()))
                .and_then(|flow| Flow::from_json(&flow).err())
                .unwrap_or_else(|| vec![FlowError::new("", "", e.to_string())])
        })
    }

    /// The bot file as YAML.
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    /// The bot file as pretty JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// Checks everything: id, type, webhooks, price table, calendar and the flow
    /// (whose webhook names must be declared in `webhooks`). Problems outside
    /// the flow are reported with `node` set to `bot`, `webhooks`,
    /// `price_table` or `calendar`.
    pub fn validate(&self) -> Result<(), Vec<FlowError>> {
        let mut errs = Vec::new();
        // Read without checks (serde), so checked here by the API's own rule.
        if let Err(m) = BotId::parse(self.id.as_str()) {
            errs.push(FlowError::new("bot", "id", m));
        }
        if self.name.trim().is_empty() {
            errs.push(FlowError::new("bot", "name", "name is empty"));
        }
        for (i, w) in self.webhooks.iter().enumerate() {
            errs.extend(w.problems("webhooks", &format!("[{i}].")));
            if self.webhooks[..i].iter().any(|o| o.name == w.name) {
                errs.push(FlowError::new(
                    "webhooks",
                    format!("[{i}].name"),
                    format!("duplicate webhook \"{}\"", w.name),
                ));
            }
        }
        match &self.price_table {
            Some(t) => {
                if let Err(e) = t.validate() {
                    errs.extend(e.into_iter().map(|e| match e {
                        crate::domain::quote::QuoteError::InvalidTable { field, message } => {
                            FlowError::new("price_table", field, message)
                        }
                        other => FlowError::new("price_table", "", other.to_string()),
                    }));
                }
            }
            None if self.flow.uses_kind("quote") => {
                errs.push(FlowError::new(
                    "price_table",
                    "",
                    "the flow has a quote node but the bot has no price table",
                ));
            }
            None => {}
        }
        match &self.calendar {
            Some(c) => {
                if let Err(e) = c.validate() {
                    errs.extend(
                        e.into_iter()
                            .map(|e| FlowError::new("calendar", e.field, e.message)),
                    );
                }
            }
            None if self.flow.uses_kind("booking") => {
                errs.push(FlowError::new(
                    "calendar",
                    "",
                    "the flow has a booking node but the bot has no calendar",
                ));
            }
            None => {}
        }
        let names: Vec<String> = self.webhooks.iter().map(|w| w.name.clone()).collect();
        if let Err(e) = self.flow.validate(Some(&names)) {
            errs.extend(e);
        }
        if errs.is_empty() { Ok(()) } else { Err(errs) }
    }
}
