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

fn new_name(dir: &FsPath, collection: &str, peer: u64) -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let base = format!("{collection}-{peer}-{}", snapshot::name_timestamp(secs));
    // two snapshots in the same second get a counter
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
        let work = tokio::task::spawn_blocking(move || -> Result<SnapshotInfo, ApiError> {
            let file = new_name(&dir, c.name(), peer);
            Ok(snapshot::create(&c, &dir, &file)?)
        });
        if !wait {
            // the snapshot is written whether or not anyone waits for it
            return Ok::<_, ApiError>(None);
        }
        Ok(Some(work.await??))
    };
    match run.await {
        Ok(Some(info)) => Timed(t, info).into_response(),
        Ok(None) => accepted(t),
        Err(e) => e.into_response(),
    }
}

async fn list(State(st): St, Path(name): Path<String>) -> ApiResult<Vec<SnapshotInfo>> {
    let t = Instant::now();
    let c = st.storage.get(&name)?;
    let dir = collection_dir(&st, c.name());
    Ok(Timed(t, blocking(move || Ok(snapshot::list(&dir)?)).await?))
}

fn snapshot_path(st: &AppState, collection: &str, file: &str) -> Result<PathBuf, ApiError> {
    snapshot::check_file_name(file)?;
    let path = collection_dir(st, collection).join(file);
    if !file.ends_with(snapshot::SUFFIX) || !path.is_file() {
        return Err(ApiError::not_found(format!(
            "Not found: Snapshot {file} of collection {collection} does not exist"
        )));
    }
    Ok(path)
}

async fn download(
    State(st): St,
    Path((name, file)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = st.storage.get(&name)?;
    let path = snapshot_path(&st, c.name(), &file)?;
    let f = tokio::fs::File::open(&path).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("Service internal error: {e}"),
        )
    })?;
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
    let t = Instant::now();
    let _ = wait_of(q)?; // deleting a file is immediate either way
    let c = st.storage.get(&name)?;
    let path = snapshot_path(&st, c.name(), &file)?;
    blocking(move || {
        std::fs::remove_file(&path).map_err(collection::CollectionError::from)?;
        let sum = path.with_file_name(format!("{file}{}", snapshot::CHECKSUM_SUFFIX));
        let _ = std::fs::remove_file(sum);
        Ok(())
    })
    .await?;
    Ok(Timed(t, true))
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

/// `priority`: `no_sync`, `snapshot` or `replica`. A single node has no other replica, so
/// all three restore the snapshot as it is.
fn check_priority(p: Option<&str>) -> Result<(), ApiError> {
    match p {
        None | Some("no_sync" | "snapshot" | "replica") => Ok(()),
        Some(other) => Err(ApiError::format(format!(
            "unknown variant `{other}`, expected one of `no_sync`, `snapshot`, `replica`"
        ))),
    }
}

fn check_cluster(st: &AppState) -> Result<(), ApiError> {
    if st.cluster.is_some() {
        return Err(ApiError::bad_request(
            "Bad request: recovering a collection snapshot in cluster mode is not supported yet",
        ));
    }
    Ok(())
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
    let real = std::fs::canonicalize(&path).map_err(|_| {
        ApiError::not_found(format!(
            "Not found: snapshot file {} does not exist",
            path.display()
        ))
    })?;
    if !real.starts_with(&root) || !real.is_file() {
        return Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "Forbidden: a snapshot file to recover from must be inside the snapshots directory (storage.snapshots_path)",
        ));
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
        check_priority(body.priority.as_deref())?;
        check_cluster(&st)?;
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
        let job = tokio::spawn(restore(st, name, path, body.checksum, temporary));
        if !wait {
            return Ok::<_, ApiError>(false);
        }
        job.await??;
        Ok(true)
    };
    match run.await {
        Ok(true) => Timed(t, true).into_response(),
        Ok(false) => accepted(t),
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
        check_priority(p.priority.as_deref())?;
        check_cluster(&st)?;
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
        let job = tokio::spawn(restore(st, name, path, p.checksum, true));
        if !wait {
            return Ok::<_, ApiError>(false);
        }
        job.await??;
        Ok(true)
    };
    match run.await {
        Ok(true) => Timed(t, true).into_response(),
        Ok(false) => accepted(t),
        Err(e) => e.into_response(),
    }
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

/// Verify the checksum, unpack into a staging directory, and install it as `name`. A
/// temporary download or upload is removed afterwards, whatever the outcome.
async fn restore(
    st: AppState,
    name: String,
    path: PathBuf,
    checksum: Option<String>,
    temporary: bool,
) -> Result<(), ApiError> {
    let storage = st.storage.clone();
    let r = blocking(move || {
        let r = (|| {
            if let Some(want) = checksum {
                let got = snapshot::sha256_file(&path)?;
                if !got.eq_ignore_ascii_case(want.trim()) {
                    return Err(ApiError::bad_request(format!(
                        "Bad request: snapshot checksum mismatch: expected {}, got {got}",
                        want.trim()
                    )));
                }
            }
            let staging = storage.staging_dir(&name);
            let installed = snapshot::unpack(&path, &staging)
                .and_then(|_| storage.restore_collection(&name, &staging));
            if installed.is_err() {
                let _ = std::fs::remove_dir_all(&staging);
            }
            Ok(installed?)
        })();
        if temporary {
            let _ = std::fs::remove_file(&path);
        }
        r
    })
    .await;
    if let Err(e) = &r {
        tracing::warn!(error = %e.message, "snapshot recovery failed");
    }
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
