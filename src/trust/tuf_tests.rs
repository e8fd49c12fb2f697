//! Which roots the TUF client may work from.

use super::*;

fn ed25519() -> serde_json::Value {
    use aws_lc_rs::signature::KeyPair as _;
    let key = aws_lc_rs::signature::Ed25519KeyPair::generate().unwrap();
    serde_json::json!({"keytype": "ed25519", "scheme": "ed25519",
        "keyval": {"public": hex::encode(key.public_key().as_ref())}})
}

fn root(roles: serde_json::Value) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "signed": {
            "_type": "root", "version": 2,
            "keys": {
                "k1": ed25519(), "k2": ed25519(),
                "unsupported": {"keytype": "dsa", "scheme": "dsa-sha1", "keyval": {"public": "00"}},
            },
            "roles": roles,
        },
        "signatures": [],
    }))
    .unwrap()
}

fn roles(timestamp: serde_json::Value) -> serde_json::Value {
    let one = serde_json::json!({"keyids": ["k1"], "threshold": 1});
    serde_json::json!({"root": one, "snapshot": one, "targets": one, "timestamp": timestamp})
}

#[test]
fn a_root_whose_roles_can_be_satisfied_is_accepted() {
    assert_eq!(
        check_root(&root(roles(
            serde_json::json!({"keyids": ["k1", "k2"], "threshold": 2})
        ))),
        Ok(())
    );
    let embedded = sigstore_verify::trust_root::SigstoreInstance::PublicGood.tuf_root();
    assert_eq!(check_root(embedded), Ok(()));
}

#[test]
fn a_root_declaring_threshold_zero_for_a_role_is_refused() {
    let e = check_root(&root(roles(
        serde_json::json!({"keyids": ["k1"], "threshold": 0}),
    )))
    .unwrap_err();
    assert!(
        e.contains("role timestamp declares signature threshold 0"),
        "{e}"
    );
}

#[test]
fn a_root_whose_threshold_exceeds_the_keys_it_lists_is_refused() {
    for listed in [
        serde_json::json!({"keyids": ["k1"], "threshold": 2}),
        // The same key twice, or a key the root does not declare, counts once or not at all.
        serde_json::json!({"keyids": ["k1", "k1"], "threshold": 2}),
        serde_json::json!({"keyids": ["k1", "nobody"], "threshold": 2}),
        // A key of a scheme verification does not support counts not at all.
        serde_json::json!({"keyids": ["k1", "unsupported"], "threshold": 2}),
    ] {
        let e = check_root(&root(roles(listed.clone()))).unwrap_err();
        assert!(
            e.contains("role timestamp") && e.contains("can never be met"),
            "{listed}: {e}"
        );
    }
}

#[test]
fn a_root_missing_a_role_or_its_threshold_is_refused() {
    let mut r = roles(serde_json::json!({"keyids": ["k1"], "threshold": 1}));
    r.as_object_mut().unwrap().remove("snapshot");
    assert!(
        check_root(&root(r))
            .unwrap_err()
            .contains("no role snapshot")
    );
    let e = check_root(&root(roles(serde_json::json!({"keyids": ["k1"]})))).unwrap_err();
    assert!(e.contains("no integer threshold"), "{e}");
    assert!(check_root(b"{").unwrap_err().contains("not JSON"));
}

#[test]
fn only_root_files_are_checked() {
    assert!(is_root("2.root.json") && is_root("root.json") && is_root("root_history/3.root.json"));
    assert!(!is_root("timestamp.json") && !is_root("targets/trusted_root.json"));
}

/// An in-memory cache, as the TUF client sees one.
#[derive(Default)]
struct Memory(std::sync::Mutex<std::collections::HashMap<String, Vec<u8>>>);

impl MetadataStore for Memory {
    fn load(&self, name: &str) -> sigstore_tuf::Result<Option<Vec<u8>>> {
        Ok(self.0.lock().unwrap().get(name).cloned())
    }

    fn store(&self, name: &str, bytes: &[u8]) -> sigstore_tuf::Result<()> {
        self.0.lock().unwrap().insert(name.into(), bytes.to_vec());
        Ok(())
    }
}

#[test]
fn a_cached_root_that_cannot_be_satisfied_is_a_miss_and_good_files_are_kept() {
    let store = CheckedStore(Memory::default());
    let good = root(roles(serde_json::json!({"keyids": ["k1"], "threshold": 1})));
    let wedged = root(roles(serde_json::json!({"keyids": ["k1"], "threshold": 0})));
    store.store("root.json", &good).unwrap();
    store.store("2.root.json", &wedged).unwrap();
    store.store("timestamp.json", b"not checked").unwrap();
    assert_eq!(store.load("root.json").unwrap(), Some(good), "a good root");
    assert_eq!(
        store.load("2.root.json").unwrap(),
        None,
        "a root that wedges"
    );
    assert_eq!(
        store.load("timestamp.json").unwrap(),
        Some(b"not checked".to_vec()),
        "other files as stored"
    );
    assert_eq!(store.load("3.root.json").unwrap(), None, "absent");
}
