//! Checking one chain of digests (one trail, account and region): each digest's signature with
//! CloudTrail's key for its fingerprint, and each link to the digest before it.
//!
//! A digest's signature is its object's `x-amz-meta-signature`; without it (a local copy keeps
//! no object metadata) it is the `previousDigestSignature` of the digest that follows it (the
//! user guide's offline method, "Validating Digest and Log Files Offline"). Where the signature
//! bytes come from does not matter: only CloudTrail's private key makes one that verifies.
//! Links: the next digest names its previous one by key and by the SHA-256 of its inflated body
//! (`previousDigestS3Object`, `previousDigestHashValue`); a starting digest names none (logging
//! or validation was off before it: a gap, not an error). aws-cli checks that the previous
//! digest exists; this also checks its hash.

use std::collections::{HashMap, HashSet};

use jiff::Timestamp;

use super::file::{DigestFile, DigestName, awslogs_suffix, source_key};
use super::keys::KeySet;
use super::signature::{SIGNATURE_ALGORITHM, string_to_sign, verify};

/// A digest's inflated body and what its object carried.
#[derive(Debug, Clone)]
pub struct Loaded {
    pub file: DigestFile,
    pub sha256: [u8; 32],
    /// `x-amz-meta-signature` (hex), when the store keeps object metadata.
    pub signature: Option<String>,
    /// `x-amz-meta-signature-algorithm`.
    pub signature_algorithm: Option<String>,
}

/// A digest as fetched from the source: its key, its name, and its body or why it is unreadable.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub key: String,
    pub name: DigestName,
    pub body: Result<Loaded, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DigestStatus {
    Verified { fingerprint: String },
    /// `error_type` is the failure entry's: DigestInvalid, DigestSignatureInvalid,
    /// DigestSignatureMissing or DigestPublicKeyNotFound.
    Failed { error_type: &'static str, message: String },
}

impl DigestStatus {
    pub fn is_verified(&self) -> bool {
        matches!(self, DigestStatus::Verified { .. })
    }
}

/// A broken link: `key` is the digest the problem is about (a missing one, or the one whose
/// link does not match).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChainBreak {
    pub key: String,
    pub message: String,
}

/// What the source holds around the chain: every digest key its listings showed, and the
/// folders listed (a digest named as previous is missing only if its folder was listed).
pub struct Listed<'a> {
    pub keys: &'a HashSet<String>,
    pub folders: &'a HashSet<String>,
}

fn folder_of(key: &str) -> &str {
    key.rfind('/').map_or("", |i| &key[..=i])
}

/// Checks the digests of one chain; returns each digest's status (in input order) and the
/// broken links.
pub fn check_chain(digests: &[Fetched], keys: &KeySet, awslogs_root: &str, listed: &Listed) -> (Vec<DigestStatus>, Vec<ChainBreak>) {
    let by_key: HashMap<&str, usize> = digests.iter().enumerate().map(|(i, d)| (d.key.as_str(), i)).collect();
    // previous digest's key -> the digests that name it
    let mut named_by: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, d) in digests.iter().enumerate() {
        if let Ok(l) = &d.body
            && let Some(p) = l.file.previous_digest_s3_object.as_deref().and_then(|p| source_key(awslogs_root, p))
        {
            named_by.entry(p).or_default().push(i);
        }
    }
    let statuses: Vec<DigestStatus> = digests
        .iter()
        .map(|d| {
            let repeated = named_by.get(&d.key).into_iter().flatten().filter_map(|&s| match &digests[s].body {
                Ok(l) => l.file.previous_digest_signature.as_deref(),
                Err(_) => None,
            });
            check_one(d, repeated.collect(), keys)
        })
        .collect();

    let mut breaks = Vec::new();
    for (i, d) in digests.iter().enumerate() {
        let Ok(l) = &d.body else { continue };
        if !statuses[i].is_verified() {
            continue; // its own failure is the finding; its links say nothing trustworthy
        }
        let Some(prev_named) = l.file.previous_digest_s3_object.as_deref() else { continue };
        let Some(prev) = source_key(awslogs_root, prev_named) else {
            breaks.push(ChainBreak { key: d.key.clone(), message: format!("previousDigestS3Object `{prev_named}` is not a trail key") });
            continue;
        };
        match by_key.get(prev.as_str()) {
            Some(&p) => {
                let (Ok(pl), true) = (&digests[p].body, statuses[p].is_verified()) else { continue };
                let hash = hex::encode(pl.sha256);
                let named_hash = l.file.previous_digest_hash_value.as_deref().unwrap_or("");
                if !named_hash.eq_ignore_ascii_case(&hash) {
                    breaks.push(ChainBreak {
                        key: d.key.clone(),
                        message: format!(
                            "its previousDigestHashValue {named_hash} is not the SHA-256 of the digest before it ({hash}): the chain was rewired"
                        ),
                    });
                } else if let (Some(named_sig), Some(sig)) = (&l.file.previous_digest_signature, &pl.signature)
                    && !named_sig.eq_ignore_ascii_case(sig)
                {
                    breaks.push(ChainBreak {
                        key: d.key.clone(),
                        message: "its previousDigestSignature is not the signature of the digest before it".into(),
                    });
                }
            }
            None if listed.folders.contains(folder_of(&prev)) && !listed.keys.contains(&prev) => {
                breaks.push(ChainBreak {
                    key: prev.clone(),
                    message: format!(
                        "digest missing: {} names it as the digest before it (deleted or moved); the log files it listed cannot be verified",
                        d.key
                    ),
                })
            }
            None => {} // before the range read: not checked
        }
    }
    (statuses, breaks)
}

fn check_one(d: &Fetched, repeated: Vec<&str>, keys: &KeySet) -> DigestStatus {
    let failed = |error_type, message: String| DigestStatus::Failed { error_type, message };
    let l = match &d.body {
        Ok(l) => l,
        Err(why) => return failed("DigestInvalid", format!("not a readable digest file: {why}")),
    };
    if awslogs_suffix(&l.file.digest_s3_object) != awslogs_suffix(&d.key) {
        return failed(
            "DigestInvalid",
            format!("moved from its original location: it says it is s3://{}/{}", l.file.digest_s3_bucket, l.file.digest_s3_object),
        );
    }
    for alg in [l.signature_algorithm.as_deref(), l.file.digest_signature_algorithm.as_deref()].into_iter().flatten() {
        if alg != SIGNATURE_ALGORITHM {
            return failed("DigestInvalid", format!("signature algorithm {alg} is not {SIGNATURE_ALGORITHM}"));
        }
    }
    let fingerprint = l.file.digest_public_key_fingerprint.to_ascii_lowercase();
    let Some(key) = keys.get(&fingerprint) else {
        return failed(
            "DigestPublicKeyNotFound",
            format!("no CloudTrail public key with fingerprint {fingerprint} for region {}", d.name.region),
        );
    };
    let message = string_to_sign(&l.file, &l.sha256);
    let candidates: Vec<&str> = l.signature.as_deref().into_iter().chain(repeated).collect();
    if candidates.is_empty() {
        return failed(
            "DigestSignatureMissing",
            "no signature: the object has no x-amz-meta-signature metadata (local copies keep none) and no later digest of the chain repeats it".into(),
        );
    }
    if candidates.iter().any(|sig| verify(&key.der, message.as_bytes(), sig).is_ok()) {
        DigestStatus::Verified { fingerprint }
    } else {
        failed(
            "DigestSignatureInvalid",
            format!("the signature does not match the digest (key {fingerprint}): it was altered after CloudTrail signed it"),
        )
    }
}

/// The end time a digest's body claims, for ordering and messages.
pub fn end_time(d: &Fetched) -> Timestamp {
    d.name.end
}
