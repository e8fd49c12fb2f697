//! A Sigstore-style TUF repository for tests: ed25519 role keys, metadata
//! signed over canonical JSON, `trusted_root.json` as its one target,
//! published to a [`TrustServer`] at `/` (metadata) and `/targets/`.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair as _};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

use super::trust_server::TrustServer;

pub struct TufRepo {
    key: Ed25519KeyPair,
    /// Version of the timestamp, snapshot and targets roles, bumped on each
    /// publication.
    version: u64,
}

const EXPIRES: &str = "2099-01-01T00:00:00Z";

impl TufRepo {
    pub fn new() -> TufRepo {
        TufRepo {
            key: Ed25519KeyPair::generate().unwrap(),
            version: 0,
        }
    }

    fn key_json(key: &Ed25519KeyPair) -> Value {
        json!({"keytype": "ed25519", "scheme": "ed25519",
               "keyval": {"public": hex::encode(key.public_key().as_ref())}})
    }

    fn key_id(key: &Ed25519KeyPair) -> String {
        let canonical =
            sigstore_tuf::canonical_json::to_canonical_bytes(&Self::key_json(key)).unwrap();
        hex::encode(Sha256::digest(canonical))
    }

    /// `signed` wrapped with a signature by `key` over its canonical JSON.
    fn sign_with(key: &Ed25519KeyPair, signed: Value) -> Vec<u8> {
        let canonical = sigstore_tuf::canonical_json::to_canonical_bytes(&signed).unwrap();
        let sig = key.sign(&canonical);
        serde_json::to_vec(&json!({
            "signed": signed,
            "signatures": [{"keyid": Self::key_id(key), "sig": hex::encode(sig.as_ref())}],
        }))
        .unwrap()
    }

    /// Version 1 of `root.json`: one key for every role. This is the initial
    /// root a client is configured with.
    pub fn root(&self) -> Vec<u8> {
        let id = Self::key_id(&self.key);
        let role = json!({"keyids": [id], "threshold": 1});
        Self::sign_with(
            &self.key,
            json!({
                "_type": "root", "spec_version": "1.0.31", "version": 1, "expires": EXPIRES,
                "consistent_snapshot": false,
                "keys": {id.clone(): Self::key_json(&self.key)},
                "roles": {"root": role, "targets": role, "snapshot": role, "timestamp": role},
            }),
        )
    }

    /// Publishes version `version` of `root.json` (at `/<version>.root.json`),
    /// validly signed by the root key, binding the timestamp, snapshot and
    /// targets roles to the same key with signature threshold `threshold`.
    pub fn publish_root(&self, server: &TrustServer, version: u64, threshold: u64) {
        let id = Self::key_id(&self.key);
        let root = json!({"keyids": [id], "threshold": 1});
        let role = json!({"keyids": [id], "threshold": threshold});
        let signed = Self::sign_with(
            &self.key,
            json!({
                "_type": "root", "spec_version": "1.0.31", "version": version, "expires": EXPIRES,
                "consistent_snapshot": false,
                "keys": {id.clone(): Self::key_json(&self.key)},
                "roles": {"root": root, "targets": role, "snapshot": role, "timestamp": role},
            }),
        );
        server.put(&format!("/{version}.root.json"), Some(signed));
    }

    /// Publishes `trusted_root` as a new version of the repository on `server`.
    pub fn publish(&mut self, server: &TrustServer, trusted_root: &str) {
        self.version += 1;
        for (path, body) in self.metadata(trusted_root, &self.key) {
            server.put(&path, Some(body));
        }
        server.put("/targets/trusted_root.json", Some(trusted_root.into()));
    }

    /// Publishes `trusted_root` with metadata signed by a key the root does
    /// not name, as an attacker holding only the file server could.
    pub fn publish_forged(&mut self, server: &TrustServer, trusted_root: &str) {
        self.version += 1;
        let rogue = Ed25519KeyPair::generate().unwrap();
        for (path, body) in self.metadata(trusted_root, &rogue) {
            server.put(&path, Some(body));
        }
        server.put("/targets/trusted_root.json", Some(trusted_root.into()));
    }

    fn metadata(&self, trusted_root: &str, key: &Ed25519KeyPair) -> Vec<(String, Vec<u8>)> {
        let v = self.version;
        let common = |kind: &str| json!({"_type": kind, "spec_version": "1.0.31", "version": v, "expires": EXPIRES});
        let mut targets = common("targets");
        targets["targets"] = json!({"trusted_root.json": {
            "length": trusted_root.len(),
            "hashes": {"sha256": hex::encode(Sha256::digest(trusted_root))},
        }});
        let mut snapshot = common("snapshot");
        snapshot["meta"] = json!({"targets.json": {"version": v}});
        let mut timestamp = common("timestamp");
        timestamp["meta"] = json!({"snapshot.json": {"version": v}});
        vec![
            ("/root.json".into(), self.root()),
            ("/1.root.json".into(), self.root()),
            ("/targets.json".into(), Self::sign_with(key, targets)),
            ("/snapshot.json".into(), Self::sign_with(key, snapshot)),
            ("/timestamp.json".into(), Self::sign_with(key, timestamp)),
        ]
    }
}
