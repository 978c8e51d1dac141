//! A small TCP proxy (threads, blocking sockets) between a client and a
//! server on this machine, that can break the network in the ways TCP does
//! and does not notice:
//!
//! - [`Proxy::cut`]: close every open connection (the client sees FIN).
//! - [`Proxy::refuse`]: accept new connections and close them at once.
//! - [`Proxy::stall`]: no byte moves on any connection, old or new, until
//!   it is switched off (a partition that heals).
//! - [`Proxy::limit`]: every connection carries at most so many bytes a
//!   second in each direction (a slow link or an overloaded server).
//! - [`Proxy::blackhole`]: the connections open now carry no byte ever
//!   again, with no FIN and no RST, while new connections work (a NAT or
//!   load balancer that forgot its flows). The proxy's own sockets stay
//!   open, so the client's kernel gets every segment acknowledged: only the
//!   client's own probes and read deadlines can tell.

use std::collections::HashMap;
use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
struct Shared {
    stop: AtomicBool,
    stalled: AtomicBool,
    refusing: AtomicBool,
    /// Bytes per second per connection and direction (0: no limit).
    limit: AtomicU64,
    generation: AtomicU64,
    /// Connections with an id below this are black-holed.
    holed_below: AtomicU64,
    conns: Mutex<HashMap<u64, Vec<TcpStream>>>,
    accepted: AtomicU64,
}

impl Shared {
    fn holed(&self, id: u64) -> bool {
        id < self.holed_below.load(Ordering::SeqCst)
    }
}

/// A proxy from a free local port to `127.0.0.1:{target}`; stopped on drop
/// (every connection closed, black-holed ones included).
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Proxy")
            .field("port", &self.port)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub fn start(target: u16) -> std::io::Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let shared = Arc::new(Shared::default());
        let s = shared.clone();
        let thread = std::thread::Builder::new()
            .name("proxy-accept".into())
            .spawn(move || accept_loop(listener, target, s))?;
        Ok(Proxy {
            port,
            shared,
            thread: Some(thread),
        })
    }

    /// The port to connect to.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:{port}`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Closes every open connection now (both directions).
    pub fn cut(&self) {
        self.shared.generation.fetch_add(1, Ordering::SeqCst);
        let conns = std::mem::take(&mut *self.shared.conns.lock().expect("conns"));
        for c in conns.values().flatten() {
            let _ = c.shutdown(Shutdown::Both);
        }
    }

    /// While on, new connections are accepted and closed at once.
    pub fn refuse(&self, on: bool) {
        self.shared.refusing.store(on, Ordering::SeqCst);
    }

    /// While on, no byte moves in either direction (connections stay open).
    pub fn stall(&self, on: bool) {
        self.shared.stalled.store(on, Ordering::SeqCst);
    }

    /// Bytes per second each connection carries in each direction, old
    /// and new connections alike; 0 lifts the limit.
    pub fn limit(&self, bytes_per_sec: u64) {
        self.shared.limit.store(bytes_per_sec, Ordering::SeqCst);
    }

    /// Every connection accepted so far carries no byte in either direction
    /// from now on, and is never closed (until [`Proxy::cut`] or drop);
    /// connections accepted later work normally. Returns how many
    /// connections had been accepted (the ones black-holed, closed ones
    /// included).
    pub fn blackhole(&self) -> u64 {
        let n = self.shared.accepted.load(Ordering::SeqCst);
        self.shared.holed_below.fetch_max(n, Ordering::SeqCst);
        n
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        self.cut();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, target: u16, s: Arc<Shared>) {
    while !s.stop.load(Ordering::SeqCst) {
        let client = match listener.accept() {
            Ok((c, _)) => c,
            Err(_) => {
                // WouldBlock (nothing to accept) or a transient error.
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let id = s.accepted.fetch_add(1, Ordering::SeqCst);
        if s.refusing.load(Ordering::SeqCst) {
            let _ = client.shutdown(Shutdown::Both);
            continue;
        }
        let s2 = s.clone();
        let _ = std::thread::Builder::new()
            .name("proxy-conn".into())
            .spawn(move || connect(id, client, target, s2));
    }
}

fn connect(id: u64, client: TcpStream, target: u16, s: Arc<Shared>) {
    let generation = s.generation.load(Ordering::SeqCst);
    // A stalled network also holds new connections.
    while s.stalled.load(Ordering::SeqCst) && !s.stop.load(Ordering::SeqCst) {
        if s.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = client.set_nonblocking(false);
    let Ok(server) = TcpStream::connect(("127.0.0.1", target)) else {
        let _ = client.shutdown(Shutdown::Both);
        return;
    };
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    {
        let mut conns = s.conns.lock().expect("conns");
        if s.generation.load(Ordering::SeqCst) != generation {
            return;
        }
        let both = [&client, &server].iter().filter_map(|c| c.try_clone().ok()).collect();
        conns.insert(id, both);
    }
    let (Ok(c2), Ok(s2)) = (client.try_clone(), server.try_clone()) else {
        return;
    };
    let sh = s.clone();
    let up = std::thread::Builder::new()
        .name("proxy-up".into())
        .spawn(move || pump(id, c2, s2, sh, generation));
    pump(id, server, client, s.clone(), generation);
    if let Ok(t) = up {
        let _ = t.join();
    }
    s.conns.lock().expect("conns").remove(&id);
}

fn pump(id: u64, mut from: TcpStream, mut to: TcpStream, s: Arc<Shared>, generation: u64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    let dead = |s: &Shared| s.stop.load(Ordering::SeqCst) || s.generation.load(Ordering::SeqCst) != generation;
    // Neither reads nor writes: what is in flight stays in the kernels' buffers.
    let held = |s: &Shared| s.stalled.load(Ordering::SeqCst) || s.holed(id);
    loop {
        if dead(&s) {
            break;
        }
        if held(&s) {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        }
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::WouldBlock | ErrorKind::TimedOut | ErrorKind::Interrupted
                ) =>
            {
                continue
            }
            Err(_) => break,
        };
        // Data read just before a stall is held until it ends (for a
        // black hole: for ever).
        while held(&s) && !dead(&s) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if dead(&s) || to.write_all(&buf[..n]).is_err() {
            break;
        }
        // Under a limit, what was just forwarded takes its time on the wire.
        let limit = s.limit.load(Ordering::SeqCst);
        if limit > 0 {
            std::thread::sleep(Duration::from_secs_f64(n as f64 / limit as f64));
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_cuts_stalls_and_blackholes() {
        let server = crate::RedisServer::start();
        let p = Proxy::start(server.port()).unwrap();
        let client = redis::Client::open(p.url()).unwrap();
        let mut c = client.get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");
        p.cut();
        assert!(redis::cmd("PING").query::<String>(&mut c).is_err());
        let mut c = client.get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        p.stall(true);
        assert!(redis::cmd("PING").query::<String>(&mut c).is_err());
        p.stall(false);
        let mut c = client.get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut c).unwrap();
        assert_eq!(pong, "PONG");

        // Black hole: the open connection goes silent (no error, no close),
        // a new one works.
        let mut old = client.get_connection().unwrap();
        let _: String = redis::cmd("PING").query(&mut old).unwrap();
        old.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
        let holed = p.blackhole();
        assert!(holed >= 4, "{holed}");
        let err = redis::cmd("PING").query::<String>(&mut old).unwrap_err();
        assert!(err.is_timeout(), "a black hole times out, it does not close: {err}");
        let mut new = client.get_connection().unwrap();
        let pong: String = redis::cmd("PING").query(&mut new).unwrap();
        assert_eq!(pong, "PONG");
        assert!(redis::cmd("PING").query::<String>(&mut old).is_err(), "still silent");

        p.refuse(true);
        p.cut();
        assert!(client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err());
        p.refuse(false);
        assert!(p.accepted() >= 5);
    }

    /// Under a limit of 10 KB/s, 100 KB take about ten seconds: a client
    /// waiting one second for the reply gives up; without the limit the
    /// same write is answered at once.
    #[test]
    fn a_limit_slows_every_connection_down() {
        let server = crate::RedisServer::start();
        let p = Proxy::start(server.port()).unwrap();
        let client = redis::Client::open(p.url()).unwrap();
        let value = vec![b'x'; 100_000];
        p.limit(10_000);
        let mut c = client.get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
        let err = redis::cmd("SET").arg("k").arg(&value).query::<()>(&mut c).unwrap_err();
        assert!(err.is_timeout(), "{err}");
        p.limit(0);
        p.cut();
        let mut c = client.get_connection().unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        redis::cmd("SET").arg("k").arg(&value).query::<()>(&mut c).unwrap();
    }
}
