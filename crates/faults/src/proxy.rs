//! A small TCP proxy (threads, blocking sockets) that can drop every
//! connection, refuse new ones for a while, or stall all traffic while
//! keeping the connections open (a network partition that TCP does not see).

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
    generation: AtomicU64,
    conns: Mutex<HashMap<u64, Vec<TcpStream>>>,
    accepted: AtomicU64,
}

/// A proxy from a free local port to `127.0.0.1:{target}`; stopped on drop.
pub struct Proxy {
    port: u16,
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Proxy {
    /// Starts forwarding to `target`.
    pub fn start(target: u16) -> anyhow::Result<Proxy> {
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

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
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
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
            Err(_) => {
                std::thread::sleep(Duration::from_millis(5));
                continue;
            }
        };
        let id = s.accepted.fetch_add(1, Ordering::Relaxed);
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
        .spawn(move || pump(c2, s2, sh, generation));
    pump(server, client, s.clone(), generation);
    if let Ok(t) = up {
        let _ = t.join();
    }
    s.conns.lock().expect("conns").remove(&id);
}

fn pump(mut from: TcpStream, mut to: TcpStream, s: Arc<Shared>, generation: u64) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(50)));
    let mut buf = vec![0u8; 64 * 1024];
    let dead = |s: &Shared| s.stop.load(Ordering::SeqCst) || s.generation.load(Ordering::SeqCst) != generation;
    loop {
        if dead(&s) {
            break;
        }
        if s.stalled.load(Ordering::SeqCst) {
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
        // Data read just before a stall is held until it ends.
        while s.stalled.load(Ordering::SeqCst) && !dead(&s) {
            std::thread::sleep(Duration::from_millis(10));
        }
        if dead(&s) || to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwards_cuts_and_stalls() {
        let server = redmirror_testkit::RedisServer::start();
        let p = Proxy::start(server.port()).unwrap();
        let url = format!("redis://127.0.0.1:{}", p.port());
        let client = redis::Client::open(url).unwrap();
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
        p.refuse(true);
        p.cut();
        assert!(client
            .get_connection()
            .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
            .is_err());
        p.refuse(false);
        assert!(p.accepted() >= 3);
    }
}
