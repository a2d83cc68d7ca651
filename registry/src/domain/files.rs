//! Store-and-forward file transfer: the registry's side. It holds signed manifests and encrypted chunks for
//! recipients who may be offline, and never sees a key, a plaintext byte or a file name (the name is
//! sealed inside the manifest).
//!
//! Storage, beside the user database by default (`registry.sqlite3` → `registry.files/`):
//! `index.sqlite3` (WAL, `synchronous=FULL`) holds one row per file and per stored chunk; each chunk is a
//! blob file `blobs/<file id>/<index>.chunk`. Blob files, not SQLite blobs: measured with the same
//! durability (`scripts/measure_file_store.py`, docs/PERFORMANCE.md "File transfer") they write 1-2.5x as
//! fast and read 4-20x as fast for 1 MiB chunks; SQLite writes every blob twice (WAL, then checkpoint), and
//! a deleted blob's pages stay in the database file until VACUUM, while a delivered file's blobs are simply
//! unlinked. A chunk is acknowledged only after its blob is written, fsynced
//! and renamed into place, the folder fsynced, and its row committed, so a 2xx survives `kill -9` and power
//! loss; a crash in between leaves an orphan blob that [`FileStore::open`] deletes.
//!
//! Abuse limits: a size limit per file, a quota per sender and per recipient (bytes waiting), a cap on
//! waiting files per sender, and a TTL after which [`FileStore::expire`] deletes a file unacknowledged.
//! Calls that write or fsync block: run them on the blocking pool.

use std::collections::HashSet;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context as _, bail};
use qvoice_proto::file::{FileId, Manifest};
use rusqlite::{Connection, OptionalExtension as _, params};
use sha2::{Digest as _, Sha256};

/// Numbered schema migrations of `index.sqlite3`; index + 1 is the `user_version` after it. Append only.
const MIGRATIONS: &[&str] = &["CREATE TABLE files (
        file_id BLOB PRIMARY KEY NOT NULL CHECK (length(file_id) = 16),
        sender TEXT NOT NULL,
        recipient TEXT NOT NULL,
        manifest BLOB NOT NULL,
        size INTEGER NOT NULL,
        chunk_size INTEGER NOT NULL,
        chunk_count INTEGER NOT NULL,
        wire_size INTEGER NOT NULL,
        stored_chunks INTEGER NOT NULL DEFAULT 0,
        created_ms INTEGER NOT NULL,
        expires_ms INTEGER NOT NULL
    ) STRICT;
    CREATE INDEX files_sender ON files (sender);
    CREATE INDEX files_recipient ON files (recipient);
    CREATE INDEX files_expires ON files (expires_ms);
    CREATE TABLE chunks (
        file_id BLOB NOT NULL REFERENCES files (file_id) ON DELETE CASCADE,
        idx INTEGER NOT NULL,
        len INTEGER NOT NULL,
        sha256 BLOB NOT NULL,
        PRIMARY KEY (file_id, idx)
    ) STRICT, WITHOUT ROWID;"];

/// Limits and placement of file storage.
#[derive(Debug, Clone)]
pub struct FilesConfig {
    /// Folder for `index.sqlite3` and `blobs/`; `None`: beside the user database (`<db stem>.files`).
    pub dir: Option<PathBuf>,
    /// Largest file, counted as stored (ciphertext) bytes.
    pub max_file_bytes: u64,
    /// Bytes one sender may have waiting (uploading or unacknowledged) at once.
    pub sender_quota_bytes: u64,
    /// Bytes waiting for one recipient at once.
    pub inbox_quota_bytes: u64,
    /// Files one sender may have waiting at once.
    pub max_files_per_sender: u32,
    /// How long a file stays without acknowledgement (from its creation).
    pub ttl: Duration,
    /// How often expired files are deleted.
    pub sweep_interval: Duration,
}

impl Default for FilesConfig {
    /// 2 GiB per file, 4 GiB waiting per sender and per recipient, 200 files per sender, 7 days, sweep every
    /// minute.
    fn default() -> Self {
        Self {
            dir: None,
            max_file_bytes: 2 << 30,
            sender_quota_bytes: 4 << 30,
            inbox_quota_bytes: 4 << 30,
            max_files_per_sender: 200,
            ttl: Duration::from_secs(7 * 86_400),
            sweep_interval: Duration::from_secs(60),
        }
    }
}

impl FilesConfig {
    /// Where files live for the user database at `db_path`.
    pub fn dir_for(&self, db_path: &Path) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| db_path.with_extension("files"))
    }
}

/// Why a file operation was refused. Mapped to HTTP at the edge (`http::files`).
#[derive(Debug, thiserror::Error)]
pub enum FileError {
    /// The file is larger than `max_file_bytes`.
    #[error("file of {size} bytes is over the limit of {max}")]
    TooLarge { size: u64, max: u64 },
    /// The sender's waiting files would exceed their quota (bytes or count).
    #[error("sender quota exceeded")]
    QuotaExceeded { used: u64, quota: u64, files: bool },
    /// The recipient's waiting files would exceed their inbox quota.
    #[error("recipient inbox full")]
    InboxFull { recipient: String },
    /// No such file (or it was deleted).
    #[error("unknown file")]
    Unknown,
    /// Authenticated, but not a party allowed to do this.
    #[error("{0}")]
    Forbidden(&'static str),
    /// Another manifest already uses this id.
    #[error("file id in use")]
    Exists,
    /// The file is still uploading.
    #[error("file not complete")]
    NotReady,
    /// The chunk does not fit the manifest (index or length).
    #[error("{0}")]
    InvalidChunk(String),
    /// Other bytes are already stored at this index.
    #[error("chunk {0} already stored with other bytes")]
    ChunkConflict(u32),
    /// Database or disk failure.
    #[error("file store: {0:#}")]
    Internal(#[from] anyhow::Error),
}

impl From<rusqlite::Error> for FileError {
    fn from(e: rusqlite::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<std::io::Error> for FileError {
    fn from(e: std::io::Error) -> Self {
        Self::Internal(e.into())
    }
}

/// One file's row.
#[derive(Debug, Clone)]
pub struct FileRecord {
    pub file_id: FileId,
    pub sender: String,
    pub recipient: String,
    /// The signed manifest as uploaded.
    pub manifest: Vec<u8>,
    pub size: u64,
    pub chunk_size: u32,
    pub chunk_count: u32,
    pub wire_size: u64,
    pub stored_chunks: u32,
    pub created_ms: u64,
    pub expires_ms: u64,
    /// Stored chunk indexes as inclusive ranges (filled by [`FileStore::get`] and, for incomplete files,
    /// by [`FileStore::list`]; complete files in lists leave it empty: everything is stored).
    pub stored: Vec<[u32; 2]>,
}

impl FileRecord {
    /// Every chunk is stored.
    pub fn complete(&self) -> bool {
        self.stored_chunks == self.chunk_count
    }

    /// Stored bytes of chunk `index` (from the manifest's sizes), `None` past the end.
    pub fn chunk_wire_len(&self, index: u32) -> Option<usize> {
        if index >= self.chunk_count {
            return None;
        }
        let start = u64::from(index) * u64::from(self.chunk_size);
        let plain = self.size.saturating_sub(start).min(u64::from(self.chunk_size));
        usize::try_from(plain).ok().map(|p| p + qvoice_proto::file::TAG_LEN)
    }
}

/// What [`FileStore::create`] did.
#[derive(Debug)]
pub enum Created {
    /// A new file.
    New(FileRecord),
    /// The same sender sent the same manifest again (a resuming client): the existing file.
    Existing(FileRecord),
}

/// What [`FileStore::put_chunk`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PutOutcome {
    pub stored_chunks: u32,
    /// This chunk completed the file (the recipient must be told now, once).
    pub completed_now: bool,
    pub complete: bool,
}

/// The file index and blob folder.
#[derive(Debug)]
pub struct FileStore {
    conn: Mutex<Connection>,
    blobs: PathBuf,
    config: FilesConfig,
    tmp_seq: AtomicU64,
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

impl FileStore {
    /// Opens (creating if needed) the store in `dir`, applies migrations and deletes what a crash left
    /// behind (temporary blobs, blob folders of files without a row).
    ///
    /// Fails when the folder or database cannot be created or opened, or was written by a newer registry.
    pub fn open(dir: &Path, config: FilesConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir.join("blobs")).with_context(|| format!("creating {}", dir.display()))?;
        let path = dir.join("index.sqlite3");
        let mut conn = Connection::open(&path).with_context(|| format!("opening {}", path.display()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).context("enabling WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("file index refused WAL mode (got {mode})");
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000; PRAGMA foreign_keys=ON;")?;
        migrate(&mut conn)?;
        let store = Self { conn: Mutex::new(conn), blobs: dir.join("blobs"), config, tmp_seq: AtomicU64::new(0) };
        store.remove_orphans()?;
        Ok(store)
    }

    /// The limits in force.
    pub fn config(&self) -> &FilesConfig {
        &self.config
    }

    fn conn(&self) -> Result<std::sync::MutexGuard<'_, Connection>, FileError> {
        self.conn.lock().map_err(|_| FileError::Internal(anyhow::anyhow!("file index mutex poisoned")))
    }

    fn file_dir(&self, id: &FileId) -> PathBuf {
        self.blobs.join(id.to_hex())
    }

    fn chunk_path(&self, id: &FileId, index: u32) -> PathBuf {
        self.file_dir(id).join(format!("{index:08}.chunk"))
    }

    fn remove_orphans(&self) -> anyhow::Result<()> {
        let known: HashSet<String> = {
            let conn = self.conn()?;
            let mut stmt = conn.prepare("SELECT file_id FROM files")?;
            let rows = stmt.query_map([], |r| r.get::<_, Vec<u8>>(0))?;
            rows.filter_map(Result::ok)
                .filter_map(|b| <[u8; 16]>::try_from(b).ok())
                .map(|b| FileId::from_bytes(b).to_hex())
                .collect()
        };
        for entry in std::fs::read_dir(&self.blobs)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !known.contains(&name) {
                tracing::info!(file = name, "removing blobs of a file that has no index row");
                let _ = std::fs::remove_dir_all(entry.path());
                continue;
            }
            for blob in std::fs::read_dir(entry.path())? {
                let blob = blob?;
                if blob.file_name().to_string_lossy().contains(".tmp") {
                    let _ = std::fs::remove_file(blob.path());
                }
            }
        }
        Ok(())
    }

    /// Records a new file from a manifest the caller has verified (signature, sender, recipient key).
    /// Idempotent for the same sender and manifest. Fails with `TooLarge`, `QuotaExceeded`, `InboxFull`,
    /// `Exists` or `Internal`.
    pub fn create(&self, m: &Manifest, now_ms: u64) -> Result<Created, FileError> {
        let wire_size = m.wire_size();
        if wire_size > self.config.max_file_bytes {
            return Err(FileError::TooLarge { size: wire_size, max: self.config.max_file_bytes });
        }
        let mut conn = self.conn()?;
        if let Some(existing) = read_row(&conn, &m.file_id)? {
            if existing.manifest == m.to_bytes() && existing.sender == m.sender.as_str() {
                drop(conn);
                return Ok(Created::Existing(self.get(&m.file_id)?.ok_or(FileError::Unknown)?));
            }
            return Err(FileError::Exists);
        }
        let tx = conn.transaction()?;
        let (sent_bytes, sent_files): (i64, i64) = tx.query_row(
            "SELECT COALESCE(SUM(wire_size), 0), COUNT(*) FROM files WHERE sender = ?1",
            [m.sender.as_str()],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )?;
        let used = to_u64(sent_bytes);
        if to_u64(sent_files) >= u64::from(self.config.max_files_per_sender) {
            return Err(FileError::QuotaExceeded {
                used: to_u64(sent_files),
                quota: u64::from(self.config.max_files_per_sender),
                files: true,
            });
        }
        if used.saturating_add(wire_size) > self.config.sender_quota_bytes {
            return Err(FileError::QuotaExceeded { used, quota: self.config.sender_quota_bytes, files: false });
        }
        let inbox: i64 = tx.query_row(
            "SELECT COALESCE(SUM(wire_size), 0) FROM files WHERE recipient = ?1",
            [m.recipient.as_str()],
            |r| r.get(0),
        )?;
        if to_u64(inbox).saturating_add(wire_size) > self.config.inbox_quota_bytes {
            return Err(FileError::InboxFull { recipient: m.recipient.to_string() });
        }
        let ttl = u64::try_from(self.config.ttl.as_millis()).unwrap_or(u64::MAX);
        let rec = FileRecord {
            file_id: m.file_id,
            sender: m.sender.to_string(),
            recipient: m.recipient.to_string(),
            manifest: m.to_bytes().to_vec(),
            size: m.size,
            chunk_size: m.chunk_size,
            chunk_count: m.chunk_count,
            wire_size,
            stored_chunks: 0,
            created_ms: now_ms,
            expires_ms: now_ms.saturating_add(ttl),
            stored: Vec::new(),
        };
        tx.execute(
            "INSERT INTO files (file_id, sender, recipient, manifest, size, chunk_size, chunk_count, wire_size,
                                created_ms, expires_ms)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            params![
                rec.file_id.as_bytes().as_slice(),
                rec.sender,
                rec.recipient,
                rec.manifest,
                to_i64(rec.size),
                rec.chunk_size,
                rec.chunk_count,
                to_i64(rec.wire_size),
                to_i64(rec.created_ms),
                to_i64(rec.expires_ms),
            ],
        )?;
        tx.commit()?;
        Ok(Created::New(rec))
    }

    /// The file `id` with its stored ranges, if it exists.
    ///
    /// Fails only on database errors.
    pub fn get(&self, id: &FileId) -> Result<Option<FileRecord>, FileError> {
        let conn = self.conn()?;
        let Some(mut rec) = read_row(&conn, id)? else { return Ok(None) };
        rec.stored = stored_ranges(&conn, id)?;
        Ok(Some(rec))
    }

    /// Complete files for `recipient` and waiting files from `sender` (`user` in both roles), oldest first.
    ///
    /// Fails only on database errors.
    pub fn list(&self, user: &str) -> Result<(Vec<FileRecord>, Vec<FileRecord>), FileError> {
        let conn = self.conn()?;
        let query = |sql: &str| -> Result<Vec<FileRecord>, FileError> {
            let mut stmt = conn.prepare_cached(sql)?;
            let rows = stmt.query_map([user], row_to_record)?;
            Ok(rows.collect::<Result<Vec<_>, _>>()?)
        };
        let incoming = query(&format!(
            "SELECT {COLUMNS} FROM files WHERE recipient = ?1 AND stored_chunks = chunk_count ORDER BY created_ms"
        ))?;
        let mut outgoing = query(&format!("SELECT {COLUMNS} FROM files WHERE sender = ?1 ORDER BY created_ms"))?;
        for rec in outgoing.iter_mut().filter(|r| !r.complete()) {
            rec.stored = stored_ranges(&conn, &rec.file_id)?;
        }
        Ok((incoming, outgoing))
    }

    /// Stores chunk `index` of `id` for `sender`. Writing the same bytes again is a no-op success (a
    /// resuming client cannot know whether its last chunk arrived). Blocks on fsync. Fails with `Unknown`,
    /// `Forbidden` (not the sender), `InvalidChunk`, `ChunkConflict` or `Internal`.
    pub fn put_chunk(&self, id: &FileId, sender: &str, index: u32, bytes: &[u8]) -> Result<PutOutcome, FileError> {
        let rec = {
            let conn = self.conn()?;
            read_row(&conn, id)?.ok_or(FileError::Unknown)?
        };
        if rec.sender != sender {
            return Err(FileError::Forbidden("only the sender uploads chunks"));
        }
        let expected = rec.chunk_wire_len(index).ok_or_else(|| {
            FileError::InvalidChunk(format!("chunk index {index} is beyond the file's {} chunks", rec.chunk_count))
        })?;
        if bytes.len() != expected {
            return Err(FileError::InvalidChunk(format!(
                "chunk {index} must be {expected} bytes (the manifest's size), got {}",
                bytes.len()
            )));
        }
        let sha: [u8; 32] = Sha256::digest(bytes).into();
        if let Some(done) = self.already_stored(id, index, &sha, &rec)? {
            return Ok(done);
        }
        // The expensive part (write + fsync) runs without the index lock; the rename and row insert run
        // under it, so two uploads of one index cannot both count.
        let dir = self.file_dir(id);
        std::fs::create_dir_all(&dir)?;
        let tmp = dir.join(format!("{index:08}.tmp{}", self.tmp_seq.fetch_add(1, Ordering::Relaxed)));
        let written = (|| -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()
        })();
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(e.into());
        }
        let mut conn = self.conn()?;
        let result = (|| -> Result<PutOutcome, FileError> {
            // Re-read under the lock: the file may have been deleted, or this index stored, meanwhile.
            let rec = read_row(&conn, id)?.ok_or(FileError::Unknown)?;
            if let Some(done) = stored_outcome(&conn, id, index, &sha, &rec)? {
                return Ok(done);
            }
            std::fs::rename(&tmp, self.chunk_path(id, index))?;
            std::fs::File::open(&dir)?.sync_all()?;
            let tx = conn.transaction()?;
            tx.execute(
                "INSERT INTO chunks (file_id, idx, len, sha256) VALUES (?1, ?2, ?3, ?4)",
                params![id.as_bytes().as_slice(), index, bytes.len() as i64, sha.as_slice()],
            )?;
            tx.execute(
                "UPDATE files SET stored_chunks = stored_chunks + 1 WHERE file_id = ?1",
                [id.as_bytes().as_slice()],
            )?;
            tx.commit()?;
            let stored = rec.stored_chunks + 1;
            Ok(PutOutcome {
                stored_chunks: stored,
                completed_now: stored == rec.chunk_count,
                complete: stored == rec.chunk_count,
            })
        })();
        drop(conn);
        let _ = std::fs::remove_file(&tmp);
        result
    }

    fn already_stored(
        &self,
        id: &FileId,
        index: u32,
        sha: &[u8; 32],
        rec: &FileRecord,
    ) -> Result<Option<PutOutcome>, FileError> {
        let conn = self.conn()?;
        stored_outcome(&conn, id, index, sha, rec)
    }

    /// The stored bytes of chunk `index` of `id`, for its recipient once the file is complete. Fails with
    /// `Unknown`, `Forbidden` (not the recipient), `NotReady`, `InvalidChunk` or `Internal`.
    pub fn read_chunk(&self, id: &FileId, recipient: &str, index: u32) -> Result<Vec<u8>, FileError> {
        let rec = {
            let conn = self.conn()?;
            read_row(&conn, id)?.ok_or(FileError::Unknown)?
        };
        if rec.recipient != recipient {
            return Err(FileError::Forbidden("only the recipient downloads a file"));
        }
        if !rec.complete() {
            return Err(FileError::NotReady);
        }
        if index >= rec.chunk_count {
            return Err(FileError::InvalidChunk(format!(
                "chunk index {index} is beyond the file's {} chunks",
                rec.chunk_count
            )));
        }
        match std::fs::read(self.chunk_path(id, index)) {
            Ok(b) => Ok(b),
            // Deleted by an acknowledgement or the sweeper between the row read and here.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(FileError::Unknown),
            Err(e) => Err(e.into()),
        }
    }

    /// Deletes `id` (row, chunk rows, blobs) and returns its record. Fails with `Unknown` or `Internal`.
    pub fn delete(&self, id: &FileId) -> Result<FileRecord, FileError> {
        let rec = {
            let conn = self.conn()?;
            let rec = read_row(&conn, id)?.ok_or(FileError::Unknown)?;
            conn.execute("DELETE FROM files WHERE file_id = ?1", [id.as_bytes().as_slice()])?;
            rec
        };
        // After the commit: a crash here leaves an orphan folder that the next open removes.
        let _ = std::fs::remove_dir_all(self.file_dir(id));
        Ok(rec)
    }

    /// Deletes every file whose TTL passed at `now_ms`; returns them (their parties are told).
    ///
    /// Fails only on database errors.
    pub fn expire(&self, now_ms: u64) -> Result<Vec<FileRecord>, FileError> {
        let ids: Vec<FileId> = {
            let conn = self.conn()?;
            let mut stmt = conn.prepare_cached("SELECT file_id FROM files WHERE expires_ms <= ?1")?;
            let rows = stmt.query_map([to_i64(now_ms)], |r| r.get::<_, Vec<u8>>(0))?;
            rows.filter_map(Result::ok).filter_map(|b| <[u8; 16]>::try_from(b).ok()).map(FileId::from_bytes).collect()
        };
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.delete(&id) {
                Ok(rec) => out.push(rec),
                Err(FileError::Unknown) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }

    /// (files, stored bytes) currently held, for metrics and tests.
    ///
    /// Fails only on database errors.
    pub fn totals(&self) -> Result<(u64, u64), FileError> {
        let conn = self.conn()?;
        let (n, bytes): (i64, i64) =
            conn.query_row("SELECT COUNT(*), COALESCE((SELECT SUM(len) FROM chunks), 0) FROM files", [], |r| {
                Ok((r.get(0)?, r.get(1)?))
            })?;
        Ok((to_u64(n), to_u64(bytes)))
    }
}

/// Stored chunk indexes of `id` as inclusive ranges.
fn stored_ranges(conn: &Connection, id: &FileId) -> Result<Vec<[u32; 2]>, FileError> {
    let mut stmt = conn.prepare_cached("SELECT idx FROM chunks WHERE file_id = ?1 ORDER BY idx")?;
    let idx = stmt.query_map([id.as_bytes().as_slice()], |r| r.get::<_, u32>(0))?;
    let mut ranges: Vec<[u32; 2]> = Vec::new();
    for i in idx {
        let i = i?;
        match ranges.last_mut() {
            Some(last) if last[1] + 1 == i => last[1] = i,
            _ => ranges.push([i, i]),
        }
    }
    Ok(ranges)
}

fn stored_outcome(
    conn: &Connection,
    id: &FileId,
    index: u32,
    sha: &[u8; 32],
    rec: &FileRecord,
) -> Result<Option<PutOutcome>, FileError> {
    let existing: Option<Vec<u8>> = conn
        .query_row(
            "SELECT sha256 FROM chunks WHERE file_id = ?1 AND idx = ?2",
            params![id.as_bytes().as_slice(), index],
            |r| r.get(0),
        )
        .optional()?;
    match existing {
        None => Ok(None),
        Some(s) if s == sha => {
            Ok(Some(PutOutcome { stored_chunks: rec.stored_chunks, completed_now: false, complete: rec.complete() }))
        }
        Some(_) => Err(FileError::ChunkConflict(index)),
    }
}

const COLUMNS: &str = "file_id, sender, recipient, manifest, size, chunk_size, chunk_count, wire_size, stored_chunks,
                       created_ms, expires_ms";

fn row_to_record(r: &rusqlite::Row<'_>) -> rusqlite::Result<FileRecord> {
    let id: Vec<u8> = r.get(0)?;
    let id = <[u8; 16]>::try_from(id)
        .map_err(|_| rusqlite::Error::InvalidColumnType(0, "file_id".into(), rusqlite::types::Type::Blob))?;
    Ok(FileRecord {
        file_id: FileId::from_bytes(id),
        sender: r.get(1)?,
        recipient: r.get(2)?,
        manifest: r.get(3)?,
        size: to_u64(r.get(4)?),
        chunk_size: r.get(5)?,
        chunk_count: r.get(6)?,
        wire_size: to_u64(r.get(7)?),
        stored_chunks: r.get(8)?,
        created_ms: to_u64(r.get(9)?),
        expires_ms: to_u64(r.get(10)?),
        stored: Vec::new(),
    })
}

fn read_row(conn: &Connection, id: &FileId) -> Result<Option<FileRecord>, FileError> {
    let mut stmt = conn.prepare_cached(&format!("SELECT {COLUMNS} FROM files WHERE file_id = ?1"))?;
    Ok(stmt.query_row([id.as_bytes().as_slice()], row_to_record).optional()?)
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len())?;
    if version > known {
        bail!("file index schema version {version} is newer than this registry ({known}); upgrade qvoice-registry");
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version)?) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql).with_context(|| format!("applying file index migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1)?)?;
        tx.commit()?;
    }
    Ok(())
}
