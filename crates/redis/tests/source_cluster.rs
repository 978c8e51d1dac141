//! The atomic source read on a Redis Cluster whose slot is being migrated
//! (three masters, real `redis-server` processes).

use bytes::Bytes;
use redmirror_config::RedisEndpoint;
use redmirror_core::rules::SourceFlow;
use redmirror_core::KeyLayout;
use redmirror_redis::epoch::{EpochReader, SourceEpoch};
use redmirror_redis::source::SourceReader;
use redmirror_testkit::cluster::{key_slot, RedisCluster};

/// A flow whose slot is half migrated (the slot migrating on its owner,
/// importing on another master, the flow's key already moved) is read on
/// the importing node after an `ASK`, with that node's clock: the first
/// `ASK` for the slot moves the source epoch forward, so what is read
/// there wins over what was read on the old node; a second read of the
/// same slot does not move it again.
#[tokio::test]
async fn the_first_ask_for_a_slot_moves_the_source_epoch_once() {
    let c = RedisCluster::start();
    let keys = KeyLayout::default();
    let id: &[u8] = b"moving";
    let fk = keys.flow_key(id);
    c.hset(&fk, &[(b"a", b"1")]);
    let slot = key_slot(&fk).to_string();
    let from = c.master_of(&fk);
    let to = c.masters().into_iter().find(|&p| p != from).expect("another master");
    let node_id = |port: u16| -> String { c.cmd_on(port, &[b"CLUSTER", b"MYID"]) };
    let (from_id, to_id) = (node_id(from), node_id(to));
    let _: () = c.cmd_on(
        to,
        &[
            b"CLUSTER",
            b"SETSLOT",
            slot.as_bytes(),
            b"IMPORTING",
            from_id.as_bytes(),
        ],
    );
    let _: () = c.cmd_on(
        from,
        &[b"CLUSTER", b"SETSLOT", slot.as_bytes(), b"MIGRATING", to_id.as_bytes()],
    );
    let to_port = to.to_string();
    let _: () = c.cmd_on(
        from,
        &[b"MIGRATE", b"127.0.0.1", to_port.as_bytes(), &fk, b"0", b"5000"],
    );

    let endpoint = RedisEndpoint {
        url: c.url(),
        tls: Default::default(),
    };
    let epoch = SourceEpoch::in_memory();
    let reader = SourceReader::new(&endpoint, keys, EpochReader::new(epoch.clone(), false)).expect("reader");
    let before = epoch.current();
    for round in 0..2 {
        let read = reader.read(&[Bytes::from_static(id)]).await.expect("read");
        let SourceFlow::Hash(fields) = &read.flows[0].state else {
            panic!("round {round}: {:?}", read.flows[0].state);
        };
        assert_eq!(fields.len(), 1, "{fields:?}");
        assert_eq!(
            epoch.current(),
            before + 1,
            "round {round}: one epoch for the slot's first ASK"
        );
        assert_eq!(read.flows[0].order.epoch, before + 1, "round {round}");
    }
}
