//! Bounds on what one manifest can make the proxy do: how many descriptors
//! it lists and how deeply indexes nest. Against a real registry, with
//! signed content, so only the bound can be what refuses.

use crate::support::cosign::{self, VendorKey};
use crate::support::image::{self, OCI_INDEX};
use crate::support::*;

struct Setup {
    _registry: Registry,
    proxy: Proxy,
    acme: VendorKey,
    pusher: Pusher,
}

async fn setup() -> Setup {
    let registry = Registry::start().await;
    let acme = VendorKey::generate();
    let dir = tempfile::tempdir().unwrap();
    acme.write_public(dir.path(), "acme.pub");
    let body = format!(
        "{}\n[[authority]]\nname = \"acme\"\nkeys = [\"acme.pub\"]\n\n[[policy]]\nname = \"acme\"\nmatch = [\"local/acme/**\"]\nsignatures = {{ authorities = [\"acme\"] }}\n",
        upstream_toml("local", &registry.url(), ""),
    );
    let proxy = Proxy::start_in(dir, &body, None, "", "").await;
    let pusher = Pusher::new(&registry.url());
    Setup {
        _registry: registry,
        proxy,
        acme,
        pusher,
    }
}

/// An index naming `children` (digest, media type, size) pushed under
/// `tag`; its digest and size.
async fn push_index(s: &Setup, tag: &str, children: &[(String, String, usize)]) -> (String, usize) {
    let manifests: Vec<serde_json::Value> = children
        .iter()
        .map(|(digest, media_type, size)| {
            serde_json::json!({"mediaType": media_type, "digest": digest, "size": size,
                "platform": {"architecture": "amd64", "os": "linux"}})
        })
        .collect();
    let bytes = serde_json::to_vec(
        &serde_json::json!({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}),
    )
    .unwrap();
    s.pusher.manifest("acme/app", tag, OCI_INDEX, &bytes).await;
    (image::sha256(&bytes), bytes.len())
}

fn entry(digest: &str, media_type: &str, size: usize) -> (String, String, usize) {
    (digest.to_string(), media_type.to_string(), size)
}

impl Setup {
    async fn sign(&self, digest: &str) {
        let sig = self.acme.sign(digest, "registry/acme/app");
        cosign::push_signatures(&self.pusher, "acme/app", digest, &[sig]).await;
    }

    async fn answer(&self, digest: &str) -> (u16, Option<String>) {
        self.proxy
            .answer(&format!("/v2/local/acme/app/manifests/{digest}"))
            .await
    }
}

/// A signed index of indexes of indexes: the top two levels pass, the third
/// is denied `limit_exceeded`, and the image under it is not granted.
#[tokio::test(flavor = "multi_thread")]
async fn an_index_nested_three_deep_is_denied_limit_exceeded_even_when_signed() {
    let s = setup().await;
    let img = image::Image::oci(951, &[100]);
    s.pusher.image("acme/app", "img", &img).await;
    let (l3, l3_size) = push_index(
        &s,
        "l3",
        &[entry(&img.digest, &img.media_type, img.manifest.len())],
    )
    .await;
    let (l2, l2_size) = push_index(&s, "l2", &[entry(&l3, OCI_INDEX, l3_size)]).await;
    let (l1, _) = push_index(&s, "l1", &[entry(&l2, OCI_INDEX, l2_size)]).await;
    s.sign(&l1).await;
    assert_eq!(s.answer(&l1).await.0, 200, "the signed top index");
    assert_eq!(s.answer(&l2).await.0, 200, "an index one level down");
    assert_eq!(
        s.answer(&l3).await,
        (403, Some("limit_exceeded".into())),
        "a third level of index"
    );
    assert_eq!(
        s.answer(&img.digest).await,
        (403, Some("unsigned".into())),
        "nothing below the refused index is granted"
    );
}

/// A signed index listing one descriptor more than the bound is denied
/// `limit_exceeded`; one at the bound passes.
#[tokio::test(flavor = "multi_thread")]
async fn a_signed_index_with_more_entries_than_the_bound_is_denied_limit_exceeded() {
    let s = setup().await;
    let img = image::Image::oci(952, &[100]);
    s.pusher.image("acme/app", "img", &img).await;
    let child = entry(&img.digest, &img.media_type, img.manifest.len());
    let (at_bound, _) = push_index(&s, "wide", &vec![child.clone(); 1024]).await;
    let (past_bound, _) = push_index(&s, "wider", &vec![child; 1025]).await;
    s.sign(&at_bound).await;
    s.sign(&past_bound).await;
    assert_eq!(s.answer(&at_bound).await.0, 200, "1024 entries");
    assert_eq!(
        s.answer(&past_bound).await,
        (403, Some("limit_exceeded".into())),
        "1025 entries"
    );
}
