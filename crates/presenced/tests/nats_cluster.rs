//! The NATS test cluster itself (tests/common/nats.rs): three nats-server nodes with
//! JetStream form a cluster, sync every write, elect a new meta leader when the old
//! one is killed, and take the killed node back. Needs scripts/install-nats; fails,
//! not skips, without it.

mod common;

use common::nats::NatsCluster;
use serde_json::{Value, json};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// One request over the NATS client protocol (no client library needed for a JetStream
/// API call): subscribes to a reply subject, publishes, and returns the reply as JSON.
fn nats_request(url: &str, subject: &str, payload: &Value) -> Value {
    let addr = url.strip_prefix("nats://").expect("nats:// URL");
    let stream = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {url}: {e}"));
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut w = stream.try_clone().unwrap();
    let mut r = BufReader::new(stream);
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    assert!(line.starts_with("INFO "), "{url} greeted with {line:?}");
    let body = payload.to_string();
    write!(
        w,
        "CONNECT {{\"verbose\":false,\"pedantic\":false,\"protocol\":1}}\r\n\
         SUB _INBOX.nats_cluster_test 1\r\n\
         PUB {subject} _INBOX.nats_cluster_test {}\r\n{body}\r\n",
        body.len()
    )
    .unwrap();
    loop {
        line.clear();
        r.read_line(&mut line)
            .unwrap_or_else(|e| panic!("no reply to {subject} from {url}: {e}"));
        let l = line.trim_end();
        if l == "PING" {
            w.write_all(b"PONG\r\n").unwrap();
        } else if l.starts_with("-ERR") {
            panic!("{url}: {l}");
        } else if let Some(rest) = l.strip_prefix("MSG ") {
            // MSG <subject> <sid> [reply-to] <#bytes>
            let len: usize = rest.split_whitespace().last().unwrap().parse().unwrap();
            let mut msg = vec![0; len + 2];
            r.read_exact(&mut msg).unwrap();
            return serde_json::from_slice(&msg[..len]).expect("JSON reply");
        }
    }
}

fn create_r3_stream(c: &NatsCluster, via: usize, name: &str) {
    let reply = nats_request(
        &c.url(via),
        &format!("$JS.API.STREAM.CREATE.{name}"),
        &json!({
            "name": name,
            "subjects": [format!("{}.>", name.to_lowercase())],
            "num_replicas": 3,
            "storage": "file",
        }),
    );
    assert!(reply.get("error").is_none(), "stream create: {reply}");
    assert_eq!(reply["config"]["num_replicas"], 3, "{reply}");
}

#[test]
fn three_nodes_elect_a_leader_survive_its_kill_and_take_it_back() {
    let t0 = Instant::now();
    let mut c = NatsCluster::start(3);
    let started = t0.elapsed();

    let urls = c.urls();
    assert_eq!(urls.len(), 3);
    for (i, u) in urls.iter().enumerate() {
        assert!(u.starts_with("nats://127.0.0.1:"), "{u}");
        assert_eq!(*u, c.url(i));
        assert!(!urls[..i].contains(u), "duplicate URL {u}");
    }

    let leader = c.meta_leader().expect("ready after start");
    for i in 0..3 {
        let varz = c.monitor(i, "/varz").expect("/varz");
        assert_eq!(varz["server_name"], c.name(i));
        let jsz = c.jsz(i).expect("/jsz");
        assert_eq!(c.node_index(c.name(i)), Some(i));
        let meta = &jsz["meta_cluster"];
        assert_eq!(meta["name"], "pres-test", "{jsz}");
        assert_eq!(meta["leader"], leader.as_str(), "{jsz}");
        assert_eq!(meta["cluster_size"], 3, "{jsz}");
        // sync_interval: always shows as sync_always.
        assert_eq!(jsz["config"]["sync_always"], true, "{jsz}");
        let store = jsz["config"]["store_dir"].as_str().unwrap();
        assert!(
            store.starts_with(c.dir().to_str().unwrap()),
            "{store} outside {}",
            c.dir().display()
        );
    }
    assert_eq!(c.node_index("n4"), None);

    // A replicated stream gets a leader among the three.
    create_r3_stream(&c, 0, "PRES_CLUSTER_TEST");
    let stream_leader = c.wait_for_stream_leader("PRES_CLUSTER_TEST", Duration::from_secs(10));
    assert!(c.node_index(&stream_leader).is_some(), "{stream_leader}");

    // Kill -9 of the meta leader: the other two elect one of themselves (raft's
    // election timeout is 4-9 s).
    let victim = c.node_index(&leader).unwrap();
    let t_kill = Instant::now();
    c.kill(victim);
    assert!(!c.is_running(victim));
    assert!(c.jsz(victim).is_none(), "killed node still answers");
    let new_leader = c.wait_for_meta_leader(Duration::from_secs(20));
    let elected = t_kill.elapsed();
    assert_ne!(new_leader, leader, "the dead node cannot lead");
    for i in (0..3).filter(|&i| i != victim) {
        let jsz = c.jsz(i).unwrap();
        assert_eq!(jsz["meta_cluster"]["leader"], new_leader.as_str(), "{jsz}");
        assert_eq!(jsz["meta_cluster"]["cluster_size"], 3, "{jsz}");
    }
    // The stream keeps (or regains) a leader on a surviving node.
    let s = c.wait_for_stream_leader("PRES_CLUSTER_TEST", Duration::from_secs(20));
    assert_ne!(c.node_index(&s), Some(victim));

    // Back with the same ports and store: it rejoins and follows the new leader.
    let t_restart = Instant::now();
    c.restart(victim);
    let rejoined = t_restart.elapsed();
    let after = c.meta_leader().expect("ready after restart");
    let jsz = c.jsz(victim).expect("restarted node answers");
    assert_eq!(
        c.monitor(victim, "/varz").unwrap()["server_name"],
        c.name(victim)
    );
    assert_eq!(jsz["meta_cluster"]["leader"], after.as_str(), "{jsz}");
    assert_eq!(jsz["config"]["sync_always"], true, "{jsz}");
    c.wait_for_stream_leader("PRES_CLUSTER_TEST", Duration::from_secs(20));

    eprintln!(
        "started in {started:.2?}, new meta leader {elected:.2?} after the kill, \
         rejoined {rejoined:.2?} after the restart, {:.2?} in all",
        t0.elapsed()
    );
}

#[test]
fn a_single_node_is_a_standalone_jetstream_server() {
    let c = NatsCluster::start(1);
    assert_eq!(c.urls(), vec![c.url(0)]);
    assert_eq!(c.meta_leader().as_deref(), Some("n1"));
    let jsz = c.jsz(0).unwrap();
    assert_eq!(jsz["config"]["sync_always"], true, "{jsz}");
    let reply = nats_request(
        &c.url(0),
        "$JS.API.STREAM.CREATE.PRES_SINGLE",
        &json!({"name": "PRES_SINGLE", "subjects": ["pres_single.>"], "storage": "file"}),
    );
    assert!(reply.get("error").is_none(), "{reply}");
    assert_eq!(c.stream_leader("PRES_SINGLE").as_deref(), Some("n1"));
    assert_eq!(c.stream_leader("NO_SUCH_STREAM"), None);
}
