//! Collection snapshot endpoints (`/collections/{name}/snapshots...`): thin handlers over
//! `collection::snapshot` (the archive format) and `Storage::restore_collection`.
//!
//! Every snapshot file lives under `storage.snapshots_path`: archives in
//! `<snapshots_path>/<collection>/`, downloads and uploads being recovered in
//! `<snapshots_path>/.tmp/` (removed once used). A `file://` location must name a file
//! inside `snapshots_path`.

use crate::envelope::{parse_query, ApiError, ApiResult, QJson, Timed};
use crate::wire::WriteParams;
use crate::AppState;
use axum::body::Body;
use axum::extract::{Multipart, Path, RawQuery, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use collection::snapshot::{self, SnapshotInfo};
use distributed::snapshot_install::Priority;
use serde::Deserialize;
use serde_json::json;
use std::path::{Path as FsPath, PathBuf};
use std::time::Instant;
use tokio::io::AsyncWriteExt;

type St = State<AppState>;

pub fn routes() -> axum::Router<AppState> {
    use axum::routing::{get, post, put};
    axum::Router::new()
        .route("/collections/{name}/snapshots", get(list).post(create))
        .route("/collections/{name}/snapshots/recover", put(recover))
        .route(
            "/collections/{name}/snapshots/upload",
            post(upload).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/collections/{name}/snapshots/{snapshot}",
            get(download).delete(delete),
        )
        .route("/snapshots", get(list_full).post(create_full))
        .route(
            "/snapshots/{snapshot}",
            get(download_full).delete(delete_full),
        )
}

fn collection_dir(st: &AppState, collection: &str) -> PathBuf {
    st.settings.snapshots_path.join(collection)
}

fn temp_dir(st: &AppState) -> PathBuf {
    st.settings.snapshots_path.join(".tmp")
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await?
}

/// `wait=false`: the work goes on in a task of its own and the answer is 202.
fn accepted(t: Instant) -> Response {
    let body = json!({"status": "accepted", "time": t.elapsed().as_secs_f64()});
    (StatusCode::ACCEPTED, axum::Json(body)).into_response()
}

fn wait_of(q: Option<String>) -> Result<bool, ApiError> {
    #[derive(Deserialize, Default)]
    struct W {
        wait: Option<String>,
    }
    let w: W = parse_query(q)?;
    wait_default_true(w.wait)
}

/// Snapshot operations wait unless `wait=false` (unlike point writes).
fn wait_default_true(wait: Option<String>) -> Result<bool, ApiError> {
    WriteParams {
        wait: Some(wait.unwrap_or_else(|| "true".into())),
        ..Default::default()
    }
    .wait()
}

/// `{prefix}-{YYYY-MM-DD-HH-MM-SS}.snapshot`, not yet used in `dir` (two snapshots in the
/// same second get a counter).
fn new_name(dir: &FsPath, prefix: &str) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{prefix}-{}", snapshot::name_timestamp(secs));
    (0..)
        .map(|i| match i {
            0 => format!("{base}{}", snapshot::SUFFIX),
            i => format!("{base}-{i}{}", snapshot::SUFFIX),
        })
        .find(|n| !dir.join(n).exists())
        .expect("an unused name")
}

async fn create(State(st): St, Path(name): Path<String>, RawQuery(q): RawQuery) -> Response {
    let t = Instant::now();
    let run = async move {
        let wait = wait_of(q)?;
        let c = st.storage.get(&name)?;
        let dir = collection_dir(&st, c.name());
        let peer = st.cluster.as_ref().map_or(0, |n| n.id);
        // in cluster mode the snapshot holds this peer's local shards
        let shards = distributed::coordinator::placement_of(&st.dist, c.name()).map(|p| {
            (0..p.shard_number)
                .filter(|s| p.shards[*s as usize].contains(&peer))
                .collect::<Vec<u32>>()
        });
        let work = tokio::task::spawn_blocking(move || -> Result<SnapshotInfo, ApiError> {
            let file = new_name(&dir, &format!("{}-{peer}", c.name()));
            Ok(snapshot::create(&c, &dir, &file, shards)?)
        });
        // the snapshot is written whether or not anyone waits for it
        waited(work, wait).await
    };
    answer(t, run.await)
}

async fn list(State(st): St, Path(name): Path<String>) -> ApiResult<Vec<SnapshotInfo>> {
    let t = Instant::now();
    let c = st.storage.get(&name)?;
    let dir = collection_dir(&st, c.name());
    Ok(Timed(t, blocking(move || Ok(snapshot::list(&dir)?)).await?))
}

fn snapshot_path(dir: &FsPath, file: &str) -> Result<PathBuf, ApiError> {
    snapshot::check_file_name(file)?;
    let path = dir.join(file);
    if !file.ends_with(snapshot::SUFFIX) || !path.is_file() {
        return Err(ApiError::not_found(format!(
            "Not found: Snapshot {file} does not exist"
        )));
    }
    Ok(path)
}

async fn download(
    State(st): St,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = st.storage.get(&name)?;
    stream_file(
        &snapshot_path(&collection_dir(&st, c.name()), &file)?,
        &file,
    )
    .await
}

async fn download_full(State(st): St, Path(file): Path<String>) -> Result<Response, ApiError> {
    stream_file(&snapshot_path(&st.settings.snapshots_path, &file)?, &file).await
}

/// A snapshot file as the answer body, read and sent in 1 MiB chunks.
async fn stream_file(path: &FsPath, file: &str) -> Result<Response, ApiError> {
    let f = tokio::fs::File::open(path).await.map_err(io_err)?;
    let len = f.metadata().await.map(|m| m.len()).ok();
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(f, 1 << 20));
    let mut r = Response::new(body);
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(len) = len {
        h.insert(header::CONTENT_LENGTH, len.into());
    }
    if let Ok(v) = header::HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(r)
}

async fn delete(
    State(st): St,
    Path((name, file)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<bool> {
    let c = st.storage.get(&name)?;
    remove_file(collection_dir(&st, c.name()), file, q).await
}

async fn delete_full(
    State(st): St,
    Path(file): Path<String>,
    RawQuery(q): RawQuery,
) -> ApiResult<bool> {
    remove_file(st.settings.snapshots_path.clone(), file, q).await
}

async fn remove_file(dir: PathBuf, file: String, q: Option<String>) -> ApiResult<bool> {
    let t = Instant::now();
    let _ = wait_of(q)?; // deleting a file is immediate either way
    let path = snapshot_path(&dir, &file)?;
    blocking(move || {
        std::fs::remove_file(&path).map_err(collection::CollectionError::from)?;
        let sum = path.with_file_name(format!("{file}{}", snapshot::CHECKSUM_SUFFIX));
        let _ = std::fs::remove_file(sum);
        Ok(())
    })
    .await?;
    Ok(Timed(t, true))
}

async fn list_full(State(st): St) -> ApiResult<Vec<SnapshotInfo>> {
    let t = Instant::now();
    let dir = st.settings.snapshots_path.clone();
    Ok(Timed(t, blocking(move || Ok(snapshot::list(&dir)?)).await?))
}

async fn create_full(State(st): St, RawQuery(q): RawQuery) -> Response {
    let t = Instant::now();
    let run = async move {
        let wait = wait_of(q)?;
        let dir = st.settings.snapshots_path.clone();
        let storage = st.storage.clone();
        let work = tokio::task::spawn_blocking(move || -> Result<SnapshotInfo, ApiError> {
            let file = new_name(&dir, "full-snapshot");
            Ok(snapshot::create_full(&storage, &dir, &file)?)
        });
        waited(work, wait).await
    };
    answer(t, run.await)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RecoverBody {
    location: String,
    #[serde(default)]
    priority: Option<String>,
    #[serde(default)]
    checksum: Option<String>,
    #[serde(default)]
    api_key: Option<String>,
}

/// `priority`: `no_sync`, `snapshot` or `replica` (see `distributed::snapshot_install`). A
/// single node has no other replica, so all three restore the snapshot as it is.
fn priority_of(p: Option<&str>) -> Result<Priority, ApiError> {
    Priority::parse(p).ok_or_else(|| {
        ApiError::format(format!(
            "unknown variant `{}`, expected one of `no_sync`, `snapshot`, `replica`",
            p.unwrap_or_default()
        ))
    })
}

/// The local file a `file://` location names; it must be inside `snapshots_path`.
fn local_location(st: &AppState, location: &str) -> Result<PathBuf, ApiError> {
    let raw = location.trim_start_matches("file://");
    let path = PathBuf::from(crate::auth::percent_decode(raw));
    let root = std::fs::canonicalize(&st.settings.snapshots_path).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Service internal error: snapshots_path: {e}"),
        )
    })?;
    let forbidden = || {
        ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden: a snapshot file to recover from must be inside the snapshots directory (storage.snapshots_path)",
        )
    };
    let real = match std::fs::canonicalize(&path) {
        Ok(real) => real,
        // a missing file is named only inside the directory: no probing of other paths
        Err(_) if path.starts_with(&root) || path.starts_with(&st.settings.snapshots_path) => {
            return Err(ApiError::not_found(format!(
                "Not found: snapshot file {} does not exist",
                path.display()
            )))
        }
        Err(_) => return Err(forbidden()),
    };
    if !real.starts_with(&root) || !real.is_file() {
        return Err(forbidden());
    }
    Ok(real)
}

async fn recover(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<RecoverBody>,
) -> Response {
    let t = Instant::now();
    let run = async move {
        let wait = wait_of(q)?;
        collection::storage::validate_name(&name)?;
        let priority = priority_of(body.priority.as_deref())?;
        let loc = body.location.trim().to_string();
        let (path, temporary) = if loc.starts_with("file://") {
            (local_location(&st, &loc)?, false)
        } else if loc.starts_with("http://") || loc.starts_with("https://") {
            if !st.settings.snapshot_url_recovery {
                return Err(ApiError::new(
                    StatusCode::FORBIDDEN,
                    "Snapshot recovery from remote URLs is disabled",
                ));
            }
            (fetch(&st, &loc, body.api_key.as_deref()).await?, true)
        } else {
            return Err(ApiError::bad_request(format!(
                "Bad request: snapshot location must be a file:// path or an http(s) URL, got {loc:?}"
            )));
        };
        let job = tokio::spawn(restore(st, name, path, body.checksum, priority, temporary));
        waited(job, wait).await.map(|done| done.map(|()| true))
    };
    answer(t, run.await)
}

/// The work runs in a task of its own (a client that goes away does not stop it);
/// `None`: not waited for.
async fn waited<T>(
    job: tokio::task::JoinHandle<Result<T, ApiError>>,
    wait: bool,
) -> Result<Option<T>, ApiError> {
    if !wait {
        return Ok(None);
    }
    Ok(Some(job.await??))
}

/// 200 with the result, 202 `accepted` when not waited for, or the error.
fn answer<T: serde::Serialize>(t: Instant, r: Result<Option<T>, ApiError>) -> Response {
    match r {
        Ok(Some(v)) => Timed(t, v).into_response(),
        Ok(None) => accepted(t),
        Err(e) => e.into_response(),
    }
}

#[derive(Deserialize, Default)]
struct UploadParams {
    wait: Option<String>,
    priority: Option<String>,
    checksum: Option<String>,
}

async fn upload(
    State(st): St,
    Path(name): Path<String>,
    RawQuery(q): RawQuery,
    mut form: Multipart,
) -> Response {
    let t = Instant::now();
    let run = async move {
        let p: UploadParams = parse_query(q)?;
        let wait = wait_default_true(p.wait)?;
        collection::storage::validate_name(&name)?;
        let priority = priority_of(p.priority.as_deref())?;
        let path = temp_file(&st, "upload").await?;
        let mut got = false;
        let copied =
            async {
                while let Some(mut field) = form.next_field().await.map_err(|e| {
                    ApiError::bad_request(format!("Bad request: multipart body: {e}"))
                })? {
                    if field.name() != Some("snapshot") || got {
                        continue;
                    }
                    got = true;
                    let mut out = tokio::fs::File::create(&path).await.map_err(io_err)?;
                    while let Some(chunk) = field.chunk().await.map_err(|e| {
                        ApiError::bad_request(format!("Bad request: multipart body: {e}"))
                    })? {
                        out.write_all(&chunk).await.map_err(io_err)?;
                    }
                    out.sync_all().await.map_err(io_err)?;
                }
                if got {
                    Ok(())
                } else {
                    Err(ApiError::bad_request(
                        "Bad request: the multipart body has no `snapshot` file",
                    ))
                }
            }
            .await;
        if let Err(e) = copied {
            let _ = tokio::fs::remove_file(&path).await;
            return Err(e);
        }
        let job = tokio::spawn(restore(st, name, path, p.checksum, priority, true));
        waited(job, wait).await.map(|done| done.map(|()| true))
    };
    answer(t, run.await)
}

fn io_err(e: std::io::Error) -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("Service internal error: {e}"),
    )
}

async fn temp_file(st: &AppState, what: &str) -> Result<PathBuf, ApiError> {
    let dir = temp_dir(st);
    tokio::fs::create_dir_all(&dir).await.map_err(io_err)?;
    Ok(dir.join(format!(
        "{what}-{}{}",
        uuid::Uuid::new_v4(),
        snapshot::SUFFIX
    )))
}

/// Verify the checksum, unpack into a staging directory, and install it as `name` (cluster
/// mode: as this peer's copy of the shards the snapshot holds). A temporary download or
/// upload is removed afterwards, whatever the outcome.
async fn restore(
    st: AppState,
    name: String,
    path: PathBuf,
    checksum: Option<String>,
    priority: Priority,
    temporary: bool,
) -> Result<(), ApiError> {
    let storage = st.storage.clone();
    let r = if st.cluster.is_none() {
        let p = path.clone();
        blocking(move || Ok(snapshot::recover(&storage, &name, &p, checksum.as_deref())?)).await
    } else {
        restore_on_peer(&st, name, path.clone(), checksum, priority).await
    };
    if temporary {
        let _ = tokio::fs::remove_file(&path).await;
    }
    if let Err(e) = &r {
        tracing::warn!(error = %e.message, "snapshot recovery failed");
    }
    r
}

async fn restore_on_peer(
    st: &AppState,
    name: String,
    path: PathBuf,
    checksum: Option<String>,
    priority: Priority,
) -> Result<(), ApiError> {
    let staging = st.storage.staging_dir(&name);
    let (dir, n) = (staging.clone(), name.clone());
    let opened = blocking(move || {
        snapshot::verify_checksum(&path, checksum.as_deref())?;
        let m = snapshot::unpack(&path, &dir)?;
        let c = collection::collection::Collection::open(&dir, &n)
            .map_err(|e| collection::CollectionError::BadInput(format!("Bad snapshot: {e}")))?;
        Ok((std::sync::Arc::new(c), m))
    })
    .await;
    let r = match opened {
        Ok((snap, m)) => {
            let r =
                distributed::snapshot_install::install(&st.dist, &name, snap, m.shards, priority)
                    .await
                    .map_err(ApiError::from);
            if let Ok(done) = &r {
                tracing::info!(collection = %name, created = done.created, adopted = ?done.adopted, installed = ?done.installed, "snapshot recovered on this peer");
            }
            r.map(|_| ())
        }
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&staging).await;
    r
}

/// Download an http(s) snapshot URL into a temporary file under `snapshots_path`.
async fn fetch(st: &AppState, url: &str, api_key: Option<&str>) -> Result<PathBuf, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("Bad request: snapshot URL {url}: {m}"));
    let uri: axum::http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad(
            "only http:// URLs can be fetched so far (https is not supported yet)".into(),
        ));
    }
    let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_string();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| bad(format!("cannot connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let (mut send, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| bad(format!("{e}")))?;
    tokio::spawn(conn);
    let mut req = axum::http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(header::HOST, &host);
    if let Some(k) = api_key {
        req = req.header("api-key", k);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| bad(format!("{e}")))?;
    let resp = send
        .send_request(req)
        .await
        .map_err(|e| bad(format!("{e}")))?;
    if !resp.status().is_success() {
        return Err(bad(format!("answered HTTP {}", resp.status())));
    }
    let path = temp_file(st, "download").await?;
    let mut out = tokio::fs::File::create(&path).await.map_err(io_err)?;
    let mut body = resp.into_body();
    use http_body_util::BodyExt;
    let copied: Result<(), ApiError> = async {
        while let Some(frame) = body.frame().await {
            let frame = frame.map_err(|e| bad(format!("download failed: {e}")))?;
            if let Ok(data) = frame.into_data() {
                out.write_all(&data).await.map_err(io_err)?;
            }
        }
        out.sync_all().await.map_err(io_err)
    }
    .await;
    if let Err(e) = copied {
        let _ = tokio::fs::remove_file(&path).await;
        return Err(e);
    }
    Ok(path)
}
