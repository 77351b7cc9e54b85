//! Configuration, in layers: commented defaults (built in, printed by
//! `botwire config`) → an optional TOML file (`--config`) → `BOTWIRE_*`
//! environment variables → command-line flags. Later layers win.
//!
//! Secrets (the key-hash pepper) are wrapped so they never reach `Debug`
//! output or logs.

use serde::Deserialize;
use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

/// The defaults, with a comment for every key. `botwire config` prints this.
pub const DEFAULTS: &str = include_str!("config_defaults.toml");

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

/// Everything botwire can be configured with.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address the HTTP API listens on.
    pub listen: String,
    /// The address messaging platforms reach this server at; empty:
    /// `http://{listen}`.
    pub public_url: String,
    /// `sqlite://FILE` or `postgres://…`.
    pub database: String,
    /// CIDRs outbound calls may reach despite the SSRF guard.
    pub allow_nets: Vec<String>,
    /// `text` or `json`.
    pub log_format: String,
    /// `all`, `api` or `worker`.
    pub role: String,
    /// Pepper for API key hashes; generated and kept in the database if empty.
    pub secret_key: SecretString,
    /// Largest request body accepted, in bytes.
    pub body_limit_bytes: usize,
    /// After a shutdown signal, how long to keep serving with `/readyz`
    /// answering 503 before closing, e.g. `5s`.
    pub shutdown_delay: String,
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
}

/// The default of `[broadcasts] rate`.
pub const DEFAULT_BROADCAST_RATE: u32 = 20;

/// Broadcast settings (`[broadcasts]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BroadcastsConfig {
    /// Messages per second of a broadcast that does not give its own
    /// `rate` (1 to 1,000).
    pub rate: u32,
}

impl BroadcastsConfig {
    /// `rate`, checked.
    pub fn rate(&self) -> Result<u32, ConfigError> {
        if (1..=1000).contains(&self.rate) {
            Ok(self.rate)
        } else {
            Err(ConfigError::Invalid(format!(
                "broadcasts.rate must be 1 to 1000 messages per second, got {}",
                self.rate
            )))
        }
    }
}

/// How long records are kept (`[retention]`).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Audit log rows older than this are deleted, e.g. `365d`.
    pub audit: String,
}

impl RetentionConfig {
    /// `audit` as a duration.
    pub fn audit(&self) -> Result<std::time::Duration, ConfigError> {
        crate::delivery::attempt::parse_span("retention.audit", self.audit.trim())
            .map_err(ConfigError::Invalid)
    }
}

/// Bounds on what one account may create.
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Most endpoints one bot may have, of every kind together.
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
    /// Longest time a connection may take to send a complete request head,
    /// e.g. `10s`.
    pub header_read_timeout: String,
    /// Connections open at once at most.
    pub max_connections: usize,
}

/// Outbound delivery settings.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveryConfig {
    /// Per-request timeout, e.g. `15s`.
    pub timeout: String,
    /// Delays between attempts, e.g. `5s,5m,30m`.
    pub retry_schedule: String,
    /// Disable an endpoint failing without success for this long, e.g. `5d`.
    pub disable_after: String,
    /// How long a rotated-out signing secret keeps signing, e.g. `24h`.
    pub secret_grace: String,
    /// How long a worker's hold on a delivery lasts before another may
    /// take it, e.g. `2m`.
    pub lease: String,
    /// Requests in flight to one endpoint at most.
    pub max_in_flight_per_endpoint: usize,
    /// Requests in flight per process at most.
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
    /// TOML that does not parse or names unknown keys.
    #[error("config {origin}: {message}")]
    Parse {
        /// Which layer.
        origin: String,
        /// What is wrong.
        message: String,
    },
    /// A value out of range.
    #[error("config: {0}")]
    Invalid(String),
}

impl Config {
    /// The address messaging platforms reach this server at, without a
    /// trailing `/`: `public_url`, else `http://{listen}`.
    pub fn public_url(&self) -> String {
        if self.public_url.is_empty() {
            format!("http://{}", self.listen)
        } else {
            self.public_url.trim_end_matches('/').to_owned()
        }
    }

    /// Builds the configuration from all layers.
    pub fn load(
        file: Option<&Path>,
        env: impl Fn(&str) -> Option<String>,
        flags: &Overrides,
    ) -> Result<Self, ConfigError> {
        let mut table: toml::Table = parse(DEFAULTS, "defaults")?;
        if let Some(path) = file {
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                path: path.display().to_string(),
                source,
            })?;
            let layer = parse(&text, &path.display().to_string())?;
            merge(&mut table, layer);
        }
        let mut config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|e: toml::de::Error| ConfigError::Parse {
                    origin: file.map_or("defaults".into(), |p| p.display().to_string()),
                    message: e.to_string(),
                })?;
        config.apply_env(env)?;
        config.apply_flags(flags);
        config.check()?;
        Ok(config)
    }

    fn apply_env(&mut self, env: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let set = |target: &mut String, name: &str| {
            if let Some(v) = env(name) {
                *target = v;
            }
        };
        set(&mut self.listen, "BOTWIRE_LISTEN");
        set(&mut self.public_url, "BOTWIRE_PUBLIC_URL");
        set(&mut self.database, "BOTWIRE_DATABASE");
        set(&mut self.log_format, "BOTWIRE_LOG_FORMAT");
        set(&mut self.role, "BOTWIRE_ROLE");
        set(&mut self.delivery.timeout, "BOTWIRE_DELIVERY_TIMEOUT");
        set(
            &mut self.delivery.retry_schedule,
            "BOTWIRE_DELIVERY_RETRY_SCHEDULE",
        );
        set(
            &mut self.delivery.disable_after,
            "BOTWIRE_DELIVERY_DISABLE_AFTER",
        );
        set(
            &mut self.delivery.secret_grace,
            "BOTWIRE_DELIVERY_SECRET_GRACE",
        );
        set(&mut self.delivery.lease, "BOTWIRE_DELIVERY_LEASE");
        set(&mut self.shutdown_delay, "BOTWIRE_SHUTDOWN_DELAY");
        set(&mut self.retention.audit, "BOTWIRE_RETENTION_AUDIT");
        if let Some(v) = env("BOTWIRE_SECRET_KEY") {
            self.secret_key = SecretString(v);
        }
        if let Some(v) = env("BOTWIRE_ALLOW_NETS") {
            self.allow_nets = v
                .split([',', ' '])
                .filter(|s| !s.is_empty())
                .map(str::to_owned)
                .collect();
        }
        if let Some(v) = env("BOTWIRE_LIMITS_MAX_ENDPOINTS_PER_BOT") {
            self.limits.max_endpoints_per_bot = v.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "BOTWIRE_LIMITS_MAX_ENDPOINTS_PER_BOT must be a number, got {v:?}"
                ))
            })?;
        }
        if let Some(v) = env("BOTWIRE_BROADCASTS_RATE") {
            self.broadcasts.rate = v.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "BOTWIRE_BROADCASTS_RATE must be a number, got {v:?}"
                ))
            })?;
        }
        if let Some(v) = env("BOTWIRE_BODY_LIMIT_BYTES") {
            self.body_limit_bytes = v.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "BOTWIRE_BODY_LIMIT_BYTES must be a number, got {v:?}"
                ))
            })?;
        }
        set(
            &mut self.http.header_read_timeout,
            "BOTWIRE_HTTP_HEADER_READ_TIMEOUT",
        );
        if let Some(v) = env("BOTWIRE_HTTP_MAX_CONNECTIONS") {
            self.http.max_connections = v.parse().map_err(|_| {
                ConfigError::Invalid(format!(
                    "BOTWIRE_HTTP_MAX_CONNECTIONS must be a number, got {v:?}"
                ))
            })?;
        }
        if let Some(v) = env("BOTWIRE_DELIVERY_SYSTEM_DNS") {
            self.delivery.system_dns = match v.trim().to_ascii_lowercase().as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => {
                    return Err(ConfigError::Invalid(format!(
                        "BOTWIRE_DELIVERY_SYSTEM_DNS must be true or false, got {v:?}"
                    )));
                }
            };
        }
        if let Some(v) = env("BOTWIRE_DELIVERY_HOSTS") {
            let mut hosts: BTreeMap<String, String> = BTreeMap::new();
            for entry in v.split([',', ' ']).filter(|s| !s.is_empty()) {
                let (name, addr) = entry.split_once('=').ok_or_else(|| {
                    ConfigError::Invalid(format!(
                        "BOTWIRE_DELIVERY_HOSTS: {entry:?} is not name=address \
                         (e.g. hooks.example.com=10.0.0.5)"
                    ))
                })?;
                let addrs = hosts.entry(name.to_owned()).or_default();
                if !addrs.is_empty() {
                    addrs.push(',');
                }
                addrs.push_str(addr);
            }
            self.delivery.hosts = hosts;
        }
        Ok(())
    }

    fn apply_flags(&mut self, flags: &Overrides) {
        if let Some(v) = &flags.listen {
            self.listen = v.clone();
        }
        if let Some(v) = &flags.public_url {
            self.public_url = v.clone();
        }
        if let Some(v) = &flags.database {
            self.database = v.clone();
        }
        if let Some(v) = &flags.log_format {
            self.log_format = v.clone();
        }
        if let Some(v) = &flags.role {
            self.role = v.clone();
        }
        if !flags.allow_nets.is_empty() {
            self.allow_nets = flags.allow_nets.clone();
        }
    }

    fn check(&self) -> Result<(), ConfigError> {
        if !matches!(self.log_format.as_str(), "text" | "json") {
            return Err(ConfigError::Invalid(format!(
                "log_format must be \"text\" or \"json\", got {:?}",
                self.log_format
            )));
        }
        if !matches!(self.role.as_str(), "all" | "api" | "worker") {
            return Err(ConfigError::Invalid(format!(
                "role must be \"all\", \"api\" or \"worker\", got {:?}",
                self.role
            )));
        }
        if !self.public_url.is_empty() {
            crate::channels::check_api_base(&self.public_url).map_err(|_| {
                ConfigError::Invalid(format!(
                    "public_url must be an http(s) URL without user name, query or fragment, e.g. https://bots.example.com; got {:?}",
                    self.public_url
                ))
            })?;
        }
        for net in &self.allow_nets {
            parse_net(net).map_err(ConfigError::Invalid)?;
        }
        crate::delivery::Settings::from_config(self).map_err(ConfigError::Invalid)?;
        if self.limits.max_endpoints_per_bot == 0 {
            return Err(ConfigError::Invalid(
                "limits.max_endpoints_per_bot must be at least 1".into(),
            ));
        }
        crate::api::ServerOptions::from_config(self).map_err(ConfigError::Invalid)?;
        if self.body_limit_bytes < 1024 {
            return Err(ConfigError::Invalid(
                "body_limit_bytes must be at least 1024".into(),
            ));
        }
        self.shutdown_delay()?;
        self.retention.audit()?;
        Ok(())
    }

    /// `shutdown_delay` as a duration (`0s` or one span such as `5s`).
    pub fn shutdown_delay(&self) -> Result<std::time::Duration, ConfigError> {
        match self.shutdown_delay.trim() {
            "0" | "0s" | "0ms" => Ok(std::time::Duration::ZERO),
            text => crate::delivery::attempt::parse_span("shutdown_delay", text)
                .map_err(ConfigError::Invalid),
        }
    }
}

/// Parses `10.0.0.0/8`, `::1/128` or a bare address into (address, prefix).
pub fn parse_net(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let (addr, len) = match s.split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("allow_nets entry {s:?} is not an IP address or CIDR"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let len = match len {
        None => max,
        Some(l) => l
            .parse::<u8>()
            .ok()
            .filter(|l| *l <= max)
            .ok_or_else(|| format!("allow_nets entry {s:?} has a bad prefix length"))?,
    };
    Ok((ip, len))
}

fn parse(text: &str, origin: &str) -> Result<toml::Table, ConfigError> {
    text.parse::<toml::Table>().map_err(|e| ConfigError::Parse {
        origin: origin.to_owned(),
        message: e.to_string(),
    })
}

fn merge(base: &mut toml::Table, layer: toml::Table) {
    for (key, value) in layer {
        match (base.get_mut(&key), value) {
            (Some(toml::Value::Table(b)), toml::Value::Table(l)) => merge(b, l),
            (_, v) => {
                base.insert(key, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn defaults_parse_and_layers_override_in_order() {
        let c = Config::load(None, no_env, &Overrides::default()).unwrap();
        assert_eq!(c.listen, "127.0.0.1:8080");
        assert_eq!(c.database, "sqlite://botwire.db");
        assert_eq!(c.public_url(), "http://127.0.0.1:8080");

        let dir = std::env::temp_dir().join(format!("bw-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "listen = \"0.0.0.0:1\"\ndatabase = \"sqlite://file.db\"\n[delivery]\ntimeout = \"3s\"\n",
        )
        .unwrap();
        let env = |k: &str| (k == "BOTWIRE_DATABASE").then(|| "sqlite://env.db".to_owned());
        let flags = Overrides {
            listen: Some("127.0.0.1:9".into()),
            public_url: Some("https://bots.example.com/".into()),
            ..Default::default()
        };
        let c = Config::load(Some(&file), env, &flags).unwrap();
        assert_eq!(c.listen, "127.0.0.1:9", "flag beats file");
        assert_eq!(c.database, "sqlite://env.db", "env beats file");
        assert_eq!(c.delivery.timeout, "3s", "file beats defaults");
        assert_eq!(c.public_url(), "https://bots.example.com");
        let env = |k: &str| (k == "BOTWIRE_PUBLIC_URL").then(|| "ftp://x".to_owned());
        let err = Config::load(None, env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("public_url"), "{err}");
        assert_eq!(c.delivery.retry_schedule, "5s,5m,30m,2h,5h,10h,14h,20h,24h");
    }

    #[test]
    fn the_endpoint_cap_defaults_to_100_and_layers() {
        let c = Config::load(None, no_env, &Overrides::default()).unwrap();
        assert_eq!(c.limits, LimitsConfig::default());
        assert_eq!(c.limits.max_endpoints_per_bot, 100);
        let env = |k: &str| (k == "BOTWIRE_LIMITS_MAX_ENDPOINTS_PER_BOT").then(|| "7".to_owned());
        let c = Config::load(None, env, &Overrides::default()).unwrap();
        assert_eq!(c.limits.max_endpoints_per_bot, 7);
        for bad in ["0", "many"] {
            let env =
                |k: &str| (k == "BOTWIRE_LIMITS_MAX_ENDPOINTS_PER_BOT").then(|| bad.to_owned());
            let err = Config::load(None, env, &Overrides::default()).unwrap_err();
            assert!(
                err.to_string()
                    .to_lowercase()
                    .contains("max_endpoints_per_bot"),
                "{err}"
            );
        }
    }

    #[test]
    fn bad_values_are_explained_and_secrets_hidden() {
        let dir = std::env::temp_dir().join(format!("bw-config2-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "listne = \"x\"\n").unwrap();
        let err = Config::load(Some(&file), no_env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("listne"), "{err}");

        let env = |k: &str| (k == "BOTWIRE_ALLOW_NETS").then(|| "10.0.0.0/33".to_owned());
        let err = Config::load(None, env, &Overrides::default()).unwrap_err();
        assert!(err.to_string().contains("10.0.0.0/33"), "{err}");

        let env = |k: &str| (k == "BOTWIRE_SECRET_KEY").then(|| "hunter2".to_owned());
        let c = Config::load(None, env, &Overrides::default()).unwrap();
        assert_eq!(c.secret_key.expose(), "hunter2");
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn http_settings_come_from_every_layer() {
        let c = Config::load(None, no_env, &Overrides::default()).unwrap();
        assert_eq!(c.http.header_read_timeout, "10s");
        assert_eq!(c.http.max_connections, 10_000);

        let env = |k: &str| match k {
            "BOTWIRE_HTTP_HEADER_READ_TIMEOUT" => Some("500ms".to_owned()),
            "BOTWIRE_HTTP_MAX_CONNECTIONS" => Some("50".to_owned()),
            _ => None,
        };
        let c = Config::load(None, env, &Overrides::default()).unwrap();
        let server = crate::api::ServerOptions::from_config(&c).unwrap();
        assert_eq!(
            server.header_read_timeout,
            std::time::Duration::from_millis(500)
        );
        assert_eq!(server.max_connections, 50);

        let dir = std::env::temp_dir().join(format!("bw-config3-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(&file, "[http]\nmax_connections = 7\n").unwrap();
        let c = Config::load(Some(&file), no_env, &Overrides::default()).unwrap();
        assert_eq!(c.http.max_connections, 7);
        assert_eq!(c.http.header_read_timeout, "10s", "the rest stays default");

        for (name, value, says) in [
            ("BOTWIRE_HTTP_MAX_CONNECTIONS", "many", "must be a number"),
            ("BOTWIRE_HTTP_MAX_CONNECTIONS", "0", "at least 1"),
            (
                "BOTWIRE_HTTP_HEADER_READ_TIMEOUT",
                "soon",
                "http.header_read_timeout",
            ),
            ("BOTWIRE_HTTP_HEADER_READ_TIMEOUT", "0s", "longer than 0"),
        ] {
            let env = |k: &str| (k == name).then(|| value.to_owned());
            let err = Config::load(None, env, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(says), "{name}={value}: {err}");
        }
    }

    #[test]
    fn name_settings_come_from_every_layer() {
        let c = Config::load(None, no_env, &Overrides::default()).unwrap();
        assert!(
            c.delivery.system_dns,
            "the system resolver is on by default"
        );
        assert!(c.delivery.hosts.is_empty());

        let env = |k: &str| match k {
            "BOTWIRE_DELIVERY_SYSTEM_DNS" => Some("false".to_owned()),
            "BOTWIRE_DELIVERY_HOSTS" => Some(
                "hooks.example.com=10.0.0.5, hooks.example.com=fd00::5,a.test=127.0.0.1".into(),
            ),
            _ => None,
        };
        let c = Config::load(None, env, &Overrides::default()).unwrap();
        assert!(!c.delivery.system_dns);
        assert_eq!(c.delivery.hosts["hooks.example.com"], "10.0.0.5,fd00::5");
        let settings = crate::delivery::Settings::from_config(&c).unwrap();
        assert!(!settings.names.uses_system_resolver());
        assert_eq!(settings.names.fixed("a.test").unwrap().len(), 1);

        let dir = std::env::temp_dir().join(format!("bw-config4-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("c.toml");
        std::fs::write(
            &file,
            "[delivery]\nsystem_dns = false\n[delivery.hosts]\n\"h.test\" = \"127.0.0.2\"\n",
        )
        .unwrap();
        let c = Config::load(Some(&file), no_env, &Overrides::default()).unwrap();
        assert_eq!(c.delivery.hosts["h.test"], "127.0.0.2");
        assert!(!c.delivery.system_dns);
        assert_eq!(c.delivery.timeout, "15s", "the rest stays default");

        for (name, value, says) in [
            ("BOTWIRE_DELIVERY_SYSTEM_DNS", "maybe", "true or false"),
            (
                "BOTWIRE_DELIVERY_HOSTS",
                "hooks.example.com",
                "name=address",
            ),
            (
                "BOTWIRE_DELIVERY_HOSTS",
                "h.test=10.0.0.300",
                "not an IP address",
            ),
            ("BOTWIRE_DELIVERY_HOSTS", "a..b=10.0.0.1", "not a hostname"),
        ] {
            let env = |k: &str| (k == name).then(|| value.to_owned());
            let err = Config::load(None, env, &Overrides::default()).unwrap_err();
            assert!(err.to_string().contains(says), "{name}={value}: {err}");
        }
    }
}
