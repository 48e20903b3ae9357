//! milkcrate's own HTTP/1.1 path for the common proxied request: a bodyless request (GET, HEAD,
//! OPTIONS, DELETE…) from an HTTP/1.1 client over plain TCP, to an app. `server.rs` parses the
//! head (httparse, the parser hyper uses) and hands it here when [`takes`] says so; everything
//! else (bodies, WebSocket upgrades, `Expect`, HTTP/1.0, HTTP/2, TLS, the admin UI) goes through
//! hyper as before, on the same connection.
//!
//! Why not hyper for this too: hyper keeps an 8 KiB read and an 8 KiB write buffer for every
//! idle keep-alive client, and its client sends each request through a connection task of its own
//! and a channel; measured, that was twice nginx's CPU per small request and 30 KiB per idle
//! client (ARCHITECTURE.md, "The router's hot path"). Here one task reads the request, writes
//! it to a pooled upstream socket, reads the answer and writes it to the client; between
//! requests a client connection holds no buffer at all, and an idle upstream socket none either.
//!
//! The request side (headers rewritten, the target chosen, milkcrate's own answers) and the
//! response clean-up are [`super::proxy`]'s, shared with the hyper path; this module only
//! frames bytes: a response body is relayed by its `Content-Length`, its chunks (decoded and
//! re-encoded, so extensions and trailers never pass), or until the app closes (re-chunked).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::body::Body;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Method, Request, Response, StatusCode};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::observe::{Done, Seen};
use super::proxy;
use super::{RouteRef, RouterState};
use crate::http_common::ConnInfo;

/// How long an upstream connection may stay idle in the pool.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// How long connecting to a container may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// The largest response head read from an app (hyper's default limit).
const RESPONSE_HEAD_MAX: usize = 8192 + 4096 * 100;
/// At most this many headers in a response (hyper's default).
const RESPONSE_HEADERS_MAX: usize = 100;
/// A body is relayed through a buffer of at most this size.
const RELAY_BUF: usize = 64 * 1024;

/// Idle upstream connections, per container address: plain sockets (no buffers), the most
/// recently used last. Expired ones are closed whenever the pool is used. One shard per thread
/// that serves plain HTTP ([`set_shard`]): a socket is registered with the runtime of the thread
/// that opened it, so it is only ever used there, and no lock is contended.
pub struct Pool {
    shards: Vec<Mutex<PoolInner>>,
    max_per_addr: usize,
}

#[derive(Default)]
struct PoolInner {
    by_addr: HashMap<SocketAddr, Vec<(TcpStream, Instant)>>,
    last_sweep: Option<Instant>,
}

thread_local! {
    static SHARD: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
}

/// Names the pool shard this thread uses (`server.rs` gives each of its per-core threads one,
/// from 1; every other thread uses shard 0).
pub fn set_shard(shard: usize) {
    SHARD.with(|s| s.set(shard));
}

impl Pool {
    /// At most `max_per_app` idle connections per container, shared out between the threads
    /// (one per core, as `server.rs` starts them).
    pub fn new(max_per_app: usize) -> Self {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
        Self {
            shards: (0..=threads).map(|_| Mutex::default()).collect(),
            max_per_addr: (max_per_app / threads).max(4),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, PoolInner> {
        let shard = SHARD.with(std::cell::Cell::get);
        self.shards
            .get(shard)
            .unwrap_or(&self.shards[0])
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// The most recently used idle connection to `addr` that has not expired and has nothing
    /// to read: one the app closed, or sent stray bytes on (a body to a HEAD, bytes past its
    /// length), is closed instead, so no answer is ever read as another request's.
    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        loop {
            let conn = {
                let now = Instant::now();
                let mut inner = self.lock();
                let list = inner.by_addr.get_mut(&addr)?;
                let fresh =
                    list.partition_point(|(_, since)| now.duration_since(*since) >= IDLE_TIMEOUT);
                list.drain(..fresh);
                list.pop().map(|(s, _)| s)?
            };
            // No system call when the runtime saw nothing arrive since the last read.
            let mut probe = [0u8; 1];
            match conn.try_read(&mut probe) {
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Some(conn),
                _ => continue,
            }
        }
    }

    /// Keeps `stream` for the next request to `addr` (closed instead when the pool is full).
    fn put(&self, addr: SocketAddr, stream: TcpStream) {
        let now = Instant::now();
        let mut inner = self.lock();
        // Now and then, every address: containers that are gone leave sockets nobody asks for.
        if inner
            .last_sweep
            .is_none_or(|t| now.duration_since(t) >= IDLE_TIMEOUT)
        {
            inner.last_sweep = Some(now);
            inner.by_addr.retain(|_, list| {
                list.retain(|(_, since)| now.duration_since(*since) < IDLE_TIMEOUT);
                !list.is_empty()
            });
        }
        let list = inner.by_addr.entry(addr).or_default();
        if list.len() < self.max_per_addr {
            list.push((stream, now));
        }
    }
}

/// Heads (a request's, an app's answer's) are read into buffers of this size, kept per thread
/// between requests ([`head_buffer`], [`give_back`]): an allocation this large is past the
/// allocator's per-thread cache, and taking two per request showed in profiles.
const HEAD_BUF: usize = 4 * 1024;
/// At most this many buffers are kept per thread (a request takes two at most).
const HEAD_BUFS_KEPT: usize = 16;

thread_local! {
    static HEAD_BUFS: std::cell::RefCell<Vec<Vec<u8>>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty buffer for a head, of at least [`HEAD_BUF`] bytes.
pub fn head_buffer() -> Vec<u8> {
    HEAD_BUFS
        .with_borrow_mut(Vec::pop)
        .unwrap_or_else(|| Vec::with_capacity(HEAD_BUF))
}

/// Keeps `buf` for another head, unless it grew past a head's size (or was never one).
pub fn give_back(mut buf: Vec<u8>) {
    if !(HEAD_BUF..=4 * HEAD_BUF).contains(&buf.capacity()) {
        return;
    }
    buf.clear();
    HEAD_BUFS.with_borrow_mut(|kept| {
        if kept.len() < HEAD_BUFS_KEPT {
            kept.push(buf);
        }
    });
}

/// Whether this path takes a request with `method` and `headers` (already known to be an
/// HTTP/1.1 request for an app): a GET, HEAD or OPTIONS without a body, an upgrade or an
/// `Expect`. Those are safe to send again when a pooled connection turns out closed before
/// any answer (RFC 9110 §9.2.2); every other method goes through hyper.
pub fn takes(method: &Method, headers: &HeaderMap) -> bool {
    if !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return false;
    }
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let bodyless = match (lengths.next(), lengths.next()) {
        (None, _) => true,
        (Some(v), None) => v.as_bytes() == b"0",
        _ => false,
    };
    bodyless
        && !headers.contains_key(header::TRANSFER_ENCODING)
        && !headers.contains_key(header::EXPECT)
        && !headers.contains_key(header::UPGRADE)
        && !headers.contains_key(&HTTP2_SETTINGS)
}

static HTTP2_SETTINGS: HeaderName = HeaderName::from_static("http2-settings");

/// Whether the client asked to close the connection after this request.
pub fn asks_to_close(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| has_token(v.as_bytes(), b"close"))
}

fn has_token(list: &[u8], token: &[u8]) -> bool {
    list.split(|&b| b == b',')
        .any(|t| t.trim_ascii().eq_ignore_ascii_case(token))
}

/// What the caller adds to every response before it is written (the request id, HSTS) and
/// logs: called once, with the final status.
pub type Seal<'a> = &'a mut (dyn FnMut(StatusCode, &mut HeaderMap) + Send);

/// The client's side of one request: its connection, whether it asked to close after this
/// response, and what seals the response.
pub struct ToClient<'a> {
    pub io: &'a mut TcpStream,
    pub close: bool,
    pub seal: Seal<'a>,
}

/// A request for an app, checked and rewritten, ready to send: what [`serve`] keeps across its
/// waits. The request itself is not among it (its head is already written out for the app),
/// so no request stays in the state of the connection's task while the app answers.
struct Ready {
    head: Vec<u8>,
    addr: SocketAddr,
    guard: proxy::InFlight,
    second_try: Option<SocketAddr>,
    seen: Seen,
}

/// What becomes of a request before anything is sent.
enum Start {
    Send(Ready),
    /// milkcrate's own answer (HTTPS only, an app not running, ...).
    Page(Box<Response<Body>>, Seen),
}

fn start(
    state: &Arc<RouterState>,
    req: Request<Body>,
    conn: &ConnInfo,
    route: &RouteRef,
    by_host: bool,
) -> Start {
    let (req, identity, seen) = proxy::begin(state, req, conn, route);
    match proxy::prepare(state, req, conn, route, &identity, by_host) {
        Ok(out) => Start::Send(Ready {
            head: request_head(&out.req, &out.forwarded, out.addr),
            addr: out.addr,
            guard: out.guard,
            second_try: out.second_try,
            seen,
        }),
        Err(page) => Start::Page(page, seen),
    }
}

/// Forwards `req` (for which [`takes`] said yes) to the app of `route` and writes the answer
/// to the client. Returns whether the connection may carry the client's next request.
///
/// The request is checked and its head for the app made before the returned future runs:
/// the future keeps only what it needs while the app answers (not the request, nor a second
/// copy of its arguments, as an `async fn` would).
pub fn serve<'a>(
    state: &'a Arc<RouterState>,
    req: Box<Request<Body>>,
    conn: &ConnInfo,
    (route, by_host): (RouteRef, bool),
    client: ToClient<'a>,
) -> impl Future<Output = bool> + use<'a> {
    use futures_util::future::Either;
    let head_only = req.method() == Method::HEAD;
    let Ready {
        head,
        addr,
        guard,
        second_try,
        seen,
    } = match start(state, *req, conn, &route, by_host) {
        Start::Send(ready) => ready,
        Start::Page(page, seen) => {
            return Either::Left(Box::pin(write_page(*page, seen, None, client, head_only)));
        }
    };
    Either::Right(async move {
        let deadline = tokio::time::Instant::now() + proxy::RESPONSE_TIMEOUT;
        // The layout of this state is chosen (see ARCHITECTURE.md, "The router's hot path"):
        // the first try's future lives in a block of its own, and what follows it is one
        // future made by a plain function from the outcome (moved there whole), so the try
        // and the answer's relay (or the rare failure path, boxed) share the same room.
        let outcome = {
            let sent = std::pin::pin!(exchange(
                &state.upstream.raw,
                addr,
                &head,
                head_only,
                deadline
            ));
            unless_gone(client.io, sent).await
        };
        let tried = Tried {
            state,
            route: &route,
            addr,
            second_try,
            head: &head,
            head_only,
            deadline,
        };
        tried.then(outcome, seen, guard, client).await
    })
}

/// A request tried once: what a failed try needs to recover (a second try at another task,
/// Swarm's, or milkcrate's page).
struct Tried<'a> {
    state: &'a Arc<RouterState>,
    route: &'a RouteRef,
    addr: SocketAddr,
    second_try: Option<SocketAddr>,
    head: &'a [u8],
    head_only: bool,
    deadline: tokio::time::Instant,
}

impl<'s> Tried<'s> {
    /// What follows the first try: the answer sent on, or the failure's recovery (boxed, as it
    /// is rare), or nothing when the client left (`None`).
    fn then<'c>(
        self,
        outcome: Option<Result<Reply, Failure>>,
        seen: Seen,
        guard: proxy::InFlight,
        client: ToClient<'c>,
    ) -> impl Future<Output = bool> + use<'s, 'c> {
        use futures_util::future::Either;
        match outcome {
            None => Either::Left(std::future::ready(false)),
            Some(Ok(reply)) => Either::Right(Either::Left(answer(
                self.state,
                self.route,
                reply,
                (seen, guard),
                client,
                self.head_only,
            ))),
            Some(Err(failure)) => Either::Right(Either::Right(Box::pin(
                self.recover(failure, seen, guard, client),
            ))),
        }
    }

    /// After the first try failed: the timeout's page (504), or a second try at another
    /// task when there is one, else the page of an app that is not answering (502).
    async fn recover(
        self,
        failure: Failure,
        seen: Seen,
        guard: proxy::InFlight,
        client: ToClient<'_>,
    ) -> bool {
        let Tried {
            state,
            route,
            addr,
            second_try,
            head,
            head_only,
            deadline,
        } = self;
        let (connect, error) = match failure {
            Failure::TimedOut => {
                let page = proxy::not_answering(state, route, true);
                return write_page(page, seen, Some(guard), client, head_only).await;
            }
            Failure::Failed { connect, error } => (connect, error),
        };
        tracing::debug!(app = route.app, %error, "upstream request failed");
        proxy::refused(route, addr, connect);
        let again = match second_try {
            Some(other) => {
                let retried = Box::pin(exchange(
                    &state.upstream.raw,
                    other,
                    head,
                    head_only,
                    deadline,
                ));
                match unless_gone(client.io, retried).await {
                    Some(r) => r.ok(),
                    None => return false,
                }
            }
            None => None,
        };
        match again {
            Some(reply) => answer(state, route, reply, (seen, guard), client, head_only).await,
            None => {
                let page = proxy::not_answering(state, route, false);
                write_page(page, seen, Some(guard), client, head_only).await
            }
        }
    }
}

/// Sends the app's answer on ([`relay`]). A chunked answer whose first bytes are not chunks is
/// a broken answer, told as one (502) before anything is written, not a connection that ends
/// without a word.
fn answer<'s, 'c>(
    state: &'s Arc<RouterState>,
    route: &RouteRef,
    reply: Reply,
    (seen, guard): (Seen, proxy::InFlight),
    client: ToClient<'c>,
    head_only: bool,
) -> impl Future<Output = bool> + use<'s, 'c> {
    use futures_util::future::Either;
    let mut chunks = Dechunk::default();
    let mut first = Vec::new();
    if reply.framing == Framing::Chunked
        && chunks
            .feed(&reply.buf[reply.head_len..], &mut first)
            .is_err()
    {
        tracing::debug!(app = route.app, "the app's chunked answer is not valid");
        drop(reply);
        let page = proxy::not_answering(state, route, false);
        return Either::Left(Box::pin(write_page(
            page,
            seen,
            Some(guard),
            client,
            head_only,
        )));
    }
    let done = seen.record(reply.status, false, Some(guard));
    Either::Right(relay(
        &state.upstream.raw,
        reply,
        (chunks, first),
        done,
        client,
    ))
}

/// The request line and headers as sent to the app (one write): the request's own headers
/// but those the router sets, then the router's.
fn request_head(req: &Request<Body>, forwarded: &proxy::Forwarded, addr: SocketAddr) -> Vec<u8> {
    let path = req.uri().path_and_query().map_or("/", |p| p.as_str());
    let mut out = Vec::with_capacity(384 + req.headers().len() * 48);
    out.extend_from_slice(req.method().as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in req.headers() {
        if !proxy::Forwarded::sets(name) {
            put_header(&mut out, name, value);
        }
    }
    for (name, value) in forwarded.lines(req.headers()) {
        put_header(&mut out, name, value);
    }
    if !req.headers().contains_key(header::HOST) {
        out.extend_from_slice(format!("host: {addr}\r\n").as_bytes());
    }
    out.extend_from_slice(b"\r\n");
    out
}

fn put_header(out: &mut Vec<u8>, name: &HeaderName, value: &HeaderValue) {
    out.extend_from_slice(name.as_str().as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

fn put_headers(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        put_header(out, name, value);
    }
}

/// An app's answer, its head read.
struct Reply {
    conn: TcpStream,
    /// The container's address (the pool's key for `conn`).
    addr: SocketAddr,
    /// What was read: the head, then the first bytes of the body.
    buf: Vec<u8>,
    head_len: usize,
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    /// The app keeps the connection open after this response (HTTP/1.1, no `close`).
    keeps: bool,
}

/// How a response body ends (RFC 9112 §6.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// No body: HEAD, 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Until the app closes the connection.
    Close,
}

enum Failure {
    TimedOut,
    /// No answer: `connect` when the container took no connection.
    Failed {
        connect: bool,
        error: String,
    },
}

/// Sends `head` to `addr` and reads the answer's head: on a pooled connection first, and once
/// more on a new one if the pooled one turns out closed before any byte of an answer (the
/// request has no body, so sending it again is safe).
async fn exchange(
    pool: &Pool,
    addr: SocketAddr,
    head: &[u8],
    head_only: bool,
    deadline: tokio::time::Instant,
) -> Result<Reply, Failure> {
    // Only a pooled connection that gave no byte of an answer is tried again (the request is
    // safe to repeat, [`takes`]); a timeout or a broken answer is the app's.
    if let Some(conn) = pool.take(addr) {
        match attempt(conn, addr, head, head_only, deadline).await {
            Ok(Some(reply)) => return Ok(reply),
            Ok(None) => {}
            Err(f) => return Err(f),
        }
    }
    // Boxed, as the pages above: a new connection is the rare case, and its future would
    // otherwise be part of every request's.
    let connect = Box::pin(tokio::time::timeout(
        CONNECT_TIMEOUT,
        TcpStream::connect(addr),
    ));
    let conn = match connect.await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            return Err(Failure::Failed {
                connect: true,
                error: e.to_string(),
            });
        }
        Err(_) => {
            return Err(Failure::Failed {
                connect: true,
                error: "connect timed out".into(),
            });
        }
    };
    let _ = conn.set_nodelay(true);
    match attempt(conn, addr, head, head_only, deadline).await {
        Ok(Some(reply)) => Ok(reply),
        Ok(None) => Err(Failure::Failed {
            connect: false,
            error: "the app closed the connection without answering".into(),
        }),
        Err(f) => Err(f),
    }
}

/// One try on one connection: `Ok(None)` when it closed (or failed) before any byte of an
/// answer came back.
async fn attempt(
    mut conn: TcpStream,
    addr: SocketAddr,
    head: &[u8],
    head_only: bool,
    deadline: tokio::time::Instant,
) -> Result<Option<Reply>, Failure> {
    if conn.write_all(head).await.is_err() {
        return Ok(None);
    }
    // Taken once the answer is there to read, so a request waiting on its app holds no buffer
    // (at a thousand connections most requests are waiting); enough for a small answer whole,
    // grown for a larger head.
    let mut buf = Vec::new();
    // Whether any byte came back (an informational answer's included).
    let mut received = false;
    loop {
        // `poll_read_ready`, not `readable()`: the latter's future is larger, and this state is
        // part of every request's.
        let ready = std::future::poll_fn(|cx| conn.poll_read_ready(cx));
        let read = match tokio::time::timeout_at(deadline, ready).await {
            Err(_) => return Err(Failure::TimedOut),
            Ok(Err(e)) => Err(e),
            Ok(Ok(())) => {
                if buf.capacity() == 0 {
                    buf = head_buffer();
                }
                if buf.capacity() - buf.len() < 1024 {
                    buf.reserve(buf.capacity());
                }
                match conn.try_read_buf(&mut buf) {
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if buf.is_empty() {
                            give_back(std::mem::take(&mut buf));
                        }
                        continue;
                    }
                    read => read,
                }
            }
        };
        match read {
            Ok(0) | Err(_) if !received => return Ok(None),
            Ok(0) => {
                return Err(Failure::Failed {
                    connect: false,
                    error: "the app closed the connection in the middle of its answer".into(),
                });
            }
            Err(e) => {
                return Err(Failure::Failed {
                    connect: false,
                    error: e.to_string(),
                });
            }
            Ok(_) => received = true,
        }
        match parse_response(&buf, head_only) {
            Ok(Parsed::Head(head)) => {
                return Ok(Some(Reply {
                    conn,
                    addr,
                    buf,
                    head_len: head.len,
                    status: head.status,
                    headers: head.headers,
                    framing: head.framing,
                    keeps: head.keeps,
                }));
            }
            // An informational answer (103 Early Hints, a stray 100) is not passed on.
            Ok(Parsed::Informational(n)) => {
                buf.drain(..n);
            }
            Ok(Parsed::Partial) if buf.len() < RESPONSE_HEAD_MAX => {}
            Ok(Parsed::Partial) => {
                return Err(Failure::Failed {
                    connect: false,
                    error: "the response head is too large".into(),
                });
            }
            Err(why) => {
                return Err(Failure::Failed {
                    connect: false,
                    error: why.into(),
                });
            }
        }
    }
}

struct Head {
    len: usize,
    status: StatusCode,
    headers: HeaderMap,
    framing: Framing,
    keeps: bool,
}

enum Parsed {
    Head(Head),
    Informational(usize),
    Partial,
}

fn parse_response(buf: &[u8], head_only: bool) -> Result<Parsed, &'static str> {
    let mut raw = [httparse::EMPTY_HEADER; RESPONSE_HEADERS_MAX];
    let mut resp = httparse::Response::new(&mut raw);
    let len = match resp.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(_) => return Err("the response head is not valid HTTP/1.1"),
    };
    let code = resp.code.ok_or("no status")?;
    let status = StatusCode::from_u16(code).map_err(|_| "an invalid status code")?;
    if status == StatusCode::SWITCHING_PROTOCOLS {
        return Err("an upgrade nobody asked for");
    }
    if status.is_informational() {
        return Ok(Parsed::Informational(len));
    }
    // Room for the request id, `Date` and HSTS.
    let mut headers = HeaderMap::with_capacity(resp.headers.len() + 3);
    for h in resp.headers.iter() {
        let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| "an invalid header")?;
        let value = HeaderValue::from_bytes(h.value).map_err(|_| "an invalid header")?;
        headers.append(name, value);
    }
    let chunked = headers
        .get_all(header::TRANSFER_ENCODING)
        .iter()
        .next_back()
        .map(|v| {
            v.as_bytes()
                .rsplit(|&b| b == b',')
                .next()
                .is_some_and(|t| t.trim_ascii().eq_ignore_ascii_case(b"chunked"))
        });
    let framing =
        if head_only || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            Framing::Empty
        } else {
            match chunked {
                Some(true) => Framing::Chunked,
                Some(false) => Framing::Close,
                None => match content_length(&headers)? {
                    Some(n) => Framing::Length(n),
                    None => Framing::Close,
                },
            }
        };
    let keeps = resp.version == Some(1)
        && !headers
            .get_all(header::CONNECTION)
            .iter()
            .any(|v| has_token(v.as_bytes(), b"close"));
    Ok(Parsed::Head(Head {
        len,
        status,
        headers,
        framing,
        keeps,
    }))
}

/// The one length every `Content-Length` states (repeats must agree, RFC 9110 §8.6).
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, &'static str> {
    let mut found = None;
    for v in headers.get_all(header::CONTENT_LENGTH) {
        for part in v.as_bytes().split(|&b| b == b',') {
            let part = part.trim_ascii();
            if part.is_empty() || !part.iter().all(u8::is_ascii_digit) || part.len() > 19 {
                return Err("an invalid Content-Length");
            }
            let n: u64 = std::str::from_utf8(part)
                .ok()
                .and_then(|s| s.parse().ok())
                .ok_or("an invalid Content-Length")?;
            if found.is_some_and(|f| f != n) {
                return Err("Content-Length values that differ");
            }
            found = Some(n);
        }
    }
    Ok(found)
}

/// Writes the app's answer to the client: the head (cleaned, sealed), then the body as it
/// comes. The app's connection goes back to the pool when the body ended where its framing said.
/// `chunks`: for a chunked answer, its decoder already fed the bytes read with the head, and
/// what it wrote for them.
///
/// The head is made before the returned future runs, and only what the body's relay needs is
/// kept in it (a function returning a block: an `async fn` would keep its arguments twice).
fn relay(
    pool: &Pool,
    reply: Reply,
    (mut chunks, decoded): (Dechunk, Vec<u8>),
    mut done: Done,
    client: ToClient<'_>,
) -> impl Future<Output = bool> {
    let Reply {
        mut conn,
        addr,
        mut buf,
        head_len,
        status,
        mut headers,
        framing,
        keeps,
    } = reply;
    let ToClient {
        io: client,
        close,
        seal,
    } = client;
    proxy::clean_response(&mut headers);
    seal(status, &mut headers);
    let rechunk = matches!(framing, Framing::Chunked | Framing::Close);
    if rechunk {
        headers.remove(header::CONTENT_LENGTH);
    }
    // The length the body is relayed by, stated once; the app's own header stays when it
    // already says exactly that (the usual case: no new value to allocate).
    if let Framing::Length(n) = framing
        && !states_length(&headers, n)
    {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(n));
    }
    let mut out = response_head(status, &headers, rechunk, close);
    let first = &buf[head_len..];
    let mut ended = false;
    let mut extra = false;
    let mut remaining = 0u64;
    match framing {
        Framing::Empty => {
            ended = true;
            extra = !first.is_empty();
        }
        Framing::Length(n) => {
            let take = first.len().min(usize::try_from(n).unwrap_or(usize::MAX));
            out.extend_from_slice(&first[..take]);
            done.sent(take);
            extra = first.len() > take;
            remaining = n - take as u64;
            ended = remaining == 0;
        }
        Framing::Chunked => {}
        Framing::Close => {
            if !first.is_empty() {
                put_chunk(&mut out, first);
                done.sent(first.len());
            }
        }
    }
    if framing == Framing::Chunked {
        out.extend_from_slice(&decoded);
        done.sent(chunks.take_data());
        ended = chunks.last_sent();
        extra = chunks.ended() && chunks.used() < first.len();
    }
    async move {
        if client.write_all(&out).await.is_err() {
            return false;
        }
        give_back(out);
        // The rest of the body, read and written as it comes.
        let mut out = Vec::new();
        while !ended {
            buf.clear();
            let want = match framing {
                Framing::Length(_) => usize::try_from(remaining)
                    .unwrap_or(RELAY_BUF)
                    .min(RELAY_BUF),
                _ => RELAY_BUF,
            };
            buf.reserve(want);
            let mut limited = (&mut conn).take(want as u64);
            let n = match unless_gone(client, std::pin::pin!(limited.read_buf(&mut buf))).await {
                Some(Ok(n)) => n,
                _ => return false,
            };
            let piece = &buf[..n];
            let written: &[u8] = match framing {
                Framing::Length(_) => {
                    if n == 0 {
                        // The app closed before the length it announced: the client cannot be
                        // told more than that the connection ends.
                        return false;
                    }
                    remaining -= n as u64;
                    done.sent(n);
                    ended = remaining == 0;
                    piece
                }
                Framing::Chunked => {
                    if n == 0 {
                        return false;
                    }
                    out.clear();
                    match chunks.feed(piece, &mut out) {
                        Ok(used) => {
                            done.sent(chunks.take_data());
                            ended = chunks.last_sent();
                            extra = chunks.ended() && used < n;
                        }
                        Err(()) => return false,
                    }
                    &out
                }
                Framing::Close => {
                    out.clear();
                    if n == 0 {
                        out.extend_from_slice(b"0\r\n\r\n");
                        ended = true;
                    } else {
                        put_chunk(&mut out, piece);
                        done.sent(n);
                    }
                    &out
                }
                Framing::Empty => unreachable!("an empty body has ended"),
            };
            if !written.is_empty() && client.write_all(written).await.is_err() {
                return false;
            }
        }
        drop(done);
        give_back(buf);
        // A chunked answer whose trailers have not all come yet is over for the client (it has
        // the last chunk) but not on this connection: it is closed rather than waited on.
        let clean = framing != Framing::Chunked || chunks.ended();
        if keeps && !extra && clean && framing != Framing::Close {
            pool.put(addr, conn);
        }
        !close
    }
}

/// Whether `headers` hold one `Content-Length`, the plain decimal of `n` (no sign, no leading
/// zero, no list).
fn states_length(headers: &HeaderMap, n: u64) -> bool {
    let mut values = headers.get_all(header::CONTENT_LENGTH).iter();
    let (Some(v), None) = (values.next(), values.next()) else {
        return false;
    };
    let v = v.as_bytes();
    v.iter().all(u8::is_ascii_digit)
        && (v.len() == 1 || v.first() != Some(&b'0'))
        && content_length(headers) == Ok(Some(n))
}

/// A response written by milkcrate itself (an app that is stopped, not answering…).
/// `inflight`: the app's in-flight guard when a request to it was under way, held until the
/// page is written.
async fn write_page(
    page: Response<Body>,
    seen: Seen,
    inflight: Option<proxy::InFlight>,
    client: ToClient<'_>,
    head_only: bool,
) -> bool {
    let ToClient {
        io: client,
        close,
        seal,
    } = client;
    let generated = page
        .extensions()
        .get::<super::observe::Generated>()
        .is_some();
    let (mut parts, body) = page.into_parts();
    let body = match body.collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => bytes::Bytes::new(),
    };
    seal(parts.status, &mut parts.headers);
    let mut done = seen.record(parts.status, generated, inflight);
    parts.headers.remove(header::TRANSFER_ENCODING);
    parts
        .headers
        .insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
    let mut out = response_head(parts.status, &parts.headers, false, close);
    if !head_only {
        out.extend_from_slice(&body);
        done.sent(body.len());
    }
    let ok = client.write_all(&out).await.is_ok();
    give_back(out);
    drop(done);
    ok && !close
}

/// `work`, unless the client goes away first (`None`): a client that closed its connection
/// frees it, its upstream connection and its connection slot at once, as with hyper, not when
/// the app next writes. A pipelined request is the client still being there.
fn unless_gone<F: Future + Unpin>(client: &TcpStream, work: F) -> UnlessGone<'_, F> {
    UnlessGone {
        client,
        work,
        here: false,
    }
}

/// The future of [`unless_gone`]: written out rather than a `select!` of two futures, so it
/// holds `work` (pinned by the caller) and a flag, not a second copy of `work` and a peek's state.
struct UnlessGone<'a, F> {
    client: &'a TcpStream,
    work: F,
    /// The client sent more (a pipelined request): it is there, no need to look again.
    here: bool,
}

impl<F: Future + Unpin> Future for UnlessGone<'_, F> {
    type Output = Option<F::Output>;

    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        use std::task::Poll;
        if let Poll::Ready(out) = std::pin::Pin::new(&mut self.work).poll(cx) {
            return Poll::Ready(Some(out));
        }
        if !self.here {
            // Nothing else reads the client while this runs, so this direction's one waker
            // slot is this future's.
            let mut probe = [0u8; 1];
            let mut probe = tokio::io::ReadBuf::new(&mut probe);
            match self.client.poll_peek(cx, &mut probe) {
                Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(None),
                Poll::Ready(Ok(_)) => self.here = true,
                Poll::Pending => {}
            }
        }
        Poll::Pending
    }
}

/// The status line and headers sent to the client, with a `Date` when the app sent none (as
/// hyper adds one), `Transfer-Encoding: chunked` when the body is re-chunked, and
/// `Connection: close` when this is the connection's last response.
fn response_head(status: StatusCode, headers: &HeaderMap, chunked: bool, close: bool) -> Vec<u8> {
    // From the thread's stash of head buffers (the relay gives it back once written).
    let mut out = head_buffer();
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("").as_bytes());
    out.extend_from_slice(b"\r\n");
    put_headers(&mut out, headers);
    if !headers.contains_key(header::DATE) {
        out.extend_from_slice(b"date: ");
        out.extend_from_slice(&http_date());
        out.extend_from_slice(b"\r\n");
    }
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    out.extend_from_slice(b"\r\n");
    out
}

/// The current time as an HTTP date, made once a second per thread.
fn http_date() -> [u8; 29] {
    use std::cell::Cell;
    thread_local! {
        static CACHED: Cell<(u64, [u8; 29])> = const { Cell::new((u64::MAX, [0; 29])) };
    }
    let now = std::time::SystemTime::now();
    let secs = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    CACHED.with(|c| {
        let (at, text) = c.get();
        if at == secs {
            return text;
        }
        let mut text = [b' '; 29];
        let formatted = httpdate::fmt_http_date(now);
        let n = formatted.len().min(29);
        text[..n].copy_from_slice(&formatted.as_bytes()[..n]);
        c.set((secs, text));
        text
    })
}

fn put_chunk(out: &mut Vec<u8>, data: &[u8]) {
    out.extend_from_slice(format!("{:x}\r\n", data.len()).as_bytes());
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// Decodes a chunked body as it arrives and writes it out again as chunks of its own (no
/// extensions; the last chunk without trailers).
#[derive(Debug, Default)]
struct Dechunk {
    state: ChunkState,
    /// Data bytes written since the last [`Dechunk::take_data`].
    data: usize,
    /// How many bytes of the last input belonged to the body.
    used: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum ChunkState {
    /// Reading a chunk's size (`digits` so far); `ext`: past it, in an extension.
    #[default]
    SizeStart,
    Size {
        n: u64,
        ext: bool,
    },
    SizeLf {
        n: u64,
    },
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: trailer lines, skipped; `empty`: the line so far is empty.
    Trailer {
        empty: bool,
    },
    TrailerLf {
        empty: bool,
    },
    Ended,
}

impl Dechunk {
    /// The body has ended, trailers and all.
    fn ended(&self) -> bool {
        self.state == ChunkState::Ended
    }

    /// The last chunk has been written out: the client has the whole body, even if the app's
    /// trailers are still to come.
    fn last_sent(&self) -> bool {
        matches!(
            self.state,
            ChunkState::Trailer { .. } | ChunkState::TrailerLf { .. } | ChunkState::Ended
        )
    }

    /// How many bytes of the last input belonged to the body.
    fn used(&self) -> usize {
        self.used
    }

    fn take_data(&mut self) -> usize {
        std::mem::take(&mut self.data)
    }

    /// Feeds `input`, appending the re-encoded body to `out`; returns how many bytes belonged
    /// to the body (fewer than given only once it has ended). `Err`: not a chunked body.
    fn feed(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ()> {
        let used = self.decode(input, out)?;
        self.used = used;
        Ok(used)
    }

    fn decode(&mut self, input: &[u8], out: &mut Vec<u8>) -> Result<usize, ()> {
        use ChunkState::*;
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                SizeStart => {
                    let d = hex_digit(b).ok_or(())?;
                    Size { n: d, ext: false }
                }
                Size { n, ext: false } if hex_digit(b).is_some() => {
                    let d = hex_digit(b).ok_or(())?;
                    let n = n.checked_mul(16).and_then(|n| n.checked_add(d)).ok_or(())?;
                    Size { n, ext: false }
                }
                Size { n, .. } if b == b'\r' => SizeLf { n },
                Size { n, .. } if b == b'\n' => self.after_size(n, out),
                Size { n, .. } if b == b';' || b == b' ' || b == b'\t' => Size { n, ext: true },
                Size { n, ext: true } => Size { n, ext: true },
                Size { .. } => return Err(()),
                SizeLf { n } if b == b'\n' => self.after_size(n, out),
                SizeLf { .. } => return Err(()),
                Data(n) => {
                    let take = (input.len() - i).min(usize::try_from(n).unwrap_or(usize::MAX));
                    out.extend_from_slice(&input[i..i + take]);
                    self.data += take;
                    i += take;
                    let left = n - take as u64;
                    self.state = if left == 0 {
                        out.extend_from_slice(b"\r\n");
                        DataCr
                    } else {
                        Data(left)
                    };
                    continue;
                }
                DataCr if b == b'\r' => DataLf,
                DataCr | DataLf if b == b'\n' => SizeStart,
                DataCr | DataLf => return Err(()),
                Trailer { empty } if b == b'\r' => TrailerLf { empty },
                Trailer { empty } | TrailerLf { empty } if b == b'\n' => {
                    if empty {
                        i += 1;
                        self.state = Ended;
                        return Ok(i);
                    }
                    Trailer { empty: true }
                }
                Trailer { .. } => Trailer { empty: false },
                TrailerLf { .. } => return Err(()),
                Ended => return Ok(i),
            };
            i += 1;
        }
        Ok(i)
    }

    /// A size line has ended: data follows, or (size 0) the last chunk and its trailers.
    fn after_size(&mut self, n: u64, out: &mut Vec<u8>) -> ChunkState {
        if n == 0 {
            out.extend_from_slice(b"0\r\n\r\n");
            ChunkState::Trailer { empty: true }
        } else {
            out.extend_from_slice(format!("{n:x}\r\n").as_bytes());
            ChunkState::Data(n)
        }
    }
}

fn hex_digit(b: u8) -> Option<u64> {
    (b as char).to_digit(16).map(u64::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_one_plain_content_length_is_kept_as_the_app_sent_it() {
        let with = |values: &[&str]| {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONTENT_LENGTH, HeaderValue::from_str(v).unwrap());
            }
            h
        };
        assert!(states_length(&with(&["100"]), 100));
        assert!(states_length(&with(&["0"]), 0));
        assert!(!states_length(&with(&[]), 100));
        assert!(!states_length(&with(&["0100"]), 100));
        assert!(!states_length(&with(&["+100"]), 100));
        assert!(!states_length(&with(&["100, 100"]), 100));
        assert!(!states_length(&with(&["100", "100"]), 100));
        assert!(!states_length(&with(&["99"]), 100));
    }

    /// The re-encoded body, its data bytes and whether it ended.
    fn dechunk(pieces: &[&[u8]]) -> Result<(Vec<u8>, usize, bool), ()> {
        let mut d = Dechunk::default();
        let mut out = Vec::new();
        let mut data = 0;
        for p in pieces {
            d.feed(p, &mut out)?;
            data += d.take_data();
        }
        Ok((out, data, d.ended()))
    }

    #[test]
    fn chunked_bodies_are_re_encoded_without_extensions_or_trailers() {
        let (out, data, ended) =
            dechunk(&[b"5;name=x\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: 1\r\n\r\n"]).unwrap();
        assert_eq!(out, b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n");
        assert_eq!(data, 11);
        assert!(ended);
        // The same bytes one at a time.
        let body = b"A\r\n0123456789\r\n0\r\n\r\n";
        let pieces: Vec<&[u8]> = body.chunks(1).collect();
        let (out, data, ended) = dechunk(&pieces).unwrap();
        assert_eq!(out, b"a\r\n0123456789\r\n0\r\n\r\n");
        assert_eq!((data, ended), (10, true));
        // Not ended yet.
        let (_, _, ended) = dechunk(&[b"5\r\nhel"]).unwrap();
        assert!(!ended);
        // Bytes after the end are not the body's.
        let mut d = Dechunk::default();
        let mut out = Vec::new();
        assert_eq!(d.feed(b"0\r\n\r\nHTTP/1.1", &mut out), Ok(5));
        // Not chunked at all, or a size that overflows.
        assert!(dechunk(&[b"zz\r\n"]).is_err());
        assert!(dechunk(&[b"5\r\nhelloX\r\n"]).is_err());
        assert!(dechunk(&[b"fffffffffffffffffff\r\n"]).is_err());
    }

    #[test]
    fn response_framing_follows_rfc_9112() {
        let framing = |head: &str, head_only: bool| match parse_response(head.as_bytes(), head_only)
        {
            Ok(Parsed::Head(h)) => Ok((h.framing, h.keeps)),
            Ok(Parsed::Informational(_)) => Err("informational"),
            Ok(Parsed::Partial) => Err("partial"),
            Err(e) => Err(e),
        };
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", false),
            Ok((Framing::Length(5), true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\nContent-Length: 5, 5\r\n\r\n", false),
            Ok((Framing::Length(5), true))
        );
        assert!(
            framing(
                "HTTP/1.1 200 OK\r\ncontent-length: 5\r\ncontent-length: 6\r\n\r\n",
                false
            )
            .is_err()
        );
        assert!(framing("HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n", false).is_err());
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\ncontent-length: 5\r\n\r\n",
                false
            ),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ntransfer-encoding: gzip\r\n\r\n", false),
            Ok((Framing::Close, true))
        );
        assert_eq!(
            framing("HTTP/1.0 200 OK\r\n\r\n", false),
            Ok((Framing::Close, false))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 200 OK\r\nconnection: Close\r\ncontent-length: 0\r\n\r\n",
                false
            ),
            Ok((Framing::Length(0), false))
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n", true),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            framing(
                "HTTP/1.1 304 Not Modified\r\ncontent-length: 5\r\n\r\n",
                false
            ),
            Ok((Framing::Empty, true))
        );
        assert_eq!(
            framing("HTTP/1.1 103 Early Hints\r\n\r\n", false),
            Err("informational")
        );
        assert_eq!(
            framing("HTTP/1.1 200 OK\r\ncontent-le", false),
            Err("partial")
        );
        assert!(framing("HTTP/1.1 101 Switching Protocols\r\n\r\n", false).is_err());
    }

    /// The forwarded headers replace the client's on both ways of sending, and both send the
    /// same ones: the head written here, and the map hyper's path sends.
    #[test]
    fn forwarded_headers_replace_the_clients_the_same_way_on_both_paths() {
        let spoofed = [
            ("host", "app.example"),
            ("X-Forwarded-For", "6.6.6.6"),
            ("x-real-ip", "6.6.6.6"),
            ("X-Forwarded-Host", "evil.example"),
            ("x-forwarded-proto", "https"),
            ("x-forwarded-prefix", "/evil"),
            ("user-agent", "t"),
        ];
        let mut req = Request::new(Body::empty());
        for (name, value) in spoofed {
            req.headers_mut().append(
                HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_static(value),
            );
        }
        let forwarded = || proxy::Forwarded {
            for_: Some(HeaderValue::from_static("10.0.0.1")),
            proto: HeaderValue::from_static("http"),
            host: true,
            prefix: None,
            real_ip: Some(HeaderValue::from_static("10.0.0.2")),
        };
        let head = request_head(&req, &forwarded(), "10.1.1.1:80".parse().unwrap());
        let head = String::from_utf8(head).unwrap();
        let mut sent: Vec<String> = head
            .lines()
            .skip(1)
            .filter(|l| !l.is_empty())
            .map(|l| l.to_ascii_lowercase())
            .collect();
        sent.sort();
        let mut map = req.headers().clone();
        forwarded().apply(&mut map);
        let mut mapped: Vec<String> = map
            .iter()
            .map(|(n, v)| format!("{n}: {}", v.to_str().unwrap()).to_ascii_lowercase())
            .collect();
        mapped.sort();
        let want = [
            "host: app.example",
            "user-agent: t",
            "x-forwarded-for: 10.0.0.1",
            "x-forwarded-host: app.example",
            "x-forwarded-proto: http",
            "x-real-ip: 10.0.0.2",
        ];
        assert_eq!(sent, want, "{head}");
        assert_eq!(mapped, want);
    }

    #[test]
    fn only_bodyless_plain_requests_take_this_path() {
        let h = |pairs: &[(&str, &str)]| {
            let mut m = HeaderMap::new();
            for (k, v) in pairs {
                m.append(
                    HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    HeaderValue::from_str(v).unwrap(),
                );
            }
            m
        };
        assert!(takes(&Method::GET, &h(&[("host", "x")])));
        assert!(takes(&Method::HEAD, &h(&[("content-length", "0")])));
        assert!(!takes(&Method::POST, &h(&[("content-length", "3")])));
        assert!(!takes(
            &Method::GET,
            &h(&[("content-length", "0"), ("content-length", "0")])
        ));
        assert!(!takes(
            &Method::POST,
            &h(&[("transfer-encoding", "chunked")])
        ));
        assert!(!takes(&Method::GET, &h(&[("upgrade", "websocket")])));
        assert!(!takes(&Method::PUT, &h(&[("expect", "100-continue")])));
        assert!(!takes(&Method::CONNECT, &h(&[])));
        assert!(asks_to_close(&h(&[("connection", "keep-alive, Close")])));
        assert!(!asks_to_close(&h(&[("connection", "closed")])));
    }
}
