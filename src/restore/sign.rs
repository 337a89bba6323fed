//! Ed25519 signatures of restore reports: a detached `REPORT.sig` (JSON)
//! beside the report, over the report file's exact bytes, naming the key
//! that made it. Keys are the PEM files OpenSSL writes:
//!
//! ```text
//! openssl genpkey -algorithm ed25519 -out restore-signing.pem      (PKCS#8)
//! openssl pkey -in restore-signing.pem -pubout -out restore-signing.pub.pem
//! ```

use std::path::Path;

use anyhow::{Context, anyhow, bail};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::pkcs8::{DecodePrivateKey, DecodePublicKey};
use ed25519_dalek::{Signer as _, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};

use super::report::hex;

/// A detached signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// `ed25519`.
    pub algorithm: String,
    /// `ed25519:` and the first 16 hex digits of SHA-256 of the raw public key.
    pub key_id: String,
    /// The raw 32-byte public key, base64: lets anyone check integrity;
    /// authenticity needs the key from elsewhere (`--public-key`).
    pub public_key: String,
    /// base64 of the 64-byte signature over the report file's bytes.
    pub signature: String,
}

pub fn key_id(key: &VerifyingKey) -> String {
    format!("ed25519:{}", &hex(&Sha256::digest(key.as_bytes()))[..16])
}

/// The `.sig` path beside a report.
pub fn signature_path(report: &Path) -> std::path::PathBuf {
    let mut s = report.as_os_str().to_owned();
    s.push(".sig");
    s.into()
}

pub fn load_signing_key(path: &Path) -> anyhow::Result<SigningKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    SigningKey::from_pkcs8_pem(&pem).map_err(|e| {
        anyhow!(
            "{} is not an Ed25519 private key in PKCS#8 PEM (make one with `openssl genpkey -algorithm ed25519`): {e}",
            path.display()
        )
    })
}

pub fn load_public_key(path: &Path) -> anyhow::Result<VerifyingKey> {
    let pem = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the public key {}", path.display()))?;
    VerifyingKey::from_public_key_pem(&pem).map_err(|e| {
        anyhow!(
            "{} is not an Ed25519 public key in PEM (SubjectPublicKeyInfo, as `openssl pkey -pubout` writes): {e}",
            path.display()
        )
    })
}

pub fn sign(data: &[u8], key: &SigningKey) -> Signature {
    let public = key.verifying_key();
    Signature {
        algorithm: "ed25519".into(),
        key_id: key_id(&public),
        public_key: B64.encode(public.as_bytes()),
        signature: B64.encode(key.sign(data).to_bytes()),
    }
}

/// Checks `sig` over `data`. With `trusted`, the signature must be by that
/// key; without, by the key the signature names (integrity only). Returns
/// the key id.
pub fn verify(
    data: &[u8],
    sig: &Signature,
    trusted: Option<&VerifyingKey>,
) -> anyhow::Result<String> {
    if sig.algorithm != "ed25519" {
        bail!("signature algorithm {:?} is not ed25519", sig.algorithm);
    }
    let named: [u8; 32] = B64
        .decode(&sig.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("the signature's public key is not 32 bytes of base64"))?;
    let named = VerifyingKey::from_bytes(&named)
        .map_err(|e| anyhow!("the signature's public key is not valid: {e}"))?;
    if key_id(&named) != sig.key_id {
        bail!(
            "the signature's key id {} does not match its public key ({})",
            sig.key_id,
            key_id(&named)
        );
    }
    let key = match trusted {
        Some(t) if t != &named => bail!(
            "the report is signed by key {}, not by the trusted key {}",
            sig.key_id,
            key_id(t)
        ),
        Some(t) => t,
        None => &named,
    };
    let bytes: [u8; 64] = B64
        .decode(&sig.signature)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| anyhow!("the signature is not 64 bytes of base64"))?;
    key.verify_strict(data, &ed25519_dalek::Signature::from_bytes(&bytes))
        .map_err(|_| {
            anyhow!(
                "the signature by key {} does not match the report: it was changed after signing",
                sig.key_id
            )
        })?;
    Ok(sig.key_id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signed_report_verifies_and_any_change_is_caught() {
        let key = SigningKey::from_bytes(&[7u8; 32]);
        let other = SigningKey::from_bytes(&[8u8; 32]);
        let report = br#"{"passed":true}"#;
        let sig = sign(report, &key);
        let public = key.verifying_key();
        assert_eq!(
            verify(report, &sig, Some(&public)).unwrap(),
            key_id(&public)
        );
        assert!(verify(report, &sig, None).is_ok());
        let e = verify(br#"{"passed":false}"#, &sig, Some(&public)).unwrap_err();
        assert!(e.to_string().contains("changed after signing"), "{e}");
        let e = verify(report, &sig, Some(&other.verifying_key())).unwrap_err();
        assert!(e.to_string().contains("not by the trusted key"), "{e}");
        // A signature re-made with another key but claiming the first's id.
        let mut forged = sign(report, &other);
        forged.key_id = sig.key_id.clone();
        assert!(verify(report, &forged, None).is_err());
    }
}
