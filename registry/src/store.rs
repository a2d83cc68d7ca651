//! The user directory: a SQLite file (the source of truth) fronted by an in-memory map (what reads
//! are served from).
//!
//! Durability: the database runs in WAL mode with `synchronous=FULL`. In WAL mode `NORMAL` only
//! risks losing the last transactions on power loss, but a registration the client saw a 2xx for
//! must survive exactly that, so every commit fsyncs the WAL before the response is written. WAL
//! keeps readers (the startup load, backups, `integrity_check`) from blocking the writer.
//!
//! All writes take one mutex around the connection and update the cache before releasing it, so
//! the cache never disagrees with the file. Writes block (fsync), so callers run them on the
//! blocking pool. Schema changes are numbered migrations tracked in `PRAGMA user_version`.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};

use anyhow::{Context, bail};
use qvoice_proto::{IdentityKey, Username};
use rusqlite::{Connection, OptionalExtension, params};

/// Numbered schema migrations; index + 1 is the `user_version` after applying it. Append only.
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE users (
        username TEXT PRIMARY KEY NOT NULL,
        identity_key BLOB NOT NULL CHECK (length(identity_key) = 32),
        prekey BLOB NOT NULL,
        display_name TEXT,
        media_port INTEGER,
        registered_ms INTEGER NOT NULL,
        updated_ms INTEGER NOT NULL
    ) STRICT;",
    "ALTER TABLE users ADD COLUMN last_seen_ms INTEGER;",
    // The newest signed-request timestamp accepted from the user: after a restart, requests must be newer
    // (persisted replay protection, see floor.rs).
    "ALTER TABLE users ADD COLUMN last_request_ms INTEGER NOT NULL DEFAULT 0;",
];

/// One registered user, as served by `/fetch`.
#[derive(Debug, Clone)]
pub struct UserRecord {
    /// The claimed name.
    pub username: Username,
    /// Ed25519 identity key; fixed at first registration (TOFU).
    pub identity_key: IdentityKey,
    /// The signed ML-KEM-768 prekey, in its proto wire encoding.
    pub prekey: Vec<u8>,
    /// Optional human name for the contact list.
    pub display_name: Option<String>,
    /// Optional UDP media port the user listens on.
    pub media_port: Option<u16>,
    /// When the name was first claimed (Unix ms).
    pub registered_ms: u64,
    /// When the record last changed (Unix ms).
    pub updated_ms: u64,
    /// Wire forms for `/fetch`, computed once per registration instead of once per request.
    pub wire: WireForms,
}

/// Pre-encoded fields of a [`UserRecord`].
#[derive(Debug, Clone, Default)]
pub struct WireForms {
    /// base64url identity key.
    pub identity_key: String,
    /// base64url signed prekey.
    pub prekey: String,
    /// The prekey's id.
    pub prekey_id: u32,
}

impl WireForms {
    /// Encodes `key` and `prekey` (proto wire bytes of a signed prekey).
    pub fn new(key: &IdentityKey, prekey: &[u8]) -> Self {
        Self {
            identity_key: qvoice_proto::b64::encode(key.as_bytes()),
            prekey: qvoice_proto::b64::encode(prekey),
            prekey_id: qvoice_proto::SignedPrekey::parse(prekey).map_or(0, |p| p.id),
        }
    }
}

/// What a registration did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new name was claimed.
    Created,
    /// An existing record with the same identity key was updated.
    Updated,
    /// The name belongs to another identity key; nothing was written.
    Taken,
}

/// The user directory.
#[derive(Debug)]
pub struct Store {
    conn: Mutex<Connection>,
    users: RwLock<BTreeMap<String, Arc<UserRecord>>>,
    last_seen: RwLock<HashMap<String, u64>>,
}

impl Store {
    /// Opens (creating if needed) the database at `path`, applies migrations and loads all users.
    ///
    /// Fails when the file cannot be opened, is not a qvoice database, or was written by a newer
    /// version of the registry.
    pub fn open(path: &Path) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).with_context(|| format!("creating database directory {}", dir.display()))?;
        }
        let mut conn = Connection::open(path).with_context(|| format!("opening database {}", path.display()))?;
        let mode: String = conn.query_row("PRAGMA journal_mode=WAL", [], |r| r.get(0)).context("enabling WAL")?;
        if !mode.eq_ignore_ascii_case("wal") {
            bail!("database refused WAL mode (got {mode})");
        }
        conn.execute_batch("PRAGMA synchronous=FULL; PRAGMA busy_timeout=5000;").context("setting pragmas")?;
        migrate(&mut conn)?;
        let (users, last_seen) = load(&conn)?;
        Ok(Self { conn: Mutex::new(conn), users: RwLock::new(users), last_seen: RwLock::new(last_seen) })
    }

    /// Claims or updates a name, and records `request_ms` (the registration request's timestamp) as the
    /// user's replay floor in the same transaction. Blocks on fsync; call from the blocking pool.
    ///
    /// Fails only on database errors.
    pub fn register(&self, rec: UserRecord, request_ms: u64) -> anyhow::Result<RegisterOutcome> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let existing = self.get(rec.username.as_str());
        let (outcome, registered_ms) = match &existing {
            Some(old) if old.identity_key != rec.identity_key => return Ok(RegisterOutcome::Taken),
            Some(old) => (RegisterOutcome::Updated, old.registered_ms),
            None => (RegisterOutcome::Created, rec.registered_ms),
        };
        let changed = conn
            .execute(
                "INSERT INTO users (username, identity_key, prekey, display_name, media_port,
                                    registered_ms, updated_ms, last_request_ms)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
                 ON CONFLICT (username) DO UPDATE SET
                    prekey = excluded.prekey, display_name = excluded.display_name,
                    media_port = excluded.media_port, updated_ms = excluded.updated_ms,
                    last_request_ms = max(users.last_request_ms, excluded.last_request_ms)
                 WHERE users.identity_key = excluded.identity_key",
                params![
                    rec.username.as_str(),
                    rec.identity_key.as_bytes().as_slice(),
                    rec.prekey,
                    rec.display_name,
                    rec.media_port,
                    to_i64(registered_ms),
                    to_i64(rec.updated_ms),
                    to_i64(request_ms),
                ],
            )
            .context("writing user")?;
        if changed == 0 {
            return Ok(RegisterOutcome::Taken);
        }
        let rec = UserRecord { registered_ms, ..rec };
        let mut users = self.users.write().map_err(|_| anyhow::anyhow!("cache lock poisoned"))?;
        users.insert(rec.username.as_str().to_owned(), Arc::new(rec));
        Ok(outcome)
    }

    /// The user named `name`, if registered.
    pub fn get(&self, name: &str) -> Option<Arc<UserRecord>> {
        self.users.read().ok()?.get(name).cloned()
    }

    /// Up to `limit` users with names after `after`, in name order.
    pub fn list(&self, after: Option<&str>, limit: usize) -> Vec<Arc<UserRecord>> {
        let Ok(users) = self.users.read() else { return Vec::new() };
        let iter: Box<dyn Iterator<Item = &Arc<UserRecord>>> = match after {
            Some(a) => Box::new(
                users.range::<str, _>((std::ops::Bound::Excluded(a), std::ops::Bound::Unbounded)).map(|(_, v)| v),
            ),
            None => Box::new(users.values()),
        };
        iter.take(limit).cloned().collect()
    }

    /// Number of registered users.
    pub fn count(&self) -> usize {
        self.users.read().map_or(0, |u| u.len())
    }

    /// When `name` was last online (Unix ms), if ever seen.
    pub fn last_seen(&self, name: &str) -> Option<u64> {
        self.last_seen.read().ok()?.get(name).copied()
    }

    /// Records in memory that `name` was online at `ms` (visible to `/fetch` at once).
    pub fn remember_last_seen(&self, name: &str, ms: u64) {
        if let Ok(mut m) = self.last_seen.write() {
            m.insert(name.to_owned(), ms);
        }
    }

    /// Writes `name`'s last-seen time to the database. Blocks; call from the blocking pool.
    ///
    /// Fails only on database errors.
    pub fn persist_last_seen(&self, name: &str, ms: u64) -> anyhow::Result<()> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        conn.execute("UPDATE users SET last_seen_ms = ?2 WHERE username = ?1", params![name, to_i64(ms)])
            .context("writing last_seen")?;
        Ok(())
    }

    /// Every user's replay floor (the newest signed-request timestamp accepted before this start).
    ///
    /// Fails only on database errors.
    pub fn request_floors(&self) -> anyhow::Result<HashMap<String, u64>> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let mut stmt = conn.prepare("SELECT username, last_request_ms FROM users WHERE last_request_ms > 0")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, i64>(1)?)))?;
        let mut out = HashMap::new();
        for row in rows {
            let (name, ms) = row?;
            out.insert(name, u64::try_from(ms).unwrap_or(0));
        }
        Ok(out)
    }

    /// Raises the replay floors of the given users (never lowers them), in one transaction. Blocks on
    /// fsync; call from the blocking pool.
    ///
    /// Fails only on database errors.
    pub fn persist_request_floors(&self, floors: &[(String, u64)]) -> anyhow::Result<()> {
        let mut conn = self.conn.lock().map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        let tx = conn.transaction().context("starting floor transaction")?;
        {
            let mut stmt =
                tx.prepare_cached("UPDATE users SET last_request_ms = max(last_request_ms, ?2) WHERE username = ?1")?;
            for (name, ms) in floors {
                stmt.execute(params![name, to_i64(*ms)]).context("writing replay floor")?;
            }
        }
        tx.commit().context("committing replay floors")?;
        Ok(())
    }

    /// Runs `PRAGMA integrity_check` and returns its verdict (`"ok"` when healthy).
    ///
    /// Fails only on database errors.
    pub fn integrity_check(&self) -> anyhow::Result<String> {
        let conn = self.conn.lock().map_err(|_| anyhow::anyhow!("store mutex poisoned"))?;
        conn.query_row("PRAGMA integrity_check", [], |r| r.get(0)).context("integrity_check")
    }
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn migrate(conn: &mut Connection) -> anyhow::Result<()> {
    let version: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    let known = i64::try_from(MIGRATIONS.len())?;
    if version > known {
        bail!("database schema version {version} is newer than this registry ({known}); upgrade qvoice-registry");
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(usize::try_from(version)?) {
        let tx = conn.transaction()?;
        tx.execute_batch(sql).with_context(|| format!("applying migration {}", i + 1))?;
        tx.pragma_update(None, "user_version", i64::try_from(i + 1)?)?;
        tx.commit()?;
        tracing::info!(version = i + 1, "applied schema migration");
    }
    Ok(())
}

type Loaded = (BTreeMap<String, Arc<UserRecord>>, HashMap<String, u64>);

fn load(conn: &Connection) -> anyhow::Result<Loaded> {
    let mut stmt = conn.prepare(
        "SELECT username, identity_key, prekey, display_name, media_port, registered_ms,
                updated_ms, last_seen_ms FROM users",
    )?;
    let mut rows = stmt.query([])?;
    let mut users = BTreeMap::new();
    let mut seen = HashMap::new();
    while let Some(row) = rows.next()? {
        let name: String = row.get(0)?;
        let key: Vec<u8> = row.get(1)?;
        // Rows were validated on insert; a row that no longer parses is skipped, not fatal.
        let (Ok(username), Ok(identity_key)) = (Username::parse(&name), IdentityKey::from_bytes(&key)) else {
            tracing::warn!(username = name, "skipping unparsable user row");
            continue;
        };
        let last: Option<i64> = row.get(7)?;
        if let Some(l) = last {
            seen.insert(name.clone(), u64::try_from(l).unwrap_or(0));
        }
        let prekey: Vec<u8> = row.get(2)?;
        let rec = UserRecord {
            wire: WireForms::new(&identity_key, &prekey),
            username,
            identity_key,
            prekey,
            display_name: row.get(3)?,
            media_port: row.get(4)?,
            registered_ms: u64::try_from(row.get::<_, i64>(5)?).unwrap_or(0),
            updated_ms: u64::try_from(row.get::<_, i64>(6)?).unwrap_or(0),
        };
        users.insert(name, Arc::new(rec));
    }
    Ok((users, seen))
}

/// Reads the schema version of the database at `path` (for tests and diagnostics).
///
/// Fails when the file cannot be opened.
pub fn schema_version(path: &Path) -> anyhow::Result<i64> {
    let conn = Connection::open(path)?;
    Ok(conn.query_row("PRAGMA user_version", [], |r| r.get(0))?)
}

/// Whether `name` exists in the database file at `path`, read straight from SQLite (for tests).
///
/// Fails when the file cannot be opened.
pub fn file_has_user(path: &Path, name: &str) -> anyhow::Result<bool> {
    let conn = Connection::open(path)?;
    Ok(conn.query_row("SELECT 1 FROM users WHERE username = ?1", [name], |_| Ok(())).optional()?.is_some())
}
