//! Fuzzes what the client parses from registry responses and push events: the JSON of `/register`,
//! `/fetch`, `/users`, `/call/*`, `/call/pending`, `/call/status` and every `/events` event type, and for
//! a `/fetch` answer the key-bundle checks (base64, identity key, signed prekey and its signature) and
//! the display-name check the client applies.
//!
//! Properties: nothing panics; what parses re-serializes and parses again to the same JSON value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use qvoice_proto::{IdentityKey, SignedPrekey, b64};
use qvoice_wire::{
    CallStateResponse, Event, FetchResponse, PendingResponse, RegisterResponse, StatusResponse, UsersResponse,
};
use serde::Serialize;
use serde::de::DeserializeOwned;

fn round_trip<T: DeserializeOwned + Serialize>(data: &[u8]) -> Option<T> {
    let v: T = serde_json::from_slice(data).ok()?;
    let once = serde_json::to_value(&v).expect("serialize");
    let again: T = serde_json::from_value(once.clone()).expect("re-parse");
    assert_eq!(serde_json::to_value(&again).expect("serialize"), once);
    Some(v)
}

fuzz_target!(|data: &[u8]| {
    if let Some(f) = round_trip::<FetchResponse>(data) {
        let key = b64::decode(&f.identity_key).ok().and_then(|k| IdentityKey::from_bytes(&k).ok());
        let prekey = b64::decode(&f.prekey).ok().and_then(|p| SignedPrekey::parse(&p).ok());
        if let (Some(key), Some(prekey)) = (key, prekey) {
            let _ = prekey.verify(&key);
        }
        if let Some(d) = &f.display_name
            && qvoice_proto::names::check_display_name(d).is_ok()
        {
            assert!(!d.chars().any(qvoice_proto::names::is_format));
        }
    }
    let _ = round_trip::<RegisterResponse>(data);
    let _ = round_trip::<UsersResponse>(data);
    let _ = round_trip::<CallStateResponse>(data);
    let _ = round_trip::<PendingResponse>(data);
    let _ = round_trip::<StatusResponse>(data);
    if let Some(ev) = round_trip::<Event>(data) {
        let _ = ev.name();
    }
});
