//! `qvoice init` (identity, config, registration) and `qvoice rotate-prekey`.
//!
//! `init` is atomic: the new keys live in memory until the registry has accepted the registration, and only
//! then are the key file and the config written. A failed init (registry down, name taken, bad URL) leaves
//! nothing behind, so running it again just works.

use std::sync::Arc;

use anyhow::{Context as _, bail};
use qvoice::config::{Config, ConfigError, Paths, check_registry_url};
use qvoice::session::client::{ClientError, RegistryClient};
use qvoice::session::store::Keystore;
use qvoice_proto::{IdentitySecret, Username};
use qvoice_wire::ErrorCode;

use super::{UsageError, grouped_hex, now_ms};

/// Parses a username typed by the user; fails with a usage error (exit 2) saying what a username may be.
pub fn parse_username(name: &str) -> Result<Username, UsageError> {
    Username::parse(name).map_err(|_| {
        UsageError(format!(
            "{name:?} is not a valid username: use 1-32 characters from a-z 0-9 _ . - starting with a letter or digit"
        ))
    })
}

/// `qvoice init`: exit 0 once registered and saved.
///
/// Fails (writing nothing) on an invalid username or URL (exit 2), an existing identity without `force`, an
/// unreachable registry (exit 3) or a refused registration.
pub async fn init(
    paths: &Paths,
    username: &str,
    registry: &str,
    display_name: Option<String>,
    force: bool,
) -> anyhow::Result<u8> {
    let username = parse_username(username)?;
    let url = check_registry_url(registry).map_err(|e| UsageError(format!("--registry: {e}")))?;
    let key_file = Keystore::path_in(&paths.data_dir);
    if key_file.exists() && !force {
        bail!(
            "{} already holds an identity; `qvoice whoami` shows it. Pass --force to replace it (contacts will \
             see a key change)",
            key_file.display()
        );
    }
    // The new [registry] values replace the old ones before the file is checked, so init can repair a
    // config whose URL was wrong.
    let mut cfg = Config::parse(&paths.config_file)?;
    cfg.registry.url = url.clone();
    cfg.registry.username = Some(username.to_string());
    cfg.registry.display_name = display_name.clone();
    cfg.validate().map_err(|problem| ConfigError { file: paths.config_file.clone(), problem })?;
    let ks = Keystore::generate(&paths.data_dir, username.clone(), now_ms());
    let identity = Arc::new(IdentitySecret::from_bytes(&ks.identity.to_bytes()));
    let client = RegistryClient::new(&url, username.clone(), identity)?;
    let resp = match client.register(&ks.signed_prekey(), display_name.as_deref(), None).await {
        Ok(r) => r,
        Err(e) => return Err(register_failed(e, &username, &url, force)),
    };
    ks.save().context("the registry accepted the registration, but saving the new keys failed")?;
    cfg.save(&paths.config_file)?;
    println!("registered {} at {} ({})", resp.username, cfg.registry.url, if resp.created { "new" } else { "updated" });
    println!("identity  {}", grouped_hex(ks.identity.public().as_bytes()));
    println!("keys in   {}", key_file.display());
    println!("config in {}", paths.config_file.display());
    Ok(0)
}

/// The error of a refused or failed registration, saying that nothing was written and what to do next
/// (the [`ClientError`] stays in the chain, so an unreachable registry still exits 3).
fn register_failed(e: ClientError, username: &Username, url: &str, force: bool) -> anyhow::Error {
    let next = match (&e, e.code()) {
        (ClientError::Unreachable { .. }, _) => {
            "nothing was written; run the same command again when the registry is up (check the URL)".to_owned()
        }
        (_, Some(ErrorCode::UsernameTaken)) if force => format!(
            "the registry at {url} keeps {username} bound to the identity key that registered it first, so a new \
             key cannot take it over; nothing was written (your old identity is unchanged): pick another --username"
        ),
        (_, Some(ErrorCode::UsernameTaken)) => format!(
            "the username {username} is already registered at {url} with another identity key; nothing was \
             written: pick another --username"
        ),
        _ => "nothing was written; fix the problem above and run the same command again".to_owned(),
    };
    anyhow::Error::new(e).context(format!("registering {username} at {url} failed: {next}"))
}

/// `qvoice rotate-prekey`. Fails when the keys cannot be saved or the registry refuses or is unreachable.
pub async fn rotate(paths: &Paths) -> anyhow::Result<u8> {
    let cfg = Config::load(&paths.config_file)?;
    let mut ks = Keystore::load(&paths.data_dir)?;
    let id = ks.rotate_prekey(now_ms())?;
    let identity = Arc::new(IdentitySecret::from_bytes(&ks.identity.to_bytes()));
    let client = RegistryClient::new(&cfg.registry.url, ks.username.clone(), identity)?;
    client.register(&ks.signed_prekey(), cfg.registry.display_name.as_deref(), None).await?;
    println!("prekey {id} is now current and published");
    Ok(0)
}
