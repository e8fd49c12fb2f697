//! Images a container runtime can unpack: each layer is a real
//! gzip-compressed tar of a few small files, and the config's
//! `rootfs.diff_ids` are the digests of the uncompressed tars.

use std::io::Write as _;

use flate2::Compression;
use flate2::write::GzEncoder;

use super::image::{
    Blob, DOCKER_LIST, DOCKER_MANIFEST, Image, Index, OCI_INDEX, OCI_MANIFEST, random_bytes, sha256,
};

/// Which family of media types an image uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Flavour {
    Oci,
    Docker,
}

impl Flavour {
    fn manifest(self) -> &'static str {
        match self {
            Flavour::Oci => OCI_MANIFEST,
            Flavour::Docker => DOCKER_MANIFEST,
        }
    }

    fn config(self) -> &'static str {
        match self {
            Flavour::Oci => "application/vnd.oci.image.config.v1+json",
            Flavour::Docker => "application/vnd.docker.container.image.v1+json",
        }
    }

    fn layer(self) -> &'static str {
        match self {
            Flavour::Oci => "application/vnd.oci.image.layer.v1.tar+gzip",
            Flavour::Docker => "application/vnd.docker.image.rootfs.diff.tar.gzip",
        }
    }

    fn index(self) -> &'static str {
        match self {
            Flavour::Oci => OCI_INDEX,
            Flavour::Docker => DOCKER_LIST,
        }
    }
}

/// One file in a layer.
#[derive(Clone, Debug)]
pub struct LayerFile {
    pub path: String,
    pub contents: Vec<u8>,
}

/// A runnable single-platform image and what its layers hold.
#[derive(Clone, Debug)]
pub struct Runnable {
    pub image: Image,
    /// sha256 of each uncompressed layer tar, in layer order.
    pub diff_ids: Vec<String>,
    /// The files of each layer, in layer order.
    pub files: Vec<Vec<LayerFile>>,
    pub arch: &'static str,
}

impl Runnable {
    /// An image for `linux/<arch>` with two layers; `seed` makes contents
    /// (and so digests) unique to the test.
    pub fn new(seed: u64, flavour: Flavour, arch: &'static str) -> Runnable {
        Runnable::with_payload(seed, flavour, arch, 0)
    }

    /// Like [`new`](Self::new), with a `payload`-byte incompressible file
    /// (`app/payload.bin`) in the second layer, so a layer takes a while to
    /// stream.
    pub fn with_payload(
        seed: u64,
        flavour: Flavour,
        arch: &'static str,
        payload: usize,
    ) -> Runnable {
        let mut files = vec![
            vec![
                file(
                    "etc/os-release",
                    format!("ID=portcullis-test\nSEED={seed}\n"),
                ),
                file(
                    "bin/hello",
                    format!("#!/bin/sh\necho hello {seed} {arch}\n"),
                ),
            ],
            vec![file(
                "app/greeting.txt",
                format!("hello from layer 2, seed {seed}, {arch}\n"),
            )],
        ];
        if payload > 0 {
            files[1].push(LayerFile {
                path: "app/payload.bin".into(),
                contents: random_bytes(seed, payload),
            });
        }
        let mut layers = Vec::new();
        let mut diff_ids = Vec::new();
        for layer_files in &files {
            let tar = tar_of(layer_files);
            diff_ids.push(sha256(&tar));
            layers.push(Blob::new(flavour.layer(), gzip(&tar)));
        }
        let config_json = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "config": {"Env": [format!("SEED={seed}")], "Cmd": ["/bin/hello"]},
            "rootfs": {"type": "layers", "diff_ids": diff_ids},
            "history": [{"created_by": "portcullis test layer 1"}, {"created_by": "portcullis test layer 2"}],
        });
        let config = Blob::new(flavour.config(), serde_json::to_vec(&config_json).unwrap());
        let manifest = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": flavour.manifest(),
            "config": config.descriptor(),
            "layers": layers.iter().map(Blob::descriptor).collect::<Vec<_>>(),
        }))
        .unwrap();
        let image = Image {
            digest: sha256(&manifest),
            config,
            layers,
            media_type: flavour.manifest().into(),
            manifest,
        };
        Runnable {
            image,
            diff_ids,
            files,
            arch,
        }
    }

    /// The snapshot key containerd gives the top layer: the chain ID of
    /// the diff IDs (OCI image spec, "ChainID").
    pub fn chain_id(&self) -> String {
        let mut ids = self.diff_ids.iter();
        let mut chain = ids.next().cloned().unwrap_or_default();
        for diff in ids {
            chain = sha256(format!("{chain} {diff}").as_bytes());
        }
        chain
    }
}

/// A two-platform index: a runnable `linux/amd64` child first, then a
/// runnable `linux/arm64` child.
pub fn two_platform_index(seed: u64, flavour: Flavour) -> (Index, Runnable, Runnable) {
    let amd64 = Runnable::new(seed, flavour, "amd64");
    let arm64 = Runnable::new(seed, flavour, "arm64");
    let index = Index::new(
        flavour.index(),
        vec![amd64.image.clone(), arm64.image.clone()],
    );
    (index, amd64, arm64)
}

fn file(path: &str, contents: String) -> LayerFile {
    LayerFile {
        path: path.into(),
        contents: contents.into_bytes(),
    }
}

/// A deterministic tar: parent directories first, fixed times and owners.
pub fn tar_of(files: &[LayerFile]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    let mut dirs: Vec<String> = Vec::new();
    for f in files {
        let mut parent = String::new();
        let parts: Vec<&str> = f.path.split('/').collect();
        for part in &parts[..parts.len() - 1] {
            parent.push_str(part);
            parent.push('/');
            if !dirs.contains(&parent) {
                dirs.push(parent.clone());
                let mut h = header(tar::EntryType::Directory, 0o755, 0);
                builder
                    .append_data(&mut h, &parent, std::io::empty())
                    .unwrap();
            }
        }
        let mut h = header(tar::EntryType::Regular, 0o755, f.contents.len() as u64);
        builder
            .append_data(&mut h, &f.path, f.contents.as_slice())
            .unwrap();
    }
    builder.into_inner().unwrap()
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_ustar();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_mtime(1_700_000_000);
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// gzip with a fixed header (no name, mtime 0), so output is reproducible.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = GzEncoder::new(Vec::new(), Compression::default());
    enc.write_all(bytes).unwrap();
    enc.finish().unwrap()
}
