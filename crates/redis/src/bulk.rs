//! Bulk reads on a connection of their own: many small read commands
//! (`HGETALL`, `EXISTS`, `HMGET`) written as one pipeline, their replies
//! parsed in place from the read buffer and handed to the caller as
//! borrowed slices.
//!
//! # Why not fred here
//! A reconcile pass sends one command per flow on each side. Through fred
//! each command is an object with its own response channel and each reply
//! a tree of owned values: 200,000 pipelined `HGETALL`s of 10-field hashes
//! cost 1.5 CPU-s in the client (7.5 µs each) against 0.57 CPU-s in Redis,
//! so the client, not Redis, bounded the pass. Written as one buffer and
//! parsed in place with `redis-protocol` (the parser fred itself uses), the
//! same reads cost 0.19 CPU-s (under 1 µs each) and finish 3× sooner
//! (`docs/benchmarks.md`). No crate offers a pipeline that hands replies out
//! as borrowed ranges, so this module is the framing loop around that parser.
//!
//! Everything else (scripts, writes, `SCAN`, leases) stays on fred.
//!
//! # Connections
//! Same endpoint, credentials, database and TLS settings as [`crate::connect`].
//! Up to three connections, one per concurrent caller, each opened on first
//! use and again after any failure: a pipeline that fails or is cancelled
//! half-way drops its connection (replies may still be in flight on it),
//! so the next call starts clean. There is no retry
//! here; the caller (a pass) fails and is run again at the next trigger.
//! Every connection has TCP keepalive; a pipeline that hears nothing for
//! [`READ_DEADLINE`] fails, and a connection idle for more than
//! [`BULK_REUSE_IDLE`] is replaced before use, so a link that silently
//! died between two passes costs a reconnect, not a failed pass
//! ([`crate::liveness`]).

use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, BytesMut};
use fred::error::{Error, ErrorKind};
use futures::FutureExt as _;
use redis_protocol::resp2::decode::decode_range;
use redis_protocol::resp2::types::RangeFrame;
use redmirror_config::RedisEndpoint;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::liveness::{BULK_REUSE_IDLE, PROBE_DEADLINE, PROBE_QUIET, READ_DEADLINE};
use crate::RedisError;

/// Where a node listens, as the cluster announces it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeAddr {
    /// Host or IP.
    pub host: String,
    /// Port (the TLS port on a `rediss://` cluster).
    pub port: u16,
}

impl std::fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Longest wait for a connection.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// Longest wait for a whole pipeline (fred's command timeout for the same reads).
const PIPELINE_TIMEOUT: Duration = Duration::from_secs(30);
/// Read buffer growth step.
const READ_CHUNK: usize = 256 * 1024;

/// A reply, borrowed from the read buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply<'a> {
    /// Nil (a missing key, an absent `HMGET` field).
    Nil,
    /// An integer.
    Int(i64),
    /// A bulk or simple string.
    Str(&'a [u8]),
    /// An error reply (`WRONGTYPE ...`): the command failed, the
    /// connection is fine.
    Error(&'a [u8]),
    /// An array.
    Array(Vec<Reply<'a>>),
}

impl<'a> Reply<'a> {
    fn from_frame(buf: &'a [u8], frame: RangeFrame) -> Reply<'a> {
        match frame {
            RangeFrame::Null => Reply::Nil,
            RangeFrame::Integer(i) => Reply::Int(i),
            RangeFrame::SimpleString((a, b)) | RangeFrame::BulkString((a, b)) => Reply::Str(&buf[a..b]),
            RangeFrame::Error((a, b)) => Reply::Error(&buf[a..b]),
            RangeFrame::Array(items) => Reply::Array(items.into_iter().map(|f| Reply::from_frame(buf, f)).collect()),
        }
    }

    /// The integer, if this is one.
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Reply::Int(i) => Some(*i),
            _ => None,
        }
    }
}

/// Commands to send in one go.
#[derive(Debug, Default)]
pub struct Pipeline {
    buf: BytesMut,
    count: usize,
}

impl Pipeline {
    /// An empty pipeline.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends one command (name and arguments).
    pub fn cmd<A: AsRef<[u8]>>(&mut self, args: &[A]) -> &mut Self {
        self.start(args.len());
        for a in args {
            self.arg(a.as_ref());
        }
        self
    }

    /// Appends `name key` (`HGETALL key`, `EXISTS key`).
    pub fn key_cmd(&mut self, name: &[u8], key: &[u8]) -> &mut Self {
        self.key_cmd_with::<&[u8]>(name, key, &[])
    }

    /// Appends `name key rest...` (`HMGET hash f1 f2 ...`).
    pub fn key_cmd_with<A: AsRef<[u8]>>(&mut self, name: &[u8], key: &[u8], rest: &[A]) -> &mut Self {
        self.start(2 + rest.len());
        self.arg(name);
        self.arg(key);
        for a in rest {
            self.arg(a.as_ref());
        }
        self
    }

    /// Commands so far.
    pub fn len(&self) -> usize {
        self.count
    }

    /// No commands yet.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    fn start(&mut self, n: usize) {
        self.count += 1;
        self.buf.put_u8(b'*');
        self.number(n);
    }

    fn arg(&mut self, a: &[u8]) {
        self.buf.put_u8(b'$');
        self.number(a.len());
        self.buf.put_slice(a);
        self.buf.put_slice(b"\r\n");
    }

    fn number(&mut self, n: usize) {
        let mut digits = itoa::Buffer::new();
        self.buf.put_slice(digits.format(n).as_bytes());
        self.buf.put_slice(b"\r\n");
    }
}

trait Stream: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Stream for T {}

struct Conn {
    stream: Box<dyn Stream>,
    read: BytesMut,
    /// When its last exchange ended.
    used: Instant,
}

/// Where and how to connect.
struct Target {
    host: String,
    port: u16,
    username: Option<String>,
    password: Option<String>,
    db: Option<u8>,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// Connections kept per endpoint: callers running at the same time (the
/// phases of a pass) each get one instead of queueing behind another's
/// pipeline.
const CONNECTIONS: usize = 3;

/// Connections for bulk reads (see the module docs).
pub struct Bulk {
    target: Target,
    conns: [tokio::sync::Mutex<Option<Conn>>; CONNECTIONS],
    next: std::sync::atomic::AtomicUsize,
}

impl std::fmt::Debug for Bulk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bulk")
            .field("host", &self.target.host)
            .field("port", &self.target.port)
            .field("db", &self.target.db)
            .field("tls", &self.target.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl Bulk {
    /// A bulk reader for `endpoint`; nothing is connected yet.
    pub fn new(endpoint: &RedisEndpoint) -> Result<Self, RedisError> {
        Self::to(endpoint, None)
    }

    /// A bulk reader for the cluster node at `addr`, with `endpoint`'s
    /// credentials and TLS settings; nothing is connected yet.
    pub fn at(endpoint: &RedisEndpoint, addr: &NodeAddr) -> Result<Self, RedisError> {
        Self::to(endpoint, Some(addr))
    }

    fn to(endpoint: &RedisEndpoint, addr: Option<&NodeAddr>) -> Result<Self, RedisError> {
        let config = fred::types::config::Config::from_url(&endpoint.url).map_err(|e| RedisError::new(endpoint, e))?;
        let fred::types::config::ServerConfig::Centralized { server } = &config.server else {
            return Err(RedisError::new(
                endpoint,
                Error::new(ErrorKind::Config, "bulk reads need a single server URL"),
            ));
        };
        let tls = if endpoint.is_tls() {
            Some(Arc::new(crate::tls_config(endpoint)?))
        } else {
            None
        };
        Ok(Bulk {
            target: Target {
                host: addr.map_or_else(|| server.host.to_string(), |a| a.host.clone()),
                port: addr.map_or(server.port, |a| a.port),
                username: config.username.clone(),
                password: config.password.clone(),
                db: config.database,
                tls,
            },
            conns: Default::default(),
            next: 0.into(),
        })
    }

    /// Sends `pipeline` and calls `each(i, reply)` for the reply to its
    /// `i`-th command, in order. An error reply is passed on (it is the
    /// command's answer); a connection, protocol or timeout failure is
    /// returned and drops the connection.
    pub async fn run<F>(&self, pipeline: &Pipeline, mut each: F) -> Result<(), Error>
    where
        F: FnMut(usize, Reply<'_>),
    {
        if pipeline.is_empty() {
            return Ok(());
        }
        // A free connection if there is one, else wait for one in turn.
        let mut slot = match self.conns.iter().find_map(|c| c.try_lock().ok()) {
            Some(slot) => slot,
            None => {
                let i = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % CONNECTIONS;
                self.conns[i].lock().await
            }
        };
        // Taken out for the duration: a failed or cancelled exchange leaves
        // nothing behind for the next call to trip over.
        // One idle for long may have died silently: not worth a failed pass.
        let mut conn = match slot.take().filter(|c| c.used.elapsed() <= BULK_REUSE_IDLE) {
            Some(c) => c,
            None => self.connect().await?,
        };
        match tokio::time::timeout(PIPELINE_TIMEOUT, exchange(&mut conn, pipeline, &mut each)).await {
            Ok(Ok(())) => {
                conn.used = Instant::now();
                *slot = Some(conn);
                Ok(())
            }
            Ok(Err(e)) => Err(e),
            Err(_) => Err(Error::new(ErrorKind::Timeout, "bulk read timed out")),
        }
    }

    async fn connect(&self) -> Result<Conn, Error> {
        let t = &self.target;
        let tcp = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect((t.host.as_str(), t.port)))
            .await
            .map_err(|_| Error::new(ErrorKind::Timeout, "connection timed out"))?
            .map_err(io)?;
        tcp.set_nodelay(true).map_err(io)?;
        crate::liveness::set_socket_options(&tcp).map_err(io)?;
        let stream: Box<dyn Stream> = match &t.tls {
            None => Box::new(tcp),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(t.host.clone())
                    .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
                let tls = tokio::time::timeout(
                    CONNECT_TIMEOUT,
                    tokio_rustls::TlsConnector::from(config.clone()).connect(name, tcp),
                )
                .await
                .map_err(|_| Error::new(ErrorKind::Timeout, "TLS handshake timed out"))?
                .map_err(|e| Error::new(ErrorKind::Tls, e.to_string()))?;
                Box::new(tls)
            }
        };
        let mut conn = Conn {
            stream,
            read: BytesMut::with_capacity(READ_CHUNK),
            used: Instant::now(),
        };
        let mut hello = Pipeline::new();
        if let Some(password) = &t.password {
            match &t.username {
                Some(user) => hello.cmd(&[b"AUTH".as_ref(), user.as_bytes(), password.as_bytes()]),
                None => hello.cmd(&[b"AUTH".as_ref(), password.as_bytes()]),
            };
        }
        if let Some(db) = t.db.filter(|db| *db != 0) {
            hello.cmd(&[b"SELECT".as_ref(), db.to_string().as_bytes()]);
        }
        set_up(&mut conn, &hello, ErrorKind::Auth, "connection set-up").await?;
        Ok(conn)
    }
}

/// Runs a set-up pipeline within [`CONNECT_TIMEOUT`]; the first error reply
/// fails it as a `refused` error.
async fn set_up(conn: &mut Conn, pipeline: &Pipeline, refused: ErrorKind, what: &str) -> Result<(), Error> {
    let mut first_error = None;
    tokio::time::timeout(
        CONNECT_TIMEOUT,
        exchange(conn, pipeline, &mut |_, r: Reply<'_>| {
            if let Reply::Error(e) = r {
                first_error.get_or_insert_with(|| String::from_utf8_lossy(e).into_owned());
            }
        }),
    )
    .await
    .map_err(|_| Error::new(ErrorKind::Timeout, format!("{what} timed out")))??;
    match first_error {
        Some(e) => Err(Error::new(refused, e)),
        None => Ok(()),
    }
}

impl Bulk {
    /// Subscribes to `pattern` (`PSUBSCRIBE`) on a connection of its own,
    /// set up like the others (credentials, database, TLS), and waits for
    /// the server to confirm it.
    pub async fn psubscribe(&self, pattern: &[u8]) -> Result<Subscription, Error> {
        let mut conn = self.connect().await?;
        let mut sub = Pipeline::new();
        sub.cmd(&[b"PSUBSCRIBE".as_ref(), pattern]);
        set_up(&mut conn, &sub, ErrorKind::Unknown, "PSUBSCRIBE").await?;
        Ok(Subscription::new(conn))
    }
}

/// A pattern subscription (see [`Bulk::psubscribe`]).
///
/// # Why not fred here
/// fred hands each message to a broadcast channel, and allocates all nine
/// of a client's event channels up front at the capacity the busiest one
/// needs: for capture's notification stream, 16,384 slots each, about
/// 11 MB, and a message arriving while the channel is full is lost (a
/// gap). Read here, messages wait in the socket and in the server's own
/// pub/sub output buffer (`client-output-buffer-limit pubsub`), which
/// closes the connection when exceeded: the loss is then a disconnect the
/// caller sees, as any other.
///
/// # Liveness
/// A subscription is quiet whenever the source is, so silence alone says
/// nothing: after [`PROBE_QUIET`] without a byte, [`Subscription::recv`]
/// sends `PING` on it, and a probe unanswered for [`PROBE_DEADLINE`] is a
/// lost connection ([`crate::liveness`]).
pub struct Subscription {
    conn: Conn,
    /// When the last byte arrived.
    heard: Instant,
    /// When the probe now unanswered was sent.
    probe: Option<Instant>,
    /// Probe bytes not yet written.
    out: BytesMut,
    /// Written bytes not yet flushed (TLS buffers them).
    unflushed: bool,
}

impl std::fmt::Debug for Subscription {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Subscription").finish_non_exhaustive()
    }
}

/// `PING` (a probe; RESP2 answers `["pong", ""]` while subscribed).
const PING: &[u8] = b"*1\r\n$4\r\nPING\r\n";

impl Subscription {
    fn new(conn: Conn) -> Self {
        Subscription {
            conn,
            heard: Instant::now(),
            probe: None,
            out: BytesMut::new(),
            unflushed: false,
        }
    }

    /// Waits for messages, then calls `each(channel, message)` for every
    /// message already received, in order, and returns how many there
    /// were. Other pushes (subscription confirmations, probe answers) are
    /// skipped. An error is a lost connection: closed, failed, or silent
    /// past a probe's deadline. Cancel-safe: a message is either handed out
    /// by a call that returns or left for the next call, and a probe is
    /// written whole across calls.
    pub async fn recv<F>(&mut self, mut each: F) -> Result<usize, Error>
    where
        F: FnMut(&[u8], &[u8]),
    {
        loop {
            let mut n = 0;
            while let Some((frame, used)) =
                decode_range(&self.conn.read).map_err(|e| Error::new(ErrorKind::Parse, e.to_string()))?
            {
                match push(&self.conn.read, &frame) {
                    Push::Message(channel, message) => {
                        each(channel, message);
                        n += 1;
                    }
                    Push::Answer => self.probe = None,
                    Push::Other => {}
                }
                self.conn.read.advance(used);
            }
            if n > 0 {
                return Ok(n);
            }
            self.wait().await?;
        }
    }

    /// Waits for bytes; probes the connection once it has been quiet for
    /// [`PROBE_QUIET`], and fails once a probe has waited [`PROBE_DEADLINE`].
    async fn wait(&mut self) -> Result<(), Error> {
        let now = Instant::now();
        if self.probe.is_none() && now >= self.heard + PROBE_QUIET {
            self.out.extend_from_slice(PING);
            self.probe = Some(now);
        }
        let deadline = match self.probe {
            Some(sent) => sent + PROBE_DEADLINE,
            None => self.heard + PROBE_QUIET,
        };
        let Subscription {
            conn, out, unflushed, ..
        } = self;
        let io_step = async {
            while !out.is_empty() {
                if conn.stream.write_buf(out).await? == 0 {
                    return Ok(0);
                }
                *unflushed = true;
            }
            if *unflushed {
                conn.stream.flush().await?;
                *unflushed = false;
            }
            conn.read.reserve(READ_CHUNK);
            conn.stream.read_buf(&mut conn.read).await
        };
        match tokio::time::timeout_at(deadline, io_step).await {
            Ok(Ok(0)) => Err(closed()),
            Ok(Ok(_)) => {
                self.heard = Instant::now();
                Ok(())
            }
            Ok(Err(e)) => Err(io(e)),
            Err(_) if self.probe.is_some() => Err(Error::new(
                ErrorKind::Timeout,
                format!(
                    "no answer to PING within {} s after {} s of silence: the connection is dead",
                    PROBE_DEADLINE.as_secs(),
                    PROBE_QUIET.as_secs()
                ),
            )),
            // Quiet: the next call sends the probe.
            Err(_) => Ok(()),
        }
    }
}

/// What a frame on a subscribed connection is.
enum Push<'a> {
    /// A `pmessage`: channel and message.
    Message(&'a [u8], &'a [u8]),
    /// The answer to a probe (`["pong", ""]`, or an error reply).
    Answer,
    /// Anything else (subscription confirmations).
    Other,
}

fn push<'a>(buf: &'a [u8], frame: &RangeFrame) -> Push<'a> {
    if let Some((channel, message)) = pmessage(buf, frame) {
        return Push::Message(channel, message);
    }
    match frame {
        RangeFrame::Array(items) => match items.first() {
            Some(RangeFrame::BulkString((a, b))) if buf[*a..*b].eq_ignore_ascii_case(b"pong") => Push::Answer,
            _ => Push::Other,
        },
        RangeFrame::SimpleString((a, b)) if buf[*a..*b].eq_ignore_ascii_case(b"pong") => Push::Answer,
        RangeFrame::Error(_) => Push::Answer,
        _ => Push::Other,
    }
}

/// The channel and message of a `pmessage` push
/// (`["pmessage", pattern, channel, message]`).
fn pmessage<'a>(buf: &'a [u8], frame: &RangeFrame) -> Option<(&'a [u8], &'a [u8])> {
    let RangeFrame::Array(items) = frame else {
        return None;
    };
    match items.as_slice() {
        [RangeFrame::BulkString(kind), _, RangeFrame::BulkString(channel), RangeFrame::BulkString(message)]
            if &buf[kind.0..kind.1] == b"pmessage" =>
        {
            Some((&buf[channel.0..channel.1], &buf[message.0..message.1]))
        }
        _ => None,
    }
}

/// Writes the pipeline, then parses replies until there is one per command.
async fn exchange<F>(conn: &mut Conn, pipeline: &Pipeline, each: &mut F) -> Result<(), Error>
where
    F: FnMut(usize, Reply<'_>),
{
    if pipeline.is_empty() {
        return Ok(());
    }
    let mut rest = &pipeline.buf[..];
    while !rest.is_empty() {
        let n = within(conn.stream.write(rest)).await?;
        if n == 0 {
            return Err(closed());
        }
        rest = &rest[n..];
    }
    within(conn.stream.flush()).await?;
    let mut got = 0;
    while got < pipeline.count {
        match decode_range(&conn.read).map_err(|e| Error::new(ErrorKind::Parse, e.to_string()))? {
            Some((frame, used)) => {
                each(got, Reply::from_frame(&conn.read, frame));
                conn.read.advance(used);
                got += 1;
            }
            None => {
                // Parsing restarts at the reply's first byte, so before trying
                // again take in what has already arrived, up to half as much
                // again: a reply of many reads is then parsed a few times,
                // not once per read.
                let target = conn.read.len() + READ_CHUNK.max(conn.read.len() / 2);
                conn.read.reserve(READ_CHUNK);
                if within(conn.stream.read_buf(&mut conn.read)).await? == 0 {
                    return Err(closed());
                }
                while conn.read.len() < target {
                    conn.read.reserve(READ_CHUNK);
                    match conn.stream.read_buf(&mut conn.read).now_or_never() {
                        Some(Ok(0)) => return Err(closed()),
                        Some(Ok(_)) => {}
                        Some(Err(e)) => return Err(io(e)),
                        None => break,
                    }
                }
            }
        }
    }
    Ok(())
}

/// `step` (a read or a write), failed as a lost connection when it makes
/// no progress within [`READ_DEADLINE`].
async fn within<T>(step: impl std::future::Future<Output = std::io::Result<T>>) -> Result<T, Error> {
    match tokio::time::timeout(READ_DEADLINE, step).await {
        Ok(r) => r.map_err(io),
        Err(_) => Err(Error::new(
            ErrorKind::Timeout,
            format!(
                "nothing received or sent for {} s: the connection is dead",
                READ_DEADLINE.as_secs()
            ),
        )),
    }
}

fn closed() -> Error {
    Error::new(ErrorKind::IO, "connection closed by the server")
}

fn io(e: std::io::Error) -> Error {
    Error::new(ErrorKind::IO, e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pipeline_encodes_resp_arrays() {
        let mut p = Pipeline::new();
        p.key_cmd(b"EXISTS", b"k")
            .key_cmd_with(b"HMGET", b"h", &[b"a".as_ref(), b""]);
        assert_eq!(p.len(), 2);
        assert_eq!(
            &p.buf[..],
            b"*2\r\n$6\r\nEXISTS\r\n$1\r\nk\r\n*4\r\n$5\r\nHMGET\r\n$1\r\nh\r\n$1\r\na\r\n$0\r\n\r\n"
        );
    }

    #[test]
    fn replies_borrow_from_the_buffer() {
        let buf = b"*3\r\n$2\r\nab\r\n$-1\r\n:7\r\n";
        let (frame, used) = decode_range(buf).unwrap().unwrap();
        assert_eq!(used, buf.len());
        assert_eq!(
            Reply::from_frame(buf, frame),
            Reply::Array(vec![Reply::Str(b"ab"), Reply::Nil, Reply::Int(7)])
        );
        let err = b"-WRONGTYPE Operation\r\n";
        let (frame, _) = decode_range(err).unwrap().unwrap();
        assert_eq!(Reply::from_frame(err, frame), Reply::Error(b"WRONGTYPE Operation"));
    }

    fn subscription(stream: tokio::io::DuplexStream) -> Subscription {
        Subscription::new(Conn {
            stream: Box::new(stream),
            read: BytesMut::new(),
            used: Instant::now(),
        })
    }

    const PONG: &[u8] = b"*2\r\n$4\r\npong\r\n$0\r\n\r\n";

    fn pmessage_frame(channel: &str, message: &str) -> Vec<u8> {
        format!(
            "*4\r\n$8\r\npmessage\r\n$1\r\n*\r\n${}\r\n{channel}\r\n${}\r\n{message}\r\n",
            channel.len(),
            message.len()
        )
        .into_bytes()
    }

    #[tokio::test(start_paused = true)]
    async fn a_silent_subscription_is_probed_then_lost() {
        use tokio::io::AsyncReadExt as _;
        let (ours, mut server) = tokio::io::duplex(4096);
        let mut sub = subscription(ours);
        let t = Instant::now();
        let err = sub.recv(|_, _| panic!("no message")).await.unwrap_err();
        assert_eq!(t.elapsed(), PROBE_QUIET + PROBE_DEADLINE);
        assert_eq!(*err.kind(), ErrorKind::Timeout, "{err}");
        let mut got = vec![0u8; PING.len()];
        server.read_exact(&mut got).await.unwrap();
        assert_eq!(got, PING, "one probe, written whole");
    }

    #[tokio::test(start_paused = true)]
    async fn answered_probes_keep_a_quiet_subscription() {
        use tokio::io::AsyncReadExt as _;
        let (ours, mut server) = tokio::io::duplex(4096);
        let mut sub = subscription(ours);
        let t = Instant::now();
        let peer = tokio::spawn(async move {
            for _ in 0..3 {
                let mut ping = vec![0u8; PING.len()];
                server.read_exact(&mut ping).await.unwrap();
                assert_eq!(ping, PING);
                server.write_all(PONG).await.unwrap();
            }
            server.write_all(&pmessage_frame("ch", "client:1")).await.unwrap();
            server
        });
        let mut got = Vec::new();
        let n = sub.recv(|c, m| got.push((c.to_vec(), m.to_vec()))).await.unwrap();
        assert_eq!(n, 1);
        assert_eq!(got, [(b"ch".to_vec(), b"client:1".to_vec())]);
        assert_eq!(t.elapsed(), PROBE_QUIET * 3, "probed every {PROBE_QUIET:?} of silence");
        let _server = peer.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn recv_is_cancel_safe_across_messages_and_probes() {
        use tokio::io::AsyncReadExt as _;
        let (ours, mut server) = tokio::io::duplex(4096);
        let mut sub = subscription(ours);
        let t = Instant::now();
        // Half a message, then the call is cancelled: nothing is lost.
        let frame = pmessage_frame("ch", "client:half");
        server.write_all(&frame[..10]).await.unwrap();
        let cancelled = tokio::time::timeout(Duration::from_secs(1), sub.recv(|_, _| panic!("incomplete"))).await;
        assert!(cancelled.is_err());
        server.write_all(&frame[10..]).await.unwrap();
        let mut got = Vec::new();
        assert_eq!(sub.recv(|_, m| got.push(m.to_vec())).await.unwrap(), 1);
        assert_eq!(got, [b"client:half".to_vec()]);
        // A call cancelled after its probe went out: the probe is not sent
        // again and its deadline runs on from when it was sent.
        let heard = Instant::now();
        let cancelled = tokio::time::timeout(PROBE_QUIET + Duration::from_secs(1), sub.recv(|_, _| {})).await;
        assert!(cancelled.is_err());
        let err = sub.recv(|_, _| {}).await.unwrap_err();
        assert_eq!(*err.kind(), ErrorKind::Timeout);
        assert_eq!(heard.elapsed(), PROBE_QUIET + PROBE_DEADLINE);
        let mut all = vec![0u8; 64];
        let n = server.read(&mut all).await.unwrap();
        assert_eq!(&all[..n], PING, "one probe only");
        assert!(t.elapsed() >= Duration::from_secs(1));
    }
}
