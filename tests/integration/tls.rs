//! TLS and client authentication on the registry listener: skopeo over
//! HTTPS with the test CA, 401 for missing or wrong credentials, a rotated
//! certificate served without a restart, and mTLS identities in the audit log.

use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair, SanType,
};

use crate::support::skopeo::{Skopeo, assert_success};
use crate::support::*;

struct Ca {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

impl Ca {
    fn new() -> Ca {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let cert = params.self_signed(&key).unwrap();
        Ca {
            pem: cert.pem(),
            issuer: Issuer::new(params, key),
        }
    }

    /// (certificate PEM, key PEM) for 127.0.0.1, or a client certificate.
    fn issue(&self, client: bool) -> (String, String) {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        if client {
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        } else {
            params.subject_alt_names = vec![SanType::IpAddress("127.0.0.1".parse().unwrap())];
        }
        let cert = params.signed_by(&key, &self.issuer).unwrap();
        (cert.pem(), key.serialize_pem())
    }
}

struct Setup {
    ca: Ca,
    proxy: Proxy,
    _registry: Registry,
    img: Image,
}

const TOKEN: &str = "ci-token-0123456789";

async fn setup(mtls: Option<&Ca>) -> Setup {
    let registry = Registry::start().await;
    let img = Image::oci(800, &[5000]);
    Pusher::new(&registry.url())
        .image("acme/app", "v1", &img)
        .await;
    let ca = Ca::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = ca.issue(false);
    std::fs::write(dir.path().join("tls.crt"), cert).unwrap();
    std::fs::write(dir.path().join("tls.key"), key).unwrap();
    std::fs::write(dir.path().join("tokens"), format!("ci-runner:{TOKEN}\n")).unwrap();
    let hash = bcrypt::hash("hunter2", 4).unwrap();
    std::fs::write(dir.path().join("htpasswd"), format!("alice:{hash}\n")).unwrap();
    let mut server = "tls_cert = \"tls.crt\"\ntls_key = \"tls.key\"\nauth = { tokens_file = \"tokens\", htpasswd_file = \"htpasswd\" }\n".to_string();
    if let Some(client_ca) = mtls {
        std::fs::write(dir.path().join("client-ca.pem"), &client_ca.pem).unwrap();
        server.push_str("client_ca = \"client-ca.pem\"\n");
    }
    let config = ProxyConfig::new()
        .in_dir(dir)
        .server(&server)
        .upstream("local", &registry.url())
        .policy(Policy::allow_unverified("open", "**"));
    let proxy = Proxy::start(config).await;
    Setup {
        ca,
        proxy,
        _registry: registry,
        img,
    }
}

fn client(ca_pem: &str, identity: Option<&(String, String)>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .add_root_certificate(reqwest::Certificate::from_pem(ca_pem.as_bytes()).unwrap());
    if let Some((cert, key)) = identity {
        b = b.identity(reqwest::Identity::from_pem(format!("{key}{cert}").as_bytes()).unwrap());
    }
    b.build().unwrap()
}

impl Setup {
    fn https(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.proxy.port)
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn skopeo_pulls_over_https_with_the_test_ca_only_with_credentials() {
    let s = setup(None).await;
    let skopeo = Skopeo::new();
    let certs = skopeo.dest("certs");
    std::fs::create_dir(&certs).unwrap();
    std::fs::write(certs.join("ca.crt"), &s.ca.pem).unwrap();
    let src = format!("docker://127.0.0.1:{}/local/acme/app:v1", s.proxy.port);
    let cert_dir = format!("--src-cert-dir={}", certs.display());
    let dest = format!("dir:{}", skopeo.dest("ok").display());
    let out = skopeo
        .run(&["copy", &cert_dir, "--src-creds=alice:hunter2", &src, &dest])
        .await;
    assert_success("skopeo copy over https", &out);
    let layer = crate::support::skopeo::dir_blob(&skopeo.dest("ok"), &s.img.layers[0].digest);
    assert_eq!(std::fs::read(layer).unwrap(), s.img.layers[0].bytes);

    let dest = format!("dir:{}", skopeo.dest("no-creds").display());
    let out = skopeo
        .run(&["copy", &cert_dir, "--src-no-creds", &src, &dest])
        .await;
    assert!(
        !out.status.success(),
        "a pull without credentials must fail"
    );
    let dest = format!("dir:{}", skopeo.dest("untrusted").display());
    let out = skopeo
        .run(&["copy", "--src-creds=alice:hunter2", &src, &dest])
        .await;
    assert!(
        !out.status.success(),
        "a certificate from an unknown CA must not be accepted"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn missing_or_wrong_credentials_are_401_and_right_ones_are_served_and_audited() {
    let s = setup(None).await;
    let c = client(&s.ca.pem, None);
    let manifest = s.https("/v2/local/acme/app/manifests/v1");
    let r = c.get(s.https("/v2/")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        r.headers()["www-authenticate"],
        "Basic realm=\"portcullis\""
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["errors"][0]["code"], "UNAUTHORIZED");
    for wrong in [
        c.get(&manifest).bearer_auth("not-the-token"),
        c.get(&manifest).basic_auth("alice", Some("wrong")),
        c.get(&manifest).basic_auth("mallory", Some(TOKEN)),
    ] {
        assert_eq!(wrong.send().await.unwrap().status(), 401);
    }
    let ok = c.get(&manifest).bearer_auth(TOKEN).send().await.unwrap();
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.bytes().await.unwrap(), s.img.manifest);
    let ok = c
        .get(&manifest)
        .basic_auth("alice", Some("hunter2"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let identities: Vec<String> = s
        .proxy
        .audit_events()
        .iter()
        .filter(|e| e["event"] == "decision")
        .map(|e| e["identity"].as_str().unwrap_or("").to_string())
        .collect();
    assert_eq!(identities, ["ci-runner", "alice"]);
    assert!(s.proxy.audit_events().iter().all(
        |e| e["event"] != "decision" || e["client"].as_str().unwrap().starts_with("127.0.0.1:")
    ));
}

#[tokio::test(flavor = "multi_thread")]
async fn rotated_certificate_is_served_without_a_restart() {
    let s = setup(None).await;
    let ok = |ca: &str| {
        let c = client(ca, None);
        let url = s.https("/v2/");
        async move {
            c.get(url)
                .bearer_auth(TOKEN)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    };
    assert_eq!(ok(&s.ca.pem).await.unwrap(), 200);
    let next = Ca::new();
    let (cert, key) = next.issue(false);
    let dir = s.proxy.dir.path();
    // Key first, then certificate: a handshake in between keeps the old pair.
    std::fs::write(dir.join("tls.key"), key).unwrap();
    std::fs::write(dir.join("tls.crt"), cert).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if ok(&next.pem).await.ok() == Some(200) {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "new certificate never served"
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    assert!(ok(&s.ca.pem).await.is_err(), "the old certificate is gone");
}

#[tokio::test(flavor = "multi_thread")]
async fn mtls_refuses_clients_without_a_certificate_from_the_client_ca() {
    let client_ca = Ca::new();
    let s = setup(Some(&client_ca)).await;
    let manifest = s.https("/v2/local/acme/app/manifests/v1");
    let anonymous = client(&s.ca.pem, None)
        .get(&manifest)
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(
        anonymous.is_err(),
        "the handshake needs a client certificate"
    );
    let stranger = Ca::new().issue(true);
    let r = client(&s.ca.pem, Some(&stranger))
        .get(&manifest)
        .bearer_auth(TOKEN)
        .send()
        .await;
    assert!(r.is_err(), "a certificate from another CA is refused");
    let mine = client_ca.issue(true);
    let r = client(&s.ca.pem, Some(&mine))
        .get(&manifest)
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}
