//! What a client needs to reach a cluster: bootstrap brokers, security, timeouts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::error::{ClientError, Result};

/// Kafka's `security.protocol`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SecurityProtocol {
    #[default]
    Plaintext,
    Ssl,
    SaslPlaintext,
    SaslSsl,
}

impl SecurityProtocol {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Ok(Self::Plaintext),
            "SSL" => Ok(Self::Ssl),
            "SASL_PLAINTEXT" => Ok(Self::SaslPlaintext),
            "SASL_SSL" => Ok(Self::SaslSsl),
            _ => Err(ClientError::Config(format!(
                "security protocol {s:?} is none of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL"
            ))),
        }
    }

    pub fn uses_tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn uses_sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

/// A SASL mechanism this client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mechanism {
    Plain,
    ScramSha256,
    ScramSha512,
}

impl Mechanism {
    pub fn parse(s: &str) -> Result<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAIN" => Ok(Self::Plain),
            "SCRAM-SHA-256" => Ok(Self::ScramSha256),
            "SCRAM-SHA-512" => Ok(Self::ScramSha512),
            _ => Err(ClientError::Config(format!(
                "SASL mechanism {s:?} is none of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512"
            ))),
        }
    }

    /// The name Kafka's SaslHandshake uses.
    pub fn name(self) -> &'static str {
        match self {
            Self::Plain => "PLAIN",
            Self::ScramSha256 => "SCRAM-SHA-256",
            Self::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// A password or key: kept out of `Debug` output, logs and errors.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(s: impl Into<String>) -> Self {
        Self(s.into())
    }
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

#[derive(Debug, Clone)]
pub struct SaslConfig {
    pub mechanism: Mechanism,
    pub username: String,
    pub password: Secret,
}

/// TLS settings; with none of the files set, the system's web PKI roots are
/// trusted and no client certificate is sent.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    /// PEM file of the CA certificates to trust instead of the web PKI roots.
    pub ca_file: Option<PathBuf>,
    /// PEM certificate chain for mutual TLS (with `key_file`).
    pub cert_file: Option<PathBuf>,
    /// PEM private key for mutual TLS.
    pub key_file: Option<PathBuf>,
}

#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// `host:port` of one or more brokers.
    pub bootstrap: Vec<String>,
    pub client_id: String,
    pub security: SecurityProtocol,
    pub tls: TlsConfig,
    pub sasl: Option<SaslConfig>,
    /// How long one request may wait for its answer (beyond a fetch's own wait).
    pub request_timeout: Duration,
    /// How long opening a connection (TCP, TLS, SASL) may take.
    pub connect_timeout: Duration,
    /// First and largest pause between retries; each retry doubles, with jitter.
    pub retry_backoff: Duration,
    pub retry_backoff_max: Duration,
    /// How many times a call is retried after a retriable error.
    pub retries: u32,
    /// Largest response frame accepted.
    pub max_response_bytes: usize,
}

impl ClientConfig {
    pub fn new(bootstrap: impl AsRef<str>) -> Self {
        Self {
            bootstrap: bootstrap
                .as_ref()
                .split(',')
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .collect(),
            client_id: "kafscale".to_owned(),
            security: SecurityProtocol::Plaintext,
            tls: TlsConfig::default(),
            sasl: None,
            request_timeout: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            retry_backoff: Duration::from_millis(100),
            retry_backoff_max: Duration::from_secs(1),
            retries: 10,
            max_response_bytes: 256 * 1024 * 1024,
        }
    }

    pub fn with_sasl(mut self, mechanism: Mechanism, username: &str, password: Secret) -> Self {
        self.sasl = Some(SaslConfig {
            mechanism,
            username: username.to_owned(),
            password,
        });
        self.security = if self.security.uses_tls() {
            SecurityProtocol::SaslSsl
        } else {
            SecurityProtocol::SaslPlaintext
        };
        self
    }

    pub fn with_tls(mut self, tls: TlsConfig) -> Self {
        self.tls = tls;
        self.security = if self.security.uses_sasl() {
            SecurityProtocol::SaslSsl
        } else {
            SecurityProtocol::Ssl
        };
        self
    }

    pub fn with_client_id(mut self, id: &str) -> Self {
        self.client_id = id.to_owned();
        self
    }

    /// Checks the combination of settings; called when a client is built.
    pub fn validate(&self) -> Result<()> {
        if self.bootstrap.is_empty() {
            return Err(ClientError::Config("no bootstrap broker given".into()));
        }
        for b in &self.bootstrap {
            if split_host_port(b).is_none() {
                return Err(ClientError::Config(format!(
                    "bootstrap broker {b:?} is not HOST:PORT"
                )));
            }
        }
        if self.security.uses_sasl() != self.sasl.is_some() {
            return Err(ClientError::Config(if self.sasl.is_some() {
                format!(
                    "SASL credentials given but the security protocol is {:?}",
                    self.security
                )
            } else {
                format!(
                    "security protocol {:?} needs a SASL mechanism, user name and password",
                    self.security
                )
            }));
        }
        if self.tls.cert_file.is_some() != self.tls.key_file.is_some() {
            return Err(ClientError::Config(
                "a TLS client certificate needs both the certificate and the key file".into(),
            ));
        }
        Ok(())
    }
}

/// `host:port` into its parts (`[v6]:port` too).
pub(crate) fn split_host_port(s: &str) -> Option<(&str, u16)> {
    let (host, port) = s.rsplit_once(':')?;
    let port = port.parse().ok()?;
    let host = host
        .strip_prefix('[')
        .and_then(|h| h.strip_suffix(']'))
        .unwrap_or(host);
    (!host.is_empty()).then_some((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_do_not_print() {
        let c = ClientConfig::new("a:1").with_sasl(
            Mechanism::ScramSha512,
            "alice",
            Secret::new("hunter2"),
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("alice"));
    }

    #[test]
    fn validation_names_what_is_wrong() {
        let mut c = ClientConfig::new("localhost");
        assert!(c.validate().unwrap_err().to_string().contains("HOST:PORT"));
        c = ClientConfig::new("localhost:9092");
        c.security = SecurityProtocol::SaslSsl;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("needs a SASL")
        );
        assert_eq!(split_host_port("[::1]:9092"), Some(("::1", 9092)));
    }
}
