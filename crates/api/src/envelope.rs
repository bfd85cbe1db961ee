//! Response envelope, error mapping and the JSON body extractor.
//!
//! Success: `{"result": ..., "status": "ok", "time": seconds}`.
//! Error:   `{"status": {"error": "..."}, "time": seconds}` with Qdrant's status codes.

use crate::AppState;
use axum::body::Body;
use axum::extract::{FromRequest, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use collection::CollectionError;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::json;
use std::time::Instant;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    /// 400 for a body that does not parse; a parser message marked `Validation error: `
    /// (a well-formed value that breaks a rule, e.g. a field condition with only a key)
    /// becomes Qdrant's 422 instead.
    pub fn format(m: impl std::fmt::Display) -> Self {
        let m = m.to_string();
        match m.strip_prefix("Validation error: ") {
            Some(rule) => Self::validation(rule),
            None => Self::new(
                StatusCode::BAD_REQUEST,
                format!("Format error in JSON body: {m}"),
            ),
        }
    }
    pub fn validation(m: impl std::fmt::Display) -> Self {
        Self::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            format!("Validation error in JSON body: {m}"),
        )
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
}

/// The single place where engine errors become HTTP statuses.
impl From<CollectionError> for ApiError {
    fn from(e: CollectionError) -> Self {
        let status = match &e {
            CollectionError::CollectionNotFound(_) | CollectionError::PointNotFound(_) => {
                StatusCode::NOT_FOUND
            }
            CollectionError::AlreadyExists(_) | CollectionError::Conflict(_) => {
                StatusCode::CONFLICT
            }
            CollectionError::BadInput(_) | CollectionError::Unsupported(_) => {
                StatusCode::BAD_REQUEST
            }
            CollectionError::Validation(_) => StatusCode::UNPROCESSABLE_ENTITY,
            CollectionError::Service(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// Consensus errors: rejected operations keep the state machine's Qdrant-style message.
impl From<cluster::node::ClusterError> for ApiError {
    fn from(e: cluster::node::ClusterError) -> Self {
        use cluster::node::ClusterError as E;
        let status = match &e {
            E::Rejected(m) if m.starts_with("Not found") => StatusCode::NOT_FOUND,
            E::Rejected(m) if m.contains("already exists") => StatusCode::CONFLICT,
            E::Rejected(_) | E::Config(_) => StatusCode::BAD_REQUEST,
            E::NoLeader(_) => StatusCode::SERVICE_UNAVAILABLE,
            E::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
            E::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError::new(status, e.to_string())
    }
}

/// A peer's answer keeps the status it gave.
impl From<distributed::peer::PeerError> for ApiError {
    fn from(e: distributed::peer::PeerError) -> Self {
        ApiError::new(
            StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            e.message,
        )
    }
}

impl From<distributed::DistError> for ApiError {
    fn from(e: distributed::DistError) -> Self {
        use distributed::DistError as E;
        match e {
            E::Format(m) => ApiError::format(m),
            E::BadRequest(m) => ApiError::bad_request(m),
            E::NotFound(m) => ApiError::not_found(m),
            E::Unavailable(m) => ApiError::new(StatusCode::SERVICE_UNAVAILABLE, m),
            E::Timeout(m) => ApiError::new(StatusCode::GATEWAY_TIMEOUT, m),
            E::Collection(e) => e.into(),
            E::Cluster(e) => e.into(),
            E::Peer(e) => e.into(),
            E::Internal(m) => {
                tracing::error!(error = %m, "distributed task failed");
                ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, m)
            }
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        tracing::error!(error = %e, "request task failed");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Service internal error: {e}"),
        )
    }
}

pub fn error_response(status: StatusCode, message: &str, started: Instant) -> Response {
    let body = json!({"status": {"error": message}, "time": started.elapsed().as_secs_f64()});
    (status, axum::Json(body)).into_response()
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        error_response(self.status, &self.message, Instant::now())
    }
}

/// A successful answer in the envelope. `Timed` carries the request start time.
pub struct Timed<T>(pub Instant, pub T);

impl<T: Serialize> IntoResponse for Timed<T> {
    fn into_response(self) -> Response {
        let body =
            json!({"result": self.1, "status": "ok", "time": self.0.elapsed().as_secs_f64()});
        (StatusCode::OK, axum::Json(body)).into_response()
    }
}

pub type ApiResult<T> = Result<Timed<T>, ApiError>;

/// JSON body extractor with Qdrant's error shapes: 413 over the size limit, 400 for syntax
/// and shape errors. `null` members are removed (`normalize`: null means "not set"). An empty body deserialises from `{}` (Qdrant accepts missing bodies
/// where every field is optional).
pub struct QJson<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for QJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request<Body>, state: &AppState) -> Result<Self, Self::Rejection> {
        let limit = state.settings.max_request_bytes;
        let bytes = axum::body::to_bytes(req.into_body(), limit).await.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, format!("Payload too large: the request body is larger than the limit of {limit} bytes (service.max_request_size_mb)"))
        })?;
        let slice: &[u8] = if bytes.iter().all(u8::is_ascii_whitespace) {
            b"{}"
        } else {
            &bytes
        };
        let mut v: serde_json::Value = serde_json::from_slice(slice).map_err(ApiError::format)?;
        crate::normalize::request(crate::normalize::Body::Other, &mut v)
            .map_err(ApiError::format)?;
        T::deserialize(v).map(QJson).map_err(ApiError::format)
    }
}

/// Parse the query string into `T` (400 in Qdrant's shape on error).
pub fn parse_query<T: DeserializeOwned + Default>(raw: Option<String>) -> Result<T, ApiError> {
    match raw {
        None => Ok(T::default()),
        Some(q) => serde_urlencoded::from_str(&q)
            .map_err(|e| ApiError::bad_request(format!("Query string error: {e}"))),
    }
}

/// Blocking work (disk, CPU-heavy) off the async workers ([`distributed::blocking`] with
/// the API's error type, so closures can use `?` on any error that becomes one).
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    distributed::blocking(f).await
}
