//! Replicas sharing content in a real S3-compatible store (Garage) and
//! coordinating through a real Redis, behind a per-request round-robin
//! balancer, pulled from with skopeo, containerd and plain HTTP (decision 0013).

use std::time::{Duration, Instant};

use object_store::ObjectStoreExt;

use crate::support::balancer::Balancer;
use crate::support::cosign::{self, VendorKey};
use crate::support::garage::Garage;
use crate::support::redis_server::Redis;
use crate::support::*;

/// The secret every replica of a test shares (at least 32 bytes).
const SECRET: &str = "0123456789abcdef0123456789abcdef-test";

/// An upstream registry, Redis, Garage and the files replicas read.
struct Shared {
    registry: Registry,
    redis: Redis,
    garage: Garage,
    acme: VendorKey,
    pusher: Pusher,
    files: tempfile::TempDir,
    /// Objects of this test live under it (Garage is per test anyway).
    prefix: String,
}

impl Shared {
    async fn start() -> Shared {
        let (registry, redis, garage) =
            tokio::join!(Registry::start(), Redis::start(), Garage::start());
        let acme = VendorKey::generate();
        let files = tempfile::tempdir().unwrap();
        acme.write_public(files.path(), "acme.pub");
        std::fs::write(files.path().join("cluster.secret"), SECRET).unwrap();
        let pusher = Pusher::new(&registry.url());
        Shared {
            registry,
            redis,
            garage,
            acme,
            pusher,
            files,
            prefix: "portcullis/".into(),
        }
    }

    /// A replica's config: Acme's key required for `local/acme/**`, the
    /// rest denied, content in the bucket, coordination in Redis.
    fn replica(&self) -> ProxyConfig {
        let acme_pub = format!("{}/acme.pub", self.files.path().display());
        self.joined(
            ProxyConfig::new()
                .upstream("local", &self.registry.url())
                .authority(Authority::keys("acme", &[&acme_pub]))
                .policy(Policy::signed_by("acme", "local/acme/**", &["acme"]))
                .policy(Policy::deny("rest", "**")),
        )
    }

    /// `config` with the bucket and Redis of this cluster.
    fn joined(&self, config: ProxyConfig) -> ProxyConfig {
        self.joined_with(config, self.s3_table())
    }

    /// The `[cache.s3]` table of this cluster's bucket.
    fn s3_table(&self) -> String {
        self.garage.cache_table(self.files.path(), &self.prefix)
    }

    /// `config` with the bucket (`[cache.s3]` table `s3`) and Redis.
    fn joined_with(&self, config: ProxyConfig, s3: String) -> ProxyConfig {
        config
            .cache("store = \"s3\"")
            .raw(&s3)
            .raw(&format!(
                "[cluster]\nredis = \"{}\"\nsecret_file = \"{}\"\nlease_ttl = \"2s\"\nlease_wait = \"20s\"\ntimeout = \"2s\"\n",
                self.redis.url(),
                self.files.path().join("cluster.secret").display()
            ))
    }

    /// A signed image at `acme/<repo>:v1` and an unsigned one at
    /// `acme/<repo>-unsigned:v1` with other blobs.
    async fn push(&self, seed: u64, repo: &str) -> (Image, Image) {
        let signed = Image::oci(seed, &[3000, 70_000]);
        let unsigned = Image::oci(seed + 1, &[2000]);
        self.pusher
            .image(&format!("acme/{repo}"), "v1", &signed)
            .await;
        self.pusher
            .image(&format!("acme/{repo}-unsigned"), "v1", &unsigned)
            .await;
        cosign::push_signatures(
            &self.pusher,
            &format!("acme/{repo}"),
            &signed.digest,
            &[self.acme.sign(&signed.digest, "r")],
        )
        .await;
        (signed, unsigned)
    }

    /// Waits until the bucket holds blob `digest` (uploads run beside serving).
    async fn until_shared(&self, digest: &str) {
        let path = self.blob_object(digest);
        let bucket = self.garage.client();
        for _ in 0..200 {
            if bucket.head(&path).await.is_ok() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("blob {digest} never reached the bucket");
    }

    fn blob_object(&self, digest: &str) -> object_store::path::Path {
        let (alg, hex) = digest.split_once(':').unwrap();
        object_store::path::Path::from(format!("{}blobs/{alg}/{hex}", self.prefix))
    }

    fn manifest_object(&self, digest: &str) -> object_store::path::Path {
        let (alg, hex) = digest.split_once(':').unwrap();
        object_store::path::Path::from(format!("{}manifests/{alg}/{hex}", self.prefix))
    }

    /// A value sealed as replicas seal it (what a writer holding the
    /// secret could put in Redis).
    fn sealed(key: &str, value: &str) -> String {
        let key_bytes = aws_lc_rs::hmac::Key::new(aws_lc_rs::hmac::HMAC_SHA256, SECRET.as_bytes());
        let mac = aws_lc_rs::hmac::sign(&key_bytes, format!("{key}\n{value}").as_bytes());
        format!("{value}|{}", hex::encode(mac.as_ref()))
    }
}

async fn replicas(shared: &Shared, n: usize) -> Vec<Proxy> {
    let mut all = Vec::new();
    for _ in 0..n {
        all.push(Proxy::start(shared.replica()).await);
    }
    all
}

async fn balancer(replicas: &[Proxy]) -> Balancer {
    Balancer::start(replicas.iter().map(|r| r.host()).collect()).await
}

/// A metric summed over replicas.
/// Redis commands that failed, waits that ran out and leases that ended
/// without their result, over all replicas: each lets a replica work on
/// its own (so it may ask the upstream itself).
async fn coordination_failures(replicas: &[Proxy]) -> f64 {
    total(
        replicas,
        "portcullis_cluster_requests_total",
        &["outcome=\"error\""],
    )
    .await
        + total(
            replicas,
            "portcullis_cluster_lease_waits_total",
            &["outcome=\"timeout\""],
        )
        .await
        + total(
            replicas,
            "portcullis_cluster_lease_waits_total",
            &["outcome=\"expired\""],
        )
        .await
}

async fn total(replicas: &[Proxy], name: &str, matching: &[&str]) -> f64 {
    let mut sum = 0.0;
    for r in replicas {
        sum += r.metric(name, matching).await;
    }
    sum
}

async fn get(client: &reqwest::Client, url: String) -> reqwest::Response {
    client
        .get(url)
        .header(
            "accept",
            "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json",
        )
        .send()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pulls_through_three_replicas_behind_a_round_robin_balancer_and_unsigned_is_denied_everywhere()
 {
    let shared = Shared::start().await;
    let (signed, unsigned) = shared.push(900, "app").await;
    let replicas = replicas(&shared, 3).await;
    let lb = balancer(&replicas).await;
    let skopeo = crate::support::skopeo::Skopeo::new();

    // Ten pulls, each spread over the replicas request by request.
    let pulls = (0..10).map(|i| {
        let skopeo = &skopeo;
        let src = format!("docker://{}/local/acme/app:v1", lb.host());
        async move {
            let dest = skopeo.dest(&format!("pull-{i}"));
            let out = skopeo
                .copy(&[], &src, &format!("dir:{}", dest.display()))
                .await;
            (dest, out)
        }
    });
    for (dest, out) in futures_util::future::join_all(pulls).await {
        crate::support::skopeo::assert_success("copy through the balancer", &out);
        for layer in &signed.layers {
            let got =
                std::fs::read(crate::support::skopeo::dir_blob(&dest, &layer.digest)).unwrap();
            assert_eq!(got, layer.bytes, "the verified layer bytes");
        }
    }

    let fail = skopeo
        .copy(
            &[],
            &format!("docker://{}/local/acme/app-unsigned:v1", lb.host()),
            &format!("dir:{}", skopeo.dest("unsigned").display()),
        )
        .await;
    assert!(!fail.status.success(), "an unsigned image must not copy");
    for (i, r) in replicas.iter().enumerate() {
        let (status, reason) = r
            .answer(&format!(
                "/v2/local/acme/app-unsigned/manifests/{}",
                unsigned.digest
            ))
            .await;
        assert_eq!(
            (status, reason.as_deref()),
            (403, Some("unsigned")),
            "replica {i}"
        );
        for b in unsigned.blobs() {
            let r = r
                .get(&format!("/v2/local/acme/app-unsigned/blobs/{}", b.digest))
                .await;
            assert_eq!(r.status(), 403, "replica {i}: a blob of the unsigned image");
        }
    }
    // Every replica served part of it, and the upstream sent each blob once.
    for (i, r) in replicas.iter().enumerate() {
        assert!(
            r.metric("portcullis_requests_total", &[]).await > 0.0
                || r.metric("portcullis_pull_decisions_total", &[]).await > 0.0,
            "replica {i} took part"
        );
    }
    let fetched = total(
        &replicas,
        "portcullis_upstream_requests_total",
        &["kind=\"blob\""],
    )
    .await;
    let blobs = signed.blobs().count() as f64;
    // Once each while coordination worked. A Redis command that failed, a
    // wait that ran out, or a lease that ended without its result (all
    // counted) lets a replica fetch on its own: then at most once per replica.
    let degraded = coordination_failures(&replicas).await;
    if degraded == 0.0 {
        assert_eq!(
            fetched, blobs,
            "one upstream GET per blob across three replicas and ten pulls"
        );
    } else {
        assert!(
            fetched <= blobs * replicas.len() as f64,
            "{fetched} upstream blob GETs with {degraded} coordination failures"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn containerd_pulls_and_unpacks_through_three_replicas_behind_a_round_robin_balancer() {
    use crate::support::containerd::Containerd;
    use crate::support::runnable::{Flavour, Runnable};
    let shared = Shared::start().await;
    let app = Runnable::new(910, Flavour::Oci, "amd64");
    shared.pusher.image("acme/runnable", "v1", &app.image).await;
    cosign::push_signatures(
        &shared.pusher,
        "acme/runnable",
        &app.image.digest,
        &[shared.acme.sign(&app.image.digest, "r")],
    )
    .await;
    let replicas = replicas(&shared, 3).await;
    let lb = balancer(&replicas).await;
    let ctrd = Containerd::start().await;
    let hosts = ctrd
        .hosts_dir("local", &format!("http://{}", lb.host()))
        .display()
        .to_string();
    let out = ctrd
        .ctr(&[
            "images",
            "pull",
            "--hosts-dir",
            &hosts,
            "--snapshotter",
            ctrd.snapshotter,
            "local/acme/runnable:v1",
        ])
        .await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let snapshots = ctrd
        .ctr_ok(&["snapshots", "--snapshotter", ctrd.snapshotter, "ls"])
        .await;
    assert!(snapshots.contains(&app.chain_id()), "unpacked: {snapshots}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_serves_a_blob_of_a_manifest_another_allowed_and_nothing_a_forged_reference_names()
 {
    let shared = Shared::start().await;
    let (signed, unsigned) = shared.push(920, "app").await;
    let replicas = replicas(&shared, 2).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    assert_eq!(a.answer("/v2/local/acme/app/manifests/v1").await.0, 200);
    let layer = &signed.layers[1];
    let r = b
        .get(&format!("/v2/local/acme/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.status(), 200, "B re-derives the grant from A's reference");
    assert_eq!(r.bytes().await.unwrap(), layer.bytes);
    assert_eq!(
        b.metric(
            "portcullis_cluster_requests_total",
            &["op=\"ref\"", "outcome=\"hit\""]
        )
        .await,
        1.0,
        "B found A's reference and decided the manifest itself"
    );

    // A writer holding the secret names the unsigned manifest as a grantor,
    // in Redis and in the bucket: B decides it, and it is denied.
    let ulayer = &unsigned.layers[0];
    let key = format!(
        "portcullis:ref:blob:local/acme/app-unsigned@{}",
        ulayer.digest
    );
    let member = Shared::sealed(&key, &unsigned.digest);
    let _: i64 = shared.redis.cmd(&["ZADD", &key, "1", &member]).await;
    let r = b
        .get(&format!(
            "/v2/local/acme/app-unsigned/blobs/{}",
            ulayer.digest
        ))
        .await;
    assert_eq!(r.status(), 403, "a reference is a candidate, never a grant");
    assert_eq!(
        b.metric(
            "portcullis_cluster_requests_total",
            &["op=\"ref\"", "outcome=\"hit\""]
        )
        .await,
        2.0,
        "the forged candidate was found, decided and denied"
    );
    // The signed image's manifest named as a grantor of a blob it does not
    // name grants nothing either.
    let key = format!("portcullis:ref:blob:local/acme/app@{}", ulayer.digest);
    let member = Shared::sealed(&key, &signed.digest);
    let _: i64 = shared.redis.cmd(&["ZADD", &key, "1", &member]).await;
    let r = b
        .get(&format!("/v2/local/acme/app/blobs/{}", ulayer.digest))
        .await;
    assert_eq!(
        r.status(),
        403,
        "only what the allowed manifest's bytes name is granted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_pulls_over_three_replicas_fetch_the_manifest_and_each_blob_once_upstream()
 {
    let shared = Shared::start().await;
    let (signed, _) = shared.push(930, "app").await;
    let replicas = replicas(&shared, 3).await;
    let lb = balancer(&replicas).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let base = format!("http://{}/v2/local/acme/app", lb.host());
    let pulls = (0..100).map(|_| {
        let (client, base, signed) = (&client, &base, &signed);
        async move {
            let r = get(client, format!("{base}/manifests/v1")).await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap(), signed.manifest);
            for b in signed.blobs() {
                let r = get(client, format!("{base}/blobs/{}", b.digest)).await;
                assert_eq!(r.status(), 200, "blob {}", b.digest);
                assert_eq!(r.bytes().await.unwrap(), b.bytes);
            }
        }
    });
    futures_util::future::join_all(pulls).await;
    let blobs = total(
        &replicas,
        "portcullis_upstream_requests_total",
        &["kind=\"blob\""],
    )
    .await;
    // Once each, whichever replica asked: the image by tag, and for the
    // signature discovery the `.sig` tag and the referrers fallback tag
    // (this registry has no referrers API).
    let manifests = total(
        &replicas,
        "portcullis_upstream_requests_total",
        &["kind=\"manifest\""],
    )
    .await;
    let expected = (signed.blobs().count() as f64, 3.0);
    // That while coordination worked. A counted coordination failure lets
    // a replica work on its own: then at most once per replica.
    let degraded = coordination_failures(&replicas).await;
    if degraded == 0.0 {
        assert_eq!(
            (blobs, manifests),
            expected,
            "upstream GETs (blobs, manifests)"
        );
    } else {
        let n = replicas.len() as f64;
        assert!(
            blobs <= expected.0 * n && manifests <= expected.1 * n,
            "{blobs} blob and {manifests} manifest GETs with {degraded} coordination failures"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn redis_entries_with_a_bad_or_moved_mac_are_ignored_and_counted() {
    let shared = Shared::start().await;
    let (signed, unsigned) = shared.push(940, "app").await;
    let replicas = replicas(&shared, 1).await;
    let a = &replicas[0];
    // The tag forged to name the unsigned image, without the secret.
    let key = "portcullis:tag:local/acme/app:v1";
    let forged = format!("{}@{}|{}", unsigned.digest, now_ms(), "00".repeat(32));
    let _: () = shared.redis.cmd(&["SET", key, &forged]).await;
    let r = a.get_manifest("/v2/local/acme/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap(),
        signed.manifest,
        "resolved upstream, not from the forgery"
    );
    assert_eq!(
        a.metric(
            "portcullis_cluster_requests_total",
            &["op=\"tag\"", "outcome=\"bad_mac\""]
        )
        .await,
        1.0
    );
    // A genuine entry moved to another key fails too.
    let genuine: String = shared.redis.cmd(&["GET", key]).await;
    assert!(
        genuine.starts_with(&signed.digest),
        "the replica wrote its own mapping: {genuine}"
    );
    let other = "portcullis:tag:local/acme/app-unsigned:v1";
    let _: () = shared.redis.cmd(&["SET", other, &genuine]).await;
    let r = a
        .get_manifest("/v2/local/acme/app-unsigned/manifests/v1")
        .await;
    assert_eq!(r.status(), 403, "the unsigned image, resolved upstream");
    assert_eq!(
        a.metric(
            "portcullis_cluster_requests_total",
            &["op=\"tag\"", "outcome=\"bad_mac\""]
        )
        .await,
        2.0
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn leases_written_without_the_secret_or_replayed_after_their_time_hold_no_pull_up() {
    let shared = Shared::start().await;
    let (signed, _) = shared.push(945, "app").await;
    let replicas = replicas(&shared, 1).await;
    let a = &replicas[0];
    // Leases this pull takes, held for a minute (lease_wait is 20 s):
    // the tag's and the first blob's by entries without a valid MAC, the
    // other blobs' by a genuine value replayed after its time.
    let day_ago = now_ms() - 86_400_000;
    let mut entries = vec![(
        "portcullis:lease:tag:local/acme/app:v1".to_string(),
        format!("someone@{}|{}", now_ms() + 60_000, "00".repeat(32)),
    )];
    for (n, b) in signed.blobs().enumerate() {
        let key = format!("portcullis:lease:fill:local:{}", b.digest);
        let value = match n {
            0 => "not a lease".to_string(),
            _ => Shared::sealed(&key, &format!("someone@{day_ago}")),
        };
        entries.push((key, value));
    }
    for (key, value) in &entries {
        let _: () = shared.redis.cmd(&["SET", key, value, "PX", "60000"]).await;
    }
    // And the lease of the image's signature tag held by an entry that is
    // not a string at all.
    let sig = format!(
        "portcullis:lease:found:local/acme/app:{}.sig",
        signed.digest.replace(':', "-")
    );
    let _: i64 = shared.redis.cmd(&["LPUSH", &sig, "x"]).await;
    let started = std::time::Instant::now();
    let r = a.get_manifest("/v2/local/acme/app/manifests/v1").await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), signed.manifest);
    for b in signed.blobs() {
        let r = a
            .get(&format!("/v2/local/acme/app/blobs/{}", b.digest))
            .await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.bytes().await.unwrap(), b.bytes);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "nobody waited on a lease no replica holds: {:?}",
        started.elapsed()
    );
    assert_eq!(
        a.metric("portcullis_cluster_lease_waits_total", &[]).await,
        0.0,
        "no wait at all"
    );
    assert!(
        a.metric(
            "portcullis_cluster_requests_total",
            &["op=\"lease\"", "outcome=\"bad_mac\""]
        )
        .await
            >= 2.0,
        "the entries without a valid MAC are counted"
    );
}

/// Discovery is shared: what one replica found at a signature tag, the
/// others read instead of asking the upstream. An entry a writer holding
/// the secret points at another image's signatures is evidence for that
/// image only: verified here, it signs nothing else.
#[tokio::test(flavor = "multi_thread")]
async fn a_shared_discovery_entry_naming_another_images_signatures_signs_nothing_else() {
    let shared = Shared::start().await;
    let (signed, _) = shared.push(947, "app").await;
    let other = Image::oci(948, &[1500]);
    shared.pusher.image("acme/app", "v2", &other).await;
    let replicas = replicas(&shared, 2).await;
    let (a, b) = (&replicas[0], &replicas[1]);
    assert_eq!(a.answer("/v2/local/acme/app/manifests/v1").await.0, 200);
    let sig_tag = |digest: &str| format!("{}.sig", digest.replace(':', "-"));
    let key = format!(
        "portcullis:found:local/acme/app:{}",
        sig_tag(&signed.digest)
    );
    let entry: String = shared.redis.cmd(&["GET", &key]).await;
    let sig_manifest = entry.split('@').next().unwrap().to_string();
    assert!(sig_manifest.starts_with("sha256:"), "{entry}");

    // B reads A's discovery: its only upstream request is a HEAD
    // confirming that the repository holds the image.
    let before = b.metric("portcullis_upstream_requests_total", &[]).await;
    let r = b
        .get_manifest(&format!("/v2/local/acme/app/manifests/{}", signed.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), signed.manifest);
    let after = b.metric("portcullis_upstream_requests_total", &[]).await;
    let heads = b
        .metric(
            "portcullis_upstream_requests_total",
            &["kind=\"manifest_head\""],
        )
        .await;
    assert_eq!(
        (after - before, heads),
        (1.0, 1.0),
        "upstream requests by the second replica"
    );

    // A client's referrers request, for any subject, shares nothing.
    let random = format!("sha256:{}", "ab".repeat(32));
    let r = b
        .get(&format!("/v2/local/acme/app/referrers/{random}"))
        .await;
    assert_eq!(r.status(), 200);
    let left = shared
        .redis
        .keys(&format!("portcullis:*{}*", "ab".repeat(32)))
        .await;
    assert!(left.is_empty(), "nothing in Redis for it: {left:?}");

    // The other image's `.sig` tag pointed at the signed image's signatures.
    let forged_key = format!("portcullis:found:local/acme/app:{}", sig_tag(&other.digest));
    let forged = Shared::sealed(&forged_key, &format!("{sig_manifest}@{}", now_ms()));
    let _: () = shared.redis.cmd(&["SET", &forged_key, &forged]).await;
    for r in [a, b] {
        let (status, _) = r
            .answer(&format!("/v2/local/acme/app/manifests/{}", other.digest))
            .await;
        assert_eq!(status, 403, "signatures of another image sign nothing here");
    }
}

fn now_ms() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
}

#[tokio::test(flavor = "multi_thread")]
async fn tampered_objects_in_the_bucket_are_refused_counted_and_fetched_again() {
    let shared = Shared::start().await;
    let (signed, _) = shared.push(950, "app").await;
    let first = Proxy::start(shared.replica()).await;
    let layer = &signed.layers[1];
    assert_eq!(first.answer("/v2/local/acme/app/manifests/v1").await.0, 200);
    let r = first
        .get(&format!("/v2/local/acme/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.bytes().await.unwrap(), layer.bytes);
    shared.until_shared(&layer.digest).await;
    first.stop().await;

    // Same length, other bytes; and a manifest object that lies.
    let bucket = shared.garage.client();
    let mut evil = layer.bytes.clone();
    evil[0] ^= 0xff;
    bucket
        .put(&shared.blob_object(&layer.digest), evil.into())
        .await
        .unwrap();
    let lie = "application/vnd.oci.image.manifest.v1+json\n{\"schemaVersion\":2}".to_string();
    bucket
        .put(
            &shared.manifest_object(&signed.digest),
            lie.into_bytes().into(),
        )
        .await
        .unwrap();

    let second = Proxy::start(shared.replica()).await;
    let r = second
        .get_manifest(&format!("/v2/local/acme/app/manifests/{}", signed.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap(),
        signed.manifest,
        "the upstream's bytes"
    );
    let r = second
        .get(&format!("/v2/local/acme/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(
        r.bytes().await.unwrap(),
        layer.bytes,
        "the upstream's bytes"
    );
    assert_eq!(
        second
            .metric(
                "portcullis_shared_store_requests_total",
                &["op=\"get\"", "outcome=\"corrupt\""]
            )
            .await,
        2.0,
        "both tampered objects counted"
    );
    assert!(
        second.upstream_requests("blob").await >= 1.0,
        "fetched again upstream"
    );
    // The bucket holds the true bytes again.
    shared.until_shared(&layer.digest).await;
    let stored = bucket
        .get(&shared.blob_object(&layer.digest))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(stored.as_ref(), layer.bytes.as_slice());
}

#[tokio::test(flavor = "multi_thread")]
async fn with_redis_down_replicas_serve_alone_through_the_bucket_and_share_again_when_it_returns() {
    let mut shared = Shared::start().await;
    let (signed, unsigned) = shared.push(960, "app").await;
    let replicas = replicas(&shared, 3).await;
    let lb = balancer(&replicas).await;
    shared.redis.stop();
    let skopeo = crate::support::skopeo::Skopeo::new();
    let dest = skopeo.dest("down");
    let out = skopeo
        .copy(
            &[],
            &format!("docker://{}/local/acme/app:v1", lb.host()),
            &format!("dir:{}", dest.display()),
        )
        .await;
    crate::support::skopeo::assert_success("copy with Redis down", &out);
    assert!(
        total(
            &replicas,
            "portcullis_cluster_requests_total",
            &["outcome=\"error\""]
        )
        .await
            >= 1.0,
        "Redis failures are counted"
    );
    for (i, r) in replicas.iter().enumerate() {
        let b = &unsigned.layers[0];
        let got = r
            .get(&format!("/v2/local/acme/app-unsigned/blobs/{}", b.digest))
            .await;
        assert_eq!(got.status(), 403, "replica {i}: still nothing unverified");
    }
    let _ = signed;

    shared.redis.resume().await;
    let (second, _) = shared.push(961, "two").await;
    for _ in 0..50 {
        if replicas[0]
            .answer("/v2/local/acme/two/manifests/v1")
            .await
            .0
            == 200
            && !shared
                .redis
                .keys("portcullis:tag:local/acme/two:v1")
                .await
                .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        shared
            .redis
            .keys("portcullis:tag:local/acme/two:v1")
            .await
            .len(),
        1,
        "shared again once Redis is back"
    );
    let r = replicas[1]
        .get(&format!(
            "/v2/local/acme/two/blobs/{}",
            second.layers[0].digest
        ))
        .await;
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_replica_with_other_trust_denies_what_the_others_allow_and_takes_no_grant_from_them() {
    let shared = Shared::start().await;
    let (signed, _) = shared.push(970, "app").await;
    let trusting = Proxy::start(shared.replica()).await;
    let other = VendorKey::generate();
    other.write_public(shared.files.path(), "other.pub");
    let other_pub = format!("{}/other.pub", shared.files.path().display());
    let stale = Proxy::start(
        shared.joined(
            ProxyConfig::new()
                .upstream("local", &shared.registry.url())
                .authority(Authority::keys("acme", &[&other_pub]))
                .policy(Policy::signed_by("acme", "local/acme/**", &["acme"]))
                .policy(Policy::deny("rest", "**")),
        ),
    )
    .await;
    assert_eq!(
        trusting.answer("/v2/local/acme/app/manifests/v1").await.0,
        200
    );
    let (status, reason) = stale.answer("/v2/local/acme/app/manifests/v1").await;
    assert_eq!((status, reason.as_deref()), (403, Some("untrusted_signer")));
    for b in signed.blobs() {
        let r = stale
            .get(&format!("/v2/local/acme/app/blobs/{}", b.digest))
            .await;
        assert_eq!(r.status(), 403, "no grant from another replica's verdict");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_killed_lease_holder_delays_a_fill_elsewhere_only_until_its_lease_expires() {
    use crate::support::scripted::Scripted;
    let shared = Shared::start().await;
    let img = Image::oci(980, &[50_000]);
    shared.pusher.image("open/app", "v1", &img).await;
    let layer = &img.layers[0];
    // The holder's upstream stalls the blob: its fill holds the lease.
    let stalling = Scripted::start().await;
    stalling.put(&layer.digest, "application/octet-stream", &layer.bytes);
    stalling.set(crate::support::scripted::Fault::StallBody);
    let holder_config = shared.joined(
        ProxyConfig::new()
            .upstream_with(Upstream::new("local", &stalling.url()).timeouts("2s", "60s", "60s"))
            .allow_all(),
    );
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("admin.token"), ADMIN_TOKEN).unwrap();
    let (port, admin) = (free_port(), free_port());
    std::fs::write(
        dir.path().join("portcullis.toml"),
        holder_config.render(port, admin),
    )
    .unwrap();
    let mut holder = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .args(["serve", "--config"])
        .arg(dir.path().join("portcullis.toml"))
        .current_dir(dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("holder.log")).unwrap())
        .spawn()
        .unwrap();
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    let started = async {
        for _ in 0..200 {
            if client
                .get(format!("http://127.0.0.1:{port}/v2/"))
                .send()
                .await
                .is_ok()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("holder did not start");
    };
    started.await;
    let stuck = tokio::spawn({
        let client = client.clone();
        let url = format!(
            "http://127.0.0.1:{port}/v2/local/open/app/blobs/{}",
            layer.digest
        );
        async move { client.get(url).send().await.map(|r| r.status()) }
    });
    let lease = format!("portcullis:lease:fill:local:{}", layer.digest);
    for _ in 0..100 {
        if !shared.redis.keys(&lease).await.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        shared.redis.keys(&lease).await.len(),
        1,
        "the holder took the fill's lease"
    );
    // Renewed while the holder lives (lease_ttl is 2 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        shared.redis.keys(&lease).await.len(),
        1,
        "renewed by its live holder; its log:\n{}",
        std::fs::read_to_string(dir.path().join("holder.log")).unwrap_or_default()
    );
    holder.kill().unwrap(); // SIGKILL: no release
    holder.wait().unwrap();
    let killed = Instant::now();

    let taker = Proxy::start(
        shared.joined(
            ProxyConfig::new()
                .upstream("local", &shared.registry.url())
                .allow_all(),
        ),
    )
    .await;
    let r = taker
        .get(&format!("/v2/local/open/app/blobs/{}", layer.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), layer.bytes);
    let waited = killed.elapsed();
    assert!(
        waited < Duration::from_secs(10),
        "bounded by the lease's TTL, not lease_wait: {waited:?}"
    );
    assert_eq!(
        taker
            .metric(
                "portcullis_cluster_lease_waits_total",
                &["outcome=\"expired\""]
            )
            .await,
        1.0,
        "it waited for the dead holder's lease to expire"
    );
    let _ = stuck.await;
}

#[test]
fn check_config_names_each_cluster_and_bucket_key_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"127.0.0.1:5000\"\n[cache]\ndir = \"c\"\nstore = \"s3\"\n\
         [cache.s3]\nbucket = \"\"\nendpoint = \"ftp://x\"\naccess_key_id_file = \"k\"\nsecret_access_key_file = \"s\"\nuploads = 0\n\
         [cluster]\nredis = \"http://user:hunter2@redis\"\nsecret_file = \"secret\"\nlease_ttl = \"soon\"\n\
         [[upstream]]\nname = \"u\"\nurl = \"https://registry.example/\"\n[[policy]]\nname = \"p\"\nmatch = [\"**\"]\nallow_unverified = true\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .arg("check-config")
        .arg(&path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for key in [
        "cache.s3.bucket",
        "cache.s3.endpoint",
        "cache.s3.uploads",
        "cluster.redis",
        "cluster.lease_ttl",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    assert!(
        !err.contains("hunter2"),
        "a password in the URL is never quoted:\n{err}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn with_the_bucket_down_replicas_serve_from_the_upstream_and_count_it() {
    let mut shared = Shared::start().await;
    let (signed, unsigned) = shared.push(990, "app").await;
    let replicas = replicas(&shared, 2).await;
    shared.garage.stop();
    let lb = balancer(&replicas).await;
    let skopeo = crate::support::skopeo::Skopeo::new();
    let dest = skopeo.dest("bucket-down");
    let started = Instant::now();
    let out = skopeo
        .copy(
            &[],
            &format!("docker://{}/local/acme/app:v1", lb.host()),
            &format!("dir:{}", dest.display()),
        )
        .await;
    crate::support::skopeo::assert_success("copy with the bucket down", &out);
    for layer in &signed.layers {
        let got = std::fs::read(crate::support::skopeo::dir_blob(&dest, &layer.digest)).unwrap();
        assert_eq!(got, layer.bytes);
    }
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "a dead bucket costs bounded time: {:?}",
        started.elapsed()
    );
    assert!(
        total(
            &replicas,
            "portcullis_shared_store_requests_total",
            &["outcome=\"error\""]
        )
        .await
            >= 1.0,
        "bucket failures are counted"
    );
    for r in &replicas {
        let b = &unsigned.layers[0];
        let got = r
            .get(&format!("/v2/local/acme/app-unsigned/blobs/{}", b.digest))
            .await;
        assert_eq!(got.status(), 403, "still nothing unverified");
    }
}

/// A bucket that accepts connections and never answers: after three
/// failed requests in a row it is left alone, so later pulls spend no
/// time on it (counted `skipped`), and are served from the upstream.
#[tokio::test(flavor = "multi_thread")]
async fn a_bucket_that_stops_answering_is_left_alone_after_three_failures() {
    let shared = Shared::start().await;
    let (first, _) = shared.push(995, "app").await;
    let (second, _) = shared.push(997, "two").await;
    let acme_pub = format!("{}/acme.pub", shared.files.path().display());
    let config = shared.joined_with(
        ProxyConfig::new()
            .upstream("local", &shared.registry.url())
            .authority(Authority::keys("acme", &[&acme_pub]))
            .policy(Policy::signed_by("acme", "local/acme/**", &["acme"])),
        shared.s3_table() + "timeout = \"1s\"\n",
    );
    let a = Proxy::start(config).await;
    shared.garage.freeze();
    let pull = |repo: &'static str, image: Image| {
        let a = &a;
        async move {
            let r = a
                .get_manifest(&format!("/v2/local/acme/{repo}/manifests/v1"))
                .await;
            assert_eq!(r.status(), 200);
            assert_eq!(r.bytes().await.unwrap(), image.manifest);
            for b in image.blobs() {
                let r = a
                    .get(&format!("/v2/local/acme/{repo}/blobs/{}", b.digest))
                    .await;
                assert_eq!(r.status(), 200);
                assert_eq!(r.bytes().await.unwrap(), b.bytes);
            }
        }
    };
    let count = |outcome: &'static str| {
        let a = &a;
        async move {
            let label = format!("outcome=\"{outcome}\"");
            a.metric("portcullis_shared_store_requests_total", &[&label])
                .await
        }
    };
    pull("app", first).await;
    let (errors, skipped) = (count("error").await, count("skipped").await);
    assert!(errors >= 3.0, "{errors} failed requests");
    pull("two", second).await;
    assert_eq!(
        count("error").await,
        errors,
        "no request sent to the bucket"
    );
    assert!(
        count("skipped").await > skipped,
        "the requests not sent are counted"
    );
}

/// A pusher in an open repository names a shared blob with a declared size
/// of one byte: the bucket's object is larger than that request may take,
/// so it is skipped for it, not deleted as corrupt, and still serves the
/// repository whose manifest declares it rightly.
#[tokio::test(flavor = "multi_thread")]
async fn a_manifest_declaring_a_shared_blob_smaller_than_it_is_does_not_remove_it_from_the_bucket()
{
    let shared = Shared::start().await;
    let (signed, _) = shared.push(1000, "app").await;
    let acme_pub = format!("{}/acme.pub", shared.files.path().display());
    let config = || {
        shared.joined(
            ProxyConfig::new()
                .upstream("local", &shared.registry.url())
                .authority(Authority::keys("acme", &[&acme_pub]))
                .policy(Policy::signed_by("acme", "local/acme/**", &["acme"]))
                .policy(Policy::allow_unverified("open", "local/open/**")),
        )
    };
    let (a, b) = (Proxy::start(config()).await, Proxy::start(config()).await);
    let big = &signed.layers[1];
    assert_eq!(a.answer("/v2/local/acme/app/manifests/v1").await.0, 200);
    let r = a
        .get(&format!("/v2/local/acme/app/blobs/{}", big.digest))
        .await;
    assert_eq!(r.status(), 200);
    shared.until_shared(&big.digest).await;

    shared.pusher.blob("open/x", &signed.config).await;
    shared.pusher.blob("open/x", big).await;
    let mut small = big.descriptor();
    small["size"] = serde_json::json!(1);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": image::OCI_MANIFEST,
        "config": signed.config.descriptor(), "layers": [small],
    }))
    .unwrap();
    shared
        .pusher
        .manifest("open/x", "v1", image::OCI_MANIFEST, &manifest)
        .await;
    assert_eq!(b.answer("/v2/local/open/x/manifests/v1").await.0, 200);
    let count = |outcome: &'static str| {
        let b = &b;
        async move {
            let label = format!("outcome=\"{outcome}\"");
            b.metric(
                "portcullis_shared_store_requests_total",
                &["op=\"get\"", &label],
            )
            .await
        }
    };
    let skipped = count("skipped").await;
    let r = b
        .get(&format!("/v2/local/open/x/blobs/{}", big.digest))
        .await;
    assert_ne!(r.status(), 200, "not served under a size it breaks");
    assert_eq!(
        count("skipped").await - skipped,
        1.0,
        "skipped for that request"
    );
    assert_eq!(count("corrupt").await, 0.0, "not taken for corruption");
    assert!(
        shared
            .garage
            .client()
            .head(&shared.blob_object(&big.digest))
            .await
            .is_ok(),
        "the object is still in the bucket"
    );
    let hits = count("hit").await;
    let r = b
        .get(&format!("/v2/local/acme/app/blobs/{}", big.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap(), big.bytes);
    assert!(
        count("hit").await > hits,
        "served to the acme repository from the bucket"
    );
}

/// A reload lands while a replica decides, for a blob request, a manifest
/// another replica allowed. The decision was made under the retired gate,
/// so it does not count: the blob is decided again under the new one, and
/// served only if that still allows it.
#[tokio::test(flavor = "multi_thread")]
async fn a_blob_decided_across_a_reload_is_decided_again_under_the_new_gate() {
    let shared = Shared::start().await;
    let (signed, _) = shared.push(1010, "app").await;
    let front = crate::support::scripted::Scripted::start().await;
    front.in_front_of(&shared.registry.url());
    let a = Proxy::start(shared.replica()).await;
    let acme_pub = format!("{}/acme.pub", shared.files.path().display());
    // Discovery another replica shared is fresh for B for a second only,
    // so B's second decision asks the (slow) upstream again.
    let b = Proxy::start(
        shared.joined(
            ProxyConfig::new()
                .upstream("local", &front.url())
                .authority(Authority::keys("acme", &[&acme_pub]))
                .policy(Policy::signed_by("acme", "local/acme/**", &["acme"]))
                .cache("tag_ttl = \"1s\""),
        ),
    )
    .await;
    assert_eq!(a.answer("/v2/local/acme/app/manifests/v1").await.0, 200);
    // B's decision of the image (asked for by its digest) takes 2 s.
    front.delay(&signed.digest, Duration::from_secs(2));
    let path = b.config_path();
    let blob = |n: usize| {
        let (b, digest) = (&b, signed.layers[n].digest.clone());
        async move { b.get(&format!("/v2/local/acme/app/blobs/{digest}")).await }
    };
    let reload_midway = |text: String| {
        let (b, path) = (&b, path.clone());
        async move {
            tokio::time::sleep(Duration::from_millis(700)).await;
            std::fs::write(&path, text).unwrap();
            assert_eq!(b.admin_reload(ADMIN_TOKEN).await.0, 200);
        }
    };

    // A reload to an equal policy (the file differs only by a comment, so
    // a new gate is put in force): decided again, still allowed.
    let same = std::fs::read_to_string(&path).unwrap();
    let (r, ()) = tokio::join!(blob(0), reload_midway(format!("{same}\n# written again\n")));
    assert_eq!(r.status(), 200, "allowed under the new gate too");
    assert_eq!(r.bytes().await.unwrap(), signed.layers[0].bytes);

    // A reload that trusts another key: the grant made under the old one
    // does not count. (A reload first retires the grants just made.)
    tokio::time::sleep(Duration::from_millis(1100)).await;
    std::fs::write(&path, &same).unwrap();
    assert_eq!(b.admin_reload(ADMIN_TOKEN).await.0, 200);
    let other = VendorKey::generate();
    other.write_public(shared.files.path(), "other.pub");
    let distrusting = same.replace(
        &acme_pub,
        &format!("{}/other.pub", shared.files.path().display()),
    );
    assert_ne!(distrusting, same);
    let (r, ()) = tokio::join!(blob(1), reload_midway(distrusting));
    assert_eq!(r.status(), 403, "the new gate decides");
}

/// Blob downloads from the bucket are bounded by how long a read stalls and
/// by a least rate, not by `cache.s3.timeout` for the whole: a 16 MiB blob
/// at 12 MiB/s (longer than the 1 s timeout) comes from the bucket; one
/// whose download stalls midway comes from the upstream, with its bytes.
#[tokio::test(flavor = "multi_thread")]
async fn a_slow_blob_download_from_the_bucket_completes_and_a_stalled_one_falls_back_to_the_upstream()
 {
    let shared = Shared::start().await;
    let image = Image::oci(1020, &[16 << 20, 16 << 20]);
    shared.pusher.image("acme/big", "v1", &image).await;
    cosign::push_signatures(
        &shared.pusher,
        "acme/big",
        &image.digest,
        &[shared.acme.sign(&image.digest, "r")],
    )
    .await;
    let a = Proxy::start(shared.replica()).await;
    assert_eq!(a.answer("/v2/local/acme/big/manifests/v1").await.0, 200);
    for layer in &image.layers {
        let r = a
            .get(&format!("/v2/local/acme/big/blobs/{}", layer.digest))
            .await;
        assert_eq!(r.bytes().await.unwrap(), layer.bytes);
        shared.until_shared(&layer.digest).await;
    }
    let slow = crate::support::throttle::Throttle::start(shared.garage.s3_port, 12 << 20).await;
    let acme_pub = format!("{}/acme.pub", shared.files.path().display());
    let b_config = shared.joined_with(
        ProxyConfig::new()
            .upstream("local", &shared.registry.url())
            .authority(Authority::keys("acme", &[&acme_pub]))
            .policy(Policy::signed_by("acme", "local/acme/**", &["acme"])),
        shared
            .s3_table()
            .replace(&shared.garage.endpoint(), &slow.url())
            + "timeout = \"1s\"\n",
    );
    let b = Proxy::start(b_config).await;
    let upstream_blobs = || b.metric("portcullis_upstream_requests_total", &["kind=\"blob\""]);

    let first = &image.layers[0];
    let r = b
        .get(&format!("/v2/local/acme/big/blobs/{}", first.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == first.bytes,
        "the first layer's bytes"
    );
    assert_eq!(
        upstream_blobs().await,
        0.0,
        "the first layer came from the bucket"
    );

    slow.stall_after(4 << 20);
    let second = &image.layers[1];
    let r = b
        .get(&format!("/v2/local/acme/big/blobs/{}", second.digest))
        .await;
    assert_eq!(r.status(), 200);
    assert!(
        r.bytes().await.unwrap() == second.bytes,
        "the second layer's bytes"
    );
    assert_eq!(
        upstream_blobs().await,
        1.0,
        "the stalled one came from the upstream"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_sealed_tag_mapping_dated_ahead_of_the_clock_is_not_used() {
    let shared = Shared::start().await;
    let (signed, unsigned) = shared.push(995, "app").await;
    let replicas = replicas(&shared, 1).await;
    // Sealed with the secret (a compromised or skewed replica), dated an
    // hour ahead: it would stay "fresh" past tag_ttl on every replica.
    let key = "portcullis:tag:local/acme/app:v1";
    let ahead = now_ms() + 3_600_000;
    let value = Shared::sealed(key, &format!("{}@{ahead}", unsigned.digest));
    let _: () = shared.redis.cmd(&["SET", key, &value]).await;
    let r = replicas[0]
        .get_manifest("/v2/local/acme/app/manifests/v1")
        .await;
    assert_eq!(
        r.status(),
        200,
        "resolved upstream, not from the future-dated entry"
    );
    assert_eq!(r.bytes().await.unwrap(), signed.manifest);
}
