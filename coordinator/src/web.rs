//! HTTP side of the endpoint: the web demo's files and a small JSON/binary API
//! for the page, on the same port as the workers' WebSocket.
//!
//! - `GET /`, `/app.js`, `/pkg/…`: the embedded demo ([`hearth_web_demo`]);
//! - `GET /api/health`: `ok` (the only API route without a credential).
//!
//! Every other `/api/` route needs a device's HTTP credential,
//! `Authorization: Bearer ID.TAG` ([`hearth_protocol::auth::DeviceKey::http_token`];
//! the page computes it from its pairing link), or answers 401:
//! - `GET /api/status[?since=R]`: the dashboard snapshot (JSON), with only
//!   the rounds after round R if `since` is given (pages poll incrementally);
//! - `GET /api/model`: the global parameters, raw f32 little-endian, with the
//!   architecture and version in `x-hearth-arch` / `x-hearth-version`;
//! - `GET /api/samples?start=S&count=N`: N test images (N×784 bytes) followed
//!   by their N labels, for draw-a-digit checks and the browser benchmark;
//! - `POST /api/bench`: where the benchmark page reports its figures.
//!
//! And one route for the household's owner only (the credential of device
//! [`OWNER`], derived from the household secret: `hearth-coordinator
//! component push` makes it):
//! - `POST /api/components`: a signed component to roll out. Body: the
//!   signature file's length (4 bytes, little-endian), the signature file
//!   (`FILE.sig`), then the component. It is verified with the household's
//!   signing key, compiled and checked before it is accepted; the answer
//!   is its digest, name and version (JSON), or why it was refused (422).

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Query, State};
use axum::http::{HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use hearth_mnist::Split;
use serde::Deserialize;
use tokio::sync::mpsc::UnboundedSender;

use crate::catalog::{Catalog, MAX_COMPONENT_BYTES};
use crate::dashboard::Dashboard;
use crate::engine::Input;
use crate::household::{Household, OWNER};
use crate::session::Event;

/// Most images one `/api/samples` request returns.
pub const MAX_SAMPLES: usize = 2_048;

/// What the handlers share.
pub struct WebState {
    /// The run's snapshot.
    pub dashboard: Dashboard,
    /// The test set.
    pub test: Arc<Split>,
    /// Where `POST /api/bench` reports go, if a benchmark is waiting for them.
    pub bench_reports: Option<UnboundedSender<String>>,
    /// Whose credentials the API accepts.
    pub household: Household,
    /// The components hosts may run (a push adds to it).
    pub catalog: Arc<Catalog>,
    /// Where an accepted push goes (the training thread rolls it out).
    pub events: std::sync::mpsc::Sender<Event>,
}

/// The HTTP routes.
pub fn router(state: Arc<WebState>) -> axum::Router {
    let api = axum::Router::new()
        .route("/api/status", get(status))
        .route("/api/model", get(model))
        .route("/api/samples", get(samples))
        .route("/api/bench", post(bench_report))
        .route(
            "/api/components",
            post(push_component).layer(axum::extract::DefaultBodyLimit::max(
                MAX_COMPONENT_BYTES + 64 * 1024,
            )),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            require_credential,
        ));
    api.route("/api/health", get(health))
        .fallback(get(asset))
        .with_state(state)
}

async fn health() -> &'static str {
    "ok"
}

/// Lets a request through only with a valid device credential.
async fn require_credential(
    State(s): State<Arc<WebState>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if s.household.http_allowed(t.trim()) => next.run(request).await,
        _ => {
            let mut r = (
                StatusCode::UNAUTHORIZED,
                "this needs a paired device's credential: open the pairing link \
                 from `hearth-coordinator pair`",
            )
                .into_response();
            r.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"hearth\""),
            );
            r
        }
    }
}

/// Query of `/api/status`.
#[derive(Debug, Deserialize)]
pub struct StatusQuery {
    since: Option<u64>,
}

async fn status(State(s): State<Arc<WebState>>, Query(q): Query<StatusQuery>) -> Response {
    let mut status = s.dashboard.status();
    if let Some(since) = q.since {
        status.rounds.retain(|p| p.round > since);
    }
    let mut r = Json(status).into_response();
    no_store(&mut r);
    r
}

async fn model(State(s): State<Arc<WebState>>) -> Response {
    let snapshot = s.dashboard.model();
    let mut bytes = Vec::with_capacity(snapshot.params.len() * 4);
    for p in snapshot.params.iter() {
        bytes.extend_from_slice(&p.to_le_bytes());
    }
    let mut r = bytes.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&snapshot.arch) {
        h.insert("x-hearth-arch", v);
    }
    h.insert("x-hearth-version", HeaderValue::from(snapshot.version));
    no_store(&mut r);
    r
}

/// Query of `/api/samples`.
#[derive(Debug, Deserialize)]
pub struct SampleQuery {
    start: Option<usize>,
    count: Option<usize>,
}

/// The bytes of `count` test images from `start`, then their labels, or why not.
pub fn sample_bytes(test: &Split, start: usize, count: usize) -> Result<Vec<u8>, String> {
    if count == 0 || count > MAX_SAMPLES {
        return Err(format!("count must be 1 to {MAX_SAMPLES}"));
    }
    let end = start
        .checked_add(count)
        .filter(|&e| e <= test.len())
        .ok_or_else(|| format!("the test set has {} images", test.len()))?;
    let idx: Vec<usize> = (start..end).collect();
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    test.gather(&idx, &mut pixels, &mut labels);
    pixels.extend_from_slice(&labels);
    Ok(pixels)
}

async fn samples(State(s): State<Arc<WebState>>, Query(q): Query<SampleQuery>) -> Response {
    let (start, count) = (q.start.unwrap_or(0), q.count.unwrap_or(1));
    match sample_bytes(&s.test, start, count) {
        Ok(bytes) => {
            let mut r = bytes.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/octet-stream"),
            );
            r.headers_mut()
                .insert("x-hearth-count", HeaderValue::from(count));
            r
        }
        Err(reason) => (StatusCode::BAD_REQUEST, reason).into_response(),
    }
}

async fn bench_report(State(s): State<Arc<WebState>>, body: Bytes) -> Response {
    let Some(tx) = &s.bench_reports else {
        return (StatusCode::NOT_FOUND, "no benchmark is running").into_response();
    };
    match String::from_utf8(body.to_vec()) {
        Ok(text) if text.len() <= 64 * 1024 => {
            let _ = tx.send(text);
            StatusCode::NO_CONTENT.into_response()
        }
        _ => (StatusCode::BAD_REQUEST, "expected a short UTF-8 report").into_response(),
    }
}

/// Splits a push body into the signature file's text and the component.
pub fn split_push(body: &[u8]) -> Result<(&str, &[u8]), String> {
    let (len, rest) = body
        .split_first_chunk::<4>()
        .ok_or("the body is shorter than its length field")?;
    let len = u32::from_le_bytes(*len) as usize;
    if len > 64 * 1024 || len > rest.len() {
        return Err(format!(
            "a {len}-byte signature does not fit a {}-byte body",
            body.len()
        ));
    }
    let (signature, component) = rest.split_at(len);
    let signature = std::str::from_utf8(signature).map_err(|_| "the signature is not UTF-8")?;
    Ok((signature, component))
}

async fn push_component(
    State(s): State<Arc<WebState>>,
    headers: axum::http::HeaderMap,
    body: Bytes,
) -> Response {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    if !s.household.is_owner(token.trim()) {
        return (
            StatusCode::FORBIDDEN,
            format!("only the household's owner ({OWNER}) may push components"),
        )
            .into_response();
    }
    let catalog = s.catalog.clone();
    let accepted = tokio::task::spawn_blocking(move || {
        let (signature, component) = split_push(&body)?;
        catalog.accept(component, signature)
    })
    .await
    .unwrap_or_else(|e| Err(format!("the check failed: {e}")));
    match accepted {
        Ok(info) => {
            tracing::info!(digest = %info.digest, component = %info.label(), "component pushed");
            let _ = s
                .events
                .send(Event::Input(Input::Component { info: info.clone() }));
            Json(info).into_response()
        }
        Err(reason) => {
            tracing::warn!(reason = %reason, "component push refused");
            (StatusCode::UNPROCESSABLE_ENTITY, reason).into_response()
        }
    }
}

async fn asset(uri: Uri) -> Response {
    match hearth_web_demo::asset(uri.path()) {
        Some(a) => {
            let mut r = a.bytes.into_response();
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(a.content_type),
            );
            no_store(&mut r);
            isolate(&mut r);
            r
        }
        None => (StatusCode::NOT_FOUND, format!("{} not found", uri.path())).into_response(),
    }
}

/// Cross-origin isolation for the page and its workers, so a tab may share
/// memory between its Web Workers (`SharedArrayBuffer`: a tab trains on
/// several cores). Everything the page loads is this server's.
fn isolate(r: &mut Response) {
    let h = r.headers_mut();
    h.insert(
        "cross-origin-opener-policy",
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        "cross-origin-embedder-policy",
        HeaderValue::from_static("require-corp"),
    );
}

/// The page must always see the files of the binary it talks to.
fn no_store(r: &mut Response) {
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

#[cfg(test)]
mod tests {
    use super::*;
    use ndarray::{Array1, Array2};

    #[test]
    fn samples_are_pixels_then_labels_and_bounds_are_checked() {
        let images = Array2::from_shape_fn((3, 784), |(i, _)| i as u8 + 10);
        let test = Split {
            images,
            labels: Array1::from(vec![7, 8, 9]),
        };
        let b = sample_bytes(&test, 1, 2).unwrap_or_default();
        assert_eq!(b.len(), 2 * 784 + 2);
        assert_eq!((b[0], b[784], b[1568], b[1569]), (11, 12, 8, 9));
        assert!(sample_bytes(&test, 2, 2).is_err());
        assert!(sample_bytes(&test, 0, 0).is_err());
        assert!(sample_bytes(&test, usize::MAX, 1).is_err());
    }

    #[test]
    fn push_bodies_split_into_signature_and_component_and_bad_lengths_are_refused() {
        let mut body = 3u32.to_le_bytes().to_vec();
        body.extend_from_slice(b"sigwasm");
        assert_eq!(split_push(&body), Ok(("sig", &b"wasm"[..])));
        assert!(split_push(&body[..3]).is_err());
        let mut long = u32::MAX.to_le_bytes().to_vec();
        long.extend_from_slice(b"x");
        assert!(split_push(&long).is_err());
        let mut bad = 1u32.to_le_bytes().to_vec();
        bad.push(0xff);
        assert!(split_push(&bad).is_err());
    }
}
