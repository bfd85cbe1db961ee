//! `api`: the REST interface (axum). The only crate that knows wire formats: it parses
//! Qdrant-shaped JSON into the engine's types, maps every engine error to an HTTP status in
//! one place (`envelope::ApiError`), and wraps every answer in Qdrant's envelope.

pub mod auth;
pub mod envelope;
mod handlers;
pub mod normalize;
pub mod observe;
pub mod peer_errors;
mod snapshots;
pub mod wire;

use axum::Router;
use collection::Storage;
use std::sync::Arc;

/// Settings the REST layer needs.
#[derive(Clone, Debug)]
pub struct ApiSettings {
    /// Largest accepted request body, in bytes.
    pub max_request_bytes: usize,
    /// API keys and JWT RBAC (`service.api_key`, `read_only_api_key`, `jwt_rbac`).
    pub auth: auth::AuthConfig,
    /// `service.enable_cors`: answer CORS preflights and allow any origin.
    pub enable_cors: bool,
    /// `service.metrics_prefix`: prepended to every `/metrics` name.
    pub metrics_prefix: String,
    /// `storage.snapshots_path`: where snapshot files live (and only there).
    pub snapshots_path: std::path::PathBuf,
    /// `service.enable_snapshot_url_recovery`.
    pub snapshot_url_recovery: bool,
}

#[derive(Clone)]
pub struct AppState {
    pub storage: Arc<Storage>,
    pub settings: ApiSettings,
    /// Present in cluster mode: metadata operations go through its consensus.
    pub cluster: Option<Arc<cluster::node::ClusterNode>>,
    /// The router itself (without the auth layer), for the token checks that count points.
    pub local_router: Arc<std::sync::OnceLock<Router>>,
    /// The distributed layer of this peer (coordinator, replica maintenance, peers).
    pub dist: distributed::Ctx,
    /// Every points read and write: on this node's points, or fanned out in cluster mode
    /// (`distributed::points::service`).
    pub points: Arc<dyn distributed::points::PointsService>,
    /// Every collection metadata change: on this node's storage, or through consensus
    /// (`distributed::collections::service`).
    pub collections: Arc<dyn distributed::collections::CollectionsService>,
    /// REST request metrics (`/metrics`).
    pub metrics: Arc<observe::Metrics>,
}

/// The auth layer: `auth::check`, then a token's `value_exists` condition, counted through
/// the router itself (so it sees the whole collection in cluster mode too).
async fn authenticate(
    axum::extract::State(st): axum::extract::State<AppState>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let cond = match auth::check(
        &st.settings.auth,
        req.method(),
        req.uri().path(),
        req.headers(),
    ) {
        Ok(c) => c,
        Err(resp) => return *resp,
    };
    if let Some(c) = cond {
        if !value_exists_holds(&st, &c).await {
            return envelope::error_response(
                axum::http::StatusCode::FORBIDDEN,
                "Forbidden: the token's value_exists condition does not hold",
                std::time::Instant::now(),
            );
        }
    }
    next.run(req).await
}

async fn value_exists_holds(st: &AppState, c: &auth::ValueExists) -> bool {
    use tower::ServiceExt;
    let Some(router) = st.local_router.get() else {
        return false;
    };
    let body = serde_json::json!({"filter": c.filter, "exact": true}).to_string();
    let Ok(req) = axum::http::Request::builder()
        .method("POST")
        .uri(format!(
            "/collections/{}/points/count",
            distributed::coordinator::urlencode(&c.collection)
        ))
        .header("content-type", "application/json")
        .body(axum::body::Body::from(body))
    else {
        return false;
    };
    let Ok(resp) = router.clone().oneshot(req).await;
    if !resp.status().is_success() {
        return false;
    }
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 20)
        .await
        .unwrap_or_default();
    serde_json::from_slice::<serde_json::Value>(&bytes)
        .ok()
        .and_then(|v| v.pointer("/result/count").and_then(|n| n.as_u64()))
        .is_some_and(|n| n > 0)
}

/// Build the REST router.
pub fn router(state: AppState) -> Router {
    let r = handlers::routes()
        .merge(snapshots::routes())
        .with_state(state.clone());
    // token checks count points through the router without the auth layer
    let _ = state.local_router.set(r.clone());
    let r = r.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        observe::record,
    ));
    let mut r = r.layer(axum::middleware::from_fn_with_state(
        state.clone(),
        authenticate,
    ));
    if state.settings.enable_cors {
        r = r.layer(
            tower_http::cors::CorsLayer::new()
                .allow_origin(tower_http::cors::Any)
                .allow_methods(tower_http::cors::Any)
                .allow_headers(tower_http::cors::Any),
        );
    }
    state.dist.start(Arc::new(peer_errors::ApiErrors));
    r
}
