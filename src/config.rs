//! Configuration, in layers: commented defaults (built in, printed by
//! `botwire config`) → an optional TOML file (`--config`) → `BOTWIRE_*`
//! environment variables → command-line flags. Later layers win.
//!
//! The defaults file is the schema ([`keys`]): every key in it has an
//! environment variable by one naming rule and can be given to `botwire
//! serve` as `--set KEY=VALUE`, so no key can lack either. Each value is
//! parsed once, while loading, into its type (durations, the role, the log
//! format, the public URL, networks, the retry schedule); a bad value is
//! refused at start with the key and where it came from named, e.g.
//! `delivery.break_after: expected an integer, got "x" (from
//! BOTWIRE_DELIVERY_BREAK_AFTER)`.
//!
//! Secrets (the key-hash pepper) are wrapped so they never reach `Debug`
//! output or logs.

mod layers;

pub use layers::{Key, env_name};

use crate::delivery::schedule::RetrySchedule;
use crate::delivery::ssrf::AllowList;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

/// The defaults, with a comment for every key. `botwire config` prints this.
pub const DEFAULTS: &str = include_str!("config_defaults.toml");

/// Every key of the configuration, from the defaults file.
pub fn keys() -> Vec<Key> {
    layers::keys(&layers::parse(DEFAULTS, "defaults").expect("the built-in defaults parse"))
}

/// A string that must not be printed.
#[derive(Clone, Default, Deserialize, PartialEq)]
#[serde(transparent)]
pub struct SecretString(String);

impl SecretString {
    /// The secret itself: call only where it is used.
    pub fn expose(&self) -> &str {
        &self.0
    }
    /// Whether no secret was set.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for SecretString {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            f.write_str("\"\"")
        } else {
            f.write_str("\"***\"")
        }
    }
}

/// Which work a process does (`role`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The HTTP API and the workers.
    All,
    /// Only the HTTP API.
    Api,
    /// Only the workers.
    Worker,
}

impl Role {
    /// Whether this process serves the HTTP API.
    pub fn serves_api(self) -> bool {
        self != Role::Worker
    }
    /// Whether this process runs the delivery and channel workers.
    pub fn runs_workers(self) -> bool {
        self != Role::Api
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "all" => Ok(Role::All),
            "api" => Ok(Role::Api),
            "worker" => Ok(Role::Worker),
            _ => Err(format!(
                "expected \"all\", \"api\" or \"worker\", got {s:?}"
            )),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Role::All => "all",
            Role::Api => "api",
            Role::Worker => "worker",
        })
    }
}

/// How log lines are written (`log_format`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object a line.
    Json,
}

impl FromStr for LogFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "text" => Ok(LogFormat::Text),
            "json" => Ok(LogFormat::Json),
            _ => Err(format!("expected \"text\" or \"json\", got {s:?}")),
        }
    }
}

/// Everything botwire can be configured with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on (`host:port`).
    #[serde(deserialize_with = "listen_address")]
    pub listen: String,
    /// The address messaging platforms reach this server at; `None`:
    /// `http://{listen}`.
    #[serde(deserialize_with = "public_url")]
    pub public_url: Option<url::Url>,
    /// `sqlite://FILE` or `postgres://…`.
    #[serde(deserialize_with = "database_url")]
    pub database: String,
    /// Networks outbound calls may reach despite the SSRF guard.
    #[serde(deserialize_with = "allow_list")]
    pub allow_nets: AllowList,
    /// How log lines are written.
    #[serde(deserialize_with = "parsed")]
    pub log_format: LogFormat,
    /// Which work this process does.
    #[serde(deserialize_with = "parsed")]
    pub role: Role,
    /// Pepper for API key hashes; generated and kept in the database if empty.
    pub secret_key: SecretString,
    /// Largest request body accepted, in bytes (at least 1024).
    #[serde(deserialize_with = "body_limit")]
    pub body_limit_bytes: usize,
    /// After a shutdown signal, how long to keep serving with `/readyz`
    /// answering 503 before closing.
    #[serde(deserialize_with = "span_or_zero")]
    pub shutdown_delay: Duration,
    /// Bounds on what one account may create.
    pub limits: LimitsConfig,
    /// How the HTTP server treats connections.
    pub http: HttpConfig,
    /// Outbound delivery settings.
    pub delivery: DeliveryConfig,
    /// How long records are kept.
    pub retention: RetentionConfig,
    /// Broadcast settings.
    pub broadcasts: BroadcastsConfig,
    /// Messaging channel settings.
    pub channels: ChannelsConfig,
}

/// Messaging channel settings (`[channels]`): the most messages per second
/// the outbox sends through one channel of each platform, whatever produced
/// them (replies, handoff answers, broadcasts); 0 sends unthrottled.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ChannelsConfig {
    /// WhatsApp Cloud API, per business phone number.
    #[serde(deserialize_with = "channel_rate")]
    pub rate_whatsapp: u32,
    /// Telegram, per bot.
    #[serde(deserialize_with = "channel_rate")]
    pub rate_telegram: u32,
    /// Twilio, per sender.
    #[serde(deserialize_with = "channel_rate")]
    pub rate_twilio: u32,
    /// Messenger, per Page.
    #[serde(deserialize_with = "channel_rate")]
    pub rate_messenger: u32,
}

impl ChannelsConfig {
    /// No channel throttled.
    pub const UNTHROTTLED: ChannelsConfig = ChannelsConfig {
        rate_whatsapp: 0,
        rate_telegram: 0,
        rate_twilio: 0,
        rate_messenger: 0,
    };

    /// The most messages per second through one channel of `kind` (0:
    /// unthrottled).
    pub fn rate(&self, kind: crate::channels::ChannelKind) -> u32 {
        use crate::channels::ChannelKind;
        match kind {
            ChannelKind::Whatsapp => self.rate_whatsapp,
            ChannelKind::Telegram => self.rate_telegram,
            ChannelKind::Twilio => self.rate_twilio,
            ChannelKind::Messenger => self.rate_messenger,
        }
    }
}

/// The default of `[broadcasts] rate`.
pub const DEFAULT_BROADCAST_RATE: u32 = 20;

/// Broadcast settings (`[broadcasts]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastsConfig {
    /// Messages per second of a broadcast that does not give its own
    /// `rate` (1 to 1,000).
    #[serde(deserialize_with = "broadcast_rate")]
    pub rate: u32,
}

/// How long records are kept (`[retention]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Events (with their finished deliveries) older than this are
    /// deleted; zero keeps them forever.
    #[serde(deserialize_with = "span_or_zero")]
    pub events: Duration,
    /// Delivery attempts older than this are deleted; zero keeps them.
    #[serde(deserialize_with = "span_or_zero")]
    pub attempts: Duration,
    /// Ended conversations last updated longer ago than this are deleted;
    /// zero keeps them.
    #[serde(deserialize_with = "span_or_zero")]
    pub conversations: Duration,
    /// Audit log rows older than this are deleted; zero keeps them.
    #[serde(deserialize_with = "span_or_zero")]
    pub audit: Duration,
}

impl RetentionConfig {
    /// The retention policy these settings describe.
    pub fn policy(&self) -> crate::domain::retention::RetentionPolicy {
        use crate::domain::retention::kept_for;
        crate::domain::retention::RetentionPolicy {
            events: kept_for(self.events),
            attempts: kept_for(self.attempts),
            conversations: kept_for(self.conversations),
            audit: kept_for(self.audit),
        }
    }
}

/// Bounds on what one account may create.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most endpoints one bot may have, of every kind together (at least 1).
    #[serde(deserialize_with = "at_least_one")]
    pub max_endpoints_per_bot: usize,
}

impl Default for LimitsConfig {
    /// The values of the built-in defaults file.
    fn default() -> Self {
        Self {
            max_endpoints_per_bot: 100,
        }
    }
}

/// How the HTTP server treats connections (`[http]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// Longest time a connection may take to send a complete request head
    /// (longer than 0).
    #[serde(deserialize_with = "positive_span")]
    pub header_read_timeout: Duration,
    /// Connections open at once at most (at least 1).
    #[serde(deserialize_with = "at_least_one")]
    pub max_connections: usize,
}

/// Outbound delivery settings (`[delivery]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Per-request timeout.
    #[serde(deserialize_with = "positive_span")]
    pub timeout: Duration,
    /// Delays between attempts.
    #[serde(deserialize_with = "schedule")]
    pub retry_schedule: RetrySchedule,
    /// Disable an endpoint failing without success for this long.
    #[serde(deserialize_with = "span")]
    pub disable_after: Duration,
    /// How long a rotated-out signing secret keeps signing.
    #[serde(deserialize_with = "span")]
    pub secret_grace: Duration,
    /// How long a worker's hold on a delivery lasts before another may
    /// take it.
    #[serde(deserialize_with = "positive_span")]
    pub lease: Duration,
    /// Requests in flight to one endpoint at most (at least 1).
    #[serde(deserialize_with = "at_least_one")]
    pub max_in_flight_per_endpoint: usize,
    /// Requests in flight per process at most (at least 1).
    #[serde(deserialize_with = "at_least_one")]
    pub max_in_flight: usize,
    /// Failed attempts in a row after which an endpoint gets one delivery at
    /// a time until one succeeds; 0 never.
    pub break_after: u32,
    /// Whether names missing from `hosts` are asked of the system resolver.
    pub system_dns: bool,
    /// Fixed addresses for hostnames, consulted before any resolver: name →
    /// one address, or several separated by commas.
    pub hosts: BTreeMap<String, String>,
}

/// Values given on the command line; `None` leaves the lower layers alone.
#[derive(Clone, Debug, Default)]
pub struct Overrides {
    /// `--listen`
    pub listen: Option<String>,
    /// `--public-url`
    pub public_url: Option<String>,
    /// `--database`
    pub database: Option<String>,
    /// `--allow-net` (repeatable)
    pub allow_nets: Vec<String>,
    /// `--log-format`
    pub log_format: Option<String>,
    /// `--role`
    pub role: Option<String>,
    /// `--set KEY=VALUE` (repeatable), for any key; the named flags above
    /// win over it.
    pub set: Vec<String>,
}

/// Why configuration could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file named by `--config` could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        source: std::io::Error,
    },
    /// TOML that does not parse.
    #[error("config {origin}: {message}")]
    Parse {
        /// Which layer.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A key with a value of the wrong type or out of range, or a key that
    /// does not exist.
    #[error("{key}: {message}{}", origin.as_ref().map(|o| format!(" ({o})")).unwrap_or_default())]
    Value {
        /// The dotted key, e.g. `delivery.break_after`.
        key: String,
        /// What is wrong and what was given.
        message: String,
        /// Which layer gave the value (`from BOTWIRE_…`, `from FILE`,
        /// `from --listen`); `None` for the defaults.
        origin: Option<String>,
    },
}

impl Config {
    /// The address messaging platforms reach this server at, without a
    /// trailing `/`: `public_url`, else `http://{listen}`.
    pub fn public_url(&self) -> String {
        match &self.public_url {
            None => format!("http://{}", self.listen),
            Some(url) => url.as_str().trim_end_matches('/').to_owned(),
        }
    }

    /// Builds the configuration from all layers; `env` looks up one
    /// environment variable.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table = layers::parse(DEFAULTS, "defaults")?;
        let keys = layers::keys(&table);
        let mut origins = layers::Origins::default();
        if let Some(path) = file {
            let name = path.display().to_string();
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: name.clone(),
                source,
            })?;
            let layer = layers::parse(&text, &name)?;
            origins.file(&layer, &name);
            layers::merge(&mut table, layer);
        }
        for key in &keys {
            let var = key.env();
            if let Some(raw) = env(&var) {
                let origin = format!("from {var}");
                let value = layers::from_text(key, &raw, &origin)?;
                layers::set(&mut table, &key.path, value);
                origins.set(&key.path, origin);
            }
        }
        for item in &flags.set {
            let origin = format!("from --set {item}");
            let (path, raw) = item.split_once('=').ok_or_else(|| ConfigError::Value {
                key: item.clone(),
                message: "expected KEY=VALUE, e.g. delivery.timeout=30s".into(),
                origin: Some("from --set".into()),
            })?;
            let path = path.trim();
            let key = keys
                .iter()
                .find(|k| k.path == path)
                .ok_or_else(|| ConfigError::Value {
                    key: path.to_owned(),
                    message: "no such key (botwire config lists them)".into(),
                    origin: Some(origin.clone()),
                })?;
            layers::set(&mut table, path, layers::from_text(key, raw, &origin)?);
            origins.set(path, origin);
        }
        let named = [
            ("listen", "--listen", &flags.listen),
            ("public_url", "--public-url", &flags.public_url),
            ("database", "--database", &flags.database),
            ("log_format", "--log-format", &flags.log_format),
            ("role", "--role", &flags.role),
        ];
        for (path, flag, value) in named {
            if let Some(v) = value {
                layers::set(&mut table, path, toml::Value::String(v.clone()));
                origins.set(path, format!("from {flag}"));
            }
        }
        if !flags.allow_nets.is_empty() {
            let list = flags.allow_nets.iter().cloned().map(toml::Value::String);
            layers::set(&mut table, "allow_nets", toml::Value::Array(list.collect()));
            origins.set("allow_nets", "from --allow-net".into());
        }
        let config: Config =
            serde_path_to_error::deserialize(toml::Value::Table(table)).map_err(|e| {
                let key = e.path().to_string();
                let key = if key == "." { "config".into() } else { key };
                let origin = origins
                    .of(&key)
                    .map(str::to_owned)
                    .or_else(|| file.map(|f| format!("from {}", f.display())));
                ConfigError::Value {
                    message: e.inner().to_string().trim().to_owned(),
                    key,
                    origin,
                }
            })?;
        // The one check that needs two keys: fixed addresses, judged with
        // the resolver setting.
        crate::delivery::ssrf::NameTable::parse(&config.delivery.hosts, true).map_err(|e| {
            ConfigError::Value {
                key: "delivery.hosts".into(),
                message: e.to_string(),
                origin: origins.of("delivery.hosts").map(str::to_owned),
            }
        })?;
        Ok(config)
    }
}

/// A span such as `15s`, `30m` or `5d`; the text of an error if not.
pub fn parse_span(text: &str) -> Result<Duration, String> {
    match RetrySchedule::parse(text.trim()) {
        Ok(s) if s.delays().len() == 1 => Ok(s.delays()[0]),
        _ => Err(format!(
            "expected one span such as 15s, 30m or 5d (units ms, s, m, h, d), got {text:?}"
        )),
    }
}

fn text<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    String::deserialize(d)
}

fn custom<E: serde::de::Error>(message: impl fmt::Display) -> E {
    E::custom(message)
}

fn parsed<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: FromStr<Err = String>,
{
    text(d)?.parse().map_err(custom)
}

fn span<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    parse_span(&text(d)?).map_err(custom)
}

fn span_or_zero<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let t = text(d)?;
    match t.trim() {
        "0" | "0s" | "0ms" => Ok(Duration::ZERO),
        other => parse_span(other).map_err(custom),
    }
}

fn positive_span<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let t = text(d)?;
    match parse_span(&t).map_err(custom)? {
        Duration::ZERO => Err(custom(format!(
            "must be longer than 0, e.g. 10s; got {t:?}"
        ))),
        span => Ok(span),
    }
}

fn schedule<'de, D: Deserializer<'de>>(d: D) -> Result<RetrySchedule, D::Error> {
    RetrySchedule::parse(&text(d)?).map_err(custom)
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        0 => Err(custom("must be at least 1, got 0")),
        n => Ok(n),
    }
}

fn broadcast_rate<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        n @ 1..=1000 => Ok(n),
        n => Err(custom(format!(
            "must be 1 to 1000 messages per second, got {n}"
        ))),
    }
}

fn channel_rate<'de, D: Deserializer<'de>>(d: D) -> Result<u32, D::Error> {
    match u32::deserialize(d)? {
        n @ 0..=100_000 => Ok(n),
        n => Err(custom(format!(
            "must be 0 (unthrottled) to 100000 messages per second, got {n}"
        ))),
    }
}

fn body_limit<'de, D: Deserializer<'de>>(d: D) -> Result<usize, D::Error> {
    match usize::deserialize(d)? {
        n if n < 1024 => Err(custom(format!("must be at least 1024, got {n}"))),
        n => Ok(n),
    }
}

fn listen_address<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let t = text(d)?;
    let ok = t
        .rsplit_once(':')
        .is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
    if ok {
        Ok(t)
    } else {
        Err(custom(format!(
            "expected host:port such as 127.0.0.1:8080 or [::]:8080, got {t:?}"
        )))
    }
}

fn public_url<'de, D: Deserializer<'de>>(d: D) -> Result<Option<url::Url>, D::Error> {
    let t = text(d)?;
    if t.is_empty() {
        return Ok(None);
    }
    crate::channels::check_api_base(&t)
        .ok()
        .and_then(|u| url::Url::parse(&u).ok())
        .map(Some)
        .ok_or_else(|| {
            custom(format!(
                "expected an http(s) URL without user name, query or fragment, e.g. https://bots.example.com; got {t:?}"
            ))
        })
}

fn database_url<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let t = text(d)?;
    if ["sqlite:", "postgres://", "postgresql://"]
        .iter()
        .any(|p| t.starts_with(p))
    {
        Ok(t)
    } else {
        Err(custom(format!(
            "expected sqlite://FILE or postgres://USER@HOST:PORT/DB, got {:?}",
            crate::cli::redact_url(&t)
        )))
    }
}

fn allow_list<'de, D: Deserializer<'de>>(d: D) -> Result<AllowList, D::Error> {
    AllowList::parse(Vec::<String>::deserialize(d)?).map_err(custom)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_defaults_load_as_documented() {
        let c = Config::load(None, |_| None, &Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.role, Role::All);
        assert_eq!(c.log_format, LogFormat::Text);
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");
        assert_eq!(c.delivery.timeout, Duration::from_secs(15));
        assert_eq!(c.shutdown_delay, Duration::ZERO);
        assert!(keys().iter().any(|k| k.path == "delivery.hosts"));
    }
}
