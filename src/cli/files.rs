//! `qvoice send`, `qvoice files`, `qvoice receive`: encrypted file transfer from the command line. A
//! progress bar on a terminal, one JSON object per line with `--json`, plain lines otherwise.
//!
//! Exit codes as for calls: 0 done; 1 other error; 3 registry unreachable; 4 it did not happen (no such user,
//! nothing to receive, limits); 6 a security check failed (identity key changed, the file failed
//! verification).

use std::io::IsTerminal as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use qvoice::config::{Config, Paths};
use qvoice::session::client::{ClientError, RegistryClient};
use qvoice::session::files::{Files, Progress, TransferError, default_download_dir};
use qvoice::session::store::{ContactBook, Keystore};
use qvoice_proto::Username;
use qvoice_proto::file::FileId;
use qvoice_wire::ErrorCode;
use serde_json::json;

/// `qvoice send USER FILE`.
#[derive(Args, Debug)]
pub struct SendArgs {
    /// Who gets the file.
    #[arg(value_name = "USER")]
    pub user: String,
    /// The file to send (any size up to the registry's limit; an interrupted send resumes when run again).
    #[arg(value_name = "FILE")]
    pub file: PathBuf,
    /// Print one JSON object per line (progress events, then `sent`).
    #[arg(long)]
    pub json: bool,
}

/// `qvoice files`.
#[derive(Args, Debug)]
pub struct FilesArgs {
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `qvoice receive ID | --all`.
#[derive(Args, Debug)]
pub struct ReceiveArgs {
    /// The file id `qvoice files` shows.
    #[arg(value_name = "ID", required_unless_present = "all")]
    pub id: Option<String>,
    /// Receive every waiting file.
    #[arg(long, conflicts_with = "id")]
    pub all: bool,
    /// Save into this folder [default: [files] download_dir, else the XDG download folder; DIR/downloads
    /// with --home DIR].
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Delete the file at the registry without saving it.
    #[arg(long)]
    pub discard: bool,
    /// Print one JSON object per line.
    #[arg(long)]
    pub json: bool,
}

struct Ctx {
    cfg: Config,
    files: Files,
    keys: Keystore,
    contacts: ContactBook,
}

fn ctx(paths: &Paths) -> anyhow::Result<Ctx> {
    let cfg = Config::load(&paths.config_file)?;
    let keys = Keystore::load(&paths.data_dir)?;
    let identity = Arc::new(qvoice_proto::IdentitySecret::from_bytes(&keys.identity.to_bytes()));
    let client = RegistryClient::new(&cfg.registry.url, keys.username.clone(), identity.clone())?;
    let contacts = ContactBook::load(&paths.data_dir)?;
    Ok(Ctx { files: Files::new(client, identity, &paths.data_dir), keys, contacts, cfg })
}

/// The exit code for a failed transfer, after printing what to do.
fn fail(e: &TransferError, json: bool) -> u8 {
    let code = match e {
        TransferError::Registry(ClientError::Unreachable { .. }) => 3,
        TransferError::Registry(c) => match c.code() {
            Some(
                ErrorCode::UnknownUser
                | ErrorCode::UnknownFile
                | ErrorCode::FileTooLarge
                | ErrorCode::QuotaExceeded
                | ErrorCode::InboxFull,
            ) => 4,
            _ => 1,
        },
        TransferError::KeyChanged(_) | TransferError::Refused { .. } => 6,
        TransferError::NotAvailable(_) => 4,
        TransferError::CannotOpen(_) | TransferError::Io { .. } => 1,
    };
    if json {
        println!("{}", json!({"event": "error", "message": e.to_string(), "exit_code": code}));
    }
    eprintln!("qvoice: {e}");
    code
}

/// A progress bar on a terminal (stderr), nothing otherwise; JSON lines with `--json`.
struct Reporter {
    bar: Option<ProgressBar>,
    json: bool,
}

impl Reporter {
    fn new(json: bool, verb: &str) -> Self {
        let bar = (!json && std::io::stderr().is_terminal()).then(|| {
            let b = ProgressBar::new(0);
            let style = ProgressStyle::with_template(&format!(
                "{verb} {{msg}} [{{bar:30}}] {{bytes}}/{{total_bytes}} {{binary_bytes_per_sec}} eta {{eta}}"
            ))
            .map(|s| s.progress_chars("=> "));
            if let Ok(s) = style {
                b.set_style(s);
            }
            b
        });
        Self { bar, json }
    }

    fn update(&self, p: &Progress) {
        if self.json {
            println!(
                "{}",
                json!({"event": "progress", "file_id": p.file_id, "done": p.done, "total": p.total, "resumed": p.resumed})
            );
        }
        if let Some(b) = &self.bar {
            b.set_length(p.total);
            b.set_position(p.done);
            b.set_message(p.file_id[..8].to_owned());
        }
    }

    fn done(&self) {
        if let Some(b) = &self.bar {
            b.finish_and_clear();
        }
    }
}

/// `qvoice send USER FILE`.
pub async fn send(paths: &Paths, args: SendArgs) -> anyhow::Result<u8> {
    let to = Username::parse(&args.user).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut c = ctx(paths)?;
    if to == c.keys.username {
        anyhow::bail!("you cannot send a file to yourself");
    }
    let rep = Reporter::new(args.json, "sending");
    let result = c.files.send(&mut c.contacts, &to, &args.file, |p| rep.update(p)).await;
    rep.done();
    match result {
        Ok(r) => {
            if args.json {
                println!("{}", json!({"event": "sent", "report": r}));
            } else {
                let resumed = if r.skipped_chunks > 0 {
                    format!(" (resumed: {} chunks were already there)", r.skipped_chunks)
                } else {
                    String::new()
                };
                println!(
                    "sent {} ({} bytes) to {}{resumed}; it waits at the registry until {} receives it (file id {})",
                    r.name, r.size, r.recipient, r.recipient, r.file_id
                );
            }
            Ok(0)
        }
        Err(e) => Ok(fail(&e, args.json)),
    }
}

fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{bytes} B") } else { format!("{v:.1} {}", UNITS[u]) }
}

/// `qvoice files`: what waits for you, and what you sent that has not been received yet.
pub async fn files(paths: &Paths, args: FilesArgs) -> anyhow::Result<u8> {
    let c = ctx(paths)?;
    let (incoming, outgoing) = match c.files.list(&c.contacts, &c.keys.prekey_secrets()).await {
        Ok(x) => x,
        Err(e) => return Ok(fail(&e, args.json)),
    };
    if args.json {
        println!("{}", json!({"incoming": incoming, "outgoing": outgoing}));
        return Ok(0);
    }
    if incoming.is_empty() {
        println!("no files waiting for you");
    } else {
        println!("{:<32}  {:<16} {:>10}  {:<12} name", "id", "from", "size", "trust");
        for f in &incoming {
            let trust = format!("{:?}", f.trust).to_lowercase();
            println!(
                "{:<32}  {:<16} {:>10}  {:<12} {}",
                f.file_id,
                f.sender,
                human(f.size),
                trust,
                f.name.as_deref().unwrap_or("?")
            );
            if let Some(p) = &f.problem {
                println!("    cannot receive as is: {p}");
            }
        }
        println!("receive with `qvoice receive ID` or `qvoice receive --all` (--out DIR to choose the folder)");
    }
    for f in &outgoing {
        let state = if f.stored_chunks == f.chunk_count { "waiting for them" } else { "upload incomplete" };
        println!(
            "sent to {:<16} {:>10}  {state} ({}/{} chunks)  {}",
            f.recipient,
            human(f.size),
            f.stored_chunks,
            f.chunk_count,
            f.file_id
        );
    }
    Ok(0)
}

/// `qvoice receive ID [--out DIR]` / `--all` / `--discard`.
pub async fn receive(paths: &Paths, home: Option<&Path>, args: ReceiveArgs) -> anyhow::Result<u8> {
    let mut c = ctx(paths)?;
    let prekeys = c.keys.prekey_secrets();
    let ids: Vec<FileId> = if args.all {
        match c.files.list(&c.contacts, &prekeys).await {
            Ok((incoming, _)) => incoming.iter().filter_map(|f| FileId::from_hex(&f.file_id).ok()).collect(),
            Err(e) => return Ok(fail(&e, args.json)),
        }
    } else {
        let id = args.id.as_deref().unwrap_or_default();
        vec![
            FileId::from_hex(id)
                .map_err(|_| anyhow::anyhow!("`{id}` is not a file id (32 hex digits, see `qvoice files`)"))?,
        ]
    };
    if ids.is_empty() {
        if !args.json {
            println!("no files waiting for you");
        }
        return Ok(0);
    }
    let out =
        args.out.clone().or_else(|| c.cfg.files.download_dir.clone()).unwrap_or_else(|| default_download_dir(home));
    let mut worst = 0u8;
    for id in ids {
        if args.discard {
            match c.files.discard(&id).await {
                Ok(()) if args.json => println!("{}", json!({"event": "discarded", "file_id": id.to_hex()})),
                Ok(()) => println!("discarded {id}"),
                Err(e) => worst = worst.max(fail(&e, args.json)),
            }
            continue;
        }
        let rep = Reporter::new(args.json, "receiving");
        let result = c.files.receive(&mut c.contacts, &prekeys, &id, &out, |p| rep.update(p)).await;
        rep.done();
        match result {
            Ok(r) if args.json => println!("{}", json!({"event": "received", "report": r})),
            Ok(r) => {
                println!("saved {} ({} bytes from {}, verified)", r.path.display(), r.size, r.sender);
                if !r.acknowledged {
                    println!("  the registry did not get the acknowledgement; it may list the file again");
                }
            }
            Err(e) => worst = worst.max(fail(&e, args.json)),
        }
    }
    Ok(worst)
}
