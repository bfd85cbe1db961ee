//! Configuration, layered exactly as Qdrant layers it: embedded defaults, then
//! `config/config.yaml`, `config/$RUN_MODE.yaml` (RUN_MODE defaults to `development`),
//! `config/local.yaml`, `--config-path FILE`, then `QDRANT__SECTION__KEY` env variables.
//! A value of the wrong type fails start-up naming the key. No key is ignored silently
//! ([`Settings::unimplemented`]): a key Sextant does not implement logs a warning naming it,
//! and a security key it does not implement (audit) stops start-up.

use config::{Config, Environment, File, FileFormat};
use serde::Deserialize;

const DEFAULTS: &str = include_str!("default_config.yaml");

#[derive(Debug, Clone, Deserialize)]
pub struct Settings {
    pub log_level: String,
    pub service: ServiceConfig,
    pub storage: StorageConfig,
    pub cluster: ClusterConfig,
    #[serde(default)]
    pub tls: TlsConfig,
    #[serde(default)]
    pub logger: LoggerConfig,
    /// The keys of the merged configuration Sextant does not implement (set by `load`).
    #[serde(skip)]
    pub unimplemented: Unimplemented,
}

/// `logger`: `format` (`text` or `json`) of the log lines on stdout.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct LoggerConfig {
    #[serde(default)]
    pub format: Option<String>,
}

/// `tls`: PEM files of the REST API's HTTPS (Qdrant's default paths).
#[derive(Debug, Clone, Deserialize)]
pub struct TlsConfig {
    #[serde(default = "d_cert")]
    pub cert: String,
    #[serde(default = "d_key")]
    pub key: String,
    #[serde(default = "d_ca")]
    pub ca_cert: String,
}

fn d_cert() -> String {
    "./tls/cert.pem".into()
}
fn d_key() -> String {
    "./tls/key.pem".into()
}
fn d_ca() -> String {
    "./tls/cacert.pem".into()
}

impl Default for TlsConfig {
    fn default() -> Self {
        TlsConfig {
            cert: d_cert(),
            key: d_key(),
            ca_cert: d_ca(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct ServiceConfig {
    pub host: String,
    pub http_port: u16,
    #[allow(dead_code)] // the public gRPC API is not served yet
    pub grpc_port: Option<u16>,
    pub max_request_size_mb: usize,
    #[serde(default)]
    pub max_workers: Option<usize>,
    #[serde(default)]
    pub enable_cors: Option<bool>,
    #[serde(default)]
    pub api_key: Option<String>,
    #[serde(default)]
    pub read_only_api_key: Option<String>,
    #[serde(default)]
    pub jwt_rbac: Option<bool>,
    #[serde(default)]
    pub enforce_internal_auth: Option<bool>,
    #[serde(default)]
    pub metrics_prefix: Option<String>,
    #[serde(default)]
    pub enable_tls: Option<bool>,
    #[serde(default)]
    pub verify_https_client_certificate: Option<bool>,
    /// Recovery of snapshots from http(s) URLs (default true).
    #[serde(default)]
    pub enable_snapshot_url_recovery: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct WalSettings {
    pub wal_capacity_mb: u64,
    pub wal_segments_ahead: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct OptimizerSettings {
    pub deleted_threshold: f64,
    pub vacuum_min_vector_number: u64,
    pub default_segment_number: u64,
    pub max_segment_size_kb: Option<u64>,
    pub indexing_threshold_kb: Option<u64>,
    pub flush_interval_sec: u64,
    pub max_optimization_threads: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct HnswSettings {
    pub m: u64,
    pub ef_construct: u64,
    pub full_scan_threshold_kb: u64,
    pub max_indexing_threads: u64,
    pub on_disk: Option<bool>,
    pub payload_m: Option<u64>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct StorageConfig {
    pub storage_path: String,
    pub snapshots_path: String,
    #[allow(dead_code)]
    // accepted for compatibility; Sextant writes temp files next to their target
    pub temp_path: Option<String>,
    pub on_disk_payload: bool,
    pub wal: WalSettings,
    pub optimizers: OptimizerSettings,
    pub hnsw_index: HnswSettings,
}

#[derive(Debug, Clone, Deserialize)]
pub struct P2pConfig {
    pub port: u16,
    #[serde(default)]
    pub enable_tls: Option<bool>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ConsensusConfig {
    pub tick_period_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
pub struct ClusterConfig {
    pub enabled: bool,
    pub p2p: P2pConfig,
    pub consensus: ConsensusConfig,
    pub self_heal: SelfHealConfig,
    pub anti_entropy: AntiEntropyConfig,
}

/// `cluster.anti_entropy` (Sextant's own section).
#[derive(Debug, Clone, Deserialize)]
pub struct AntiEntropyConfig {
    /// 0: off.
    pub interval_sec: u64,
}

/// `cluster.self_heal` (Sextant's own section).
#[derive(Debug, Clone, Deserialize)]
pub struct SelfHealConfig {
    pub enabled: bool,
    pub dead_peer_timeout_sec: u64,
}

/// Keys Sextant reads (dotted paths; a key ending in `.` covers everything below it).
const IMPLEMENTED: &[&str] = &[
    "log_level",
    "logger.format",
    "storage.storage_path",
    "storage.snapshots_path",
    "storage.on_disk_payload",
    "storage.wal.",
    "storage.optimizers.",
    "storage.hnsw_index.",
    "service.host",
    "service.http_port",
    "service.grpc_port",
    "service.max_request_size_mb",
    "service.max_workers",
    "service.enable_cors",
    "service.api_key",
    "service.read_only_api_key",
    "service.jwt_rbac",
    "service.enforce_internal_auth",
    "service.metrics_prefix",
    "service.enable_tls",
    "service.verify_https_client_certificate",
    "service.enable_snapshot_url_recovery",
    "tls.cert",
    "tls.key",
    "tls.ca_cert",
    "cluster.enabled",
    "cluster.p2p.port",
    "cluster.p2p.enable_tls",
    "cluster.consensus.tick_period_ms",
    "cluster.self_heal.",
    "cluster.anti_entropy.",
    // accepted: Sextant writes its temporary files next to their targets, and sends no
    // telemetry anywhere
    "storage.temp_path",
    "telemetry_disabled",
];

/// Security keys: when set to anything but their off value and not implemented, Sextant
/// refuses to start rather than run less protected than configured.
const SECURITY: &[&str] = &["audit."];

/// Values that mean "off" (or Qdrant's default) for a key: setting a key to one of them
/// asks for nothing Sextant lacks.
fn is_off(v: &serde_json::Value) -> bool {
    matches!(v, serde_json::Value::Null | serde_json::Value::Bool(false))
        || v.as_str()
            .is_some_and(|s| s.eq_ignore_ascii_case("false") || s.is_empty())
}

fn covered(list: &[&str], key: &str) -> bool {
    list.iter()
        .any(|k| key == *k || (k.ends_with('.') && key.starts_with(k)))
}

fn leaves(prefix: &str, v: &serde_json::Value, out: &mut Vec<(String, serde_json::Value)>) {
    match v {
        serde_json::Value::Object(m) if !m.is_empty() => {
            for (k, x) in m {
                let p = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                leaves(&p, x, out);
            }
        }
        _ => out.push((prefix.to_string(), v.clone())),
    }
}

/// Keys that are set but that Sextant does not implement.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Unimplemented {
    /// Ignored, each to be named in a warning.
    pub ignored: Vec<String>,
    /// Security settings that are switched on: start-up must stop.
    pub refused: Vec<String>,
}

impl Settings {
    /// The keys of the merged configuration `cfg` (files and environment) that Sextant does
    /// not implement. The embedded defaults hold only implemented keys, so anything else was
    /// set by the user.
    fn unimplemented_in(cfg: &serde_json::Value) -> Unimplemented {
        let mut all = Vec::new();
        leaves("", cfg, &mut all);
        let mut out = Unimplemented::default();
        for (key, value) in all {
            if covered(IMPLEMENTED, &key) {
                continue;
            }
            if covered(SECURITY, &key) {
                if !is_off(&value) {
                    out.refused.push(key);
                }
                continue;
            }
            out.ignored.push(key);
        }
        out.ignored.sort();
        out.refused.sort();
        out
    }

    fn builder(
        config_path: Option<&str>,
        env_prefix: &str,
    ) -> Result<config::ConfigBuilder<config::builder::DefaultState>, String> {
        let run_mode = std::env::var("RUN_MODE").unwrap_or_else(|_| "development".to_string());
        let mut b = Config::builder()
            .add_source(File::from_str(DEFAULTS, FileFormat::Yaml))
            .add_source(File::with_name("config/config").required(false))
            .add_source(File::with_name(&format!("config/{run_mode}")).required(false))
            .add_source(File::with_name("config/local").required(false));
        if let Some(p) = config_path {
            if !std::path::Path::new(p).exists() {
                return Err(format!("config file {p} (--config-path) does not exist"));
            }
            b = b.add_source(File::with_name(p).required(true));
        }
        Ok(b.add_source(Environment::with_prefix(env_prefix).separator("__")))
    }

    /// Load settings. `config_path` is `--config-path`; `env_prefix` is normally `QDRANT`.
    pub fn load(config_path: Option<&str>, env_prefix: &str) -> Result<Settings, String> {
        let cfg = Self::builder(config_path, env_prefix)?
            .build()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        let tree: serde_json::Value = cfg
            .clone()
            .try_deserialize()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        let mut s: Settings = cfg
            .try_deserialize()
            .map_err(|e| format!("invalid configuration: {e}"))?;
        s.validate()?;
        s.unimplemented = Self::unimplemented_in(&tree);
        Ok(s)
    }

    /// `service.max_request_size_mb` in bytes: the body limit of the REST API and of the
    /// messages between peers.
    pub fn max_request_bytes(&self) -> usize {
        self.service.max_request_size_mb.saturating_mul(1 << 20)
    }

    /// Defaults for new collections, from the `storage` section (as Qdrant uses them).
    pub fn collection_defaults(&self) -> collection::config::CollectionDefaults {
        use collection::config::{CollectionDefaults, HnswConfig, OptimizersConfig, WalConfig};
        let st = &self.storage;
        CollectionDefaults {
            on_disk_payload: st.on_disk_payload,
            hnsw: HnswConfig {
                m: st.hnsw_index.m,
                ef_construct: st.hnsw_index.ef_construct,
                full_scan_threshold: st.hnsw_index.full_scan_threshold_kb,
                max_indexing_threads: st.hnsw_index.max_indexing_threads,
                on_disk: st.hnsw_index.on_disk,
                payload_m: st.hnsw_index.payload_m,
            },
            optimizers: OptimizersConfig {
                deleted_threshold: st.optimizers.deleted_threshold,
                vacuum_min_vector_number: st.optimizers.vacuum_min_vector_number,
                default_segment_number: st.optimizers.default_segment_number,
                max_segment_size: st.optimizers.max_segment_size_kb,
                memmap_threshold: None,
                indexing_threshold: st.optimizers.indexing_threshold_kb,
                flush_interval_sec: st.optimizers.flush_interval_sec,
                max_optimization_threads: st.optimizers.max_optimization_threads,
            },
            wal: WalConfig {
                wal_capacity_mb: st.wal.wal_capacity_mb,
                wal_segments_ahead: st.wal.wal_segments_ahead,
            },
        }
    }

    /// The REST layer's access settings (an empty key counts as unset).
    pub fn auth(&self) -> api::auth::AuthConfig {
        let key = |k: &Option<String>| k.clone().filter(|s| !s.is_empty());
        api::auth::AuthConfig {
            api_key: key(&self.service.api_key),
            read_only_api_key: key(&self.service.read_only_api_key),
            jwt_rbac: self.service.jwt_rbac.unwrap_or(false),
        }
    }

    fn validate(&self) -> Result<(), String> {
        if self.service.jwt_rbac == Some(true) && self.auth().api_key.is_none() {
            return Err(
                "invalid configuration: service.jwt_rbac needs service.api_key (tokens are signed with it)"
                    .into(),
            );
        }
        if self.service.max_request_size_mb == 0 {
            return Err(
                "invalid configuration: service.max_request_size_mb must be at least 1".into(),
            );
        }
        if self.storage.wal.wal_capacity_mb == 0 {
            return Err(
                "invalid configuration: storage.wal.wal_capacity_mb must be at least 1".into(),
            );
        }
        if self.cluster.self_heal.dead_peer_timeout_sec == 0 {
            return Err(
                "invalid configuration: cluster.self_heal.dead_peer_timeout_sec must be at least 1"
                    .into(),
            );
        }
        if self.cluster.consensus.tick_period_ms == 0 {
            return Err(
                "invalid configuration: cluster.consensus.tick_period_ms must be at least 1".into(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Each test uses its own env prefix so tests running in parallel cannot interfere.
    #[test]
    fn defaults_load() {
        let s = Settings::load(None, "SEXTANT_TEST_NONE").unwrap();
        assert_eq!(s.service.http_port, 6333);
        assert_eq!(s.service.grpc_port, Some(6334));
        assert_eq!(s.cluster.p2p.port, 6335);
        assert_eq!(s.storage.storage_path, "./storage");
        assert_eq!(s.cluster.consensus.tick_period_ms, 100);
    }

    #[test]
    fn env_overrides_and_errors_name_the_key() {
        std::env::set_var("SEXTANT_TEST_A__SERVICE__HTTP_PORT", "7000");
        std::env::set_var("SEXTANT_TEST_A__CLUSTER__P2P__PORT", "7001");
        std::env::set_var("SEXTANT_TEST_A__LOG_LEVEL", "debug");
        std::env::set_var("SEXTANT_TEST_A__SOMETHING__UNKNOWN", "x");
        let s = Settings::load(None, "SEXTANT_TEST_A").unwrap();
        assert_eq!(s.service.http_port, 7000);
        assert_eq!(s.cluster.p2p.port, 7001);
        assert_eq!(s.log_level, "debug");
        std::env::set_var("SEXTANT_TEST_B__SERVICE__HTTP_PORT", "not-a-port");
        let e = Settings::load(None, "SEXTANT_TEST_B").unwrap_err();
        assert!(e.contains("service.http_port"), "{e}");
    }

    #[test]
    fn unimplemented_keys_are_named_and_security_ones_refused() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.yaml");
        std::fs::write(
            &p,
            "service:\n  api_key: k\n  enable_tls: false\n  hardware_reporting: true\nstorage:\n  performance:\n    max_search_threads: 2\ntls:\n  cert: ./x.pem\n  cert_ttl: 60\ncluster:\n  p2p:\n    enable_tls: false\n",
        )
        .unwrap();
        let u = Settings::load(Some(p.to_str().unwrap()), "SEXTANT_TEST_U")
            .unwrap()
            .unimplemented;
        assert_eq!(
            u.ignored,
            vec![
                "service.hardware_reporting",
                "storage.performance.max_search_threads",
                "tls.cert_ttl"
            ]
        );
        assert!(u.refused.is_empty(), "{u:?}");
        std::env::set_var("SEXTANT_TEST_V__SERVICE__ENABLE_TLS", "true");
        std::env::set_var("SEXTANT_TEST_V__CLUSTER__P2P__ENABLE_TLS", "true");
        let u = Settings::load(None, "SEXTANT_TEST_V")
            .unwrap()
            .unimplemented;
        assert!(u.refused.is_empty(), "{u:?}");
        std::env::set_var("SEXTANT_TEST_W__AUDIT__ENABLED", "true");
        let u = Settings::load(None, "SEXTANT_TEST_W")
            .unwrap()
            .unimplemented;
        assert_eq!(u.refused, vec!["audit.enabled"]);
        assert!(
            Settings::load(None, "SEXTANT_TEST_NONE")
                .unwrap()
                .unimplemented
                == Unimplemented::default()
        );
    }

    #[test]
    fn config_file_layer() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("c.yaml");
        std::fs::write(&p, "service:\n  http_port: 7100\nstorage:\n  storage_path: /tmp/x\nunknown_section:\n  a: 1\n").unwrap();
        let s = Settings::load(Some(p.to_str().unwrap()), "SEXTANT_TEST_C").unwrap();
        assert_eq!(s.service.http_port, 7100);
        assert_eq!(s.storage.storage_path, "/tmp/x");
        assert!(Settings::load(Some("/nonexistent.yaml"), "SEXTANT_TEST_C").is_err());
    }
}
