//! Criterion benchmarks for functions on the request hot path. Run with
//! `cargo bench --bench hot_paths`. The load comparison against
//! distribution's proxy mode lives beside this file (see docs/benchmarks.md).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use portcullis::oci::{Digest, Manifest};
use portcullis::policy::Glob;
use portcullis::server::routes::{Query, Route, route};

fn parsing(c: &mut Criterion) {
    let path = format!(
        "/v2/docker.io/library/nginx/manifests/sha256:{}",
        "a".repeat(64)
    );
    c.bench_function("route_parse_manifest_by_digest", |b| {
        b.iter(|| Route::parse(black_box(&path)))
    });
    c.bench_function("query_parse_ns", |b| {
        b.iter(|| Query::parse(black_box(Some("ns=docker.io"))))
    });
    let lookup = |n: &str| (n == "docker.io").then_some(1u8);
    c.bench_function("route_to_upstream_with_library_prefix", |b| {
        b.iter(|| {
            route(black_box("nginx"), Some("docker.io"), lookup, None, |_| {
                true
            })
        })
    });
    let digest = format!("sha256:{}", "0123456789abcdef".repeat(4));
    c.bench_function("digest_parse", |b| {
        b.iter(|| black_box(&digest).parse::<Digest>())
    });
    let glob: Glob = "docker.io/acme/**".parse().unwrap();
    c.bench_function("glob_match_double_star", |b| {
        b.iter(|| glob.matches(black_box("docker.io/acme/team/app")))
    });
}

fn hashing(c: &mut Criterion) {
    let data = vec![7u8; 4 << 20];
    let mut g = c.benchmark_group("sha256");
    g.throughput(Throughput::Bytes(data.len() as u64));
    g.bench_function("4MiB", |b| b.iter(|| Digest::sha256_of(black_box(&data))));
    g.finish();
    let manifest = format!(
        r#"{{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"{d}","size":1}},"layers":[{{"mediaType":"application/vnd.oci.image.layer.v1.tar+gzip","digest":"{d}","size":1}}]}}"#,
        d = Digest::sha256_of(b"x")
    );
    c.bench_function("manifest_parse", |b| {
        b.iter(|| Manifest::parse(black_box(manifest.as_bytes()), None))
    });
}

criterion_group!(benches, parsing, hashing);
criterion_main!(benches);
