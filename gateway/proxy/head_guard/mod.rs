//! A guard in front of Pingora's HTTP/1 request-head reader.
//!
//! Pingora (`read_request` in pingora-core's `protocols/http/v1/server.rs`)
//! accepts heads up to 1 MiB, parses its whole buffer again after every
//! read (a head trickled in small pieces costs quadratic CPU), quietly
//! percent-escapes a request target that contains spaces, and bounds each
//! read of a head but not the whole head. [`HeadGuard`] wraps a downstream
//! connection's byte stream before Pingora sees it and, for every request
//! head on the connection:
//!
//! - holds the bytes it reads until the head is complete or 4 KiB are held,
//!   so that Pingora sees a head in at most `max_head_bytes / 4 KiB + 1`
//!   reads, whatever the pieces it came in;
//! - answers 431 to a head larger than `max_head_bytes`, 408 to one not
//!   complete `timeout` after its first byte (Envoy's
//!   `request_headers_timeout`: idle keep-alive time does not count), and
//!   400 to one whose request line is not `method SP target SP version`;
//! - learns from the proxy ([`head_read`]) how the request's body is framed,
//!   which tells where the next head begins.
//!
//! It looks at bytes only: Pingora still parses the heads.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{ready, Context, Poll};
use std::time::Duration;

use async_trait::async_trait;
use pingora::protocols::raw_connect::ProxyDigest;
use pingora::protocols::tls::{SslDigest, TlsRef};
use pingora::protocols::{
    GetProxyDigest, GetSocketDigest, GetTimingDigest, Peek, Shutdown, SocketDigest, Ssl, Stream,
    TimingDigest, UniqueID, UniqueIDType, ALPN, IO,
};
use pingora::proxy::Session;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::Sleep;

/// Held bytes are handed to the reader once this many are held, so that
/// Pingora's reader, which parses everything again after each read, reads
/// a large head in few pieces.
const RELEASE_AT: usize = 4 * 1024;

/// The most one read of the connection brings while a head is received.
const READ_CHUNK: usize = 4 * 1024;

/// What the guard may hold: less than `RELEASE_AT`, and then one read.
const HOLD_CAPACITY: usize = RELEASE_AT + READ_CHUNK;

/// The limits on each request head of a connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeadLimits {
    /// The most bytes a head may have before the empty line that ends it.
    pub max_head_bytes: usize,
    /// How long a head may take from its first byte to its last.
    pub timeout: Duration,
}

/// How the body of a request whose head was read is delimited on the
/// connection, as the proxy understood the head.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body: the next bytes are the next request's head.
    None,
    /// A body of this many bytes, then the next request's head.
    Length(u64),
    /// Anything else (chunked, an upgrade, a body delimited by the end of
    /// the connection): the guard passes the rest of the connection through
    /// unchecked. The proxy closes such connections after its answer, so no
    /// later head goes unchecked.
    Unframed,
}

/// Tells the guard of the session's connection, if any, how the body of the
/// request whose head Pingora just parsed is framed. Call it from
/// `early_request_filter`, once per request (the guard takes the framings
/// in the order of the heads); without it the guard checks only the first
/// head of a connection. Does nothing on connections without a guard
/// (HTTP/2, tests).
pub fn head_read(session: &Session, body: Framing) {
    if let Some(guard) = session.stream().and_then(guard_of) {
        guard.framed(body);
    }
}

/// Tells the guard that the session's request was answered (its whole
/// response written): call it from `logging`, once per request. Until
/// every head it handed over is answered, a refused head is not answered
/// by the guard (it would land inside a response being written); the
/// connection is only closed.
pub fn head_answered(session: &Session) {
    if let Some(guard) = session.stream().and_then(guard_of) {
        guard.answered.fetch_add(1, Ordering::Relaxed);
    }
}

/// The guard of a connection, when it has one.
fn guard_of(stream: &Stream) -> Option<&HeadGuard> {
    // The boxed connection, not the box, is the concrete type.
    let io: &dyn IO = &**stream;
    io.as_any().downcast_ref()
}

/// Guards the request heads of an HTTP/1 connection; HTTP/2 connections
/// (ALPN h2) carry frames, not heads, and are returned as they are.
pub fn wrap(stream: Stream, limits: HeadLimits) -> Stream {
    if matches!(stream.selected_alpn_proto(), Some(ALPN::H2)) {
        return stream;
    }
    Box::new(HeadGuard::new(stream, limits))
}

/// Why a head was refused; the connection closes after the answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rejection {
    TooLarge,
    TimedOut,
    BadRequestLine,
}

impl Rejection {
    fn response(self) -> &'static [u8] {
        match self {
            Rejection::TooLarge => {
                b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Rejection::TimedOut => {
                b"HTTP/1.1 408 Request Timeout\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
            Rejection::BadRequestLine => {
                b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            }
        }
    }

    /// The label of `claimgate_rejections_total`, as the proxy's own
    /// refusals of the same kind are counted.
    fn reason(self) -> &'static str {
        match self {
            Rejection::TooLarge => "headers_too_large",
            Rejection::TimedOut => "request_header_timeout",
            Rejection::BadRequestLine => "bad_request",
        }
    }

    fn error(self, limits: &HeadLimits) -> io::Error {
        match self {
            Rejection::TooLarge => io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "request head larger than {} bytes (maxRequestHeadersKb)",
                    limits.max_head_bytes
                ),
            ),
            Rejection::TimedOut => io::Error::new(
                io::ErrorKind::TimedOut,
                format!(
                    "request head not complete within {:?} (requestHeadersTimeout)",
                    limits.timeout
                ),
            ),
            Rejection::BadRequestLine => {
                io::Error::new(io::ErrorKind::InvalidData, "malformed request line")
            }
        }
    }
}

/// Where the scan of a head stands, after the bytes seen so far.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum At {
    /// At the start of a line before the request line: empty lines there
    /// are skipped, as httparse does (RFC 9112 §2.2).
    #[default]
    LineStart,
    /// After a CR that began an empty line before the request line.
    LeadingCr,
    Method,
    /// After the SP that ends the method.
    TargetStart,
    Target,
    /// Within the version, at this index of `VERSION`.
    Version(usize),
    /// After the CR that ends the request line.
    VersionCr,
    /// At the start of a line after the request line.
    FieldStart,
    /// After a CR that began a line after the request line.
    FieldCr,
    /// Within a header field line.
    Field,
}

/// HTTP-version (RFC 9112 §2.3), `#` standing for a digit.
const VERSION: &[u8; 8] = b"HTTP/#.#";

/// Where a head ends and whether its request line is well-formed, from
/// its bytes in the pieces they arrive in, each byte looked at once.
#[derive(Debug, Default)]
struct HeadScan {
    /// Bytes of the head scanned so far.
    len: usize,
    at: At,
}

/// What the next byte of a head does to its scan.
enum Step {
    To(At),
    /// The head ends with this byte; its empty last line was this long.
    End(usize),
}

impl HeadScan {
    fn started(&self) -> bool {
        self.len > 0
    }

    /// Scans the next bytes of the head. Once its end is among them,
    /// returns how many of them belong to the head.
    fn scan(&mut self, bytes: &[u8], max_head_bytes: usize) -> Result<Option<usize>, Rejection> {
        let mut i = 0;
        while i < bytes.len() {
            if self.at == At::Field {
                // Only the end of a field line matters: skip to it.
                match memchr::memchr(b'\n', &bytes[i..]) {
                    Some(lf) => {
                        i += lf + 1;
                        self.at = At::FieldStart;
                    }
                    None => i = bytes.len(),
                }
                continue;
            }
            let step = self.step(bytes[i])?;
            i += 1;
            match step {
                Step::To(at) => self.at = at,
                Step::End(empty_line) => {
                    self.len += i;
                    if self.len - empty_line > max_head_bytes {
                        return Err(Rejection::TooLarge);
                    }
                    return Ok(Some(i));
                }
            }
        }
        self.len += bytes.len();
        // A CR at the start of a line may be the start of the empty line.
        let head = self.len - usize::from(self.at == At::FieldCr);
        if head > max_head_bytes {
            return Err(Rejection::TooLarge);
        }
        Ok(None)
    }

    fn step(&self, b: u8) -> Result<Step, Rejection> {
        let at = match (self.at, b) {
            (At::LineStart | At::LeadingCr, b'\n') => At::LineStart,
            (At::LineStart, b'\r') => At::LeadingCr,
            (At::LineStart | At::Method, b) if is_tchar(b) => At::Method,
            (At::Method, b' ') => At::TargetStart,
            (At::TargetStart | At::Target, b) if is_target_byte(b) => At::Target,
            (At::Target, b' ') => At::Version(0),
            (At::Version(i), b) if i < VERSION.len() && is_version_byte(i, b) => At::Version(i + 1),
            (At::Version(i), b'\r') if i == VERSION.len() => At::VersionCr,
            (At::Version(i), b'\n') if i == VERSION.len() => At::FieldStart,
            (At::VersionCr, b'\n') => At::FieldStart,
            (At::FieldStart, b'\n') => return Ok(Step::End(1)),
            (At::FieldCr, b'\n') => return Ok(Step::End(2)),
            (At::FieldStart, b'\r') => At::FieldCr,
            (At::Field, b'\n') => At::FieldStart,
            (At::FieldStart | At::FieldCr | At::Field, _) => At::Field,
            _ => return Err(Rejection::BadRequestLine),
        };
        Ok(Step::To(at))
    }
}

/// tchar (RFC 9110 §5.6.2), the characters of a method.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A request target has no SP, HTAB, control byte or DEL; bytes above
/// 0x7f are let through, as httparse does.
fn is_target_byte(b: u8) -> bool {
    b > b' ' && b != 0x7f
}

fn is_version_byte(i: usize, b: u8) -> bool {
    match VERSION[i] {
        b'#' => b.is_ascii_digit(),
        expected => b == expected,
    }
}

/// What the guard is doing with the bytes it reads next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Receiving a head: bytes are held (see `RELEASE_AT`) and scanned.
    Head,
    /// A head was received; until the proxy says how its body is framed,
    /// bytes are passed through and remembered in `after`.
    Awaiting,
    /// Passing through this many more bytes of a body.
    Body(u64),
    /// Passing everything through for the rest of the connection.
    Through,
    /// A head was refused: every read fails.
    Rejected(Rejection),
}

/// A downstream connection whose request heads are held, scanned and
/// limited before Pingora's HTTP/1 reader gets them (see the module
/// documentation). Everything but reading is the inner connection's.
pub struct HeadGuard {
    inner: Stream,
    limits: HeadLimits,
    phase: Phase,
    scan: HeadScan,
    /// Bytes read and not yet handed to the reader: held while a head is
    /// received, then released and handed over from `delivered` on.
    held: Vec<u8>,
    delivered: usize,
    releasing: bool,
    /// How the inner connection ended after the held bytes (EOF or an
    /// error), to be told once they are handed over.
    ended: Option<io::Result<()>>,
    /// Bytes read past the end of a head, remembered while `Awaiting`.
    after: Vec<u8>,
    /// When the head being received must be complete.
    deadline: Option<Pin<Box<Sleep>>>,
    /// Framings told by `head_read` (which only has a shared reference)
    /// and not yet acted on, in the order of their heads.
    framings: Mutex<VecDeque<Framing>>,
    /// Heads handed over whole, and (told by `head_answered`) answered.
    heads: usize,
    answered: AtomicUsize,
}

impl HeadGuard {
    pub fn new(inner: Stream, limits: HeadLimits) -> HeadGuard {
        HeadGuard {
            inner,
            limits,
            phase: Phase::Head,
            scan: HeadScan::default(),
            held: Vec::new(),
            delivered: 0,
            releasing: false,
            ended: None,
            after: Vec::new(),
            deadline: None,
            framings: Mutex::default(),
            heads: 0,
            answered: AtomicUsize::new(0),
        }
    }

    /// Records how the body of the head just read is framed; the guard
    /// acts on it at its next read, after the framings told before it.
    fn framed(&self, body: Framing) {
        self.framings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push_back(body);
    }

    fn next_framing(&mut self) -> Option<Framing> {
        self.framings
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .pop_front()
    }

    /// Resumes after the head just read: the bytes remembered since are
    /// accounted as its body and then as the next head.
    fn apply(&mut self, body: Framing) -> Result<(), Rejection> {
        if self.phase != Phase::Awaiting {
            // Only a received head has a body to frame.
            return Ok(());
        }
        let after = std::mem::take(&mut self.after);
        let remembered = after.len() as u64;
        match body {
            Framing::None => self.next_head(&after),
            Framing::Length(n) if n <= remembered => self.next_head(&after[n as usize..]),
            Framing::Length(n) => {
                self.phase = Phase::Body(n - remembered);
                Ok(())
            }
            Framing::Unframed => {
                self.phase = Phase::Through;
                Ok(())
            }
        }
    }

    /// Starts on the next head, of which `released` (already handed to
    /// the reader) is the beginning.
    fn next_head(&mut self, released: &[u8]) -> Result<(), Rejection> {
        self.start_head();
        if released.is_empty() {
            return Ok(());
        }
        self.account_head(released)
    }

    fn start_head(&mut self) {
        self.phase = Phase::Head;
        self.scan = HeadScan::default();
        self.deadline = None;
    }

    /// Scans the next bytes of the head being received.
    fn account_head(&mut self, bytes: &[u8]) -> Result<(), Rejection> {
        if let Some(end) = self.scan.scan(bytes, self.limits.max_head_bytes)? {
            self.deadline = None;
            self.phase = Phase::Awaiting;
            self.heads += 1;
            self.remember(&bytes[end..]);
        }
        Ok(())
    }

    /// Keeps bytes read past a head for when its framing is known. Pingora
    /// reads no further than the read that completed the head before the
    /// proxy's first hook, so more than a head and a read means no framing
    /// is coming: the connection is then passed through.
    fn remember(&mut self, bytes: &[u8]) {
        if self.after.len() + bytes.len() > self.limits.max_head_bytes + READ_CHUNK {
            tracing::debug!("no framing for a request head: passing the connection through");
            self.after = Vec::new();
            self.phase = Phase::Through;
        } else {
            self.after.extend_from_slice(bytes);
        }
    }

    /// Reads a head: holds what comes until the head ends, `RELEASE_AT`
    /// bytes are held or the connection ends, then hands it over.
    ///
    /// The common case costs no copy: with nothing held, the read goes
    /// straight into the reader's buffer, and stays there when it ends
    /// the head (or is `RELEASE_AT` long); only a piece of a head is taken
    /// back out of it and held.
    fn poll_head(&mut self, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        if self.held.is_empty() {
            let before = buf.filled().len();
            match Pin::new(&mut self.inner).poll_read(cx, buf) {
                Poll::Pending => return self.poll_deadline(cx),
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) => {}
            }
            let read = buf.filled().len() - before;
            if read == 0 {
                return Poll::Ready(Ok(()));
            }
            if let Err(rejection) = self.account_head(&buf.filled()[before..]) {
                return self.reject(cx, rejection);
            }
            if self.phase != Phase::Head || read >= RELEASE_AT {
                return Poll::Ready(Ok(()));
            }
            self.hold(&buf.filled()[before..]);
            buf.set_filled(before);
        }
        loop {
            let mut chunk = [0; READ_CHUNK];
            let mut read = ReadBuf::new(&mut chunk);
            let result = match Pin::new(&mut self.inner).poll_read(cx, &mut read) {
                Poll::Ready(result) => result,
                Poll::Pending => return self.poll_deadline(cx),
            };
            let bytes = read.filled();
            if result.is_err() || bytes.is_empty() {
                if self.held.is_empty() {
                    return Poll::Ready(result);
                }
                self.ended = Some(result);
            } else {
                self.hold(bytes);
                if let Err(rejection) = self.account_head(bytes) {
                    return self.reject(cx, rejection);
                }
                if self.phase == Phase::Head && self.held.len() < RELEASE_AT {
                    continue;
                }
            }
            self.releasing = true;
            self.deliver(buf);
            return Poll::Ready(Ok(()));
        }
    }

    /// Pending, unless the deadline of the head passed. Polling the
    /// deadline registers the task's waker with it: a client gone silent
    /// is answered when the deadline passes, not at its next byte. The
    /// deadline starts the first time a head is waited for with some of it
    /// read (a head that comes in one read never starts a timer).
    fn poll_deadline(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        if self.scan.started() && self.deadline.is_none() {
            self.deadline = Some(Box::pin(tokio::time::sleep(self.limits.timeout)));
        }
        let passed = self
            .deadline
            .as_mut()
            .is_some_and(|deadline| deadline.as_mut().poll(cx).is_ready());
        if passed {
            return self.reject(cx, Rejection::TimedOut);
        }
        Poll::Pending
    }

    fn hold(&mut self, bytes: &[u8]) {
        if self.held.capacity() == 0 {
            self.held.reserve_exact(HOLD_CAPACITY);
        }
        self.held.extend_from_slice(bytes);
    }

    /// Hands released bytes to the reader, as many as it has room for.
    fn deliver(&mut self, buf: &mut ReadBuf<'_>) {
        let rest = &self.held[self.delivered..];
        let n = rest.len().min(buf.remaining());
        buf.put_slice(&rest[..n]);
        self.delivered += n;
        if self.delivered == self.held.len() {
            self.releasing = false;
            self.delivered = 0;
            if self.phase == Phase::Head {
                self.held.clear();
            } else {
                // Between heads a connection holds no buffer.
                self.held = Vec::new();
            }
        }
    }

    /// Passes bytes through, remembering them for the framing to come.
    fn poll_awaiting(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
        self.remember(&buf.filled()[before..]);
        Poll::Ready(Ok(()))
    }

    /// Passes `left` more body bytes through, and no more in one read:
    /// what follows is the next head, to be held.
    fn poll_body(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
        left: u64,
    ) -> Poll<io::Result<()>> {
        let read = match usize::try_from(left) {
            Ok(left) if left < buf.remaining() => {
                let mut part = ReadBuf::new(buf.initialize_unfilled_to(left));
                ready!(Pin::new(&mut self.inner).poll_read(cx, &mut part))?;
                let read = part.filled().len();
                buf.advance(read);
                read
            }
            _ => {
                let before = buf.filled().len();
                ready!(Pin::new(&mut self.inner).poll_read(cx, buf))?;
                buf.filled().len() - before
            }
        };
        match left - read as u64 {
            0 => self.start_head(),
            left => self.phase = Phase::Body(left),
        }
        Poll::Ready(Ok(()))
    }

    /// Answers the client, if its connection takes the answer now and no
    /// response is being written on it (a pipelined head refused while the
    /// one before it is answered gets no answer of its own: it would land
    /// inside the other), and fails the read: Pingora then closes the
    /// connection.
    fn reject(&mut self, cx: &mut Context<'_>, rejection: Rejection) -> Poll<io::Result<()>> {
        tracing::debug!(?rejection, "request head refused");
        crate::metrics::get()
            .rejections
            .with_label_values(&[rejection.reason()])
            .inc();
        let mut inner = Pin::new(&mut self.inner);
        let quiet = self.answered.load(Ordering::Relaxed) >= self.heads;
        if quiet {
            if let Poll::Ready(Ok(_)) = inner.as_mut().poll_write(cx, rejection.response()) {
                let _ = inner.poll_flush(cx);
            }
        }
        self.phase = Phase::Rejected(rejection);
        self.held = Vec::new();
        self.delivered = 0;
        self.releasing = false;
        self.after = Vec::new();
        self.deadline = None;
        Poll::Ready(Err(rejection.error(&self.limits)))
    }
}

impl AsyncRead for HeadGuard {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        while let Some(body) = this.next_framing() {
            if let Err(rejection) = this.apply(body) {
                return this.reject(cx, rejection);
            }
        }
        if this.releasing {
            this.deliver(buf);
            return Poll::Ready(Ok(()));
        }
        if let Some(ended) = this.ended.take() {
            return Poll::Ready(ended);
        }
        match this.phase {
            Phase::Head => this.poll_head(cx, buf),
            Phase::Awaiting => this.poll_awaiting(cx, buf),
            Phase::Body(left) => this.poll_body(cx, buf, left),
            Phase::Through => Pin::new(&mut this.inner).poll_read(cx, buf),
            Phase::Rejected(rejection) => Poll::Ready(Err(rejection.error(&this.limits))),
        }
    }
}

impl AsyncWrite for HeadGuard {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

#[async_trait]
impl Shutdown for HeadGuard {
    async fn shutdown(&mut self) {
        self.inner.shutdown().await
    }
}

impl UniqueID for HeadGuard {
    fn id(&self) -> UniqueIDType {
        self.inner.id()
    }
}

impl Ssl for HeadGuard {
    fn get_ssl(&self) -> Option<&TlsRef> {
        self.inner.get_ssl()
    }

    fn get_ssl_digest(&self) -> Option<Arc<SslDigest>> {
        self.inner.get_ssl_digest()
    }

    fn selected_alpn_proto(&self) -> Option<ALPN> {
        self.inner.selected_alpn_proto()
    }
}

impl GetTimingDigest for HeadGuard {
    fn get_timing_digest(&self) -> Vec<Option<TimingDigest>> {
        self.inner.get_timing_digest()
    }

    fn get_read_pending_time(&self) -> Duration {
        self.inner.get_read_pending_time()
    }

    fn get_write_pending_time(&self) -> Duration {
        self.inner.get_write_pending_time()
    }
}

impl GetProxyDigest for HeadGuard {
    fn get_proxy_digest(&self) -> Option<Arc<ProxyDigest>> {
        self.inner.get_proxy_digest()
    }

    fn set_proxy_digest(&mut self, digest: ProxyDigest) {
        self.inner.set_proxy_digest(digest)
    }
}

impl GetSocketDigest for HeadGuard {
    fn get_socket_digest(&self) -> Option<Arc<SocketDigest>> {
        self.inner.get_socket_digest()
    }

    fn set_socket_digest(&mut self, digest: SocketDigest) {
        self.inner.set_socket_digest(digest)
    }
}

#[async_trait]
impl Peek for HeadGuard {
    /// Peeking shows the inner connection's next bytes, which are the
    /// reader's next bytes only while the guard has none of its own.
    async fn try_peek(&mut self, buf: &mut [u8]) -> io::Result<bool> {
        if !self.held.is_empty() {
            return Ok(false);
        }
        self.inner.try_peek(buf).await
    }
}

impl fmt::Debug for HeadGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HeadGuard")
            .field("inner", &self.inner)
            .field("phase", &self.phase)
            .field("held", &self.held.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
