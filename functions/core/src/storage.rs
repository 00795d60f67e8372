//! Object storage: the one real seam. A trail source and an event data store are each a
//! (store, prefix) pair on S3 or in a local folder with the same key layout.

use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::error::{CopyError, Result};
use crate::regional::RegionalClient;

/// An object seen in a listing.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectInfo {
    pub key: String,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class: Option<String>,
}

/// One level of a delimiter listing: sub-prefixes (ending in `/`) and objects.
#[derive(Debug, Default)]
pub struct Listing {
    pub dirs: Vec<String>,
    pub objects: Vec<ObjectInfo>,
}

/// The first page of a range listing ([`ObjectStore::list_range_first`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RangePage {
    pub objects: Vec<ObjectInfo>,
    /// Whether the range ends on this page; if not, the rest follows the last key.
    pub complete: bool,
}

/// What a HeadObject tells about an object's readability and encryption.
#[derive(Debug, Clone, Default)]
pub struct ObjectHead {
    pub storage_class: Option<String>,
    /// `x-amz-restore`: `ongoing-request="true"` or `ongoing-request="false", expiry-date=...`.
    pub restore: Option<String>,
    /// Intelligent-Tiering `ARCHIVE_ACCESS` / `DEEP_ARCHIVE_ACCESS`.
    pub archive_status: Option<String>,
    pub kms_key_id: Option<String>,
}

/// The precondition of a compare-and-swap write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    /// Only if no object has the key (S3 `If-None-Match: *`).
    Absent,
    /// Only if the object still has this version tag (S3 `If-Match: <ETag>`).
    Matches(String),
}

#[async_trait]
pub trait ObjectStore: Send + Sync {
    /// Lists one level under `prefix` (empty or ending in `/`), all pages.
    async fn list_dir(&self, prefix: &str) -> Result<Listing>;
    /// Every object under `prefix` (no delimiter) whose key lies in `(start_after, end_before)`,
    /// in key order. On S3 one un-delimited ListObjectsV2 from `StartAfter` that stops at the
    /// first page reaching `end_before`; this default walks [`list_dir`](Self::list_dir) and
    /// never opens a folder outside the range.
    async fn list_range(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<Vec<ObjectInfo>> {
        let mut out = Vec::new();
        let mut dirs = vec![prefix.to_string()];
        while let Some(dir) = dirs.pop() {
            let listing = self.list_dir(&dir).await?;
            out.extend(listing.objects.into_iter().filter(|o| in_range(&o.key, start_after, end_before)));
            // Reversed: the stack pops folders in key order.
            dirs.extend(listing.dirs.into_iter().rev().filter(|d| folder_in_range(d, start_after, end_before)));
        }
        out.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(out)
    }
    /// The first page of [`list_range`](Self::list_range): on S3 one ListObjectsV2 request (up
    /// to 1,000 keys); this default lists the whole range. When the page is not `complete`,
    /// `list_range(prefix, <its last key>, end_before)` gives the rest.
    async fn list_range_first(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<RangePage> {
        Ok(RangePage { objects: self.list_range(prefix, start_after, end_before).await?, complete: true })
    }
    async fn get(&self, key: &str) -> Result<Bytes>;
    /// `get`, with the object's user metadata (`x-amz-meta-<name>` as `<name>`): CloudTrail puts a
    /// digest's signature there. A local folder keeps none.
    async fn get_with_metadata(&self, key: &str) -> Result<(Bytes, HashMap<String, String>)> {
        Ok((self.get(key).await?, HashMap::new()))
    }
    /// `get` with the object's version tag for [`put_if`](Self::put_if); `None` when missing.
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>>;
    async fn put(&self, key: &str, body: Bytes) -> Result<()>;
    /// Somewhere to write an object piece by piece before [`put_spool`](Self::put_spool) stores
    /// it (a batch's Parquet files). Memory by default: an S3 PUT sends the whole body.
    fn spool(&self) -> Result<Spool> {
        Ok(Spool::Memory(Vec::new()))
    }
    /// Stores what was written to a [`spool`](Self::spool) under `key`, as [`put`](Self::put) does.
    async fn put_spool(&self, key: &str, spool: Spool) -> Result<()> {
        let body = spool.into_bytes().map_err(|e| io_error(self.location(key), e))?;
        self.put(key, body).await
    }
    /// Compare-and-swap: writes only if `condition` holds; `Ok(false)` when it did not.
    async fn put_if(&self, key: &str, body: Bytes, condition: &PutCondition) -> Result<bool>;
    /// Removes an object; a missing one is not an error.
    async fn delete(&self, key: &str) -> Result<()>;
    async fn head(&self, key: &str) -> Result<ObjectHead>;
    /// Starts a restore of an archived object; `days: None` for Intelligent-Tiering archive tiers.
    async fn restore(&self, key: &str, tier: &str, days: Option<i32>) -> Result<()>;
    /// Where `key` is, for messages and failure entries (`s3://bucket/key` or a path).
    fn location(&self, key: &str) -> String;
}

/// An object being written: in memory, or in a temporary file of a local store, which the
/// commit renames into place. A batch's Parquet output is tens of MB per running work item, so
/// a local copy keeps it on disk rather than in memory (benches/RESULTS.md, issue 13 round 12).
/// Dropped uncommitted, a temporary file is removed.
pub enum Spool {
    Memory(Vec<u8>),
    File(tempfile::NamedTempFile),
}

impl Spool {
    /// The bytes written (a file's are read back).
    pub fn into_bytes(self) -> std::io::Result<Bytes> {
        match self {
            Spool::Memory(v) => Ok(v.into()),
            Spool::File(f) => std::fs::read(f.path()).map(Bytes::from),
        }
    }
}

impl std::io::Write for Spool {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Spool::Memory(v) => v.write(buf),
            Spool::File(f) => f.write(buf),
        }
    }

    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Spool::Memory(_) => Ok(()),
            Spool::File(f) => f.flush(),
        }
    }
}

fn in_range(key: &str, start_after: &str, end_before: &str) -> bool {
    key > start_after && key < end_before
}

/// Can a key under folder `dir` (ending in `/`) lie in `(start_after, end_before)`?
fn folder_in_range(dir: &str, start_after: &str, end_before: &str) -> bool {
    // Every key under `dir` starts with it: all are >= dir, and all are < start_after when dir
    // sorts before start_after without being its prefix.
    dir < end_before && (dir >= start_after || start_after.starts_with(dir))
}

/// `get`, but a missing object is `None`.
pub async fn get_opt(store: &dyn ObjectStore, key: &str) -> Result<Option<Bytes>> {
    match store.get(key).await {
        Ok(b) => Ok(Some(b)),
        Err(CopyError::NotFound { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// A parsed `--source`/`--store` argument, in its one canonical form: a local folder is
/// absolute with symlinks resolved, an S3 location is `s3://bucket/` or `s3://bucket/prefix/`.
/// The copy record stores that form, so the overlap guard and `retry` (from any directory)
/// see one spelling of each place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    /// `prefix` is empty, or (for a trail source pointing inside its `AWSLogs/` tree, as an S3
    /// prefix can) `AWSLogs/…/` below `root`.
    Local {
        root: PathBuf,
        prefix: String,
    },
    S3 {
        bucket: String,
        prefix: String,
    },
}

impl Location {
    /// Parses `s3://bucket[/prefix]` or a local folder path. `field` names the request field.
    pub fn parse(field: &'static str, text: &str) -> Result<Location> {
        let text = text.trim();
        if text.is_empty() {
            return Err(CopyError::invalid(field, "is empty"));
        }
        if let Some(rest) = text.strip_prefix("s3://") {
            let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
            if !valid_bucket_name(bucket) {
                return Err(CopyError::invalid(
                    field,
                    format!("`{bucket}` is not a valid S3 bucket name (3-63 characters: a-z, 0-9, '.', '-')"),
                ));
            }
            let prefix = prefix.trim_start_matches('/');
            if prefix.split('/').any(|c| c == ".." || c == ".") {
                return Err(CopyError::invalid(field, "prefix must not contain `.` or `..` segments"));
            }
            let mut prefix = prefix.to_string();
            if !prefix.is_empty() && !prefix.ends_with('/') {
                prefix.push('/');
            }
            return Ok(Location::S3 { bucket: bucket.to_string(), prefix });
        }
        if text.contains("://") || text.to_ascii_lowercase().starts_with("s3:") {
            return Err(CopyError::invalid(field, format!("`{text}`: only s3:// URIs or local folders are supported")));
        }
        Ok(Location::Local { root: resolve(Path::new(text)), prefix: String::new() })
    }

    /// Parses a trail source. A local folder inside a trail's `AWSLogs/` tree (and without an
    /// `AWSLogs/` of its own) narrows the copy, as the same S3 prefix does.
    pub fn parse_source(text: &str) -> Result<Location> {
        let location = Location::parse("source", text)?;
        let Location::Local { root, .. } = &location else { return Ok(location) };
        if root.join(AWS_LOGS).is_dir() {
            return Ok(location);
        }
        let parts: Vec<&std::ffi::OsStr> = root.iter().collect();
        let Some(at) = parts.iter().rposition(|p| *p == AWS_LOGS) else { return Ok(location) };
        let above: PathBuf = parts[..at].iter().collect();
        let mut prefix = String::new();
        for p in &parts[at..] {
            prefix.push_str(&p.to_string_lossy());
            prefix.push('/');
        }
        Ok(Location::Local { root: above, prefix })
    }

    /// Refuses a local trail source that cannot be one, before anything is written: a folder
    /// that does not exist, or that holds no `AWSLogs/` (the layout CloudTrail delivers).
    pub fn check_local_source(&self) -> Result<()> {
        let Location::Local { root, prefix } = self else { return Ok(()) };
        let shown = self.display();
        if !root.exists() {
            return Err(CopyError::invalid("source", format!("`{shown}` does not exist")));
        }
        if !root.is_dir() {
            return Err(CopyError::invalid(
                "source",
                format!("`{shown}` is a file, not a folder: give the folder that holds a trail's AWSLogs/"),
            ));
        }
        if prefix.is_empty() && !holds_awslogs(root, crate::discover::ROOT_SEARCH_DEPTH) {
            return Err(CopyError::invalid(
                "source",
                format!(
                    "`{shown}` holds no AWSLogs/ folder (searched {} folders deep): give the folder that holds \
                     a trail's AWSLogs/ (AWSLogs/[o-org/]<account>/CloudTrail/<region>/YYYY/MM/DD/), or a folder \
                     inside AWSLogs/",
                    crate::discover::ROOT_SEARCH_DEPTH
                ),
            ));
        }
        if !root.join(prefix).is_dir() {
            return Err(CopyError::invalid("source", format!("`{shown}` does not exist")));
        }
        Ok(())
    }

    /// Refuses a local store to copy into, before anything is written: a path that is a file or
    /// lies under one, or a folder this process cannot write (made if missing, as a copy would).
    pub fn check_local_store_writable(&self) -> Result<()> {
        let Location::Local { root, .. } = self else { return Ok(()) };
        check_not_under_file(root)?;
        let cannot = |e: std::io::Error| {
            CopyError::invalid("store", format!("cannot write to `{}`: {}", root.display(), io_reason(&e)))
        };
        std::fs::create_dir_all(root).map_err(cannot)?;
        let probe = root.join(format!(".trailcopy-write-check-{}", std::process::id()));
        std::fs::OpenOptions::new().write(true).create(true).truncate(true).open(&probe).map_err(cannot)?;
        let _ = std::fs::remove_file(&probe);
        Ok(())
    }

    /// Refuses a local store to read that is not there: a path that does not exist, or a file.
    pub fn check_local_store_exists(&self) -> Result<()> {
        let Location::Local { root, .. } = self else { return Ok(()) };
        check_not_under_file(root)?;
        if !root.exists() {
            return Err(CopyError::invalid(
                "store",
                format!("`{}` does not exist: give the --store a copy wrote to", root.display()),
            ));
        }
        Ok(())
    }

    /// The key prefix inside the store or folder (`""`, or ending in `/`).
    pub fn prefix(&self) -> &str {
        match self {
            Location::Local { prefix, .. } | Location::S3 { prefix, .. } => prefix,
        }
    }

    /// True when `other` lies inside this location (a store inside the source would copy itself).
    pub fn contains(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::S3 { bucket: b1, prefix: p1 }, Location::S3 { bucket: b2, prefix: p2 }) => {
                b1 == b2 && p2.starts_with(p1.as_str())
            }
            (Location::Local { root: r1, prefix: p1 }, Location::Local { root: r2, prefix: p2 }) => {
                r2.join(p2).starts_with(r1.join(p1))
            }
            _ => false,
        }
    }

    /// The same folder or bucket, a prefix aside.
    pub fn same_root(&self, other: &Location) -> bool {
        match (self, other) {
            (Location::S3 { bucket: b1, .. }, Location::S3 { bucket: b2, .. }) => b1 == b2,
            (Location::Local { root: r1, .. }, Location::Local { root: r2, .. }) => r1 == r2,
            _ => false,
        }
    }

    pub fn display(&self) -> String {
        match self {
            Location::Local { root, prefix } if prefix.is_empty() => root.display().to_string(),
            Location::Local { root, prefix } => root.join(prefix.trim_end_matches('/')).display().to_string(),
            Location::S3 { bucket, prefix } => format!("s3://{bucket}/{prefix}"),
        }
    }

    /// Opens the storage behind this location.
    pub async fn open(&self, aws: &AwsClients) -> Result<Arc<dyn ObjectStore>> {
        self.open_store(aws, None).await
    }

    /// Opens a store whose new objects are encrypted with SSE-KMS under `kms_key`.
    pub async fn open_store(&self, aws: &AwsClients, kms_key: Option<&str>) -> Result<Arc<dyn ObjectStore>> {
        match (self, kms_key) {
            (Location::Local { root, .. }, None) => Ok(Arc::new(LocalStore::new(root.clone()))),
            (Location::S3 { bucket, .. }, key) => Ok(Arc::new(S3Store {
                client: aws.s3_for_bucket(bucket).await,
                bucket: bucket.clone(),
                kms_key: key.map(str::to_string),
                endpoint: aws.endpoint_name().await,
            })),
            (Location::Local { .. }, Some(_)) => Err(CopyError::invalid(
                "storeKmsKey",
                "SSE-KMS needs an s3:// store; a local folder is not encrypted by trailcopy",
            )),
        }
    }
}

const AWS_LOGS: &str = "AWSLogs";

/// A store path that is a file, or lies under one ("Not a directory" from the OS names neither).
fn check_not_under_file(root: &Path) -> Result<()> {
    match root.ancestors().find(|p| p.exists()) {
        Some(p) if !p.is_dir() => Err(CopyError::invalid(
            "store",
            format!("`{}` is a file, not a folder: give a folder for the event data store", p.display()),
        )),
        _ => Ok(()),
    }
}

/// What went wrong with a local path, said plainly (`permission denied`, not `os error 13`).
fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::PermissionDenied => "permission denied (check the folder's owner and mode)".into(),
        std::io::ErrorKind::ReadOnlyFilesystem => "the file system is read-only".into(),
        std::io::ErrorKind::StorageFull => "no space left on the device".into(),
        _ => e.to_string(),
    }
}

/// Whether `dir` or a folder at most `depth` levels below it holds an `AWSLogs/` folder (the
/// search discovery makes; unreadable folders are passed over, discovery reports them).
fn holds_awslogs(dir: &Path, depth: usize) -> bool {
    if dir.join(AWS_LOGS).is_dir() {
        return true;
    }
    depth > 0
        && std::fs::read_dir(dir).is_ok_and(|entries| {
            entries.flatten().any(|e| {
                e.file_type().is_ok_and(|t| t.is_dir())
                    && e.file_name() != AWS_LOGS
                    && holds_awslogs(&e.path(), depth - 1)
            })
        })
}

/// The real path: links resolved for the part that exists, `..` and `.` folded for the rest.
fn resolve(path: &Path) -> PathBuf {
    let abs = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
    let mut existing = abs.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.file_name(), existing.parent()) {
            (Some(name), Some(parent)) => {
                rest.push(name.to_os_string());
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut out = existing.canonicalize().unwrap_or(existing);
    for part in rest.iter().rev() {
        match part.to_str() {
            Some("..") => {
                out.pop();
            }
            Some(".") => {}
            _ => out.push(part),
        }
    }
    out
}

fn valid_bucket_name(b: &str) -> bool {
    (3..=63).contains(&b.len())
        && b.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-')
        && b.as_bytes()[0].is_ascii_alphanumeric()
        && b.as_bytes()[b.len() - 1].is_ascii_alphanumeric()
}

/// AWS clients, built once from the environment as the AWS CLI does (region, profile,
/// `AWS_ENDPOINT_URL`). Lazily, so local-only copies never touch AWS configuration.
#[derive(Default)]
pub struct AwsClients {
    config: tokio::sync::OnceCell<aws_config::SdkConfig>,
    /// Sent in every request's User-Agent as `app/<name>`: CloudTrail's userAgent then tells which
    /// trailcopy part made a call (and the tests attribute each recorded request to its function).
    app_name: Option<aws_config::AppName>,
}

impl AwsClients {
    pub fn new() -> Self {
        Self::default()
    }

    /// Clients whose requests carry `app/<name>` in their User-Agent (e.g. `trailcopy-copy`).
    pub fn with_app_name(name: &'static str) -> Self {
        AwsClients { config: Default::default(), app_name: aws_config::AppName::new(name).ok() }
    }

    pub async fn sdk_config(&self) -> &aws_config::SdkConfig {
        self.config
            .get_or_init(|| async {
                // AWS_MAX_ATTEMPTS is honoured as every AWS SDK does (a user, or a test, can give up
                // sooner): https://docs.aws.amazon.com/sdkref/latest/guide/feature-retry-behavior.html
                let attempts =
                    std::env::var("AWS_MAX_ATTEMPTS").ok().and_then(|v| v.parse().ok()).filter(|n| *n > 0).unwrap_or(8);
                let retry = aws_config::retry::RetryConfig::adaptive()
                    .with_max_attempts(attempts)
                    .with_initial_backoff(std::time::Duration::from_millis(200));
                // TRAILCOPY_S3_READ_TIMEOUT (seconds): for slow proxies, and for tests of stalls.
                let read_timeout = std::env::var("TRAILCOPY_S3_READ_TIMEOUT")
                    .ok()
                    .and_then(|v| v.parse::<f64>().ok())
                    .filter(|v| *v > 0.0)
                    .unwrap_or(60.0);
                let timeouts = aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(std::time::Duration::from_secs(10))
                    .read_timeout(std::time::Duration::from_secs_f64(read_timeout))
                    .build();
                let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
                    .retry_config(retry)
                    .timeout_config(timeouts);
                if let Some(name) = &self.app_name {
                    loader = loader.app_name(name.clone());
                }
                loader.load().await
            })
            .await
    }

    /// Where S3 requests go, for messages: the endpoint URL if one is set, else S3 itself.
    pub async fn endpoint_name(&self) -> String {
        match self.sdk_config().await.endpoint_url() {
            Some(url) => url.to_string(),
            None => "S3".into(),
        }
    }

    /// The configured region (`AWS_REGION`; in a Lambda, the function's own region).
    pub async fn region(&self) -> Option<String> {
        self.sdk_config().await.region().map(|r| r.as_ref().to_string())
    }

    /// A KMS client in `region` (a key lives in one region: KMS answers NotFound elsewhere), or in the
    /// configured region.
    pub async fn kms_in(&self, region: Option<&str>) -> aws_sdk_kms::Client {
        let mut builder = aws_sdk_kms::config::Builder::from(self.sdk_config().await);
        if let Some(r) = region {
            builder = builder.region(aws_sdk_kms::config::Region::new(r.to_string()));
        }
        aws_sdk_kms::Client::from_conf(builder.build())
    }

    pub async fn kms(&self) -> aws_sdk_kms::Client {
        self.kms_in(None).await
    }

    /// The region a bucket lives in (see [`lookup_bucket_region`]).
    pub async fn bucket_region(&self, bucket: &str) -> Option<String> {
        lookup_bucket_region(&self.s3_in(None).await, bucket).await
    }

    /// A client for a bucket: in the configured region while the bucket's own region is looked
    /// up, then in the bucket's region (a central trail bucket is often elsewhere). Reads do not
    /// wait for the lookup (see [`RegionalClient`]).
    pub async fn s3_for_bucket(&self, bucket: &str) -> RegionalClient<aws_sdk_s3::Client> {
        let client = self.s3_in(None).await;
        let current = client.config().region().map(|r| r.as_ref().to_string());
        let (config, lookup_client, bucket) = (self.sdk_config().await.clone(), client.clone(), bucket.to_string());
        let lookup = async move {
            match lookup_bucket_region(&lookup_client, &bucket).await {
                Some(r) if Some(&r) != current.as_ref() => {
                    tracing::info!(bucket, region = %r, "using the bucket's region");
                    Some(s3_client(&config, Some(r)))
                }
                _ => None,
            }
        };
        RegionalClient::looking_up(client, lookup)
    }

    pub async fn s3(&self) -> aws_sdk_s3::Client {
        self.s3_in(None).await
    }

    async fn s3_in(&self, region: Option<String>) -> aws_sdk_s3::Client {
        s3_client(self.sdk_config().await, region)
    }
}

fn s3_client(config: &aws_config::SdkConfig, region: Option<String>) -> aws_sdk_s3::Client {
    let mut builder = aws_sdk_s3::config::Builder::from(config);
    // S3-compatible endpoints (moto, MinIO, LocalStack) need path-style addressing.
    if config.endpoint_url().is_some() {
        builder = builder.force_path_style(true);
    }
    if let Some(r) = region {
        builder = builder.region(aws_sdk_s3::config::Region::new(r));
    } else if config.region().is_none() {
        builder = builder.region(aws_sdk_s3::config::Region::new("us-east-1"));
    }
    aws_sdk_s3::Client::from_conf(builder.build())
}

/// The region a bucket lives in. GetBucketLocation first: it needs only s3:GetBucketLocation,
/// which the stack grants on its buckets, while HeadBucket needs s3:ListBucket with no
/// `s3:prefix` in the request, which a role limited to a prefix never has
/// (https://docs.aws.amazon.com/AmazonS3/latest/API/API_HeadBucket.html,
/// https://docs.aws.amazon.com/AmazonS3/latest/API/API_GetBucketLocation.html). HeadBucket's
/// `x-amz-bucket-region` header (sent even on a denial) is the fallback, e.g. for a bucket of
/// another account whose policy does not grant GetBucketLocation.
async fn lookup_bucket_region(client: &aws_sdk_s3::Client, bucket: &str) -> Option<String> {
    match client.get_bucket_location().bucket(bucket).send().await {
        Ok(out) => {
            // No constraint is us-east-1; `EU` is the legacy name of eu-west-1.
            return Some(match out.location_constraint().map(|c| c.as_str()) {
                None | Some("") => "us-east-1".to_string(),
                Some("EU") => "eu-west-1".to_string(),
                Some(r) => r.to_string(),
            });
        }
        Err(e) => {
            tracing::debug!(bucket, error = %aws_sdk_s3::error::DisplayErrorContext(&e), "GetBucketLocation failed")
        }
    }
    match client.head_bucket().bucket(bucket).send().await {
        Ok(out) => out.bucket_region().map(str::to_string),
        Err(SdkError::ServiceError(se)) => se.raw().headers().get("x-amz-bucket-region").map(str::to_string),
        Err(_) => None,
    }
}

static TMP_COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// A local folder. Keys are `/`-separated relative paths; they can never leave the folder.
pub struct LocalStore {
    root: PathBuf,
}

impl LocalStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    fn path(&self, key: &str) -> Result<PathBuf> {
        let rel = Path::new(key);
        if rel.components().any(|c| !matches!(c, Component::Normal(_))) {
            return Err(CopyError::Storage { location: key.to_string(), message: "key would leave the folder".into() });
        }
        Ok(self.root.join(rel))
    }

    /// Temporary files live outside the dataset (readers' globs never pick them up, a crash
    /// leaves nothing in it) and on its file system, so a rename puts them in place.
    fn tmp_dir(&self) -> PathBuf {
        self.root.join(".trailcopy-tmp")
    }
}

/// Files up to this size are read on the calling task; larger ones on tokio's blocking pool.
const INLINE_READ_BYTES: u64 = 256 << 10;

/// Reads a local file. Log files are small (tens of KB) and usually in the page cache, where a
/// read takes microseconds: less than handing it to the blocking pool and back, which cost 5–7 %
/// of a one-core local copy's CPU (two thread switches per file; benches/RESULTS.md, issue 13
/// round 5).
/// A larger file, which could hold the worker for milliseconds, still goes to the pool.
async fn read_local(path: PathBuf) -> std::io::Result<Vec<u8>> {
    use std::io::Read as _;
    let mut file = std::fs::File::open(&path)?;
    let len = file.metadata()?.len();
    if len > INLINE_READ_BYTES {
        return tokio::task::spawn_blocking(move || {
            let mut buf = Vec::with_capacity(len as usize);
            file.read_to_end(&mut buf).map(|_| buf)
        })
        .await
        .map_err(std::io::Error::other)?;
    }
    let mut buf = Vec::with_capacity(len as usize);
    file.read_to_end(&mut buf)?;
    Ok(buf)
}

fn io_error(location: String, e: std::io::Error) -> CopyError {
    match e.kind() {
        std::io::ErrorKind::NotFound => CopyError::NotFound { location },
        std::io::ErrorKind::PermissionDenied => CopyError::AccessDenied { location, message: e.to_string() },
        _ => CopyError::Storage { location, message: e.to_string() },
    }
}

#[async_trait]
impl ObjectStore for LocalStore {
    async fn list_dir(&self, prefix: &str) -> Result<Listing> {
        let dir = self.path(prefix.trim_end_matches('/'))?;
        let mut listing = Listing::default();
        let mut entries = match tokio::fs::read_dir(&dir).await {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(listing),
            Err(e) => return Err(io_error(self.location(prefix), e)),
        };
        while let Some(entry) = entries.next_entry().await.map_err(|e| io_error(self.location(prefix), e))? {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name == ".trailcopy-tmp" {
                continue;
            }
            let meta = entry.metadata().await.map_err(|e| io_error(self.location(prefix), e))?;
            if meta.is_dir() {
                listing.dirs.push(format!("{prefix}{name}/"));
            } else {
                listing.objects.push(ObjectInfo {
                    key: format!("{prefix}{name}"),
                    size: meta.len(),
                    storage_class: None,
                });
            }
        }
        listing.dirs.sort();
        listing.objects.sort_by(|a, b| a.key.cmp(&b.key));
        Ok(listing)
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        let path = self.path(key)?;
        read_local(path).await.map(Bytes::from).map_err(|e| io_error(self.location(key), e))
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let path = self.path(key)?;
        let loc = self.location(key);
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| io_error(loc.clone(), e))?;
        }
        // Write then rename: a reader (or a crash) never sees half a file.
        let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let tmp_dir = self.tmp_dir();
        tokio::fs::create_dir_all(&tmp_dir).await.map_err(|e| io_error(loc.clone(), e))?;
        let unique = TMP_COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = tmp_dir.join(format!("{}-{unique}-{name}", std::process::id()));
        tokio::fs::write(&tmp, &body).await.map_err(|e| io_error(loc.clone(), e))?;
        tokio::fs::rename(&tmp, &path).await.map_err(|e| io_error(loc, e))
    }

    fn spool(&self) -> Result<Spool> {
        let dir = self.tmp_dir();
        std::fs::create_dir_all(&dir)
            .and_then(|_| tempfile::NamedTempFile::new_in(&dir))
            .map(Spool::File)
            .map_err(|e| io_error(dir.display().to_string(), e))
    }

    async fn put_spool(&self, key: &str, spool: Spool) -> Result<()> {
        let Spool::File(file) = spool else {
            let body = spool.into_bytes().map_err(|e| io_error(self.location(key), e))?;
            return self.put(key, body).await;
        };
        let path = self.path(key)?;
        if let Some(parent) = path.parent() {
            tokio::fs::create_dir_all(parent).await.map_err(|e| io_error(self.location(key), e))?;
        }
        // A rename, as `put` ends: a reader never sees half a file.
        file.persist(&path).map(|_| ()).map_err(|e| io_error(self.location(key), e.error))
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        match self.get(key).await {
            Ok(b) => {
                let tag = content_tag(&b);
                Ok(Some((b, tag)))
            }
            Err(CopyError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn put_if(&self, key: &str, body: Bytes, condition: &PutCondition) -> Result<bool> {
        // The lock makes check-then-write atomic for every process sharing the folder.
        let _lock = FolderLock::acquire(&self.root, key).await?;
        let current = self.get_versioned(key).await?;
        let holds = match (condition, &current) {
            (PutCondition::Absent, None) => true,
            (PutCondition::Matches(tag), Some((_, now))) => tag == now,
            _ => false,
        };
        if holds {
            self.put(key, body).await?;
        }
        Ok(holds)
    }

    async fn delete(&self, key: &str) -> Result<()> {
        match tokio::fs::remove_file(self.path(key)?).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(self.location(key), e)),
        }
    }

    async fn head(&self, key: &str) -> Result<ObjectHead> {
        let path = self.path(key)?;
        tokio::fs::metadata(&path).await.map_err(|e| io_error(self.location(key), e))?;
        Ok(ObjectHead::default())
    }

    async fn restore(&self, key: &str, _tier: &str, _days: Option<i32>) -> Result<()> {
        Err(CopyError::Storage { location: self.location(key), message: "local files need no restore".into() })
    }

    fn location(&self, key: &str) -> String {
        self.root.join(key).display().to_string()
    }
}

/// A local object's version tag: a hash of its content.
fn content_tag(body: &[u8]) -> String {
    format!("{:032x}", xxhash_rust::xxh3::xxh3_128(body))
}

/// An exclusive lock on one key of a local folder: a lock file created with `create_new`
/// (atomic on every local file system), removed on drop. A lock older than
/// [`STALE_LOCK`] was left by a crashed process and is broken.
struct FolderLock {
    path: PathBuf,
}

const STALE_LOCK: std::time::Duration = std::time::Duration::from_secs(30);

impl FolderLock {
    async fn acquire(root: &Path, key: &str) -> Result<FolderLock> {
        let dir = root.join(".trailcopy-tmp").join("locks");
        let loc = || root.join(key).display().to_string();
        tokio::fs::create_dir_all(&dir).await.map_err(|e| io_error(loc(), e))?;
        let path = dir.join(format!("{:016x}.lock", xxhash_rust::xxh3::xxh3_64(key.as_bytes())));
        let mut wait = std::time::Duration::from_millis(1);
        let started = std::time::Instant::now();
        loop {
            match tokio::fs::OpenOptions::new().write(true).create_new(true).open(&path).await {
                Ok(_) => return Ok(FolderLock { path }),
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let age = std::fs::metadata(&path).and_then(|m| m.modified()).ok().and_then(|t| t.elapsed().ok());
                    if age.is_some_and(|a| a > STALE_LOCK) {
                        let _ = std::fs::remove_file(&path);
                        continue;
                    }
                    if started.elapsed() > 2 * STALE_LOCK {
                        return Err(CopyError::Retryable { location: loc(), message: "lock held too long".into() });
                    }
                    tokio::time::sleep(wait).await;
                    wait = (wait * 2).min(std::time::Duration::from_millis(50));
                }
                Err(e) => return Err(io_error(loc(), e)),
            }
        }
    }
}

impl Drop for FolderLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

fn object_info(key: &str, obj: &aws_sdk_s3::types::Object) -> ObjectInfo {
    ObjectInfo {
        key: key.to_string(),
        size: obj.size().unwrap_or(0).max(0) as u64,
        storage_class: obj.storage_class().map(|c| c.as_str().to_string()),
    }
}

/// Reads of one object whose body breaks mid-stream, before the item fails (retryable).
const BODY_ATTEMPTS: u32 = 4;

/// An S3 bucket through aws-sdk-s3.
pub struct S3Store {
    client: RegionalClient<aws_sdk_s3::Client>,
    bucket: String,
    /// SSE-KMS key for objects this store writes (None: the bucket's default encryption).
    kms_key: Option<String>,
    /// Where requests go, for messages (`AWS_ENDPOINT_URL`, or S3 itself).
    endpoint: String,
}

impl S3Store {
    pub fn new(client: aws_sdk_s3::Client, bucket: String) -> Self {
        Self { client: RegionalClient::fixed(client), bucket, kms_key: None, endpoint: "S3".into() }
    }

    /// Maps an SDK error to what a caller acts on; `action` is the IAM action the request needs.
    fn error<E, R>(&self, key: &str, action: &str, err: SdkError<E, R>) -> CopyError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
        R: std::fmt::Debug + Send + Sync + 'static,
    {
        crate::aws_error::sdk_error(self.location(key), action, &self.endpoint, err)
    }
}

#[async_trait]
impl ObjectStore for S3Store {
    async fn list_dir(&self, prefix: &str) -> Result<Listing> {
        self.client.read(|client| self.list_dir_with(client, prefix)).await
    }

    async fn list_range(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<Vec<ObjectInfo>> {
        self.client.read(|client| self.list_range_with(client, prefix, start_after, end_before)).await
    }

    async fn list_range_first(&self, prefix: &str, start_after: &str, end_before: &str) -> Result<RangePage> {
        self.client.read(|client| self.list_range_first_with(client, prefix, start_after, end_before)).await
    }

    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        self.client.read(|client| self.get_versioned_with(client, key)).await
    }

    async fn get_with_metadata(&self, key: &str) -> Result<(Bytes, HashMap<String, String>)> {
        self.client.read(|client| self.get_with_metadata_with(client, key)).await
    }

    async fn head(&self, key: &str) -> Result<ObjectHead> {
        self.client.read(|client| self.head_with(client, key)).await
    }

    async fn get(&self, key: &str) -> Result<Bytes> {
        Ok(self.get_with_metadata(key).await?.0)
    }

    async fn put_if(&self, key: &str, body: Bytes, condition: &PutCondition) -> Result<bool> {
        // Conditional writes: 412 PreconditionFailed when the condition does not hold, 409
        // ConditionalRequestConflict when a concurrent write raced this one (try again).
        // https://docs.aws.amazon.com/AmazonS3/latest/userguide/conditional-writes.html
        let mut req =
            self.client.settled().await.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body));
        req = match condition {
            PutCondition::Absent => req.if_none_match("*"),
            PutCondition::Matches(tag) => req.if_match(tag),
        };
        if let Some(k) = &self.kms_key {
            req = req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms).ssekms_key_id(k);
        }
        match req.send().await {
            Ok(_) => Ok(true),
            Err(SdkError::ServiceError(se))
                if matches!(se.err().code(), Some("PreconditionFailed" | "ConditionalRequestConflict"))
                    || matches!(se.raw().status().as_u16(), 409 | 412) =>
            {
                Ok(false)
            }
            Err(e) => Err(self.error(key, "s3:PutObject", e)),
        }
    }

    async fn delete(&self, key: &str) -> Result<()> {
        self.client
            .settled()
            .await
            .delete_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(key, "s3:DeleteObject", e))?;
        Ok(())
    }

    async fn put(&self, key: &str, body: Bytes) -> Result<()> {
        let mut req =
            self.client.settled().await.put_object().bucket(&self.bucket).key(key).body(ByteStream::from(body));
        if let Some(k) = &self.kms_key {
            req = req.server_side_encryption(aws_sdk_s3::types::ServerSideEncryption::AwsKms).ssekms_key_id(k);
        }
        req.send().await.map_err(|e| self.error(key, "s3:PutObject", e))?;
        Ok(())
    }

    async fn restore(&self, key: &str, tier: &str, days: Option<i32>) -> Result<()> {
        use aws_sdk_s3::types::{GlacierJobParameters, RestoreRequest, Tier};
        let job = GlacierJobParameters::builder()
            .tier(Tier::from(tier))
            .build()
            .map_err(|e| CopyError::Storage { location: self.location(key), message: e.to_string() })?;
        let mut req = RestoreRequest::builder();
        // Intelligent-Tiering archive tiers take no Days (and no tier parameters).
        if let Some(days) = days {
            req = req.days(days).glacier_job_parameters(job);
        }
        let result = self
            .client
            .settled()
            .await
            .restore_object()
            .bucket(&self.bucket)
            .key(key)
            .restore_request(req.build())
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(SdkError::ServiceError(se)) if se.err().code() == Some("RestoreAlreadyInProgress") => Ok(()),
            Err(e) => Err(self.error(key, "s3:RestoreObject", e)),
        }
    }

    fn location(&self, key: &str) -> String {
        format!("s3://{}/{}", self.bucket, key)
    }
}

/// The requests behind each read, with the client [`RegionalClient::read`] picked.
impl S3Store {
    async fn list_dir_with(&self, client: aws_sdk_s3::Client, prefix: &str) -> Result<Listing> {
        let mut listing = Listing::default();
        let mut pages =
            client.list_objects_v2().bucket(&self.bucket).prefix(prefix).delimiter("/").into_paginator().send();
        while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(prefix, "s3:ListBucket", e))?;
            for cp in page.common_prefixes() {
                if let Some(p) = cp.prefix() {
                    listing.dirs.push(p.to_string());
                }
            }
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                listing.objects.push(object_info(key, obj));
            }
        }
        Ok(listing)
    }

    async fn list_range_with(
        &self,
        client: aws_sdk_s3::Client,
        prefix: &str,
        start_after: &str,
        end_before: &str,
    ) -> Result<Vec<ObjectInfo>> {
        // Keys come in UTF-8 binary order, 1,000 a page; StartAfter skips everything before the
        // range, and the listing stops at the first page that reaches its end.
        // https://docs.aws.amazon.com/AmazonS3/latest/API/API_ListObjectsV2.html
        let mut out = Vec::new();
        let mut req = client.list_objects_v2().bucket(&self.bucket).prefix(prefix);
        if !start_after.is_empty() {
            req = req.start_after(start_after);
        }
        let mut pages = req.into_paginator().send();
        'pages: while let Some(page) = pages.next().await {
            let page = page.map_err(|e| self.error(prefix, "s3:ListBucket", e))?;
            for obj in page.contents() {
                let Some(key) = obj.key() else { continue };
                if key >= end_before {
                    break 'pages;
                }
                out.push(object_info(key, obj));
            }
        }
        Ok(out)
    }

    async fn list_range_first_with(
        &self,
        client: aws_sdk_s3::Client,
        prefix: &str,
        start_after: &str,
        end_before: &str,
    ) -> Result<RangePage> {
        let mut req = client.list_objects_v2().bucket(&self.bucket).prefix(prefix);
        if !start_after.is_empty() {
            req = req.start_after(start_after);
        }
        let page = req.send().await.map_err(|e| self.error(prefix, "s3:ListBucket", e))?;
        let mut out = RangePage { objects: Vec::new(), complete: !page.is_truncated().unwrap_or(false) };
        for obj in page.contents() {
            let Some(key) = obj.key() else { continue };
            if key >= end_before {
                out.complete = true;
                break;
            }
            out.objects.push(object_info(key, obj));
        }
        Ok(out)
    }

    async fn get_versioned_with(&self, client: aws_sdk_s3::Client, key: &str) -> Result<Option<(Bytes, String)>> {
        let out = match client.get_object().bucket(&self.bucket).key(key).send().await {
            Ok(o) => o,
            Err(e) => {
                return match self.error(key, "s3:GetObject", e) {
                    CopyError::NotFound { .. } => Ok(None),
                    e => Err(e),
                };
            }
        };
        let tag = out.e_tag().unwrap_or_default().to_string();
        let body = out.body.collect().await.map_err(|e| CopyError::Retryable {
            location: self.location(key),
            message: format!("reading the body failed: {e}"),
        })?;
        Ok(Some((body.into_bytes(), tag)))
    }

    async fn get_with_metadata_with(
        &self,
        client: aws_sdk_s3::Client,
        key: &str,
    ) -> Result<(Bytes, HashMap<String, String>)> {
        // The SDK retries requests, but not a body that breaks after the response began:
        // such a read is asked for again, a bounded number of times.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let out = client
                .get_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| self.error(key, "s3:GetObject", e))?;
            let metadata = out.metadata.clone().unwrap_or_default();
            match out.body.collect().await {
                Ok(body) => return Ok((body.into_bytes(), metadata)),
                Err(e) if attempt < BODY_ATTEMPTS => {
                    tracing::debug!(key, attempt, error = %e, "body read failed; reading again");
                    tokio::time::sleep(std::time::Duration::from_millis(100 << attempt)).await;
                }
                Err(e) => {
                    return Err(CopyError::Retryable {
                        location: self.location(key),
                        message: format!("reading the body failed {attempt} times: {e}"),
                    });
                }
            }
        }
    }

    async fn head_with(&self, client: aws_sdk_s3::Client, key: &str) -> Result<ObjectHead> {
        let out = client
            .head_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| self.error(key, "s3:GetObject", e))?;
        Ok(ObjectHead {
            storage_class: out.storage_class().map(|c| c.as_str().to_string()),
            restore: out.restore().map(str::to_string),
            archive_status: out.archive_status().map(|s| s.as_str().to_string()),
            kms_key_id: out.ssekms_key_id().map(str::to_string),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_store(name: &str) -> LocalStore {
        let dir = std::env::temp_dir().join(format!("trailcopy-storage-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        LocalStore::new(dir)
    }

    #[tokio::test]
    async fn local_get_reads_small_and_large_files_whole() {
        let s = temp_store("get");
        let small: Bytes = (0..1000u32).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>().into();
        let large: Bytes =
            (0..(INLINE_READ_BYTES as u32 / 2)).flat_map(|i| i.to_le_bytes()).collect::<Vec<u8>>().into();
        assert!(large.len() as u64 > INLINE_READ_BYTES, "the large file takes the blocking pool");
        s.put("a/small", small.clone()).await.unwrap();
        s.put("a/large", large.clone()).await.unwrap();
        assert_eq!(s.get("a/small").await.unwrap(), small);
        assert_eq!(s.get("a/large").await.unwrap(), large);
        assert!(matches!(s.get("a/missing").await, Err(CopyError::NotFound { .. })));
        assert!(s.get("a").await.is_err(), "a folder is not an object");
    }

    #[tokio::test]
    async fn a_local_spool_is_a_file_renamed_into_place_and_gone_if_dropped() {
        use std::io::Write as _;
        let s = temp_store("spool");
        let tmp_files = |s: &LocalStore| {
            std::fs::read_dir(s.tmp_dir()).unwrap().filter(|e| e.as_ref().unwrap().path().is_file()).count()
        };
        let mut spool = s.spool().unwrap();
        assert!(matches!(spool, Spool::File(_)), "a local store spools to disk, not memory");
        spool.write_all(b"PAR1 first").unwrap();
        spool.write_all(b" second").unwrap();
        assert!(matches!(s.get("events/date=2026-11-01/a.parquet").await, Err(CopyError::NotFound { .. })));
        s.put_spool("events/date=2026-11-01/a.parquet", spool).await.unwrap();
        assert_eq!(&s.get("events/date=2026-11-01/a.parquet").await.unwrap()[..], b"PAR1 first second");
        assert_eq!(tmp_files(&s), 0, "the temporary file was renamed, not copied");

        // A batch that fails before its commit leaves nothing behind.
        let mut dropped = s.spool().unwrap();
        dropped.write_all(b"half a batch").unwrap();
        assert_eq!(tmp_files(&s), 1);
        drop(dropped);
        assert_eq!(tmp_files(&s), 0);
        assert_eq!(s.list_dir("events/").await.unwrap().dirs, vec!["events/date=2026-11-01/".to_string()]);

        // A memory spool (the trait's default, an S3 store's) is stored like a put.
        let mut memory = Spool::Memory(Vec::new());
        memory.write_all(b"in memory").unwrap();
        s.put_spool("events/b.parquet", memory).await.unwrap();
        assert_eq!(&s.get("events/b.parquet").await.unwrap()[..], b"in memory");
    }

    #[tokio::test]
    async fn local_compare_and_swap() {
        let s = temp_store("cas");
        assert!(s.put_if("r/0.json", Bytes::from_static(b"a"), &PutCondition::Absent).await.unwrap());
        assert!(!s.put_if("r/0.json", Bytes::from_static(b"b"), &PutCondition::Absent).await.unwrap(), "exists");
        let (body, tag) = s.get_versioned("r/0.json").await.unwrap().unwrap();
        assert_eq!(&body[..], b"a");
        assert!(!s.put_if("r/0.json", Bytes::from_static(b"c"), &PutCondition::Matches("stale".into())).await.unwrap());
        assert!(s.put_if("r/0.json", Bytes::from_static(b"d"), &PutCondition::Matches(tag.clone())).await.unwrap());
        assert!(
            !s.put_if("r/0.json", Bytes::from_static(b"e"), &PutCondition::Matches(tag)).await.unwrap(),
            "moved on"
        );
        assert_eq!(&s.get("r/0.json").await.unwrap()[..], b"d");
        assert!(s.get_versioned("r/none.json").await.unwrap().is_none());
        s.delete("r/0.json").await.unwrap();
        s.delete("r/0.json").await.unwrap();
        assert!(s.get_versioned("r/0.json").await.unwrap().is_none());
    }

    #[tokio::test]
    async fn concurrent_swaps_lose_no_update() {
        let s = Arc::new(temp_store("cas-race"));
        let tasks: Vec<_> = (0..20)
            .map(|i| {
                let s = s.clone();
                tokio::spawn(async move {
                    loop {
                        let (list, cond) = match s.get_versioned("n.json").await.unwrap() {
                            Some((b, tag)) => {
                                (serde_json::from_slice::<Vec<u32>>(&b).unwrap(), PutCondition::Matches(tag))
                            }
                            None => (Vec::new(), PutCondition::Absent),
                        };
                        let mut list = list;
                        list.push(i);
                        if s.put_if("n.json", serde_json::to_vec(&list).unwrap().into(), &cond).await.unwrap() {
                            break;
                        }
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let mut got: Vec<u32> = serde_json::from_slice(&s.get("n.json").await.unwrap()).unwrap();
        got.sort();
        assert_eq!(got, (0..20).collect::<Vec<_>>());
    }

    #[tokio::test]
    async fn local_range_listing_opens_only_folders_in_range() {
        let s = temp_store("range");
        let r = "AWSLogs/1/CloudTrail/us-east-1/";
        for d in ["2024/02/28", "2024/03/01", "2024/03/02", "2024/03/03", "2025/01/01"] {
            s.put(&format!("{r}{d}/f.json.gz"), Bytes::from_static(b"x")).await.unwrap();
        }
        let got = s.list_range(r, &format!("{r}2024/03/01"), &format!("{r}2024/03/03")).await.unwrap();
        let keys: Vec<&str> = got.iter().map(|o| o.key.as_str()).collect();
        assert_eq!(keys, vec![format!("{r}2024/03/01/f.json.gz"), format!("{r}2024/03/02/f.json.gz")]);
        assert!(folder_in_range(&format!("{r}2024/"), &format!("{r}2024/03/01"), &format!("{r}2024/03/03")));
        assert!(!folder_in_range(&format!("{r}2025/"), &format!("{r}2024/03/01"), &format!("{r}2024/03/03")));
        assert!(!folder_in_range(&format!("{r}2024/02/"), &format!("{r}2024/03/01"), &format!("{r}2024/03/03")));
        assert!(!folder_in_range(&format!("{r}2024/03/03/"), &format!("{r}2024/03/01"), &format!("{r}2024/03/03")));
    }
}
