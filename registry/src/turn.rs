//! Media servers for NAT traversal: the STUN and TURN servers the registry advertises, and short-lived
//! TURN credentials in the TURN REST API scheme that coturn implements with `use-auth-secret` /
//! `static-auth-secret`: user name `<expiry unix seconds>:<username>`, password
//! `base64(HMAC-SHA1(shared secret, user name))`. The relay checks them without asking us, and they
//! stop working at the expiry, so a leaked pair is worth little.
//!
//! Config, handler and the optional STUN Binding responder; the JSON shapes live in `qvoice-wire`.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use base64::Engine as _;
use hmac::{Hmac, KeyInit, Mac};
pub use qvoice_wire::{MediaServersResponse, TurnCredential};

use crate::AppState;
use crate::auth::SignedRequest;
use crate::error::ApiError;

/// Default lifetime of handed-out TURN credentials (calls longer than this keep their allocation:
/// coturn checks credentials on allocation and refresh requests, and the client refreshes with the
/// credentials it allocated with, which stay valid for this long).
pub const DEFAULT_TURN_TTL: Duration = Duration::from_secs(12 * 3600);

/// The media servers a registry advertises.
#[derive(Clone, Default)]
pub struct MediaServers {
    /// STUN servers, `host:port` (coturn answers STUN on its listening port).
    pub stun: Vec<String>,
    /// TURN servers (UDP), `host:port`.
    pub turn: Vec<String>,
    /// coturn's `static-auth-secret`. Without it no TURN server is advertised.
    pub turn_secret: Option<String>,
    /// Lifetime of the credentials.
    pub turn_ttl: Duration,
}

impl std::fmt::Debug for MediaServers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaServers")
            .field("stun", &self.stun)
            .field("turn", &self.turn)
            .field("turn_secret", &self.turn_secret.as_ref().map(|_| "<set>"))
            .field("turn_ttl", &self.turn_ttl)
            .finish()
    }
}

/// The TURN REST API password for `username` under `secret`.
pub fn turn_password(secret: &str, username: &str) -> String {
    // HMAC accepts keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = <Hmac<sha1::Sha1> as KeyInit>::new_from_slice(secret.as_bytes()) else {
        return String::new();
    };
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Credentials for `user` valid until `now_ms + ttl`, for every configured TURN server.
pub fn credentials_for(servers: &MediaServers, user: &str, now_ms: u64) -> MediaServersResponse {
    let turn = match &servers.turn_secret {
        Some(secret) if !servers.turn.is_empty() => {
            let expiry_s = now_ms / 1000 + servers.turn_ttl.as_secs().max(60);
            let username = format!("{expiry_s}:{user}");
            let password = turn_password(secret, &username);
            servers
                .turn
                .iter()
                .map(|s| TurnCredential {
                    server: s.clone(),
                    username: username.clone(),
                    password: password.clone(),
                    expires_ms: expiry_s * 1000,
                })
                .collect()
        }
        _ => Vec::new(),
    };
    MediaServersResponse { stun: servers.stun.clone(), turn }
}

/// `GET /turn/credentials` (authenticated): the STUN servers and short-lived TURN credentials.
pub async fn credentials(
    State(state): State<AppState>,
    req: SignedRequest,
) -> Result<Json<MediaServersResponse>, ApiError> {
    let user = req.authenticate(&state)?;
    Ok(Json(credentials_for(&state.config().media_servers, user.username.as_str(), state.now_ms())))
}

/// Answers STUN Binding requests (RFC 8489) on `socket` with the sender's address, until the task is
/// dropped. Anything that is not a well-formed Binding request is ignored; one datagram in gets at
/// most one (small) datagram out, to the address it came from.
pub async fn serve_stun(socket: tokio::net::UdpSocket) {
    use stun_proto::types::attribute::XorMappedAddress;
    use stun_proto::types::message::{BINDING, Message, MessageClass, MessageWriteVec};
    use stun_proto::types::prelude::*;
    let mut buf = [0u8; 1500];
    loop {
        let Ok((n, from)) = socket.recv_from(&mut buf).await else { continue };
        let Ok(msg) = Message::from_bytes(&buf[..n]) else { continue };
        if msg.method() != BINDING || !msg.has_class(MessageClass::Request) {
            continue;
        }
        let from = SocketAddr::new(from.ip().to_canonical(), from.port());
        let mut resp = Message::builder_success(&msg, MessageWriteVec::new());
        if resp.add_attribute(&XorMappedAddress::new(from, msg.transaction_id())).is_err() {
            continue;
        }
        let _ = socket.send_to(&resp.finish(), from).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rest_api_credentials_match_coturn() {
        // Reference: printf '%s' 1700000000:alice | openssl dgst -sha1 -hmac secret -binary | base64
        assert_eq!(turn_password("secret", "1700000000:alice"), "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        let servers = MediaServers {
            stun: vec!["198.51.100.1:3478".into()],
            turn: vec!["198.51.100.1:3478".into()],
            turn_secret: Some("secret".into()),
            turn_ttl: Duration::from_secs(3600),
        };
        let r = credentials_for(&servers, "alice", 1_700_000_000_000);
        assert_eq!(r.turn.len(), 1);
        assert_eq!(r.turn[0].username, "1700003600:alice");
        assert_eq!(r.turn[0].expires_ms, 1_700_003_600_000);
        assert_eq!(r.turn[0].password, turn_password("secret", "1700003600:alice"));
        let none = credentials_for(&MediaServers { turn_secret: None, ..servers.clone() }, "alice", 0);
        assert!(none.turn.is_empty() && none.stun.len() == 1);
        assert!(!format!("{servers:?}").contains("secret\""));
    }
}
