//! `sextant`: the server binary. Parses the CLI, loads configuration, opens storage and
//! serves the REST API until SIGINT/SIGTERM, then flushes every WAL.

/// mimalloc: measured against glibc malloc in bench/cluster.py (docs/benchmarks-cluster.md).
/// `collection::tune_allocator` and the `malloc_trim` after loads only reach glibc's heap
/// now (allocations of C code); memory was last measured (docs/memory.md) with glibc.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

mod settings;
mod tls;

use clap::Parser;
use collection::Storage;
use settings::Settings;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

#[derive(Parser, Debug)]
#[command(
    name = "sextant",
    version,
    about = "Sextant: a Qdrant-compatible vector database"
)]
struct Args {
    /// URI of a peer to bootstrap from (cluster mode).
    #[arg(long, env = "QDRANT_BOOTSTRAP")]
    bootstrap: Option<String>,
    /// This peer's own p2p URI (cluster mode; required for the first peer).
    #[arg(long, env = "QDRANT_URI")]
    uri: Option<String>,
    /// Extra configuration file, applied after config/*.yaml and before env variables.
    #[arg(long)]
    config_path: Option<String>,
    /// Recover a collection from a snapshot file before serving: `<path>:<collection>`
    /// (repeatable; single node).
    #[arg(long)]
    snapshot: Vec<String>,
    /// Recover every collection of a full-storage snapshot file before serving (single node).
    #[arg(long)]
    storage_snapshot: Option<String>,
    /// Let `--snapshot` / `--storage-snapshot` replace collections that already exist.
    #[arg(long, default_value_t = false)]
    force_snapshot: bool,
    #[arg(long, default_value_t = false)]
    disable_telemetry: bool,
    #[arg(long, default_value_t = false)]
    stacktrace: bool,
    #[arg(long, default_value_t = false)]
    reinit: bool,
}

/// `log_level` is a level (`INFO`) or a full filter directive (`info,openraft=debug`). With
/// a plain level, the internals of openraft, tonic and the HTTP stack log at warn (they are
/// noisy at info); a directive naming them decides for itself. `logger.format: json`
/// writes one JSON object per line.
fn init_logging(level: &str, json: bool) {
    let directive = match level.to_ascii_lowercase().as_str() {
        l @ ("trace" | "debug" | "info" | "warn" | "error" | "off") => {
            format!("{l},openraft=warn,tonic=warn,h2=warn,hyper=warn,hyper_util=warn,tower=warn")
        }
        other => other.to_string(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directive)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // colours only on a terminal: log files and pipes get plain text
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stdout()));
    if json {
        b.json().init();
    } else {
        b.init();
    }
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("install SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

fn main() -> anyhow::Result<()> {
    collection::tune_allocator();
    let args = Args::parse();
    let settings = match Settings::load(args.config_path.as_deref(), "QDRANT") {
        Ok(s) => s,
        Err(e) => {
            eprintln!("sextant: {e}");
            std::process::exit(2);
        }
    };
    init_logging(
        &settings.log_level,
        settings
            .logger
            .format
            .as_deref()
            .is_some_and(|f| f.eq_ignore_ascii_case("json")),
    );
    let unimplemented = &settings.unimplemented;
    if !unimplemented.refused.is_empty() {
        eprintln!(
            "sextant: refusing to start: security setting(s) {} are not implemented by Sextant yet (unset them, or terminate TLS in front of Sextant)",
            unimplemented.refused.join(", ")
        );
        std::process::exit(2);
    }
    for key in &unimplemented.ignored {
        tracing::warn!(key = %key, "configuration key is not implemented by Sextant and is ignored");
    }
    for (flag, used) in [("--stacktrace", args.stacktrace), ("--reinit", args.reinit)] {
        if used {
            tracing::warn!(
                flag,
                "command-line flag is not implemented by Sextant and is ignored"
            );
        }
    }
    if settings.cluster.enabled
        && settings.auth().api_key.is_some()
        && settings.service.enforce_internal_auth != Some(true)
    {
        tracing::warn!("service.api_key is set but service.enforce_internal_auth is not: the p2p port accepts internal requests without a key");
    }
    if !settings.cluster.enabled && (args.bootstrap.is_some() || args.uri.is_some()) {
        eprintln!("sextant: --uri/--bootstrap need cluster mode: set cluster.enabled: true (or QDRANT__CLUSTER__ENABLED=true)");
        std::process::exit(2);
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .worker_threads(
            settings
                .service
                .max_workers
                .filter(|w| *w > 0)
                .unwrap_or_else(|| {
                    std::thread::available_parallelism()
                        .map(|n| n.get())
                        .unwrap_or(2)
                }),
        )
        .build()?;
    rt.block_on(run(settings, args))
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

async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let storage_path = PathBuf::from(&settings.storage.storage_path);
    std::fs::create_dir_all(&storage_path)?;
    std::fs::create_dir_all(&settings.storage.snapshots_path)?;
    let defaults = settings.collection_defaults();
    // cluster mode: a collection that cannot be opened is quarantined and its replicas are
    // rebuilt from other peers; a single node refuses to start instead
    let quarantine = settings.cluster.enabled;
    let snapshots_path = PathBuf::from(&settings.storage.snapshots_path);
    let (snapshots, full, force) = (
        args.snapshot.clone(),
        args.storage_snapshot.clone(),
        args.force_snapshot,
    );
    if settings.cluster.enabled && (!snapshots.is_empty() || full.is_some()) {
        eprintln!("sextant: --snapshot / --storage-snapshot are not supported in cluster mode yet");
        std::process::exit(2);
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
    .await??;
    let maintenance = storage.start_maintenance();
    let lost: distributed::cluster_sink::Lost = Default::default();
    let cluster = if settings.cluster.enabled {
        let cfg = cluster::node::NodeConfig {
            dir: PathBuf::from(&settings.storage.storage_path).join("raft"),
            p2p_port: settings.cluster.p2p.port,
            uri: args.uri.clone(),
            bootstrap: args.bootstrap.clone(),
            tick_ms: settings.cluster.consensus.tick_period_ms,
            max_request_bytes: settings.service.max_request_size_mb.saturating_mul(1 << 20),
            api_key: settings.auth().api_key,
            enforce_internal_auth: settings.service.enforce_internal_auth == Some(true),
            tls: if settings.cluster.p2p.enable_tls == Some(true) {
                let read = |what: &str, p: &str| {
                    std::fs::read(p).unwrap_or_else(|e| {
                        eprintln!("sextant: cluster.p2p.enable_tls: {what} {p}: {e}");
                        std::process::exit(2);
                    })
                };
                Some(cluster::network::P2pTls {
                    cert_pem: read("tls.cert", &settings.tls.cert),
                    key_pem: read("tls.key", &settings.tls.key),
                    ca_pem: read("tls.ca_cert", &settings.tls.ca_cert),
                })
            } else {
                None
            },
        };
        let sink = Arc::new(distributed::cluster_sink::StorageSink {
            storage: storage.clone(),
            me: Default::default(),
            lost: lost.clone(),
        });
        match cluster::node::ClusterNode::start(cfg, sink.clone()).await {
            Ok(n) => {
                let _ = sink.me.set(n.id);
                tracing::info!(peer_id = n.id, uri = %n.uri, "cluster mode: consensus running");
                Some(n)
            }
            Err(e) => {
                eprintln!("sextant: {e}");
                std::process::exit(2);
            }
        }
    } else {
        None
    };
    let state = api::AppState {
        cluster: cluster.clone(),
        local_router: Default::default(),
        dist: distributed::Ctx {
            heal: distributed::heal::HealConfig {
                enabled: settings.cluster.self_heal.enabled,
                dead_peer_timeout: std::time::Duration::from_secs(
                    settings.cluster.self_heal.dead_peer_timeout_sec,
                ),
                ..Default::default()
            },
            anti_entropy_interval: (settings.cluster.anti_entropy.interval_sec > 0).then(|| {
                std::time::Duration::from_secs(settings.cluster.anti_entropy.interval_sec)
            }),
            ..distributed::Ctx::new(storage.clone(), cluster.clone(), lost)
        },
        storage: storage.clone(),
        settings: api::ApiSettings {
            max_request_bytes: settings.service.max_request_size_mb.saturating_mul(1 << 20),
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
    let app = api::router(state);
    let addr: SocketAddr = format!("{}:{}", settings.service.host, settings.service.http_port)
        .parse()
        .or_else(|_| format!("[{}]:{}", settings.service.host, settings.service.http_port).parse())
        .map_err(|e| anyhow::anyhow!("invalid service.host / service.http_port: {e}"))?;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
    if settings.service.enable_tls == Some(true) {
        let client_ca = (settings.service.verify_https_client_certificate == Some(true))
            .then_some(settings.tls.ca_cert.as_str());
        let cfg = tls::server_config(&settings.tls.cert, &settings.tls.key, client_ca)
            .map_err(|e| anyhow::anyhow!("service.enable_tls: {e}"))?;
        tracing::info!(%addr, client_certificates = client_ca.is_some(), "Sextant REST API listening (HTTPS)");
        axum::serve(tls::TlsListener::new(listener, cfg)?, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
    } else {
        tracing::info!(%addr, "Sextant REST API listening");
        // Nagle off: small answers must not wait for the client's delayed ACK
        let listener = axum::serve::ListenerExt::tap_io(listener, |s| {
            if let Err(e) = s.set_nodelay(true) {
                tracing::warn!(error = %e, "cannot set TCP_NODELAY");
            }
        });
        axum::serve(listener, app)
            .with_graceful_shutdown(shutdown_signal())
            .await?;
    }
    tracing::info!("shutting down: flushing write-ahead logs");
    storage.shutdown();
    let _ = tokio::task::spawn_blocking(move || maintenance.join()).await;
    Ok(())
}
