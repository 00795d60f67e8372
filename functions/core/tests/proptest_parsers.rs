//! Property tests (issue 6.4) over the parsers that see untrusted input: the log-file reader
//! (`event::gunzip`, `event::parse_log`) and the key/layout parsers (`layout::file_timestamp`,
//! `layout::trail_root`, `layout::day_of_prefix`, `storage::Location::parse`).
//!
//! Properties: nothing panics on any input; `parse_log` conserves events
//! (`events_read == rows + out_of_range + invalid`), puts each row in the part of its eventTime's
//! UTC date and inside the window, keeps one dedup key per row, and rebuilds valid events exactly
//! (typed columns + otherFields, docs/contracts.md); the layout parsers agree with what they parse.
//!
//! Inputs: arbitrary bytes, arbitrary JSON documents, CloudTrail-like documents with random field
//! types and times, and mutations (byte flips, cuts, inserts, splices) of the real logs in
//! tests/data/real-umccr, raw and gzipped.
//!
//! Cases per property: PROPTEST_CASES (default here: 256-512 per property, a few seconds in a debug build).
//! A longer run: `PROPTEST_CASES=20000 cargo test -p trailcopy-core --test proptest_parsers`.
//! The cargo-fuzz target over the same parser is fuzz/fuzz_targets/parse_log.rs (fuzz/README.md).

use std::io::Write;
use std::sync::LazyLock;

use arrow_array::cast::AsArray;
use arrow_array::types::TimestampMicrosecondType;
use jiff::Timestamp;
use proptest::prelude::*;
use serde_json::{Map, Value, json};
use trailcopy::event::rebuild::Rebuilder;
use trailcopy::event::schema::{NodeKind, Shape};
use trailcopy::event::{COLUMNS, Kind, OTHER_FIELDS, ParsedFile, gunzip, parse_log};
use trailcopy::layout::{day_of_prefix, file_timestamp, trail_root};
use trailcopy::range::Window;
use trailcopy::storage::Location;

fn config(default_cases: u32) -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(default_cases);
    ProptestConfig {
        cases,
        // No regression files written into the source tree; failures print the minimal input.
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn ts(s: &str) -> Timestamp {
    s.parse().unwrap()
}

/// 2020-09-30T12:00Z .. 2020-10-01T12:00Z: the real sample's times fall on both sides of it.
fn window() -> Window {
    Window {
        start: ts("2020-09-30T12:00:00Z"),
        end: ts("2020-10-01T12:00:00Z"),
        retention_cutoff: ts("2019-01-01T00:00:00Z"),
    }
}

static REAL_LOGS: LazyLock<Vec<Vec<u8>>> = LazyLock::new(|| {
    let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../../tests/data/real-umccr");
    let mut out = Vec::new();
    let mut stack = vec![std::path::PathBuf::from(root)];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let p = entry.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else if p.to_string_lossy().contains(".json") {
                let bytes = std::fs::read(&p).unwrap();
                out.push(if p.extension().is_some_and(|e| e == "gz") { gunzip(&bytes).unwrap() } else { bytes });
            }
        }
    }
    out.sort();
    assert!(out.len() >= 15, "real logs not found under {root}");
    out
});

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The checks every successful parse must pass. Returns the rows.
fn check_parsed(p: &ParsedFile, w: &Window) -> u64 {
    let mut rows = 0u64;
    let mut last_date = None;
    for part in &p.parts {
        let b = &part.batch;
        assert_eq!(b.num_columns(), COLUMNS.len() + 1);
        assert_eq!(part.keys.len(), b.num_rows(), "one dedup key per row");
        assert!(b.num_rows() > 0, "no empty parts");
        assert!(last_date < Some(part.date), "parts in date order, one per date");
        last_date = Some(part.date);
        let times = b.column_by_name("eventTime").unwrap().as_primitive::<TimestampMicrosecondType>();
        for i in 0..b.num_rows() {
            let t = Timestamp::from_microsecond(times.value(i)).unwrap();
            assert!(w.contains(t), "row {i} at {t} is outside the window");
            assert_eq!(
                t.to_zoned_datetime(jiff::tz::TimeZone::UTC).date(),
                part.date,
                "row in the part of its UTC date"
            );
        }
        rows += b.num_rows() as u64;
    }
    assert_eq!(
        p.events_read,
        rows + p.events_out_of_range + p.events_invalid,
        "events_read = rows + out_of_range + invalid"
    );
    assert!(p.invalid_samples.len() as u64 <= p.events_invalid);
    assert!(p.invalid_samples.len() <= 5);
    for (i, why) in &p.invalid_samples {
        assert!((*i as u64) < p.events_read && !why.is_empty());
    }
    rows
}

fn parse_and_check(text: &[u8]) -> Option<ParsedFile> {
    let w = window();
    match parse_log(text, &w) {
        Ok(p) => {
            check_parsed(&p, &w);
            Some(p)
        }
        Err(e) => {
            assert!(matches!(e.error_type, "InvalidJson" | "InvalidLogFile"), "{e}");
            assert!(!e.message.is_empty());
            None
        }
    }
}

/// Rebuilds row `i` of a part with the library's rebuild (the one `trailcopy export` uses).
fn rebuild(b: &arrow_array::RecordBatch, i: usize) -> Value {
    let r = Rebuilder::new(&b.schema()).unwrap();
    let mut line = String::new();
    r.write_row(b, i, &mut line);
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("rebuilt text is not JSON ({e}): {line}"))
}

// ----------------------------------------------------------------------------- strategies

fn arb_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        arb_time().prop_map(Value::String),
    ];
    leaf.prop_recursive(4, 48, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
            prop::collection::vec((arb_field_name(), inner), 0..6)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

/// Times inside, at the edges of, and outside the window; other spellings; garbage.
fn arb_time() -> impl Strategy<Value = String> {
    prop_oneof![
        (0i64..3 * 86400).prop_map(|s| {
            Timestamp::from_second(ts("2020-09-29T12:00:00Z").as_second() + s)
                .unwrap()
                .strftime("%Y-%m-%dT%H:%M:%SZ")
                .to_string()
        }),
        Just("2020-09-30T12:00:00Z".to_string()),
        Just("2020-10-01T11:59:59Z".to_string()),
        Just("2020-10-01T12:00:00Z".to_string()),
        Just("2020-10-01T00:00:00.250Z".to_string()),
        Just("2020-10-01T02:00:00+02:00".to_string()),
        Just("2020-10-01T00:00:00".to_string()),
        Just("2020-02-30T25:61:00Z".to_string()),
        Just("yesterday".to_string()),
        Just("".to_string()),
        Just("9999-12-31T23:59:59Z".to_string()),
        Just("-009999-01-01T00:00:00Z".to_string()),
        "[0-9T:.Z+-]{0,30}",
    ]
}

fn arb_field_name() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => prop::sample::select(COLUMNS.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>()),
        1 => Just(OTHER_FIELDS.to_string()),
        1 => "[a-zA-Z]{1,10}",
        1 => ".{0,6}",
    ]
}

/// An event: mostly the right types for known fields, sometimes anything.
/// An object for struct node `node`: some known fields (mostly of their type, sometimes any JSON),
/// sometimes unknown ones.
fn arb_struct(shape: &'static Shape, node: usize) -> BoxedStrategy<Value> {
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = shape.nodes[node]
        .children
        .iter()
        .map(|&c| {
            let name = shape.nodes[c].name.to_string();
            let good = match shape.nodes[c].kind {
                NodeKind::Str => "[a-zA-Z0-9:/\\\\\"é]{0,12}".prop_map(Value::String).boxed(),
                NodeKind::Json => arb_json().boxed(),
                NodeKind::Struct => arb_struct(shape, c),
            };
            let value = prop_oneof![8 => good, 1 => arb_json(), 1 => Just(Value::Null)];
            prop::option::weighted(0.5, value.prop_map(move |v| (name.clone(), v))).boxed()
        })
        .collect();
    (fields, prop::collection::vec(("[a-z]{1,6}New", arb_json()), 0..2))
        .prop_map(|(fields, extra)| Value::Object(fields.into_iter().flatten().chain(extra).collect()))
        .boxed()
}

fn arb_event() -> impl Strategy<Value = Value> {
    let good_value = |kind: Kind| -> BoxedStrategy<Value> {
        match kind {
            Kind::Str => ".{0,16}".prop_map(Value::String).boxed(),
            Kind::Bool => any::<bool>().prop_map(Value::Bool).boxed(),
            Kind::Json => arb_json().boxed(),
            Kind::Time => arb_time().prop_map(Value::String).boxed(),
            Kind::Struct(n) => arb_struct(n.shape(), 0),
        }
    };
    let fields: Vec<BoxedStrategy<Option<(String, Value)>>> = COLUMNS
        .iter()
        .map(|(name, kind)| {
            let name = name.to_string();
            let required = matches!(
                name.as_str(),
                "eventVersion" | "eventTime" | "eventSource" | "eventName" | "awsRegion" | "eventID" | "eventType"
            );
            let present = if required { 0.95 } else { 0.4 };
            let value = prop_oneof![9 => good_value(*kind), 1 => arb_json()];
            let value = if name == "eventVersion" {
                prop_oneof![
                    8 => prop::sample::select(vec!["1.0", "1.01", "1.02", "1.05", "1.08", "1.09", "1.10", "1.11"])
                        .prop_map(|v| Value::String(v.into())),
                    1 => ".{0,5}".prop_map(Value::String),
                    1 => arb_json(),
                ]
                .boxed()
            } else {
                value.boxed()
            };
            prop::option::weighted(present, value.prop_map(move |v| (name.clone(), v))).boxed()
        })
        .collect();
    (fields, prop::collection::vec(("[a-z]{1,8}Extra", arb_json()), 0..3)).prop_map(|(fields, extra)| {
        let mut m = Map::new();
        for (k, v) in fields.into_iter().flatten().chain(extra) {
            m.insert(k, v);
        }
        Value::Object(m)
    })
}

fn arb_record() -> impl Strategy<Value = Value> {
    prop_oneof![8 => arb_event(), 1 => arb_json()]
}

/// `{"Records":[...]}`, sometimes with other top-level fields or a wrong shape.
fn arb_log_doc() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => prop::collection::vec(arb_record(), 0..12).prop_map(|r| json!({ "Records": r })),
        1 => (prop::collection::vec(arb_record(), 0..4), arb_json())
            .prop_map(|(r, x)| json!({ "x": x, "Records": r, "y": 1 })),
        1 => arb_json().prop_map(|x| json!({ "Records": x })),
        1 => arb_json(),
    ]
}

#[derive(Debug, Clone)]
enum Mutation {
    Flip(usize, u8),
    Set(usize, u8),
    Cut(usize),
    Insert(usize, Vec<u8>),
    Delete(usize, usize),
    Splice(usize, usize, usize),
}

fn arb_mutations() -> impl Strategy<Value = Vec<Mutation>> {
    let interesting =
        prop::sample::select(vec![b'{', b'}', b'[', b']', b'"', b'\\', b',', b':', 0u8, 0xff, 0xc3, 0x80, b'0', b' ']);
    let m = prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(p, b)| Mutation::Flip(p, b)),
        (any::<usize>(), interesting).prop_map(|(p, b)| Mutation::Set(p, b)),
        any::<usize>().prop_map(Mutation::Cut),
        (
            any::<usize>(),
            prop_oneof![
                prop::collection::vec(any::<u8>(), 1..8),
                Just(b"\\u0000".to_vec()),
                Just(b"\\ud800".to_vec()),
                Just(b"\"eventTime\":\"x\",".to_vec()),
                Just(b"{}".to_vec()),
                Just(b"[".to_vec()),
            ]
        )
            .prop_map(|(p, b)| Mutation::Insert(p, b)),
        (any::<usize>(), 1usize..64).prop_map(|(p, n)| Mutation::Delete(p, n)),
        (any::<usize>(), any::<usize>(), 1usize..256).prop_map(|(a, b, n)| Mutation::Splice(a, b, n)),
    ];
    prop::collection::vec(m, 1..6)
}

fn mutate(mut data: Vec<u8>, muts: &[Mutation]) -> Vec<u8> {
    for m in muts {
        let n = data.len();
        let at = |p: usize| if n == 0 { 0 } else { p % (n + 1) };
        match m {
            Mutation::Flip(p, b) if n > 0 => data[p % n] ^= b | 1,
            Mutation::Set(p, b) if n > 0 => data[p % n] = *b,
            Mutation::Cut(p) => data.truncate(at(*p)),
            Mutation::Insert(p, bytes) => {
                let i = at(*p);
                data.splice(i..i, bytes.iter().copied());
            }
            Mutation::Delete(p, len) if n > 0 => {
                let i = p % n;
                data.drain(i..(i + len).min(n));
            }
            Mutation::Splice(a, b, len) if n > 0 => {
                // copy a slice of the file over another place (duplicated/misaligned structure)
                let (a, b) = (a % n, b % n);
                let chunk: Vec<u8> = data[a..(a + len).min(n)].to_vec();
                data.splice(b..b, chunk);
            }
            _ => {}
        }
    }
    data
}

fn arb_real_log() -> impl Strategy<Value = Vec<u8>> {
    (0..REAL_LOGS.len()).prop_map(|i| REAL_LOGS[i].clone())
}

// ----------------------------------------------------------------------------- log files

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn gunzip_any_bytes_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        let _ = gunzip(&data);
        // with a gzip header, the inflater itself is reached
        let mut with_header = vec![0x1f, 0x8b, 0x08, 0, 0, 0, 0, 0, 0, 0x03];
        with_header.extend_from_slice(&data);
        if let Err(e) = gunzip(&with_header) {
            prop_assert_eq!(e.error_type, "CorruptGzip");
        }
    }

    #[test]
    fn gunzip_round_trips_multi_member(a in prop::collection::vec(any::<u8>(), 0..2048),
                                       b in prop::collection::vec(any::<u8>(), 0..256)) {
        prop_assert_eq!(gunzip(&gzip(&a)).unwrap(), a.clone());
        let mut two = gzip(&a);
        two.extend(gzip(&b));
        prop_assert_eq!(gunzip(&two).unwrap(), [a, b].concat());
    }

    #[test]
    fn parse_log_any_bytes_never_panics(data in prop::collection::vec(any::<u8>(), 0..512)) {
        parse_and_check(&data);
        let mut doc = b"{\"Records\":[".to_vec();
        doc.extend_from_slice(&data);
        parse_and_check(&doc);
    }

    #[test]
    fn parse_log_any_json_document(doc in arb_log_doc()) {
        let text = serde_json::to_vec(&doc).unwrap();
        let parsed = parse_and_check(&text);
        if let Some(Value::Array(records)) = doc.get("Records") {
            let p = parsed.expect("a {\"Records\":[...]} document parses");
            prop_assert_eq!(p.events_read, records.len() as u64);
        }
    }

    #[test]
    fn parse_log_pretty_and_compact_agree(doc in arb_log_doc()) {
        let a = parse_log(&serde_json::to_vec(&doc).unwrap(), &window());
        let b = parse_log(&serde_json::to_vec_pretty(&doc).unwrap(), &window());
        match (a, b) {
            (Ok(a), Ok(b)) => {
                prop_assert_eq!((a.events_read, a.events_out_of_range, a.events_invalid),
                                (b.events_read, b.events_out_of_range, b.events_invalid));
                let ka: Vec<_> = a.parts.iter().flat_map(|p| p.keys.clone()).collect();
                let kb: Vec<_> = b.parts.iter().flat_map(|p| p.keys.clone()).collect();
                // keys of events with an eventID do not depend on whitespace
                prop_assert_eq!(ka.len(), kb.len());
            }
            (Err(a), Err(b)) => prop_assert_eq!(a.error_type, b.error_type),
            (a, b) => prop_assert!(false, "compact {:?} vs pretty {:?}", a.map(|_| ()), b.map(|_| ())),
        }
    }

    #[test]
    fn copied_events_rebuild_exactly(records in prop::collection::vec(arb_event(), 1..8)) {
        let text = serde_json::to_vec(&json!({ "Records": records })).unwrap();
        // Compare values read back by the same JSON reader (serde_json's float parsing is not
        // round-trip exact; the engine keeps the original number text, which is what matters).
        let records: Vec<Value> = serde_json::from_slice::<Value>(&text).unwrap()["Records"]
            .as_array().unwrap().clone();
        let p = parse_log(&text, &window()).unwrap();
        check_parsed(&p, &window());
        let rebuilt: Vec<Value> = p.parts.iter()
            .flat_map(|part| (0..part.batch.num_rows()).map(move |i| rebuild(&part.batch, i)))
            .collect();
        for ev in &rebuilt {
            prop_assert!(records.contains(ev), "rebuilt {} is none of the input events", ev);
        }
    }
}

proptest! {
    #![proptest_config(config(256))]

    #[test]
    fn parse_log_mutated_real_logs(log in arb_real_log(), muts in arb_mutations()) {
        let text = mutate(log, &muts);
        parse_and_check(&text);
    }

    #[test]
    fn gunzip_then_parse_mutated_gzip(log in arb_real_log(), muts in arb_mutations()) {
        let gz = mutate(gzip(&log), &muts);
        if let Ok(text) = gunzip(&gz) {
            parse_and_check(&text);
        }
    }

    #[test]
    fn real_logs_survive_reformatting(log in arb_real_log()) {
        // the same events, re-serialized: the same counts
        let w = window();
        let a = parse_log(&log, &w);
        if let Ok(v) = serde_json::from_slice::<Value>(&log) {
            let b = parse_log(&serde_json::to_vec_pretty(&v).unwrap(), &w);
            match (a, b) {
                (Ok(a), Ok(b)) => prop_assert_eq!(
                    (a.events_read, a.events_out_of_range, a.events_invalid),
                    (b.events_read, b.events_out_of_range, b.events_invalid)),
                (Err(a), Err(b)) => prop_assert_eq!(a.error_type, b.error_type),
                _ => prop_assert!(false, "formatting changed the outcome"),
            }
        }
    }
}

// ----------------------------------------------------------------------------- layout & locations

fn arb_key_text() -> impl Strategy<Value = String> {
    prop_oneof![
        ".{0,80}",
        "[0-9A-Za-z_/.T-]{0,80}",
        (
            "[a-z/]{0,12}",
            prop::sample::select(vec!["AWSLogs/", "AWSLogs", "/AWSLogs/", "AWSLogsX/", ""]),
            "(o-[a-z0-9]{1,10}/)?",
            "[0-9]{10,13}/",
            prop::sample::select(vec!["CloudTrail/", "CloudTrail-Digest/", "", "x/"]),
            "[a-z0-9-]{0,14}/?",
            "([0-9]{1,5}/){0,3}",
        )
            .prop_map(|(a, b, c, d, e, f, g)| format!("{a}{b}{c}{d}{e}{f}{g}")),
    ]
}

proptest! {
    #![proptest_config(config(512))]

    #[test]
    fn file_timestamp_never_panics_and_is_in_the_name(name in prop_oneof![
        ".{0,64}",
        "[0-9T_Z.a-z-]{0,40}",
        "[0-9]{0,10}T[0-9]{0,6}Z?[_.a-z]{0,8}",
    ]) {
        if let Some(t) = file_timestamp(&name) {
            let stamp = t.strftime("%Y%m%dT%H%M").to_string();
            prop_assert!(name.contains(&stamp), "{} -> {} not in the name", name, stamp);
            prop_assert_eq!(t.as_second() % 60, 0);
        }
    }

    #[test]
    fn file_timestamp_reads_trail_names(secs in 0i64..253_402_300_740, acct in "[0-9]{12}",
                                         region in "[a-z]{2}-[a-z]{4,9}-[1-3]", unique in "[A-Za-z0-9]{16}") {
        let t = Timestamp::from_second(secs - secs % 60).unwrap();
        let name = format!("{acct}_CloudTrail_{region}_{}_{unique}.json.gz", t.strftime("%Y%m%dT%H%MZ"));
        prop_assert_eq!(file_timestamp(&name), Some(t));
    }

    #[test]
    fn trail_root_never_panics(prefix in arb_key_text()) {
        let r = trail_root(&prefix);
        prop_assert!(r.awslogs.ends_with("AWSLogs/"), "{:?}", r);
        prop_assert!(r.narrowing.iter().all(|s| !s.is_empty() && !s.contains('/')));
        if !prefix.split('/').any(|s| s == "AWSLogs") {
            prop_assert!(r.narrowing.is_empty());
        }
    }

    #[test]
    fn day_of_prefix_never_panics(prefix in arb_key_text()) {
        if let Some(d) = day_of_prefix(&prefix) {
            let segs: Vec<&str> = prefix.trim_end_matches('/').rsplit('/').take(3).collect();
            prop_assert_eq!(segs[0].parse::<i8>().ok(), Some(d.day()));
            prop_assert_eq!(segs[1].parse::<i8>().ok(), Some(d.month()));
            prop_assert_eq!(segs[2].parse::<i16>().ok(), Some(d.year()));
        }
    }

    #[test]
    fn day_of_prefix_reads_day_folders(days in 0i32..2_900_000, key in arb_key_text()) {
        let d = jiff::civil::date(1, 1, 1).checked_add(jiff::Span::new().days(days)).unwrap();
        let p = format!("{key}/{:04}/{:02}/{:02}/", d.year(), d.month(), d.day());
        prop_assert_eq!(day_of_prefix(&p), Some(d));
    }

    #[test]
    fn location_parse_never_panics(text in prop_oneof![
        ".{0,40}",
        "s3://.{0,40}",
        "s3:/{0,3}[a-zA-Z0-9.-]{0,70}(/[a-zA-Z0-9 ._%+-]{0,10}){0,4}/?",
        "[a-z]{2,5}://.{0,20}",
    ]) {
        match Location::parse("source", &text) {
            Ok(Location::S3 { bucket, prefix }) => {
                prop_assert!(text.trim().starts_with("s3://"));
                prop_assert!((3..=63).contains(&bucket.len()), "{}", bucket);
                prop_assert!(bucket.bytes().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'.' || c == b'-'));
                prop_assert!(prefix.is_empty() || prefix.ends_with('/'));
                prop_assert!(!prefix.starts_with('/'));
                prop_assert!(!prefix.split('/').any(|s| s == ".." || s == "."));
                let again = Location::parse("source", &Location::S3 { bucket: bucket.clone(), prefix: prefix.clone() }.display());
                prop_assert_eq!(again.ok(), Some(Location::S3 { bucket, prefix }));
            }
            Ok(Location::Local { .. }) => {
                prop_assert!(!text.contains("://"), "{} parsed as a local folder", text);
            }
            Err(e) => {
                prop_assert!(matches!(e, trailcopy::CopyError::InvalidRequest { field: "source", .. }), "{}", e);
            }
        }
    }
}
