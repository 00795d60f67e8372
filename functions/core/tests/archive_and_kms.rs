//! Archived objects and SSE-KMS keys, with fakes at the object-store and KMS seams for what
//! moto does not model: Intelligent-Tiering archive tiers, restores already in progress,
//! key states, AccessDenied on SSE-KMS objects, Outposts.

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use trailcopy::error::{CopyError, Result};
use trailcopy::kms::{KeyChecker, KeyState};
use trailcopy::range::Window;
use trailcopy::record::{CopyRecord, CopyStatus, RecordKeys, ResolvedRequest, RestoreOptions, Statistics, WorkItem};
use trailcopy::storage::{Listing, LocalStore, Location, ObjectHead, ObjectInfo, ObjectStore, PutCondition};
use trailcopy::{CopyContext, CopyLimits, PrepareOutcome, copy_item, prepare_item};

#[derive(Clone, Default)]
struct FakeObject {
    body: Bytes,
    class: Option<String>,
    archive_status: Option<String>,
    restore: Option<String>,
    kms_key: Option<String>,
    get_denied: bool,
    /// GET never answers (an invocation that dies mid-batch: out of memory, killed).
    get_hangs: bool,
}

#[derive(Default)]
struct FakeSource {
    objects: Mutex<BTreeMap<String, FakeObject>>,
    restores: Mutex<Vec<(String, String, Option<i32>)>>,
    heads: Mutex<Vec<String>>,
}

impl FakeSource {
    fn put(&self, key: &str, o: FakeObject) {
        self.objects.lock().unwrap().insert(key.to_string(), o);
    }
    fn finish_restores(&self) {
        for o in self.objects.lock().unwrap().values_mut() {
            if o.restore.is_some() {
                o.restore = Some("ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2040 00:00:00 GMT\"".into());
                o.archive_status = None;
            }
        }
    }
}

#[async_trait]
impl ObjectStore for FakeSource {
    async fn list_dir(&self, prefix: &str) -> Result<Listing> {
        let objects = self.objects.lock().unwrap();
        let mut l = Listing::default();
        for (k, o) in objects.iter().filter(|(k, _)| k.starts_with(prefix)) {
            match k[prefix.len()..].split_once('/') {
                Some((dir, _)) => {
                    let d = format!("{prefix}{dir}/");
                    if l.dirs.last() != Some(&d) {
                        l.dirs.push(d);
                    }
                }
                None => l.objects.push(ObjectInfo {
                    key: k.clone(),
                    size: o.body.len() as u64,
                    storage_class: o.class.clone(),
                }),
            }
        }
        Ok(l)
    }
    async fn get_versioned(&self, key: &str) -> Result<Option<(Bytes, String)>> {
        Ok(self.get(key).await.ok().map(|b| (b, String::new())))
    }
    async fn put_if(&self, _key: &str, _body: Bytes, _c: &PutCondition) -> Result<bool> {
        unreachable!("the source is read-only")
    }
    async fn delete(&self, _key: &str) -> Result<()> {
        unreachable!("the source is read-only")
    }
    async fn get(&self, key: &str) -> Result<Bytes> {
        let o = self.objects.lock().unwrap().get(key).cloned().ok_or(CopyError::NotFound { location: key.into() })?;
        let archived = matches!(o.class.as_deref(), Some("GLACIER" | "DEEP_ARCHIVE")) || o.archive_status.is_some();
        let restored = o.restore.as_deref().is_some_and(|r| r.contains("\"false\""));
        if o.get_denied {
            return Err(CopyError::AccessDenied { location: key.into(), message: "Access Denied".into() });
        }
        if o.get_hangs {
            std::future::pending::<()>().await;
        }
        if archived && !restored {
            return Err(CopyError::Archived { location: key.into() });
        }
        Ok(o.body)
    }
    async fn put(&self, _key: &str, _body: Bytes) -> Result<()> {
        unreachable!("the source is read-only")
    }
    async fn head(&self, key: &str) -> Result<ObjectHead> {
        self.heads.lock().unwrap().push(key.to_string());
        let o = self.objects.lock().unwrap().get(key).cloned().ok_or(CopyError::NotFound { location: key.into() })?;
        Ok(ObjectHead {
            storage_class: o.class,
            restore: o.restore,
            archive_status: o.archive_status,
            kms_key_id: o.kms_key,
        })
    }
    async fn restore(&self, key: &str, tier: &str, days: Option<i32>) -> Result<()> {
        self.restores.lock().unwrap().push((key.into(), tier.into(), days));
        if let Some(o) = self.objects.lock().unwrap().get_mut(key) {
            o.restore = Some("ongoing-request=\"true\"".into());
        }
        Ok(())
    }
    fn location(&self, key: &str) -> String {
        format!("s3://trail/{key}")
    }
}

struct FakeKeys(BTreeMap<String, KeyState>);

#[async_trait]
impl KeyChecker for FakeKeys {
    async fn describe(&self, key_id: &str) -> Result<KeyState> {
        Ok(self.0.get(key_id).cloned().unwrap_or(KeyState::NotFound))
    }
}

const PREFIX: &str = "AWSLogs/111122223333/CloudTrail/us-east-1/2026/11/01/";

fn log_file(n: usize, tag: &str) -> Bytes {
    let events: Vec<String> = (0..n)
        .map(|i| {
            format!(
                r#"{{"eventVersion":"1.08","eventTime":"2026-11-01T10:0{}:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","eventID":"{tag}-{i}","eventType":"AwsApiCall"}}"#,
                i % 10
            )
        })
        .collect();
    let json = format!("{{\"Records\":[{}]}}", events.join(","));
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(json.as_bytes()).unwrap();
    gz.finish().unwrap().into()
}

fn name(i: usize) -> String {
    format!("{PREFIX}111122223333_CloudTrail_us-east-1_20261101T10{i:02}Z_abc{i}.json.gz")
}

struct Setup {
    ctx: CopyContext,
    /// Planned (the file list frozen) on first use, after the test put its objects.
    item: tokio::sync::OnceCell<WorkItem>,
    source: Arc<FakeSource>,
}

impl Setup {
    async fn item(&self) -> &WorkItem {
        self.item
            .get_or_init(|| async {
                let record = CopyRecord {
                    copy_id: self.ctx.copy_id.clone(),
                    status: CopyStatus::Initializing,
                    request: self.ctx.request.clone(),
                    statistics: Statistics::default(),
                    created_time: jiff::Timestamp::now(),
                    updated_time: jiff::Timestamp::now(),
                    message: None,
                    executions: Vec::new(),
                    verification: None,
                    attempts: Vec::new(),
                };
                self.ctx.write_record(&record).await.unwrap();
                let items = trailcopy::plan::discover_work_items(&self.ctx).await.unwrap();
                assert_eq!(items.len(), 1, "one day prefix, one item: {items:?}");
                items.into_iter().next().unwrap()
            })
            .await
    }
}

async fn prepare(s: &Setup) -> Result<PrepareOutcome> {
    prepare_item(&s.ctx, s.item().await).await
}

fn setup(test: &str, tier: &str, keys: &[(&str, KeyState)]) -> Setup {
    let dir = std::env::temp_dir().join(format!("trailcopy-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let source = Arc::new(FakeSource::default());
    let window = Window {
        start: "2026-11-01T00:00:00Z".parse().unwrap(),
        end: "2026-11-02T00:00:00Z".parse().unwrap(),
        retention_cutoff: "2020-01-01T00:00:00Z".parse().unwrap(),
    };
    let request = ResolvedRequest {
        source: "s3://trail/".into(),
        store: dir.display().to_string(),
        start: window.start,
        end: window.end,
        last: None,
        retention_days: 2557,
        retention_cutoff: window.retention_cutoff,
        restore: RestoreOptions { tier: tier.into(), days: 7, poll_seconds: 1, max_wait_seconds: Some(3600) },
        store_kms_key: None,
        allow_overlap: false,
        verification: None,
        requested_end: None,
        delivery_allowance_seconds: None,
        complete_through: None,
        continues: None,
        tail_until: None,
    };
    let ctx = CopyContext {
        copy_id: "c1".into(),
        request,
        window,
        source_location: Location::S3 { bucket: "trail".into(), prefix: String::new() },
        source: source.clone(),
        store_location: Location::Local { root: dir.clone(), prefix: String::new() },
        store: Arc::new(LocalStore::new(dir)),
        keys: RecordKeys::new("", "c1"),
        kms: Arc::new(FakeKeys(keys.iter().map(|(k, s)| (k.to_string(), s.clone())).collect())),
        digest_keys: None,
    };
    Setup { ctx, item: tokio::sync::OnceCell::new(), source }
}

async fn copy_all(s: &Setup) -> trailcopy::CopyOutcome {
    let never = AtomicBool::new(false);
    let budget = trailcopy::FetchBudget::default();
    let limits = CopyLimits::new(&never, &budget);
    copy_item(&s.ctx, s.item().await, &limits).await.unwrap()
}

async fn item_failures(s: &Setup) -> Vec<trailcopy::FailureEntry> {
    let state = trailcopy::prepare::load_item_state(&s.ctx, s.item().await).await.unwrap();
    state.failures
}

#[tokio::test]
async fn intelligent_tiering_archive_is_restored_without_days_then_copied() {
    let s = setup("it", "Bulk", &[]);
    s.source.put(&name(1), FakeObject { body: log_file(3, "a"), ..Default::default() });
    s.source.put(
        &name(2),
        FakeObject {
            body: log_file(2, "b"),
            class: Some("INTELLIGENT_TIERING".into()),
            archive_status: Some("DEEP_ARCHIVE_ACCESS".into()),
            ..Default::default()
        },
    );
    let p = prepare(&s).await.unwrap();
    assert_eq!(p.pending_restores, 1);
    assert_eq!(*s.source.restores.lock().unwrap(), vec![(name(2), "Bulk".to_string(), None)], "no Days for IT tiers");
    // Still restoring: the poll keeps it pending and starts nothing new.
    assert_eq!(prepare(&s).await.unwrap().pending_restores, 1);
    assert_eq!(s.source.restores.lock().unwrap().len(), 1);
    s.source.finish_restores();
    assert_eq!(prepare(&s).await.unwrap().pending_restores, 0);
    let out = copy_all(&s).await;
    assert!(out.done);
    assert_eq!(out.events_completed, 5);
}

#[tokio::test]
async fn glacier_restore_uses_days_and_tier() {
    let s = setup("glacier", "Standard", &[]);
    s.source.put(&name(1), FakeObject { body: log_file(1, "a"), class: Some("GLACIER".into()), ..Default::default() });
    s.source
        .put(&name(2), FakeObject { body: log_file(1, "b"), class: Some("DEEP_ARCHIVE".into()), ..Default::default() });
    let p = prepare(&s).await.unwrap();
    assert_eq!(p.pending_restores, 2);
    let calls = s.source.restores.lock().unwrap().clone();
    assert!(calls.iter().all(|(_, tier, days)| tier == "Standard" && *days == Some(7)), "{calls:?}");
}

#[tokio::test]
async fn a_restore_already_in_progress_is_waited_for_not_requested_again() {
    let s = setup("inprogress", "Bulk", &[]);
    s.source.put(
        &name(1),
        FakeObject {
            body: log_file(1, "a"),
            class: Some("GLACIER".into()),
            restore: Some("ongoing-request=\"true\"".into()),
            ..Default::default()
        },
    );
    let p = prepare(&s).await.unwrap();
    assert_eq!(p.pending_restores, 1);
    assert!(s.source.restores.lock().unwrap().is_empty());
}

#[tokio::test]
async fn expedited_is_refused_for_deep_archive_and_outposts_cannot_be_read() {
    let s = setup("tiers", "Expedited", &[]);
    s.source
        .put(&name(1), FakeObject { body: log_file(1, "a"), class: Some("DEEP_ARCHIVE".into()), ..Default::default() });
    s.source.put(&name(2), FakeObject { body: log_file(1, "b"), class: Some("OUTPOSTS".into()), ..Default::default() });
    s.source.put(&name(3), FakeObject { body: log_file(1, "c"), ..Default::default() });
    prepare(&s).await.unwrap();
    let f = item_failures(&s).await;
    let types: Vec<&str> = f.iter().map(|e| e.error_type.as_str()).collect();
    assert_eq!(types, ["RestoreTierInvalid", "UnsupportedStorageClass"]);
    assert!(f[0].error_message.contains("Expedited"), "{}", f[0].error_message);
    assert!(f[1].error_message.contains("OUTPOSTS"));
    assert_eq!(copy_all(&s).await.events_completed, 1, "the readable file still copies");
}

#[tokio::test]
async fn without_restore_archived_files_say_how_to_restore() {
    let s = setup("norestore", "None", &[]);
    s.source.put(&name(1), FakeObject { body: log_file(1, "a"), class: Some("GLACIER".into()), ..Default::default() });
    let p = prepare(&s).await.unwrap();
    assert_eq!(p.pending_restores, 0);
    let f = item_failures(&s).await;
    assert_eq!(f[0].error_type, "ArchivedObject");
    assert!(f[0].error_message.contains("restore-object") && f[0].error_message.contains("--restore bulk"));
    assert!(s.source.restores.lock().unwrap().is_empty());
}

#[tokio::test]
async fn disabled_and_pending_deletion_keys_block_the_item_once() {
    let key = "arn:aws:kms:us-east-1:111122223333:key/1111";
    for (state, expected) in [
        (KeyState::Disabled, "KmsKeyDisabled"),
        (KeyState::PendingDeletion, "KmsKeyPendingDeletion"),
        (KeyState::Unusable("PendingImport".into()), "KmsKeyUnusable"),
    ] {
        let s = setup(expected, "Bulk", &[(key, state)]);
        for i in 1..=5 {
            s.source
                .put(&name(i), FakeObject { body: log_file(1, "a"), kms_key: Some(key.into()), ..Default::default() });
        }
        match prepare(&s).await {
            Err(CopyError::Blocked(entry)) => {
                assert_eq!(entry.error_type, expected);
                assert_eq!(entry.location, key);
                assert!(entry.error_message.contains(key), "{}", entry.error_message);
            }
            other => panic!("{expected}: expected a blocked item, got {other:?}"),
        }
    }
}

/// CloudTrail's default key policy lets the account's principals decrypt but not describe the key:
/// DescribeKey denied (or not found, e.g. a key of another account) is no verdict, and the copy goes on.
#[tokio::test]
async fn describe_key_denied_or_not_found_does_not_block_the_copy() {
    let key = "arn:aws:kms:us-east-1:111122223333:key/3333";
    for (tag, state) in [("denied", KeyState::AccessDenied("not authorized".into())), ("notfound", KeyState::NotFound)]
    {
        let s = setup(&format!("describe-{tag}"), "Bulk", &[(key, state)]);
        for i in 1..=3 {
            s.source.put(
                &name(i),
                FakeObject { body: log_file(2, &format!("{tag}{i}")), kms_key: Some(key.into()), ..Default::default() },
            );
        }
        let p = prepare_item(&s.ctx, s.item().await).await.unwrap_or_else(|e| panic!("{tag}: prepare blocked: {e}"));
        assert_eq!(p.files_found, 3);
        let out = copy_all(&s).await;
        assert!(out.done, "{tag}");
        assert_eq!(out.events_completed, 6, "{tag}: S3 decrypted, so every event is copied");
        assert!(item_failures(&s).await.is_empty(), "{tag}");
    }
}

/// When S3 does refuse (GetObject denied on an SSE-KMS object), the item stops with one entry for the
/// key, naming it, an object it stopped and the statement needed; the batch is not committed, so a
/// retry after the key policy is fixed copies everything once.
#[tokio::test]
async fn get_denied_on_an_sse_kms_object_is_one_entry_for_the_key_and_retry_resumes() {
    let key = "arn:aws:kms:us-east-1:111122223333:key/2222";
    let s = setup("kmsget", "Bulk", &[(key, KeyState::AccessDenied("no DescribeKey".into()))]);
    for i in 1..=4 {
        s.source.put(
            &name(i),
            FakeObject {
                body: log_file(2, &format!("f{i}")),
                kms_key: Some(key.into()),
                get_denied: i >= 2,
                ..Default::default()
            },
        );
    }
    prepare_item(&s.ctx, s.item().await).await.unwrap();
    let never = AtomicBool::new(false);
    let budget = trailcopy::FetchBudget::default();
    let limits = CopyLimits::new(&never, &budget);
    match copy_item(&s.ctx, s.item().await, &limits).await {
        Err(CopyError::Blocked(entry)) => {
            assert_eq!(entry.error_type, "KmsAccessDenied");
            assert_eq!(entry.location, key, "one entry per key: its location is the key");
            assert!(entry.error_message.contains(&name(2)), "{}", entry.error_message);
            assert!(entry.error_message.contains("kms:Decrypt") && entry.error_message.contains("kms:ViaService"));
        }
        other => panic!("expected the item to stop on the key, got {other:?}"),
    }
    assert!(item_failures(&s).await.is_empty(), "no per-file entries");
    // The key policy is fixed: the retry copies every file, nothing twice.
    for i in 2..=4 {
        s.source.objects.lock().unwrap().get_mut(&name(i)).unwrap().get_denied = false;
    }
    let out = copy_all(&s).await;
    assert!(out.done);
    let state = trailcopy::prepare::load_item_state(&s.ctx, s.item().await).await.unwrap();
    assert_eq!(state.statistics.events_completed, 8);
    assert_eq!(state.statistics.events_duplicate, 0);
}

/// A restore poll HEADs only the objects still being restored, not every file of the item.
#[tokio::test]
async fn restore_polls_head_only_the_pending_objects() {
    let s = setup("pollpending", "Bulk", &[]);
    for i in 1..=6 {
        s.source.put(&name(i), FakeObject { body: log_file(1, &format!("r{i}")), ..Default::default() });
    }
    s.source.put(&name(7), FakeObject { body: log_file(1, "g"), class: Some("GLACIER".into()), ..Default::default() });
    assert_eq!(prepare_item(&s.ctx, s.item().await).await.unwrap().pending_restores, 1);
    let before = s.source.heads.lock().unwrap().len();
    assert_eq!(prepare_item(&s.ctx, s.item().await).await.unwrap().pending_restores, 1);
    let polled: Vec<String> = s.source.heads.lock().unwrap()[before..].to_vec();
    assert_eq!(polled, vec![name(7)], "the poll asked about the archived object only");
    s.source.finish_restores();
    assert_eq!(prepare_item(&s.ctx, s.item().await).await.unwrap().pending_restores, 0);
    assert_eq!(copy_all(&s).await.events_completed, 7);
}

/// Without a maximum wait in the request, an item's wait follows its objects' class and tier:
/// Deep Archive Bulk (up to 48 h) waits longer than 48 h.
#[tokio::test]
async fn default_restore_wait_follows_the_storage_class() {
    let mut s = setup("autowait", "Bulk", &[]);
    s.ctx.request.restore.max_wait_seconds = None;
    s.source
        .put(&name(1), FakeObject { body: log_file(1, "d"), class: Some("DEEP_ARCHIVE".into()), ..Default::default() });
    prepare_item(&s.ctx, s.item().await).await.unwrap();
    let state = trailcopy::prepare::load_item_state(&s.ctx, s.item().await).await.unwrap();
    let wait = state.restore_max_wait_seconds.unwrap();
    assert!(wait > 48 * 3600, "{wait}");
    let g = setup("autowait-glacier", "Bulk", &[]);
    g.source.put(&name(1), FakeObject { body: log_file(1, "g"), class: Some("GLACIER".into()), ..Default::default() });
    let mut g = g;
    g.ctx.request.restore.max_wait_seconds = None;
    prepare_item(&g.ctx, g.item().await).await.unwrap();
    let gw =
        trailcopy::prepare::load_item_state(&g.ctx, g.item().await).await.unwrap().restore_max_wait_seconds.unwrap();
    assert!(gw > 12 * 3600 && gw < wait, "{gw}");
}

/// Issue 31 point 3: a log file deleted after planning (a lifecycle rule) is one LogFileVanished
/// entry naming it, whether prepare's HEAD or copy's GET meets it; the rest of the item is copied.
#[tokio::test]
async fn a_log_file_deleted_after_planning_is_one_entry_and_the_rest_is_copied() {
    let s = setup("vanished", "Bulk", &[]);
    for i in 1..=3 {
        s.source.put(&name(i), FakeObject { body: log_file(2, &format!("v{i}")), ..Default::default() });
    }
    s.item().await; // planned: all three are in the frozen list
    // The first file of the trail is headed by prepare (its KMS key sample): gone before prepare.
    s.source.objects.lock().unwrap().remove(&name(1));
    let p = prepare(&s).await.unwrap();
    assert_eq!(p.pending_restores, 0);
    // The third is gone after prepare, before copy's GET.
    s.source.objects.lock().unwrap().remove(&name(3));
    let out = copy_all(&s).await;
    assert!(out.done);
    let failures = item_failures(&s).await;
    let vanished: Vec<&str> =
        failures.iter().filter(|f| f.error_type == "LogFileVanished").map(|f| f.location.as_str()).collect();
    assert_eq!(vanished, [format!("s3://trail/{}", name(1)), format!("s3://trail/{}", name(3))], "{failures:?}");
    assert_eq!(failures.len(), 2, "{failures:?}");
    let state = trailcopy::prepare::load_item_state(&s.ctx, s.item().await).await.unwrap();
    assert_eq!((state.statistics.files_completed, state.statistics.files_failed), (1, 2), "{:?}", state.statistics);
    assert_eq!(state.statistics.events_completed, 2);
    assert_eq!(state.failed_files.len(), 2, "both are read again by a retry");
}

/// Issue 31 point 8: a copy invocation that dies mid-batch (out of memory) is not started on the same
/// batch again and again: the copy Lambda allows 2 starts, then the item stops with one entry that
/// says what to change, and Step Functions' Catch ends only that item.
#[tokio::test]
async fn a_batch_that_never_finishes_stops_its_item_with_one_entry_after_two_starts() {
    let s = setup("oom", "Bulk", &[]);
    s.source.put(&name(1), FakeObject { body: log_file(2, "o1"), get_hangs: true, ..Default::default() });
    s.source.put(&name(2), FakeObject { body: log_file(2, "o2"), ..Default::default() });
    prepare(&s).await.unwrap();
    let never = AtomicBool::new(false);
    let budget = trailcopy::FetchBudget::default();
    let limits = CopyLimits { max_batch_starts: Some(2), ..CopyLimits::new(&never, &budget) };
    let item = s.item().await;
    for start in 1..=2 {
        // The invocation dies mid-batch: nothing answers, nothing is committed.
        let died = tokio::time::timeout(std::time::Duration::from_millis(300), copy_item(&s.ctx, item, &limits)).await;
        assert!(died.is_err(), "start {start} should hang");
        let state = trailcopy::prepare::load_item_state(&s.ctx, item).await.unwrap();
        assert_eq!(state.batch_starts.map(|b| b.starts), Some(start));
    }
    let e = copy_item(&s.ctx, item, &limits).await.unwrap_err();
    let CopyError::Blocked(entry) = &e else { panic!("{e:?}") };
    assert_eq!(entry.error_type, "BatchNeverFinished");
    assert!(entry.error_message.contains("started 2 times") && entry.error_message.contains("MemorySize"), "{entry:?}");
    assert_eq!(entry.location, format!("s3://trail/{}", name(1)));
    // The adapter records it on the item (lambda-support item_result does this), once.
    trailcopy::fail_item(&s.ctx, item, &e).await.unwrap();
    let state = trailcopy::prepare::load_item_state(&s.ctx, item).await.unwrap();
    assert_eq!(state.error.as_ref().map(|e| e.error_type.as_str()), Some("BatchNeverFinished"));
    // The cause fixed (more memory: here the file answers), a retry resumes the same batch (reopen
    // puts the item back as below).
    s.source.objects.lock().unwrap().get_mut(&name(1)).unwrap().get_hangs = false;
    let mut state = state;
    state.status = state.resume_status.take().unwrap();
    state.error = None;
    state.batch_starts = None;
    trailcopy::prepare::save_item_state(&s.ctx, &state).await.unwrap();
    let out = copy_item(&s.ctx, item, &limits).await.unwrap();
    assert!(out.done && out.events_completed == 4, "{out:?}");
}
