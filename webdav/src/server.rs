//! The HTTP side: connections (plain or TLS), their limits, and the checks every request
//! passes before `dav_server` or the HTML listing answers it.
//!
//! Limits, so a slow or hostile client cannot stall others or exhaust memory:
//! - at most `max_connections` connections; when full, the connection idle the longest (no
//!   request in flight, perhaps half a request head) is closed to make room, so a flood of
//!   idle sockets never locks out a real client;
//! - a request head must arrive within `header_timeout` and fit in 64 KiB;
//! - a connection with nothing moving for `idle_timeout` is closed (twice that while a
//!   response is stuck on a client that does not read);
//! - request bodies (only PROPFIND has one) are refused past `max_body` bytes;
//! - at most `max_ranges` byte ranges per GET; `Depth: infinity` is refused (403).

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use backup_platform::rofs::ReadOnlyFs;
use bytes::Bytes;
use dav_server::body::Body;
use dav_server::{DavHandler, DavMethodSet};
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use percent_encoding::percent_decode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpListener;
use tokio::sync::{watch, Notify, Semaphore};

use crate::auth::BasicAuth;
use crate::davfs::{blocking, segments, DavTree, LinkScope, Served, Tree};
use crate::listing;

/// How the server behaves; [`Config::default`] is what `backup-tool serve` uses.
#[derive(Clone)]
pub struct Config {
    /// Required credentials, or `None` to serve anyone who can connect.
    pub auth: Option<BasicAuth>,
    /// TLS, or `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
    pub max_connections: usize,
    pub header_timeout: Duration,
    pub idle_timeout: Duration,
    pub max_ranges: usize,
    pub max_body: usize,
    /// Bytes read from disk per step of a download.
    pub read_buf_size: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            auth: None,
            tls: None,
            max_connections: 512,
            header_timeout: Duration::from_secs(20),
            idle_timeout: Duration::from_secs(60),
            max_ranges: 16,
            max_body: 64 * 1024,
            read_buf_size: 1024 * 1024,
        }
    }
}

type RespBody = UnsyncBoxBody<Bytes, io::Error>;

/// Serves one tree over HTTP/WebDAV.
pub struct Server<F: ReadOnlyFs> {
    tree: Arc<Tree<F>>,
    dav: DavHandler,
    cfg: Config,
    started: Instant,
}

/// One live connection, as the limits see it.
struct ConnState {
    /// Milliseconds since the server started, at the last byte read or written.
    last: AtomicU64,
    in_flight: AtomicUsize,
    evicted: AtomicBool,
    evict: Notify,
}

#[derive(Default)]
struct Registry {
    conns: Mutex<HashMap<u64, Arc<ConnState>>>,
    next: AtomicU64,
}

impl Registry {
    fn add(&self, state: Arc<ConnState>) -> u64 {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(id, state);
        id
    }
    fn remove(&self, id: u64) {
        self.conns
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
    /// Asks the connection idle the longest to close; false when every one is busy.
    fn evict_idlest(&self) -> bool {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let victim = conns
            .values()
            .filter(|c| {
                c.in_flight.load(Ordering::Relaxed) == 0 && !c.evicted.load(Ordering::Relaxed)
            })
            .min_by_key(|c| c.last.load(Ordering::Relaxed));
        match victim {
            Some(c) => {
                c.evicted.store(true, Ordering::Relaxed);
                c.evict.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counts a request as in flight until its response body is dropped.
struct InFlight(Arc<ConnState>);
impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A stream that notes when bytes last moved.
struct Tracked<I> {
    inner: I,
    state: Arc<ConnState>,
    started: Instant,
}

impl<I> Tracked<I> {
    fn touch(&self) {
        self.state
            .last
            .store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

impl<I: AsyncRead + Unpin> AsyncRead for Tracked<I> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        if matches!(r, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            self.touch();
        }
        r
    }
}

impl<I: AsyncWrite + Unpin> AsyncWrite for Tracked<I> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write_vectored(cx, bufs);
        if matches!(r, Poll::Ready(Ok(n)) if n > 0) {
            self.touch();
        }
        r
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

fn simple(status: StatusCode, text: &str) -> Response<Body> {
    let mut r = Response::new(Body::from(if text.is_empty() {
        String::new()
    } else {
        format!("{text}\n")
    }));
    *r.status_mut() = status;
    if !text.is_empty() {
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    r
}

fn closing(mut r: Response<Body>) -> Response<Body> {
    r.headers_mut()
        .insert(header::CONNECTION, HeaderValue::from_static("close"));
    r
}

const ALLOW: &str = "OPTIONS, GET, HEAD, PROPFIND";

/// Checks the raw request path: printable ASCII, and no component that is (or decodes to)
/// `.`/`..`, holds a `/` or NUL once decoded, or (on Windows) a backslash or colon.
fn path_ok(raw: &str) -> bool {
    if !raw.starts_with('/') || raw.bytes().any(|b| !(32..=126).contains(&b)) {
        return false;
    }
    raw.split('/').all(|seg| {
        let d: Vec<u8> = percent_decode(seg.as_bytes()).collect();
        d != b"."
            && d != b".."
            && !d.contains(&b'/')
            && !d.contains(&0)
            && !(cfg!(windows) && d.iter().any(|&b| b == b'\\' || b == b':'))
    })
}

impl<F: ReadOnlyFs> Server<F> {
    pub fn new(fs: Arc<F>, scope: LinkScope, cfg: Config) -> Arc<Self> {
        let tree = Arc::new(Tree::new(fs, scope));
        let dav = DavHandler::builder()
            .filesystem(Box::new(DavTree::new(Arc::clone(&tree))))
            .methods(DavMethodSet::WEBDAV_RO)
            .autoindex(false)
            .hide_symlinks(false)
            .read_buf_size(cfg.read_buf_size)
            .build_handler();
        Arc::new(Server {
            tree,
            dav,
            cfg,
            started: Instant::now(),
        })
    }

    /// Answers one request.
    pub async fn respond(&self, req: Request<Incoming>) -> Response<Body> {
        if let Some(auth) = &self.cfg.auth {
            if !auth.accepts(req.headers()) {
                let mut r = simple(StatusCode::UNAUTHORIZED, "credentials required");
                r.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Basic realm=\"backup\", charset=\"UTF-8\""),
                );
                return r;
            }
        }
        let method = req.method().clone();
        let propfind = method.as_str() == "PROPFIND";
        if !(method == Method::GET
            || method == Method::HEAD
            || method == Method::OPTIONS
            || propfind)
        {
            // Every write method (PUT, DELETE, MKCOL, MOVE, COPY, PROPPATCH, LOCK, UNLOCK, ...).
            // Closing spares reading an upload nobody will store.
            let mut r = simple(
                StatusCode::METHOD_NOT_ALLOWED,
                "read-only: this backup cannot be changed",
            );
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            return closing(r);
        }
        let too_big = req
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.parse::<u64>().ok())
            .is_some_and(|n| n > self.cfg.max_body as u64);
        if too_big {
            return closing(simple(
                StatusCode::PAYLOAD_TOO_LARGE,
                "request body too large",
            ));
        }
        let raw = req.uri().path().to_owned();
        let star = method == Method::OPTIONS && raw == "*";
        if !star && !path_ok(&raw) {
            return simple(StatusCode::BAD_REQUEST, "bad path");
        }
        if propfind {
            let infinite = req
                .headers()
                .get("depth")
                .is_some_and(|d| d.as_bytes().eq_ignore_ascii_case(b"infinity"));
            if infinite {
                let mut r = Response::new(Body::from(
                    "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<D:error xmlns:D=\"DAV:\"><D:propfind-finite-depth/></D:error>\n",
                ));
                *r.status_mut() = StatusCode::FORBIDDEN;
                r.headers_mut().insert(
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("application/xml; charset=utf-8"),
                );
                return r;
            }
        }
        if method == Method::GET || method == Method::HEAD {
            if let Some(range) = req.headers().get(header::RANGE) {
                let n = range.as_bytes().iter().filter(|&&b| b == b',').count() + 1;
                if n > self.cfg.max_ranges || range.len() > 4096 {
                    return simple(StatusCode::RANGE_NOT_SATISFIABLE, "too many ranges");
                }
            }
            if let Some(r) = self.folder_page(&raw, method == Method::HEAD).await {
                return r;
            }
        }
        let options = method == Method::OPTIONS;
        let mut r = self.dav.handle(req).await;
        if options && r.status().is_success() {
            // dav_server leaves GET out for folders; they have HTML pages here.
            r.headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static(ALLOW));
            // Class 1 only: no locking. dav_server claims classes 2 and 3 whatever the lock
            // system; a client told "2" may mount read-write and fail later (macOS Finder
            // mounts a class-1 share read-only).
            r.headers_mut().insert("dav", HeaderValue::from_static("1"));
        }
        r
    }

    /// A folder asked for with GET or HEAD: its HTML page (or a redirect to the form with a
    /// trailing slash, so relative links work). `None` when the path is not a folder.
    async fn folder_page(&self, raw: &str, head: bool) -> Option<Response<Body>> {
        let decoded: Vec<u8> = percent_decode(raw.as_bytes()).collect();
        let segs = segments(&decoded).ok()?;
        let tree = Arc::clone(&self.tree);
        let segs2 = segs.clone();
        let listed = blocking(move || {
            let st = tree.state();
            match tree.resolve(&st, &segs2) {
                Ok(Served::Dir(_)) => Ok(Some(tree.list(&st, &segs2).map(|(_, e)| e))),
                _ => Ok(None),
            }
        })
        .await
        .ok()??;
        if !raw.ends_with('/') {
            let mut r = simple(StatusCode::MOVED_PERMANENTLY, "");
            let loc = format!("{raw}/");
            if let Ok(v) = HeaderValue::from_str(&loc) {
                r.headers_mut().insert(header::LOCATION, v);
            }
            return Some(r);
        }
        let entries = match listed {
            Ok(e) => e,
            Err(e) => {
                tracing::warn!("cannot list {raw}: {e}");
                return Some(simple(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "cannot list this folder",
                ));
            }
        };
        let page = listing::render(&segs, entries);
        let len = page.len();
        let mut r = Response::new(if head {
            Body::empty()
        } else {
            Body::from(page)
        });
        let h = r.headers_mut();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from(len));
        // The tree changes as increments land: a listing is never reused unchecked.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        Some(r)
    }

    /// Accepts connections on `listener` until `shutdown` resolves, then lets the requests in
    /// flight finish (for up to five seconds) and returns.
    pub async fn run(
        self: Arc<Self>,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let registry = Arc::new(Registry::default());
        let slots = Arc::new(Semaphore::new(self.cfg.max_connections.max(1)));
        let (stop_tx, stop_rx) = watch::channel(false);
        let tls = self.cfg.tls.clone().map(tokio_rustls::TlsAcceptor::from);
        tokio::pin!(shutdown);
        loop {
            let (tcp, _peer) = tokio::select! {
                _ = &mut shutdown => break,
                r = listener.accept() => match r {
                    Ok(c) => c,
                    Err(e) => {
                        // Out of file descriptors and the like: back off instead of spinning.
                        tracing::warn!("accept: {e}");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
            };
            let _ = tcp.set_nodelay(true);
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(p) => p,
                Err(_) => {
                    // Full: close the idlest connection (it has no request in flight, so
                    // nothing is lost) and take its slot; when every connection is busy,
                    // this one is dropped.
                    if !registry.evict_idlest() {
                        drop(tcp);
                        continue;
                    }
                    let wait = Arc::clone(&slots).acquire_owned();
                    match tokio::time::timeout(Duration::from_secs(1), wait).await {
                        Ok(Ok(p)) => p,
                        _ => {
                            drop(tcp);
                            continue;
                        }
                    }
                }
            };
            let server = Arc::clone(&self);
            let registry = Arc::clone(&registry);
            let stop = stop_rx.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                let _permit = permit;
                let state = Arc::new(ConnState {
                    last: AtomicU64::new(server.started.elapsed().as_millis() as u64),
                    in_flight: AtomicUsize::new(0),
                    evicted: AtomicBool::new(false),
                    evict: Notify::new(),
                });
                let id = registry.add(Arc::clone(&state));
                match tls {
                    None => server.serve_conn(tcp, state, stop).await,
                    Some(acc) => {
                        match tokio::time::timeout(server.cfg.header_timeout, acc.accept(tcp)).await
                        {
                            Ok(Ok(s)) => server.serve_conn(s, state, stop).await,
                            Ok(Err(e)) => tracing::debug!("TLS handshake: {e}"),
                            Err(_) => tracing::debug!("TLS handshake timed out"),
                        }
                    }
                }
                registry.remove(id);
            });
        }
        drop(listener);
        let _ = stop_tx.send(true);
        // Every connection holds a slot: when all slots are back, all connections are done.
        let all = u32::try_from(self.cfg.max_connections.max(1)).unwrap_or(u32::MAX);
        let _ = tokio::time::timeout(Duration::from_secs(6), slots.acquire_many(all)).await;
        Ok(())
    }

    async fn serve_conn<I>(
        self: &Arc<Self>,
        io: I,
        state: Arc<ConnState>,
        mut stop: watch::Receiver<bool>,
    ) where
        I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    {
        let io = Tracked {
            inner: io,
            state: Arc::clone(&state),
            started: self.started,
        };
        let server = Arc::clone(self);
        let st = Arc::clone(&state);
        let svc = service_fn(move |req: Request<Incoming>| {
            let server = Arc::clone(&server);
            let st = Arc::clone(&st);
            async move {
                st.in_flight.fetch_add(1, Ordering::Relaxed);
                let guard = InFlight(st);
                let resp = server.respond(req).await;
                let resp: Response<RespBody> = resp.map(move |b| {
                    b.map_frame(move |f| {
                        let _ = &guard;
                        f
                    })
                    .boxed_unsync()
                });
                Ok::<_, Infallible>(resp)
            }
        });
        let mut builder = hyper::server::conn::http1::Builder::new();
        builder
            .timer(TokioTimer::new())
            .header_read_timeout(self.cfg.header_timeout)
            .max_buf_size(64 * 1024)
            .keep_alive(true);
        let conn = builder.serve_connection(TokioIo::new(io), svc);
        tokio::pin!(conn);
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        let mut closing_since: Option<Instant> = None;
        let idle_ms = self.cfg.idle_timeout.as_millis() as u64;
        loop {
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("connection: {e}");
                    }
                    break;
                }
                // Chosen to make room: nothing is in flight, so just close.
                _ = state.evict.notified() => break,
                _ = stop.changed(), if closing_since.is_none() => {
                    conn.as_mut().graceful_shutdown();
                    closing_since = Some(Instant::now());
                }
                _ = tick.tick() => {
                    let now = self.started.elapsed().as_millis() as u64;
                    let quiet = now.saturating_sub(state.last.load(Ordering::Relaxed));
                    let busy = state.in_flight.load(Ordering::Relaxed) > 0;
                    match closing_since {
                        // A response the client stopped reading, or a close that hangs.
                        Some(t) if t.elapsed() > Duration::from_secs(5) => break,
                        Some(_) => {}
                        None if busy && quiet > 2 * idle_ms => break,
                        None if !busy && quiet > idle_ms => {
                            conn.as_mut().graceful_shutdown();
                            closing_since = Some(Instant::now());
                        }
                        None => {}
                    }
                }
            }
        }
    }
}
