//! Mirror sources and jobs as stored in the metadata store (JSON) and sent
//! over the REST API. Secrets are never part of them: a source names the
//! environment variable or file each broker reads its password from.

use std::time::Duration;

use kafscale_client::{ClientConfig, Mechanism, SaslConfig, Secret, SecurityProtocol, TlsConfig};
use regex::{Regex, RegexSet};
use serde::{Deserialize, Serialize};

/// A source cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceSpec {
    pub name: String,
    /// HOST:PORT of one or more of its brokers.
    pub bootstrap: Vec<String>,
    /// PLAINTEXT, SSL, SASL_PLAINTEXT or SASL_SSL.
    #[serde(default = "plaintext")]
    pub security_protocol: String,
    /// PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 (SASL protocols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_mechanism: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_username: Option<String>,
    /// Environment variable each broker reads the password from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_password_env: Option<String>,
    /// File each broker reads the password from (one line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sasl_password_file: Option<String>,
    /// PEM CA certificates to trust (TLS protocols; default: web PKI roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_ca: Option<String>,
    /// PEM certificate chain and key for mutual TLS.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_cert: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_key: Option<String>,
    #[serde(default)]
    pub created_ms: i64,
}

fn plaintext() -> String {
    "PLAINTEXT".into()
}

/// Mirror names (sources, jobs) are one path segment of keys and URLs:
/// 1-249 characters of `[a-zA-Z0-9._-]`, as Kafka topic names.
pub fn check_name(kind: &str, name: &str) -> Result<(), String> {
    if crate::broker::valid_topic_name(name) {
        Ok(())
    } else {
        Err(format!(
            "{kind} name {name:?} is not 1-249 characters of letters, digits, '.', '_' and '-'"
        ))
    }
}

impl SourceSpec {
    /// Everything that can be checked without connecting; one sentence.
    pub fn validate(&self) -> Result<(), String> {
        check_name("source", &self.name)?;
        self.validate_as(&format!("source {}", self.name))
    }

    /// As [`SourceSpec::validate`] but for the name, with errors starting
    /// with `who` (the connection settings also describe a restore's
    /// target cluster).
    pub fn validate_as(&self, who: &str) -> Result<(), String> {
        if self.bootstrap.is_empty() || self.bootstrap.iter().any(|b| b.trim().is_empty()) {
            return Err(format!("{who}: bootstrap needs at least one HOST:PORT"));
        }
        for b in &self.bootstrap {
            if !b
                .rsplit_once(':')
                .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok())
            {
                return Err(format!("{who}: bootstrap {b:?} is not HOST:PORT"));
            }
        }
        let protocol =
            SecurityProtocol::parse(&self.security_protocol).map_err(|e| format!("{who}: {e}"))?;
        if protocol.uses_sasl() {
            let mechanism = self.sasl_mechanism.as_deref().ok_or_else(|| {
                format!(
                    "{who}: {} needs a SASL mechanism (PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512)",
                    self.security_protocol
                )
            })?;
            Mechanism::parse(mechanism).map_err(|e| format!("{who}: {e}"))?;
            if self.sasl_username.as_deref().is_none_or(str::is_empty) {
                return Err(format!("{who}: SASL needs a username"));
            }
            match (&self.sasl_password_env, &self.sasl_password_file) {
                (Some(_), None) | (None, Some(_)) => {}
                _ => {
                    return Err(format!(
                        "{who}: give the SASL password by reference, exactly one of an environment variable (sasl_password_env) or a file (sasl_password_file); it is never stored"
                    ));
                }
            }
        } else if self.sasl_mechanism.is_some() || self.sasl_username.is_some() {
            return Err(format!(
                "{who}: SASL settings need security protocol SASL_PLAINTEXT or SASL_SSL, not {}",
                self.security_protocol
            ));
        }
        if !protocol.uses_tls() && (self.ssl_ca.is_some() || self.ssl_cert.is_some()) {
            return Err(format!(
                "{who}: TLS files need security protocol SSL or SASL_SSL, not {}",
                self.security_protocol
            ));
        }
        if self.ssl_cert.is_some() != self.ssl_key.is_some() {
            return Err(format!(
                "{who}: a client certificate and its key go together"
            ));
        }
        Ok(())
    }

    /// The client configuration, with the password read now (on the broker
    /// that connects). Errors name the variable or file, never the secret.
    pub fn client_config(&self, client_id: &str) -> Result<ClientConfig, String> {
        self.validate()?;
        self.client_config_as(&format!("source {}", self.name), client_id)
    }

    /// As [`SourceSpec::client_config`], errors starting with `who`.
    pub fn client_config_as(&self, who: &str, client_id: &str) -> Result<ClientConfig, String> {
        self.validate_as(who)?;
        let protocol =
            SecurityProtocol::parse(&self.security_protocol).map_err(|e| e.to_string())?;
        let mut config = ClientConfig::new(self.bootstrap.join(",")).with_client_id(client_id);
        config.security = protocol;
        config.tls = TlsConfig {
            ca_file: self.ssl_ca.clone().map(Into::into),
            cert_file: self.ssl_cert.clone().map(Into::into),
            key_file: self.ssl_key.clone().map(Into::into),
        };
        if protocol.uses_sasl() {
            let mechanism = Mechanism::parse(self.sasl_mechanism.as_deref().unwrap_or_default())
                .map_err(|e| e.to_string())?;
            let password = match (&self.sasl_password_env, &self.sasl_password_file) {
                (Some(var), _) => std::env::var(var).map_err(|_| {
                    format!("{who}: environment variable {var} (its SASL password) is not set")
                })?,
                (None, Some(path)) => std::fs::read_to_string(path)
                    .map(|s| s.trim_end_matches(['\n', '\r']).to_owned())
                    .map_err(|e| {
                        format!("{who}: cannot read its SASL password file {path}: {e}")
                    })?,
                (None, None) => unreachable!("validate requires one password reference"),
            };
            config.sasl = Some(SaslConfig {
                mechanism,
                username: self.sasl_username.clone().unwrap_or_default(),
                password: Secret::new(password),
            });
        }
        config.request_timeout = Duration::from_secs(30);
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }
}

/// How source topic names become target topic names.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Mapping {
    /// The target has the source's name.
    #[default]
    SameName,
    /// `{prefix}{source}`.
    Prefix { prefix: String },
    /// The source name, matched whole by `pattern`, becomes `replacement`
    /// (`$1`, `${name}` refer to its groups).
    Regex {
        pattern: String,
        replacement: String,
    },
}

/// What a job does when the source's retention deleted records it had not
/// copied yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum OnGap {
    /// Record the gap and go on from the source's log start.
    #[default]
    Continue,
    /// Record the gap and stop copying the partition until resumed.
    Stop,
}

/// A mirror job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobSpec {
    pub name: String,
    pub source: String,
    /// Regular expressions; a source topic is copied when one matches its
    /// whole name and no exclude does.
    pub topics: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    #[serde(default)]
    pub mapping: Mapping,
    /// Source consumer groups whose committed offsets are copied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub groups: Option<String>,
    #[serde(default)]
    pub on_gap: OnGap,
    #[serde(default)]
    pub paused: bool,
    /// When the job was last resumed: partitions stopped by a gap or an
    /// error start again when this changes.
    #[serde(default)]
    pub resumed_ms: i64,
    #[serde(default)]
    pub created_ms: i64,
}

/// A job with its expressions compiled.
#[derive(Debug, Clone)]
pub struct CompiledJob {
    pub spec: JobSpec,
    include: RegexSet,
    exclude: RegexSet,
    mapping: Option<Regex>,
    groups: Option<Regex>,
}

fn whole(patterns: &[String], what: &str, job: &str) -> Result<RegexSet, String> {
    RegexSet::new(patterns.iter().map(|p| format!("^(?:{p})$")))
        .map_err(|e| format!("job {job}: {what} pattern is not a regular expression: {e}"))
}

impl JobSpec {
    pub fn compile(&self) -> Result<CompiledJob, String> {
        check_name("job", &self.name)?;
        check_name("source", &self.source)?;
        if self.topics.is_empty() || self.topics.iter().any(|t| t.trim().is_empty()) {
            return Err(format!(
                "job {}: topics needs at least one pattern",
                self.name
            ));
        }
        let include = whole(&self.topics, "a topics", &self.name)?;
        let exclude = whole(&self.exclude, "an exclude", &self.name)?;
        let mapping = match &self.mapping {
            Mapping::SameName => None,
            Mapping::Prefix { prefix } => {
                if !prefix.is_empty() && !crate::broker::valid_topic_name(prefix) {
                    return Err(format!(
                        "job {}: prefix {prefix:?} has characters a topic name cannot have",
                        self.name
                    ));
                }
                None
            }
            Mapping::Regex { pattern, .. } => {
                Some(Regex::new(&format!("^(?:{pattern})$")).map_err(|e| {
                    format!(
                        "job {}: mapping pattern is not a regular expression: {e}",
                        self.name
                    )
                })?)
            }
        };
        let groups = self
            .groups
            .as_deref()
            .map(|g| {
                Regex::new(&format!("^(?:{g})$")).map_err(|e| {
                    format!("job {}: groups is not a regular expression: {e}", self.name)
                })
            })
            .transpose()?;
        Ok(CompiledJob {
            spec: self.clone(),
            include,
            exclude,
            mapping,
            groups,
        })
    }
}

impl CompiledJob {
    /// Whether a source topic is copied (internal topics never are).
    pub fn matches(&self, topic: &str) -> bool {
        !topic.starts_with("__") && self.include.is_match(topic) && !self.exclude.is_match(topic)
    }

    /// The target topic of a source topic, or why it has none.
    pub fn target(&self, topic: &str) -> Result<String, String> {
        let name = match (&self.spec.mapping, &self.mapping) {
            (Mapping::SameName, _) => topic.to_owned(),
            (Mapping::Prefix { prefix }, _) => format!("{prefix}{topic}"),
            (Mapping::Regex { replacement, .. }, Some(re)) => {
                if !re.is_match(topic) {
                    return Err(format!(
                        "topic {topic} does not match the job's mapping pattern"
                    ));
                }
                re.replace(topic, replacement.as_str()).into_owned()
            }
            (Mapping::Regex { .. }, None) => unreachable!("compiled with the pattern"),
        };
        if crate::broker::valid_topic_name(&name) {
            Ok(name)
        } else {
            Err(format!(
                "topic {topic} maps to {name:?}, which is not a valid topic name"
            ))
        }
    }

    /// Whether a source consumer group's offsets are copied.
    pub fn syncs_group(&self, group: &str) -> bool {
        self.groups.as_ref().is_some_and(|g| g.is_match(group))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn job(topics: &[&str], exclude: &[&str], mapping: Mapping) -> CompiledJob {
        JobSpec {
            name: "j".into(),
            source: "s".into(),
            topics: topics.iter().map(|s| s.to_string()).collect(),
            exclude: exclude.iter().map(|s| s.to_string()).collect(),
            mapping,
            groups: Some("billing-.*".into()),
            on_gap: OnGap::Continue,
            paused: false,
            resumed_ms: 0,
            created_ms: 0,
        }
        .compile()
        .unwrap()
    }

    #[test]
    fn patterns_match_whole_names_and_excludes_win() {
        let j = job(
            &["orders.*", "payments"],
            &["orders-tmp.*"],
            Mapping::SameName,
        );
        assert!(j.matches("orders"));
        assert!(j.matches("orders.eu"));
        assert!(j.matches("payments"));
        assert!(!j.matches("payments-v2"), "whole name only");
        assert!(!j.matches("xorders"));
        assert!(!j.matches("orders-tmp-1"));
        let all = job(&[".*"], &[], Mapping::SameName);
        assert!(!all.matches("__consumer_offsets"), "internal topics never");
        assert!(j.syncs_group("billing-eu"));
        assert!(!j.syncs_group("other"));
    }

    #[test]
    fn mappings_name_targets() {
        let prefix = job(
            &[".*"],
            &[],
            Mapping::Prefix {
                prefix: "dc1.".into(),
            },
        );
        assert_eq!(prefix.target("orders").unwrap(), "dc1.orders");
        let re = job(
            &[".*"],
            &[],
            Mapping::Regex {
                pattern: r"prod\.(.*)".into(),
                replacement: "backup.$1".into(),
            },
        );
        assert_eq!(re.target("prod.orders").unwrap(), "backup.orders");
        assert!(
            re.target("dev.orders")
                .unwrap_err()
                .contains("does not match")
        );
        let bad = job(
            &[".*"],
            &[],
            Mapping::Regex {
                pattern: "(.*)".into(),
                replacement: "a/$1".into(),
            },
        );
        assert!(
            bad.target("x")
                .unwrap_err()
                .contains("not a valid topic name")
        );
    }

    #[test]
    fn sources_keep_secrets_out() {
        let mut s = SourceSpec {
            name: "prod".into(),
            bootstrap: vec!["kafka:9092".into()],
            security_protocol: "SASL_SSL".into(),
            sasl_mechanism: Some("SCRAM-SHA-512".into()),
            sasl_username: Some("mirror".into()),
            sasl_password_env: None,
            sasl_password_file: None,
            ssl_ca: None,
            ssl_cert: None,
            ssl_key: None,
            created_ms: 0,
        };
        assert!(s.validate().unwrap_err().contains("never stored"));
        s.sasl_password_env = Some("KAFSCALE_TEST_UNSET_PASSWORD_VAR".into());
        s.validate().unwrap();
        let e = s.client_config("m").unwrap_err();
        assert!(e.contains("KAFSCALE_TEST_UNSET_PASSWORD_VAR"), "{e}");
        // A stored password field is refused, not ignored.
        let raw = r#"{"name":"p","bootstrap":["h:1"],"sasl_password":"hunter2"}"#;
        let err = serde_json::from_str::<SourceSpec>(raw)
            .unwrap_err()
            .to_string();
        assert!(err.contains("sasl_password"), "{err}");
        let bad = SourceSpec {
            bootstrap: vec!["kafka".into()],
            ..s.clone()
        };
        assert!(bad.validate().unwrap_err().contains("HOST:PORT"));
    }
}
