//! The rustls client configuration: trusted CAs, hostname verification
//! (rustls checks the certificate against the name dialled), client
//! certificates for mutual TLS.

use std::sync::Arc;

use futures_rustls::TlsConnector;
use futures_rustls::rustls;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::TlsConfig;
use crate::error::{ClientError, Result};

pub(crate) fn connector(tls: &TlsConfig) -> Result<TlsConnector> {
    let mut roots = rustls::RootCertStore::empty();
    match &tls.ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    ClientError::Config(format!(
                        "cannot read CA certificates from {}: {e}",
                        path.display()
                    ))
                })?;
            if certs.is_empty() {
                return Err(ClientError::Config(format!(
                    "{} holds no PEM certificate",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| {
                    ClientError::Config(format!(
                        "CA certificate in {} is not usable: {e}",
                        path.display()
                    ))
                })?;
            }
        }
    }
    let builder = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| ClientError::Config(format!("TLS: {e}")))?
    .with_root_certificates(roots);
    let config = match (&tls.cert_file, &tls.key_file) {
        (Some(cert), Some(key)) => {
            let chain = CertificateDer::pem_file_iter(cert)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| {
                    ClientError::Config(format!(
                        "cannot read the client certificate {}: {e}",
                        cert.display()
                    ))
                })?;
            // The key's content never goes into an error, only its path.
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| {
                ClientError::Config(format!("cannot read the client key {}: {e}", key.display()))
            })?;
            builder
                .with_client_auth_cert(chain, key)
                .map_err(|e| ClientError::Config(format!("client certificate refused: {e}")))?
        }
        _ => builder.with_no_client_auth(),
    };
    Ok(TlsConnector::from(Arc::new(config)))
}
