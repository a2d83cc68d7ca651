//! Local state on disk: our keys (identity and prekeys, file mode 0600) and the pinned identity keys of
//! contacts (trust on first use). Files are replaced atomically so a crash never leaves half a key file.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use qvoice_proto::{
    IdentityKey, IdentitySecret, PREKEY_LIFETIME_MS, PREKEY_RETENTION_MS, PrekeySecret, SignedPrekey, Username, b64,
};
use serde::{Deserialize, Serialize};

use super::events::{CallRecord, Trust};

/// Writes `bytes` to `path` via a temporary file, fsync and rename, with permission `mode`.
///
/// Fails on I/O errors.
pub fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> anyhow::Result<()> {
    let dir = path.parent().context("path has no parent folder")?;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    // A unique temporary name: two qvoice processes may save the same file at once.
    static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp.{}.{seq}", std::process::id()));
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(mode)
        .open(&tmp)
        .with_context(|| format!("writing {}", tmp.display()))?;
    f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    std::fs::rename(&tmp, path).with_context(|| format!("replacing {}", path.display()))?;
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Warns when the key file at `path` can be read or written by other users (group or others have any
/// permission), and makes it owner-only. Anyone who could read it may have copied the identity.
fn tighten_if_exposed(path: &Path) {
    let Ok(meta) = std::fs::metadata(path) else { return };
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 == 0 {
        return;
    }
    let fixed = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).is_ok();
    let msg = format!(
        "{} was accessible to other users (mode {mode:03o}); {}. Anyone who read it can impersonate you: if \
         that may have happened, make a new identity with `qvoice init --force` and tell your contacts",
        path.display(),
        if fixed { "it is now 0600" } else { "run `chmod 600` on it" },
    );
    // Headless commands log warnings to stderr; the TUI to its log pane.
    tracing::warn!("{msg}");
}

#[derive(Serialize, Deserialize)]
struct KeyFile {
    username: String,
    identity: String,
    prekeys: Vec<PrekeyEntry>,
}

#[derive(Serialize, Deserialize)]
struct PrekeyEntry {
    id: u32,
    seed: String,
    created_ms: u64,
}

/// Our identity and prekeys. Secrets are zeroized when dropped (by the proto types).
pub struct Keystore {
    path: PathBuf,
    pub username: Username,
    pub identity: IdentitySecret,
    /// Newest first.
    pub prekeys: Vec<(PrekeySecret, u64)>,
}

impl std::fmt::Debug for Keystore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Keystore({}, {:?})", self.username, self.identity.public())
    }
}

impl Keystore {
    pub fn path_in(data_dir: &Path) -> PathBuf {
        data_dir.join("keys.json")
    }

    /// Creates new keys for `username` and saves them. Fails if keys exist and `force` is false.
    pub fn create(data_dir: &Path, username: Username, now_ms: u64, force: bool) -> anyhow::Result<Self> {
        let path = Self::path_in(data_dir);
        if path.exists() && !force {
            bail!(
                "{} already holds an identity; pass --force to replace it (contacts will see a key change)",
                path.display()
            );
        }
        let ks = Self::generate(data_dir, username, now_ms);
        ks.save()?;
        Ok(ks)
    }

    /// New keys for `username`, in memory only: [`Keystore::save`] writes them into `data_dir` (`qvoice init`
    /// saves them only once the registry has accepted the registration).
    pub fn generate(data_dir: &Path, username: Username, now_ms: u64) -> Self {
        let mut rng = rand::rng();
        let identity = IdentitySecret::generate(&mut rng);
        let prekey = PrekeySecret::generate(&mut rng, 1);
        Self { path: Self::path_in(data_dir), username, identity, prekeys: vec![(prekey, now_ms)] }
    }

    /// Loads the keys. Fails with a hint to run `qvoice init` when there are none.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = Self::path_in(data_dir);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                bail!("no identity in {}; run `qvoice init --username NAME --registry URL` first", data_dir.display())
            }
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        tighten_if_exposed(&path);
        let kf: KeyFile =
            serde_json::from_str(&text).with_context(|| format!("corrupt key file {}", path.display()))?;
        let username = Username::parse(&kf.username).context("key file holds an invalid username")?;
        let id_bytes: [u8; 32] = b64::decode(&kf.identity)?
            .try_into()
            .map_err(|_| anyhow::anyhow!("key file: identity key must be 32 bytes"))?;
        let identity = IdentitySecret::from_bytes(&id_bytes);
        let mut prekeys = Vec::new();
        for p in kf.prekeys {
            let seed: [u8; 64] = b64::decode(&p.seed)?
                .try_into()
                .map_err(|_| anyhow::anyhow!("key file: prekey seed must be 64 bytes"))?;
            prekeys.push((PrekeySecret::from_seed(p.id, &seed), p.created_ms));
        }
        if prekeys.is_empty() {
            bail!("key file {} has no prekey; run `qvoice rotate-prekey`", path.display());
        }
        Ok(Self { path, username, identity, prekeys })
    }

    /// Writes the key file (mode 0600). Fails on I/O errors.
    pub fn save(&self) -> anyhow::Result<()> {
        let kf = KeyFile {
            username: self.username.to_string(),
            identity: b64::encode(self.identity.to_bytes().as_ref()),
            prekeys: self
                .prekeys
                .iter()
                .map(|(p, created_ms)| PrekeyEntry {
                    id: p.id(),
                    seed: b64::encode(p.to_seed().as_ref()),
                    created_ms: *created_ms,
                })
                .collect(),
        };
        let text = zeroize::Zeroizing::new(serde_json::to_vec_pretty(&kf)?);
        write_atomic(&self.path, &text, 0o600)
    }

    /// The prekey to publish.
    pub fn current_prekey(&self) -> &PrekeySecret {
        &self.prekeys[0].0
    }

    pub fn current_prekey_created_ms(&self) -> u64 {
        self.prekeys[0].1
    }

    /// The current prekey as published: signed by our identity, expiring [`PREKEY_LIFETIME_MS`] after it
    /// was created (docs/PROTOCOL.md, "Identities and prekeys").
    pub fn signed_prekey(&self) -> SignedPrekey {
        self.current_prekey().sign(&self.identity, self.current_prekey_created_ms() + PREKEY_LIFETIME_MS)
    }

    /// All prekeys we can still decapsulate with.
    pub fn prekey_secrets(&self) -> Vec<PrekeySecret> {
        self.prekeys.iter().map(|(p, _)| PrekeySecret::from_seed(p.id(), &p.to_seed())).collect()
    }

    /// Reads the prekeys from disk again (`qvoice rotate-prekey` may have run in another process).
    /// Fails when the key file is unreadable.
    pub fn reload_prekeys(&mut self) -> anyhow::Result<()> {
        let dir = self.path.parent().context("key file has no folder")?;
        self.prekeys = Self::load(dir)?.prekeys;
        Ok(())
    }

    /// Makes a new prekey current and deletes the secrets of prekeys that expired more than
    /// [`PREKEY_RETENTION_MS`] ago (a caller may still encapsulate to an older one until it expires, and
    /// its REVEAL comes shortly after). Saves. Fails on I/O errors.
    pub fn rotate_prekey(&mut self, now_ms: u64) -> anyhow::Result<u32> {
        let id = self.prekeys.iter().map(|(p, _)| p.id()).max().unwrap_or(0).wrapping_add(1);
        self.prekeys.insert(0, (PrekeySecret::generate(&mut rand::rng(), id), now_ms));
        self.prekeys.retain(|(_, created)| created + PREKEY_LIFETIME_MS + PREKEY_RETENTION_MS > now_ms);
        self.save()?;
        Ok(id)
    }
}

/// Call history, newest last, in `history.jsonl` in the data dir: one JSON record per line, appended
/// as calls end and compacted to [`CallHistory::KEEP`] records when it grows to twice that. A line that
/// does not parse (a crash mid-append) is skipped, never fatal.
#[derive(Debug)]
pub struct CallHistory {
    path: PathBuf,
}

impl CallHistory {
    /// Records kept across restarts.
    pub const KEEP: usize = 200;

    pub fn in_dir(data_dir: &Path) -> Self {
        Self { path: data_dir.join("history.jsonl") }
    }

    /// The saved records, oldest first (empty if there is no file). Fails on I/O errors other than a
    /// missing file.
    pub fn load(&self) -> anyhow::Result<Vec<CallRecord>> {
        let text = match std::fs::read_to_string(&self.path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", self.path.display())),
        };
        let mut v: Vec<CallRecord> = text.lines().filter_map(|l| serde_json::from_str(l).ok()).collect();
        let drop = v.len().saturating_sub(Self::KEEP);
        v.drain(..drop);
        Ok(v)
    }

    /// Appends one record (the file is created owner-only); compacts when the file has grown to
    /// 2 x [`CallHistory::KEEP`] lines. Fails on I/O errors.
    pub fn append(&self, rec: &CallRecord) -> anyhow::Result<()> {
        // The file is small (bounded): read it to finish a line torn by a crash before appending.
        let before = std::fs::read(&self.path).unwrap_or_default();
        let mut line = Vec::new();
        if before.last().is_some_and(|&b| b != b'\n') {
            line.push(b'\n');
        }
        line.extend(serde_json::to_vec(rec)?);
        line.push(b'\n');
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o600)
            .open(&self.path)
            .with_context(|| format!("opening {}", self.path.display()))?;
        f.write_all(&line).with_context(|| format!("writing {}", self.path.display()))?;
        f.sync_data().with_context(|| format!("syncing {}", self.path.display()))?;
        drop(f);
        let lines = before.iter().filter(|&&b| b == b'\n').count() + 1;
        if lines >= 2 * Self::KEEP {
            let kept = self.load()?;
            let mut out = Vec::new();
            for r in &kept {
                out.extend(serde_json::to_vec(r)?);
                out.push(b'\n');
            }
            write_atomic(&self.path, &out, 0o600)?;
        }
        Ok(())
    }
}

/// A pinned contact.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Contact {
    /// The pinned identity key, base64url.
    pub identity_key: String,
    pub first_seen_ms: u64,
    pub verified: bool,
    /// A different key the registry served since pinning; calls are blocked until the user verifies it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offered_key: Option<String>,
    /// The user said the SAS did not match on a call with this contact: calling them is blocked until
    /// they verify the contact again (`qvoice verify NAME`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub suspicious: bool,
}

/// Identity keys of everyone we have talked to, pinned on first use.
#[derive(Debug)]
pub struct ContactBook {
    path: PathBuf,
    pub contacts: BTreeMap<String, Contact>,
}

impl ContactBook {
    /// Loads `contacts.json` from `data_dir` (empty if missing). Fails on a corrupt file.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join("contacts.json");
        let contacts = match std::fs::read_to_string(&path) {
            Ok(t) => serde_json::from_str(&t).with_context(|| format!("corrupt contacts file {}", path.display()))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        Ok(Self { path, contacts })
    }

    /// Fails on I/O errors.
    pub fn save(&self) -> anyhow::Result<()> {
        write_atomic(&self.path, &serde_json::to_vec_pretty(&self.contacts)?, 0o600)
    }

    /// Trust in `name` without changing anything.
    pub fn trust(&self, name: &str) -> Trust {
        match self.contacts.get(name) {
            None => Trust::New,
            Some(c) if c.offered_key.is_some() => Trust::KeyChanged,
            Some(c) if c.suspicious => Trust::Suspicious,
            Some(c) if c.verified => Trust::Verified,
            Some(_) => Trust::Unverified,
        }
    }

    /// Checks `key` against the pin for `name`: pins it if new (and saves), records it as offered and
    /// returns [`Trust::KeyChanged`] if it differs from the pin. Fails on I/O errors.
    pub fn check(&mut self, name: &str, key: &IdentityKey, now_ms: u64) -> anyhow::Result<Trust> {
        let encoded = b64::encode(key.as_bytes());
        match self.contacts.get_mut(name) {
            None => {
                let c = Contact {
                    identity_key: encoded,
                    first_seen_ms: now_ms,
                    verified: false,
                    offered_key: None,
                    suspicious: false,
                };
                self.contacts.insert(name.to_owned(), c);
                self.save()?;
                Ok(Trust::Unverified)
            }
            Some(c) if c.identity_key == encoded => {
                if c.offered_key.take().is_some() {
                    self.save()?;
                }
                Ok(self.trust(name))
            }
            Some(c) => {
                if c.offered_key.as_deref() != Some(&encoded) {
                    c.offered_key = Some(encoded);
                    self.save()?;
                }
                Ok(Trust::KeyChanged)
            }
        }
    }

    /// Marks `name` verified, accepting an offered new key if there is one. Fails if `name` is unknown.
    pub fn verify(&mut self, name: &str) -> anyhow::Result<()> {
        let c = self
            .contacts
            .get_mut(name)
            .with_context(|| format!("no contact named {name}; call them or run `qvoice contacts` first"))?;
        if let Some(k) = c.offered_key.take() {
            c.identity_key = k;
        }
        c.verified = true;
        c.suspicious = false;
        self.save()
    }

    /// Marks `name` suspicious after a SAS mismatch (and no longer verified): calls to them are refused
    /// until [`ContactBook::verify`]. Fails on I/O errors or if `name` was never pinned.
    pub fn mark_suspicious(&mut self, name: &str) -> anyhow::Result<()> {
        let c = self.contacts.get_mut(name).with_context(|| format!("no contact named {name}"))?;
        c.suspicious = true;
        c.verified = false;
        self.save()
    }

    /// The folder holding the contacts file (the data dir).
    pub fn data_dir(&self) -> Option<&Path> {
        self.path.parent()
    }

    /// Reads the file again: another qvoice process (`qvoice verify` in a second shell) may have changed it.
    /// Fails on a corrupt file.
    pub fn reload(&mut self) -> anyhow::Result<()> {
        if let Some(dir) = self.path.parent() {
            self.contacts = Self::load(dir)?.contacts;
        }
        Ok(())
    }

    /// The key the registry offered since the pin changed, if any.
    pub fn offered(&self, name: &str) -> Option<IdentityKey> {
        let k = self.contacts.get(name)?.offered_key.as_deref()?;
        IdentityKey::from_bytes(&b64::decode(k).ok()?).ok()
    }

    /// The pinned key of `name`, if any.
    pub fn pinned(&self, name: &str) -> Option<IdentityKey> {
        let c = self.contacts.get(name)?;
        IdentityKey::from_bytes(&b64::decode(&c.identity_key).ok()?).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keystore_round_trip_permissions_and_no_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let name = Username::parse("alice").unwrap();
        let mut ks = Keystore::create(dir.path(), name.clone(), 5, false).unwrap();
        let mode = std::fs::metadata(Keystore::path_in(dir.path())).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        assert!(Keystore::create(dir.path(), name.clone(), 5, false).is_err());
        let id = ks.rotate_prekey(10).unwrap();
        assert_eq!(id, 2);
        let back = Keystore::load(dir.path()).unwrap();
        assert_eq!(back.identity.public(), ks.identity.public());
        assert_eq!(back.current_prekey().id(), 2);
        assert_eq!(back.prekeys.len(), 2);
        assert_eq!(back.current_prekey().public_bytes(), ks.current_prekey().public_bytes());
        // Older prekeys are kept until an hour past their expiry, then deleted.
        let expired_at = 5 + PREKEY_LIFETIME_MS;
        ks.rotate_prekey(expired_at + PREKEY_RETENTION_MS - 1).unwrap();
        assert_eq!(ks.prekeys.iter().map(|(p, _)| p.id()).collect::<Vec<_>>(), vec![3, 2, 1]);
        ks.rotate_prekey(expired_at + PREKEY_RETENTION_MS).unwrap();
        assert_eq!(ks.prekeys.iter().map(|(p, _)| p.id()).collect::<Vec<_>>(), vec![4, 3, 2]);
        assert_eq!(ks.signed_prekey().expires_ms, expired_at + PREKEY_RETENTION_MS + PREKEY_LIFETIME_MS);
    }

    #[test]
    fn contacts_pin_warn_and_verify() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = ContactBook::load(dir.path()).unwrap();
        let mut rng = rand::rng();
        let (k1, k2) = (IdentitySecret::generate(&mut rng).public(), IdentitySecret::generate(&mut rng).public());
        assert_eq!(book.trust("bob"), Trust::New);
        assert_eq!(book.check("bob", &k1, 1).unwrap(), Trust::Unverified);
        assert_eq!(book.check("bob", &k2, 2).unwrap(), Trust::KeyChanged);
        // Still changed after a reload: the warning survives restarts.
        let mut book = ContactBook::load(dir.path()).unwrap();
        assert_eq!(book.trust("bob"), Trust::KeyChanged);
        assert_eq!(book.pinned("bob"), Some(k1));
        book.verify("bob").unwrap();
        assert_eq!(book.trust("bob"), Trust::Verified);
        assert_eq!(book.pinned("bob"), Some(k2));
        assert_eq!(book.check("bob", &k2, 3).unwrap(), Trust::Verified);
        assert!(book.verify("nobody").is_err());
    }

    #[test]
    fn suspicious_survives_restarts_until_verified() {
        let dir = tempfile::tempdir().unwrap();
        let mut book = ContactBook::load(dir.path()).unwrap();
        let k = IdentitySecret::generate(&mut rand::rng()).public();
        book.check("bob", &k, 1).unwrap();
        book.verify("bob").unwrap();
        book.mark_suspicious("bob").unwrap();
        let mut book = ContactBook::load(dir.path()).unwrap();
        assert_eq!(book.trust("bob"), Trust::Suspicious);
        assert_eq!(book.check("bob", &k, 2).unwrap(), Trust::Suspicious, "the same key does not clear it");
        book.verify("bob").unwrap();
        assert_eq!(ContactBook::load(dir.path()).unwrap().trust("bob"), Trust::Verified);
        assert!(book.mark_suspicious("nobody").is_err());
        // Files written before the field existed still load.
        let old = r#"{"carol":{"identity_key":"AA","first_seen_ms":1,"verified":true}}"#;
        std::fs::write(dir.path().join("contacts.json"), old).unwrap();
        assert_eq!(ContactBook::load(dir.path()).unwrap().trust("carol"), Trust::Verified);
    }

    #[test]
    fn history_appends_survives_a_torn_line_and_stays_bounded() {
        use crate::session::events::{CallRecord, Direction, EndReason};
        let dir = tempfile::tempdir().unwrap();
        let h = CallHistory::in_dir(dir.path());
        assert!(h.load().unwrap().is_empty());
        let rec = |i: u64| CallRecord {
            at_ms: i,
            peer: "carol".into(),
            direction: Direction::Outgoing,
            reason: if i.is_multiple_of(2) { EndReason::Offline } else { EndReason::NoAudio("x".into()) },
            duration_ms: 0,
            missed: false,
        };
        h.append(&rec(1)).unwrap();
        h.append(&rec(2)).unwrap();
        let path = dir.path().join("history.jsonl");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        // A crash mid-append leaves half a line: it is skipped, the rest loads, appending goes on.
        let mut f = std::fs::OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"at_ms\":3,\"pee").unwrap();
        drop(f);
        assert_eq!(h.load().unwrap(), vec![rec(1), rec(2)]);
        h.append(&rec(4)).unwrap();
        assert_eq!(h.load().unwrap(), vec![rec(1), rec(2), rec(4)]);
        for i in 5..(2 * CallHistory::KEEP as u64 + 10) {
            h.append(&rec(i)).unwrap();
        }
        let all = h.load().unwrap();
        assert_eq!(all.len(), CallHistory::KEEP);
        assert_eq!(all.last(), Some(&rec(2 * CallHistory::KEEP as u64 + 9)));
        let lines = std::fs::read_to_string(&path).unwrap().lines().count();
        assert!(lines < 2 * CallHistory::KEEP, "compacted: {lines} lines");
    }
}
