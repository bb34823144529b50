//! The admin listener: the HTTP API of the contract (docs/console.md in the crate docs), the
//! Server-Sent Events stream, `/metrics`, the OpenAPI document and the pages, with access
//! control (tokens, sessions, roles, CSRF, Origin and Host checks) and the security headers on
//! every response.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::{self, Next};
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{delete, get, post};
use axum::{Json, Router};
use radguard_events::{Event, EventBus};
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::{AdminConfig, Role};
use crate::metrics::Gauges;
use crate::model::{now_ms, Console, Update};
use crate::WebError;

/// The Content-Security-Policy of every response: the pages load only their own scripts and
/// styles (no inline code: an injected `<script>` in a peer's AE title or a rule's detail does
/// not run), are never framed (clickjacking) and post nowhere else.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
                       connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// The session cookie's name.
pub const SESSION_COOKIE: &str = "radguard_session";
/// Sessions live this long after login.
const SESSION_TTL_MS: u64 = 12 * 3600 * 1000;
/// Sessions kept at once (the oldest is dropped beyond it: a login flood costs bounded memory).
const MAX_SESSIONS: usize = 1024;
/// Connections served at once.
const MAX_CONNECTIONS: usize = 64;
/// Audit records returned by one `/audit` read at most.
pub const MAX_AUDIT_LIMIT: usize = 1000;

/// A configured peer as the policy describes it (for `/peers`).
#[derive(Debug, Clone, Default, Serialize)]
pub struct PolicyPeer {
    pub name: String,
    pub addresses: Vec<String>,
    pub ae_titles: Vec<String>,
    pub certificate: Option<String>,
    /// Operations and SOP classes allowed, in words.
    pub allows: Vec<String>,
}

/// `/audit` filters.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct AuditQuery {
    /// Unix ms, or RFC 3339.
    pub since: Option<String>,
    pub kind: Option<String>,
    pub limit: Option<usize>,
}

/// A boxed future (the reload runs in the binary's reload task).
pub type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// What only the composition root knows: the policy, the stores, the block list, the reload.
/// The blocking methods run on the blocking thread pool.
pub trait Backend: Send + Sync + 'static {
    fn peers(&self) -> Vec<PolicyPeer>;
    /// The block list entries (as `radguard block list --json`).
    fn blocks(&self) -> Result<Vec<Value>, String>;
    /// Removes block `id` (by `by`); `Ok(false)` when no such entry.
    fn unblock(&self, id: u64, by: &str) -> Result<bool, String>;
    /// Records of the audit trail, newest last.
    fn audit(&self, q: &AuditQuery) -> Result<Vec<Value>, String>;
    fn integrity(&self) -> Value;
    fn vault(&self) -> Value;
    /// `{"path", "text", "loaded"}`.
    fn config(&self) -> Value;
    fn gauges(&self) -> Gauges;
    /// Reloads the config as SIGHUP does: `(ok, detail)`.
    fn reload(&self) -> BoxFuture<(bool, String)>;
}

#[derive(Debug, Clone)]
struct Session {
    user: String,
    role: Role,
    csrf: String,
    expires: u64,
}

/// Who a request is.
#[derive(Debug, Clone)]
struct Caller {
    user: String,
    role: Role,
    /// The CSRF token the caller must echo (none for bearer tokens: a browser never sends
    /// those on its own).
    csrf: Option<String>,
    client: String,
}

struct Auth {
    tokens: Vec<(String, Role, [u8; 32])>,
    sessions: Mutex<HashMap<String, Session>>,
    /// Without tokens: the built-in `local` operator's CSRF token.
    local_csrf: String,
    tls: bool,
    listen: SocketAddr,
}

/// The client address, put on each request by the accept loop.
#[derive(Debug, Clone, Copy)]
struct ClientAddr(SocketAddr);

#[derive(Clone)]
struct AppState {
    console: Arc<Console>,
    backend: Arc<dyn Backend>,
    bus: EventBus,
    auth: Arc<Auth>,
}

fn random_hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    // The OS generator failing is fatal for sessions: an all-zero id would be guessable.
    if getrandom::fill(&mut b).is_err() {
        // Never reached on a working OS; the session table refuses an empty id.
        return String::new();
    }
    hex::encode(b)
}

fn err(status: StatusCode, msg: impl Into<String>) -> Response {
    (status, Json(json!({"error": msg.into()}))).into_response()
}

impl Auth {
    /// The token's entry, comparing SHA-256 digests in constant time against every entry (no
    /// early exit: the time does not say which entry, or how much of one, matched).
    fn check_token(&self, token: &str) -> Option<(String, Role)> {
        let d: [u8; 32] = Sha256::digest(token.trim().as_bytes()).into();
        let mut found = None;
        for (name, role, digest) in &self.tokens {
            if bool::from(digest.ct_eq(&d)) && found.is_none() {
                found = Some((name.clone(), *role));
            }
        }
        found
    }

    fn cookie(headers: &HeaderMap) -> Option<String> {
        for v in headers.get_all(header::COOKIE) {
            let Ok(s) = v.to_str() else { continue };
            for part in s.split(';') {
                if let Some((k, val)) = part.trim().split_once('=') {
                    if k == SESSION_COOKIE {
                        return Some(val.to_string());
                    }
                }
            }
        }
        None
    }

    fn caller(&self, headers: &HeaderMap, client: &str) -> Option<Caller> {
        if self.tokens.is_empty() {
            return Some(Caller {
                user: "local".into(),
                role: Role::Operator,
                csrf: Some(self.local_csrf.clone()),
                client: client.into(),
            });
        }
        if let Some(v) = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
        {
            let t = v.strip_prefix("Bearer ")?;
            let (user, role) = self.check_token(t)?;
            return Some(Caller {
                user,
                role,
                csrf: None,
                client: client.into(),
            });
        }
        let id = Self::cookie(headers)?;
        if id.is_empty() {
            return None;
        }
        let now = now_ms();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        let sess = s.get(&id)?.clone();
        if sess.expires <= now {
            s.remove(&id);
            return None;
        }
        Some(Caller {
            user: sess.user,
            role: sess.role,
            csrf: Some(sess.csrf),
            client: client.into(),
        })
    }

    fn login(&self, user: String, role: Role) -> Option<String> {
        let id = random_hex(32);
        if id.is_empty() {
            return None;
        }
        let now = now_ms();
        let mut s = self.sessions.lock().unwrap_or_else(|p| p.into_inner());
        s.retain(|_, v| v.expires > now);
        while s.len() >= MAX_SESSIONS {
            let Some(oldest) = s
                .iter()
                .min_by_key(|(_, v)| v.expires)
                .map(|(k, _)| k.clone())
            else {
                break;
            };
            s.remove(&oldest);
        }
        s.insert(
            id.clone(),
            Session {
                user,
                role,
                csrf: random_hex(32),
                expires: now + SESSION_TTL_MS,
            },
        );
        Some(id)
    }

    fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = Self::cookie(headers) {
            self.sessions
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .remove(&id);
        }
    }

    /// The host names this listener answers to without tokens: its address, and `localhost`
    /// on loopback. Any other `Host` is a DNS-rebinding page reaching the loopback console.
    fn host_ok(&self, headers: &HeaderMap) -> bool {
        if !self.tokens.is_empty() {
            return true;
        }
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let port = self.listen.port();
        let ip = self.listen.ip();
        let mut ok = vec![format!("{ip}:{port}"), format!("localhost:{port}")];
        if let std::net::IpAddr::V6(v6) = ip {
            ok.push(format!("[{v6}]:{port}"));
        }
        ok.iter().any(|h| h.eq_ignore_ascii_case(host))
    }

    /// A state change's `Origin`, when present, must be this listener's own (a page of
    /// another site posting to the console: CSRF).
    fn origin_ok(&self, headers: &HeaderMap) -> bool {
        let Some(origin) = headers.get(header::ORIGIN) else {
            return true;
        };
        let Ok(origin) = origin.to_str() else {
            return false;
        };
        let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
            return false;
        };
        let scheme = if self.tls { "https" } else { "http" };
        self.host_ok(headers) && origin.eq_ignore_ascii_case(&format!("{scheme}://{host}"))
    }
}

/// Security headers on every response, the Host check (DNS rebinding) on every request.
async fn guard(State(st): State<AppState>, req: Request, next: Next) -> Response {
    let mut resp = if st.auth.host_ok(req.headers()) {
        next.run(req).await
    } else {
        err(StatusCode::FORBIDDEN, "unexpected Host header")
    };
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    resp
}

fn client_of(req: &Request) -> String {
    req.extensions()
        .get::<ClientAddr>()
        .map_or_else(|| "-".into(), |c| c.0.to_string())
}

/// Authentication for the API and `/metrics`; for POST/DELETE also Origin, CSRF and role.
async fn require(State(st): State<AppState>, mut req: Request, next: Next) -> Response {
    let client = client_of(&req);
    let path = req.uri().path().to_string();
    let changes = matches!(
        *req.method(),
        Method::POST | Method::DELETE | Method::PUT | Method::PATCH
    );
    if changes && !st.auth.origin_ok(req.headers()) {
        return err(StatusCode::FORBIDDEN, "cross-origin request refused");
    }
    if path == "/api/v1/login" || path == "/api/v1/logout" {
        req.extensions_mut().insert(client);
        return next.run(req).await;
    }
    let Some(caller) = st.auth.caller(req.headers(), &client) else {
        return err(StatusCode::UNAUTHORIZED, "authentication required");
    };
    if changes {
        if let Some(expected) = &caller.csrf {
            let got = req
                .headers()
                .get("x-csrf-token")
                .map(|v| v.as_bytes())
                .unwrap_or_default();
            if !bool::from(got.ct_eq(expected.as_bytes())) {
                return err(StatusCode::FORBIDDEN, "missing or wrong X-CSRF-Token");
            }
        }
        if caller.role != Role::Operator {
            return err(StatusCode::FORBIDDEN, "the operator role is needed");
        }
    }
    req.extensions_mut().insert(caller);
    next.run(req).await
}

fn caller(req: &axum::http::Extensions) -> Option<Caller> {
    req.get::<Caller>().cloned()
}

async fn me(req: Request) -> Response {
    match caller(req.extensions()) {
        Some(c) => Json(json!({
            "role": c.role.name(),
            "user": c.user,
            "csrf": c.csrf.unwrap_or_default(),
        }))
        .into_response(),
        None => err(StatusCode::UNAUTHORIZED, "authentication required"),
    }
}

#[derive(Deserialize)]
struct LoginBody {
    token: String,
}

async fn login(State(st): State<AppState>, req: Request) -> Response {
    let client = req
        .extensions()
        .get::<String>()
        .cloned()
        .unwrap_or_default();
    let Ok(bytes) = axum::body::to_bytes(req.into_body(), 64 * 1024).await else {
        return err(StatusCode::BAD_REQUEST, "body too large");
    };
    let Ok(body) = serde_json::from_slice::<LoginBody>(&bytes) else {
        return err(StatusCode::BAD_REQUEST, "expected {\"token\": \"...\"}");
    };
    if st.auth.tokens.is_empty() {
        return StatusCode::NO_CONTENT.into_response();
    }
    match st.auth.check_token(&body.token) {
        Some((user, role)) => {
            let Some(id) = st.auth.login(user, role) else {
                return err(StatusCode::INTERNAL_SERVER_ERROR, "no session id");
            };
            let secure = if st.auth.tls { "; Secure" } else { "" };
            let cookie =
                format!("{SESSION_COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/{secure}");
            let mut r = StatusCode::NO_CONTENT.into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                r.headers_mut().insert(header::SET_COOKIE, v);
            }
            r
        }
        None => {
            // Guessing tokens: every failure is audited, and each costs the guesser a second.
            st.bus.emit(Event::AdminAction {
                user: "-".into(),
                role: "-".into(),
                client,
                action: "login-failed".into(),
                target: String::new(),
                ok: false,
                detail: "console login with an unknown token".into(),
            });
            tokio::time::sleep(Duration::from_secs(1)).await;
            err(StatusCode::UNAUTHORIZED, "unknown token")
        }
    }
}

async fn logout(State(st): State<AppState>, req: Request) -> Response {
    st.auth.logout(req.headers());
    let mut r = StatusCode::NO_CONTENT.into_response();
    r.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("radguard_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    r
}

async fn overview(State(st): State<AppState>) -> Response {
    Json(json!({
        "version": st.console.version,
        "started": st.console.started,
        "associations": st.console.associations(),
        "totals": st.console.totals(),
        "series": st.console.series(),
    }))
    .into_response()
}

async fn associations(State(st): State<AppState>) -> Response {
    Json(st.console.associations()).into_response()
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T, Response> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| err(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A block entry names `subject` as `address=IP`, `calling-ae=AE` or `certificate=SHA256`.
fn block_names(b: &Value, addresses: &[String], aes: &[String], cert: Option<&str>) -> bool {
    let Some(s) = b.get("subject").and_then(Value::as_str) else {
        return false;
    };
    let removed = b.get("removed").is_some_and(|r| !r.is_null());
    if removed {
        return false;
    }
    match s.split_once('=') {
        Some(("address", a)) => addresses.iter().any(|x| x == a),
        Some(("calling-ae", ae)) => aes.iter().any(|x| x.trim() == ae.trim()),
        Some(("certificate", c)) => cert.is_some_and(|x| x.eq_ignore_ascii_case(c)),
        _ => false,
    }
}

async fn peers(State(st): State<AppState>) -> Response {
    let b = st.backend.clone();
    let (configured, blocks) = match blocking(move || (b.peers(), b.blocks())).await {
        Ok(x) => x,
        Err(r) => return r,
    };
    let blocks = blocks.unwrap_or_default();
    let seen = st.console.seen();
    let mut out = Vec::new();
    let mut used = vec![false; seen.len()];
    for p in configured {
        let mut addresses = p.addresses.clone();
        let mut aes = p.ae_titles.clone();
        let mut last_seen = None;
        let (mut impl_uid, mut impl_ver, mut cert) = (None, None, p.certificate.clone());
        for (i, (_, s)) in seen.iter().enumerate() {
            if s.peer.as_deref() == Some(p.name.as_str()) {
                if let Some(u) = used.get_mut(i) {
                    *u = true;
                }
                addresses.extend(
                    s.addresses
                        .iter()
                        .filter(|a| !p.addresses.contains(a))
                        .cloned(),
                );
                aes.extend(
                    s.ae_titles
                        .iter()
                        .filter(|a| !p.ae_titles.contains(a))
                        .cloned(),
                );
                last_seen = last_seen.max(Some(s.last_seen));
                impl_uid = s.implementation_class_uid.clone().or(impl_uid);
                impl_ver = s.implementation_version.clone().or(impl_ver);
                cert = cert.or(s.certificate.clone());
            }
        }
        let block = blocks
            .iter()
            .find(|b| block_names(b, &addresses, &aes, cert.as_deref()))
            .cloned();
        out.push(json!({
            "name": p.name, "addresses": addresses, "ae_titles": aes, "certificate": cert,
            "implementation_class_uid": impl_uid, "implementation_version": impl_ver,
            "last_seen": last_seen, "allows": p.allows, "configured": true,
            "blocked": block.is_some(), "block": block,
        }));
    }
    for (i, (addr, s)) in seen.iter().enumerate() {
        if used.get(i).copied().unwrap_or(true) {
            continue;
        }
        let addresses: Vec<String> = s.addresses.iter().cloned().collect();
        let aes: Vec<String> = s.ae_titles.iter().cloned().collect();
        let block = blocks
            .iter()
            .find(|b| block_names(b, &addresses, &aes, s.certificate.as_deref()))
            .cloned();
        out.push(json!({
            "name": s.peer.clone().unwrap_or_else(|| format!("unknown ({addr})")),
            "addresses": addresses, "ae_titles": aes, "certificate": s.certificate,
            "implementation_class_uid": s.implementation_class_uid,
            "implementation_version": s.implementation_version,
            "last_seen": s.last_seen, "allows": [], "configured": false,
            "blocked": block.is_some(), "block": block,
        }));
    }
    Json(out).into_response()
}

async fn alerts(State(st): State<AppState>) -> Response {
    Json(st.console.alerts()).into_response()
}

async fn refusals(State(st): State<AppState>) -> Response {
    Json(st.console.refusals()).into_response()
}

async fn audit(State(st): State<AppState>, Query(q): Query<AuditQuery>, req: Request) -> Response {
    let Some(c) = caller(req.extensions()) else {
        return err(StatusCode::UNAUTHORIZED, "authentication required");
    };
    let mut q = q;
    q.limit = Some(q.limit.unwrap_or(200).clamp(1, MAX_AUDIT_LIMIT));
    // PS3.15 A.5.3.2: reading the trail is itself audited (who, from where, what was asked).
    st.bus.emit(Event::AuditLogRead {
        user: c.user.clone(),
        client: c.client.clone(),
        query: format!(
            "since={} kind={} limit={}",
            q.since.as_deref().unwrap_or("-"),
            q.kind.as_deref().unwrap_or("-"),
            q.limit.unwrap_or_default()
        ),
    });
    let b = st.backend.clone();
    match blocking(move || b.audit(&q)).await {
        Ok(Ok(records)) => Json(json!({ "records": records })).into_response(),
        Ok(Err(e)) => err(StatusCode::BAD_REQUEST, e),
        Err(r) => r,
    }
}

async fn integrity(State(st): State<AppState>) -> Response {
    let b = st.backend.clone();
    match blocking(move || b.integrity()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn vault(State(st): State<AppState>) -> Response {
    let b = st.backend.clone();
    match blocking(move || b.vault()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn config(State(st): State<AppState>) -> Response {
    let b = st.backend.clone();
    match blocking(move || b.config()).await {
        Ok(v) => Json(v).into_response(),
        Err(r) => r,
    }
}

async fn blocks(State(st): State<AppState>) -> Response {
    let b = st.backend.clone();
    match blocking(move || b.blocks()).await {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err(e)) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
        Err(r) => r,
    }
}

async fn ack(State(st): State<AppState>, Path(id): Path<u64>, req: Request) -> Response {
    let Some(c) = caller(req.extensions()) else {
        return err(StatusCode::UNAUTHORIZED, "authentication required");
    };
    match st.console.acknowledge(id, &c.user) {
        None => err(StatusCode::NOT_FOUND, format!("no alert {id}")),
        Some(first) => {
            let detail = st
                .console
                .alert(id)
                .map(|a| format!("{}: {}", a.rule, a.detail))
                .unwrap_or_default();
            st.bus.emit(Event::AdminAction {
                user: c.user,
                role: c.role.name().into(),
                client: c.client,
                action: "alert-acknowledged".into(),
                target: format!("alert {id}"),
                ok: first,
                detail: if first {
                    detail
                } else {
                    format!("already acknowledged: {detail}")
                },
            });
            StatusCode::NO_CONTENT.into_response()
        }
    }
}

async fn unblock(State(st): State<AppState>, Path(id): Path<u64>, req: Request) -> Response {
    let Some(c) = caller(req.extensions()) else {
        return err(StatusCode::UNAUTHORIZED, "authentication required");
    };
    let b = st.backend.clone();
    let by = format!("console user {}", c.user);
    let result = match blocking(move || b.unblock(id, &by)).await {
        Ok(r) => r,
        Err(r) => return r,
    };
    let (ok, detail) = match &result {
        Ok(true) => (true, "removed".to_string()),
        Ok(false) => (false, "no such block".to_string()),
        Err(e) => (false, e.clone()),
    };
    st.bus.emit(Event::AdminAction {
        user: c.user,
        role: c.role.name().into(),
        client: c.client,
        action: "block-removed".into(),
        target: format!("block {id}"),
        ok,
        detail,
    });
    match result {
        Ok(true) => StatusCode::NO_CONTENT.into_response(),
        Ok(false) => err(StatusCode::NOT_FOUND, format!("no block {id}")),
        Err(e) => err(StatusCode::INTERNAL_SERVER_ERROR, e),
    }
}

async fn reload(State(st): State<AppState>, req: Request) -> Response {
    let Some(c) = caller(req.extensions()) else {
        return err(StatusCode::UNAUTHORIZED, "authentication required");
    };
    let (ok, detail) = st.backend.reload().await;
    st.bus.emit(Event::AdminAction {
        user: c.user,
        role: c.role.name().into(),
        client: c.client,
        action: "config-reload".into(),
        target: String::new(),
        ok,
        detail: detail.clone(),
    });
    Json(json!({"ok": ok, "detail": detail})).into_response()
}

async fn openapi() -> Response {
    ([(header::CONTENT_TYPE, "application/json")], crate::OPENAPI).into_response()
}

async fn metrics(State(st): State<AppState>) -> Response {
    let b = st.backend.clone();
    let g = match blocking(move || b.gauges()).await {
        Ok(g) => g,
        Err(r) => return r,
    };
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(&st.console, g),
    )
        .into_response()
}

fn sse_event(u: Update) -> Option<SseEvent> {
    let (name, data) = match u {
        Update::Association(a) => ("association", serde_json::to_string(&a)),
        Update::AssociationEnded(id) => ("association-ended", Ok(json!({"id": id}).to_string())),
        Update::Refusal(r) => ("refusal", serde_json::to_string(&r)),
        Update::Alert(a) => ("alert", serde_json::to_string(&a)),
        Update::Totals(t) => ("totals", serde_json::to_string(&t)),
        Update::Point(p) => ("point", serde_json::to_string(&p)),
    };
    Some(SseEvent::default().event(name).data(data.ok()?))
}

async fn events(State(st): State<AppState>) -> Response {
    let rx = st.console.subscribe();
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        use tokio::sync::broadcast::error::RecvError;
        loop {
            match rx.recv().await {
                Ok(u) => {
                    if let Some(e) = sse_event(u) {
                        return Some((Ok::<_, Infallible>(e), rx));
                    }
                }
                // A slow page misses updates; its next reads catch up.
                Err(RecvError::Lagged(_)) => continue,
                Err(RecvError::Closed) => return None,
            }
        }
    });
    Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn asset_response(name: &str) -> Response {
    match crate::assets::get(name) {
        Some((mime, bytes)) => ([(header::CONTENT_TYPE, mime)], Body::from(bytes)).into_response(),
        None => err(StatusCode::NOT_FOUND, "no such asset"),
    }
}

async fn index() -> Response {
    asset_response("index.html")
}

async fn asset(Path(name): Path<String>) -> Response {
    asset_response(&name)
}

async fn not_found() -> Response {
    err(StatusCode::NOT_FOUND, "not found")
}

/// Every API route (the OpenAPI document describes each; a unit test holds them together).
pub const API_ROUTES: &[&str] = &[
    "/api/v1/me",
    "/api/v1/login",
    "/api/v1/logout",
    "/api/v1/overview",
    "/api/v1/associations",
    "/api/v1/peers",
    "/api/v1/alerts",
    "/api/v1/alerts/{id}/ack",
    "/api/v1/refusals",
    "/api/v1/audit",
    "/api/v1/integrity",
    "/api/v1/vault",
    "/api/v1/config",
    "/api/v1/blocks",
    "/api/v1/blocks/{id}",
    "/api/v1/reload",
    "/api/v1/events",
    "/api/v1/openapi.json",
    "/metrics",
];

fn router(st: AppState) -> Router {
    let api = Router::new()
        .route("/api/v1/me", get(me))
        .route("/api/v1/login", post(login))
        .route("/api/v1/logout", post(logout))
        .route("/api/v1/overview", get(overview))
        .route("/api/v1/associations", get(associations))
        .route("/api/v1/peers", get(peers))
        .route("/api/v1/alerts", get(alerts))
        .route("/api/v1/alerts/{id}/ack", post(ack))
        .route("/api/v1/refusals", get(refusals))
        .route("/api/v1/audit", get(audit))
        .route("/api/v1/integrity", get(integrity))
        .route("/api/v1/vault", get(vault))
        .route("/api/v1/config", get(config))
        .route("/api/v1/blocks", get(blocks))
        .route("/api/v1/blocks/{id}", delete(unblock))
        .route("/api/v1/reload", post(reload))
        .route("/api/v1/events", get(events))
        .route("/api/v1/openapi.json", get(openapi))
        .route("/metrics", get(metrics))
        .route_layer(middleware::from_fn_with_state(st.clone(), require));
    Router::new()
        .route("/", get(index))
        .route("/assets/{name}", get(asset))
        .merge(api)
        .fallback(not_found)
        .layer(middleware::from_fn_with_state(st.clone(), guard))
        .with_state(st)
}

/// The admin listener, bound (so a taken port fails the start) and not yet serving.
pub struct AdminServer {
    listener: tokio::net::TcpListener,
    tls: Option<tokio_rustls::TlsAcceptor>,
    cfg: AdminConfig,
}

impl AdminServer {
    /// Binds `[admin] listen` and loads the TLS certificate and key. Refuses a non-loopback
    /// address without TLS and tokens (the config loader refuses it too; this is the last
    /// line).
    pub async fn bind(cfg: &AdminConfig) -> Result<AdminServer, WebError> {
        let secured = cfg.tls_cert.is_some() && cfg.tls_key.is_some() && !cfg.tokens.is_empty();
        if !cfg.listen.ip().is_loopback() && !secured {
            return Err(WebError::Exposed(cfg.listen));
        }
        let tls = match (&cfg.tls_cert, &cfg.tls_key) {
            (Some(c), Some(k)) => {
                let certs =
                    radguard_tls::load_certs(c).map_err(|e| WebError::Tls(e.to_string()))?;
                let key = radguard_tls::load_key(k).map_err(|e| WebError::Tls(e.to_string()))?;
                let sc = rustls::ServerConfig::builder_with_provider(radguard_tls::provider())
                    .with_safe_default_protocol_versions()
                    .map_err(|e| WebError::Tls(e.to_string()))?
                    .with_no_client_auth()
                    .with_single_cert(certs, key)
                    .map_err(|e| WebError::Tls(e.to_string()))?;
                Some(tokio_rustls::TlsAcceptor::from(Arc::new(sc)))
            }
            _ => None,
        };
        let listener = tokio::net::TcpListener::bind(cfg.listen)
            .await
            .map_err(|e| WebError::Bind(cfg.listen, e))?;
        Ok(AdminServer {
            listener,
            tls,
            cfg: cfg.clone(),
        })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, WebError> {
        self.listener
            .local_addr()
            .map_err(|e| WebError::Bind(self.cfg.listen, e))
    }

    /// `http://...` or `https://...`.
    pub fn url(&self) -> String {
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.local_addr() {
            Ok(a) => format!("{scheme}://{a}/"),
            Err(_) => format!("{scheme}://{}/", self.cfg.listen),
        }
    }

    /// Serves until the runtime stops. The console model is fed from `bus`.
    pub fn spawn(self, bus: &EventBus, backend: Arc<dyn Backend>) -> Arc<Console> {
        let console = Arc::new(Console::new());
        crate::model::spawn_feed(console.clone(), bus);
        let listen = self.local_addr().unwrap_or(self.cfg.listen);
        let auth = Auth {
            tokens: self
                .cfg
                .tokens
                .iter()
                .filter_map(|t| Some((t.name.clone(), t.role, t.digest()?)))
                .collect(),
            sessions: Mutex::new(HashMap::new()),
            local_csrf: random_hex(32),
            tls: self.tls.is_some(),
            listen,
        };
        let st = AppState {
            console: console.clone(),
            backend,
            bus: bus.clone(),
            auth: Arc::new(auth),
        };
        let app = router(st);
        let limit = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
        let AdminServer { listener, tls, .. } = self;
        tokio::spawn(async move {
            loop {
                let Ok(permit) = limit.clone().acquire_owned().await else {
                    break;
                };
                let (tcp, addr) = match listener.accept().await {
                    Ok(x) => x,
                    Err(e) => {
                        tracing::warn!(target: "radguard::web", "admin accept: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let app = app.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    let svc = hyper::service::service_fn(
                        move |mut req: hyper::Request<hyper::body::Incoming>| {
                            req.extensions_mut().insert(ClientAddr(addr));
                            let mut app = app.clone();
                            async move {
                                use tower_service::Service;
                                app.call(req.map(Body::new)).await
                            }
                        },
                    );
                    let mut http = hyper::server::conn::http1::Builder::new();
                    // A client that never finishes its headers (slowloris) is dropped.
                    http.timer(hyper_util::rt::TokioTimer::new())
                        .header_read_timeout(Duration::from_secs(10));
                    match tls {
                        Some(acc) => {
                            let Ok(Ok(s)) =
                                tokio::time::timeout(Duration::from_secs(10), acc.accept(tcp))
                                    .await
                            else {
                                return;
                            };
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(s), svc)
                                .await;
                        }
                        None => {
                            let _ = http
                                .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                                .await;
                        }
                    }
                });
            }
        });
        console
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn auth(tokens: bool) -> Auth {
        Auth {
            tokens: if tokens {
                vec![(
                    "a".into(),
                    Role::Viewer,
                    Sha256::digest(b"secret-token").into(),
                )]
            } else {
                Vec::new()
            },
            sessions: Mutex::new(HashMap::new()),
            local_csrf: "c".into(),
            tls: false,
            listen: "127.0.0.1:11180".parse().unwrap(),
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    #[test]
    fn host_check_stops_dns_rebinding_without_tokens() {
        let a = auth(false);
        assert!(a.host_ok(&headers(&[("host", "127.0.0.1:11180")])));
        assert!(a.host_ok(&headers(&[("host", "localhost:11180")])));
        assert!(!a.host_ok(&headers(&[("host", "evil.example:11180")])));
        assert!(!a.host_ok(&headers(&[])));
        // With tokens the name does not matter (a DNS name in front of the console).
        assert!(auth(true).host_ok(&headers(&[("host", "console.example")])));
    }

    #[test]
    fn origin_must_be_the_consoles_own() {
        let a = auth(false);
        let own = headers(&[
            ("host", "127.0.0.1:11180"),
            ("origin", "http://127.0.0.1:11180"),
        ]);
        assert!(a.origin_ok(&own));
        let other = headers(&[
            ("host", "127.0.0.1:11180"),
            ("origin", "http://evil.example"),
        ]);
        assert!(!a.origin_ok(&other));
        // A rebinding page: its Host and Origin agree, but the name is not the console's.
        let rebind = headers(&[
            ("host", "evil.example:11180"),
            ("origin", "http://evil.example:11180"),
        ]);
        assert!(!a.origin_ok(&rebind));
        assert!(a.origin_ok(&headers(&[("host", "127.0.0.1:11180")])));
    }

    #[test]
    fn tokens_by_digest_and_sessions() {
        let a = auth(true);
        assert_eq!(
            a.check_token("secret-token\n").map(|x| x.0),
            Some("a".into())
        );
        assert!(a.check_token("secret-toke").is_none());
        let none = headers(&[]);
        assert!(a.caller(&none, "x").is_none());
        let bearer = headers(&[("authorization", "Bearer secret-token")]);
        let c = a.caller(&bearer, "x").unwrap();
        assert_eq!((c.role, c.csrf), (Role::Viewer, None));
        let id = a.login("a".into(), Role::Viewer).unwrap();
        let cookie = headers(&[("cookie", &format!("other=1; {SESSION_COOKIE}={id}"))]);
        assert!(a.caller(&cookie, "x").unwrap().csrf.is_some());
        a.logout(&cookie);
        assert!(a.caller(&cookie, "x").is_none());
        // Without tokens: the local operator, with a CSRF token.
        let l = auth(false).caller(&none, "x").unwrap();
        assert_eq!((l.user.as_str(), l.role), ("local", Role::Operator));
        assert_eq!(l.csrf.as_deref(), Some("c"));
    }
}
