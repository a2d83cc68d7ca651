//! Encrypted file transfer for the client: send (encrypt, upload, resume after a crash), list, receive
//! (download, verify, decrypt into a temporary file renamed into place only after every check passed),
//! acknowledge. The cryptography is `qvoice_proto::file`; the registry only ever sees ciphertext.
//!
//! Memory does not grow with the file: a few chunks (1 MiB each) are in flight at once. Trust follows the
//! call rules exactly: the recipient's (or sender's) identity key is pinned on first use, and a key that
//! differs from the pin blocks sending and receiving until `qvoice verify NAME`.
//!
//! Resume: before the manifest is uploaded, the sender writes `outbox/<file id>.json` (0600) with the
//! manifest and the file's symmetric keys; a later `send` of the same path (same size and modification
//! time) to the same user asks the registry which chunks it has and uploads only the rest. Encryption is
//! deterministic given those keys, so re-sent chunks are byte-identical. The record is deleted when the
//! upload completes.

use std::collections::VecDeque;
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use qvoice_proto::file::{
    DEFAULT_CHUNK_SIZE, FileError, FileId, FileKeys, FileMeta, MAX_NAME_LEN, Manifest, SealParams, StreamOpener,
    open_manifest, seal_manifest,
};
use qvoice_proto::{IdentitySecret, PrekeySecret, Username, b64};
use qvoice_wire::{
    AckFileBody, ChunkStored, CreateFileBody, ErrorCode, FileClosedResponse, FileOutcome, FileState, FileStatus,
    FilesResponse,
};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use zeroize::Zeroizing;

use super::client::{ClientError, RegistryClient};
use super::events::{Direction, SessionEvent, Trust};
use super::store::{ContactBook, write_atomic};

/// Chunk requests in flight at once, each way: enough to hide the registry's fsync per chunk on a fast
/// link, small enough that memory stays a few MiB.
const IN_FLIGHT: usize = 4;
/// One chunk request may take this long (1 MiB over a slow uplink).
const CHUNK_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a transfer failed. Each message says what to do next.
#[derive(Debug, thiserror::Error)]
pub enum TransferError {
    /// The registry refused or could not be reached.
    #[error(transparent)]
    Registry(#[from] ClientError),
    /// The peer's identity key differs from the pinned one.
    #[error(
        "{0}'s identity key changed: nothing was sent or received. Compare the new safety number with them \
         (`qvoice contacts`), then run `qvoice verify {0}`"
    )]
    KeyChanged(String),
    /// The file failed verification; nothing was saved and the registry deleted it.
    #[error("the file from {sender} was refused and nothing was saved: {reason}. Ask {sender} to send it again")]
    Refused { sender: String, reason: FileError },
    /// The file cannot be opened with our keys (the prekey it was sent to is gone).
    #[error("{0}")]
    CannotOpen(String),
    /// The file is not ready or not ours.
    #[error("{0}")]
    NotAvailable(String),
    /// A local file operation failed.
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
}

impl TransferError {
    fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Self {
        let what = what.into();
        move |source| Self::Io { what, source }
    }
}

/// Progress of one transfer, reported after each chunk.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Progress {
    pub file_id: String,
    /// Plaintext bytes done, including chunks the registry already had.
    pub done: u64,
    pub total: u64,
    /// Bytes the registry already had when the transfer (re)started.
    pub resumed: u64,
}

/// What `send` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct SendReport {
    pub file_id: String,
    pub recipient: String,
    pub name: String,
    pub size: u64,
    /// Chunks uploaded by this run.
    pub uploaded_chunks: u32,
    /// Chunks the registry already had (a resumed upload).
    pub skipped_chunks: u32,
    pub trust: Trust,
}

/// An incoming file as `qvoice files` lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Incoming {
    pub file_id: String,
    pub sender: String,
    pub size: u64,
    /// The sender's file name, sanitised; `None` when the manifest cannot be opened.
    pub name: Option<String>,
    pub trust: Trust,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Why it cannot be received as is (key changed, prekey gone, bad manifest).
    pub problem: Option<String>,
}

/// What `receive` did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct ReceiveReport {
    pub file_id: String,
    pub sender: String,
    pub path: PathBuf,
    pub size: u64,
    pub trust: Trust,
    /// False when the file was saved but the acknowledgement did not reach the registry (it will be
    /// listed again; the next receive saves a second copy with a suffix).
    pub acknowledged: bool,
}

/// Everything a transfer needs from the session: the signed registry client and our keys.
#[derive(Clone, Debug)]
pub struct Files {
    client: RegistryClient,
    identity: Arc<IdentitySecret>,
    data_dir: PathBuf,
}

#[derive(Serialize, Deserialize)]
struct OutboxRecord {
    file_id: String,
    recipient: String,
    path: PathBuf,
    size: u64,
    mtime_ns: i128,
    manifest: String,
    /// `file_key ‖ nonce_prefix`, base64url: a secret, like keys.json (wiped on drop).
    keys: String,
}

impl Drop for OutboxRecord {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.keys);
    }
}

fn mtime_ns(meta: &std::fs::Metadata) -> i128 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map_or(0, |d| i128::try_from(d.as_nanos()).unwrap_or(0))
}

fn now_ms() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Files {
    /// `client` signs as us with `identity`; resume records live in `data_dir/outbox`.
    pub fn new(client: RegistryClient, identity: Arc<IdentitySecret>, data_dir: &Path) -> Self {
        Self { client, identity, data_dir: data_dir.to_owned() }
    }

    fn outbox(&self) -> PathBuf {
        self.data_dir.join("outbox")
    }

    fn me(&self) -> &Username {
        self.client.username()
    }

    /// Encrypts `path` to `to` and uploads it, resuming an interrupted upload of the same file. Reports
    /// progress after each chunk. Fails with `KeyChanged` (nothing sent), `Registry` (unknown user,
    /// limits, unreachable) or `Io`.
    pub async fn send(
        &self,
        contacts: &mut ContactBook,
        to: &Username,
        path: &Path,
        mut progress: impl FnMut(&Progress),
    ) -> Result<SendReport, TransferError> {
        let meta = std::fs::metadata(path).map_err(TransferError::io(format!("reading {}", path.display())))?;
        if !meta.is_file() {
            return Err(TransferError::NotAvailable(format!("{} is not a regular file", path.display())));
        }
        let canonical =
            std::fs::canonicalize(path).map_err(TransferError::io(format!("reading {}", path.display())))?;
        let bundle = self.client.fetch(to).await?;
        if let Err(e) = contacts.reload() {
            tracing::warn!(error = %e, "could not re-read contacts");
        }
        let trust = contacts
            .check(to.as_str(), &bundle.identity_key, now_ms())
            .map_err(|e| TransferError::NotAvailable(format!("could not save contacts: {e:#}")))?;
        if trust == Trust::KeyChanged {
            return Err(TransferError::KeyChanged(to.to_string()));
        }
        let (manifest, keys) = match self.resumable(to, &canonical, &meta).await? {
            Some(found) => found,
            None => {
                let sha256 = hash_file(&canonical).await?;
                let name = display_name(&canonical);
                let fmeta = FileMeta { name, sha256 };
                let params = SealParams {
                    sender: self.me(),
                    recipient: to,
                    recipient_key: &bundle.identity_key,
                    recipient_prekey: &bundle.prekey,
                    meta: &fmeta,
                    size: meta.len(),
                    chunk_size: DEFAULT_CHUNK_SIZE,
                };
                let (manifest, keys) = seal_manifest(&mut rand::rng(), now_ms(), &self.identity, &params)
                    .map_err(|e| TransferError::NotAvailable(format!("cannot encrypt to {to}: {e}")))?;
                self.save_outbox(&manifest, &keys, to, &canonical, &meta)?;
                (manifest, keys)
            }
        };
        let id = manifest.file_id.to_hex();
        let body = CreateFileBody { manifest: b64::encode(manifest.to_bytes()) };
        let status: FileStatus = self.client.post("/files", &body).await?;
        let stored = StoredSet::from_ranges(&status.stored, manifest.chunk_count);
        let resumed: u64 = (0..manifest.chunk_count)
            .filter(|&i| stored.has(i))
            .map(|i| manifest.chunk_plain_len(i).unwrap_or(0) as u64)
            .sum();
        let mut p = Progress { file_id: id.clone(), done: resumed, total: manifest.size, resumed };
        progress(&p);
        let cipher = Arc::new(keys.cipher(&manifest));
        let mut file =
            std::fs::File::open(&canonical).map_err(TransferError::io(format!("reading {}", canonical.display())))?;
        let mut inflight: VecDeque<(u32, JoinHandle<Result<ChunkStored, ClientError>>)> = VecDeque::new();
        let mut uploaded = 0u32;
        let mut plain = Vec::new();
        for index in (0..manifest.chunk_count).filter(|&i| !stored.has(i)) {
            let len = manifest.chunk_plain_len(index).unwrap_or(0);
            plain.resize(len, 0);
            file.seek(SeekFrom::Start(u64::from(index) * u64::from(manifest.chunk_size)))
                .and_then(|_| file.read_exact(&mut plain))
                .map_err(TransferError::io(format!(
                    "reading {} (did it change during the upload?)",
                    canonical.display()
                )))?;
            let mut sealed = Vec::with_capacity(len + 16);
            cipher
                .seal(index, &plain, &mut sealed)
                .map_err(|e| TransferError::NotAvailable(format!("cannot encrypt chunk {index}: {e}")))?;
            let client = self.client.clone();
            let path = format!("/files/{id}/chunks/{index}");
            inflight.push_back((
                index,
                tokio::spawn(async move {
                    let rb = client.signed_as(reqwest::Method::PUT, &path, sealed, "application/octet-stream");
                    client.send_within(rb, CHUNK_TIMEOUT).await
                }),
            ));
            if inflight.len() >= IN_FLIGHT {
                self.finish_upload(&mut inflight, &manifest, &mut p, &mut progress).await?;
                uploaded += 1;
            }
        }
        while !inflight.is_empty() {
            self.finish_upload(&mut inflight, &manifest, &mut p, &mut progress).await?;
            uploaded += 1;
        }
        let _ = std::fs::remove_file(self.outbox().join(format!("{id}.json")));
        let name = display_name(&canonical);
        Ok(SendReport {
            file_id: id,
            recipient: to.to_string(),
            name,
            size: manifest.size,
            uploaded_chunks: uploaded,
            skipped_chunks: manifest.chunk_count - uploaded,
            trust,
        })
    }

    async fn finish_upload(
        &self,
        inflight: &mut VecDeque<(u32, JoinHandle<Result<ChunkStored, ClientError>>)>,
        manifest: &Manifest,
        p: &mut Progress,
        progress: &mut impl FnMut(&Progress),
    ) -> Result<(), TransferError> {
        let Some((index, task)) = inflight.pop_front() else { return Ok(()) };
        let done = task.await.map_err(|e| TransferError::NotAvailable(format!("upload task failed: {e}")));
        let stored = match done {
            Ok(r) => r,
            Err(e) => {
                abort_all(inflight);
                return Err(e);
            }
        };
        if let Err(e) = stored {
            abort_all(inflight);
            return Err(e.into());
        }
        p.done += manifest.chunk_plain_len(index).unwrap_or(0) as u64;
        progress(p);
        Ok(())
    }

    /// A matching resume record whose file the registry still has.
    async fn resumable(
        &self,
        to: &Username,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<Option<(Manifest, FileKeys)>, TransferError> {
        let Ok(dir) = std::fs::read_dir(self.outbox()) else { return Ok(None) };
        for entry in dir.flatten() {
            let Ok(text) = std::fs::read(entry.path()).map(Zeroizing::new) else { continue };
            let Ok(rec) = serde_json::from_slice::<OutboxRecord>(&text) else { continue };
            if rec.recipient != to.as_str() || rec.path != path {
                continue;
            }
            if rec.size != meta.len() || rec.mtime_ns != mtime_ns(meta) {
                // The file changed since: that transfer can never complete correctly.
                tracing::info!(file = rec.file_id, "source changed since the interrupted upload; starting over");
                let _ = self.client_delete(&rec.file_id).await;
                let _ = std::fs::remove_file(entry.path());
                continue;
            }
            let parsed = b64::decode(&rec.manifest)
                .ok()
                .and_then(|m| Manifest::parse(&m).ok())
                .zip(b64::decode(&rec.keys).ok().map(Zeroizing::new).and_then(|k| FileKeys::from_bytes(&k).ok()));
            let Some((manifest, keys)) = parsed else {
                let _ = std::fs::remove_file(entry.path());
                continue;
            };
            match self.client.get::<FileStatus>(&format!("/files/{}", rec.file_id)).await {
                // Complete too: the last run may have died between the last chunk and removing the record;
                // resuming then uploads nothing instead of sending the file twice.
                Ok(s) if matches!(s.state, FileState::Uploading | FileState::Complete) => {
                    return Ok(Some((manifest, keys)));
                }
                Ok(_) => {}
                Err(e) if e.code() == Some(ErrorCode::UnknownFile) => {}
                Err(e) => return Err(e.into()),
            }
            let _ = std::fs::remove_file(entry.path());
        }
        Ok(None)
    }

    fn save_outbox(
        &self,
        m: &Manifest,
        keys: &FileKeys,
        to: &Username,
        path: &Path,
        meta: &std::fs::Metadata,
    ) -> Result<(), TransferError> {
        let rec = OutboxRecord {
            file_id: m.file_id.to_hex(),
            recipient: to.to_string(),
            path: path.to_owned(),
            size: meta.len(),
            mtime_ns: mtime_ns(meta),
            manifest: b64::encode(m.to_bytes()),
            keys: b64::encode(&keys.to_bytes()[..]),
        };
        let text = Zeroizing::new(serde_json::to_vec(&rec).map_err(|e| TransferError::NotAvailable(e.to_string()))?);
        write_atomic(&self.outbox().join(format!("{}.json", rec.file_id)), &text, 0o600)
            .map_err(|e| TransferError::NotAvailable(format!("cannot write the resume record: {e:#}")))
    }

    async fn client_delete(&self, id: &str) -> Result<FileClosedResponse, ClientError> {
        let rb =
            self.client.signed_as(reqwest::Method::DELETE, &format!("/files/{id}"), Vec::new(), "application/json");
        self.client.send_within(rb, CHUNK_TIMEOUT).await
    }

    /// Cancels one of our uploads. Fails with `Registry`.
    pub async fn cancel(&self, id: &FileId) -> Result<(), TransferError> {
        self.client_delete(&id.to_hex()).await?;
        let _ = std::fs::remove_file(self.outbox().join(format!("{}.json", id.to_hex())));
        Ok(())
    }

    /// Our files on the registry: complete incoming ones (with the sender's name for them and trust) and
    /// our outgoing ones. Fails with `Registry`.
    pub async fn list(
        &self,
        contacts: &ContactBook,
        prekeys: &[PrekeySecret],
    ) -> Result<(Vec<Incoming>, Vec<FileStatus>), TransferError> {
        let r: FilesResponse = self.client.get("/files").await?;
        let incoming = r.incoming.iter().map(|s| self.describe(s, contacts, prekeys)).collect();
        Ok((incoming, r.outgoing))
    }

    fn describe(&self, s: &FileStatus, contacts: &ContactBook, prekeys: &[PrekeySecret]) -> Incoming {
        let mut out = Incoming {
            file_id: s.file_id.clone(),
            sender: s.sender.clone(),
            size: s.size,
            name: None,
            trust: contacts.trust(&s.sender),
            created_ms: s.created_ms,
            expires_ms: s.expires_ms,
            problem: None,
        };
        let Some(m) = b64::decode(&s.manifest).ok().and_then(|b| Manifest::parse(&b).ok()) else {
            out.problem = Some("the manifest does not parse".into());
            return out;
        };
        if contacts.pinned(&s.sender).is_some_and(|k| k != m.sender_key) {
            out.trust = Trust::KeyChanged;
            out.problem =
                Some(format!("{}'s identity key changed; run `qvoice verify {}` after comparing", s.sender, s.sender));
        }
        match open_manifest(&m, &self.identity, self.me(), prekeys) {
            Ok((meta, _)) => out.name = Some(sanitize_file_name(&meta.name, &s.file_id)),
            Err(e) => out.problem = Some(e.to_string()),
        }
        out
    }

    /// Downloads, verifies and decrypts file `id` into `out_dir`, then acknowledges it. The output goes to a
    /// temporary file in `out_dir` that becomes the sanitised sender's name (never overwriting: ` (1)`
    /// suffixes) only after every chunk authenticated and the SHA-256 matched; on any failure it is
    /// deleted, and a file that failed verification is acknowledged as `refused`. Fails with `KeyChanged`
    /// (nothing downloaded, the file stays), `Refused`, `CannotOpen`, `NotAvailable`, `Registry` or `Io`.
    pub async fn receive(
        &self,
        contacts: &mut ContactBook,
        prekeys: &[PrekeySecret],
        id: &FileId,
        out_dir: &Path,
        mut progress: impl FnMut(&Progress),
    ) -> Result<ReceiveReport, TransferError> {
        let hex = id.to_hex();
        let status: FileStatus = self.client.get(&format!("/files/{hex}")).await?;
        if status.recipient != self.me().as_str() {
            return Err(TransferError::NotAvailable(format!("file {hex} is not addressed to you")));
        }
        if status.state != FileState::Complete {
            return Err(TransferError::NotAvailable(format!(
                "file {hex} from {} is still being uploaded; try again later",
                status.sender
            )));
        }
        let sender = status.sender.clone();
        let manifest = b64::decode(&status.manifest)
            .ok()
            .and_then(|b| Manifest::parse(&b).ok())
            .filter(|m| m.file_id == *id && m.sender.as_str() == sender && m.recipient == *self.me());
        let Some(manifest) = manifest else {
            return Err(self.refuse(&hex, &sender, FileError::Malformed("manifest does not match the file")).await);
        };
        if let Err(e) = contacts.reload() {
            tracing::warn!(error = %e, "could not re-read contacts");
        }
        let trust = contacts
            .check(&sender, &manifest.sender_key, now_ms())
            .map_err(|e| TransferError::NotAvailable(format!("could not save contacts: {e:#}")))?;
        if trust == Trust::KeyChanged {
            return Err(TransferError::KeyChanged(sender));
        }
        let (meta, keys) = match open_manifest(&manifest, &self.identity, self.me(), prekeys) {
            Ok(x) => x,
            Err(FileError::UnknownPrekey(pid)) => {
                return Err(TransferError::CannotOpen(format!(
                    "the file from {sender} was encrypted to your prekey {pid}, which you no longer have (rotated \
                     out); ask {sender} to send it again"
                )));
            }
            Err(e) => return Err(self.refuse(&hex, &sender, e).await),
        };
        std::fs::create_dir_all(out_dir).map_err(TransferError::io(format!("creating {}", out_dir.display())))?;
        let tmp = out_dir.join(format!(".qvoice-{hex}.part"));
        let mut guard = TempFile(Some(tmp.clone()));
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(TransferError::io(format!("creating {}", tmp.display())))?;
        let mut opener = StreamOpener::new(keys.cipher(&manifest), &meta);
        let mut p = Progress { file_id: hex.clone(), done: 0, total: manifest.size, resumed: 0 };
        progress(&p);
        let mut inflight: VecDeque<JoinHandle<Result<Vec<u8>, ClientError>>> = VecDeque::new();
        let mut next_request = 0u32;
        let mut plain = Vec::new();
        while opener.next_index() < manifest.chunk_count {
            while inflight.len() < IN_FLIGHT && next_request < manifest.chunk_count {
                let client = self.client.clone();
                let path = format!("/files/{hex}/chunks/{next_request}");
                inflight.push_back(tokio::spawn(async move {
                    let rb = client.signed_as(reqwest::Method::GET, &path, Vec::new(), "application/json");
                    client.send_bytes(rb, CHUNK_TIMEOUT).await
                }));
                next_request += 1;
            }
            let Some(task) = inflight.pop_front() else { break };
            let bytes = match task.await {
                Ok(Ok(b)) => b,
                Ok(Err(e)) => {
                    abort_all_bytes(&mut inflight);
                    return Err(e.into());
                }
                Err(e) => {
                    abort_all_bytes(&mut inflight);
                    return Err(TransferError::NotAvailable(format!("download task failed: {e}")));
                }
            };
            if let Err(e) = opener.open_next(&bytes, &mut plain) {
                abort_all_bytes(&mut inflight);
                drop(file);
                guard.remove();
                return Err(self.refuse(&hex, &sender, e).await);
            }
            file.write_all(&plain).map_err(TransferError::io(format!("writing {}", tmp.display())))?;
            p.done += plain.len() as u64;
            progress(&p);
        }
        if let Err(e) = opener.finish() {
            drop(file);
            guard.remove();
            return Err(self.refuse(&hex, &sender, e).await);
        }
        file.sync_all().map_err(TransferError::io(format!("writing {}", tmp.display())))?;
        drop(file);
        let name = sanitize_file_name(&meta.name, &hex);
        let path = place(&tmp, out_dir, &name)?;
        guard.0 = None;
        if let Ok(d) = std::fs::File::open(out_dir) {
            let _ = d.sync_all();
        }
        let body = AckFileBody { outcome: FileOutcome::Delivered, reason: None };
        let acknowledged = match self.client.post::<FileClosedResponse>(&format!("/files/{hex}/ack"), &body).await {
            Ok(_) => true,
            Err(e) => {
                tracing::warn!(error = %e, file = hex, "saved, but the acknowledgement failed");
                false
            }
        };
        Ok(ReceiveReport { file_id: hex, sender, path, size: manifest.size, trust, acknowledged })
    }

    /// Deletes an incoming file without saving it (`discarded`). Fails with `Registry`.
    pub async fn discard(&self, id: &FileId) -> Result<(), TransferError> {
        let body = AckFileBody { outcome: FileOutcome::Discarded, reason: None };
        self.client.post::<FileClosedResponse>(&format!("/files/{}/ack", id.to_hex()), &body).await?;
        Ok(())
    }

    /// Tells the registry (and so the sender) that the file failed verification; returns the error to show.
    async fn refuse(&self, hex: &str, sender: &str, reason: FileError) -> TransferError {
        let body = AckFileBody { outcome: FileOutcome::Refused, reason: Some(short_reason(&reason)) };
        if let Err(e) = self.client.post::<FileClosedResponse>(&format!("/files/{hex}/ack"), &body).await {
            tracing::warn!(error = %e, file = hex, "could not report the refused file");
        }
        TransferError::Refused { sender: sender.to_owned(), reason }
    }
}

/// `~` and `~/…` as the user's home folder (a path typed in the TUI is not expanded by a shell).
pub fn expand_home(path: &str) -> PathBuf {
    let home = || std::env::var_os("HOME").map(PathBuf::from);
    match path.strip_prefix('~') {
        Some("") => home().unwrap_or_else(|| PathBuf::from(path)),
        Some(rest) if rest.starts_with('/') => {
            home().map_or_else(|| PathBuf::from(path), |h| h.join(rest.trim_start_matches('/')))
        }
        _ => PathBuf::from(path),
    }
}

/// What went wrong with a transfer, in the user's words: the file that is missing, the limit that was hit,
/// the name that does not exist, with what to do next.
pub fn user_message(e: &TransferError, direction: Direction, peer: &str, path: &str) -> String {
    match e {
        TransferError::Io { source, .. } if direction == Direction::Outgoing => match source.kind() {
            std::io::ErrorKind::NotFound => {
                format!("there is no file {path}: check the path (~/ is your home folder)")
            }
            std::io::ErrorKind::PermissionDenied => format!("cannot read {path}: permission denied"),
            _ => e.to_string(),
        },
        TransferError::Registry(ClientError::Api { code, message, .. }) => match code {
            ErrorCode::FileTooLarge => format!("{path} is too large for this registry: {message}"),
            ErrorCode::QuotaExceeded | ErrorCode::InboxFull => {
                format!("the registry has no room for {path} now: {message}")
            }
            ErrorCode::UnknownUser => format!("there is no user {peer} on this registry: check the name"),
            ErrorCode::UnknownFile => {
                "this file is no longer at the registry (received, discarded, cancelled or expired)".into()
            }
            _ => e.to_string(),
        },
        _ => e.to_string(),
    }
}

/// Whether an incoming file is still at the registry after `e` (so receiving it can be tried again).
fn still_waiting(e: &TransferError) -> bool {
    match e {
        TransferError::Refused { .. } => false,
        TransferError::Registry(c) => c.code() != Some(ErrorCode::UnknownFile),
        _ => true,
    }
}

/// The session driver's background transfers: each send, receive, discard or listing runs in its own task
/// (the driver and the UI never wait for one) and reports [`SessionEvent`]s. Dropping this aborts them all.
#[derive(Debug)]
pub struct Transfers {
    files: Files,
    download_dir: PathBuf,
    events: mpsc::Sender<SessionEvent>,
    tasks: Vec<JoinHandle<()>>,
}

impl Transfers {
    /// Saves received files into `download_dir`; reports on `events`.
    pub fn new(files: Files, download_dir: PathBuf, events: mpsc::Sender<SessionEvent>) -> Self {
        Self { files, download_dir, events, tasks: Vec::new() }
    }

    fn spawn(&mut self, task: impl std::future::Future<Output = ()> + Send + 'static) {
        self.tasks.retain(|t| !t.is_finished());
        self.tasks.push(tokio::spawn(task));
    }

    fn contacts(&self) -> Result<ContactBook, String> {
        ContactBook::load(&self.files.data_dir).map_err(|e| format!("{e:#}"))
    }

    /// Encrypts and uploads `path` to `to`.
    pub fn send(&mut self, to: String, path: String) {
        let (files, events, contacts) = (self.files.clone(), self.events.clone(), self.contacts());
        self.spawn(async move {
            let failed = |message: String| SessionEvent::FileFailed {
                direction: Direction::Outgoing,
                peer: to.clone(),
                path: path.clone(),
                file_id: String::new(),
                message,
                waiting: false,
            };
            let name = match Username::parse(&to) {
                Ok(n) => n,
                Err(e) => return drop(events.send(failed(format!("{to:?} is not a username: {e}"))).await),
            };
            if name == *files.me() {
                return drop(events.send(failed("you cannot send a file to yourself".into())).await);
            }
            let mut contacts = match contacts {
                Ok(c) => c,
                Err(e) => return drop(events.send(failed(e)).await),
            };
            let progress_tx = events.clone();
            let (peer, shown) = (to.clone(), path.clone());
            let report = files
                .send(&mut contacts, &name, &expand_home(&path), |p| {
                    let _ = progress_tx.try_send(SessionEvent::FileProgress {
                        direction: Direction::Outgoing,
                        peer: peer.clone(),
                        path: shown.clone(),
                        file_id: p.file_id.clone(),
                        done: p.done,
                        total: p.total,
                        resumed: p.resumed,
                    });
                })
                .await;
            let ev = match report {
                Ok(r) => {
                    tracing::info!(to, file = r.file_id, size = r.size, "file sent");
                    SessionEvent::FileSent { to, path, file_id: r.file_id, name: r.name, size: r.size }
                }
                Err(e) => {
                    tracing::warn!(to, path, error = %e, "sending a file failed");
                    failed(user_message(&e, Direction::Outgoing, &to, &path))
                }
            };
            let _ = events.send(ev).await;
        });
    }

    /// Downloads, verifies and saves incoming file `id` into the download folder, then acknowledges it.
    pub fn receive(&mut self, id: String, prekeys: Vec<PrekeySecret>) {
        let (files, events, contacts) = (self.files.clone(), self.events.clone(), self.contacts());
        let dir = self.download_dir.clone();
        self.spawn(async move {
            let failed = |message: String, waiting: bool| SessionEvent::FileFailed {
                direction: Direction::Incoming,
                peer: String::new(),
                path: String::new(),
                file_id: id.clone(),
                message,
                waiting,
            };
            let Ok(fid) = FileId::from_hex(&id) else {
                return drop(events.send(failed(format!("{id:?} is not a file id"), false)).await);
            };
            let mut contacts = match contacts {
                Ok(c) => c,
                Err(e) => return drop(events.send(failed(e, true)).await),
            };
            let progress_tx = events.clone();
            let report = files
                .receive(&mut contacts, &prekeys, &fid, &dir, |p| {
                    let _ = progress_tx.try_send(SessionEvent::FileProgress {
                        direction: Direction::Incoming,
                        peer: String::new(),
                        path: String::new(),
                        file_id: p.file_id.clone(),
                        done: p.done,
                        total: p.total,
                        resumed: p.resumed,
                    });
                })
                .await;
            let ev = match report {
                Ok(r) => {
                    tracing::info!(file = r.file_id, from = r.sender, path = %r.path.display(), "file saved");
                    SessionEvent::FileSaved {
                        file_id: r.file_id,
                        from: r.sender,
                        path: r.path.display().to_string(),
                        size: r.size,
                    }
                }
                Err(e) => {
                    tracing::warn!(file = id, error = %e, "receiving a file failed");
                    let waiting = still_waiting(&e);
                    failed(user_message(&e, Direction::Incoming, "", &id), waiting)
                }
            };
            let _ = events.send(ev).await;
        });
    }

    /// Deletes incoming file `id` at the registry without saving it.
    pub fn discard(&mut self, id: String) {
        let (files, events) = (self.files.clone(), self.events.clone());
        self.spawn(async move {
            let result = match FileId::from_hex(&id) {
                Ok(fid) => files.discard(&fid).await.map_err(|e| user_message(&e, Direction::Incoming, "", &id)),
                Err(_) => Err(format!("{id:?} is not a file id")),
            };
            let ev = match result {
                Ok(()) => SessionEvent::FileDiscarded { file_id: id },
                Err(message) => SessionEvent::FileFailed {
                    direction: Direction::Incoming,
                    peer: String::new(),
                    path: String::new(),
                    file_id: id,
                    message: format!("could not discard the file: {message}"),
                    waiting: true,
                },
            };
            let _ = events.send(ev).await;
        });
    }

    /// Lists the files waiting for us ([`SessionEvent::Files`]).
    pub fn list(&mut self, prekeys: Vec<PrekeySecret>) {
        let (files, events, contacts) = (self.files.clone(), self.events.clone(), self.contacts());
        self.spawn(async move {
            let ev = match contacts {
                Ok(c) => match files.list(&c, &prekeys).await {
                    Ok((incoming, _)) => SessionEvent::Files { incoming },
                    Err(e) => {
                        tracing::warn!(error = %e, "could not list the waiting files");
                        return;
                    }
                },
                Err(e) => SessionEvent::Error { message: e },
            };
            let _ = events.send(ev).await;
        });
    }
}

impl Drop for Transfers {
    fn drop(&mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

fn short_reason(e: &FileError) -> String {
    let s = e.to_string();
    s.chars().take(128).collect()
}

fn abort_all<T>(q: &mut VecDeque<(u32, JoinHandle<T>)>) {
    for (_, t) in q.drain(..) {
        t.abort();
    }
}

fn abort_all_bytes<T>(q: &mut VecDeque<JoinHandle<T>>) {
    for t in q.drain(..) {
        t.abort();
    }
}

/// Deletes the temporary download on every early return.
struct TempFile(Option<PathBuf>);

impl TempFile {
    fn remove(&mut self) {
        if let Some(p) = self.0.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        self.remove();
    }
}

/// Which chunks the registry already has.
struct StoredSet(Vec<bool>);

impl StoredSet {
    fn from_ranges(ranges: &[[u32; 2]], count: u32) -> Self {
        let mut v = vec![false; count as usize];
        for [a, b] in ranges {
            for i in *a..=(*b).min(count.saturating_sub(1)) {
                v[i as usize] = true;
            }
        }
        Self(v)
    }

    fn has(&self, i: u32) -> bool {
        self.0.get(i as usize).copied().unwrap_or(false)
    }
}

async fn hash_file(path: &Path) -> Result<[u8; 32], TransferError> {
    let path = path.to_owned();
    tokio::task::spawn_blocking(move || {
        let mut f = std::fs::File::open(&path).map_err(TransferError::io(format!("reading {}", path.display())))?;
        let mut h = Sha256::new();
        let mut buf = vec![0u8; 1 << 20];
        loop {
            let n = f.read(&mut buf).map_err(TransferError::io(format!("reading {}", path.display())))?;
            if n == 0 {
                return Ok(h.finalize().into());
            }
            h.update(&buf[..n]);
        }
    })
    .await
    .map_err(|e| TransferError::NotAvailable(format!("hashing task failed: {e}")))?
}

/// The name the recipient sees: the last path component, at most 255 bytes of UTF-8.
fn display_name(path: &Path) -> String {
    let name = path.file_name().map_or_else(|| "file".into(), |n| n.to_string_lossy().into_owned());
    truncate_utf8(&name, MAX_NAME_LEN).to_owned()
}

fn truncate_utf8(s: &str, max: usize) -> &str {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// Characters never allowed in a saved name: controls, and the invisible or direction-changing format
/// characters that make a name display as something it is not (`gpj.exe` shown as `exe.jpg`).
fn forbidden(c: char) -> bool {
    c.is_control()
        || matches!(c, '\u{061C}' | '\u{200B}'..='\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2060}'..='\u{206F}' | '\u{FEFF}')
        || matches!(c, '/' | '\\')
}

/// A safe local file name from the sender's: the last path component (`/` and `\` both separate), no
/// control or bidirectional-format characters, no leading dots (no hidden files, never `.` or `..`), no
/// trailing dots or spaces, at most 200 bytes; `file-<id prefix>` when nothing is left.
pub fn sanitize_file_name(name: &str, file_id: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = last.chars().filter(|&c| !forbidden(c)).collect();
    let trimmed = cleaned.trim_start_matches(['.', ' ']).trim_end_matches(['.', ' ']);
    let out = truncate_utf8(trimmed, 200).trim_end_matches(['.', ' ']);
    if out.is_empty() { format!("file-{}", &file_id[..file_id.len().min(8)]) } else { out.to_owned() }
}

/// Moves the verified temporary file to `dir/name`, or `name (1)`, `name (2)`… if taken: a hard link
/// fails instead of replacing an existing file, so nothing is ever overwritten, even in a race.
fn place(tmp: &Path, dir: &Path, name: &str) -> Result<PathBuf, TransferError> {
    let (stem, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i..]),
        _ => (name, ""),
    };
    for n in 0..10_000u32 {
        let candidate = if n == 0 { dir.join(name) } else { dir.join(format!("{stem} ({n}){ext}")) };
        match std::fs::hard_link(tmp, &candidate) {
            Ok(()) => {
                let _ = std::fs::remove_file(tmp);
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => return Err(TransferError::Io { what: format!("saving {}", candidate.display()), source: e }),
        }
    }
    Err(TransferError::NotAvailable(format!("10000 files named like {name} exist in {}", dir.display())))
}

/// Where received files go by default: the XDG download folder (`~/Downloads` if unset); with `--home`
/// (a separate qvoice identity) `HOME_DIR/downloads`.
pub fn default_download_dir(home_override: Option<&Path>) -> PathBuf {
    if let Some(h) = home_override {
        return h.join("downloads");
    }
    directories::UserDirs::new()
        .and_then(|u| u.download_dir().map(Path::to_owned).or_else(|| Some(u.home_dir().join("Downloads"))))
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hostile_names_become_safe_names() {
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(sanitize_file_name("../../x", id), "x");
        assert_eq!(sanitize_file_name("..\\..\\windows\\evil.bat", id), "evil.bat");
        assert_eq!(sanitize_file_name("/etc/passwd", id), "passwd");
        assert_eq!(sanitize_file_name("..", id), "file-01234567");
        assert_eq!(sanitize_file_name(".bashrc", id), "bashrc");
        assert_eq!(sanitize_file_name("a\x1b[31mred\x07\n.txt", id), "a[31mred.txt");
        assert_eq!(sanitize_file_name("invoice\u{202E}fdp.exe", id), "invoicefdp.exe");
        assert_eq!(sanitize_file_name("name. . ", id), "name");
        assert_eq!(sanitize_file_name("\u{0}\u{1}", id), "file-01234567");
        let long = "é".repeat(200);
        let s = sanitize_file_name(&long, id);
        assert!(s.len() <= 200 && s.chars().all(|c| c == 'é'));
    }

    #[test]
    fn placing_never_overwrites() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), b"old").unwrap();
        std::fs::write(dir.path().join("a (1).txt"), b"old").unwrap();
        let tmp = dir.path().join(".part");
        std::fs::write(&tmp, b"new").unwrap();
        let p = place(&tmp, dir.path(), "a.txt").unwrap();
        assert_eq!(p, dir.path().join("a (2).txt"));
        assert_eq!(std::fs::read(dir.path().join("a.txt")).unwrap(), b"old");
        assert_eq!(std::fs::read(&p).unwrap(), b"new");
        assert!(!tmp.exists());
        std::fs::write(&tmp, b"x").unwrap();
        assert_eq!(place(&tmp, dir.path(), "noext").unwrap(), dir.path().join("noext"));
    }

    #[test]
    fn transfer_errors_are_said_in_the_users_words() {
        let missing = std::fs::metadata("/no/such/report.pdf").map_err(TransferError::io("reading")).unwrap_err();
        let m = user_message(&missing, Direction::Outgoing, "bob", "~/report.pdf");
        assert_eq!(m, "there is no file ~/report.pdf: check the path (~/ is your home folder)");
        let api = |code, message: &str| {
            TransferError::Registry(ClientError::Api { status: 413, code, message: message.into() })
        };
        let big = api(ErrorCode::FileTooLarge, "the file is 9 bytes encrypted; this registry takes at most 5 bytes");
        let m = user_message(&big, Direction::Outgoing, "bob", "big.iso");
        assert!(m.starts_with("big.iso is too large for this registry: ") && m.contains("at most 5 bytes"), "{m}");
        let m = user_message(&api(ErrorCode::UnknownUser, "x"), Direction::Outgoing, "bbo", "a");
        assert_eq!(m, "there is no user bbo on this registry: check the name");
        let changed = TransferError::KeyChanged("bob".into());
        assert!(user_message(&changed, Direction::Outgoing, "bob", "a").contains("qvoice verify bob"));
        assert!(still_waiting(&changed));
        assert!(!still_waiting(&api(ErrorCode::UnknownFile, "gone")));
    }

    #[test]
    fn typed_paths_expand_the_home_folder() {
        let home = std::env::var_os("HOME").map(PathBuf::from).unwrap();
        assert_eq!(expand_home("~/a/b.txt"), home.join("a/b.txt"));
        assert_eq!(expand_home("~"), home);
        assert_eq!(expand_home("/tmp/~x"), PathBuf::from("/tmp/~x"));
        assert_eq!(expand_home("~bob/x"), PathBuf::from("~bob/x"));
    }

    #[test]
    fn stored_ranges_expand() {
        let s = StoredSet::from_ranges(&[[0, 1], [3, 3], [5, 99]], 6);
        assert_eq!((0..6).map(|i| s.has(i)).collect::<Vec<_>>(), [true, true, false, true, false, true]);
    }
}
