//! `qvoice whoami`, `qvoice contacts`, `qvoice verify`: identity and trust, read from disk.

use qvoice::config::{Config, Paths};
use qvoice::session::store::{ContactBook, Keystore};
use qvoice_proto::{Username, safety_number};

use super::grouped_hex;

/// `qvoice whoami`. Fails without an identity or on an invalid config.
pub fn whoami(paths: &Paths) -> anyhow::Result<u8> {
    let cfg = Config::load(&paths.config_file)?;
    let ks = Keystore::load(&paths.data_dir)?;
    println!("username  {}", ks.username);
    println!("registry  {}", cfg.registry.url);
    println!("identity  {}", grouped_hex(ks.identity.public().as_bytes()));
    println!("prekey    id {}", ks.current_prekey().id());
    let book = ContactBook::load(&paths.data_dir)?;
    // A contact book can hold our own name (a call to ourselves pinned it); a safety number with
    // ourselves means nothing, so it is not shown.
    for name in book.contacts.keys().filter(|n| n.as_str() != ks.username.as_str()) {
        if let (Some(key), Ok(peer)) = (book.pinned(name), Username::parse(name)) {
            println!("safety number with {name}: {}", safety_number(&ks.username, &ks.identity.public(), &peer, &key));
        }
    }
    Ok(0)
}

/// `qvoice contacts`. Fails without an identity or on a corrupt contact book.
pub fn contacts(paths: &Paths) -> anyhow::Result<u8> {
    let ks = Keystore::load(&paths.data_dir)?;
    let book = ContactBook::load(&paths.data_dir)?;
    if book.contacts.is_empty() {
        println!("no contacts yet: they are pinned when you first call or are called");
    }
    for name in book.contacts.keys().filter(|n| n.as_str() != ks.username.as_str()) {
        let trust = book.trust(name);
        let Ok(peer) = Username::parse(name) else { continue };
        let Some(key) = book.pinned(name) else { continue };
        println!("{name:<20} {trust:?}");
        println!("  safety number {}", safety_number(&ks.username, &ks.identity.public(), &peer, &key));
        if trust == qvoice::session::Trust::KeyChanged {
            println!("  WARNING: the registry now serves a different identity key for {name}.");
            println!(
                "  Compare the safety number with {name} in person or by another channel, then `qvoice verify {name}`."
            );
        }
    }
    Ok(0)
}

/// `qvoice verify USER`. Fails when USER is not a pinned contact or the contact book cannot be saved.
pub fn verify(paths: &Paths, name: &str) -> anyhow::Result<u8> {
    let ks = Keystore::load(&paths.data_dir)?;
    let mut book = ContactBook::load(&paths.data_dir)?;
    book.verify(name)?;
    if let (Some(key), Ok(peer)) = (book.pinned(name), Username::parse(name)) {
        let sn = safety_number(&ks.username, &ks.identity.public(), &peer, &key);
        println!("{name} is now verified with the key whose safety number is {sn}");
    }
    Ok(0)
}
