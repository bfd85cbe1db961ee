//! Raft transport over the internal gRPC API (tonic). Raft messages travel as MessagePack
//! inside `RaftMessage.data`; replies carry `Result<Response, RaftError>`.

use crate::proto::p2p_client::P2pClient;
use crate::proto::RaftMessage;
use crate::types::*;
use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError, RemoteError, Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::BasicNode;
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};

/// Smallest limit of a gRPC message between peers (snapshots and batches).
pub const MIN_MESSAGE_BYTES: usize = 256 << 20;

static MESSAGE_LIMIT: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Set the largest message between peers (first call wins): at least `MIN_MESSAGE_BYTES`,
/// and enough for any write the public API accepts once re-encoded (MessagePack can be
/// ~2.5x the JSON of small numbers), so every accepted request replicates.
pub fn set_max_request_bytes(max_request_bytes: usize) {
    let _ = MESSAGE_LIMIT.set(max_request_bytes.saturating_mul(4).max(MIN_MESSAGE_BYTES));
}

/// The largest gRPC message between peers, in bytes.
pub fn max_message_bytes() -> usize {
    *MESSAGE_LIMIT.get().unwrap_or(&MIN_MESSAGE_BYTES)
}

pub fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    rmp_serde::to_vec_named(v).expect("raft messages always encode")
}

pub fn decode<T: DeserializeOwned>(b: &[u8]) -> Result<T, rmp_serde::decode::Error> {
    rmp_serde::from_slice(b)
}

/// TLS between peers (`cluster.p2p.enable_tls`): PEM certificate and key this peer
/// presents (as server and as client), and the CA that signs every peer's certificate.
#[derive(Clone, Debug)]
pub struct P2pTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
    pub ca_pem: Vec<u8>,
}

impl P2pTls {
    /// The server side: our identity, and peers must present a certificate of the CA.
    pub fn server(&self) -> tonic::transport::ServerTlsConfig {
        use tonic::transport::{Certificate, Identity, ServerTlsConfig};
        ServerTlsConfig::new()
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
            .client_ca_root(Certificate::from_pem(&self.ca_pem))
    }

    fn client(&self) -> tonic::transport::ClientTlsConfig {
        use tonic::transport::{Certificate, ClientTlsConfig, Identity};
        ClientTlsConfig::new()
            .ca_certificate(Certificate::from_pem(&self.ca_pem))
            .identity(Identity::from_pem(&self.cert_pem, &self.key_pem))
    }
}

static CLIENT_TLS: std::sync::OnceLock<Option<tonic::transport::ClientTlsConfig>> =
    std::sync::OnceLock::new();

/// Set the TLS configuration of outgoing internal connections (first call wins).
pub fn set_tls(tls: Option<&P2pTls>) {
    let _ = CLIENT_TLS.set(tls.map(P2pTls::client));
}

/// The URI scheme peers use (`https` with p2p TLS).
pub fn scheme() -> &'static str {
    match CLIENT_TLS.get() {
        Some(Some(_)) => "https",
        _ => "http",
    }
}

/// The key every internal request carries (`service.api_key`), set once at start-up.
static INTERNAL_KEY: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();

/// Set the key outgoing internal requests carry (first call wins).
pub fn set_internal_key(key: Option<String>) {
    let _ = INTERNAL_KEY.set(key);
}

/// Adds the `api-key` metadata to every outgoing internal request.
#[derive(Clone)]
pub struct KeyInterceptor(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for KeyInterceptor {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(k) = &self.0 {
            req.metadata_mut().insert("api-key", k.clone());
        }
        Ok(req)
    }
}

pub type Client =
    P2pClient<tonic::service::interceptor::InterceptedService<Channel, KeyInterceptor>>;

/// A lazily connecting client to a peer's p2p port.
pub fn client(uri: &str, timeout: Duration) -> Result<Client, tonic::transport::Error> {
    let mut ep = Endpoint::from_shared(uri.to_string())?;
    if let Some(Some(tls)) = CLIENT_TLS.get() {
        ep = ep.tls_config(tls.clone())?;
    }
    let ep = ep
        .connect_timeout(Duration::from_secs(2))
        .timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_while_idle(true);
    let key = INTERNAL_KEY
        .get()
        .cloned()
        .flatten()
        .and_then(|k| k.parse().ok());
    Ok(
        P2pClient::with_interceptor(ep.connect_lazy(), KeyInterceptor(key))
            .max_decoding_message_size(max_message_bytes())
            .max_encoding_message_size(max_message_bytes()),
    )
}

/// The receiving side of internal auth: with `enforce` and a key, a request must carry
/// that key (compared in constant time), else it is refused as unauthenticated.
pub fn check_internal_key(
    key: Option<&str>,
    enforce: bool,
    req: &tonic::Request<()>,
) -> Result<(), tonic::Status> {
    let (true, Some(key)) = (enforce, key) else {
        return Ok(());
    };
    let given = req
        .metadata()
        .get("api-key")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let same = given.len() == key.len()
        && given
            .bytes()
            .zip(key.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if same {
        Ok(())
    } else {
        Err(tonic::Status::unauthenticated(
            "internal request without the cluster's api key",
        ))
    }
}

/// Failed Raft sends per peer URI (`message_send_failures` of `GET /cluster`).
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SendFailure {
    pub count: u64,
    pub latest_error: Option<String>,
    /// Unix seconds of the latest failure.
    pub latest_error_timestamp: Option<u64>,
}

pub type SendFailures =
    std::sync::Arc<parking_lot::Mutex<std::collections::BTreeMap<String, SendFailure>>>;

pub struct Network {
    pub rpc_timeout: Duration,
    pub failures: SendFailures,
}

pub struct Conn {
    target: NodeId,
    client: Option<Client>,
    addr: String,
    failures: SendFailures,
}

impl RaftNetworkFactory<TypeConfig> for Network {
    type Network = Conn;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> Self::Network {
        Conn {
            target,
            client: client(&node.addr, self.rpc_timeout).ok(),
            addr: node.addr.clone(),
            failures: self.failures.clone(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Msg(String);

impl Conn {
    async fn call<
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
    >(
        &mut self,
        kind: &'static str,
        req: &Req,
        option: &RPCOption,
    ) -> Result<Resp, RPCError<NodeId, BasicNode, RaftError<NodeId, E>>> {
        let Some(c) = self.client.as_mut() else {
            return Err(RPCError::Unreachable(Unreachable::new(&Msg(format!(
                "invalid peer address {}",
                self.addr
            )))));
        };
        let mut request = tonic::Request::new(RaftMessage { data: encode(req) });
        request.set_timeout(option.hard_ttl());
        let reply = match kind {
            "append" => c.append_entries(request).await,
            "vote" => c.vote(request).await,
            _ => c.install_snapshot(request).await,
        };
        if let Err(s) = &reply {
            let mut f = self.failures.lock();
            let e = f.entry(self.addr.clone()).or_default();
            e.count += 1;
            e.latest_error = Some(s.message().to_string());
            e.latest_error_timestamp = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .ok()
                .map(|d| d.as_secs());
        }
        let reply = reply.map_err(|s| match s.code() {
            tonic::Code::Unavailable | tonic::Code::DeadlineExceeded => {
                RPCError::Unreachable(Unreachable::new(&s))
            }
            _ => RPCError::Network(NetworkError::new(&s)),
        })?;
        let r: Result<Resp, RaftError<NodeId, E>> = decode(&reply.into_inner().data)
            .map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        r.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for Conn {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("append", &rpc, &option).await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<
        InstallSnapshotResponse<NodeId>,
        RPCError<NodeId, BasicNode, RaftError<NodeId, InstallSnapshotError>>,
    > {
        self.call("snapshot", &rpc, &option).await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> Result<VoteResponse<NodeId>, RPCError<NodeId, BasicNode, RaftError<NodeId>>> {
        self.call("vote", &rpc, &option).await
    }
}
