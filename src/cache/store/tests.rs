use super::*;

async fn store(dir: &Path, max: u64) -> Arc<ContentStore> {
    ContentStore::open(dir, max, Arc::new(Metrics::new().unwrap()))
        .await
        .unwrap()
}

async fn put_blob(s: &ContentStore, bytes: &[u8]) -> Digest {
    let d = Digest::sha256_of(bytes);
    let mut w = s.begin(Kind::Blob, d.clone()).await.unwrap();
    w.write(bytes).unwrap();
    w.commit_blocking().unwrap();
    s.committed();
    d
}

#[tokio::test]
async fn committed_blob_is_readable_and_survives_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let d = put_blob(&*store(dir.path(), 1 << 30).await, b"hello").await;
    let s = store(dir.path(), 1 << 30).await;
    let (_, size) = s.open_blob(&d).await.unwrap();
    assert_eq!(size, 5);
}

#[tokio::test]
async fn mismatched_content_is_never_published_and_leaves_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30).await;
    let claimed = Digest::sha256_of(b"expected");
    let mut w = s.begin(Kind::Blob, claimed.clone()).await.unwrap();
    w.write(b"something else").unwrap();
    assert!(matches!(
        w.commit_blocking(),
        Err(CommitError::Mismatch { .. })
    ));
    assert!(s.open_blob(&claimed).await.is_none());
    assert!(!s.path(Kind::Blob, &claimed).exists());
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn abandoned_write_is_removed_on_drop_and_at_startup() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30).await;
    let d = Digest::sha256_of(b"partial");
    let mut w = s.begin(Kind::Blob, d.clone()).await.unwrap();
    w.write(b"par").unwrap();
    drop(w);
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
    std::fs::write(dir.path().join("tmp/leftover"), b"x").unwrap();
    let _ = store(dir.path(), 1 << 30).await;
    assert_eq!(
        std::fs::read_dir(dir.path().join("tmp")).unwrap().count(),
        0
    );
}

#[tokio::test]
async fn least_recently_used_blob_is_evicted_over_budget() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 10 * 1024).await;
    let a = put_blob(&s, &[1u8; 4096]).await;
    let b = put_blob(&s, &[2u8; 4096]).await;
    assert!(s.contains(Kind::Blob, &a)); // a is now more recent than b
    let c = put_blob(&s, &[3u8; 4096]).await;
    s.index.run_pending_tasks();
    assert!(s.contains(Kind::Blob, &a));
    assert!(
        !s.contains(Kind::Blob, &b),
        "least recently used entry should be gone"
    );
    assert!(s.contains(Kind::Blob, &c));
    assert!(!s.path(Kind::Blob, &b).exists(), "evicted file is deleted");
    assert_eq!(s.metrics.cache_evictions.get(), 1);
}

#[tokio::test]
async fn manifest_round_trips_with_media_type_and_corruption_is_dropped() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 1 << 30).await;
    let bytes = Bytes::from_static(b"{\"schemaVersion\":2}");
    let d = Digest::sha256_of(&bytes);
    let mt = MediaType::parse(crate::oci::media::OCI_MANIFEST).unwrap();
    s.put_manifest(&d, &mt, &bytes).await.unwrap();
    let (got_mt, got) = s.read_manifest(&d).await.unwrap();
    assert_eq!((got_mt, got), (mt, bytes));
    std::fs::write(
        s.path(Kind::Manifest, &d),
        "application/vnd.oci.image.manifest.v1+json\n{}",
    )
    .unwrap();
    assert!(s.read_manifest(&d).await.is_none());
    assert!(!s.contains(Kind::Manifest, &d));
}

#[tokio::test]
async fn opening_the_store_exports_its_budget_next_to_its_size() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path(), 20 << 30).await;
    put_blob(&s, &[4u8; 4096]).await;
    assert_eq!(s.metrics.cache_budget_bytes.get(), 20 << 30);
    assert_eq!(s.metrics.cache_bytes.get(), 4096);
    let text = String::from_utf8(s.metrics.render()).unwrap();
    assert!(text.contains("portcullis_cache_budget_bytes 21474836480"));
}
