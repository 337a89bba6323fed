//! `kafscale broker`: the Kafka-compatible broker.
//!
//! ```text
//! socket -> conn (frames, budget) -> api::<request> -> owner shard (mesh)
//!        -> PartitionLog::append -> open segment (arena)
//!        -> flush: seal -> object store (.kfs, .index) -> metadata commit -> acks
//! fetch  -> owner shard -> PartitionLog::read -> segment cache | ranged GET via .index
//! ```
//!
//! Start-up: validate settings, raise RLIMIT_MEMLOCK, check the object store
//! and the metadata store are reachable (one clear sentence if not), then one
//! glommio executor per shard, each accepting connections on the shared port
//! (SO_REUSEPORT) and owning the partitions that hash to it.

mod answers;
mod authorizer;
mod cluster;
pub mod config;
mod conn;
mod errors;
mod flush;
mod group;
mod http;
mod http_auth;
mod internal_topics;
mod limits;
pub mod listeners;
mod metrics;
mod mirror;
pub(crate) mod partition;
mod pool;
mod rest;
mod sasl;
pub(crate) mod shard;

mod api;

use std::rc::Rc;
use std::sync::Arc;

use anyhow::{Context, anyhow, bail};
use glommio::channels::channel_mesh::MeshBuilder;
use glommio::channels::local_channel;
use kafscale_s3::{Credentials, S3Client, S3Config, StoreConfig};

pub use config::BrokerArgs;
use metrics::Metrics;
pub use shard::valid_topic_name;
use shard::{Job, Shard};

use crate::meta::embedded::FileKv;
use crate::meta::etcd::EtcdKv;
use crate::meta::{MetaClient, MetaStore};

/// What a stop signal needs once the shards run.
struct Stopping {
    shards: kafscale_shard::StopSender,
    /// Each shard sends (its id, produce requests left unanswered) when drained.
    drained: std::sync::Mutex<std::sync::mpsc::Receiver<(usize, usize)>>,
    cluster: Arc<cluster::Cluster>,
}

impl Stopping {
    /// Drains every shard (produce refused with a retriable error, open
    /// segments flushed, requests in flight answered), then leaves the
    /// cluster so the partitions move at once, then exits.
    fn drain_and_exit(&self, sig: i32) -> ! {
        tracing::info!(
            signal = sig,
            "stopping: flushing open segments and answering produce requests in flight"
        );
        let started = std::time::Instant::now();
        let mut left = 0;
        match self.shards.stop() {
            Ok(()) => {
                let deadline =
                    started + AUDIT_AT_STOP + DRAIN_TIMEOUT + std::time::Duration::from_secs(1);
                let drained = self.drained.lock().unwrap_or_else(|e| e.into_inner());
                for _ in 0..self.shards.len() {
                    let wait = deadline.saturating_duration_since(std::time::Instant::now());
                    match drained.recv_timeout(wait) {
                        Ok((_, 0)) => {}
                        Ok((shard, unanswered)) => {
                            tracing::warn!(shard, unanswered, "shard did not drain in time");
                            left += unanswered;
                        }
                        Err(_) => {
                            tracing::warn!("a shard did not answer the drain");
                            left += 1;
                            break;
                        }
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot tell the shards to drain"),
        }
        if left == 0 {
            let took_ms = started.elapsed().as_millis() as u64;
            tracing::info!(took_ms, "drained");
            // Next to the start-up line, which is printed at any log level.
            eprintln!(
                "kafscale broker {}: stopped (drained in {took_ms} ms)",
                self.cluster.id()
            );
        } else {
            tracing::warn!(
                unanswered = left,
                "stopping before every produce request was answered (none of those was acknowledged)"
            );
        }
        self.cluster.leave();
        std::process::exit(if left == 0 { 0 } else { 1 });
    }
}

/// Runs the broker until the process is stopped.
pub fn run(args: BrokerArgs) -> anyhow::Result<()> {
    args.validate()?;
    let (kafka_listeners, endpoints) = args.listener_plan()?;
    // SIGTERM/SIGINT: drain, leave the cluster (its partitions move now, not
    // after the lease TTL), exit. A second signal exits at once; nothing
    // unflushed was acknowledged either way.
    let stopping: Arc<std::sync::OnceLock<Stopping>> = Arc::default();
    let on_signal = stopping.clone();
    let signalled = std::sync::atomic::AtomicBool::new(false);
    // SIGHUP: the TLS listeners reload their files (once `security` exists).
    let hangup: Arc<std::sync::OnceLock<Security>> = Arc::default();
    let on_hangup = hangup.clone();
    kafscale_shard::on_signals(
        move |sig| {
            if signalled.swap(true, std::sync::atomic::Ordering::SeqCst) {
                tracing::warn!(signal = sig, "second signal: stopping without draining");
                std::process::exit(1);
            }
            if on_signal.get().is_none() {
                tracing::info!(signal = sig, "stopping during start-up");
                std::process::exit(0);
            }
            // Drain on a thread of its own, so a second signal is still heard.
            let s = on_signal.clone();
            let drain = std::thread::Builder::new()
                .name("kafscale-drain".into())
                .spawn(move || s.get().map(|s| s.drain_and_exit(sig)));
            if let Err(e) = drain {
                tracing::warn!(error = %e, "cannot start draining; stopping now");
                if let Some(s) = on_signal.get() {
                    s.cluster.leave();
                }
                std::process::exit(0);
            }
        },
        move || match on_hangup.get() {
            Some(security) => security.reload_tls(),
            None => tracing::warn!("SIGHUP during start-up: nothing reloaded"),
        },
    )
    .context("cannot install the signal handlers")?;
    // After the signal mask is in place: the hasher thread it may start
    // must not receive SIGTERM.
    let security = Security::from_args(&args, &kafka_listeners)?;
    let _ignored = hangup.set(security.clone());
    match kafscale_shard::raise_memlock_limit() {
        status @ kafscale_shard::MemlockStatus::Unchanged { .. } => tracing::warn!("{status}"),
        status => tracing::info!("{status}"),
    }

    // Segment arenas (9 MiB with the default --segment-bytes) are mapped on
    // their own and go back to the kernel when freed; request frames and S3
    // response bodies (up to a few MiB) come from the heap, which keeps up to
    // 32 MiB freed per arena instead of faulting in fresh pages every time.
    if !kafscale_shard::tune_allocator(8 << 20, 32 << 20) {
        tracing::warn!(
            "could not set the allocator's mmap and trim thresholds; RSS may exceed --memory-budget"
        );
    }
    // Fail before starting anything if a port is taken by another process.
    // Binding (without listening, so no client can connect to the probe)
    // fails with EADDRINUSE when something listens there; SO_REUSEADDR lets
    // our own old connections in TIME_WAIT pass. A broker killed a moment ago
    // can hold its port a little longer (its io_uring is torn down after the
    // process exits), so EADDRINUSE is retried for a few seconds.
    let flag = if args.listeners.is_empty() {
        "--listen"
    } else {
        "--listeners"
    };
    let probes = kafka_listeners
        .iter()
        .map(|l| (l.addr, flag))
        .chain([(args.metrics_listen, "--metrics-listen")]);
    for (addr, flag) in probes {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let probe = socket2::Socket::new(
                socket2::Domain::for_address(addr),
                socket2::Type::STREAM,
                None,
            )?;
            probe.set_reuse_address(true)?;
            match probe.bind(&addr.into()) {
                Ok(()) => break,
                Err(e)
                    if e.kind() == std::io::ErrorKind::AddrInUse
                        && std::time::Instant::now() < deadline =>
                {
                    std::thread::sleep(std::time::Duration::from_millis(100));
                }
                Err(e) => bail!("cannot listen on {addr} ({flag}): {e}"),
            }
        }
    }

    let store = store_config(&args)?;
    if let StoreConfig::S3(cfg) = &store {
        let cfg = cfg.as_ref().clone();
        let create = args.s3_create_bucket;
        kafscale_shard::block_on(move || async move {
            let client = S3Client::new(cfg);
            if create {
                client.create_bucket().await?;
            }
            client.check_bucket().await?;
            match client.config().object_lock {
                Some(_) => client.object_lock_enabled().await.map(Some),
                None => Ok(None),
            }
        })?
        .map_err(|e| anyhow!("cannot use the S3 bucket: {e}"))
        .and_then(|lock| match lock {
            Some(false) => bail!(
                "bucket {} has no object lock, so --s3-object-lock cannot lock segments: \
                 use a bucket created with object lock enabled (S3 enables it only at \
                 creation: `aws s3api create-bucket --object-lock-enabled-for-bucket`)",
                args.s3_bucket.as_deref().unwrap_or_default()
            ),
            _ => Ok(()),
        })?;
    }

    let ns = args.s3_namespace.clone();
    let (meta, _meta_thread) = if args.etcd_endpoints.is_empty() {
        let dir = args.data_dir.join("meta");
        MetaClient::spawn(move || Ok(MetaStore::new(Box::new(FileKv::open(&dir)?), ns)))
    } else {
        let eps = args.etcd_endpoints.clone();
        MetaClient::spawn(move || Ok(MetaStore::new(Box::new(EtcdKv::connect(&eps)?), ns)))
    }
    .map_err(|e| anyhow!("cannot open the metadata store: {e}"))?;

    let me = crate::meta::BrokerInfo {
        id: args.broker_id.unwrap_or(0),
        host: endpoints[0].host.clone(),
        port: endpoints[0].port,
        started_ms: crate::meta::store::now_ms(),
        http_port: args.metrics_listen.port(),
        listeners: endpoints.clone(),
    };
    // Lease renewals and the cluster view go through their own etcd client
    // and thread: behind a backlog of segment commits a renewal could miss
    // the TTL, and a healthy broker would lose its partitions.
    let mut _lease_thread = None;
    let cluster = if args.etcd_endpoints.is_empty() {
        Arc::new(cluster::Cluster::single(me))
    } else {
        let (eps, ns) = (args.etcd_endpoints.clone(), args.s3_namespace.clone());
        let (lease_meta, thread) = MetaClient::spawn_named("kafscale-lease", move || {
            Ok(MetaStore::new(Box::new(EtcdKv::connect(&eps)?), ns))
        })
        .map_err(|e| anyhow!("cannot open the metadata store: {e}"))?;
        _lease_thread = Some(thread);
        let ttl = std::time::Duration::from_secs(args.lease_ttl_secs);
        // A derived id is kept in the data directory (as Kafka's
        // meta.properties), so a restarted broker comes back as itself.
        let id_file = args.data_dir.join("broker.id");
        let id =
            match args.broker_id {
                Some(id) => Some(id),
                None => match std::fs::read_to_string(&id_file) {
                    Ok(s) => Some(s.trim().parse().with_context(|| {
                        format!("{} does not hold a broker id", id_file.display())
                    })?),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                    Err(e) => bail!("cannot read {}: {e}", id_file.display()),
                },
            };
        let c = cluster::Cluster::join(lease_meta, me, id, ttl)
            .map_err(|e| anyhow!("cannot join the cluster in etcd: {e}"))?;
        if id.is_none() {
            std::fs::create_dir_all(&args.data_dir)
                .and_then(|()| std::fs::write(&id_file, format!("{}\n", c.id())))
                .with_context(|| format!("cannot record the broker id in {}", id_file.display()))?;
        }
        c
    };

    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let shards = args.shards.unwrap_or(cores);
    let pin = shards <= cores;
    let kafka = kafka_listeners
        .iter()
        .zip(&endpoints)
        .map(|(l, e)| {
            if l.protocol == listeners::Protocol::Plaintext && args.listeners.is_empty() {
                format!("{} (advertised as {}:{})", l.addr, e.host, e.port)
            } else {
                format!(
                    "{}://{} (advertised as {}:{})",
                    l.protocol, l.addr, e.host, e.port
                )
            }
        })
        .collect::<Vec<_>>()
        .join(", ");
    tracing::info!(
        broker_id = cluster.id(), listeners = %kafka, shards, store = ?store_label(&store),
        metadata = if args.etcd_endpoints.is_empty() { "embedded" } else { "etcd" }, "kafscale broker starting"
    );
    eprintln!(
        "kafscale broker {}: Kafka on {kafka}, metrics on http://{}/metrics, {shards} shards, data in {}",
        cluster.id(),
        args.metrics_listen,
        store_label(&store)
    );

    let metrics = Arc::new(Metrics::default());
    let limits = limits::ConnectionLimits::new(args.max_connections, args.max_connections_per_ip);
    let authorizer = Arc::new(authorizer::Authorizer::load(
        args.authorizer == "acl",
        &args.super_users,
        &meta,
    )?);
    if cluster.is_clustered() {
        authorizer.follow(meta.clone())?;
    }
    let tokens = http_auth::bootstrap(&args, &meta, cluster.id())?;
    let gate = http_auth::Gate {
        tokens: tokens.is_some(),
        all: args.http_auth_all,
        meta: meta.clone(),
    };
    match &tokens {
        Some((_, file)) => eprintln!(
            "REST API on http://{}/v1/: bearer tokens; an admin token is in {}",
            args.metrics_listen,
            file.display()
        ),
        None => eprintln!(
            "REST API on http://{}/v1/: no authentication (--http-auth none)",
            args.metrics_listen
        ),
    }
    let peer_token = tokens.map(|(t, _)| t);
    let (stop, listeners) =
        kafscale_shard::stop_channel(shards).context("cannot set up stopping")?;
    let (drained_tx, drained_rx) = std::sync::mpsc::channel();
    let _ignored = stopping.set(Stopping {
        shards: stop,
        drained: std::sync::Mutex::new(drained_rx),
        cluster: cluster.clone(),
    });
    let mut stop_listeners: Vec<_> = listeners.into_iter().map(Some).collect();
    let args = Arc::new(args);
    let mesh: MeshBuilder<Job, _> = MeshBuilder::full(shards, 1024);
    let kafka_listeners = Arc::new(kafka_listeners);
    let results = kafscale_shard::spawn_shards(shards, pin, |id| {
        let (listeners, security) = (kafka_listeners.clone(), security.clone());
        let (args, store, meta, cluster, metrics, limits, authorizer, mesh) = (
            args.clone(),
            store.clone(),
            meta.clone(),
            cluster.clone(),
            metrics.clone(),
            limits.clone(),
            authorizer.clone(),
            mesh.clone(),
        );
        let stop = Stop {
            listener: stop_listeners[id.0].take().expect("one listener per shard"),
            drained: drained_tx.clone(),
        };
        let net = Net {
            listeners,
            security,
            gate: gate.clone(),
            peer_token: peer_token.clone(),
        };
        move || {
            run_shard(
                args, net, store, meta, cluster, metrics, limits, authorizer, mesh, stop,
            )
        }
    })?;
    for r in results {
        r?;
    }
    Ok(())
}

fn store_config(args: &BrokerArgs) -> anyhow::Result<StoreConfig> {
    match (&args.s3_endpoint, &args.s3_bucket) {
        (Some(endpoint), Some(bucket)) => {
            let creds = Credentials::from_env().context("S3 credentials")?;
            let mut cfg = S3Config::new(endpoint, bucket.clone(), creds)?;
            cfg.region = args.s3_region.clone();
            cfg.object_lock = config::object_lock(args.s3_object_lock, args.s3_retention)?;
            // Segments larger than the threshold go up as streamed multipart.
            cfg.multipart_threshold = cfg
                .multipart_threshold
                .max(args.segment_bytes.0 as usize + 1);
            Ok(StoreConfig::S3(Box::new(cfg)))
        }
        (None, None) => Ok(StoreConfig::Local(args.data_dir.join("objects"))),
        _ => bail!("--s3-endpoint and --s3-bucket go together"),
    }
}

fn store_label(store: &StoreConfig) -> String {
    match store {
        StoreConfig::Local(p) => p.display().to_string(),
        StoreConfig::S3(c) => format!("s3://{} at {}", c.bucket, c.endpoint),
    }
}

/// How long a stopping broker waits for its last flushes and answers (every
/// open segment is due at once, so this is upload + commit time; an
/// unreachable S3 would otherwise hold it forever). Under the 30 s that
/// Kubernetes and many init systems give before SIGKILL.
const DRAIN_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// How long a stopping broker waits, before it drains, for the audit
/// trail's last lines (they are in the log whatever happens) and the last
/// offset changes to be durable in their topics.
const AUDIT_AT_STOP: std::time::Duration = std::time::Duration::from_secs(3);

/// TLS and SASL of the Kafka listeners, shared by every shard.
#[derive(Clone)]
struct Security {
    /// The TLS of SSL listeners (with `--tls-client-ca`, mTLS) and of
    /// SASL_SSL ones (never asks for a client certificate).
    ssl: Option<Arc<listeners::ReloadableTls>>,
    sasl_ssl: Option<Arc<listeners::ReloadableTls>>,
    sasl: Option<Arc<sasl::SaslSettings>>,
    /// `--ssl-principal-mapping-rules`, for clients of mTLS listeners.
    principal_rules: Arc<crate::auth::x500::PrincipalRules>,
}

impl Security {
    fn from_args(args: &BrokerArgs, kafka: &[listeners::Listener]) -> anyhow::Result<Self> {
        let config = |protocol: listeners::Protocol| -> anyhow::Result<_> {
            match (&args.tls_cert, &args.tls_key) {
                (Some(cert), Some(key)) if kafka.iter().any(|l| l.protocol == protocol) => {
                    let files = listeners::TlsFiles {
                        cert: cert.clone(),
                        key: key.clone(),
                        client_ca: args.tls_client_ca.clone(),
                    };
                    let client_auth = protocol == listeners::Protocol::Ssl;
                    Ok(Some(Arc::new(listeners::ReloadableTls::load(
                        files,
                        client_auth,
                    )?)))
                }
                _ => Ok(None),
            }
        };
        let (ssl, sasl_ssl) = (
            config(listeners::Protocol::Ssl)?,
            config(listeners::Protocol::SaslSsl)?,
        );
        let sasl = if kafka.iter().any(|l| l.protocol.sasl()) {
            let hasher =
                crate::auth::hasher::Hasher::spawn().context("cannot start the hasher thread")?;
            Some(Arc::new(sasl::SaslSettings::new(
                &args.sasl_mechanisms,
                args.sasl_session_lifetime_ms,
                hasher,
            )?))
        } else {
            None
        };
        let principal_rules = args
            .ssl_principal_mapping_rules
            .parse()
            .map_err(|e| anyhow::anyhow!("--ssl-principal-mapping-rules: {e}"))?;
        Ok(Self {
            ssl,
            sasl_ssl,
            sasl,
            principal_rules: Arc::new(principal_rules),
        })
    }

    /// SIGHUP: the TLS listeners read their certificate, key and client CA
    /// again. New connections get the new ones; open connections stay as
    /// they are. A file that does not read keeps what is in use.
    fn reload_tls(&self) {
        let kinds = [("SSL", &self.ssl), ("SASL_SSL", &self.sasl_ssl)];
        for (name, tls) in kinds {
            let Some(tls) = tls else { continue };
            match tls.reload() {
                Ok(()) => tracing::info!(listener = name, "SIGHUP: TLS certificates reloaded"),
                Err(e) => tracing::warn!(
                    listener = name,
                    "SIGHUP: TLS certificates not reloaded, the ones in use stay: {e:#}"
                ),
            }
        }
    }

    fn context(&self, protocol: listeners::Protocol) -> listeners::ListenerCtx {
        listeners::ListenerCtx {
            protocol,
            tls: match protocol {
                listeners::Protocol::Ssl => self.ssl.clone(),
                listeners::Protocol::SaslSsl => self.sasl_ssl.clone(),
                _ => None,
            },
            sasl: protocol.sasl().then(|| self.sasl.clone()).flatten(),
            principal_rules: self.principal_rules.clone(),
        }
    }
}

/// A shard's Kafka listeners.
struct Net {
    listeners: Arc<Vec<listeners::Listener>>,
    security: Security,
    /// Who may use the HTTP port (served by shard 0).
    gate: http_auth::Gate,
    /// This broker's token for its peers' REST APIs.
    peer_token: Option<String>,
}

/// A shard's part in stopping: when told, drain and report.
struct Stop {
    listener: kafscale_shard::StopListener,
    drained: std::sync::mpsc::Sender<(usize, usize)>,
}

#[allow(clippy::too_many_arguments)]
async fn run_shard(
    args: Arc<BrokerArgs>,
    net: Net,
    store: StoreConfig,
    meta: MetaClient,
    cluster: Arc<cluster::Cluster>,
    metrics: Arc<Metrics>,
    limits: Arc<limits::ConnectionLimits>,
    authorizer: Arc<authorizer::Authorizer>,
    mesh: MeshBuilder<Job, glommio::channels::channel_mesh::Full>,
    stop: Stop,
) -> anyhow::Result<()> {
    let (senders, mut receivers) = mesh
        .join()
        .await
        .map_err(|e| anyhow!("shards could not connect to each other: {e}"))?;
    let id = senders.peer_id();
    let count = senders.nr_consumers();
    let store = store
        .build()
        .map_err(|e| anyhow!("cannot open the object store: {e}"))?;
    let mut sockets = Vec::new();
    for l in net.listeners.iter() {
        let sock = kafscale_shard::listen(l.addr)
            .map_err(|e| anyhow!("cannot listen on {} ({}): {e}", l.addr, l.protocol))?;
        sockets.push((sock, Rc::new(net.security.context(l.protocol))));
    }
    let (wake_tx, wake_rx) = local_channel::new_bounded(1);
    let shard = Rc::new(Shard::new(
        id,
        count,
        args.clone(),
        store,
        meta,
        cluster,
        metrics.clone(),
        limits,
        authorizer,
        senders,
        wake_tx,
    ));

    let running = Rc::new(glommio::sync::Semaphore::new(shard::MESH_JOBS_RUNNING));
    for (_, stream) in receivers.streams() {
        let s = shard.clone();
        glommio::spawn_local(shard::run_jobs(
            stream,
            running.clone(),
            |job: &Job| !job.waits,
            move |job: Job| (job.work)(s.clone()),
        ))
        .detach();
    }
    glommio::spawn_local(flush::run(shard.clone(), wake_rx)).detach();
    // Stopping also closes this shard's listener, so clients find another
    // broker (or a refused port) instead of a connection that closes at once.
    let (stop_accepting, accept_stopped): (Vec<_>, Vec<_>) = sockets
        .iter()
        .map(|_| local_channel::new_bounded::<()>(1))
        .unzip();
    // Shard 0 appends the last audit lines and offset changes before it
    // drains.
    let (audit_stop, audit_stopped) = local_channel::new_bounded::<()>(1);
    let (audit_done, audit_written) = local_channel::new_bounded::<()>(1);
    let internal = internal_topics::Topics {
        audit: args.audit_topic,
        offsets: args.offset_history,
        offsets_every: args.offset_history_interval.0,
    };
    let audit = id == 0 && (internal.audit || internal.offsets);
    let s = shard.clone();
    glommio::spawn_local(async move {
        stop.listener.wait().await;
        for tx in &stop_accepting {
            let _ignored = tx.try_send(());
        }
        if audit && audit_stop.try_send(()).is_ok() {
            // No more requests first, so what the last ones changed is in
            // what the appender writes.
            s.begin_draining();
            let _ignored = kafscale_shard::within(AUDIT_AT_STOP, audit_written.recv()).await;
        }
        let unanswered = s.drain(DRAIN_TIMEOUT).await;
        // The receiver is gone only if the process is already exiting.
        let _ignored = stop.drained.send((s.id, unanswered));
    })
    .detach();
    if shard.cluster.is_clustered() {
        glommio::spawn_local(hand_over(shard.clone())).detach();
    }
    glommio::spawn_local(mirror::supervise(shard.clone())).detach();
    if id == 0 {
        let l = http::bind(args.metrics_listen)?;
        let api = rest::Api::new(
            shard.meta.clone(),
            metrics.clone(),
            shard.cluster.clone(),
            net.peer_token.clone(),
        );
        let gate = Rc::new(net.gate.clone());
        glommio::spawn_local(http::serve(l, metrics, api, gate)).detach();
        if audit {
            glommio::spawn_local(internal_topics::run(
                shard.clone(),
                internal,
                audit_stopped,
                audit_done,
            ))
            .detach();
        }
    }
    let accepting: Vec<_> = sockets
        .into_iter()
        .zip(accept_stopped)
        .map(|((sock, ctx), stopped)| {
            glommio::spawn_local(accept(shard.clone(), sock, ctx, stopped))
        })
        .collect();
    for a in accepting {
        a.await;
    }
    // The shard's other tasks (connections, flusher, the drain) go on until
    // the process exits.
    futures::future::pending::<()>().await;
    Ok(())
}

/// Accepts one listener's connections until told to stop; then closes it.
async fn accept(
    shard: Rc<Shard>,
    listener: glommio::net::TcpListener,
    ctx: Rc<listeners::ListenerCtx>,
    stopped: local_channel::LocalReceiver<()>,
) {
    loop {
        let accepted = futures_lite::future::or(async { Some(listener.accept().await) }, async {
            let _ignored = stopped.recv().await;
            None
        })
        .await;
        match accepted {
            Some(Ok(stream)) => {
                glommio::spawn_local(conn::serve(shard.clone(), stream, ctx.clone())).detach();
            }
            Some(Err(e)) => {
                tracing::warn!(error = %e, listener = %ctx.protocol, "accept failed");
                glommio::timer::sleep(std::time::Duration::from_millis(10)).await;
            }
            None => break,
        }
    }
}

/// In a cluster: gives up partitions that now hash to another live broker
/// (one joined), so load spreads without copying anything. The new owner
/// claims each on its next request; clients follow NOT_LEADER_OR_FOLLOWER.
async fn hand_over(shard: Rc<Shard>) {
    // A partition stays at least this long where it was claimed, so brief
    // disagreements between brokers' views do not bounce it around.
    let settle = std::time::Duration::from_secs(5);
    loop {
        glommio::timer::sleep(std::time::Duration::from_secs(1)).await;
        for log in shard.owned_logs() {
            let Some(claim) = log.claim else { continue };
            if log.loaded.elapsed() < settle || shard.cluster.prefers_me(&log.topic, log.partition)
            {
                continue;
            }
            shard.drop_log(&log);
            shard
                .cluster
                .release_partition(&shard.meta, &log.topic, log.partition, &claim)
                .await;
        }
    }
}
