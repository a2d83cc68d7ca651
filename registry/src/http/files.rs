//! `/files`: store-and-forward file transfer (docs/REGISTRY.md, "Files"). Every request is signed; the
//! sender creates a file from its signed manifest and uploads chunks by index, the recipient downloads
//! them once the file is complete and acknowledges, and nobody else can touch it (403). Domain errors
//! from [`crate::domain::files`] become [`ApiError`]s here.

use std::time::Duration;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use qvoice_proto::Username;
use qvoice_proto::file::{FileId, MAX_CHUNK_SIZE, Manifest, TAG_LEN};
use qvoice_wire::{
    AckFileBody, ChunkStored, CreateFileBody, Event, FileClosedResponse, FileOutcome, FileState, FileStatus,
    FilesResponse,
};
use tokio::sync::watch;

use crate::AppState;
use crate::auth::SignedRequest;
use crate::domain::files::{Created, FileError, FileRecord};
use crate::error::ApiError;

/// Largest chunk body: the largest chunk a manifest may declare plus its tag.
pub const MAX_CHUNK_BODY: usize = MAX_CHUNK_SIZE as usize + TAG_LEN;
/// Longest acknowledgement reason, in characters.
const REASON_MAX: usize = 128;

type ApiResult<T> = Result<T, ApiError>;

impl From<FileError> for ApiError {
    fn from(e: FileError) -> Self {
        match e {
            FileError::TooLarge { size, max } => Self::FileTooLarge { size, max },
            FileError::QuotaExceeded { used, quota, files: true } => Self::QuotaExceeded(format!(
                "you have {used} files waiting on this registry (limit {quota}); wait until they are downloaded or \
                 cancel some"
            )),
            FileError::QuotaExceeded { used, quota, files: false } => Self::QuotaExceeded(format!(
                "your files waiting on this registry take {used} of your {quota} bytes and this one does not fit; \
                 wait until they are downloaded or cancel some"
            )),
            FileError::InboxFull { recipient } => Self::InboxFull(recipient),
            FileError::Unknown => Self::UnknownFile,
            FileError::Forbidden(why) => Self::Forbidden(why),
            FileError::Exists => Self::FileExists,
            FileError::NotReady => Self::FileNotReady,
            FileError::InvalidChunk(why) => Self::InvalidChunk(why),
            FileError::ChunkConflict(i) => Self::ChunkConflict(i),
            FileError::Internal(e) => Self::Internal(e),
        }
    }
}

fn parse_id(s: &str) -> ApiResult<FileId> {
    FileId::from_hex(s).map_err(|_| ApiError::InvalidField("file id must be 32 lowercase hex digits".to_owned()))
}

fn parse_index(s: &str) -> ApiResult<u32> {
    s.parse().map_err(|_| ApiError::InvalidChunk(format!("chunk index `{s}` is not a number")))
}

/// Runs a blocking store call on the blocking pool.
async fn blocking<T: Send + 'static>(
    state: &AppState,
    f: impl FnOnce(&AppState) -> Result<T, FileError> + Send + 'static,
) -> ApiResult<T> {
    let st = state.clone();
    Ok(tokio::task::spawn_blocking(move || f(&st))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("file store task: {e}")))??)
}

/// The wire form of a file row.
pub fn status(rec: &FileRecord) -> FileStatus {
    FileStatus {
        file_id: rec.file_id.to_hex(),
        sender: rec.sender.clone(),
        recipient: rec.recipient.clone(),
        size: rec.size,
        wire_size: rec.wire_size,
        chunk_size: rec.chunk_size,
        chunk_count: rec.chunk_count,
        stored_chunks: rec.stored_chunks,
        stored: if rec.complete() && rec.stored.is_empty() {
            vec![[0, rec.chunk_count.saturating_sub(1)]]
        } else {
            rec.stored.clone()
        },
        state: if rec.complete() { FileState::Complete } else { FileState::Uploading },
        created_ms: rec.created_ms,
        expires_ms: rec.expires_ms,
        manifest: qvoice_proto::b64::encode(&rec.manifest),
    }
}

fn incoming_event(rec: &FileRecord) -> Event {
    Event::IncomingFile {
        file_id: rec.file_id.to_hex(),
        sender: rec.sender.clone(),
        size: rec.size,
        expires_ms: rec.expires_ms,
    }
}

/// `POST /files` (sender): record a transfer from its signed manifest. 201 with the file's status; 200
/// with the status (and the chunks already stored) when the same manifest was sent before.
pub async fn create(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Response> {
    let me = req.authenticate(&state)?;
    let body: CreateFileBody = serde_json::from_slice(&req.body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    let bytes = qvoice_proto::b64::decode(&body.manifest).map_err(|_| ApiError::InvalidBase64("manifest"))?;
    let m = Manifest::parse(&bytes).map_err(|e| ApiError::InvalidField(format!("the manifest does not parse: {e}")))?;
    if m.sender != me.username {
        return Err(ApiError::Forbidden("manifest.sender must be the signing user"));
    }
    if m.sender_key != me.identity_key || m.verify().is_err() {
        return Err(ApiError::BadMessageSignature("manifest"));
    }
    let recipient =
        state.store().get(m.recipient.as_str()).ok_or_else(|| ApiError::UnknownUser(m.recipient.to_string()))?;
    if recipient.identity_key != m.recipient_key {
        return Err(ApiError::InvalidField(format!(
            "the manifest is encrypted to an identity key that is not {}'s registered key; fetch their keys again",
            m.recipient
        )));
    }
    let now = state.now_ms();
    let created = blocking(&state, move |st| st.files().create(&m, now)).await?;
    let (code, rec) = match created {
        Created::New(rec) => {
            tracing::info!(file = %rec.file_id, sender = rec.sender, recipient = rec.recipient, bytes = rec.wire_size, "file created");
            (StatusCode::CREATED, rec)
        }
        Created::Existing(rec) => (StatusCode::OK, rec),
    };
    Ok((code, Json(status(&rec))).into_response())
}

/// `GET /files`: your complete incoming files and your outgoing files still on the registry.
pub async fn list(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Json<FilesResponse>> {
    let me = req.authenticate(&state)?;
    let user = me.username.to_string();
    let (incoming, outgoing) = blocking(&state, move |st| st.files().list(&user)).await?;
    Ok(Json(FilesResponse {
        incoming: incoming.iter().map(status).collect(),
        outgoing: outgoing.iter().map(status).collect(),
    }))
}

async fn party_record(state: &AppState, id: FileId, user: &Username) -> ApiResult<FileRecord> {
    let rec = blocking(state, move |st| st.files().get(&id)).await?.ok_or(ApiError::UnknownFile)?;
    if rec.sender != user.as_str() && rec.recipient != user.as_str() {
        return Err(ApiError::Forbidden("only the sender and the recipient of a file can see it"));
    }
    Ok(rec)
}

/// `GET /files/{id}` (sender or recipient): the file's status, with the stored chunk ranges.
pub async fn get(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<FileStatus>> {
    let id = parse_id(&id)?;
    let me = req.authenticate(&state)?;
    Ok(Json(status(&party_record(&state, id, &me.username).await?)))
}

/// Refuses an oversized chunk by its `content-length` before the body is read, with the chunk error
/// (the generic body limit would quote the 64 KiB JSON limit).
pub async fn chunk_size_guard(req: Request, next: Next) -> Response {
    let declared =
        req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|n| n > MAX_CHUNK_BODY) {
        return ApiError::InvalidChunk(format!("a chunk is at most {MAX_CHUNK_BODY} bytes")).into_response();
    }
    next.run(req).await
}

/// `PUT /files/{id}/chunks/{index}` (sender): one encrypted chunk, raw bytes. Storing the same bytes again
/// succeeds (resume); when the last missing chunk arrives the recipient gets `incoming_file`.
pub async fn put_chunk(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult<Json<ChunkStored>> {
    let id = parse_id(&id)?;
    let index = parse_index(&index)?;
    let me = req.authenticate(&state)?;
    let user = me.username.to_string();
    let body = req.body.clone();
    let out = blocking(&state, move |st| st.files().put_chunk(&id, &user, index, &body)).await?;
    if out.completed_now {
        let rec = blocking(&state, move |st| st.files().get(&id)).await?.ok_or(ApiError::UnknownFile)?;
        tracing::info!(file = %id, recipient = rec.recipient, "file complete");
        state.hub().send(&rec.recipient, &incoming_event(&rec));
    }
    Ok(Json(ChunkStored { file_id: id.to_hex(), index, stored_chunks: out.stored_chunks, complete: out.complete }))
}

/// `GET /files/{id}/chunks/{index}` (recipient, complete files): the chunk's bytes.
pub async fn get_chunk(
    State(state): State<AppState>,
    Path((id, index)): Path<(String, String)>,
    req: SignedRequest,
) -> ApiResult<Response> {
    let id = parse_id(&id)?;
    let index = parse_index(&index)?;
    let me = req.authenticate(&state)?;
    let user = me.username.to_string();
    let bytes = blocking(&state, move |st| st.files().read_chunk(&id, &user, index)).await?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], Body::from(bytes)).into_response())
}

/// `POST /files/{id}/ack` (recipient): `delivered`, `discarded` or `refused`; the file is deleted and the
/// sender gets `file_closed`.
pub async fn ack(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<FileClosedResponse>> {
    let id = parse_id(&id)?;
    let me = req.authenticate(&state)?;
    let body: AckFileBody = serde_json::from_slice(&req.body).map_err(|e| ApiError::InvalidJson(e.to_string()))?;
    if !matches!(body.outcome, FileOutcome::Delivered | FileOutcome::Discarded | FileOutcome::Refused) {
        return Err(ApiError::InvalidField("outcome must be delivered, discarded or refused".to_owned()));
    }
    if let Some(r) = &body.reason
        && (r.chars().count() > REASON_MAX || r.chars().any(char::is_control))
    {
        return Err(ApiError::InvalidField(format!(
            "reason must be at most {REASON_MAX} characters without control characters"
        )));
    }
    let rec = party_record(&state, id, &me.username).await?;
    if rec.recipient != me.username.as_str() {
        return Err(ApiError::Forbidden("only the recipient acknowledges a file; the sender cancels with DELETE"));
    }
    let rec = blocking(&state, move |st| st.files().delete(&id)).await?;
    tracing::info!(file = %id, outcome = body.outcome.as_str(), "file acknowledged");
    let ev = Event::FileClosed {
        file_id: id.to_hex(),
        peer: rec.recipient.clone(),
        outcome: body.outcome,
        reason: body.reason,
    };
    state.hub().send(&rec.sender, &ev);
    Ok(Json(FileClosedResponse { file_id: id.to_hex(), outcome: body.outcome }))
}

/// `DELETE /files/{id}` (sender): cancel; a recipient who was told gets `file_closed`.
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<FileClosedResponse>> {
    let id = parse_id(&id)?;
    let me = req.authenticate(&state)?;
    let rec = party_record(&state, id, &me.username).await?;
    if rec.sender != me.username.as_str() {
        return Err(ApiError::Forbidden("only the sender cancels a file; the recipient acknowledges it"));
    }
    let rec = blocking(&state, move |st| st.files().delete(&id)).await?;
    tracing::info!(file = %id, "file cancelled");
    if rec.complete() {
        let ev = Event::FileClosed {
            file_id: id.to_hex(),
            peer: rec.sender.clone(),
            outcome: FileOutcome::Cancelled,
            reason: None,
        };
        state.hub().send(&rec.recipient, &ev);
    }
    Ok(Json(FileClosedResponse { file_id: id.to_hex(), outcome: FileOutcome::Cancelled }))
}

/// Deletes expired files at the injected clock's time and tells their parties. The sweeper task calls it;
/// tests driving a manual clock call it directly.
pub async fn expire(state: &AppState) -> ApiResult<usize> {
    let now = state.now_ms();
    let gone = blocking(state, move |st| st.files().expire(now)).await?;
    for rec in &gone {
        tracing::info!(file = %rec.file_id, "file expired");
        let ev = |peer: &str| Event::FileClosed {
            file_id: rec.file_id.to_hex(),
            peer: peer.to_owned(),
            outcome: FileOutcome::Expired,
            reason: None,
        };
        state.hub().send(&rec.sender, &ev(&rec.recipient));
        if rec.complete() {
            state.hub().send(&rec.recipient, &ev(&rec.sender));
        }
    }
    Ok(gone.len())
}

/// Runs [`expire`] every `interval` until shutdown.
pub async fn sweeper(state: AppState, interval: Duration, mut shutdown: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        if let Err(e) = expire(&state).await {
            tracing::warn!(error = %e, "file expiry sweep failed");
        }
    }
}
