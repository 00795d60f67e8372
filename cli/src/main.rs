//! `trailcopy`: the local adapter over the trailcopy engine, and a client for copies run by
//! the deployed state machine.

mod sfn;

use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use trailcopy::record::CopyRecord;
use trailcopy::storage::Location;
use trailcopy::{AwsClients, CopyContext, CopyError, CopyRequest, CopyStatus, RestoreRequest, RunOptions, Statistics};

#[derive(Parser)]
#[command(name = "trailcopy", version, about = "Copy AWS CloudTrail trail events into a Parquet event data store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy trail events from SOURCE into the event data store STORE.
    Copy(CopyArgs),
    /// Start a copy on the deployed state machine (same flags as `copy`).
    Start {
        /// The stack's state machine (output StateMachineArn).
        #[arg(long)]
        state_machine: String,
        #[command(flatten)]
        copy: CopyArgs,
    },
    /// Resume a FAILED or STOPPED copy at its checkpoints (with --state-machine: a new execution).
    Retry {
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, default_value_t = default_concurrency())]
        concurrency: usize,
        #[arg(long)]
        state_machine: Option<String>,
    },
    /// Show a copy's status and statistics (with --state-machine: also its execution and Map Run).
    Status {
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        state_machine: Option<String>,
    },
    /// Stop a copy running on the state machine; it can be resumed with `retry`.
    Stop {
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long)]
        state_machine: String,
    },
    /// List the state machine's copies (executions).
    List {
        #[arg(long)]
        state_machine: String,
        #[arg(long)]
        json: bool,
    },
    /// List a copy's failure entries.
    Failures {
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Check SOURCE's log files against CloudTrail's signed digest files, without copying:
    /// every file a copy of the range would read, and every file the digests list.
    Verify(VerifyArgs),
    /// Rows per date and the top event names in a store (read back from its Parquet files).
    Summary {
        #[command(flatten)]
        store: StoreArgs,
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
}

#[derive(Args)]
struct StoreArgs {
    /// Event data store: a local folder or s3://bucket[/prefix].
    #[arg(long)]
    store: String,
    /// Print one JSON document on stdout.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
struct CopyArgs {
    /// Trail source: a local folder or s3://bucket[/prefix] (the folder above AWSLogs/, or inside it to narrow).
    #[arg(long)]
    source: String,
    #[command(flatten)]
    store: StoreArgs,
    /// Start of the range (inclusive): RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, requires = "end")]
    start: Option<String>,
    /// End of the range (exclusive): RFC 3339 or YYYY-MM-DD.
    #[arg(long, requires = "start")]
    end: Option<String>,
    /// A range ending now: 5m, 30m, 1h, 6h, or any duration (90m, 36h, 7d, PT90M).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    last: Option<String>,
    /// Events older than now minus this many days are not copied.
    #[arg(long)]
    retention_days: Option<u32>,
    /// Name the copy (default: time-based).
    #[arg(long)]
    copy_id: Option<String>,
    /// Archived objects: no (failure entries), bulk, standard or expedited restore.
    #[arg(long, default_value = "bulk")]
    restore: String,
    /// Days a restored copy stays readable.
    #[arg(long, default_value_t = 7)]
    restore_days: i32,
    /// Seconds between restore checks (default 60 locally, 900 on the state machine).
    #[arg(long)]
    restore_poll_seconds: Option<u64>,
    /// Give up on restores after this many seconds (the item fails; retry later).
    #[arg(long, default_value_t = 48 * 3600)]
    restore_max_wait_seconds: u64,
    /// Work items (day prefixes) copied at once.
    #[arg(long, default_value_t = default_concurrency())]
    concurrency: usize,
    /// Encrypt the store's new objects with this KMS key (SSE-KMS; s3:// stores only).
    #[arg(long)]
    store_kms_key: Option<String>,
    /// Copy even if an earlier copy from the same source into this store overlaps the range
    /// (its events would be stored twice).
    #[arg(long)]
    allow_overlap: bool,
}

#[derive(Args)]
struct VerifyArgs {
    /// Trail source: a local folder or s3://bucket[/prefix] (the folder above AWSLogs/, or inside it to narrow).
    #[arg(long)]
    source: String,
    /// Start of the range (inclusive): RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, requires = "end")]
    start: Option<String>,
    /// End of the range (exclusive): RFC 3339 or YYYY-MM-DD.
    #[arg(long, requires = "start")]
    end: Option<String>,
    /// A range ending now: 5m, 30m, 1h, 6h, or any duration (90m, 36h, 7d, PT90M).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    last: Option<String>,
    /// CloudTrail's public keys as `aws cloudtrail list-public-keys` prints them (one file per
    /// region, repeatable). Default for s3:// sources: CloudTrail ListPublicKeys.
    #[arg(long = "digest-public-keys")]
    digest_public_keys: Vec<String>,
    /// Also list every file not verified (not in a digest, or only in one that failed) as a failure.
    #[arg(long)]
    require_verified: bool,
    /// Print one JSON document on stdout (with every file's result).
    #[arg(long)]
    json: bool,
}

fn default_concurrency() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2).max(2)
}

fn flag(field: &str) -> &'static str {
    match field {
        "source" => "--source",
        "store" => "--store",
        "start" => "--start",
        "end" => "--end",
        "last" => "--last",
        "retentionDays" => "--retention-days",
        "copyId" => "--copy-id",
        "restore" => "--restore",
        "storeKmsKey" => "--store-kms-key",
        "stateMachine" => "--state-machine",
        "digestPublicKeys" => "--digest-public-keys",
        "restore.pollSeconds" => "--restore-poll-seconds (with --restore-max-wait-seconds)",
        _ => "the request",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("TRAILCOPY_LOG").unwrap_or_else(|_| "warn".into()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let aws = AwsClients::new();
    match run(cli.command, &aws).await {
        Ok(code) => code,
        Err(CopyError::InvalidRequest { field, reason }) => {
            eprintln!("error: {}: {reason}", flag(field));
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command, aws: &AwsClients) -> Result<ExitCode, CopyError> {
    match command {
        Command::Copy(a) => {
            let request = copy_request(&a, 60);
            let (opts, bar) = run_options(a.concurrency, a.store.json);
            let record = trailcopy::run_copy(aws, &request, &opts).await;
            bar.finish_and_clear();
            report(&record?, &a.store)
        }
        Command::Start { state_machine, copy } => {
            let mut request = copy_request(&copy, 900);
            // Checked here first: a bad flag fails now, not in the execution.
            trailcopy::plan::resolve_request(&request, jiff::Timestamp::now())?;
            trailcopy::plan::check_serverless(&request, false)?;
            let copy_id =
                request.copy_id.clone().unwrap_or_else(|| trailcopy::record::new_copy_id(jiff::Timestamp::now()));
            request.copy_id = Some(copy_id.clone());
            let input = serde_json::to_value(&request).map_err(|e| CopyError::State(e.to_string()))?;
            let input = strip_nulls(input);
            let client = sfn_client(aws).await;
            let arn = sfn::start(&client, &state_machine, &copy_id, &input).await?;
            if copy.store.json {
                print_json(&serde_json::json!({ "copyId": copy_id, "executionArn": arn }));
            } else {
                println!(
                    "started copy {copy_id}\n  execution {arn}\n  status: trailcopy status {copy_id} --store {} --state-machine {state_machine}",
                    copy.store.store
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { copy_id, store, state_machine: Some(sm), .. } => {
            let name = format!("{copy_id}-retry-{}", jiff::Timestamp::now().as_second());
            let input = serde_json::json!({ "copyId": copy_id, "store": store.store, "retry": true });
            let arn = sfn::start(&sfn_client(aws).await, &sm, &name, &input).await?;
            if store.json {
                print_json(&serde_json::json!({ "copyId": copy_id, "executionArn": arn }));
            } else {
                println!("retrying copy {copy_id}: execution {arn}");
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Stop { copy_id, store, state_machine } => {
            let client = sfn_client(aws).await;
            let running = sfn::executions(&client, &state_machine, Some(&copy_id)).await?;
            let Some(exec) = running.iter().find(|e| e.status().as_str() == "RUNNING") else {
                return Err(CopyError::State(format!("copy {copy_id} has no running execution")));
            };
            sfn::stop(&client, exec.execution_arn()).await?;
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let note =
                format!("stopped with `trailcopy stop`; resume with `trailcopy retry {copy_id} --state-machine ...`");
            let record = trailcopy::finalize_copy(&ctx, true, Some(note)).await?;
            report(&record, &store)
        }
        Command::List { state_machine, json } => {
            let list = sfn::executions(&sfn_client(aws).await, &state_machine, None).await?;
            let rows: Vec<serde_json::Value> = list
                .iter()
                .map(|e| {
                    serde_json::json!({
                        "name": e.name(), "status": e.status().as_str(), "executionArn": e.execution_arn(),
                        "startDate": e.start_date().to_string(), "stopDate": e.stop_date().map(|d| d.to_string()),
                    })
                })
                .collect();
            if json {
                print_json(&rows);
            } else {
                for r in &rows {
                    println!(
                        "{:<40} {:<10} {}",
                        r["name"].as_str().unwrap_or(""),
                        r["status"].as_str().unwrap_or(""),
                        r["startDate"].as_str().unwrap_or("")
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Status { copy_id, store, state_machine: Some(sm) } => {
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let record = trailcopy::current_record(&ctx).await?;
            let client = sfn_client(aws).await;
            let execs = sfn::executions(&client, &sm, Some(&copy_id)).await?;
            let execution = match execs.first() {
                Some(e) => Some(sfn::describe(&client, e.execution_arn()).await?),
                None => None,
            };
            if store.json {
                let mut v = serde_json::to_value(&record).map_err(|e| CopyError::State(e.to_string()))?;
                v["execution"] = execution.unwrap_or(serde_json::Value::Null);
                print_json(&v);
                return Ok(exit_code(record.status));
            }
            if let Some(e) = &execution {
                println!(
                    "execution {} {}",
                    e["status"].as_str().unwrap_or("?"),
                    e["executionArn"].as_str().unwrap_or("")
                );
                for m in e["mapRuns"].as_array().into_iter().flatten() {
                    println!(
                        "  map run {}: {} of {} items succeeded, {} failed, {} running",
                        m["status"], m["succeeded"], m["total"], m["failed"], m["running"]
                    );
                }
            }
            report(&record, &store)
        }
        Command::Status { copy_id, store, state_machine: None } => {
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let record = trailcopy::current_record(&ctx).await?;
            report(&record, &store)
        }
        Command::Retry { copy_id, store, concurrency, state_machine: None } => {
            let (opts, bar) = run_options(concurrency, store.json);
            let record = trailcopy::retry_copy(aws, &store.store, &copy_id, &opts).await;
            bar.finish_and_clear();
            report(&record?, &store)
        }
        Command::Failures { copy_id, store } => {
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let failures = trailcopy::read_failures(&ctx).await?;
            if store.json {
                print_json(&serde_json::json!({ "copyId": copy_id, "failures": failures }));
            } else if failures.is_empty() {
                println!("copy {copy_id}: no failure entries");
            } else {
                for f in &failures {
                    println!("{}  {}  {}\n    {}", f.last_updated_time, f.error_type, f.location, f.error_message);
                }
                println!("{} failure entries", failures.len());
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Verify(a) => verify(a, aws).await,
        Command::Summary { store, top } => {
            let location = Location::parse("store", &store.store)?;
            let s = location.open(aws).await?;
            let summary = trailcopy::summary::summarize_store(s.as_ref(), location.prefix(), top).await?;
            if store.json {
                print_json(&summary);
            } else {
                println!("{}: {} events in {} Parquet files", location.display(), summary.rows, summary.files);
                for (date, rows) in &summary.rows_by_date {
                    println!("  date={date}  {rows:>10} events");
                }
                println!("top event names:");
                for (name, n) in &summary.top_event_names {
                    println!("  {n:>10}  {name}");
                }
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

async fn verify(a: VerifyArgs, aws: &AwsClients) -> Result<ExitCode, CopyError> {
    use trailcopy::digest::{CloudTrailKeys, KeyFile, PublicKeySource};
    let source = Location::parse("source", &a.source)?;
    let window = trailcopy::range::resolve_window(
        a.start.as_deref(),
        a.end.as_deref(),
        a.last.as_deref(),
        trailcopy::range::DEFAULT_RETENTION_DAYS,
        jiff::Timestamp::now(),
    )?;
    let keys: Box<dyn PublicKeySource> = match (&source, a.digest_public_keys.is_empty()) {
        (_, false) => Box::new(KeyFile::read("digestPublicKeys", &a.digest_public_keys)?),
        (Location::S3 { .. }, true) => Box::new(CloudTrailKeys::new(aws.sdk_config().await.clone())),
        (Location::Local { .. }, true) => {
            return Err(CopyError::invalid(
                "digestPublicKeys",
                "a local folder needs CloudTrail's public keys: save `aws cloudtrail list-public-keys --start-time ... \
                 --end-time ... --region R` for each region and pass the files",
            ));
        }
    };
    // A local folder inside AWSLogs/ narrows the way an s3:// prefix does.
    let (root, prefix) = match &source {
        Location::Local { root } => match local_narrowing(root) {
            Some((above, prefix)) => (Location::Local { root: above }, prefix),
            None => (source.clone(), String::new()),
        },
        Location::S3 { .. } => (source.clone(), source.prefix().to_string()),
    };
    let store = root.open(aws).await?;
    let report =
        trailcopy::digest::verify_source(store.as_ref(), &prefix, &window, keys.as_ref(), a.require_verified).await?;
    let ok = report.failures.is_empty();
    if a.json {
        print_json(&report);
    } else {
        let s = &report.statistics;
        println!("verify {}: {}", source.display(), if ok { "OK" } else { "FAILED" });
        println!("  range      {} .. {}", report.start, report.end);
        println!(
            "  files      {} read: {} verified, {} in no digest, {} only in failed digests, {} altered or damaged",
            s.files_found, s.files_verified, s.files_not_in_digest, s.files_unverified, s.files_mismatched
        );
        println!("  missing    {} log files the digests list", s.log_files_missing);
        println!("  digests    {} verified, {} failed ({})", s.digests_verified, s.digests_failed, report.public_keys);
        println!("  keys       {}", report.key_fingerprints.join(", "));
        println!("  requests   {} LIST, {} GET", s.list_requests, s.get_requests);
        for f in &report.failures {
            println!("{}  {}\n    {}", f.error_type, f.location, f.error_message);
        }
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// `(the folder above AWSLogs/, the key prefix from AWSLogs/ on)` of a local folder inside a trail.
fn local_narrowing(root: &std::path::Path) -> Option<(std::path::PathBuf, String)> {
    let parts: Vec<std::path::Component> = root.components().collect();
    let i = parts.iter().rposition(|c| c.as_os_str() == "AWSLogs")?;
    let above: std::path::PathBuf = parts[..i].iter().collect();
    let rest: Vec<String> = parts[i..].iter().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    let above = if above.as_os_str().is_empty() { std::path::PathBuf::from(".") } else { above };
    Some((above, format!("{}/", rest.join("/"))))
}

fn copy_request(a: &CopyArgs, default_poll_seconds: u64) -> CopyRequest {
    CopyRequest {
        source: Some(a.source.clone()),
        store: Some(a.store.store.clone()),
        start: a.start.clone(),
        end: a.end.clone(),
        last: a.last.clone(),
        retention_days: a.retention_days,
        copy_id: a.copy_id.clone(),
        restore: Some(RestoreRequest {
            tier: Some(a.restore.clone()),
            days: Some(a.restore_days),
            poll_seconds: Some(a.restore_poll_seconds.unwrap_or(default_poll_seconds)),
            max_wait_seconds: Some(a.restore_max_wait_seconds),
        }),
        store_kms_key: a.store_kms_key.clone(),
        allow_overlap: a.allow_overlap,
    }
}

/// The execution input carries only what was given.
fn strip_nulls(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter().filter(|(_, v)| !v.is_null()).map(|(k, v)| (k, strip_nulls(v))).collect(),
        ),
        other => other,
    }
}

async fn sfn_client(aws: &AwsClients) -> aws_sdk_sfn::Client {
    aws_sdk_sfn::Client::new(aws.sdk_config().await)
}

fn exit_code(status: CopyStatus) -> ExitCode {
    match status {
        CopyStatus::Failed | CopyStatus::Stopped => ExitCode::from(1),
        _ => ExitCode::SUCCESS,
    }
}

fn run_options(concurrency: usize, json: bool) -> (RunOptions, ProgressBar) {
    let cancel = Arc::new(AtomicBool::new(false));
    {
        let cancel = cancel.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                eprintln!("\nstopping at the next file; the copy can be resumed with `trailcopy retry`");
                cancel.store(true, Ordering::Relaxed);
            }
        });
    }
    let bar = if json { ProgressBar::hidden() } else { ProgressBar::new(0) };
    bar.set_style(
        ProgressStyle::with_template("{spinner} [{elapsed_precise}] {bar:30} {pos}/{len} files  {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    let progress = {
        let bar = bar.clone();
        Arc::new(move |s: &Statistics| {
            bar.set_length(s.files_found.saturating_sub(s.files_skipped));
            bar.set_position(s.files_completed + s.failed_entries.min(s.files_found));
            bar.set_message(format!("{} events, {} prefixes done", s.events_completed, s.prefixes_completed));
        })
    };
    (RunOptions { concurrency, cancel, progress }, bar)
}

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => println!("{s}"),
        Err(e) => eprintln!("error: cannot print JSON: {e}"),
    }
}

fn report(record: &CopyRecord, store: &StoreArgs) -> Result<ExitCode, CopyError> {
    if store.json {
        print_json(record);
    } else {
        let s = &record.statistics;
        println!("copy {}: {}", record.copy_id, record.status.as_str());
        println!(
            "  range      {} .. {} (events before {} are past retention)",
            record.request.start, record.request.end, record.request.retention_cutoff
        );
        println!("  prefixes   {}/{} completed", s.prefixes_completed, s.prefixes_found);
        println!(
            "  files      {} found, {} skipped by name, {} copied, {} MB read",
            s.files_found,
            s.files_skipped,
            s.files_completed,
            s.bytes_read / 1_000_000
        );
        println!(
            "  events     {} copied, {} out of range, {} invalid, {} duplicate (of {} read)",
            s.events_completed, s.events_out_of_range, s.events_invalid, s.events_duplicate, s.events_read
        );
        if s.restores_started + s.restores_pending > 0 {
            println!(
                "  restores   {} started, {} pending, {} finished",
                s.restores_started, s.restores_pending, s.restores_finished
            );
        }
        println!("  failures   {} (trailcopy failures {} --store {})", s.failed_entries, record.copy_id, store.store);
        if let Some(m) = &record.message {
            println!("  note       {m}");
        }
    }
    Ok(exit_code(record.status))
}
