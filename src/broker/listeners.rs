//! Kafka listeners in Kafka's own notation, and the TLS and SASL settings
//! they use.
//!
//! ```text
//! --listeners PLAINTEXT://0.0.0.0:9092,SASL_SSL://0.0.0.0:9094
//! --advertised-listeners PLAINTEXT://kafka1:9092,SASL_SSL://kafka1.example.com:9094
//! ```
//!
//! A listener's name is its security protocol (Kafka's default
//! `listener.security.protocol.map`), so there is at most one of each. A
//! client is told, in Metadata and FindCoordinator, the brokers' endpoints of
//! the listener it came in on.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::{Context, bail};
use futures_rustls::rustls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use serde::{Deserialize, Serialize};

use crate::meta::ListenerEndpoint;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    #[serde(rename = "PLAINTEXT")]
    Plaintext,
    #[serde(rename = "SSL")]
    Ssl,
    #[serde(rename = "SASL_PLAINTEXT")]
    SaslPlaintext,
    #[serde(rename = "SASL_SSL")]
    SaslSsl,
}

impl Protocol {
    pub fn parse(s: &str) -> Option<Self> {
        match s.to_ascii_uppercase().as_str() {
            "PLAINTEXT" => Some(Self::Plaintext),
            "SSL" => Some(Self::Ssl),
            "SASL_PLAINTEXT" => Some(Self::SaslPlaintext),
            "SASL_SSL" => Some(Self::SaslSsl),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::Plaintext => "PLAINTEXT",
            Self::Ssl => "SSL",
            Self::SaslPlaintext => "SASL_PLAINTEXT",
            Self::SaslSsl => "SASL_SSL",
        }
    }

    pub fn tls(self) -> bool {
        matches!(self, Self::Ssl | Self::SaslSsl)
    }

    pub fn sasl(self) -> bool {
        matches!(self, Self::SaslPlaintext | Self::SaslSsl)
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Where a listener binds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listener {
    pub protocol: Protocol,
    pub addr: SocketAddr,
}

/// Splits `PROTOCOL://HOST:PORT`; an empty host is `None`.
fn split(spec: &str, flag: &str) -> anyhow::Result<(Protocol, Option<String>, u16)> {
    let (proto, rest) = spec.split_once("://").with_context(|| {
        format!("{flag}: {spec:?} is not PROTOCOL://HOST:PORT (example: SASL_SSL://0.0.0.0:9094)")
    })?;
    let protocol = Protocol::parse(proto).with_context(|| {
        format!("{flag}: {proto:?} is none of PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL")
    })?;
    let (host, port) = rest
        .rsplit_once(':')
        .with_context(|| format!("{flag}: {spec:?} has no port"))?;
    let port: u16 = port
        .parse()
        .ok()
        .with_context(|| format!("{flag}: {port:?} in {spec:?} is not a port"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Ok((protocol, (!host.is_empty()).then(|| host.to_owned()), port))
}

/// Parses `--listeners`: each protocol at most once, each port once.
pub fn parse_listeners(specs: &[String]) -> anyhow::Result<Vec<Listener>> {
    let mut out: Vec<Listener> = Vec::new();
    for spec in specs {
        let (protocol, host, port) = split(spec.trim(), "--listeners")?;
        let ip: std::net::IpAddr = match host.as_deref() {
            None => std::net::Ipv4Addr::UNSPECIFIED.into(),
            Some(h) => h.parse().with_context(|| {
                format!("--listeners: {h:?} in {spec:?} is not an IP address to bind")
            })?,
        };
        let addr = SocketAddr::new(ip, port);
        if out.iter().any(|l| l.protocol == protocol) {
            bail!("--listeners: {protocol} is given twice");
        }
        if out.iter().any(|l| l.addr.port() == port) {
            bail!("--listeners: port {port} is given twice");
        }
        out.push(Listener { protocol, addr });
    }
    if out.is_empty() {
        bail!("--listeners is empty");
    }
    Ok(out)
}

/// The endpoints to advertise: `--advertised-listeners` where given, else
/// each listener's port on `default_host`.
pub fn advertised(
    listeners: &[Listener],
    specs: &[String],
    default_host: &str,
) -> anyhow::Result<Vec<ListenerEndpoint>> {
    let mut given = Vec::new();
    for spec in specs {
        let (protocol, host, port) = split(spec.trim(), "--advertised-listeners")?;
        if !listeners.iter().any(|l| l.protocol == protocol) {
            bail!("--advertised-listeners: {protocol} is not one of --listeners");
        }
        let host = host.with_context(|| {
            format!("--advertised-listeners: {spec:?} needs a host clients can reach")
        })?;
        given.push((protocol, host, port));
    }
    Ok(listeners
        .iter()
        .map(|l| {
            let (host, port) = given
                .iter()
                .find(|(p, _, _)| *p == l.protocol)
                .map_or((default_host.to_owned(), l.addr.port()), |(_, h, p)| {
                    (h.clone(), *p)
                });
            ListenerEndpoint {
                name: l.protocol.name().to_owned(),
                host,
                port: i32::from(port),
            }
        })
        .collect())
}

/// What a shard's connections of one listener need.
pub struct ListenerCtx {
    pub protocol: Protocol,
    pub tls: Option<Arc<ReloadableTls>>,
    pub sasl: Option<Arc<super::sasl::SaslSettings>>,
    /// How a client certificate's subject becomes the principal.
    pub principal_rules: Arc<crate::auth::x500::PrincipalRules>,
}

impl std::fmt::Debug for ListenerCtx {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ListenerCtx")
            .field("protocol", &self.protocol)
            .field("tls", &self.tls.is_some())
            .field("sasl", &self.sasl)
            .finish()
    }
}

/// The TLS files of `--tls-cert`, `--tls-key`, `--tls-client-ca`.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// With it, clients must present a certificate this CA signed (mTLS).
    pub client_ca: Option<PathBuf>,
}

/// The TLS configuration of one kind of listener, read again from its
/// files on SIGHUP. Each new connection takes the configuration current
/// when it arrives; connections already open keep theirs.
pub struct ReloadableTls {
    files: TlsFiles,
    client_auth: bool,
    current: std::sync::RwLock<Arc<rustls::ServerConfig>>,
}

impl std::fmt::Debug for ReloadableTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ReloadableTls")
            .field("files", &self.files)
            .field("client_auth", &self.client_auth)
            .finish()
    }
}

impl ReloadableTls {
    pub fn load(files: TlsFiles, client_auth: bool) -> anyhow::Result<Self> {
        let current = server_config(&files, client_auth)?;
        Ok(Self {
            files,
            client_auth,
            current: std::sync::RwLock::new(current),
        })
    }

    /// The acceptor for a connection arriving now.
    pub fn acceptor(&self) -> futures_rustls::TlsAcceptor {
        let config = self
            .current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        futures_rustls::TlsAcceptor::from(config)
    }

    /// Reads the files again; on any error the configuration in use stays.
    pub fn reload(&self) -> anyhow::Result<()> {
        let fresh = server_config(&self.files, self.client_auth)?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = fresh;
        Ok(())
    }
}

/// The rustls server configuration of a TLS listener. As in Kafka
/// (KIP-684), client certificates are asked for on SSL listeners only:
/// `client_auth` is false for SASL_SSL, whose clients prove who they are
/// with SASL.
pub fn server_config(
    files: &TlsFiles,
    client_auth: bool,
) -> anyhow::Result<Arc<rustls::ServerConfig>> {
    let chain = CertificateDer::pem_file_iter(&files.cert)
        .and_then(|it| it.collect::<Result<Vec<_>, _>>())
        .map_err(|e| anyhow::anyhow!("cannot read --tls-cert {}: {e}", files.cert.display()))?;
    if chain.is_empty() {
        bail!(
            "--tls-cert {} holds no PEM certificate",
            files.cert.display()
        );
    }
    // Only the key's path goes into a message, never its content.
    let key = PrivateKeyDer::from_pem_file(&files.key)
        .map_err(|e| anyhow::anyhow!("cannot read --tls-key {}: {e}", files.key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .context("TLS")?;
    let builder = match files.client_ca.as_ref().filter(|_| client_auth) {
        None => builder.with_no_client_auth(),
        Some(ca) => {
            let mut roots = rustls::RootCertStore::empty();
            let certs = CertificateDer::pem_file_iter(ca)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    anyhow::anyhow!("cannot read --tls-client-ca {}: {e}", ca.display())
                })?;
            for c in certs {
                roots.add(c).map_err(|e| {
                    anyhow::anyhow!(
                        "a certificate in --tls-client-ca {} is not usable: {e}",
                        ca.display()
                    )
                })?;
            }
            if roots.is_empty() {
                bail!("--tls-client-ca {} holds no PEM certificate", ca.display());
            }
            let verifier = rustls::server::WebPkiClientVerifier::builder_with_provider(
                Arc::new(roots),
                provider,
            )
            .build()
            .context("--tls-client-ca")?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let config = builder.with_single_cert(chain, key).map_err(|e| {
        anyhow::anyhow!(
            "--tls-key {} does not fit --tls-cert {}: {e}",
            files.key.display(),
            files.cert.display()
        )
    })?;
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn listeners_parse_in_kafka_notation() {
        let l =
            parse_listeners(&strings(&["PLAINTEXT://0.0.0.0:9092", "sasl_ssl://:9094"])).unwrap();
        assert_eq!(l[0].protocol, Protocol::Plaintext);
        assert_eq!(l[1].protocol, Protocol::SaslSsl);
        assert_eq!(l[1].addr, "0.0.0.0:9094".parse().unwrap());
        let a = advertised(
            &l,
            &strings(&["SASL_SSL://kafka.example.com:19094"]),
            "localhost",
        )
        .unwrap();
        assert_eq!(
            (a[0].name.as_str(), a[0].host.as_str(), a[0].port),
            ("PLAINTEXT", "localhost", 9092)
        );
        assert_eq!(
            (a[1].name.as_str(), a[1].host.as_str(), a[1].port),
            ("SASL_SSL", "kafka.example.com", 19094)
        );
    }

    #[test]
    fn bad_listeners_are_named() {
        for (specs, want) in [
            (&["9092"][..], "is not PROTOCOL://HOST:PORT"),
            (&["TLS://0.0.0.0:9092"], "is none of"),
            (&["PLAINTEXT://0.0.0.0"], "has no port"),
            (&["PLAINTEXT://kafka1:9092"], "is not an IP address"),
            (&["PLAINTEXT://:9092", "PLAINTEXT://:9093"], "given twice"),
            (
                &["PLAINTEXT://:9092", "SSL://:9092"],
                "port 9092 is given twice",
            ),
        ] {
            let e = parse_listeners(&strings(specs)).unwrap_err().to_string();
            assert!(e.contains(want), "{specs:?}: {e}");
        }
        let l = parse_listeners(&strings(&["PLAINTEXT://:9092"])).unwrap();
        let e = advertised(&l, &strings(&["SSL://h:1"]), "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("not one of --listeners"), "{e}");
    }
}
