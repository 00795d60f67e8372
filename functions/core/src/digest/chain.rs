//! Checking one chain of digests (one trail, account and region): each digest's signature with
//! CloudTrail's key for its fingerprint, and each link to the digest before it.
//!
//! A digest's signature is its object's `x-amz-meta-signature`, and only that when the object
//! has it: one that does not verify fails the digest (DigestSignatureInvalid), as aws-cli's
//! validator says, even if the next digest repeats the true signature (that would pass a digest
//! whose object was tampered with and blame the authentic next digest for a broken chain).
//! Without it (a local copy keeps no object metadata) it is the `previousDigestSignature` of the
//! digest that follows it (the user guide's offline method, "Validating Digest and Log Files
//! Offline").
//! Links: the next digest names its previous one by key and by the SHA-256 of its inflated body
//! (`previousDigestS3Object`, `previousDigestHashValue`); a starting digest names none (logging
//! or validation was off before it: a gap, not an error). aws-cli checks that the previous
//! digest exists; this also checks its hash.

use std::collections::{HashMap, HashSet};

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
    Verified {
        fingerprint: String,
    },
    /// `error_type` is the failure entry's: DigestInvalid, DigestSignatureInvalid,
    /// DigestSignatureMissing or DigestPublicKeyNotFound.
    Failed {
        error_type: &'static str,
        message: String,
    },
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
pub fn check_chain(
    digests: &[Fetched],
    keys: &KeySet,
    awslogs_root: &str,
    listed: &Listed,
) -> (Vec<DigestStatus>, Vec<ChainBreak>) {
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
            breaks.push(ChainBreak {
                key: d.key.clone(),
                message: format!("previousDigestS3Object `{prev_named}` is not a trail key"),
            });
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
            format!(
                "moved from its original location: it says it is s3://{}/{}",
                l.file.digest_s3_bucket, l.file.digest_s3_object
            ),
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
    // The object's own signature when it has one; else what the digests after it repeat.
    let (candidates, from): (Vec<&str>, &str) = match l.signature.as_deref() {
        Some(own) => (vec![own], "in its x-amz-meta-signature metadata"),
        None => (repeated, "the next digest repeats (previousDigestSignature)"),
    };
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
            format!(
                "the signature {from} does not match the digest (key {fingerprint}): the digest or its signature was \
                 altered after CloudTrail signed it"
            ),
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::sync::LazyLock;

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::rsa::{KeyPair, KeySize};
    use aws_lc_rs::signature::{KeyPair as _, RSA_PKCS1_SHA256};

    use super::*;
    use crate::digest::file::parse_digest;
    use crate::digest::keys::{PublicKey, fingerprint_of};
    use crate::digest::signature::sha256;

    pub(crate) static KEY: LazyLock<KeyPair> = LazyLock::new(|| KeyPair::generate(KeySize::Rsa2048).unwrap());

    pub(crate) fn keyset() -> KeySet {
        let der = KEY.public_key().as_ref().to_vec();
        let k = PublicKey::new(der.clone(), &fingerprint_of(&der), None, None).unwrap();
        [(k.fingerprint.clone(), k)].into()
    }

    pub(crate) fn sign(message: &[u8]) -> String {
        let mut sig = vec![0; KEY.public_modulus_len()];
        KEY.sign(&RSA_PKCS1_SHA256, &SystemRandom::new(), message, &mut sig).unwrap();
        hex::encode(sig)
    }

    pub(crate) const ROOT: &str = "AWSLogs/o-abc123defg/111122223333/";

    pub(crate) fn digest_key(hour: u32) -> String {
        format!(
            "{ROOT}CloudTrail-Digest/us-east-1/2024/03/01/111122223333_CloudTrail-Digest_us-east-1_t_us-east-1_20240301T{hour:02}0131Z.json.gz"
        )
    }

    pub(crate) fn log_key(hour: u32) -> String {
        format!(
            "{ROOT}CloudTrail/us-east-1/2024/03/01/111122223333_CloudTrail_us-east-1_20240301T{hour:02}00Z_abc.json.gz"
        )
    }

    /// A chain of signed digests for hours 1..=n, each listing one log file (hash of `log_body(h)`),
    /// as (key, inflated body, signature); `body` of a digest is what CloudTrail would write.
    pub(crate) fn chain(n: u32) -> Vec<(String, Vec<u8>, String)> {
        let mut out: Vec<(String, Vec<u8>, String)> = Vec::new();
        for h in 1..=n {
            let key = digest_key(h);
            let prev = out.last();
            let body = serde_json::json!({
                "digestStartTime": format!("2024-03-01T{:02}:01:31Z", h - 1),
                "digestEndTime": format!("2024-03-01T{h:02}:01:31Z"),
                "digestS3Bucket": "trail-bucket", "digestS3Object": format!("corp/{key}"),
                "digestPublicKeyFingerprint": keyset().keys().next().unwrap(),
                "digestSignatureAlgorithm": "SHA256withRSA",
                "previousDigestS3Bucket": prev.map(|_| "trail-bucket"),
                "previousDigestS3Object": prev.map(|p| format!("corp/{}", p.0)),
                "previousDigestHashValue": prev.map(|p| hex::encode(sha256(&p.1))),
                "previousDigestHashAlgorithm": prev.map(|_| "SHA-256"),
                "previousDigestSignature": prev.map(|p| p.2.clone()),
                "logFiles": [{"s3Bucket": "trail-bucket", "s3Object": format!("corp/{}", log_key(h)),
                              "hashValue": hex::encode(sha256(&log_body(h))), "hashAlgorithm": "SHA-256"}],
            });
            let raw = serde_json::to_vec(&body).unwrap();
            let d = parse_digest(&raw).unwrap();
            let sig = sign(crate::digest::signature::string_to_sign(&d, &sha256(&raw)).as_bytes());
            out.push((key, raw, sig));
        }
        out
    }

    pub(crate) fn log_body(h: u32) -> Vec<u8> {
        format!("{{\"Records\":[{{\"eventName\":\"E{h}\"}}]}}").into_bytes()
    }

    fn fetched(key: &str, raw: &[u8], signature: Option<&str>) -> Fetched {
        let name = DigestName::parse(crate::layout::file_name(key)).unwrap();
        let body = parse_digest(raw).map(|file| Loaded {
            file,
            sha256: sha256(raw),
            signature: signature.map(str::to_string),
            signature_algorithm: signature.map(|_| "SHA256withRSA".to_string()),
        });
        Fetched { key: key.to_string(), name, body }
    }

    fn check(ds: &[Fetched]) -> (Vec<DigestStatus>, Vec<ChainBreak>) {
        let keys: HashSet<String> = ds.iter().map(|d| d.key.clone()).collect();
        let folders: HashSet<String> = ds.iter().map(|d| folder_of(&d.key).to_string()).collect();
        check_chain(ds, &keyset(), "AWSLogs/", &Listed { keys: &keys, folders: &folders })
    }

    fn error_types(s: &[DigestStatus]) -> Vec<&'static str> {
        s.iter()
            .map(|s| match s {
                DigestStatus::Verified { .. } => "ok",
                DigestStatus::Failed { error_type, .. } => error_type,
            })
            .collect()
    }

    #[test]
    fn a_chain_with_signature_metadata_verifies() {
        let c = chain(3);
        let ds: Vec<Fetched> = c.iter().map(|(k, b, s)| fetched(k, b, Some(s))).collect();
        let (statuses, breaks) = check(&ds);
        assert_eq!(error_types(&statuses), ["ok", "ok", "ok"]);
        assert!(breaks.is_empty(), "{breaks:?}");
    }

    #[test]
    fn without_metadata_each_digest_is_signed_by_the_next_and_the_newest_has_no_signature() {
        let c = chain(3);
        let ds: Vec<Fetched> = c.iter().map(|(k, b, _)| fetched(k, b, None)).collect();
        let (statuses, breaks) = check(&ds);
        assert_eq!(error_types(&statuses), ["ok", "ok", "DigestSignatureMissing"]);
        assert!(breaks.is_empty());
    }

    #[test]
    fn an_altered_digest_fails_its_signature_and_only_that() {
        let c = chain(3);
        let mut ds: Vec<Fetched> = c.iter().map(|(k, b, s)| fetched(k, b, Some(s))).collect();
        let altered = String::from_utf8(c[1].1.clone()).unwrap().replace("\"hashValue\":\"", "\"hashValue\":\"00");
        ds[1] = fetched(&c[1].0, altered.as_bytes(), Some(&c[1].2));
        let (statuses, breaks) = check(&ds);
        assert_eq!(error_types(&statuses), ["ok", "DigestSignatureInvalid", "ok"]);
        assert!(breaks.is_empty(), "the altered digest's own failure is the finding: {breaks:?}");
        // Offline too: the signature the next digest repeats does not match the altered body.
        let mut offline: Vec<Fetched> = c.iter().map(|(k, b, _)| fetched(k, b, None)).collect();
        offline[1] = fetched(&c[1].0, altered.as_bytes(), None);
        assert_eq!(error_types(&check(&offline).0), ["ok", "DigestSignatureInvalid", "DigestSignatureMissing"]);
    }

    #[test]
    fn a_forged_metadata_signature_fails_that_digest_not_the_next() {
        // Digest 2's x-amz-meta-signature replaced by digest 1's: digest 3 still repeats digest 2's
        // true signature, but the object's own signature is forged (aws-cli: digest 2 INVALID).
        let c = chain(3);
        let mut ds: Vec<Fetched> = c.iter().map(|(k, b, s)| fetched(k, b, Some(s))).collect();
        ds[1] = fetched(&c[1].0, &c[1].1, Some(&c[0].2));
        let (statuses, breaks) = check(&ds);
        assert_eq!(error_types(&statuses), ["ok", "DigestSignatureInvalid", "ok"]);
        assert!(breaks.is_empty(), "the authentic digest after it is not blamed: {breaks:?}");
        // A signature that is not hex is forged too.
        ds[1] = fetched(&c[1].0, &c[1].1, Some("not hex"));
        assert_eq!(error_types(&check(&ds).0), ["ok", "DigestSignatureInvalid", "ok"]);
    }

    #[test]
    fn a_digest_removed_mid_chain_breaks_it_at_the_missing_key() {
        let c = chain(3);
        let ds: Vec<Fetched> = [0, 2].iter().map(|&i| fetched(&c[i].0, &c[i].1, Some(&c[i].2))).collect();
        let (statuses, breaks) = check(&ds);
        assert_eq!(error_types(&statuses), ["ok", "ok"]);
        assert_eq!(breaks.len(), 1);
        assert_eq!(breaks[0].key, c[1].0);
        assert!(breaks[0].message.contains("missing"), "{}", breaks[0].message);
    }

    #[test]
    fn a_previous_digest_outside_the_listed_folders_is_not_checked() {
        let c = chain(2);
        let ds = vec![fetched(&c[1].0, &c[1].1, Some(&c[1].2))];
        let keys = HashSet::new();
        let folders = HashSet::new();
        let (statuses, breaks) = check_chain(&ds, &keyset(), "AWSLogs/", &Listed { keys: &keys, folders: &folders });
        assert_eq!(error_types(&statuses), ["ok"]);
        assert!(breaks.is_empty());
    }

    #[test]
    fn a_genuine_digest_swapped_in_breaks_the_hash_link() {
        // Digest 2 of another chain (same key, other content, validly signed) replaces ours: both
        // verify, but digest 3's previousDigestHashValue names the original.
        let c = chain(3);
        let mut ds: Vec<Fetched> = c.iter().map(|(k, b, s)| fetched(k, b, Some(s))).collect();
        let swapped = String::from_utf8(c[1].1.clone())
            .unwrap()
            .replace("\"digestSignatureAlgorithm\"", "\"x\":1,\"digestSignatureAlgorithm\"");
        let d = parse_digest(swapped.as_bytes()).unwrap();
        let sig = sign(string_to_sign(&d, &sha256(swapped.as_bytes())).as_bytes());
        ds[1] = fetched(&c[1].0, swapped.as_bytes(), Some(&sig));
        let (statuses, breaks) = check(&ds);
        assert_eq!(error_types(&statuses), ["ok", "ok", "ok"]);
        assert_eq!(breaks.len(), 1);
        assert_eq!(breaks[0].key, c[2].0);
        assert!(breaks[0].message.contains("previousDigestHashValue"));
    }

    #[test]
    fn unknown_keys_moved_digests_and_other_algorithms_are_named() {
        let c = chain(1);
        let ds = vec![fetched(&c[0].0, &c[0].1, Some(&c[0].2))];
        let (s, _) =
            check_chain(&ds, &KeySet::new(), "AWSLogs/", &Listed { keys: &HashSet::new(), folders: &HashSet::new() });
        assert_eq!(error_types(&s), ["DigestPublicKeyNotFound"]);
        let moved = fetched(
            &c[0].0.replace("111122223333/CloudTrail-Digest", "111122223333/x/CloudTrail-Digest"),
            &c[0].1,
            Some(&c[0].2),
        );
        assert!(
            matches!(&check(&[moved]).0[0], DigestStatus::Failed { error_type: "DigestInvalid", message } if message.contains("moved"))
        );
        let mut other = fetched(&c[0].0, &c[0].1, Some(&c[0].2));
        if let Ok(l) = &mut other.body {
            l.signature_algorithm = Some("SHA1withRSA".into());
        }
        assert!(
            matches!(&check(&[other]).0[0], DigestStatus::Failed { error_type: "DigestInvalid", message } if message.contains("SHA1withRSA"))
        );
        let unreadable = Fetched {
            key: c[0].0.clone(),
            name: DigestName::parse(crate::layout::file_name(&c[0].0)).unwrap(),
            body: Err("gzip: bad".into()),
        };
        assert_eq!(error_types(&check(&[unreadable]).0), ["DigestInvalid"]);
    }
}
