//! The etcd backend: etcd-client on a tokio runtime owned by the metadata
//! thread. Every call blocks that thread (never a shard) until etcd answers.

use std::time::Duration;

use etcd_client::{
    Client, Compare as EtcdCompare, CompareOp, ConnectOptions, DeleteOptions, GetOptions, TxnOp,
};

use super::MetaError;
use super::kv::{Compare, Kv, Op, Txn};

pub struct EtcdKv {
    runtime: tokio::runtime::Runtime,
    client: Client,
    endpoints: String,
}

impl std::fmt::Debug for EtcdKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdKv")
            .field("endpoints", &self.endpoints)
            .finish()
    }
}

impl EtcdKv {
    /// Connects and checks that etcd answers (one read), so a wrong address
    /// fails here with one clear sentence.
    pub fn connect(endpoints: &[String]) -> Result<Self, MetaError> {
        let joined = endpoints.join(",");
        let fail = |reason: String| MetaError::Etcd {
            endpoints: joined.clone(),
            reason,
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| fail(format!("cannot start tokio runtime: {e}")))?;
        let opts = ConnectOptions::new()
            .with_connect_timeout(Duration::from_secs(5))
            .with_timeout(Duration::from_secs(10));
        let mut client = runtime
            .block_on(Client::connect(endpoints, Some(opts)))
            .map_err(|e| fail(e.to_string()))?;
        runtime
            .block_on(client.get("/kafscale/", Some(GetOptions::new().with_count_only())))
            .map_err(|e| fail(e.to_string()))?;
        Ok(Self {
            runtime,
            client,
            endpoints: joined,
        })
    }

    fn fail(&self, e: etcd_client::Error) -> MetaError {
        let endpoints = self.endpoints.clone();
        match e {
            // etcd answered, with an error of its own (an unknown lease, a
            // request too large, ...): reachable, and saying so matters.
            // (gRPC codes 4 DEADLINE_EXCEEDED and 14 UNAVAILABLE are the
            // transport's, not etcd's: those stay "cannot reach".)
            etcd_client::Error::GRpcStatus(status) if !matches!(status.code() as i32, 4 | 14) => {
                MetaError::EtcdRefused {
                    endpoints,
                    reason: status.message().to_owned(),
                }
            }
            e => MetaError::Etcd {
                endpoints,
                reason: e.to_string(),
            },
        }
    }
}

fn text(key: &[u8], value: &[u8]) -> Result<(String, String), MetaError> {
    let key = String::from_utf8(key.to_vec()).map_err(|_| MetaError::Decode {
        key: String::from_utf8_lossy(key).into_owned(),
        reason: "key is not UTF-8".into(),
    })?;
    let value = String::from_utf8(value.to_vec()).map_err(|_| MetaError::Decode {
        key: key.clone(),
        reason: "value is not UTF-8".into(),
    })?;
    Ok((key, value))
}

impl Kv for EtcdKv {
    fn get(&mut self, key: &str) -> Result<Option<String>, MetaError> {
        let resp = self
            .runtime
            .block_on(self.client.get(key, None))
            .map_err(|e| self.fail(e))?;
        resp.kvs()
            .first()
            .map(|kv| text(kv.key(), kv.value()).map(|(_, v)| v))
            .transpose()
    }

    fn range(&mut self, prefix: &str) -> Result<Vec<(String, String)>, MetaError> {
        let opts = GetOptions::new()
            .with_prefix()
            .with_sort(etcd_client::SortTarget::Key, etcd_client::SortOrder::Ascend);
        let resp = self
            .runtime
            .block_on(self.client.get(prefix, Some(opts)))
            .map_err(|e| self.fail(e))?;
        resp.kvs()
            .iter()
            .map(|kv| text(kv.key(), kv.value()))
            .collect()
    }

    fn txn(&mut self, txn: Txn) -> Result<bool, MetaError> {
        let compares: Vec<EtcdCompare> = txn
            .compares
            .into_iter()
            .map(|c| match c {
                Compare::Equals(k, v) => EtcdCompare::value(k, CompareOp::Equal, v),
                Compare::Absent(k) => EtcdCompare::create_revision(k, CompareOp::Equal, 0),
            })
            .collect();
        let ops: Vec<TxnOp> = txn
            .ops
            .into_iter()
            .map(|op| match op {
                Op::Put(k, v) => TxnOp::put(k, v, None),
                Op::PutLeased(k, v, lease) => {
                    TxnOp::put(k, v, Some(etcd_client::PutOptions::new().with_lease(lease)))
                }
                Op::Delete(k) => TxnOp::delete(k, None),
                Op::DeletePrefix(p) => TxnOp::delete(p, Some(DeleteOptions::new().with_prefix())),
            })
            .collect();
        let etxn = etcd_client::Txn::new().when(compares).and_then(ops);
        let resp = self
            .runtime
            .block_on(self.client.txn(etxn))
            .map_err(|e| self.fail(e))?;
        Ok(resp.succeeded())
    }

    fn grant_lease(&mut self, ttl_secs: i64) -> Result<i64, MetaError> {
        let resp = self
            .runtime
            .block_on(self.client.lease_grant(ttl_secs, None))
            .map_err(|e| self.fail(e))?;
        Ok(resp.id())
    }

    fn keep_alive(&mut self, lease: i64) -> Result<bool, MetaError> {
        let client = &mut self.client;
        let renewed = self.runtime.block_on(async {
            let (mut keeper, mut stream) = client.lease_keep_alive(lease).await?;
            keeper.keep_alive().await?;
            // etcd answers a renewal of an expired lease with TTL 0.
            Ok::<_, etcd_client::Error>(stream.message().await?.is_some_and(|r| r.ttl() > 0))
        });
        match renewed {
            // An expired (or revoked) lease: etcd says so as an error.
            Err(etcd_client::Error::LeaseKeepAliveError(m)) if m.contains("not found") => Ok(false),
            other => other.map_err(|e| self.fail(e)),
        }
    }

    fn revoke_lease(&mut self, lease: i64) -> Result<(), MetaError> {
        self.runtime
            .block_on(self.client.lease_revoke(lease))
            .map(|_| ())
            .map_err(|e| self.fail(e))
    }

    fn lease_of(&mut self, key: &str) -> Result<Option<(i64, i64)>, MetaError> {
        let client = &mut self.client;
        let found = self.runtime.block_on(async {
            let resp = client.get(key, None).await?;
            let lease = resp.kvs().first().map_or(0, |kv| kv.lease());
            if lease == 0 {
                return Ok(None);
            }
            let ttl = client.lease_time_to_live(lease, None).await?.ttl();
            Ok::<_, etcd_client::Error>(Some((lease, ttl)))
        });
        found.map_err(|e| self.fail(e))
    }
}
