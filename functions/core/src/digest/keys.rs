//! CloudTrail's public keys: from ListPublicKeys, or from the JSON `aws cloudtrail
//! list-public-keys` prints (for local folders, offline checks and tests).
//!
//! <https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_ListPublicKeys.html>: the keys
//! whose private keys signed digests in a time range, per region (a digest is signed with its
//! region's key, so keys are asked for in the digest's region, as aws-cli does with the CLI's
//! region). `Value` is "the DER encoded public key value in PKCS#1 format"
//! (<https://docs.aws.amazon.com/awscloudtrail/latest/APIReference/API_PublicKey.html>; base64 in
//! the CLI's JSON). Its `Fingerprint` is the hex MD5 of those DER bytes: not documented, but true of
//! the key in aws-cli's `list-public-keys` example (awscli/examples/cloudtrail/list-public-keys.rst,
//! the `GUIDE_KEY` test below), and it is how a digest's `digestPublicKeyFingerprint` picks its key.

use std::collections::HashMap;

use async_trait::async_trait;
use aws_sdk_cloudtrail::error::{ProvideErrorMetadata, SdkError};
use base64::Engine;
use jiff::Timestamp;
use md5::{Digest, Md5};

use crate::error::{CopyError, Result};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    /// Lower-case hex, as digests carry it.
    pub fingerprint: String,
    pub der: Vec<u8>,
    pub valid_from: Option<Timestamp>,
    pub valid_to: Option<Timestamp>,
}

impl PublicKey {
    /// A key whose fingerprint is checked against its bytes, so a hand-edited key file cannot
    /// pass one key off as another.
    pub fn new(
        der: Vec<u8>,
        fingerprint: &str,
        valid_from: Option<Timestamp>,
        valid_to: Option<Timestamp>,
    ) -> Result<Self, String> {
        let computed = fingerprint_of(&der);
        if !computed.eq_ignore_ascii_case(fingerprint.trim()) {
            return Err(format!("fingerprint {fingerprint} does not belong to the key (its MD5 is {computed})"));
        }
        Ok(PublicKey { fingerprint: computed, der, valid_from, valid_to })
    }
}

impl PublicKey {
    /// The key as a `list-public-keys` entry (what a copy record keeps of the request's keys).
    pub fn to_entry(&self) -> serde_json::Value {
        let mut e = serde_json::json!({
            "Fingerprint": self.fingerprint,
            "Value": base64::engine::general_purpose::STANDARD.encode(&self.der),
        });
        if let Some(t) = self.valid_from {
            e["ValidityStartTime"] = t.to_string().into();
        }
        if let Some(t) = self.valid_to {
            e["ValidityEndTime"] = t.to_string().into();
        }
        e
    }
}

pub fn fingerprint_of(der: &[u8]) -> String {
    hex::encode(Md5::digest(der))
}

/// Fingerprint → key.
pub type KeySet = HashMap<String, PublicKey>;

/// Where keys come from: CloudTrail in production, a file or a fake elsewhere.
#[async_trait]
pub trait PublicKeySource: Send + Sync {
    /// The keys that signed `region`'s digests between `start` and `end`.
    async fn public_keys(&self, region: &str, start: Timestamp, end: Timestamp) -> Result<KeySet>;
    /// Where the keys come from, for messages.
    fn describe(&self) -> String;
}

/// Parses `aws cloudtrail list-public-keys` output: `{"PublicKeyList": [{"Value", "Fingerprint",
/// "ValidityStartTime", "ValidityEndTime"}]}` (also a bare list, and the user guide's
/// `publicKeyList` spelling); times as epoch seconds (CLI v1) or ISO 8601 (CLI v2).
pub fn parse_public_keys(json: &[u8]) -> Result<Vec<PublicKey>, String> {
    let v: serde_json::Value = serde_json::from_slice(json).map_err(|e| format!("not JSON: {e}"))?;
    let list = match &v {
        serde_json::Value::Array(a) => a,
        serde_json::Value::Object(o) => match o.get("PublicKeyList").or_else(|| o.get("publicKeyList")) {
            Some(serde_json::Value::Array(a)) => a,
            _ => return Err("no `PublicKeyList` array (expected what `aws cloudtrail list-public-keys` prints)".into()),
        },
        _ => return Err("not a JSON object".into()),
    };
    list.iter()
        .enumerate()
        .map(|(i, entry)| {
            let field = |name: &str| entry.get(name).filter(|v| !v.is_null());
            let text = |name: &str| -> Result<&str, String> {
                field(name).and_then(|v| v.as_str()).ok_or_else(|| format!("PublicKeyList[{i}]: no `{name}` string"))
            };
            let der = base64::engine::general_purpose::STANDARD
                .decode(text("Value")?.trim())
                .map_err(|e| format!("PublicKeyList[{i}]: `Value` is not base64: {e}"))?;
            let time = |name: &str| -> Result<Option<Timestamp>, String> {
                field(name)
                    .map(|v| parse_time(v).ok_or_else(|| format!("PublicKeyList[{i}]: `{name}` is not a time")))
                    .transpose()
            };
            PublicKey::new(der, text("Fingerprint")?, time("ValidityStartTime")?, time("ValidityEndTime")?)
                .map_err(|e| format!("PublicKeyList[{i}]: {e}"))
        })
        .collect()
}

/// Epoch seconds (number or numeric text) or an RFC 3339 / ISO 8601 time.
fn parse_time(v: &serde_json::Value) -> Option<Timestamp> {
    let seconds = |s: f64| Timestamp::from_millisecond((s * 1000.0).round() as i64).ok();
    match v {
        serde_json::Value::Number(n) => n.as_f64().and_then(seconds),
        serde_json::Value::String(s) => {
            s.parse::<Timestamp>().ok().or_else(|| s.trim().parse::<f64>().ok().and_then(seconds))
        }
        _ => None,
    }
}

/// Keys from files the user saved (`--digest-public-keys`, repeatable: one per region's
/// `list-public-keys` output). Fingerprints are unique across regions, so one set serves all.
pub struct KeyFile {
    keys: KeySet,
    origin: String,
}

impl KeyFile {
    pub fn new(keys: Vec<PublicKey>, origin: String) -> Self {
        KeyFile { keys: keys.into_iter().map(|k| (k.fingerprint.clone(), k)).collect(), origin }
    }

    /// Reads and merges key files; `field` names the request field for errors.
    pub fn read(field: &'static str, paths: &[String]) -> Result<Self> {
        let mut keys = Vec::new();
        for path in paths {
            let bytes =
                std::fs::read(path).map_err(|e| CopyError::invalid(field, format!("cannot read {path}: {e}")))?;
            keys.extend(parse_public_keys(&bytes).map_err(|e| CopyError::invalid(field, format!("{path}: {e}")))?);
        }
        if keys.is_empty() {
            return Err(CopyError::invalid(field, "no public keys in the file(s)"));
        }
        Ok(KeyFile::new(keys, paths.join(", ")))
    }
}

#[async_trait]
impl PublicKeySource for KeyFile {
    async fn public_keys(&self, _region: &str, _start: Timestamp, _end: Timestamp) -> Result<KeySet> {
        Ok(self.keys.clone())
    }

    fn describe(&self) -> String {
        format!("the public keys in {}", self.origin)
    }
}

/// CloudTrail ListPublicKeys in each digest's region (aws-sdk-cloudtrail).
pub struct CloudTrailKeys {
    config: aws_config::SdkConfig,
}

impl CloudTrailKeys {
    pub fn new(config: aws_config::SdkConfig) -> Self {
        CloudTrailKeys { config }
    }
}

fn smithy_time(t: Timestamp) -> aws_sdk_cloudtrail::primitives::DateTime {
    aws_sdk_cloudtrail::primitives::DateTime::from_millis(t.as_millisecond())
}

fn from_smithy(t: Option<&aws_sdk_cloudtrail::primitives::DateTime>) -> Option<Timestamp> {
    t.and_then(|t| t.to_millis().ok()).and_then(|ms| Timestamp::from_millisecond(ms).ok())
}

#[async_trait]
impl PublicKeySource for CloudTrailKeys {
    async fn public_keys(&self, region: &str, start: Timestamp, end: Timestamp) -> Result<KeySet> {
        let conf = aws_sdk_cloudtrail::config::Builder::from(&self.config)
            .region(aws_sdk_cloudtrail::config::Region::new(region.to_string()))
            .build();
        let client = aws_sdk_cloudtrail::Client::from_conf(conf);
        let location = format!("cloudtrail:ListPublicKeys in {region}");
        let mut pages =
            client.list_public_keys().start_time(smithy_time(start)).end_time(smithy_time(end)).into_paginator().send();
        let mut keys = KeySet::new();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| cloudtrail_error(&location, e))?;
            for k in page.public_key_list() {
                let (Some(value), Some(fp)) = (k.value(), k.fingerprint()) else { continue };
                let key = PublicKey::new(
                    value.as_ref().to_vec(),
                    fp,
                    from_smithy(k.validity_start_time()),
                    from_smithy(k.validity_end_time()),
                )
                .map_err(|e| CopyError::Storage { location: location.clone(), message: e })?;
                keys.insert(key.fingerprint.clone(), key);
            }
        }
        Ok(keys)
    }

    fn describe(&self) -> String {
        "CloudTrail ListPublicKeys".into()
    }
}

fn cloudtrail_error<E, R>(location: &str, err: SdkError<E, R>) -> CopyError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    R: std::fmt::Debug,
{
    let location = location.to_string();
    match &err {
        SdkError::ServiceError(se) => {
            let code = se.err().code().unwrap_or("");
            let message = se.err().message().unwrap_or(code).to_string();
            match code {
                "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" => CopyError::AccessDenied {
                    location,
                    message: format!("{message}; the role needs cloudtrail:ListPublicKeys (resource \"*\")"),
                },
                "ThrottlingException" | "Throttling" | "InternalFailure" | "ServiceUnavailable" => {
                    CopyError::Retryable { location, message }
                }
                _ => CopyError::Storage { location, message: format!("{code}: {message}") },
            }
        }
        _ => {
            CopyError::Retryable { location, message: aws_sdk_cloudtrail::error::DisplayErrorContext(&err).to_string() }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// From aws-cli's `list-public-keys` example (a real CloudTrail key): the fingerprint is the MD5 of the DER value.
    const GUIDE_KEY: &str = "MIIBCgKCAQEAlSS3cl92HDycr/MTj0moOhas8habjrraXw+KzlWF0axSI2tcF+3iJ9BKQAVSKxGwxwu3m0wG3J+kUl1xboEcEPHYoIYMbgfSw7KGnuDKwkLzsQWhUJ0cIbOHASox1vv/5fNXkrHhGbDCHeVXm804c83nvHUEFYThr1PfyP/8HwrCtR3FX5OANtQCP61C1nJtSSkC8JSQUOrIP4CuwJjc+4WGDk+BGH5m9iuiAKkipEHWmUl8/P7XpfpWQuk4h8g3pXZOrNXr08lbh4d39svj7UqdhvOXoBISp9t/EXYuePGEtBdrKD9Dz+VHwyUPtBQvYr9BnkF88qBnaPNhS44rzwIDAQAB";

    #[test]
    fn cli_v1_output_with_epoch_seconds() {
        let json = format!(
            r#"{{"PublicKeyList":[{{"ValidityStartTime":1453076702.0,"ValidityEndTime":1455668702.0,"Value":"{GUIDE_KEY}","Fingerprint":"7f3f401420072e50a65a141430817ab3"}}]}}"#
        );
        let keys = parse_public_keys(json.as_bytes()).unwrap();
        assert_eq!(keys.len(), 1);
        assert_eq!(keys[0].fingerprint, "7f3f401420072e50a65a141430817ab3");
        assert_eq!(keys[0].valid_from, Some("2016-01-18T00:25:02Z".parse().unwrap()));
    }

    #[test]
    fn cli_v2_output_with_iso_times_and_the_guide_spelling() {
        let json = format!(
            r#"{{"publicKeyList":[{{"ValidityStartTime":"2016-01-18T00:25:02+00:00","ValidityEndTime":"1455668702.0","Value":"{GUIDE_KEY}","Fingerprint":"7F3F401420072E50A65A141430817AB3"}}]}}"#
        );
        let keys = parse_public_keys(json.as_bytes()).unwrap();
        assert_eq!(keys[0].valid_from, Some("2016-01-18T00:25:02Z".parse().unwrap()));
        assert_eq!(keys[0].valid_to, Some(Timestamp::from_second(1455668702).unwrap()));
        assert_eq!(keys[0].fingerprint, "7f3f401420072e50a65a141430817ab3", "stored lower-case, as digests carry it");
    }

    #[test]
    fn a_fingerprint_that_is_not_the_keys_own_is_refused() {
        let json = format!(r#"[{{"Value":"{GUIDE_KEY}","Fingerprint":"8eba5db5bea9b640d1c96a77256fe7f2"}}]"#);
        let e = parse_public_keys(json.as_bytes()).unwrap_err();
        assert!(e.contains("PublicKeyList[0]") && e.contains("does not belong"), "{e}");
    }

    #[test]
    fn malformed_files_say_what_is_wrong() {
        assert!(parse_public_keys(b"{}").unwrap_err().contains("PublicKeyList"));
        assert!(parse_public_keys(b"[{\"Fingerprint\":\"x\"}]").unwrap_err().contains("`Value`"));
        assert!(parse_public_keys(b"[{\"Value\":\"%%%\",\"Fingerprint\":\"x\"}]").unwrap_err().contains("base64"));
        let json = format!(
            r#"[{{"Value":"{GUIDE_KEY}","Fingerprint":"7f3f401420072e50a65a141430817ab3","ValidityStartTime":"soon"}}]"#
        );
        assert!(parse_public_keys(json.as_bytes()).unwrap_err().contains("ValidityStartTime"));
    }
}
