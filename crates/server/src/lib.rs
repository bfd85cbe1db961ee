//! The `sextant` peer as a library: configuration ([`settings`]), HTTPS ([`tls`]) and the
//! assembly of one peer ([`start`]: storage, consensus, the distributed layer, the REST
//! router). The binary (`main.rs`) parses the CLI and serves what [`start`] returns; the
//! in-process cluster harness (`tests/harness`) starts several peers in one process through
//! the same code.

pub mod settings;
pub mod tls;

use collection::Storage;
use settings::Settings;
use std::path::PathBuf;
use std::sync::Arc;

/// What start-up needs besides the configuration: the CLI's part.
#[derive(Clone, Debug, Default)]
pub struct StartOptions {
    /// `--bootstrap`.
    pub bootstrap: Option<String>,
    /// `--uri`.
    pub uri: Option<String>,
    /// `--snapshot <path>:<collection>` (repeatable).
    pub snapshots: Vec<String>,
    /// `--storage-snapshot`.
    pub storage_snapshot: Option<String>,
    /// `--force-snapshot`.
    pub force_snapshot: bool,
    /// Tests only: fault rules at this peer's `PeerClient`, steerable while it runs.
    pub faults: Option<distributed::faults::Control>,
}

/// Why start-up stopped.
#[derive(Debug)]
pub enum StartError {
    /// A configuration the peer refuses (the binary exits with status 2).
    Refused(String),
    Failed(anyhow::Error),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Refused(m) => f.write_str(m),
            StartError::Failed(e) => write!(f, "{e:#}"),
        }
    }
}

impl From<anyhow::Error> for StartError {
    fn from(e: anyhow::Error) -> Self {
        StartError::Failed(e)
    }
}

/// One started peer: its REST router and what stopping it needs.
pub struct Peer {
    /// The REST API (with auth, CORS and metrics layers), ready to serve.
    pub app: axum::Router,
    pub state: api::AppState,
    maintenance: Option<std::thread::JoinHandle<()>>,
}

impl Peer {
    pub fn storage(&self) -> &Arc<Storage> {
        &self.state.storage
    }

    /// A graceful stop: flush every WAL, checkpoint, and wait for maintenance to end.
    pub async fn shutdown(mut self) {
        self.state.storage.shutdown();
        if let Some(m) = self.maintenance.take() {
            let _ = tokio::task::spawn_blocking(move || m.join()).await;
        }
    }

    /// What a crash leaves: maintenance stops, nothing is flushed. The caller then drops
    /// the runtime the peer ran on (tests only).
    pub fn halt(&self) {
        self.state.storage.halt();
    }
}

/// Open storage (recovering start-up snapshots), start consensus in cluster mode, and
/// build the REST router with the distributed layer behind it.
pub async fn start(settings: &Settings, opts: StartOptions) -> Result<Peer, StartError> {
    let storage_path = PathBuf::from(&settings.storage.storage_path);
    std::fs::create_dir_all(&storage_path).map_err(anyhow::Error::from)?;
    std::fs::create_dir_all(&settings.storage.snapshots_path).map_err(anyhow::Error::from)?;
    let defaults = settings.collection_defaults();
    // cluster mode: a collection that cannot be opened is quarantined and its replicas are
    // rebuilt from other peers; a single node refuses to start instead
    let quarantine = settings.cluster.enabled;
    let snapshots_path = PathBuf::from(&settings.storage.snapshots_path);
    let (snapshots, full, force) = (
        opts.snapshots.clone(),
        opts.storage_snapshot.clone(),
        opts.force_snapshot,
    );
    // as in Qdrant, start-up recovery is for a single node: in a cluster, collections and
    // their placement belong to consensus, which a local start-up step cannot change
    if settings.cluster.enabled && (!snapshots.is_empty() || full.is_some()) {
        return Err(StartError::Refused(
            "--snapshot / --storage-snapshot recover a single node only (as in Qdrant): in cluster mode, start the peer without them and use PUT /collections/{name}/snapshots/recover or POST /collections/{name}/snapshots/upload on it".into(),
        ));
    }
    let storage: Arc<Storage> = tokio::task::spawn_blocking(move || {
        let storage = Storage::open_with(&storage_path, defaults, quarantine)?;
        recover_at_start(
            &storage,
            &snapshots,
            full.as_deref(),
            force,
            &snapshots_path,
        )?;
        Ok::<_, anyhow::Error>(storage)
    })
    .await
    .map_err(anyhow::Error::from)??;
    let maintenance = storage.start_maintenance();
    let lost: distributed::cluster_sink::Lost = Default::default();
    let cluster = if settings.cluster.enabled {
        let sink = Arc::new(distributed::cluster_sink::StorageSink {
            storage: storage.clone(),
            me: Default::default(),
            lost: lost.clone(),
        });
        let cfg = node_config(settings, &opts)?;
        // the node tells the sink its id (`EffectSink::started`) before opening the state
        let n = cluster::node::ClusterNode::start(cfg, sink)
            .await
            .map_err(|e| StartError::Refused(e.to_string()))?;
        tracing::info!(peer_id = n.id, uri = %n.uri, "cluster mode: consensus running");
        Some(n)
    } else {
        None
    };
    let dist = distributed::Ctx {
        heal: distributed::heal::HealConfig {
            enabled: settings.cluster.self_heal.enabled,
            dead_peer_timeout: std::time::Duration::from_secs(
                settings.cluster.self_heal.dead_peer_timeout_sec,
            ),
            ..Default::default()
        },
        anti_entropy_interval: (settings.cluster.anti_entropy.interval_sec > 0)
            .then(|| std::time::Duration::from_secs(settings.cluster.anti_entropy.interval_sec)),
        faults: opts.faults.clone(),
        ..distributed::Ctx::new(storage.clone(), cluster.clone(), lost)
    };
    let state = api::AppState {
        cluster,
        local_router: Default::default(),
        points: distributed::points::service(&dist),
        collections: distributed::collections::service(&dist),
        dist,
        storage,
        settings: api::ApiSettings {
            max_request_bytes: settings.max_request_bytes(),
            auth: settings.auth(),
            enable_cors: settings.service.enable_cors.unwrap_or(true),
            metrics_prefix: settings.service.metrics_prefix.clone().unwrap_or_default(),
            snapshots_path: PathBuf::from(&settings.storage.snapshots_path),
            snapshot_url_recovery: settings
                .service
                .enable_snapshot_url_recovery
                .unwrap_or(true),
        },
        metrics: Default::default(),
    };
    let app = api::router(state.clone());
    Ok(Peer {
        app,
        state,
        maintenance: Some(maintenance),
    })
}

fn node_config(
    settings: &Settings,
    opts: &StartOptions,
) -> Result<cluster::node::NodeConfig, StartError> {
    let tls = if settings.cluster.p2p.enable_tls == Some(true) {
        let read = |what: &str, p: &str| {
            std::fs::read(p).map_err(|e| {
                StartError::Refused(format!("cluster.p2p.enable_tls: {what} {p}: {e}"))
            })
        };
        Some(cluster::network::P2pTls {
            cert_pem: read("tls.cert", &settings.tls.cert)?,
            key_pem: read("tls.key", &settings.tls.key)?,
            ca_pem: read("tls.ca_cert", &settings.tls.ca_cert)?,
        })
    } else {
        None
    };
    Ok(cluster::node::NodeConfig {
        dir: PathBuf::from(&settings.storage.storage_path).join("raft"),
        p2p_port: settings.cluster.p2p.port,
        uri: opts.uri.clone(),
        bootstrap: opts.bootstrap.clone(),
        tick_ms: settings.cluster.consensus.tick_period_ms,
        max_request_bytes: settings.max_request_bytes(),
        api_key: settings.auth().api_key,
        enforce_internal_auth: settings.service.enforce_internal_auth == Some(true),
        tls,
    })
}

/// `--snapshot <path>:<collection>` and `--storage-snapshot <path>`: recover before serving.
/// A collection that exists is replaced only with `--force-snapshot`; any failure stops
/// start-up (nothing is served from a half-recovered storage).
fn recover_at_start(
    storage: &Storage,
    snapshots: &[String],
    full: Option<&str>,
    force: bool,
    snapshots_path: &std::path::Path,
) -> anyhow::Result<()> {
    use collection::snapshot;
    if let Some(path) = full {
        let work = snapshots_path
            .join(".tmp")
            .join(format!("start-{}", std::process::id()));
        std::fs::create_dir_all(snapshots_path.join(".tmp"))?;
        let _ = std::fs::remove_dir_all(&work);
        let names = snapshot::recover_full(storage, std::path::Path::new(path), &work, force)
            .map_err(|e| anyhow::anyhow!("--storage-snapshot {path}: {e}{}", exists_hint(&e)))?;
        tracing::info!(path, collections = ?names, "storage snapshot recovered");
    }
    for arg in snapshots {
        let (path, name) = arg
            .rsplit_once(':')
            .ok_or_else(|| anyhow::anyhow!("--snapshot {arg}: expected <path>:<collection>"))?;
        if storage.exists(name) && !force {
            anyhow::bail!(
                "--snapshot {arg}: collection {name} already exists (add --force-snapshot to replace it)"
            );
        }
        snapshot::recover(storage, name, std::path::Path::new(path), None)
            .map_err(|e| anyhow::anyhow!("--snapshot {arg}: {e}"))?;
        tracing::info!(path, collection = name, "collection snapshot recovered");
    }
    Ok(())
}

fn exists_hint(e: &collection::CollectionError) -> &'static str {
    match e {
        collection::CollectionError::AlreadyExists(_) => " (add --force-snapshot to replace it)",
        _ => "",
    }
}
