//! The shape limits every manifest is held to in every mode: descriptors
//! listed, and index nesting.

use super::*;

impl Puller {
    /// Why a manifest is too large or too deeply nested to be served, if it is.
    pub(super) fn shape_limit(
        &self,
        target: &Target,
        digest: &Digest,
        manifest: &Manifest,
        generation: u64,
        reached: Reached,
    ) -> Option<String> {
        let (entries, index) = match &manifest.kind {
            crate::oci::ManifestKind::Image { layers, .. } => (layers.len(), false),
            crate::oci::ManifestKind::Index { manifests } => (manifests.len(), true),
        };
        if entries > MAX_ENTRIES {
            return Some(format!(
                "the manifest lists {entries} descriptors, more than {MAX_ENTRIES}"
            ));
        }
        let nesting = match (index, reached) {
            (true, Reached::ThroughAllowedIndex) => {
                self.nesting(&target.key(digest), generation, 0)
            }
            _ => 0,
        };
        (nesting >= MAX_INDEX_NESTING).then(|| {
            format!("the index is nested {nesting} indexes deep; at most {MAX_INDEX_NESTING} indexes may stand above an image")
        })
    }

    /// How many indexes stand above `subject` along its shortest chain of
    /// live grants (0 when none names it).
    pub(super) fn nesting(&self, subject: &RepoDigest, generation: u64, depth: usize) -> usize {
        if depth > MAX_GRANT_DEPTH {
            return depth;
        }
        self.child_grants
            .grantors(subject, generation)
            .into_iter()
            .filter(|g| self.live(subject, g.clone(), generation, 0))
            .map(|(index, reached)| match reached {
                Reached::Directly => 1,
                Reached::ThroughAllowedIndex => {
                    let above = (subject.0.clone(), subject.1.clone(), index);
                    1 + self.nesting(&above, generation, depth + 1)
                }
            })
            .min()
            .unwrap_or(0)
    }
}
