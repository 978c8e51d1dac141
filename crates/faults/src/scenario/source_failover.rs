//! `source-failover`: a failover to a replica whose clock is behind (one
//! more hour each time): the replica takes the data over replication, the
//! primary dies, and the promoted replica serves at the primary's address,
//! as behind a Sentinel-managed name. Fresh changes then carry older
//! source times than what was applied.

use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use redmirror_testkit::{RedisOptions, RedisServer};

use super::{probe_recovery, wait_loaded, Env, RECOVER_BOUND};
use crate::load;

/// Fails the source over to a replica `turn` hours behind, then measures
/// how long a change made after the kill takes to reach the destination.
pub(super) fn inject(env: &mut Env, turn: u32) -> anyhow::Result<String> {
    let t = Instant::now();
    let behind_us = -i64::from(turn) * 3_600_000_000;
    let replica = RedisServer::start_with(RedisOptions {
        clock_offset_us: behind_us,
        ..RedisOptions::with_notifications()
    });
    let mut rc = load::connect(&replica.url()).context("connect replica")?;
    redis::cmd("REPLICAOF")
        .arg("127.0.0.1")
        .arg(env.source.server().port())
        .query::<()>(&mut rc)?;
    let synced = wait_in_sync(env.source.server(), &mut rc)?;
    env.source.server().stop();
    let down = Instant::now();
    redis::cmd("REPLICAOF").arg("NO").arg("ONE").query::<()>(&mut rc)?;
    redis::cmd("SAVE").query::<()>(&mut rc)?;
    drop(rc);
    std::fs::copy(
        replica.dir().join("dump.rdb"),
        env.source.server().dir().join("dump.rdb"),
    )
    .context("copy the replica's data")?;
    drop(replica);
    env.source.server().set_clock_offset_us(behind_us);
    env.source.server().start_again();
    wait_loaded(&env.source.url())?;
    let serving = down.elapsed().as_secs_f64();
    let recovered = probe_recovery(env, "client:failover-probe", turn, down, |_, _| {})?;
    Ok(format!(
        "failover: primary kill -9, its replica ({} h behind, in sync after {synced:.1}s) promoted and \
         serving at the primary's address {serving:.1}s later; a change made then on the destination {} \
         after the kill ({:.1}s in all)",
        -behind_us / 3_600_000_000,
        recovered.map_or_else(
            || format!("not within {}s", RECOVER_BOUND.as_secs()),
            |s| format!("{s:.1}s")
        ),
        t.elapsed().as_secs_f64()
    ))
}

/// Waits until the replica on `replica` has caught up with `primary` (link
/// up, its offset at least the primary's when the wait began); seconds taken.
fn wait_in_sync(primary: &RedisServer, replica: &mut redis::Connection) -> anyhow::Result<f64> {
    let t = Instant::now();
    let field = |info: &str, name: &str| {
        info.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':').map(|v| v.trim().to_string()))
    };
    let mut pc = load::connect(&primary.url()).context("connect primary")?;
    let info: String = redis::cmd("INFO").arg("replication").query(&mut pc)?;
    let target: u64 = field(&info, "master_repl_offset")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    loop {
        let info: String = redis::cmd("INFO").arg("replication").query(replica)?;
        let up = field(&info, "master_link_status").as_deref() == Some("up");
        let at: u64 = field(&info, "slave_repl_offset")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        if up && at >= target {
            return Ok(t.elapsed().as_secs_f64());
        }
        if t.elapsed() > Duration::from_secs(30) {
            bail!("the replica did not catch up within 30 s: {info}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}
