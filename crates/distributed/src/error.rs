//! Errors of the distributed layer. They stay typed up to `api`, whose one exhaustive
//! mapping turns them into HTTP statuses (a peer's answer already carries its status).

use crate::peer::PeerError;
use cluster::node::ClusterError;
use collection::CollectionError;

#[derive(Debug)]
pub enum DistError {
    /// A request body the coordinator cannot read (Qdrant's format error; a message
    /// starting `Validation error: ` is a rule a well-formed value breaks).
    Format(String),
    /// A request the coordinator refuses as given.
    BadRequest(String),
    NotFound(String),
    /// No replica, peer or consensus to serve it now; retrying may succeed.
    Unavailable(String),
    /// Committed or sent, but not confirmed in time.
    Timeout(String),
    Collection(CollectionError),
    Cluster(ClusterError),
    /// A peer's refusal or failure, with the status it answered.
    Peer(PeerError),
    /// A task of this peer failed (panicked or was cancelled).
    Internal(String),
}

pub type DistResult<T> = Result<T, DistError>;

impl DistError {
    pub fn format(m: impl std::fmt::Display) -> Self {
        DistError::Format(m.to_string())
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        DistError::BadRequest(m.into())
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        DistError::NotFound(m.into())
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        DistError::Unavailable(m.into())
    }
    pub fn timeout(m: impl Into<String>) -> Self {
        DistError::Timeout(m.into())
    }

    /// A refusal of the request itself (retrying it elsewhere gives the same answer), not
    /// a failure of the peer or replica that was asked.
    pub fn is_client_error(&self) -> bool {
        match self {
            DistError::Format(_) | DistError::BadRequest(_) | DistError::NotFound(_) => true,
            DistError::Unavailable(_) | DistError::Timeout(_) | DistError::Internal(_) => false,
            DistError::Collection(e) => e.is_client_error(),
            DistError::Cluster(e) => {
                matches!(e, ClusterError::Rejected(_) | ClusterError::Config(_))
            }
            DistError::Peer(e) => (400..500).contains(&e.status),
        }
    }

    /// The message, whatever the kind.
    pub fn message(&self) -> String {
        match self {
            DistError::Format(m)
            | DistError::BadRequest(m)
            | DistError::NotFound(m)
            | DistError::Unavailable(m)
            | DistError::Timeout(m)
            | DistError::Internal(m) => m.clone(),
            DistError::Collection(e) => e.to_string(),
            DistError::Cluster(e) => e.to_string(),
            DistError::Peer(e) => e.message.clone(),
        }
    }
}

impl std::fmt::Display for DistError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl From<CollectionError> for DistError {
    fn from(e: CollectionError) -> Self {
        DistError::Collection(e)
    }
}

impl From<ClusterError> for DistError {
    fn from(e: ClusterError) -> Self {
        DistError::Cluster(e)
    }
}

impl From<PeerError> for DistError {
    fn from(e: PeerError) -> Self {
        DistError::Peer(e)
    }
}

impl From<tokio::task::JoinError> for DistError {
    fn from(e: tokio::task::JoinError) -> Self {
        DistError::Internal(format!("Service internal error: task failed: {e}"))
    }
}
