//! The command line: check, graceful stop, demo.

use std::process::Stdio;

use redmirror_core::failpoint::Failpoint;

use crate::harness::*;

#[test]
fn check_passes_on_a_sane_setup() {
    let source = RedisServer::start();
    let dest = RedisServer::start_with(RedisOptions::default());
    let broker = Broker::shared();
    let env = mirror_env(&source.url(), &dest.url(), &broker.bootstrap());
    let out = command().arg("check").envs(&env).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in [
        "ok    source",
        "ok    dest",
        "ok    notifications",
        "ok    servers",
        "ok    topic",
        "check passed",
    ] {
        assert!(text.contains(line), "missing {line:?} in:\n{text}");
    }
    let mut env = env;
    env.insert("REDMIRROR_KAFKA_BROKERS".into(), "embedded".into());
    let out = command().arg("check").envs(&env).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("for demos and development only"), "{text}");
}

/// Everything down: `check` fails (exit 1) with one sentence per server that
/// names its address and the cause, never Rust's `Debug` of an I/O error,
/// and says once that no broker answered (the DLQ topic's probe is not
/// waited out a second time).
#[test]
fn check_says_in_words_which_servers_are_down() {
    let free_port = redmirror_testkit::free_port;
    let ports = [free_port(), free_port(), free_port()];
    let env = mirror_env(
        &format!("redis://127.0.0.1:{}", ports[0]),
        &format!("redis://127.0.0.1:{}", ports[1]),
        &format!("127.0.0.1:{}", ports[2]),
    );
    let out = command().arg("check").envs(&env).stdin(Stdio::null()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (what, port) in [("source", ports[0]), ("dest", ports[1])] {
        let line = text
            .lines()
            .find(|l| l.starts_with(&format!("FAIL  {what}:")))
            .unwrap_or_else(|| panic!("no FAIL line for {what} in:\n{text}"));
        assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
        assert!(line.contains("connection refused"), "{line}");
    }
    assert!(!text.contains("Os {"), "Rust Debug in:\n{text}");
    let kafka: Vec<_> = text.lines().filter(|l| l.starts_with("FAIL  kafka:")).collect();
    assert_eq!(kafka.len(), 1, "{text}");
    assert!(
        kafka[0].contains(&format!("no broker at 127.0.0.1:{} answered", ports[2])),
        "{}",
        kafka[0]
    );
}

#[test]
fn sigterm_stops_cleanly_with_exit_0() {
    let mut s = Setup::run();
    let code = s.mirror.terminate();
    assert_eq!(code, Some(0), "{}", s.mirror.output());
    assert!(s.mirror.output().contains("Stopped cleanly."));
}

/// A role that ends without being asked fails the process (exit 1, its
/// cause logged), whether its stream ended or a write task panicked.
#[test]
fn run_exits_non_zero_when_apply_ends_by_itself() {
    for (failpoint, cause) in [
        (Failpoint::ApplyStreamEnd, "the Kafka consumer stream ended"),
        (Failpoint::ApplyWritePanic, "its write task failed"),
    ] {
        let source = RedisServer::start();
        let dest = RedisServer::start();
        let mut env = mirror_env(&source.url(), &dest.url(), &Broker::shared().bootstrap());
        env.insert("FAILPOINTS".into(), failpoint.name().into());
        let mut mirror = Mirror::start(&["run"], &env);
        let mut src = source.conn();
        let mut n = 0;
        // Written until capture is subscribed and apply receives one.
        wait_for(&format!("redmirror to exit by itself ({failpoint})"), CONVERGE, || {
            n += 1;
            if n % 20 == 1 {
                hset(&mut src, b"client:ends", &[(b"n", n.to_string().as_bytes())]);
            }
            (!mirror.running()).then_some(())
        });
        let code = mirror
            .wait_exit(std::time::Duration::from_secs(1))
            .expect("an exit code");
        let out = mirror.output();
        assert_eq!(code, 1, "{failpoint}: {out}");
        assert!(
            out.contains("apply failed") || out.contains("apply ended"),
            "{failpoint}: {out}"
        );
        assert!(out.contains(cause), "{failpoint}: {out}");
    }
}

#[test]
fn the_demo_shows_mirroring_and_protection() {
    let out = command()
        .args(["demo", "--for", "14s"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Not a terminal: an append-only log of steps and changes, then the final state.
    assert!(text.contains("step 1. create flow-1"), "{text}");
    assert!(text.contains("mirrored (flowConfigHistory excluded)"), "{text}");
    assert!(text.contains("filtered organisation: never copied"), "{text}");
    assert!(text.contains("native staging flow: untouched"), "{text}");
    assert!(text.contains("final state:"), "{text}");
    assert!(!text.contains("changed on staging"), "{text}");
    // The product's log goes to the file named, not to the output.
    assert!(!text.contains(" INFO "), "{text}");
    let log = text
        .lines()
        .find_map(|l| l.split("the log stays at ").nth(1))
        .unwrap_or_else(|| panic!("no log path: {text}"));
    let logged = std::fs::read_to_string(log.trim()).unwrap();
    assert!(logged.contains("redmirror started."), "{logged}");
    let _ = std::fs::remove_dir_all(std::path::Path::new(log.trim()).parent().unwrap());
}

/// A pseudo-terminal: the demo's stdin/stdout/stderr, its controlling
/// terminal (so Ctrl-C is a SIGINT to it), and what it wrote, as a screen.
/// Opening one and making it the child's controlling terminal takes libc
/// calls, hence the unsafe blocks.
#[allow(unsafe_code)]
mod pty {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    use std::sync::mpsc;

    pub const ROWS: u16 = 50;
    pub const COLS: u16 = 200;

    pub struct Pty {
        pub master: std::fs::File,
        pub bytes: mpsc::Receiver<Vec<u8>>,
        pub parser: vt100::Parser,
        pub total: usize,
    }

    impl Pty {
        /// Starts `cmd` on a new pseudo-terminal.
        pub fn spawn(mut cmd: std::process::Command) -> (Pty, std::process::Child) {
            let (mut master, mut slave) = (0, 0);
            let size = libc::winsize {
                ws_row: ROWS,
                ws_col: COLS,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: openpty writes two descriptors we then own.
            let rc = unsafe { libc::openpty(&mut master, &mut slave, std::ptr::null_mut(), std::ptr::null(), &size) };
            assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
            // SAFETY: both descriptors are open and owned by nothing else.
            let (master, slave) = unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
            cmd.stdin(slave.try_clone().unwrap())
                .stdout(slave.try_clone().unwrap())
                .stderr(slave);
            // SAFETY: only async-signal-safe calls between fork and exec.
            unsafe {
                cmd.pre_exec(|| {
                    if libc::setsid() < 0 || libc::ioctl(0, libc::TIOCSCTTY, 0) < 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    Ok(())
                });
            }
            let child = cmd.spawn().expect("spawn on the pty");
            drop(cmd);
            let master = std::fs::File::from(master);
            let mut reader = master.try_clone().unwrap();
            let (tx, rx) = mpsc::channel();
            std::thread::spawn(move || {
                let mut buf = [0u8; 8192];
                while let Ok(n) = reader.read(&mut buf) {
                    if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                        break;
                    }
                }
            });
            let pty = Pty {
                master,
                bytes: rx,
                parser: vt100::Parser::new(ROWS, COLS, 0),
                total: 0,
            };
            (pty, child)
        }

        /// Feeds what arrived to the screen; the screen's text.
        pub fn screen(&mut self) -> String {
            while let Ok(b) = self.bytes.try_recv() {
                self.total += b.len();
                self.parser.process(&b);
            }
            self.parser.screen().contents()
        }
    }
}

#[test]
fn the_demo_redraws_in_place_on_a_terminal_and_ctrl_c_removes_what_it_started() {
    use std::io::Write;
    let mut cmd = std::process::Command::new(bin());
    cmd.arg("demo");
    for (k, _) in std::env::vars() {
        if k.starts_with("REDMIRROR_") {
            cmd.env_remove(k);
        }
    }
    let (mut pty, mut child) = pty::Pty::spawn(cmd);
    let row = |screen: &str, id: &str| -> String {
        screen
            .lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_default()
            .to_string()
    };
    let screen = wait_for(
        "the demo to show every step done and the flows' final states",
        CONVERGE * 2,
        || {
            let s = pty.screen();
            let done = s.contains("All sample steps done")
                && row(&s, "flow-1").ends_with("mirrored (flowConfigHistory excluded)")
                && row(&s, "flow-3").ends_with("mirrored")
                && row(&s, "flow-4").ends_with("absent on both")
                && row(&s, "flow-5").ends_with("absent on both")
                && row(&s, "flow-2").ends_with("absent on both")
                && row(&s, "demo-1").ends_with("filtered organisation: never copied")
                && row(&s, "native-1").ends_with("native staging flow: untouched");
            done.then_some(s)
        },
    );
    // Live counts, not zero.
    let counts = screen.lines().find(|l| l.starts_with("captured ")).unwrap_or_default();
    let number = |label: &str| -> f64 {
        counts
            .split(label)
            .nth(1)
            .and_then(|r| r.split_whitespace().next())
            .and_then(|n| n.trim_end_matches(',').parse().ok())
            .unwrap_or_else(|| panic!("no {label} in {counts:?}"))
    };
    assert!(number("captured ") >= 9.0, "{screen}");
    assert!(number("applied ") >= 4.0, "{screen}");
    assert!(number("deleted ") >= 2.0, "{screen}");
    assert!(number("native ") >= 1.0, "{screen}");
    assert!(number("filtered ") >= 1.0, "{screen}");
    assert!(screen.contains("redis-cli -p "), "{screen}");
    assert!(
        !screen.contains(" INFO ") && !screen.contains(" WARN "),
        "the product's log goes to its file:\n{screen}"
    );
    // The screen is redrawn in place: its first line is the title, not
    // something scrolled up.
    assert!(screen.starts_with("redmirror demo:"), "{screen}");
    // Idle, it writes (almost) nothing: no endless redraws.
    let before = pty.total;
    let idle_end = std::time::Instant::now() + std::time::Duration::from_secs(3);
    while std::time::Instant::now() < idle_end {
        pty.screen();
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(
        pty.total - before < 4096,
        "{} bytes written in 3 s of idling",
        pty.total - before
    );
    let ports: Vec<u16> = screen
        .lines()
        .filter(|l| l.trim_start().starts_with("source ") || l.trim_start().starts_with("destination "))
        .filter_map(|l| l.rsplit(':').next()?.trim().parse().ok())
        .collect();
    assert_eq!(ports.len(), 2, "{screen}");

    // Ctrl-C: exit 0, servers gone.
    pty.master.write_all(&[3]).unwrap();
    let status = wait_for("the demo to stop after Ctrl-C", CONVERGE, || {
        child.try_wait().ok().flatten()
    });
    assert_eq!(status.code(), Some(0), "{}", pty.screen());
    for port in ports {
        wait_for(
            &format!("the demo's redis-server on port {port} to be gone"),
            CONVERGE,
            || std::net::TcpStream::connect(("127.0.0.1", port)).is_err().then_some(()),
        );
    }
}
