//! `sextant`: the server binary. Parses the CLI, loads configuration, opens storage and
//! serves the REST API until SIGINT/SIGTERM, then flushes every WAL.

/// mimalloc: measured against glibc malloc in bench/cluster.py (docs/benchmarks-cluster.md).
/// Freed memory is returned after loads and graph builds through
/// `collection::set_memory_release` (`mi_collect`, installed in `main`); memory with it:
/// docs/memory.md. `collection::tune_allocator` only shapes glibc's heap (C code) now.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use server::settings::Settings;
use server::{tls, StartError, StartOptions};
use std::net::SocketAddr;

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
    // freed memory goes back to the kernel after loads and graph builds (mimalloc keeps
    // freed pages of a thread's heap until that thread allocates again)
    collection::set_memory_release(|| {
        // SAFETY: mi_collect only walks mimalloc's own heaps and segments.
        unsafe { libmimalloc_sys::mi_collect(true) }
    });
    // graph builds yield the CPU to requests (segment::background)
    collection::init_background_pool().expect("the background pool starts first");
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

async fn run(settings: Settings, args: Args) -> anyhow::Result<()> {
    let opts = StartOptions {
        bootstrap: args.bootstrap.clone(),
        uri: args.uri.clone(),
        snapshots: args.snapshot.clone(),
        storage_snapshot: args.storage_snapshot.clone(),
        force_snapshot: args.force_snapshot,
        faults: None,
    };
    let peer = match server::start(&settings, opts).await {
        Ok(p) => p,
        Err(StartError::Refused(m)) => {
            eprintln!("sextant: {m}");
            std::process::exit(2);
        }
        Err(StartError::Failed(e)) => return Err(e),
    };
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
        axum::serve(tls::TlsListener::new(listener, cfg)?, peer.app.clone())
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
        axum::serve(listener, peer.app.clone())
            .with_graceful_shutdown(shutdown_signal())
            .await?;
    }
    tracing::info!("shutting down: flushing write-ahead logs");
    peer.shutdown().await;
    Ok(())
}
