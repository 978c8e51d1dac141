//! How a Redis connection that silently stops carrying bytes is noticed:
//! every number in one place.
//!
//! A NAT or load balancer that forgets an idle flow, or a peer that vanished
//! without a FIN, leaves a socket that neither errors nor closes: a read on
//! it waits for ever. SPEC section 2 asks for such a link to be noticed
//! within about 30 s. Three layers do it:
//!
//! 1. **TCP keepalive** on every socket (fred's and [`crate::bulk`]'s): an
//!    idle connection is probed by the kernel after [`KEEPALIVE_IDLE`], then
//!    every [`KEEPALIVE_INTERVAL`], and closed after [`KEEPALIVE_RETRIES`]
//!    unanswered probes: 10 + 3 × 5 = 25 s. The probes also keep a
//!    middlebox's flow state warm. [`TCP_USER_TIMEOUT`] closes a connection
//!    whose sent data stays unacknowledged that long (keepalive only runs
//!    while nothing is in flight).
//! 2. **Read deadlines**, for links the kernel cannot judge (a middlebox or
//!    proxy that acknowledges segments and delivers nothing): a fred command
//!    left without a reply for [`UNRESPONSIVE`] closes its connection and
//!    fred reconnects (checked every [`UNRESPONSIVE_CHECK`]), and a
//!    long-lived client is pinged every [`HEARTBEAT`] ([`crate::heartbeat`])
//!    so an idle connection that died is made again within 16 s, before a
//!    caller needs it (capture's reads after a re-subscription, the gap
//!    pass's `SCAN`); a bulk
//!    pipeline that receives no byte for [`READ_DEADLINE`] while replies are
//!    due fails and drops its connection, and a pooled bulk connection idle
//!    for more than [`BULK_REUSE_IDLE`] is replaced rather than trusted.
//! 3. **Probes** on the notification subscription, which is quiet whenever
//!    the source is: after [`PROBE_QUIET`] without a byte it sends `PING`
//!    (allowed while subscribed; RESP2 answers `["pong", ""]`), and a probe
//!    unanswered for [`PROBE_DEADLINE`] is a lost connection. A dead
//!    subscription is so noticed 10 to 20 s after its last byte; the
//!    subscriber re-subscribes and reports the gap.
//!
//! The deadlines are 10 s, not less, so a source busy for a few seconds
//! (a slow command, a fork for a snapshot) is not taken for dead: losing the
//! subscription costs a gap and a reconcile pass.

use std::time::Duration;

/// Idle time before the kernel's first keepalive probe.
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(10);
/// Time between keepalive probes.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Unanswered keepalive probes before the kernel closes the connection.
pub const KEEPALIVE_RETRIES: u32 = 3;
/// Longest time sent data may stay unacknowledged (`TCP_USER_TIMEOUT`,
/// Linux): the same 25 s as an idle connection's keepalive.
pub const TCP_USER_TIMEOUT: Duration = Duration::from_secs(25);

/// A fred command waiting this long for its reply closes its connection.
pub const UNRESPONSIVE: Duration = Duration::from_secs(10);
/// How often fred looks for such commands.
pub const UNRESPONSIVE_CHECK: Duration = Duration::from_secs(1);
/// How often a long-lived fred client is pinged: a dead idle connection is
/// found within `HEARTBEAT + UNRESPONSIVE + UNRESPONSIVE_CHECK` = 16 s.
pub const HEARTBEAT: Duration = Duration::from_secs(5);

/// A bulk pipeline that receives (or can send) nothing for this long while
/// replies are due has lost its connection.
pub const READ_DEADLINE: Duration = Duration::from_secs(10);
/// A pooled bulk connection idle for longer is replaced before use.
pub const BULK_REUSE_IDLE: Duration = Duration::from_secs(5);

/// A subscription quiet for this long is probed with `PING`.
pub const PROBE_QUIET: Duration = Duration::from_secs(10);
/// A probe unanswered for this long is a lost connection.
pub const PROBE_DEADLINE: Duration = Duration::from_secs(10);

/// The keepalive settings above, for `socket2` (fred takes the same type).
pub fn tcp_keepalive() -> socket2::TcpKeepalive {
    socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_RETRIES)
}

/// Sets keepalive and the user timeout on a connected socket.
pub fn set_socket_options(tcp: &tokio::net::TcpStream) -> std::io::Result<()> {
    let sock = socket2::SockRef::from(tcp);
    sock.set_tcp_keepalive(&tcp_keepalive())?;
    #[cfg(target_os = "linux")]
    sock.set_tcp_user_timeout(Some(TCP_USER_TIMEOUT))?;
    Ok(())
}
