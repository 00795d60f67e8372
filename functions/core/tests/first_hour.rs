//! Issue 9 at the engine: canonical sources and the overlap guard's notion of one source, the
//! refusal of folders that are not trails, createdTime <= updatedTime, and progress counters
//! whose totals never fall behind what is done.

use std::io::Write;
use std::path::{Path, PathBuf};
use trailcopy::claims::{Holder, NoProbe};

use trailcopy::plan::{resolve_request, sources_overlap};
use trailcopy::storage::Location;
use trailcopy::{AwsClients, CopyError, CopyRequest, CopyStatus, Progress, RunOptions, run_copy};

fn sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/sample-trail").canonicalize().unwrap()
}

fn temp(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("trailcopy-first-hour-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn request(source: &Path, store: &Path) -> CopyRequest {
    CopyRequest {
        source: Some(source.display().to_string()),
        store: Some(store.display().to_string()),
        start: Some("2026-11-01".into()),
        end: Some("2026-11-03".into()),
        ..Default::default()
    }
}

fn copy_dir(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[test]
fn spellings_of_a_local_source_resolve_to_one() {
    let dir = temp("spellings");
    std::os::unix::fs::symlink(sample(), dir.join("link")).unwrap();
    let store = dir.join("store");
    let canonical = sample().display().to_string();
    let spellings = [
        sample().display().to_string(),
        format!("{}/", sample().display()),
        format!("{}/../sample-trail/./", sample().display()),
        dir.join("link").display().to_string(),
    ];
    for s in spellings {
        let (resolved, _, _) = resolve_request(&request(Path::new(&s), &store), jiff::Timestamp::now()).unwrap();
        assert_eq!(resolved.source, canonical, "{s}");
        assert_eq!(resolved.store, store.display().to_string());
    }
}

#[test]
fn a_local_source_inside_awslogs_is_narrowed_like_an_s3_prefix() {
    let inside = sample().join("AWSLogs/o-exampleorg1/448403967001");
    let loc = Location::parse_source(&inside.display().to_string()).unwrap();
    assert_eq!(loc, Location::Local { root: sample(), prefix: "AWSLogs/o-exampleorg1/448403967001/".into() });
    assert_eq!(loc.display(), inside.display().to_string(), "the display is the path given");
    assert_eq!(Location::parse_source(&loc.display()).unwrap(), loc, "parsing the display gives it back");
    let whole = Location::parse_source(&sample().display().to_string()).unwrap();
    assert!(sources_overlap(&whole, &loc) && sources_overlap(&loc, &whole));
    let other = Location::parse_source(&sample().join("AWSLogs/o-exampleorg1/810867865659").display().to_string());
    assert!(!sources_overlap(&loc, &other.unwrap()), "two accounts do not overlap");
}

#[test]
fn s3_sources_overlap_by_prefix() {
    let s3 = |t: &str| Location::parse_source(t).unwrap();
    assert!(sources_overlap(&s3("s3://bkt"), &s3("s3://bkt/AWSLogs/")));
    assert!(sources_overlap(&s3("s3://bkt/"), &s3("s3://bkt/AWSLogs/o-x/111122223333/CloudTrail/us-east-1/")));
    assert!(!sources_overlap(&s3("s3://bkt/AWSLogs/111122223333/"), &s3("s3://bkt/AWSLogs/444455556666/")));
    assert!(
        !sources_overlap(&s3("s3://bkt/trails/a/"), &s3("s3://bkt/trails/b/")),
        "two trails under different prefixes"
    );
    assert!(!sources_overlap(&s3("s3://bkt/"), &s3("s3://ckt/")));
    assert!(
        sources_overlap(&s3("s3://bkt/"), &s3("s3://bkt/trails/a/AWSLogs/")),
        "the bucket root reads every trail below it"
    );
    assert!(!sources_overlap(&s3("s3://bkt/trails/a/"), &s3("s3://bkt/trails/ab/")), "segments, not characters");
}

#[test]
fn folders_that_are_not_trails_are_refused() {
    let dir = temp("not-trails");
    std::fs::create_dir_all(dir.join("empty")).unwrap();
    std::fs::create_dir_all(dir.join("other/logs")).unwrap();
    for (name, why) in [("missing", "does not exist"), ("empty", "holds no AWSLogs/"), ("other", "holds no AWSLogs/")] {
        let err = resolve_request(&request(&dir.join(name), &dir.join("store")), jiff::Timestamp::now()).unwrap_err();
        match err {
            CopyError::InvalidRequest { field: "source", reason } => assert!(reason.contains(why), "{name}: {reason}"),
            e => panic!("{name}: {e:?}"),
        }
    }
}

#[tokio::test]
async fn created_time_is_never_after_updated_time() {
    let dir = temp("times");
    let aws = AwsClients::new();
    // The plan's clock may lead the machine's (a Lambda's event time, a skewed host).
    let ahead = jiff::Timestamp::now() + jiff::SignedDuration::from_millis(5_700);
    let (ctx, _) =
        trailcopy::plan_copy(&aws, &request(&sample(), &dir.join("store")), ahead, Holder::this_process(), &NoProbe)
            .await
            .unwrap();
    let record = ctx.read_record().await.unwrap();
    assert!(record.created_time <= record.updated_time, "{} > {}", record.created_time, record.updated_time);
    assert!(record.created_time <= ahead, "created {} is after the plan's now {ahead}", record.created_time);
}

/// The sample trail plus a file that is both a copied file and a failure entry (an invalid event),
/// and a file that fails whole: the old bar counted failure entries as files done.
fn trail_with_defects(dir: &Path) -> PathBuf {
    let src = dir.join("trail");
    copy_dir(&sample(), &src);
    let day = src.join("AWSLogs/o-exampleorg1/448403967001/CloudTrail/us-east-1/2026/11/01");
    let event = r#"{"eventVersion":"1.08","eventTime":"2026-11-01T05:00:00Z","eventSource":"s3.amazonaws.com","eventName":"GetObject","awsRegion":"us-east-1","eventID":"defect-1","eventType":"AwsApiCall"}"#;
    let body = format!(r#"{{"Records":[{event},{{"eventVersion":"1.08"}}]}}"#);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(body.as_bytes()).unwrap();
    std::fs::write(day.join("448403967001_CloudTrail_us-east-1_20261101T0505Z_defect.json.gz"), gz.finish().unwrap())
        .unwrap();
    std::fs::write(day.join("448403967001_CloudTrail_us-east-1_20261101T0605Z_broken.json.gz"), b"\x1f\x8b no")
        .unwrap();
    // Not a log file by name: skipped. Named like one but not .json.gz: a failure.
    std::fs::write(day.join("notes.txt"), b"not a log").unwrap();
    std::fs::write(day.join("448403967001_CloudTrail_us-east-1_20261101T0705Z_plain.json"), b"{}").unwrap();
    src
}

#[tokio::test]
async fn progress_totals_are_fixed_when_planning_ends_and_done_only_grows() {
    let dir = temp("progress");
    let src = trail_with_defects(&dir);
    let opts = RunOptions { concurrency: 2, ..Default::default() };
    let tracker = opts.progress.clone();
    // A display reads the tracker as often as it likes; this one reads it as often as it can.
    let (stop, stopped) = tokio::sync::watch::channel(false);
    let watcher = tokio::spawn(async move {
        let mut seen: Vec<Progress> = Vec::new();
        while !*stopped.borrow() {
            let p = tracker.snapshot();
            if seen.last() != Some(&p) {
                seen.push(p);
            }
            tokio::task::yield_now().await;
        }
        seen.push(tracker.snapshot());
        seen
    });
    let record = run_copy(&AwsClients::new(), &request(&src, &dir.join("store")), &opts).await.unwrap();
    stop.send(true).unwrap();
    let seen = watcher.await.unwrap();
    assert_eq!(record.status, CopyStatus::Failed, "the defects are failure entries");
    assert!(!seen[0].planned, "the first snapshot is the planning one");
    let planned: Vec<&Progress> = seen.iter().filter(|p| p.planned).collect();
    let s = &record.statistics;
    let total = planned[0].total;
    assert_eq!(total.prefixes, s.prefixes_found, "{total:?}");
    assert_eq!(total.files, s.files_found, "every listed file, skipped ones too: {total:?}");
    assert_eq!(total.bytes, s.bytes_to_read, "{total:?}");
    let mut last = planned[0].done;
    for p in &planned {
        assert_eq!(p.total, total, "the totals never change while copying: {p:?}");
        let d = p.done;
        assert!(d.prefixes <= total.prefixes && d.files <= total.files && d.bytes <= total.bytes, "{p:?}");
        assert!(d.files >= last.files && d.bytes >= last.bytes && d.prefixes >= last.prefixes, "{last:?} then {p:?}");
        last = d;
    }
    assert!(planned.len() > 3, "the snapshots move per file, not per item: {planned:?}");
    assert_eq!(planned.last().unwrap().done, total, "all done at the end");
    assert_eq!(planned.last().unwrap().events_copied, s.events_completed);
    // Every file found is skipped, copied or a failure of its own; InvalidEvents is not a file's failure.
    assert_eq!((s.files_found, s.files_completed, s.files_failed), (52, 49, 2), "{s:?}");
    assert_eq!((s.files_skipped, s.files_not_log_files), (1, 1), "notes.txt: {s:?}");
    assert_eq!(s.failed_entries, 3, "CorruptGzip, UnsupportedFileType, InvalidEvents");
    assert_eq!(s.bytes_read, s.bytes_to_read);
}
