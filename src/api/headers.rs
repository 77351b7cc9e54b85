//! Custom header values on the wire, as endpoints and story webhooks take
//! and show them (the rules themselves are in [`crate::domain::outbound`]).
//!
//! In: `"name": "value"` (a secret) or `"name": {"value": "...",
//! "sensitive": false}` (shown in clear). Out: always `{"value",
//! "sensitive"}`, a secret's value shown in full only in the answer that
//! created it and as `••••` and its last four characters after that.

use crate::domain::outbound::CustomHeader;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use utoipa::ToSchema;

/// A custom header's value as given: a string, which is a secret, or an
/// object that may mark it plain.
#[derive(Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum HeaderInput {
    /// A secret value.
    Secret(String),
    /// A value and whether it is a secret.
    Detailed(HeaderView),
}

/// A custom header's value as shown.
#[derive(Serialize, Deserialize, ToSchema, Debug, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct HeaderView {
    /// The value; a secret's is `••••` and its last four characters (or
    /// `••••` alone when shorter than 12), except in the answer that created
    /// it. Send a redacted value back unchanged to keep the stored one.
    pub value: String,
    /// Whether the value is a secret (default `true`); `false` shows it in
    /// clear everywhere, the delivery log included.
    #[serde(default = "secret_by_default")]
    pub sensitive: bool,
}

fn secret_by_default() -> bool {
    true
}

/// The headers as shown: in full (`reveal`, only in the answer that
/// created them) or with secrets redacted.
pub fn view(
    headers: &BTreeMap<String, CustomHeader>,
    reveal: bool,
) -> BTreeMap<String, HeaderView> {
    headers
        .iter()
        .map(|(k, h)| {
            let value = if reveal {
                h.value.clone()
            } else {
                h.shown().into_owned()
            };
            (
                k.clone(),
                HeaderView {
                    value,
                    sensitive: h.sensitive,
                },
            )
        })
        .collect()
}
