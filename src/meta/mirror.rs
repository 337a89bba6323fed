//! Mirror sources, jobs, their status reports and recorded gaps, on the
//! key-value store (layout in [`super::keys`]).

use super::kv::{Compare, Op, Txn};
use super::store::{MetaStore, from_json, to_json};
use super::{MetaError, keys};
use crate::mirror::{Gap, JobSpec, SourceSpec};

impl MetaStore {
    /// Adds a source; fails if one has the name.
    pub fn create_mirror_source(&mut self, spec: &SourceSpec) -> Result<(), MetaError> {
        let key = keys::mirror_source(self.namespace(), &spec.name);
        if self.kv_mut().txn(Txn {
            compares: vec![Compare::Absent(key.clone())],
            ops: vec![Op::Put(key, to_json(spec))],
        })? {
            Ok(())
        } else {
            Err(MetaError::Exists {
                what: format!("mirror source {:?}", spec.name),
            })
        }
    }

    pub fn mirror_sources(&mut self) -> Result<Vec<SourceSpec>, MetaError> {
        let prefix = keys::mirror_sources(self.namespace());
        self.kv_mut()
            .range(&prefix)?
            .iter()
            .map(|(k, v)| from_json(k, v))
            .collect()
    }

    pub fn mirror_source(&mut self, name: &str) -> Result<Option<SourceSpec>, MetaError> {
        let key = keys::mirror_source(self.namespace(), name);
        self.kv_mut()
            .get(&key)?
            .map(|v| from_json(&key, &v))
            .transpose()
    }

    /// Removes a source no job uses.
    pub fn delete_mirror_source(&mut self, name: &str) -> Result<(), MetaError> {
        let key = keys::mirror_source(self.namespace(), name);
        let Some(raw) = self.kv_mut().get(&key)? else {
            return Err(MetaError::NotFound {
                what: format!("mirror source {name:?}"),
            });
        };
        let users: Vec<String> = self
            .mirror_jobs()?
            .into_iter()
            .filter(|j| j.source == name)
            .map(|j| j.name)
            .collect();
        if !users.is_empty() {
            return Err(MetaError::InUse {
                what: format!("mirror source {name:?}"),
                by: format!("job {}", users.join(", job ")),
            });
        }
        // Guarded by the value read: a job created meanwhile re-wrote
        // nothing here, but a concurrent change of the source is not lost.
        self.kv_mut().txn(Txn {
            compares: vec![Compare::Equals(key.clone(), raw)],
            ops: vec![Op::Delete(key)],
        })?;
        Ok(())
    }

    /// Adds a job whose source exists; fails if one has the name.
    pub fn create_mirror_job(&mut self, spec: &JobSpec) -> Result<(), MetaError> {
        let ns = self.namespace().to_owned();
        let key = keys::mirror_job(&ns, &spec.name);
        let source_key = keys::mirror_source(&ns, &spec.source);
        let Some(source) = self.kv_mut().get(&source_key)? else {
            return Err(MetaError::NotFound {
                what: format!("mirror source {:?}", spec.source),
            });
        };
        if self.kv_mut().txn(Txn {
            compares: vec![
                Compare::Absent(key.clone()),
                Compare::Equals(source_key, source),
            ],
            ops: vec![Op::Put(key, to_json(spec))],
        })? {
            Ok(())
        } else if self.mirror_job(&spec.name)?.is_some() {
            Err(MetaError::Exists {
                what: format!("mirror job {:?}", spec.name),
            })
        } else {
            Err(MetaError::NotFound {
                what: format!("mirror source {:?}", spec.source),
            })
        }
    }

    pub fn mirror_jobs(&mut self) -> Result<Vec<JobSpec>, MetaError> {
        let prefix = keys::mirror_jobs(self.namespace());
        self.kv_mut()
            .range(&prefix)?
            .iter()
            .map(|(k, v)| from_json(k, v))
            .collect()
    }

    pub fn mirror_job(&mut self, name: &str) -> Result<Option<JobSpec>, MetaError> {
        let key = keys::mirror_job(self.namespace(), name);
        self.kv_mut()
            .get(&key)?
            .map(|v| from_json(&key, &v))
            .transpose()
    }

    /// Changes a job (compare-and-swap, retried on a concurrent change).
    pub fn update_mirror_job(
        &mut self,
        name: &str,
        change: impl Fn(&mut JobSpec),
    ) -> Result<JobSpec, MetaError> {
        let key = keys::mirror_job(self.namespace(), name);
        loop {
            let Some(raw) = self.kv_mut().get(&key)? else {
                return Err(MetaError::NotFound {
                    what: format!("mirror job {name:?}"),
                });
            };
            let mut job: JobSpec = from_json(&key, &raw)?;
            change(&mut job);
            if self.kv_mut().txn(Txn {
                compares: vec![Compare::Equals(key.clone(), raw)],
                ops: vec![Op::Put(key.clone(), to_json(&job))],
            })? {
                return Ok(job);
            }
        }
    }

    /// Removes a job and its recorded gaps. Returns it.
    pub fn delete_mirror_job(&mut self, name: &str) -> Result<JobSpec, MetaError> {
        let ns = self.namespace().to_owned();
        let key = keys::mirror_job(&ns, name);
        let Some(raw) = self.kv_mut().get(&key)? else {
            return Err(MetaError::NotFound {
                what: format!("mirror job {name:?}"),
            });
        };
        let job: JobSpec = from_json(&key, &raw)?;
        self.kv_mut().txn(Txn {
            compares: vec![Compare::Equals(key.clone(), raw)],
            ops: vec![
                Op::Delete(key),
                Op::DeletePrefix(keys::mirror_gaps(&ns, name)),
            ],
        })?;
        Ok(job)
    }

    pub fn record_mirror_gap(&mut self, job: &str, gap: &Gap) -> Result<(), MetaError> {
        let key = keys::mirror_gap(
            self.namespace(),
            job,
            &gap.source_topic,
            gap.partition,
            gap.from,
        );
        self.kv_mut().txn(Txn {
            compares: vec![],
            ops: vec![Op::Put(key, to_json(gap))],
        })?;
        Ok(())
    }

    pub fn mirror_gaps(&mut self, job: &str) -> Result<Vec<Gap>, MetaError> {
        let prefix = keys::mirror_gaps(self.namespace(), job);
        self.kv_mut()
            .range(&prefix)?
            .iter()
            .map(|(k, v)| from_json(k, v))
            .collect()
    }

    /// Changes a topic's configuration (compare-and-swap).
    pub fn update_topic_config(
        &mut self,
        name: &str,
        change: impl Fn(&mut std::collections::BTreeMap<String, String>),
    ) -> Result<crate::meta::TopicMeta, MetaError> {
        let key = keys::topic(self.namespace(), name);
        loop {
            let Some(raw) = self.kv_mut().get(&key)? else {
                return Err(MetaError::UnknownTopic {
                    topic: name.to_owned(),
                });
            };
            let mut topic: crate::meta::TopicMeta = from_json(&key, &raw)?;
            change(&mut topic.config);
            if self.kv_mut().txn(Txn {
                compares: vec![Compare::Equals(key.clone(), raw)],
                ops: vec![Op::Put(key.clone(), to_json(&topic))],
            })? {
                return Ok(topic);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::meta::embedded::FileKv;
    use crate::mirror::{Mapping, OnGap};

    fn source(name: &str) -> SourceSpec {
        SourceSpec {
            name: name.into(),
            bootstrap: vec!["localhost:9092".into()],
            security_protocol: "PLAINTEXT".into(),
            sasl_mechanism: None,
            sasl_username: None,
            sasl_password_env: None,
            sasl_password_file: None,
            ssl_ca: None,
            ssl_cert: None,
            ssl_key: None,
            created_ms: 1,
        }
    }

    fn job(name: &str, source: &str) -> JobSpec {
        JobSpec {
            name: name.into(),
            source: source.into(),
            topics: vec!["orders.*".into()],
            exclude: vec![],
            mapping: Mapping::SameName,
            groups: None,
            on_gap: OnGap::Continue,
            paused: false,
            resumed_ms: 0,
            created_ms: 1,
        }
    }

    #[test]
    fn jobs_need_their_source_and_sources_their_jobs_gone() {
        let dir = tempfile::tempdir().unwrap();
        let mut m = MetaStore::new(Box::new(FileKv::open(dir.path()).unwrap()), "t");
        assert!(matches!(
            m.create_mirror_job(&job("j", "prod")),
            Err(MetaError::NotFound { .. })
        ));
        m.create_mirror_source(&source("prod")).unwrap();
        assert!(matches!(
            m.create_mirror_source(&source("prod")),
            Err(MetaError::Exists { .. })
        ));
        m.create_mirror_job(&job("j", "prod")).unwrap();
        assert!(matches!(
            m.create_mirror_job(&job("j", "prod")),
            Err(MetaError::Exists { .. })
        ));
        let e = m.delete_mirror_source("prod").unwrap_err();
        assert!(e.to_string().contains("used by job j"), "{e}");
        let paused = m.update_mirror_job("j", |j| j.paused = true).unwrap();
        assert!(paused.paused && m.mirror_job("j").unwrap().unwrap().paused);
        let gap = Gap {
            source_topic: "orders".into(),
            partition: 0,
            target_topic: "orders".into(),
            from: 10,
            to: 20,
            detected_ms: 5,
        };
        m.record_mirror_gap("j", &gap).unwrap();
        assert_eq!(m.mirror_gaps("j").unwrap(), vec![gap]);
        m.delete_mirror_job("j").unwrap();
        assert!(m.mirror_gaps("j").unwrap().is_empty());
        // A report arriving after the job is gone is dropped.
        m.delete_mirror_source("prod").unwrap();
        assert!(m.mirror_sources().unwrap().is_empty());
    }
}
