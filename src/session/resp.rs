//! A lean RESP2 client for the store's one hot read: the pay page's `HMGET` of a record.
//!
//! redis-rs spends most of a view's Redis cost outside the network: its connection
//! manager, its command builder and queue, and a reply parser that builds a `Value` tree.
//! This client keeps one pipelined connection per thread and store (each HTTP worker runs
//! its own event loop, so a reply wakes only tasks of the thread that asked). A request
//! appends its command to the connection's buffer and waits; the connection's task writes
//! every queued command in one write and hands each reply, as bytes, to the request that
//! waits for it (Redis answers in order). A request that gives up (its timeout) leaves the
//! connection in step: its reply is read and dropped.
//!
//! It only ever sends commands that read, so a command lost with a connection that had
//! worked before is sent once more on a fresh connection (Redis was restarted, say)
//! instead of failing the page. A broken connection is replaced on the next request.

use super::monotonic_ms;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::{Notify, oneshot};

/// The longest reply read; a record is a few hundred bytes.
const MAX_REPLY: usize = 1 << 20;

/// The longest status, error or header line read.
const MAX_LINE: usize = 4096;

/// The most elements an array reply may have.
const MAX_ARRAY: usize = 1024;

/// Where the server is and what a new connection must send first (`AUTH`, `SELECT`).
pub(crate) struct Endpoint {
    addr: Addr,
    /// Commands sent on every new connection, each answered `+OK`. They may hold the
    /// password: never logged, never printed (no `Debug`).
    hello: Vec<Hello>,
}

struct Hello {
    command: Vec<u8>,
    /// Sent instead when the server refuses `command` for its arguments: `AUTH password`
    /// where `AUTH user password` meets a Redis older than 6 (as redis-rs does).
    fallback: Option<Vec<u8>>,
}

enum Addr {
    Tcp(String, u16),
    #[cfg(unix)]
    Unix(std::path::PathBuf),
}

impl Endpoint {
    /// The server a redis-rs client points at, if this client can reach it: plain TCP or a
    /// Unix socket (TLS is left to redis-rs).
    pub(crate) fn of(info: &redis::ConnectionInfo) -> Option<Endpoint> {
        let addr = match info.addr() {
            redis::ConnectionAddr::Tcp(host, port) => Addr::Tcp(host.clone(), *port),
            #[cfg(unix)]
            redis::ConnectionAddr::Unix(path) => Addr::Unix(path.clone()),
            _ => return None,
        };
        let settings = info.redis_settings();
        let mut hello = Vec::new();
        if let Some(password) = settings.password() {
            let password_only = encode(&[b"AUTH", password.as_bytes()]);
            hello.push(match settings.username() {
                Some(user) => Hello {
                    command: encode(&[b"AUTH", user.as_bytes(), password.as_bytes()]),
                    fallback: Some(password_only),
                },
                None => Hello {
                    command: password_only,
                    fallback: None,
                },
            });
        }
        if settings.db() != 0 {
            hello.push(Hello {
                command: encode(&[b"SELECT", settings.db().to_string().as_bytes()]),
                fallback: None,
            });
        }
        Some(Endpoint { addr, hello })
    }
}

/// One store's lean connections: one pipelined connection per thread.
#[derive(Clone)]
pub(crate) struct LeanReader {
    shared: Arc<Shared>,
}

struct Shared {
    endpoint: Arc<Endpoint>,
    /// How long a read may take, and a new connection to connect and say hello.
    timeout: Duration,
    /// Every connection started for this store, so that they end with it.
    pipes: Mutex<Vec<Weak<Pipe>>>,
}

impl Drop for Shared {
    /// The store is gone: its connections close, each on its own thread.
    fn drop(&mut self) {
        let gone = io::Error::new(io::ErrorKind::BrokenPipe, "the store was dropped");
        let pipes = self.pipes.get_mut().unwrap_or_else(|e| e.into_inner());
        for pipe in pipes.iter().filter_map(Weak::upgrade) {
            pipe.close(&gone);
            pipe.wake.notify_one();
        }
    }
}

impl LeanReader {
    pub(crate) fn new(endpoint: Endpoint, timeout: Duration) -> Self {
        LeanReader {
            shared: Arc::new(Shared {
                endpoint: Arc::new(endpoint),
                timeout,
                pipes: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Sends one read-only command whose reply is a flat array (such as `HMGET`), and hands
    /// `read` the elements: each bulk string's bytes or integer's digits, `None` for nil.
    /// Gives up after the store's timeout (`TimedOut`); a connection that sent nothing in
    /// all that time is given up too.
    pub(crate) async fn query_array<T>(
        &self,
        args: &[&[u8]],
        read: impl FnOnce(&[Option<&[u8]>]) -> T,
    ) -> io::Result<T> {
        let deadline = tokio::time::Instant::now() + self.shared.timeout;
        let reply = self.request(args, Resend::IfLost, deadline).await?;
        read_array(&reply, read)
    }

    /// Runs a Lua script by its SHA-1 digest (`EVALSHA`), or by its text (`EVAL`, which
    /// also caches it) where Redis does not know it yet, and hands `read` the elements of
    /// its flat array reply, as [`query_array`](Self::query_array) does. A script may
    /// write, so a lost call is never sent again.
    pub(crate) async fn eval_array<T>(
        &self,
        script: (&str, &str),
        keys: &[&[u8]],
        args: &[&[u8]],
        read: impl FnOnce(&[Option<&[u8]>]) -> T,
    ) -> io::Result<T> {
        let deadline = tokio::time::Instant::now() + self.shared.timeout;
        let (sha, code) = script;
        let count = keys.len().to_string();
        let mut command: Vec<&[u8]> = Vec::with_capacity(3 + keys.len() + args.len());
        command.extend([&b"EVALSHA"[..], sha.as_bytes(), count.as_bytes()]);
        command.extend(keys);
        command.extend(args);
        let mut reply = self.request(&command, Resend::Never, deadline).await?;
        if reply.bytes.starts_with(b"-NOSCRIPT") {
            command[..2].copy_from_slice(&[b"EVAL", code.as_bytes()]);
            reply = self.request(&command, Resend::Never, deadline).await?;
        }
        read_array(&reply, read)
    }

    /// Sends `args` and waits for the whole reply, an error reply included, until
    /// `deadline`.
    async fn request(
        &self,
        args: &[&[u8]],
        resend: Resend,
        deadline: tokio::time::Instant,
    ) -> io::Result<Reply> {
        let pipe = self.pipe();
        match tokio::time::timeout_at(deadline, pipe.request(args)).await {
            Ok(Ok(reply)) => Ok(reply),
            // A connection that had answered before may have been closed by the server
            // since (a restart, say): a command that only reads can be sent once more on a
            // fresh connection, as that cannot do anything twice.
            Ok(Err(e))
                if resend == Resend::IfLost
                    && pipe.had_answered()
                    && e.kind() != io::ErrorKind::TimedOut =>
            {
                let again = tokio::time::timeout_at(deadline, self.pipe().request(args)).await;
                again.unwrap_or_else(|_| Err(timed_out()))
            }
            Ok(Err(e)) => Err(e),
            Err(_) => {
                pipe.retire_if_silent(self.shared.timeout);
                Err(timed_out())
            }
        }
    }

    /// This thread's connection, started now if it has none or its last one broke.
    fn pipe(&self) -> Arc<Pipe> {
        let key = Arc::as_ptr(&self.shared);
        // A connection is served by the runtime that started it: a thread that runs
        // several runtimes (one after another) keeps one connection for each.
        let runtime = tokio::runtime::Handle::current().id();
        PIPES.with_borrow_mut(|pipes| {
            let found = pipes
                .iter_mut()
                .find(|(w, r, _)| w.as_ptr() == key && *r == runtime);
            if let Some((_, _, pipe)) = &found
                && !pipe.is_closed()
            {
                return pipe.clone();
            }
            let pipe = Arc::new(Pipe::default());
            let mut all = self.shared.pipes.lock().unwrap_or_else(|e| e.into_inner());
            all.retain(|p| p.strong_count() > 0);
            all.push(Arc::downgrade(&pipe));
            drop(all);
            // Made before the task is spawned: a task dropped before it first runs (its
            // runtime shutting down) still closes the connection it was to serve.
            let served = ClosedOnDrop(pipe.clone());
            let (endpoint, timeout) = (self.shared.endpoint.clone(), self.shared.timeout);
            tokio::spawn(drive(endpoint, timeout, served));
            match found {
                Some((_, _, slot)) => *slot = pipe.clone(),
                None => {
                    // A store gone closes its connections here.
                    pipes.retain(|(w, _, _)| w.strong_count() > 0);
                    pipes.push((Arc::downgrade(&self.shared), runtime, pipe.clone()));
                }
            }
            pipe
        })
    }
}

/// Whether a command lost with its connection is sent again on a fresh one.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Resend {
    /// It only reads: sending it twice does nothing twice.
    IfLost,
    Never,
}

/// One whole reply as the connection's task read it: its bytes and, for an array, its
/// elements as ranges of them (found while looking for the reply's end, so not again).
struct Reply {
    bytes: Vec<u8>,
    items: Vec<Option<Range<usize>>>,
}

/// Hands `read` the elements of `reply`, a flat array; an error reply is an `Other` error
/// with Redis's text.
fn read_array<T>(reply: &Reply, read: impl FnOnce(&[Option<&[u8]>]) -> T) -> io::Result<T> {
    let Reply {
        bytes: reply,
        items: ranges,
    } = reply;
    if reply.first() == Some(&b'-') {
        let text = String::from_utf8_lossy(&reply[1..reply.len() - 2]).into_owned();
        return Err(io::Error::other(format!("Redis answered {text}")));
    }
    if reply.first() != Some(&b'*') {
        return Err(protocol_error("an array"));
    }
    let mut small: [Option<&[u8]>; 16] = [None; 16];
    Ok(if ranges.len() <= small.len() {
        for (slot, range) in small.iter_mut().zip(ranges) {
            *slot = range.clone().map(|r| &reply[r]);
        }
        read(&small[..ranges.len()])
    } else {
        let items: Vec<_> = ranges
            .iter()
            .map(|r| r.clone().map(|r| &reply[r]))
            .collect();
        read(&items)
    })
}

fn timed_out() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "Redis did not answer in time")
}

/// Each store's connection on this thread, by the store's [`Shared`] and the runtime that
/// serves it.
type ThreadPipes = Vec<(Weak<Shared>, tokio::runtime::Id, Arc<Pipe>)>;

thread_local! {
    static PIPES: RefCell<ThreadPipes> = const { RefCell::new(Vec::new()) };
}

type ReplySender = oneshot::Sender<io::Result<Reply>>;

/// One connection's queue: commands waiting to be written, and the requests waiting for
/// replies, in the order the commands were queued (Redis answers in order).
struct Pipe {
    queue: Mutex<Queue>,
    /// Wakes the connection's task when commands wait to be written.
    wake: Notify,
    /// Replies read on this connection so far.
    answered: AtomicU64,
    /// When bytes last came from Redis (or the connection started), as [`monotonic_ms`].
    last_heard_ms: AtomicU64,
}

impl Default for Pipe {
    fn default() -> Self {
        Pipe {
            queue: Mutex::default(),
            wake: Notify::new(),
            answered: AtomicU64::new(0),
            last_heard_ms: AtomicU64::new(monotonic_ms()),
        }
    }
}

#[derive(Default)]
struct Queue {
    out: Vec<u8>,
    waiting: VecDeque<ReplySender>,
    /// Why the connection ended; no command is queued after.
    closed: Option<(io::ErrorKind, String)>,
}

impl Pipe {
    fn lock(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn is_closed(&self) -> bool {
        self.lock().closed.is_some()
    }

    fn had_answered(&self) -> bool {
        self.answered.load(Ordering::Relaxed) > 0
    }

    /// After a read timed out: a connection Redis sent nothing on for all of `timeout`
    /// is presumed dead (a crashed host or a partition resets nothing, and TCP would keep
    /// retrying for many minutes), so the next read starts a new one. One that answers
    /// others meanwhile is only slow, and is kept.
    fn retire_if_silent(&self, timeout: Duration) {
        let silent_ms = monotonic_ms().saturating_sub(self.last_heard_ms.load(Ordering::Relaxed));
        if u128::from(silent_ms) >= timeout.as_millis() {
            self.close(&io::Error::new(
                io::ErrorKind::TimedOut,
                "Redis sent nothing on this connection for the store timeout",
            ));
            self.wake.notify_one();
        }
    }

    /// Sends `args` as a command and waits for its reply, whole (an error reply too).
    async fn request(&self, args: &[&[u8]]) -> io::Result<Reply> {
        match self.send(args)?.await {
            Ok(reply) => reply,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "the Redis connection's task ended",
            )),
        }
    }

    /// Queues `args` as a command; its reply comes through the receiver.
    fn send(&self, args: &[&[u8]]) -> io::Result<oneshot::Receiver<io::Result<Reply>>> {
        let mut queue = self.lock();
        if let Some((kind, why)) = &queue.closed {
            return Err(io::Error::new(*kind, why.clone()));
        }
        if queue.waiting.len() >= MAX_WAITING {
            return Err(io::Error::other("too many Redis reads waiting"));
        }
        let (tx, rx) = oneshot::channel();
        let was_empty = queue.out.is_empty();
        encode_into(&mut queue.out, args);
        queue.waiting.push_back(tx);
        drop(queue);
        if was_empty {
            self.wake.notify_one();
        }
        Ok(rx)
    }

    /// Ends the connection: every waiting request gets `error`, and so does any later one.
    /// A connection ends once; the first reason stays.
    fn close(&self, error: &io::Error) {
        let mut queue = self.lock();
        if queue.closed.is_some() {
            return;
        }
        let why = error.to_string();
        for tx in queue.waiting.drain(..) {
            let _ = tx.send(Err(io::Error::new(error.kind(), why.clone())));
        }
        queue.out.clear();
        queue.closed = Some((error.kind(), why));
    }
}

/// Runs one connection: connects, then writes queued commands in batches and hands each
/// reply to the request that waits for it, until the connection fails.
/// `pipe` ends the connection however the task ends, its runtime shutting down included,
/// so no request waits on a connection nobody serves.
async fn drive(endpoint: Arc<Endpoint>, connect_timeout: Duration, pipe: ClosedOnDrop) {
    let connected = tokio::time::timeout(connect_timeout, connect(&endpoint)).await;
    let result = match connected {
        Ok(Ok(mut conn)) => conn.serve(&pipe.0).await,
        Ok(Err(e)) => Err(e),
        Err(_) => Err(io::Error::new(
            io::ErrorKind::TimedOut,
            "connecting to Redis timed out",
        )),
    };
    if let Err(e) = result {
        pipe.0.close(&e);
    }
}

struct ClosedOnDrop(Arc<Pipe>);

impl Drop for ClosedOnDrop {
    fn drop(&mut self) {
        let ended = io::Error::new(io::ErrorKind::BrokenPipe, "the Redis connection ended");
        self.0.close(&ended);
    }
}

async fn connect(endpoint: &Endpoint) -> io::Result<Conn> {
    let stream = match &endpoint.addr {
        Addr::Tcp(host, port) => {
            let stream = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
            stream.set_nodelay(true)?;
            Stream::Tcp(stream)
        }
        #[cfg(unix)]
        Addr::Unix(path) => Stream::Unix(tokio::net::UnixStream::connect(path).await?),
    };
    let mut conn = Conn {
        stream,
        buf: vec![0; 16 * 1024],
        filled: 0,
    };
    for hello in &endpoint.hello {
        let mut answer = conn.setup(&hello.command).await?;
        if let Some(fallback) = &hello.fallback
            && answer.starts_with(b"-ERR wrong number of arguments")
        {
            answer = conn.setup(fallback).await?;
        }
        if answer != b"+OK\r\n" {
            // Not Redis's text: it might echo what it was sent.
            return Err(io::Error::other("Redis refused the connection's setup"));
        }
    }
    Ok(conn)
}

/// How many requests may wait on one connection; more fail at once as unavailable.
const MAX_WAITING: usize = 16 * 1024;

enum Stream {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

struct Conn {
    stream: Stream,
    /// Bytes read and not yet handed out are `buf[..filled]`; the rest is room.
    buf: Vec<u8>,
    filled: usize,
}

impl Conn {
    /// Sends one setup command before any request and reads its whole reply.
    async fn setup(&mut self, command: &[u8]) -> io::Result<Vec<u8>> {
        self.stream.write_all(command).await?;
        let len = loop {
            if let Some(len) = parse(&self.buf[..self.filled], &mut Vec::new())? {
                break len;
            }
            self.read_more().await?;
        };
        if len != self.filled {
            return Err(protocol_error("one reply per command"));
        }
        self.filled = 0;
        Ok(self.buf[..len].to_vec())
    }

    async fn serve(&mut self, pipe: &Pipe) -> io::Result<()> {
        let mut writing = Vec::new();
        let mut written = 0;
        let mut ranges = Vec::new();
        loop {
            if written == writing.len() {
                writing.clear();
                written = 0;
                std::mem::swap(&mut pipe.lock().out, &mut writing);
            }
            while written < writing.len() {
                match self.stream.try_write(&writing[written..]) {
                    Ok(n) => written += n,
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) => return Err(e),
                }
            }
            let idle = written == writing.len();
            tokio::select! {
                biased;
                ready = self.stream.readable() => {
                    ready?;
                    if self.try_read_more()? {
                        pipe.last_heard_ms.store(monotonic_ms(), Ordering::Relaxed);
                        self.hand_out(pipe, &mut ranges)?;
                    }
                }
                ready = self.stream.writable(), if !idle => ready?,
                () = pipe.wake.notified(), if idle => {
                    if pipe.is_closed() {
                        // The store is gone.
                        return Ok(());
                    }
                }
            }
        }
    }

    /// Hands every whole reply read to its request, oldest first.
    fn hand_out(&mut self, pipe: &Pipe, ranges: &mut Vec<Option<Range<usize>>>) -> io::Result<()> {
        let mut at = 0;
        while let Some(len) = parse(&self.buf[at..self.filled], ranges)? {
            let reply = Reply {
                bytes: self.buf[at..at + len].to_vec(),
                items: ranges.clone(),
            };
            at += len;
            let Some(tx) = pipe.lock().waiting.pop_front() else {
                return Err(protocol_error("no reply nobody asked for"));
            };
            pipe.answered.fetch_add(1, Ordering::Relaxed);
            // A request that gave up (its timeout) no longer listens; the reply is read
            // all the same, so the next one stays in step.
            let _ = tx.send(Ok(reply));
        }
        self.buf.copy_within(at..self.filled, 0);
        self.filled -= at;
        Ok(())
    }

    /// Reads what has arrived, if anything: `true` when bytes came.
    fn try_read_more(&mut self) -> io::Result<bool> {
        self.make_room()?;
        let read = match &self.stream {
            Stream::Tcp(s) => s.try_read(&mut self.buf[self.filled..]),
            #[cfg(unix)]
            Stream::Unix(s) => s.try_read(&mut self.buf[self.filled..]),
        };
        match read {
            Ok(0) => Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(n) => {
                self.filled += n;
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(false),
            Err(e) => Err(e),
        }
    }

    async fn read_more(&mut self) -> io::Result<()> {
        loop {
            self.stream.readable().await?;
            if self.try_read_more()? {
                return Ok(());
            }
        }
    }

    fn make_room(&mut self) -> io::Result<()> {
        if self.filled == self.buf.len() {
            if self.buf.len() >= MAX_REPLY {
                return Err(protocol_error("a reply under 1 MiB"));
            }
            self.buf.resize(self.buf.len() * 2, 0);
        }
        Ok(())
    }
}

impl Stream {
    fn try_write(&self, bytes: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.try_write(bytes),
            #[cfg(unix)]
            Stream::Unix(s) => s.try_write(bytes),
        }
    }

    async fn write_all(&self, mut bytes: &[u8]) -> io::Result<()> {
        while !bytes.is_empty() {
            match self.try_write(bytes) {
                Ok(n) => bytes = &bytes[n..],
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => self.writable().await?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    async fn readable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.readable().await,
            #[cfg(unix)]
            Stream::Unix(s) => s.readable().await,
        }
    }

    async fn writable(&self) -> io::Result<()> {
        match self {
            Stream::Tcp(s) => s.writable().await,
            #[cfg(unix)]
            Stream::Unix(s) => s.writable().await,
        }
    }
}

/// A command in RESP: an array of bulk strings.
fn encode(args: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(&mut out, args);
    out
}

/// Appends a command in RESP: an array of bulk strings.
fn encode_into(out: &mut Vec<u8>, args: &[&[u8]]) {
    push_header(out, b'*', args.len());
    for arg in args {
        push_header(out, b'$', arg.len());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn push_header(out: &mut Vec<u8>, kind: u8, n: usize) {
    if n < 10 {
        out.extend_from_slice(&[kind, b'0' + n as u8, b'\r', b'\n']);
        return;
    }
    out.push(kind);
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut n = n;
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[at..]);
    out.extend_from_slice(b"\r\n");
}

fn protocol_error(expected: &str) -> io::Error {
    io::Error::new(
        io::ErrorKind::InvalidData,
        format!("Redis protocol: expected {expected}"),
    )
}

/// Reads one reply from the start of `buf`: `Ok(None)` while it is incomplete, else its
/// length. An array's elements (bulk strings or nils) land in `items` as ranges of `buf`.
/// Simple strings and errors are whole replies; nothing else is expected.
fn parse(buf: &[u8], items: &mut Vec<Option<Range<usize>>>) -> io::Result<Option<usize>> {
    items.clear();
    match buf.first() {
        None => Ok(None),
        Some(b'+' | b'-') => {
            let rest = &buf[1..];
            // A status or error line holds no CR but its end.
            let Some(cr) = rest.iter().take(MAX_LINE).position(|b| *b == b'\r') else {
                if rest.len() >= MAX_LINE {
                    return Err(protocol_error("a shorter line"));
                }
                return Ok(None);
            };
            match rest.get(cr + 1) {
                None => Ok(None),
                Some(b'\n') => Ok(Some(cr + 3)),
                Some(_) => Err(protocol_error("CRLF at a line's end")),
            }
        }
        Some(b'*') => {
            let Some((n, mut at)) = length(buf, 1)? else {
                return Ok(None);
            };
            // A nil array has no elements.
            let n = n.unwrap_or(0);
            if n > MAX_ARRAY {
                return Err(protocol_error("a shorter array"));
            }
            for _ in 0..n {
                match buf.get(at) {
                    None => return Ok(None),
                    Some(b'$') => {}
                    Some(b':') => {
                        let Some((digits, next)) = integer(buf, at + 1)? else {
                            return Ok(None);
                        };
                        items.push(Some(digits));
                        at = next;
                        continue;
                    }
                    Some(_) => return Err(protocol_error("bulk strings or integers in the array")),
                }
                let Some((len, next)) = length(buf, at + 1)? else {
                    return Ok(None);
                };
                let Some(len) = len else {
                    items.push(None);
                    at = next;
                    continue;
                };
                if len > MAX_REPLY {
                    return Err(protocol_error("a shorter string"));
                }
                let end = next + len;
                match buf.get(end..end + 2) {
                    None => return Ok(None),
                    Some(b"\r\n") => {}
                    Some(_) => return Err(protocol_error("CRLF after a bulk string")),
                }
                items.push(Some(next..end));
                at = end + 2;
            }
            Ok(Some(at))
        }
        Some(_) => Err(protocol_error("an array, a status or an error")),
    }
}

/// The digits of the integer line whose text starts at `at` (a sign allowed), and where
/// the next line starts; `Ok(None)` while the line is incomplete.
fn integer(buf: &[u8], at: usize) -> io::Result<Option<(Range<usize>, usize)>> {
    let start = at + usize::from(buf.get(at) == Some(&b'-'));
    let mut i = start;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(b'0'..=b'9') if i - start < 19 => {}
            Some(b'\r') if i > start => break,
            Some(_) => return Err(protocol_error("an integer")),
        }
        i += 1;
    }
    match buf.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((at..i, i + 2))),
        Some(_) => Err(protocol_error("CRLF at a line's end")),
    }
}

/// A header line's length (`None`: nil) and where the next line starts.
type Header = (Option<usize>, usize);

/// The length in the header line whose digits start at `at` (`None` for -1, a nil) and
/// where the next line starts; `Ok(None)` while the line is incomplete.
fn length(buf: &[u8], at: usize) -> io::Result<Option<Header>> {
    if buf.get(at) == Some(&b'-') {
        return match buf.get(at + 1..at + 4) {
            Some(b"1\r\n") => Ok(Some((None, at + 4))),
            Some(_) => Err(protocol_error("a length")),
            None if b"1\r\n".starts_with(&buf[at + 1..]) => Ok(None),
            None => Err(protocol_error("a length")),
        };
    }
    let mut n = 0usize;
    let mut i = at;
    loop {
        match buf.get(i) {
            None => return Ok(None),
            Some(d @ b'0'..=b'9') if i - at < 9 => n = n * 10 + usize::from(d - b'0'),
            Some(b'\r') if i > at => break,
            Some(_) => return Err(protocol_error("a length")),
        }
        i += 1;
    }
    match buf.get(i + 1) {
        None => Ok(None),
        Some(b'\n') => Ok(Some((Some(n), i + 2))),
        Some(_) => Err(protocol_error("CRLF at a line's end")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A whole reply's length and its array's elements.
    type Parsed<'a> = (usize, Vec<Option<&'a [u8]>>);

    fn parsed(buf: &[u8]) -> io::Result<Option<Parsed<'_>>> {
        let mut items = Vec::new();
        Ok(parse(buf, &mut items)?.map(|len| {
            let items = items.into_iter().map(|r| r.map(|r| &buf[r])).collect();
            (len, items)
        }))
    }

    #[test]
    fn a_command_is_an_array_of_bulk_strings() {
        assert_eq!(
            encode(&[b"HMGET", b"pl:{ab}", b"m", b""]),
            b"*4\r\n$5\r\nHMGET\r\n$7\r\npl:{ab}\r\n$1\r\nm\r\n$0\r\n\r\n"
        );
        let long = vec![b'x'; 1234];
        assert!(encode(&[&long]).starts_with(b"*1\r\n$1234\r\nxxx"));
    }

    #[test]
    fn an_hmget_reply_gives_its_values_and_nils_in_order() {
        let reply = b"*4\r\n$3\r\nm_1\r\n$-1\r\n$0\r\n\r\n$4\r\na\r\nb\r\n";
        let (len, items) = parsed(reply).unwrap().unwrap();
        assert_eq!(len, reply.len());
        assert_eq!(
            items,
            vec![
                Some(&b"m_1"[..]),
                None,
                Some(&b""[..]),
                Some(&b"a\r\nb"[..])
            ]
        );
    }

    #[test]
    fn integers_in_an_array_give_their_digits() {
        let reply = b"*3\r\n:12\r\n:-1\r\n$2\r\nok\r\n";
        let (len, items) = parsed(reply).unwrap().unwrap();
        assert_eq!(len, reply.len());
        assert_eq!(
            items,
            vec![Some(&b"12"[..]), Some(&b"-1"[..]), Some(&b"ok"[..])]
        );
    }

    #[test]
    fn every_cut_of_a_reply_is_incomplete_not_an_error() {
        let reply = b"*4\r\n$3\r\nabc\r\n$-1\r\n:-42\r\n$10\r\n0123456789\r\n";
        for cut in 0..reply.len() {
            assert!(
                parsed(&reply[..cut]).unwrap().is_none(),
                "cut at {cut} read as complete"
            );
        }
        assert_eq!(parsed(reply).unwrap().unwrap().0, reply.len());
    }

    #[test]
    fn statuses_errors_and_nil_arrays_are_whole_replies() {
        assert_eq!(parsed(b"+OK\r\n").unwrap().unwrap().0, 5);
        assert_eq!(parsed(b"-NOAUTH no\r\n").unwrap().unwrap().0, 12);
        assert_eq!(parsed(b"*-1\r\n").unwrap().unwrap(), (5, vec![]));
        assert_eq!(parsed(b"*0\r\n").unwrap().unwrap(), (4, vec![]));
    }

    #[test]
    fn malformed_replies_are_errors() {
        for bad in [
            &b":1\r\n"[..],
            b"*1\r\n:x\r\n",
            b"*1\r\n:-\r\n",
            b"*1\r\n:12345678901234567890\r\n",
            b"*1\r\n*1\r\n",
            b"*x\r\n",
            b"*-2\r\n",
            b"*2000\r\n",
            b"*1\r\n$3\r\nabcd\r\n",
            b"*1\r\n$99999999999\r\n",
            b"\r\n",
        ] {
            let err = parsed(bad).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn no_bytes_make_the_parser_panic(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            if let Ok(Some((len, items))) = parsed(&bytes) {
                prop_assert!(len <= bytes.len());
                prop_assert!(items.len() <= MAX_ARRAY);
            }
        }

        #[test]
        fn any_values_round_trip(values in proptest::collection::vec(
            proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)), 0..20))
        {
            let mut reply = Vec::new();
            push_header(&mut reply, b'*', values.len());
            for v in &values {
                match v {
                    None => reply.extend_from_slice(b"$-1\r\n"),
                    Some(v) => {
                        push_header(&mut reply, b'$', v.len());
                        reply.extend_from_slice(v);
                        reply.extend_from_slice(b"\r\n");
                    }
                }
            }
            let (len, items) = parsed(&reply).unwrap().unwrap();
            prop_assert_eq!(len, reply.len());
            let want: Vec<Option<&[u8]>> = values.iter().map(|v| v.as_deref()).collect();
            prop_assert_eq!(items, want);
        }
    }
}
