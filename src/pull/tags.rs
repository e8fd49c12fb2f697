//! Tags: resolved once per `tag_ttl`, revalidated with a HEAD, served from
//! a verified mapping while the upstream is down (up to `max_stale`).

use super::*;

impl Puller {
    /// Tag → digest: from the tag cache within `tag_ttl`, else revalidated
    /// with a HEAD (which Docker Hub does not count as a pull). While the
    /// upstream is unavailable, a verified mapping is used up to `max_stale`
    /// and returned with how long ago it was checked. The fresh path costs
    /// one cache lookup, as before.
    pub(super) async fn resolve_tag(
        self: &Arc<Self>,
        target: &Target,
        tag: &Tag,
    ) -> Result<(Digest, Option<Duration>), PullError> {
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        if let Some(entry) = self.tags.get(&key) {
            if age(self.clock.as_ref(), entry.checked_at) < self.tag_ttl {
                self.metrics.cache_lookup(Cache::Tag, true);
                return Ok((entry.digest, None));
            }
        }
        self.metrics.cache_lookup(Cache::Tag, false);
        // Another replica's mapping is looked for under the tag's lease.
        let this = Arc::clone(self);
        let t = target.clone();
        let k = key.clone();
        let flight = move || async move { this.revalidate_tag(&t, k).await };
        let digest = self.tag_flights.run(key, flight, cancelled()).await?;
        // Only past a lookup that found no fresh mapping can it be stale.
        let stale = self.stale_for(target, tag, &digest);
        Ok((digest, stale))
    }

    pub(super) async fn revalidate_tag(
        &self,
        target: &Target,
        key: TagKey,
    ) -> Result<Digest, PullError> {
        // A flight that finished after the caller's cache lookup has stored a
        // fresh mapping (it inserts before it leaves the flight map).
        if let Some(entry) = self.tags.get(&key) {
            if age(self.clock.as_ref(), entry.checked_at) < self.tag_ttl {
                return Ok(entry.digest);
            }
        }
        // One replica asks the upstream; the others wait for its answer.
        let what = format!("tag:{}/{}:{}", key.0, key.1, key.2.as_str());
        let _lease = match self.take_turn(&what, || self.shared_tag(&key)).await {
            replicas::Turn::Done(digest) => return Ok(digest),
            replicas::Turn::Mine(lease) => lease,
        };
        let reference = Reference::Tag(key.2.clone());
        let previous = self.tags.get(&key);
        // A tag seen before is revalidated with a HEAD (not a pull on Docker
        // Hub; the content is usually cached). A tag never seen is fetched
        // with one GET: its bytes are needed anyway, and that saves a round
        // trip on every cold pull.
        let digest = if previous.is_none() {
            self.fetch_by_tag(target, &reference).await?
        } else {
            let head = target
                .upstream
                .head_manifest(&target.repo, &reference, DEFAULT_MANIFEST_ACCEPT)
                .await;
            match head {
                Ok(h) => match h.digest {
                    Some(d) => d,
                    None => self.fetch_by_tag(target, &reference).await?,
                },
                Err(UpstreamError::NotFound) => {
                    self.tags.invalidate(&key);
                    return Err(UpstreamError::NotFound.into());
                }
                Err(e) => return self.stale_or(target, &key, e),
            }
        };
        if let Some(p) = previous
            .as_ref()
            .filter(|p| p.verified && p.digest != digest)
        {
            // Recorded with the first decision through the tag now.
            self.moved
                .insert(key.clone(), (p.digest.clone(), digest.clone()));
            // Counted at once: `take_tag_move` looks only while one is held.
            self.moved.run_pending_tasks();
        }
        let verified = previous.is_some_and(|p| p.verified && p.digest == digest);
        self.know(target.key(&digest));
        let checked_at = self.clock.now();
        if let Some(cluster) = &self.cluster {
            cluster
                .put_tag(&key.0, &key.1, &key.2, &digest, checked_at, self.tag_ttl)
                .await;
        }
        self.tags.insert(
            key,
            TagEntry {
                digest: digest.clone(),
                checked_at,
                verified,
            },
        );
        Ok(digest)
    }

    /// The digest another replica resolved the tag to within `tag_ttl`,
    /// kept here as an unverified mapping (it is only a name for content
    /// that is then fetched, checked and decided).
    async fn shared_tag(&self, key: &TagKey) -> Option<Digest> {
        let cluster = self.cluster.as_ref()?;
        let (digest, at) = cluster.tag(&key.0, &key.1, &key.2).await?;
        if !self.fresh(at) {
            return None;
        }
        let at = at.min(self.clock.now());
        // Not `know`: the upstream is asked whether this repository holds
        // the digest (a HEAD) before content cached for another is served.
        let verified = self
            .tags
            .get(key)
            .is_some_and(|p| p.verified && p.digest == digest);
        self.tags.insert(
            key.clone(),
            TagEntry {
                digest: digest.clone(),
                checked_at: at,
                verified,
            },
        );
        Some(digest)
    }

    /// For upstreams whose HEAD lacks `Docker-Content-Digest`: GET by tag and
    /// hash the bytes ourselves (they are then cached by that digest).
    pub(super) async fn fetch_by_tag(
        &self,
        target: &Target,
        reference: &Reference,
    ) -> Result<Digest, PullError> {
        let fetched = target
            .upstream
            .fetch_manifest(&target.repo, reference, DEFAULT_MANIFEST_ACCEPT)
            .await?;
        let digest = Digest::sha256_of(&fetched.bytes);
        if let Some(claimed) = &fetched.digest_header {
            if !claimed.matches(&fetched.bytes) {
                return Err(PullError::Upstream(target.upstream.record_fault(
                    UpstreamError::DigestMismatch {
                        expected: claimed.clone(),
                        actual: Digest::of(claimed.algorithm(), &fetched.bytes),
                    },
                )));
            }
        }
        self.admit(target, digest.clone(), fetched).await?;
        Ok(digest)
    }

    /// How long ago the mapping `tag` → `digest` was last checked, when
    /// that is past `tag_ttl`: a revalidation that reached the upstream
    /// leaves a fresh mapping, so an old one was kept because it could not.
    pub(super) fn stale_for(
        &self,
        target: &Target,
        tag: &Tag,
        digest: &Digest,
    ) -> Option<Duration> {
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        let entry = self.tags.get(&key)?;
        let checked = age(self.clock.as_ref(), entry.checked_at);
        (entry.digest == *digest && checked >= self.tag_ttl).then_some(checked)
    }

    pub(super) fn stale_or(
        &self,
        target: &Target,
        key: &TagKey,
        e: UpstreamError,
    ) -> Result<Digest, PullError> {
        if e.is_unavailable() {
            if let Some(entry) = self.tags.get(key) {
                if entry.verified && age(self.clock.as_ref(), entry.checked_at) < self.max_stale {
                    tracing::warn!(upstream = %target.upstream.name, repo = %target.repo, tag = %key.2, error = %e, "upstream unavailable; serving last verified tag mapping");
                    self.metrics.stale_served(target.upstream.name.as_str());
                    return Ok(entry.digest);
                }
            }
        }
        Err(e.into())
    }

    /// Drops a tag mapping whose digest could not be fetched or checked, so
    /// the next request asks the upstream again instead of chasing a digest
    /// that a faulty (or lying) answer named. Verified mappings stay.
    pub(super) fn forget_unverified_tag(&self, target: &Target, tag: &Tag, digest: &Digest) {
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        if self
            .tags
            .get(&key)
            .is_some_and(|e| !e.verified && e.digest == *digest)
        {
            self.tags.invalidate(&key);
        }
    }

    /// The digest a verified tag named before the upstream moved it to
    /// `decided`, once: the caller records the move with the decision it
    /// just made on `decided`. A decision on another digest (one that
    /// resolved the tag before the move, or none was known) takes nothing.
    pub fn take_tag_move(
        &self,
        target: &Target,
        tag: &Tag,
        decided: Option<&Digest>,
    ) -> Option<Digest> {
        use moka::ops::compute::{CompResult, Op};
        let decided = decided?;
        // The cached path: no key built, no entry locked, while no move is held.
        if self.moved.entry_count() == 0 {
            return None;
        }
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        let taken = self.moved.entry(key).and_compute_with(|entry| match entry {
            Some(e) if e.value().1 == *decided => Op::Remove,
            _ => Op::Nop,
        });
        match taken {
            CompResult::Removed(e) => Some(e.into_value().0),
            _ => None,
        }
    }

    pub(super) fn mark_tag_verified(&self, target: &Target, tag: &Tag, digest: &Digest) {
        let key: TagKey = (
            target.upstream.name.clone(),
            target.repo.clone(),
            tag.clone(),
        );
        if let Some(mut entry) = self.tags.get(&key) {
            if !entry.verified && entry.digest == *digest {
                entry.verified = true;
                self.tags.insert(key, entry);
            }
        }
    }
}
