//! What `/readyz` means for trust: a replica whose authority went stale
//! leaves the load balancer while a peer's trust is fresh, and stays ready
//! (saying so) when no peer's is, so that a fleet-wide trust outage never
//! leaves zero endpoints. `portcullis_ready`, `portcullis_trust_degraded`
//! and `portcullis_trust_available` say which it is.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use crate::support::cosign::VendorKey;
use crate::support::trust_server::TrustServer;
use crate::support::*;
use portcullis::clock::ManualClock;

const MAX_STALE: Duration = Duration::from_secs(3600);

/// A replica trusting `acme` through `server` (refreshed each second,
/// `max_stale` one hour) and `static` from a key file, its admin listener
/// on `admin_port`, asking `peers`.
async fn replica(
    server: &TrustServer,
    clock: &Arc<ManualClock>,
    admin_port: u16,
    peers: &[String],
) -> Proxy {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("ca.pem"), &server.ca_pem).unwrap();
    std::fs::write(
        dir.path().join("static.pub"),
        VendorKey::generate().public_pem(),
    )
    .unwrap();
    let source = [
        ("refresh", "1s"),
        ("max_stale", "1h"),
        ("ca_file", "ca.pem"),
    ];
    let config = ProxyConfig::new()
        .in_dir(dir)
        .clock(clock)
        .admin_port(admin_port)
        .upstream("local", "http://127.0.0.1:9")
        .authority(Authority::source("acme", &server.url(), &source))
        .authority(Authority::keys("static", &["static.pub"]))
        .policy(Policy::signed_by_required(
            "vendors",
            "**",
            &["acme", "static"],
            "any",
        ));
    // No peers: no `peers` key at all.
    let config = match peers {
        [] => config,
        _ => {
            let peers: Vec<&str> = peers.iter().map(String::as_str).collect();
            config.peers(&peers)
        }
    };
    Proxy::start(config).await
}

/// GET an unauthenticated admin path: status and body.
async fn admin(proxy: &Proxy, path: &str) -> (u16, String) {
    let r = proxy
        .client
        .get(format!("{}{path}", proxy.admin_url()))
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

/// `acme`'s source goes down and each of `clocks` moves past `max_stale`.
async fn go_stale(server: &TrustServer, replicas: &[(&Proxy, &Arc<ManualClock>)]) {
    server.set_down(true);
    for (proxy, _) in replicas {
        proxy.failed_refreshes("acme", 1.0).await;
    }
    for (_, clock) in replicas {
        clock.advance(MAX_STALE + Duration::from_secs(60));
    }
}

/// `portcullis_ready`, `portcullis_trust_degraded` and
/// `portcullis_trust_available` for `acme` and `static`, as scraped.
async fn gauges(proxy: &Proxy) -> [f64; 4] {
    [
        proxy.metric("portcullis_ready", &[]).await,
        proxy.metric("portcullis_trust_degraded", &[]).await,
        proxy
            .metric("portcullis_trust_available", &["authority=\"acme\""])
            .await,
        proxy
            .metric("portcullis_trust_available", &["authority=\"static\""])
            .await,
    ]
}

fn now() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(SystemTime::now()))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_with_stale_trust_leaves_the_load_balancer_while_its_peer_is_fresh() {
    let key = VendorKey::generate();
    let server = TrustServer::start(&key.public_pem(), None).await;
    let (fresh_clock, stale_clock) = (now(), now());
    let fresh = replica(&server, &fresh_clock, free_port(), &[]).await;
    let stale_port = free_port();
    // Its own address is among its peers (a headless Service lists every
    // replica), and the fresh one by a name that resolves to it.
    let stale = replica(
        &server,
        &stale_clock,
        stale_port,
        &[
            format!("127.0.0.1:{stale_port}"),
            format!("localhost:{}", fresh.admin_port),
        ],
    )
    .await;
    for p in [&fresh, &stale] {
        assert_eq!(admin(p, "/readyz").await, (200, "ready\n".into()));
        assert_eq!(admin(p, "/readyz/trust").await, (200, "fresh\n".into()));
        assert_eq!(gauges(p).await, [1.0, 0.0, 1.0, 1.0]);
    }

    // The source goes down; only the stale replica's clock passes max_stale.
    go_stale(&server, &[(&stale, &stale_clock)]).await;
    let (status, body) = admin(&stale, "/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(
        body.starts_with("trust degraded (trust for acme is stale: its source https://127.0.0.1:"),
        "{body}"
    );
    assert!(body.contains("longer ago than max_stale (1h)"), "{body}");
    assert!(
        body.ends_with(&format!(
            ") and peer 127.0.0.1:{} is fresh\n",
            fresh.admin_port
        )),
        "{body}"
    );
    assert!(!body.contains("static"), "only the stale authority: {body}");
    let (status, body) = admin(&stale, "/readyz/trust").await;
    assert_eq!(status, 503);
    assert!(
        body.starts_with("degraded: trust for acme is stale: "),
        "{body}"
    );
    assert_eq!(gauges(&stale).await, [0.0, 1.0, 0.0, 1.0]);

    // The peer it defers to still serves: fresh, ready.
    assert_eq!(admin(&fresh, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(
        admin(&fresh, "/readyz/trust").await,
        (200, "fresh\n".into())
    );
    assert_eq!(gauges(&fresh).await, [1.0, 0.0, 1.0, 1.0]);

    // The source is back: the stale replica verifies it again and returns.
    server.set_down(false);
    let mut answer = admin(&stale, "/readyz").await;
    for _ in 0..100 {
        if answer.0 == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        answer = admin(&stale, "/readyz").await;
    }
    assert_eq!(answer, (200, "ready\n".into()));
    assert_eq!(gauges(&stale).await, [1.0, 0.0, 1.0, 1.0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn when_every_replica_is_stale_each_stays_ready_and_says_its_trust_is_degraded() {
    let key = VendorKey::generate();
    let server = TrustServer::start(&key.public_pem(), None).await;
    let (a_clock, b_clock) = (now(), now());
    let (a_port, b_port) = (free_port(), free_port());
    let peers = [format!("127.0.0.1:{a_port}"), format!("127.0.0.1:{b_port}")];
    let a = replica(&server, &a_clock, a_port, &peers).await;
    let b = replica(&server, &b_clock, b_port, &peers).await;
    go_stale(&server, &[(&a, &a_clock), (&b, &b_clock)]).await;
    for p in [&a, &b] {
        let (status, body) = admin(p, "/readyz").await;
        assert_eq!(status, 200, "{body}");
        assert!(
            body.starts_with("ready (trust degraded: trust for acme is stale: "),
            "{body}"
        );
        assert!(!body.contains("is fresh"), "{body}");
        assert_eq!(admin(p, "/readyz/trust").await.0, 503);
        assert_eq!(gauges(p).await, [1.0, 1.0, 0.0, 1.0]);
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_stale_replica_without_peers_stays_ready_and_says_its_trust_is_degraded() {
    let key = VendorKey::generate();
    let server = TrustServer::start(&key.public_pem(), None).await;
    let clock = now();
    let alone = replica(&server, &clock, free_port(), &[]).await;
    assert_eq!(admin(&alone, "/readyz").await, (200, "ready\n".into()));
    assert_eq!(gauges(&alone).await, [1.0, 0.0, 1.0, 1.0]);
    go_stale(&server, &[(&alone, &clock)]).await;
    let (status, body) = admin(&alone, "/readyz").await;
    assert_eq!(status, 200, "{body}");
    assert!(
        body.starts_with("ready (trust degraded: trust for acme is stale: "),
        "{body}"
    );
    let (status, body) = admin(&alone, "/readyz/trust").await;
    assert_eq!(status, 503);
    assert!(body.contains("trust for acme is stale"), "{body}");
    assert_eq!(gauges(&alone).await, [1.0, 1.0, 0.0, 1.0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_peer_that_never_answers_costs_readyz_about_a_second_and_its_silence_is_reused() {
    let key = VendorKey::generate();
    let server = TrustServer::start(&key.public_pem(), None).await;
    // Accepts connections (the kernel's backlog) and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let clock = now();
    let stale = replica(
        &server,
        &clock,
        free_port(),
        &[silent.local_addr().unwrap().to_string()],
    )
    .await;
    go_stale(&server, &[(&stale, &clock)]).await;
    // The background tick may have started the round; either way /readyz
    // waits for at most one peer timeout.
    let started = std::time::Instant::now();
    let (status, body) = admin(&stale, "/readyz").await;
    let first = started.elapsed();
    assert_eq!(status, 200, "{body}");
    assert!(body.starts_with("ready (trust degraded: "), "{body}");
    assert!(first < Duration::from_millis(2500), "took {first:?}");
    let started = std::time::Instant::now();
    let (status, _) = admin(&stale, "/readyz").await;
    let again = started.elapsed();
    assert_eq!(status, 200);
    assert!(
        again < Duration::from_millis(500),
        "the answer is reused for 5 s, not asked again: took {again:?}"
    );
}

fn with_peers(peers: &str) -> Result<portcullis::Config, Vec<portcullis::config::Problem>> {
    portcullis::Config::from_toml(
        &format!(
            "[server]\nlisten = \"127.0.0.1:5000\"\n\n[admin]\nlisten = \"127.0.0.1:9090\"\npeers = [{peers}]\n\n[cache]\ndir = \"cache\"\n\n{}\n{}",
            Upstream::test("hub", "https://registry.example").toml(),
            Policy::allow_all().toml(),
        ),
        Path::new("/etc/portcullis"),
    )
}

#[test]
fn admin_peers_are_checked_with_their_key_paths() {
    let config = with_peers(
        "\"portcullis-peers:9090\", \"10.0.0.5:9090\", \"[fd00::5]:9090\", \"peers.ns.svc.cluster.local.:9090\"",
    )
    .unwrap();
    let peers: Vec<String> = config
        .admin
        .unwrap()
        .peers
        .iter()
        .map(|p| p.to_string())
        .collect();
    assert_eq!(
        peers,
        [
            "portcullis-peers:9090",
            "10.0.0.5:9090",
            "[fd00::5]:9090",
            "peers.ns.svc.cluster.local:9090"
        ]
    );

    let problems = with_peers(
        "\"ok:9090\", \"no port\", \"bad host:9090\", \"ok:0\", \"ok:9090\", \"-x:1\", \"10.0.0.300:9090\"",
    )
    .unwrap_err();
    let paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "admin.peers[1]",
            "admin.peers[2]",
            "admin.peers[3]",
            "admin.peers[4]",
            "admin.peers[5]",
            "admin.peers[6]"
        ],
        "{problems:?}"
    );
    assert!(
        problems[2].message.contains("is not an address"),
        "{problems:?}"
    );
    assert!(problems[3].message.contains("listed twice"), "{problems:?}");

    let seventeen = (0..17)
        .map(|i| format!("\"10.0.0.{i}:9090\""))
        .collect::<Vec<_>>()
        .join(", ");
    let problems = with_peers(&seventeen).unwrap_err();
    assert_eq!(problems.len(), 1, "{problems:?}");
    assert_eq!(problems[0].path, "admin.peers");
    assert!(problems[0].message.contains("at most 16"), "{problems:?}");
}

/// The instance id a replica answers `/readyz/trust` with.
async fn instance(proxy: &Proxy) -> String {
    let r = proxy
        .client
        .get(format!("{}/readyz/trust", proxy.admin_url()))
        .send()
        .await
        .unwrap();
    r.headers()
        .get("portcullis-instance")
        .expect("an instance header")
        .to_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread")]
async fn each_replica_answers_readyz_trust_with_its_own_random_instance_id() {
    // A replica that finds its own address among its peers recognises its
    // own answer by this id, so the id must be the process's and no other's.
    let key = VendorKey::generate();
    let server = TrustServer::start(&key.public_pem(), None).await;
    let (a, b) = (
        replica(&server, &now(), free_port(), &[]).await,
        replica(&server, &now(), free_port(), &[]).await,
    );
    let id = instance(&a).await;
    assert_eq!(id.len(), 32, "16 random bytes in hex: {id:?}");
    assert!(id.bytes().all(|c| c.is_ascii_hexdigit()), "{id:?}");
    assert_eq!(instance(&a).await, id, "the same for every answer");
    assert_ne!(instance(&b).await, id, "another replica's differs");
}
