//! HTTP handlers. Each one validates its input into proto newtypes at the edge, authenticates,
//! checks, and only then changes state, so a failed request leaves everything as it was.
//! JSON shapes are documented in docs/REGISTRY.md.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{StatusCode, header};
use axum::response::sse::{KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use qvoice_proto::{Answer, CallId, IdentityKey, Offer, Reveal, SignedPrekey, Username};
use qvoice_wire::{
    AcceptBody, CallStateResponse, ConfirmBody, EndBody, FetchResponse, HealthResponse, InitiateBody, PendingResponse,
    RegisterBody, RegisterResponse, StatusResponse, UserEntry, UsersResponse,
};
use serde::de::DeserializeOwned;

use crate::AppState;
use crate::auth::{ReadAuth, SignedRequest};
use crate::calls::{Action, Call, CallState, Ending};
use crate::error::ApiError;
use crate::events::{Event, OnClose, READY_ONLINE_MAX, sse_stream};
use crate::store::{RegisterOutcome, UserRecord, WireForms};

/// Longest display name, in characters.
pub const DISPLAY_NAME_MAX: usize = 64;
/// Longest hang-up/reject reason, in characters.
pub const REASON_MAX: usize = 128;
/// Most users returned by one `/users` page.
pub const USERS_PAGE_MAX: usize = 200;

type ApiResult<T> = Result<T, ApiError>;

fn parse_json<T: DeserializeOwned>(body: &[u8]) -> ApiResult<T> {
    serde_json::from_slice(body).map_err(|e| ApiError::InvalidJson(e.to_string()))
}

fn decode(field: &'static str, text: &str) -> ApiResult<Vec<u8>> {
    qvoice_proto::b64::decode(text).map_err(|_| ApiError::InvalidBase64(field))
}

/// Maps a handshake parse failure: another protocol version is `unsupported_version`, anything else
/// `invalid_message`.
fn message<T>(parsed: Result<T, qvoice_proto::Error>, what: &'static str) -> ApiResult<T> {
    parsed.map_err(|e| match e {
        qvoice_proto::Error::UnsupportedVersion(v) => ApiError::UnsupportedVersion(v),
        _ => ApiError::InvalidMessage(what),
    })
}

fn parse_call_id(s: &str) -> ApiResult<CallId> {
    CallId::from_hex(s).map_err(|_| ApiError::InvalidField("call_id must be 32 lowercase hex digits".to_owned()))
}

// Display names and reasons are shown to other users: no control, bidi or other invisible characters
// (qvoice_proto::names).
fn check_text(field: &str, s: &str, max: usize) -> ApiResult<()> {
    qvoice_proto::names::check_text(s, max).map_err(|e| {
        ApiError::InvalidField(format!(
            "{field} {e}; use at most {max} visible characters without control or formatting characters"
        ))
    })
}

fn query_params(pq: &str) -> HashMap<String, String> {
    let Some((_, q)) = pq.split_once('?') else { return HashMap::new() };
    q.split('&')
        .filter(|kv| !kv.is_empty())
        .map(|kv| match kv.split_once('=') {
            Some((k, v)) => (k.to_owned(), v.to_owned()),
            None => (kv.to_owned(), String::new()),
        })
        .collect()
}

/// A registered prekey must not have expired already (a wrong clock, or a stale key file).
fn check_prekey_expiry(expires_ms: u64, now: u64) -> ApiResult<()> {
    if expires_ms <= now {
        return Err(ApiError::InvalidField(
            "the prekey has expired; check the system clock, or run `qvoice rotate-prekey`".to_owned(),
        ));
    }
    Ok(())
}

/// `GET /health`.
pub async fn health() -> Json<HealthResponse> {
    Json(HealthResponse { status: "ok".to_owned(), version: env!("CARGO_PKG_VERSION").to_owned() })
}

/// `GET /metrics` on the main address: only with `Authorization: Bearer <metrics_token>` when a token is
/// configured, else `404` (the separate metrics address serves it without a token).
pub async fn metrics(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    if !crate::metrics::token_ok(&state, &headers) {
        return ApiError::NotFound.into_response();
    }
    metrics_open(State(state)).await
}

/// `GET /metrics` (Prometheus text), unconditionally.
pub async fn metrics_open(State(state): State<AppState>) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], crate::metrics::render(&state)).into_response()
}

/// `POST /register`: claim a name (TOFU) or update your prekey, display name or media port.
pub async fn register(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Response> {
    let body: RegisterBody = parse_json(&req.body)?;
    let username = Username::parse(&body.username).map_err(|_| ApiError::InvalidUsername)?;
    if username != req.user {
        return Err(ApiError::InvalidField("body username must equal the x-qvoice-user header".to_owned()));
    }
    let identity_key = IdentityKey::from_bytes(&decode("identity_key", &body.identity_key)?)
        .map_err(|_| ApiError::InvalidKey("identity_key"))?;
    let prekey_bytes = decode("prekey", &body.prekey)?;
    let prekey = SignedPrekey::parse(&prekey_bytes).map_err(|_| ApiError::InvalidKey("prekey"))?;
    if let Some(name) = &body.display_name {
        check_text("display_name", name, DISPLAY_NAME_MAX)?;
    }
    if body.media_port == Some(0) {
        return Err(ApiError::InvalidField("media_port must be 1-65535".to_owned()));
    }
    let existing = state.store().get(username.as_str());
    if let Some(existing) = &existing
        && existing.identity_key != identity_key
    {
        return Err(ApiError::UsernameTaken(username.to_string()));
    }
    // Proof of possession: the request is signed by the key being registered.
    req.verify(&state, &identity_key)?;
    prekey.verify(&identity_key).map_err(|_| ApiError::BadMessageSignature("prekey"))?;
    check_prekey_expiry(prekey.expires_ms, state.now_ms())?;
    state.limiters().register(req.peer.map(|p| p.ip()), username.as_str(), existing.is_none())?;
    state.limiters().signed_user(username.as_str())?;
    let now = state.now_ms();
    let rec = UserRecord {
        wire: WireForms::new(&identity_key, &prekey_bytes),
        username: username.clone(),
        identity_key,
        prekey: prekey_bytes,
        display_name: body.display_name,
        media_port: body.media_port,
        registered_ms: now,
        updated_ms: now,
    };
    let st = state.clone();
    let ts = req.timestamp_ms;
    let outcome = tokio::task::spawn_blocking(move || st.store().register(rec, ts))
        .await
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("register task: {e}")))??;
    if outcome != RegisterOutcome::Taken {
        state.floors().persisted_elsewhere(username.as_str(), ts);
    }
    let created = match outcome {
        RegisterOutcome::Taken => return Err(ApiError::UsernameTaken(username.to_string())),
        RegisterOutcome::Created => true,
        RegisterOutcome::Updated => false,
    };
    tracing::info!(user = %username, created, "registered");
    if created {
        let name = username.to_string();
        state.hub().broadcast(&Event::UserRegistered { username: name.clone() }, &name);
    }
    let status = if created { StatusCode::CREATED } else { StatusCode::OK };
    let resp =
        RegisterResponse { username: username.to_string(), created, observed_addr: req.peer.map(|p| p.to_string()) };
    Ok((status, Json(resp)).into_response())
}

/// `GET /fetch/{username}`: public key bundle and presence. Unsigned like the seed (limited per address),
/// or signed (limited per user).
pub async fn fetch(
    State(state): State<AppState>,
    Path(name): Path<String>,
    _reader: ReadAuth,
) -> ApiResult<Json<FetchResponse>> {
    let username = Username::parse(&name).map_err(|_| ApiError::InvalidUsername)?;
    let rec = state.store().get(username.as_str()).ok_or_else(|| ApiError::UnknownUser(name.clone()))?;
    let online = state.hub().is_online(username.as_str());
    Ok(Json(FetchResponse {
        username: name,
        identity_key: rec.wire.identity_key.clone(),
        prekey: rec.wire.prekey.clone(),
        prekey_id: rec.wire.prekey_id,
        display_name: rec.display_name.clone(),
        media_port: rec.media_port,
        online,
        last_seen_ms: if online { Some(state.now_ms()) } else { state.store().last_seen(username.as_str()) },
        registered_ms: rec.registered_ms,
    }))
}

/// `GET /users?after=NAME&limit=N`: the contact directory, paginated (authenticated).
pub async fn users(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Json<UsersResponse>> {
    let me = req.authenticate(&state)?;
    state.limiters().read_user(me.username.as_str())?;
    let q = query_params(&req.path_and_query);
    let limit = match q.get("limit") {
        Some(l) => l
            .parse::<usize>()
            .ok()
            .filter(|&l| (1..=USERS_PAGE_MAX).contains(&l))
            .ok_or_else(|| ApiError::InvalidField(format!("limit must be 1-{USERS_PAGE_MAX}")))?,
        None => 50,
    };
    let after = match q.get("after") {
        Some(a) => Some(Username::parse(a).map_err(|_| ApiError::InvalidUsername)?),
        None => None,
    };
    let page = state.store().list(after.as_ref().map(Username::as_str), limit + 1);
    let more = page.len() > limit;
    let users: Vec<UserEntry> = page
        .iter()
        .take(limit)
        .map(|u| {
            let online = state.hub().is_online(u.username.as_str());
            UserEntry {
                username: u.username.to_string(),
                display_name: u.display_name.clone(),
                online,
                last_seen_ms: state.store().last_seen(u.username.as_str()),
            }
        })
        .collect();
    let next = if more { users.last().map(|u| u.username.clone()) } else { None };
    Ok(Json(UsersResponse { users, next }))
}

/// `POST /call/initiate`: relay a verified OFFER to the callee.
pub async fn initiate(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Response> {
    // Durable: a captured initiate must not ring the callee again after a restart.
    let me = req.authenticate_durable(&state).await?;
    let body: InitiateBody = parse_json(&req.body)?;
    let bytes = decode("offer", &body.offer)?;
    let offer = message(Offer::parse(&bytes), "offer")?;
    if offer.caller != me.username {
        return Err(ApiError::Forbidden("offer.caller must be the signing user"));
    }
    if offer.callee == me.username {
        return Err(ApiError::SelfCall);
    }
    if offer.caller_key != me.identity_key {
        return Err(ApiError::BadMessageSignature("offer"));
    }
    offer.verify().map_err(|_| ApiError::BadMessageSignature("offer"))?;
    state.limiters().initiate(me.username.as_str(), offer.callee.as_str())?;
    let now = state.now_ms();
    if now.abs_diff(offer.timestamp_ms) > state.config().max_skew_ms {
        return Err(ApiError::InvalidField(
            "offer timestamp is more than 2 minutes from server time; check the system clock".to_owned(),
        ));
    }
    let callee =
        state.store().get(offer.callee.as_str()).ok_or_else(|| ApiError::UnknownUser(offer.callee.to_string()))?;
    let id = offer.call_id;
    let callee_online = state.hub().is_online(callee.username.as_str());
    let (notices, expires) = state.with_calls(|b| {
        let n = b.initiate(now, id, me.username.as_str(), callee.username.as_str(), bytes);
        (n, now.saturating_add(b.ringing_timeout_ms()))
    })?;
    let notices = notices?;
    state.deliver(notices);
    state.call_created();
    tracing::info!(call = %id, caller = %me.username, callee = %callee.username, "call initiated");
    let resp = CallStateResponse {
        call_id: id.to_hex(),
        state: CallState::Ringing,
        expires_ms: Some(expires),
        callee_online: Some(callee_online),
    };
    Ok((StatusCode::CREATED, Json(resp)).into_response())
}

/// `GET /call/pending/{username}?wait=SECONDS`: calls ringing for you; with `wait`, holds the
/// request until one arrives or the wait ends (long-poll).
pub async fn pending(
    State(state): State<AppState>,
    Path(name): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<PendingResponse>> {
    let username = Username::parse(&name).map_err(|_| ApiError::InvalidUsername)?;
    let me = req.authenticate(&state)?;
    if username != me.username {
        return Err(ApiError::Forbidden("you can only read your own pending calls"));
    }
    let q = query_params(&req.path_and_query);
    let max = state.config().long_poll_max.as_secs();
    let wait = match q.get("wait") {
        Some(w) => w
            .parse::<u64>()
            .ok()
            .filter(|&w| w <= max)
            .ok_or_else(|| ApiError::InvalidField(format!("wait must be 0-{max} seconds")))?,
        None => 0,
    };
    // Subscribe before looking, so a call arriving in between still wakes us.
    let mut ringing = state.hub().ringing();
    let mut shutdown = state.hub().shutdown();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(wait);
    loop {
        let calls = state.with_calls(|b| b.pending_for(me.username.as_str()))?;
        if !calls.is_empty() || tokio::time::Instant::now() >= deadline {
            return Ok(Json(PendingResponse { calls }));
        }
        loop {
            let woken = tokio::select! {
                r = tokio::time::timeout_at(deadline, ringing.recv()) => r,
                // Graceful shutdown must not wait out a 30 s long-poll.
                _ = shutdown.wait_for(|&s| s) => return Err(ApiError::ShuttingDown),
            };
            match woken {
                Err(_) => break,
                Ok(Ok(who)) if who != me.username.as_str() => {}
                Ok(Err(tokio::sync::broadcast::error::RecvError::Closed)) => {
                    return Err(ApiError::ShuttingDown);
                }
                Ok(_) => break,
            }
        }
    }
}

/// `POST /call/accept`: the callee's verified ANSWER goes to the caller.
pub async fn accept(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Json<CallStateResponse>> {
    let me = req.authenticate(&state)?;
    let body: AcceptBody = parse_json(&req.body)?;
    let id = parse_call_id(&body.call_id)?;
    let bytes = decode("answer", &body.answer)?;
    let answer = message(Answer::parse(&bytes), "answer")?;
    if answer.call_id != id {
        return Err(ApiError::InvalidMessage("answer"));
    }
    let now = state.now_ms();
    let user = me.username.as_str();
    let notices = state.with_calls(|b| {
        let call = b.check(&id, user, &Action::Accept(Vec::new()))?;
        let offer = stored_offer(call)?;
        if answer.callee_key != me.identity_key {
            return Err(ApiError::BadMessageSignature("answer"));
        }
        answer.verify(&offer).map_err(|_| ApiError::BadMessageSignature("answer"))?;
        b.act(now, &id, user, Action::Accept(bytes), None)
    })??;
    state.deliver(notices);
    tracing::info!(call = %id, "call accepted");
    Ok(Json(CallStateResponse {
        call_id: id.to_hex(),
        state: CallState::Accepted,
        expires_ms: None,
        callee_online: None,
    }))
}

fn stored_offer(call: &Call) -> ApiResult<Offer> {
    Offer::parse(&call.offer).map_err(|e| ApiError::Internal(anyhow::anyhow!("stored offer unparsable: {e}")))
}

/// `POST /call/confirm`: the caller's verified REVEAL goes to the callee; the call is active.
pub async fn confirm(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Json<CallStateResponse>> {
    let me = req.authenticate(&state)?;
    let body: ConfirmBody = parse_json(&req.body)?;
    let id = parse_call_id(&body.call_id)?;
    let bytes = decode("reveal", &body.reveal)?;
    let reveal = message(Reveal::parse(&bytes), "reveal")?;
    if reveal.call_id != id {
        return Err(ApiError::InvalidMessage("reveal"));
    }
    let now = state.now_ms();
    let user = me.username.as_str();
    let notices = state.with_calls(|b| {
        let call = b.check(&id, user, &Action::Confirm(Vec::new()))?;
        let offer = stored_offer(call)?;
        let answer_bytes = call.answer.as_deref().ok_or(ApiError::WrongState("ringing"))?;
        let answer = Answer::parse(answer_bytes)
            .map_err(|e| ApiError::Internal(anyhow::anyhow!("stored answer unparsable: {e}")))?;
        reveal.verify(&offer, &answer).map_err(|_| ApiError::BadMessageSignature("reveal"))?;
        b.act(now, &id, user, Action::Confirm(bytes), None)
    })??;
    state.deliver(notices);
    tracing::info!(call = %id, "call active");
    Ok(Json(CallStateResponse {
        call_id: id.to_hex(),
        state: CallState::Active,
        expires_ms: None,
        callee_online: None,
    }))
}

async fn end_call(
    state: AppState,
    req: SignedRequest,
    make: fn() -> Action,
    result: CallState,
) -> ApiResult<Json<CallStateResponse>> {
    let me = req.authenticate(&state)?;
    let body: EndBody = parse_json(&req.body)?;
    let id = parse_call_id(&body.call_id)?;
    if let Some(r) = &body.reason {
        check_text("reason", r, REASON_MAX)?;
    }
    let now = state.now_ms();
    let ending = Ending { kind: body.kind, reason: body.reason };
    let notices = state.with_calls(|b| b.act(now, &id, me.username.as_str(), make(), Some(ending)))??;
    state.deliver(notices);
    tracing::info!(call = %id, state = result.as_str(), "call ended");
    Ok(Json(CallStateResponse { call_id: id.to_hex(), state: result, expires_ms: None, callee_online: None }))
}

/// `POST /call/reject` (callee, while ringing).
pub async fn reject(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Json<CallStateResponse>> {
    end_call(state, req, || Action::Reject, CallState::Rejected).await
}

/// `POST /call/cancel` (caller, before active).
pub async fn cancel(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Json<CallStateResponse>> {
    end_call(state, req, || Action::Cancel, CallState::Cancelled).await
}

/// `POST /call/hangup` (either party, while live).
pub async fn hangup(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Json<CallStateResponse>> {
    end_call(state, req, || Action::Hangup, CallState::Ended).await
}

/// `GET /call/status/{call_id}` (parties only).
pub async fn status(
    State(state): State<AppState>,
    Path(call_id): Path<String>,
    req: SignedRequest,
) -> ApiResult<Json<StatusResponse>> {
    let me = req.authenticate(&state)?;
    let id = parse_call_id(&call_id)?;
    let user = me.username.as_str();
    let resp = state.with_calls(|b| {
        let c = b.get(&id).ok_or(ApiError::UnknownCall)?;
        if c.caller != user && c.callee != user {
            return Err(ApiError::Forbidden("only the two parties may read a call's status"));
        }
        let enc = |v: &Option<Vec<u8>>| v.as_deref().map(qvoice_proto::b64::encode);
        Ok(StatusResponse {
            call_id: c.id.to_hex(),
            state: c.state,
            caller: c.caller.clone(),
            callee: c.callee.clone(),
            offer: qvoice_proto::b64::encode(&c.offer),
            answer: enc(&c.answer),
            reveal: enc(&c.reveal),
            created_ms: c.created_ms,
            updated_ms: c.updated_ms,
            reason: c.reason.clone(),
            end_kind: c.end_kind,
        })
    })??;
    Ok(Json(resp))
}

struct StreamClosed {
    state: AppState,
    user: String,
    id: u64,
}

impl OnClose for StreamClosed {
    fn closed(&mut self) {
        if !self.state.hub().unsubscribe(&self.user, self.id) {
            return;
        }
        tracing::debug!(user = self.user, "offline");
        let now = self.state.now_ms();
        self.state.store().remember_last_seen(&self.user, now);
        let ev = Event::Presence { username: self.user.clone(), online: false };
        self.state.hub().broadcast(&ev, &self.user);
        let (state, user) = (self.state.clone(), self.user.clone());
        if let Ok(rt) = tokio::runtime::Handle::try_current() {
            rt.spawn_blocking(move || {
                if let Err(e) = state.store().persist_last_seen(&user, now) {
                    tracing::warn!(error = format!("{e:#}"), "could not persist last_seen");
                }
            });
        }
    }
}

/// `GET /events`: Server-Sent Events stream of your call events and everyone's presence.
/// Holding it open is what makes you online.
pub async fn events(State(state): State<AppState>, req: SignedRequest) -> ApiResult<Response> {
    // Durable: a replayed stream request after a restart would receive this user's events.
    let me: Arc<UserRecord> = req.authenticate_durable(&state).await?;
    let user = me.username.to_string();
    let (id, rx, came_online) = state.hub().subscribe(&user);
    if came_online {
        tracing::debug!(user, "online");
        state.hub().broadcast(&Event::Presence { username: user.clone(), online: true }, &user);
    }
    let first = Event::Ready { username: user.clone(), online: state.hub().online(READY_ONLINE_MAX) };
    let guard = StreamClosed { state: state.clone(), user, id };
    let stream = sse_stream(first, rx, state.hub().shutdown(), guard);
    let sse = Sse::new(stream).keep_alive(KeepAlive::new().interval(state.config().sse_keepalive));
    Ok(([(header::CACHE_CONTROL, "no-store")], sse).into_response())
}
