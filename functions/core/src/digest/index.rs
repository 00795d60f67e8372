//! What the checked digests say about log files: for each log file key, the hashes the digests
//! listing it give, and whether those digests are authentic.

use std::collections::{BTreeSet, HashMap};

use serde::{Deserialize, Serialize};

use super::chain::DigestStatus;
use super::signature::HASH_ALGORITHM;

/// One checked digest.
#[derive(Debug, Clone)]
pub struct CheckedDigest {
    pub key: String,
    /// `s3://bucket/key` or a path.
    pub location: String,
    pub status: DigestStatus,
}

/// A file listed by a digest.
#[derive(Debug, Clone)]
struct Listing {
    digest: usize,
    /// Lower-case hex SHA-256 of the inflated log file; `None` for another algorithm.
    hash: Option<String>,
}

/// The outcome for one log file read by a copy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "camelCase")]
pub enum Verdict {
    /// An authentic digest lists the file with the hash of its inflated bytes.
    Verified { digest: String },
    /// No digest lists the file (validation was off, or its digest is missing or not yet delivered).
    NotInDigest,
    /// An authentic digest lists the file with another hash: tampered or damaged.
    Mismatch { digest: String, expected: String, actual: String },
    /// Only digests that failed their own check list it (their failure entry says why).
    Unverified { digest: String, reason: String },
}

impl Verdict {
    pub fn is_verified(&self) -> bool {
        matches!(self, Verdict::Verified { .. })
    }
}

#[derive(Debug, Default)]
pub struct DigestIndex {
    digests: Vec<CheckedDigest>,
    files: HashMap<String, Vec<Listing>>,
}

impl DigestIndex {
    /// Adds a checked digest and the files it lists (source keys with their hash and algorithm).
    pub fn add(&mut self, digest: CheckedDigest, listed: impl IntoIterator<Item = (String, String, Option<String>)>) {
        let i = self.digests.len();
        self.digests.push(digest);
        for (key, hash, algorithm) in listed {
            let sha256 = algorithm.is_none_or(|a| a == HASH_ALGORITHM);
            let hash = sha256.then(|| hash.to_ascii_lowercase());
            self.files.entry(key).or_default().push(Listing { digest: i, hash });
        }
    }

    pub fn digests(&self) -> &[CheckedDigest] {
        &self.digests
    }

    /// The verdict for a file whose inflated bytes hash to `actual` (`None`: they could not
    /// be read whole, e.g. a damaged gzip stream).
    pub fn verdict(&self, key: &str, actual: Option<&[u8; 32]>) -> Verdict {
        let Some(listings) = self.files.get(key) else { return Verdict::NotInDigest };
        let actual_hex = actual.map(hex::encode);
        let mut authentic = listings.iter().filter(|l| self.digests[l.digest].status.is_verified()).peekable();
        if authentic.peek().is_none() {
            let d = &self.digests[listings[0].digest];
            let reason = match &d.status {
                DigestStatus::Failed { error_type, .. } => (*error_type).to_string(),
                DigestStatus::Verified { .. } => String::new(),
            };
            return Verdict::Unverified { digest: d.location.clone(), reason };
        }
        let mut first = None;
        for l in authentic {
            let digest = self.digests[l.digest].location.clone();
            if l.hash.is_some() && l.hash == actual_hex {
                return Verdict::Verified { digest };
            }
            first.get_or_insert((digest, l.hash.clone()));
        }
        let (digest, expected) = first.unwrap_or_default();
        Verdict::Mismatch {
            digest,
            expected: expected.unwrap_or_else(|| "(not SHA-256)".into()),
            actual: actual_hex.unwrap_or_else(|| "(unreadable: not a complete gzip stream)".into()),
        }
    }

    /// Files authentic digests list, with the digest listing each (for LogFileMissing).
    pub fn listed_by_verified(&self) -> impl Iterator<Item = (&str, &CheckedDigest)> {
        self.files.iter().filter_map(|(key, ls)| {
            ls.iter()
                .find(|l| self.digests[l.digest].status.is_verified())
                .map(|l| (key.as_str(), &self.digests[l.digest]))
        })
    }

    /// The files each digest lists, by the digest's position in [`Self::digests`].
    pub fn files_by_digest(&self) -> Vec<Vec<&str>> {
        let mut out = vec![Vec::new(); self.digests.len()];
        for (key, ls) in &self.files {
            for l in ls {
                out[l.digest].push(key.as_str());
            }
        }
        out
    }

    /// Fingerprints of the keys that verified digests.
    pub fn fingerprints(&self) -> BTreeSet<String> {
        self.digests
            .iter()
            .filter_map(|d| match &d.status {
                DigestStatus::Verified { fingerprint } => Some(fingerprint.clone()),
                DigestStatus::Failed { .. } => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(name: &str, ok: bool) -> CheckedDigest {
        CheckedDigest {
            key: name.into(),
            location: format!("s3://b/{name}"),
            status: if ok {
                DigestStatus::Verified { fingerprint: "fp".into() }
            } else {
                DigestStatus::Failed { error_type: "DigestSignatureInvalid", message: "x".into() }
            },
        }
    }

    fn listed(key: &str, hash: &[u8; 32]) -> (String, String, Option<String>) {
        (key.into(), hex::encode_upper(hash), Some("SHA-256".into()))
    }

    #[test]
    fn verdicts() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut ix = DigestIndex::default();
        ix.add(digest("d1", true), [listed("f1", &a), listed("f2", &a)]);
        ix.add(digest("d2", false), [listed("f3", &a)]);
        assert_eq!(ix.verdict("f1", Some(&a)), Verdict::Verified { digest: "s3://b/d1".into() });
        assert_eq!(
            ix.verdict("f2", Some(&b)),
            Verdict::Mismatch { digest: "s3://b/d1".into(), expected: hex::encode(a), actual: hex::encode(b) }
        );
        assert!(matches!(ix.verdict("f2", None), Verdict::Mismatch { actual, .. } if actual.contains("unreadable")));
        assert_eq!(
            ix.verdict("f3", Some(&a)),
            Verdict::Unverified { digest: "s3://b/d2".into(), reason: "DigestSignatureInvalid".into() }
        );
        assert_eq!(ix.verdict("f4", Some(&a)), Verdict::NotInDigest);
        let listed: Vec<&str> = ix.listed_by_verified().map(|(k, _)| k).collect::<BTreeSet<_>>().into_iter().collect();
        assert_eq!(listed, ["f1", "f2"]);
        assert_eq!(ix.fingerprints().into_iter().collect::<Vec<_>>(), ["fp"]);
    }

    #[test]
    fn a_file_in_a_backfill_and_an_original_digest_verifies_against_either() {
        let (a, b) = ([1u8; 32], [2u8; 32]);
        let mut ix = DigestIndex::default();
        ix.add(digest("d1", true), [listed("f", &b)]);
        ix.add(digest("d1-backfill", true), [listed("f", &a)]);
        assert!(ix.verdict("f", Some(&a)).is_verified());
    }
}
