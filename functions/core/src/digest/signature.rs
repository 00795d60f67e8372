//! How CloudTrail signs a digest, and checking it (RSA PKCS#1 v1.5 with SHA-256, aws-lc-rs).
//!
//! The data signing string (<https://docs.aws.amazon.com/awscloudtrail/latest/userguide/cloudtrail-log-file-custom-validation.html>,
//! "Recreate the Data Signing String"; aws-cli `Sha256RSADigestValidator._create_string_to_sign`):
//! `digestEndTime \n digestS3Bucket/digestS3Object \n hex(SHA-256(inflated digest)) \n
//! previousDigestSignature` (the text `null` in a starting digest). CloudTrail puts the hex
//! signature in the digest object's `x-amz-meta-signature` metadata, and the next digest repeats
//! it as `previousDigestSignature`.

use aws_lc_rs::digest::{SHA256, digest};
use aws_lc_rs::signature::{RSA_PKCS1_2048_8192_SHA256, UnparsedPublicKey};

use super::file::DigestFile;

/// The only algorithm CloudTrail uses (`digestSignatureAlgorithm`, `x-amz-meta-signature-algorithm`).
pub const SIGNATURE_ALGORITHM: &str = "SHA256withRSA";
/// `hashAlgorithm` of log files and `previousDigestHashAlgorithm`.
pub const HASH_ALGORITHM: &str = "SHA-256";

pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0; 32];
    out.copy_from_slice(digest(&SHA256, bytes).as_ref());
    out
}

/// The data signing string of a digest whose inflated body hashes to `body_sha256`.
pub fn string_to_sign(d: &DigestFile, body_sha256: &[u8; 32]) -> String {
    format!(
        "{}\n{}/{}\n{}\n{}",
        d.digest_end_time,
        d.digest_s3_bucket,
        d.digest_s3_object,
        hex::encode(body_sha256),
        d.previous_digest_signature.as_deref().unwrap_or("null"),
    )
}

/// Why a signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignatureError {
    NotHex,
    /// The public key is not a DER RSA key (PKCS#1 `RSAPublicKey` or X.509 `SubjectPublicKeyInfo`).
    BadKeyOrMismatch,
}

/// Checks a hex signature over `message` with a DER RSA public key (PKCS#1, as ListPublicKeys
/// returns it, or SubjectPublicKeyInfo: aws-lc-rs takes both).
pub fn verify(public_key_der: &[u8], message: &[u8], signature_hex: &str) -> Result<(), SignatureError> {
    let signature = hex::decode(signature_hex.trim()).map_err(|_| SignatureError::NotHex)?;
    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, public_key_der)
        .verify(message, &signature)
        .map_err(|_| SignatureError::BadKeyOrMismatch)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::digest::file::parse_digest;

    /// A digest signed by a test key with tests/gen_digests.py (`python3 tests/gen_digests.py
    /// --write-vector tests/data/digest-vector`); the Python side rebuilt the string to sign
    /// from aws-cli's documented format and signed it with `cryptography`.
    const VECTOR: &str = include_str!("../../../../tests/data/digest-vector/vector.json");

    struct Vector {
        body: Vec<u8>,
        signature: String,
        string_to_sign: String,
        key_der: Vec<u8>,
    }

    fn vector() -> Vector {
        let v: serde_json::Value = serde_json::from_str(VECTOR).unwrap();
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/digest-vector/");
        let gz = std::fs::read(format!("{dir}{}", v["digestFile"].as_str().unwrap())).unwrap();
        let (body, err) = crate::event::gunzip_partial(&gz);
        assert!(err.is_none());
        let keys = crate::digest::keys::parse_public_keys(v["publicKeys"].to_string().as_bytes()).unwrap();
        Vector {
            body,
            signature: v["signature"].as_str().unwrap().to_string(),
            string_to_sign: v["stringToSign"].as_str().unwrap().to_string(),
            key_der: keys[0].der.clone(),
        }
    }

    #[test]
    fn string_to_sign_matches_the_reference() {
        let v = vector();
        let d = parse_digest(&v.body).unwrap();
        assert_eq!(string_to_sign(&d, &sha256(&v.body)), v.string_to_sign);
    }

    #[test]
    fn the_reference_signature_verifies() {
        let v = vector();
        assert_eq!(verify(&v.key_der, v.string_to_sign.as_bytes(), &v.signature), Ok(()));
    }

    #[test]
    fn any_change_breaks_the_signature() {
        let v = vector();
        let mut message = v.string_to_sign.clone().into_bytes();
        message[3] ^= 1;
        assert_eq!(verify(&v.key_der, &message, &v.signature), Err(SignatureError::BadKeyOrMismatch));
        let mut sig = v.signature.clone().into_bytes();
        sig[10] = if sig[10] == b'0' { b'1' } else { b'0' };
        let sig = String::from_utf8(sig).unwrap();
        assert_eq!(verify(&v.key_der, v.string_to_sign.as_bytes(), &sig), Err(SignatureError::BadKeyOrMismatch));
        assert_eq!(verify(&v.key_der, v.string_to_sign.as_bytes(), "zz"), Err(SignatureError::NotHex));
        assert_eq!(
            verify(b"not a key", v.string_to_sign.as_bytes(), &v.signature),
            Err(SignatureError::BadKeyOrMismatch)
        );
    }

    #[test]
    fn a_starting_digest_signs_the_text_null() {
        let d = parse_digest(
            br#"{"digestStartTime":"2024-03-01T00:01:31Z","digestEndTime":"2024-03-01T01:01:31Z","digestS3Bucket":"b",
                "digestS3Object":"AWSLogs/1/d.json.gz","digestPublicKeyFingerprint":"f","previousDigestSignature":null}"#,
        )
        .unwrap();
        let s = string_to_sign(&d, &[0; 32]);
        assert_eq!(s, format!("2024-03-01T01:01:31Z\nb/AWSLogs/1/d.json.gz\n{}\nnull", "0".repeat(64)));
    }
}
