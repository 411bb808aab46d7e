//! Settings from the environment (`PAYLINK_…`) or the matching flags, validated once.

use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// No configuration can make a link live longer than this.
pub const MAX_TTL_SECONDS: u64 = 1200;

/// Outcome records are kept at most a year.
pub const MAX_RETENTION_SECONDS: u64 = 365 * 24 * 3600;

#[derive(Debug, Clone, Parser)]
#[command(name = "paylink", version, about = "One-time payment links")]
pub struct Cli {
    #[command(flatten)]
    pub settings: Settings,
    #[command(subcommand)]
    pub command: Option<Command>,
}

#[derive(Debug, Clone, Subcommand)]
pub enum Command {
    /// Serve (the default when no command is given).
    Serve,
    /// Manage the merchants file.
    #[command(subcommand)]
    Merchant(MerchantCommand),
}

#[derive(Debug, Clone, Subcommand)]
pub enum MerchantCommand {
    /// Generate an API key, append the merchant (with only the key's SHA-256) to the
    /// merchants file, and print the key once on stdout.
    Add {
        /// 1-64 characters of a-z 0-9 _ -
        id: String,
        /// The display name payers see.
        #[arg(long)]
        name: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Pretty,
    Json,
}

#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Listen address.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_ADDR",
        default_value = "127.0.0.1:3000"
    )]
    pub addr: SocketAddr,
    /// Base of the `url` returned to merchants.
    #[arg(
        long,
        env = "PAYLINK_PUBLIC_URL",
        default_value = "http://localhost:3000"
    )]
    pub public_url: String,
    /// redis://host:port standalone, redis+cluster://h1:p1,h2:p2 cluster; unset = embedded store.
    #[arg(long, global = true, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    /// Merchants file (TOML).
    #[arg(
        long,
        global = true,
        env = "PAYLINK_MERCHANTS",
        default_value = "merchants.toml"
    )]
    pub merchants: PathBuf,
    /// Default link TTL in seconds (at most 1200).
    #[arg(
        long,
        global = true,
        env = "PAYLINK_SESSION_TTL_SECONDS",
        default_value_t = 900
    )]
    pub session_ttl_seconds: u64,
    /// Smallest ttlSeconds a merchant may ask for.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_MIN_TTL_SECONDS",
        default_value_t = 60
    )]
    pub min_ttl_seconds: u64,
    /// How long outcome records of ended sessions are kept.
    #[arg(
        long,
        env = "PAYLINK_RECORD_RETENTION_SECONDS",
        default_value_t = 86400
    )]
    pub record_retention_seconds: u64,
    /// Bearer token for /admin; unset = admin off.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_ADMIN_TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,
    /// Log format.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_LOG_FORMAT",
        value_enum,
        default_value = "pretty"
    )]
    pub log_format: LogFormat,
    /// Requests to /pay/* per client IP per minute; 0 = off.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_PAY_RATE_LIMIT_PER_MINUTE",
        default_value_t = 120
    )]
    pub pay_rate_limit_per_minute: u64,
    /// Declined payments on one link that pause its payments (card-testing defence); 0 = off.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_PAY_MAX_DECLINES",
        default_value_t = 5
    )]
    pub pay_max_declines: u32,
    /// How long a link's payments stay paused after too many declines.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_PAY_LOCKOUT_SECONDS",
        default_value_t = 900
    )]
    pub pay_lockout_seconds: u64,
    /// Proxies (IP addresses, comma-separated) whose X-Forwarded-For is believed for the
    /// client address; unset = the socket's peer address is the client.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<std::net::IpAddr>,
    /// API requests per merchant per minute; 0 = off.
    #[arg(
        long,
        env = "PAYLINK_API_RATE_LIMIT_PER_MINUTE",
        default_value_t = 6000
    )]
    pub api_rate_limit_per_minute: u64,
    /// Redis replicas that must acknowledge every session change (WAIT) before paylink
    /// answers; 1 or more makes a failover lose nothing. 0 = do not wait.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_REDIS_WAIT_REPLICAS",
        default_value_t = 0
    )]
    pub redis_wait_replicas: u32,
    /// What `validate` had to bring into range, for the log.
    #[arg(skip)]
    pub adjustments: Vec<String>,
    /// Longest wait for the store before answering 503.
    #[arg(
        long,
        global = true,
        env = "PAYLINK_STORE_TIMEOUT_MS",
        default_value_t = 2000
    )]
    pub store_timeout_ms: u64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("PAYLINK_PUBLIC_URL must start with http:// or https://")]
    PublicUrl,
    #[error("REDIS_URL must start with redis://, rediss:// or redis+cluster://")]
    RedisUrl,
}

impl Settings {
    /// Checks what clap cannot: ranges that depend on each other, URL shapes.
    ///
    /// TTLs and the store timeout out of range are brought into range rather than refused
    /// (no configuration can raise a link's life above 1200 s); each adjustment is kept in
    /// `adjustments` for the log.
    pub fn validate(mut self) -> Result<Self, ConfigError> {
        let min_ttl = self.min_ttl_seconds.clamp(1, MAX_TTL_SECONDS);
        if min_ttl != self.min_ttl_seconds {
            self.adjustments.push(format!(
                "PAYLINK_MIN_TTL_SECONDS={} is outside 1..=1200; using {min_ttl}",
                self.min_ttl_seconds
            ));
            self.min_ttl_seconds = min_ttl;
        }
        let ttl = self.session_ttl_seconds.clamp(min_ttl, MAX_TTL_SECONDS);
        if ttl != self.session_ttl_seconds {
            self.adjustments.push(format!(
                "PAYLINK_SESSION_TTL_SECONDS={} is outside {min_ttl}..=1200; using {ttl}",
                self.session_ttl_seconds
            ));
            self.session_ttl_seconds = ttl;
        }
        let retention = self
            .record_retention_seconds
            .clamp(1, MAX_RETENTION_SECONDS);
        if retention != self.record_retention_seconds {
            self.adjustments.push(format!(
                "PAYLINK_RECORD_RETENTION_SECONDS={} is outside 1..={MAX_RETENTION_SECONDS}; using {retention}",
                self.record_retention_seconds
            ));
            self.record_retention_seconds = retention;
        }
        let timeout = self.store_timeout_ms.clamp(1, 60_000);
        if timeout != self.store_timeout_ms {
            self.adjustments.push(format!(
                "PAYLINK_STORE_TIMEOUT_MS={} is outside 1..=60000; using {timeout}",
                self.store_timeout_ms
            ));
            self.store_timeout_ms = timeout;
        }
        if !(self.public_url.starts_with("http://") || self.public_url.starts_with("https://")) {
            return Err(ConfigError::PublicUrl);
        }
        self.public_url = self.public_url.trim_end_matches('/').to_owned();
        if let Some(url) = &self.redis_url {
            if url.trim().is_empty() {
                self.redis_url = None;
            } else if !["redis://", "rediss://", "redis+cluster://"]
                .iter()
                .any(|p| url.starts_with(p))
            {
                return Err(ConfigError::RedisUrl);
            }
        }
        if let Some(token) = &self.admin_token {
            if token.is_empty() {
                self.admin_token = None;
            } else if token.len() < 16 {
                self.adjustments.push(
                    "PAYLINK_ADMIN_TOKEN is shorter than 16 characters: easy to guess; use a long random one"
                        .to_owned(),
                );
            }
        }
        Ok(self)
    }

    pub fn store_timeout(&self) -> Duration {
        Duration::from_millis(self.store_timeout_ms)
    }

    pub fn retention(&self) -> Duration {
        Duration::from_secs(self.record_retention_seconds)
    }

    /// Settings for tests and embedding: every default, listening on a free loopback port.
    pub fn for_tests() -> Self {
        let cli = Cli::parse_from(["paylink", "--addr", "127.0.0.1:0"]);
        cli.settings
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(args: &[&str]) -> Result<Settings, ConfigError> {
        let mut argv = vec!["paylink"];
        argv.extend_from_slice(args);
        Cli::try_parse_from(argv).unwrap().settings.validate()
    }

    #[test]
    fn no_configuration_raises_the_ttl_above_1200() {
        let s = with(&["--session-ttl-seconds", "3600"]).unwrap();
        assert_eq!(s.session_ttl_seconds, 1200);
        assert_eq!(s.adjustments.len(), 1, "{:?}", s.adjustments);
        let s = with(&["--min-ttl-seconds", "1300", "--session-ttl-seconds", "900"]).unwrap();
        assert_eq!((s.min_ttl_seconds, s.session_ttl_seconds), (1200, 1200));
        let s = with(&["--session-ttl-seconds", "1200"]).unwrap();
        assert_eq!(s.session_ttl_seconds, 1200);
        assert!(s.adjustments.is_empty());
        let s = with(&["--min-ttl-seconds", "1", "--session-ttl-seconds", "0"]).unwrap();
        assert_eq!(s.session_ttl_seconds, 1);
    }

    #[test]
    fn urls_are_checked_and_trailing_slashes_dropped() {
        assert_eq!(
            with(&["--public-url", "ftp://x"]).unwrap_err(),
            ConfigError::PublicUrl
        );
        assert_eq!(
            with(&["--redis-url", "http://x"]).unwrap_err(),
            ConfigError::RedisUrl
        );
        let s = with(&["--public-url", "https://pay.example/"]).unwrap();
        assert_eq!(s.public_url, "https://pay.example");
    }
}
