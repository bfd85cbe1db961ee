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
        .route(
            "/collections/{name}/shards/{shard}/snapshots",
            get(list_shard).post(create_shard),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/recover",
            put(recover_shard),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/upload",
            post(upload_shard).layer(axum::extract::DefaultBodyLimit::disable()),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshots/{snapshot}",
            get(download_shard).delete(delete_shard),
        )
        .route(
            "/collections/{name}/shards/{shard}/snapshot",
            get(stream_shard),
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

/// A shard's snapshots: `<snapshots_path>/<collection>/shards/<shard>/`.
fn shard_dir(st: &AppState, collection: &str, shard: u32) -> PathBuf {
    collection_dir(st, collection)
        .join("shards")
        .join(shard.to_string())
}

/// The shard id of a path, which must name a shard of `collection`; with `local`, one this
/// peer holds a replica of (a single node holds every shard).
fn shard_of(
    st: &AppState,
    c: &collection::Collection,
    shard: &str,
    local: bool,
) -> Result<u32, ApiError> {
    let shard: u32 = shard.parse().map_err(|_| {
        ApiError::bad_request(format!(
            "Bad request: shard id must be a non-negative integer, got {shard:?}"
        ))
    })?;
    let missing = || {
        ApiError::not_found(format!(
            "Not found: shard {shard} does not exist in collection `{}`",
            c.name()
        ))
    };
    match distributed::coordinator::placement_of(&st.dist, c.name()) {
        Some(p) => {
            let holders = p.shards.get(shard as usize).ok_or_else(missing)?;
            let me = st.cluster.as_ref().map_or(0, |n| n.id);
            if local && !holders.contains(&me) {
                return Err(ApiError::not_found(format!(
                    "Not found: shard {shard} of collection `{}` has no replica on this peer ({me})",
                    c.name()
                )));
            }
            // a replica that misses writes is not snapshotted as if it were the shard
            match p.meta.replica_state(shard, me) {
                Some(s) if local && s != cluster::state::ReplicaState::Active => {
                    return Err(ApiError::bad_request(format!(
                        "Bad request: the replica of shard {shard} on this peer ({me}) is {}, not Active",
                        s.name()
                    )))
                }
                _ => {}
            }
        }
        None if shard >= c.config().params.shard_number.max(1) => return Err(missing()),
        None => {}
    }
    Ok(shard)
}

/// The shard a recovery of `name` replaces (`None`: the whole collection); a shard's
/// collection must exist.
fn shard_to_replace(
    st: &AppState,
    name: &str,
    shard: Option<String>,
) -> Result<Option<u32>, ApiError> {
    shard
        .map(|s| shard_of(st, &*st.storage.get(name)?, &s, false))
        .transpose()
}

use crate::envelope::blocking;

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
    answer(t, create_in(st, name, None, q).await)
}

async fn create_shard(
    State(st): St,
    Path((name, shard)): Path<(String, String)>,
    RawQuery(q): RawQuery,
) -> Response {
    let t = Instant::now();
    answer(t, create_in(st, name, Some(shard), q).await)
}

/// Take a snapshot of collection `name`, or of one of its shards: in cluster mode the
/// collection's holds this peer's local shards; a shard's, that shard (held here).
async fn create_in(
    st: AppState,
    name: String,
    shard: Option<String>,
    q: Option<String>,
) -> Result<Option<SnapshotInfo>, ApiError> {
    let wait = wait_of(q)?;
    let c = st.storage.get(&name)?;
    let peer = st.cluster.as_ref().map_or(0, |n| n.id);
    let shard = shard.map(|s| shard_of(&st, &c, &s, true)).transpose()?;
    // in cluster mode a collection's snapshot holds this peer's local shards
    let local = distributed::coordinator::placement_of(&st.dist, c.name()).map(|p| {
        (0..p.shard_number)
            .filter(|s| p.shards[*s as usize].contains(&peer))
            .collect::<Vec<u32>>()
    });
    let (dir, prefix) = match shard {
        Some(s) => (
            shard_dir(&st, c.name(), s),
            format!("{}-shard-{s}-{peer}", c.name()),
        ),
        None => (
            collection_dir(&st, c.name()),
            format!("{}-{peer}", c.name()),
        ),
    };
    let work = tokio::task::spawn_blocking(move || -> Result<SnapshotInfo, ApiError> {
        let file = new_name(&dir, &prefix);
        Ok(match shard {
            Some(s) => snapshot::create_shard(&c, &dir, &file, s)?,
            None => snapshot::create(&c, &dir, &file, local)?,
        })
    });
    // the snapshot is written whether or not anyone waits for it
    waited(work, wait).await
}

async fn list(State(st): St, Path(name): Path<String>) -> ApiResult<Vec<SnapshotInfo>> {
    let t = Instant::now();
    let c = st.storage.get(&name)?;
    let dir = collection_dir(&st, c.name());
    Ok(Timed(t, blocking(move || Ok(snapshot::list(&dir)?)).await?))
}

async fn list_shard(
    State(st): St,
    Path((name, shard)): Path<(String, String)>,
) -> ApiResult<Vec<SnapshotInfo>> {
    let t = Instant::now();
    let c = st.storage.get(&name)?;
    let dir = shard_dir(&st, c.name(), shard_of(&st, &c, &shard, false)?);
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

async fn download_shard(
    State(st): St,
    Path((name, shard, file)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let c = st.storage.get(&name)?;
    let dir = shard_dir(&st, c.name(), shard_of(&st, &c, &shard, false)?);
    stream_file(&snapshot_path(&dir, &file)?, &file).await
}

/// `GET /collections/{c}/shards/{s}/snapshot`: a new snapshot of the shard, streamed and
/// not kept (written under `snapshots_path/.tmp`, unlinked once open).
async fn stream_shard(
    State(st): St,
    Path((name, shard)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let c = st.storage.get(&name)?;
    let shard = shard_of(&st, &c, &shard, true)?;
    let dir = temp_dir(&st);
    let file = format!(
        "{}-shard-{shard}-{}{}",
        c.name(),
        uuid::Uuid::new_v4(),
        snapshot::SUFFIX
    );
    let (d, f) = (dir.clone(), file.clone());
    blocking(move || Ok(snapshot::create_shard(&c, &d, &f, shard)?)).await?;
    let path = dir.join(&file);
    let opened = tokio::fs::File::open(&path).await.map_err(io_err);
    let _ = tokio::fs::remove_file(&path).await;
    let sum = dir.join(format!("{file}{}", snapshot::CHECKSUM_SUFFIX));
    let _ = tokio::fs::remove_file(sum).await;
    stream_open(opened?, &file).await
}

async fn download_full(State(st): St, Path(file): Path<String>) -> Result<Response, ApiError> {
    stream_file(&snapshot_path(&st.settings.snapshots_path, &file)?, &file).await
}

/// A snapshot file as the answer body, read and sent in 1 MiB chunks.
async fn stream_file(path: &FsPath, file: &str) -> Result<Response, ApiError> {
    stream_open(tokio::fs::File::open(path).await.map_err(io_err)?, file).await
}

async fn stream_open(f: tokio::fs::File, file: &str) -> Result<Response, ApiError> {
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

async fn delete_shard(
    State(st): St,
    Path((name, shard, file)): Path<(String, String, String)>,
    RawQuery(q): RawQuery,
) -> ApiResult<bool> {
    let c = st.storage.get(&name)?;
    let dir = shard_dir(&st, c.name(), shard_of(&st, &c, &shard, false)?);
    remove_file(dir, file, q).await
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
    answer(t, recover_in(st, name, None, q, body).await)
}

async fn recover_shard(
    State(st): St,
    Path((name, shard)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    QJson(body): QJson<RecoverBody>,
) -> Response {
    let t = Instant::now();
    answer(t, recover_in(st, name, Some(shard), q, body).await)
}

/// Recover collection `name` (created if missing), or one shard of it (the collection must
/// exist), from the snapshot `body.location` names.
async fn recover_in(
    st: AppState,
    name: String,
    shard: Option<String>,
    q: Option<String>,
    body: RecoverBody,
) -> Result<Option<bool>, ApiError> {
    let wait = wait_of(q)?;
    collection::storage::validate_name(&name)?;
    let shard = shard_to_replace(&st, &name, shard)?;
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
    let job = tokio::spawn(restore(
        st,
        Target { name, shard },
        path,
        body.checksum,
        priority,
        temporary,
    ));
    waited(job, wait).await.map(|done| done.map(|()| true))
}

/// What a recovery replaces: a collection, or one shard of it.
struct Target {
    name: String,
    shard: Option<u32>,
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
    form: Multipart,
) -> Response {
    let t = Instant::now();
    answer(t, upload_in(st, name, None, q, form).await)
}

async fn upload_shard(
    State(st): St,
    Path((name, shard)): Path<(String, String)>,
    RawQuery(q): RawQuery,
    form: Multipart,
) -> Response {
    let t = Instant::now();
    answer(t, upload_in(st, name, Some(shard), q, form).await)
}

async fn upload_in(
    st: AppState,
    name: String,
    shard: Option<String>,
    q: Option<String>,
    mut form: Multipart,
) -> Result<Option<bool>, ApiError> {
    let p: UploadParams = parse_query(q)?;
    let wait = wait_default_true(p.wait)?;
    collection::storage::validate_name(&name)?;
    let shard = shard_to_replace(&st, &name, shard)?;
    let priority = priority_of(p.priority.as_deref())?;
    let path = temp_file(&st, "upload").await?;
    let mut got = false;
    let copied =
        async {
            while let Some(mut field) = form
                .next_field()
                .await
                .map_err(|e| ApiError::bad_request(format!("Bad request: multipart body: {e}")))?
            {
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
    let target = Target { name, shard };
    let job = tokio::spawn(restore(st, target, path, p.checksum, priority, true));
    waited(job, wait).await.map(|done| done.map(|()| true))
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

/// Verify the checksum, unpack into a staging directory, and install it as the target
/// (cluster mode: as this peer's copy of the shards the snapshot holds, or of the one
/// shard named). A temporary download or upload is removed afterwards, whatever the
/// outcome.
async fn restore(
    st: AppState,
    target: Target,
    path: PathBuf,
    checksum: Option<String>,
    priority: Priority,
    temporary: bool,
) -> Result<(), ApiError> {
    let storage = st.storage.clone();
    let r = match (&st.cluster, target.shard) {
        (None, None) => {
            let (p, name) = (path.clone(), target.name.clone());
            blocking(move || Ok(snapshot::recover(&storage, &name, &p, checksum.as_deref())?)).await
        }
        (None, Some(shard)) => {
            restore_shard_locally(&st, &target.name, shard, path.clone(), checksum).await
        }
        (Some(_), _) => restore_on_peer(&st, &target, path.clone(), checksum, priority).await,
    };
    if temporary {
        let _ = tokio::fs::remove_file(&path).await;
    }
    if let Err(e) = &r {
        tracing::warn!(error = %e.message, "snapshot recovery failed");
    }
    r
}

/// The snapshot at `path`, checksum verified, unpacked into `staging` and opened (not
/// registered in storage), with the shards it holds; `shard`, if given, must be one.
fn open_staged(
    path: &FsPath,
    staging: &FsPath,
    name: &str,
    checksum: Option<&str>,
    shard: Option<u32>,
) -> Result<(collection::Collection, snapshot::Manifest), ApiError> {
    snapshot::verify_checksum(path, checksum)?;
    let m = snapshot::unpack(path, staging)?;
    if let (Some(s), Some(held)) = (shard, &m.shards) {
        if !held.contains(&s) {
            return Err(collection::CollectionError::BadInput(format!(
                "the snapshot holds shards {held:?}, not shard {s}"
            ))
            .into());
        }
    }
    let c = collection::collection::Collection::open(staging, name)
        .map_err(|e| collection::CollectionError::BadInput(format!("Bad snapshot: {e}")))?;
    Ok((c, m))
}

/// A single node: replace one shard's points of an existing collection.
async fn restore_shard_locally(
    st: &AppState,
    name: &str,
    shard: u32,
    path: PathBuf,
    checksum: Option<String>,
) -> Result<(), ApiError> {
    st.storage.get(name)?;
    let staging = st.storage.staging_dir(name);
    let (dir, n, storage) = (staging.clone(), name.to_string(), st.storage.clone());
    let r = blocking(move || {
        let (snap, _) = open_staged(&path, &dir, &n, checksum.as_deref(), Some(shard))?;
        let points = snapshot::install_shard(&storage, &n, &snap, shard)?;
        tracing::info!(collection = %n, shard, points, "shard recovered from a snapshot");
        Ok(())
    })
    .await;
    let _ = tokio::fs::remove_dir_all(&staging).await;
    r
}

async fn restore_on_peer(
    st: &AppState,
    target: &Target,
    path: PathBuf,
    checksum: Option<String>,
    priority: Priority,
) -> Result<(), ApiError> {
    let name = target.name.clone();
    let staging = st.storage.staging_dir(&name);
    let (dir, n, shard) = (staging.clone(), name.clone(), target.shard);
    let opened = blocking(move || {
        let (c, m) = open_staged(&path, &dir, &n, checksum.as_deref(), shard)?;
        Ok((std::sync::Arc::new(c), m))
    })
    .await;
    let r = match opened {
        Ok((snap, m)) => install_staged(st, &name, shard, snap, m, priority).await,
        Err(e) => Err(e),
    };
    let _ = tokio::fs::remove_dir_all(&staging).await;
    r
}

async fn install_staged(
    st: &AppState,
    name: &str,
    shard: Option<u32>,
    snap: std::sync::Arc<collection::Collection>,
    m: snapshot::Manifest,
    priority: Priority,
) -> Result<(), ApiError> {
    let covered = match shard {
        Some(s) => {
            let n = distributed::coordinator::placement_of(&st.dist, name)
                .map_or(snap.config().params.shard_number.max(1), |p| p.shard_number);
            snapshot::check_shard_source(&snap, name, n, s)?;
            Some(vec![s])
        }
        None => m.shards,
    };
    let done =
        distributed::snapshot_install::install(&st.dist, name, snap, covered, priority).await?;
    if let Some(s) = shard.filter(|s| !done.installed.contains(s)) {
        return Err(ApiError::bad_request(format!(
            "Bad request: shard {s} of collection `{name}` has replicas, none on this peer: recover it on a peer holding one"
        )));
    }
    tracing::info!(collection = %name, created = done.created, adopted = ?done.adopted, installed = ?done.installed, "snapshot recovered on this peer");
    Ok(())
}

/// Download an http(s) snapshot URL into a temporary file under `snapshots_path`.
/// `https://` trusts the system's root certificates (or those of `SSL_CERT_FILE` /
/// `SSL_CERT_DIR`), as Qdrant's downloads do.
async fn fetch(st: &AppState, url: &str, api_key: Option<&str>) -> Result<PathBuf, ApiError> {
    let bad = |m: String| ApiError::bad_request(format!("Bad request: snapshot URL {url}: {m}"));
    let uri: axum::http::Uri = url.parse().map_err(|e| bad(format!("{e}")))?;
    let tls = match uri.scheme_str() {
        Some("http") => false,
        Some("https") => true,
        _ => return Err(bad("only http:// and https:// URLs can be fetched".into())),
    };
    let host = uri.host().ok_or_else(|| bad("no host".into()))?.to_string();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    // an IPv6 literal comes bracketed in the URL
    let bare = host
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_string();
    let stream = tokio::net::TcpStream::connect((bare.as_str(), port))
        .await
        .map_err(|e| bad(format!("cannot connect: {e}")))?;
    let _ = stream.set_nodelay(true);
    let mut req = axum::http::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(
            header::HOST,
            uri.authority().map_or(host.as_str(), |a| a.as_str()),
        );
    if let Some(k) = api_key {
        req = req.header("api-key", k);
    }
    let req = req
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| bad(format!("{e}")))?;
    let resp = if tls {
        let name = rustls::pki_types::ServerName::try_from(bare)
            .map_err(|e| bad(format!("invalid host name: {e}")))?;
        let stream = tls_connector()
            .map_err(bad)?
            .connect(name, stream)
            .await
            .map_err(|e| bad(format!("TLS handshake failed: {e}")))?;
        send_get(stream, req).await
    } else {
        send_get(stream, req).await
    }
    .map_err(bad)?;
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

/// One HTTP/1.1 GET over `io` (plain TCP or TLS).
async fn send_get<IO>(
    io: IO,
    req: axum::http::Request<http_body_util::Empty<bytes::Bytes>>,
) -> Result<axum::http::Response<hyper::body::Incoming>, String>
where
    IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut send, conn) = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(io))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    send.send_request(req).await.map_err(|e| e.to_string())
}

/// A TLS client trusting the system's root certificates (`SSL_CERT_FILE` and
/// `SSL_CERT_DIR` replace them when set). Loaded per download: recoveries are rare, and a
/// certificate installed meanwhile is seen.
fn tls_connector() -> Result<tokio_rustls::TlsConnector, String> {
    let mut roots = rustls::RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    let (added, _) = roots.add_parsable_certificates(found.certs);
    if added == 0 {
        return Err(format!(
            "no trusted root certificate found for https ({})",
            found
                .errors
                .first()
                .map_or("the system store is empty".to_string(), |e| e.to_string())
        ));
    }
    // ring, as the server's own TLS (crates/server/src/tls.rs says why)
    #[allow(deprecated)]
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(std::sync::Arc::new(
        config,
    )))
}
