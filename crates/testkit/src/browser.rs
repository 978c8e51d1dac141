//! A headless Chromium driven through `chromedriver` (WebDriver), for the
//! web console's tests.
//!
//! [`Browser::start`] runs `chromedriver` on a free port (killed and reaped
//! on drop) and gives what a WebDriver client needs to open a session: the
//! driver's URL and the Chromium binary and flags ([`Browser::chrome_args`]),
//! a throw-away profile directory included. Both programs come from
//! Debian's `chromium` and `chromium-driver` (`scripts/install-test-deps`);
//! `REDMIRROR_TEST_CHROMIUM` and `REDMIRROR_TEST_CHROMEDRIVER` name others.
//! A missing program panics with the install command: the test never skips.

use std::net::TcpStream;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// How to install the browser when it is missing.
pub const BROWSER_HINT: &str =
    "run scripts/install-test-deps (installs Debian's chromium and chromium-driver: /usr/bin/chromium, /usr/bin/chromedriver)";

/// A running `chromedriver` and the Chromium it starts for each session.
pub struct Browser {
    driver: Child,
    port: u16,
    chromium: PathBuf,
    profile: tempfile::TempDir,
    log: PathBuf,
}

fn find(var: &str, names: &[&str]) -> Option<PathBuf> {
    if let Some(p) = std::env::var_os(var) {
        return Some(PathBuf::from(p)).filter(|p| p.is_file());
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/lib/chromium".into());
    names
        .iter()
        .flat_map(|n| dirs.iter().map(move |d| d.join(n)))
        .find(|p| p.is_file())
}

impl Browser {
    /// Starts `chromedriver` and waits until it listens. Panics (naming the
    /// install command) when Chromium or chromedriver is missing.
    pub fn start() -> Browser {
        let chromium = find(
            "REDMIRROR_TEST_CHROMIUM",
            &["chromium", "chromium-browser", "google-chrome"],
        )
        .unwrap_or_else(|| panic!("chromium not found: {BROWSER_HINT}"));
        let chromedriver = find("REDMIRROR_TEST_CHROMEDRIVER", &["chromedriver"])
            .unwrap_or_else(|| panic!("chromedriver not found: {BROWSER_HINT}"));
        let profile = tempfile::tempdir().expect("tempdir for the browser profile");
        let log = profile.path().join("chromedriver.log");
        let port = crate::free_port();
        // Its own process group: chromedriver and the Chromium processes it
        // starts are killed together on drop, whatever state a failing test
        // left its session in.
        let driver = Command::new(&chromedriver)
            .process_group(0)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}; {BROWSER_HINT}", chromedriver.display()));
        let mut b = Browser {
            driver,
            port,
            chromium,
            profile,
            log,
        };
        crate::wait_for("chromedriver to listen", Duration::from_secs(20), || {
            if let Ok(Some(status)) = b.driver.try_wait() {
                panic!("chromedriver exited at start ({status}):\n{}", b.driver_log());
            }
            TcpStream::connect(("127.0.0.1", port)).ok()
        });
        b
    }

    /// The WebDriver endpoint, `http://127.0.0.1:{port}`.
    pub fn webdriver_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The Chromium binary.
    pub fn chromium(&self) -> &Path {
        &self.chromium
    }

    /// Chromium's flags: headless, and no connection of its own to any
    /// other host (this machine's network is closed: without them Chromium
    /// waits on refused background connections), a throw-away profile.
    pub fn chrome_args(&self) -> Vec<String> {
        let mut args: Vec<String> = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--disable-quic",
            "--no-first-run",
            "--no-default-browser-check",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-extensions",
            "--disable-default-apps",
            "--metrics-recording-only",
            "--password-store=basic",
            "--window-size=1280,900",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        args.push(format!(
            "--user-data-dir={}",
            self.profile.path().join("profile").display()
        ));
        args
    }

    /// chromedriver's log so far (for a failing test's message).
    pub fn driver_log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Ok(pid) = i32::try_from(self.driver.id()) {
            // SAFETY: kill(2) with the process group chromedriver leads
            // (started with process_group(0), not yet reaped): it touches
            // no memory.
            #[allow(unsafe_code)]
            unsafe {
                libc::kill(-pid, libc::SIGKILL);
            }
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}
