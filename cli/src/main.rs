//! `trailcopy`: the local adapter over the trailcopy engine, and a client for copies run by
//! the deployed state machine.

mod output;
mod progress;
mod sfn;

use std::fmt::Write as _;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use indicatif::{DecimalBytes, HumanCount};
use trailcopy::plan::retry_command;
use trailcopy::record::CopyRecord;
use trailcopy::storage::Location;
use trailcopy::{AwsClients, CopyContext, CopyError, CopyRequest, CopyStatus, RestoreRequest};

use crate::output::{print_err, print_out};

#[derive(Parser)]
#[command(name = "trailcopy", version, about = "Copy AWS CloudTrail trail events into a Parquet event data store")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Copy trail events from SOURCE into the event data store STORE.
    Copy {
        #[command(flatten)]
        copy: CopyArgs,
        #[command(flatten)]
        fetch: FetchArgs,
    },
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
        /// The copy to resume (its copyId).
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Work items copied at once (default: the number of cores, at least 2).
        #[arg(long, default_value_t = default_concurrency(), value_parser = concurrency_range())]
        concurrency: usize,
        #[command(flatten)]
        fetch: FetchArgs,
        /// Resume it on this state machine (output StateMachineArn) instead of locally.
        #[arg(long)]
        state_machine: Option<String>,
    },
    /// Show a copy's status and statistics (with --state-machine: also its execution and Map Run).
    Status {
        /// The copy to show (its copyId).
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// Also show the copy's latest execution on this state machine (output StateMachineArn).
        #[arg(long)]
        state_machine: Option<String>,
    },
    /// Stop a copy running on the state machine; it can be resumed with `retry`.
    Stop {
        /// The copy to stop (its copyId).
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
        /// The state machine running it (output StateMachineArn).
        #[arg(long)]
        state_machine: String,
    },
    /// List a store's copies (--store), or the state machine's executions (--state-machine),
    /// newest first.
    #[command(group(clap::ArgGroup::new("what").required(true).args(["store", "state_machine"])))]
    List {
        /// Event data store whose copies to list: a local folder or s3://bucket[/prefix].
        #[arg(long)]
        store: Option<String>,
        /// The stack's state machine (output StateMachineArn): list its executions and the copy
        /// each one ran.
        #[arg(long)]
        state_machine: Option<String>,
        /// Print one JSON document on stdout.
        #[arg(long)]
        json: bool,
        /// Show at most this many copies or executions.
        #[arg(long, default_value_t = 50)]
        max: usize,
    },
    /// List a copy's failure entries.
    Failures {
        /// The copy whose failure entries to list (its copyId).
        copy_id: String,
        #[command(flatten)]
        store: StoreArgs,
    },
    /// Write the stored events back as CloudTrail records, one JSON object per line on stdout.
    Export {
        /// Event data store: a local folder or s3://bucket[/prefix].
        #[arg(long)]
        store: String,
        /// Only events at or after this time: RFC 3339 or YYYY-MM-DD (UTC midnight).
        #[arg(long)]
        start: Option<String>,
        /// Only events before this time: RFC 3339 or YYYY-MM-DD.
        #[arg(long)]
        end: Option<String>,
    },
    /// Check SOURCE's log files against CloudTrail's signed digest files, without copying:
    /// every file a copy of the range would read, and every file the digests list.
    Verify(VerifyArgs),
    /// Rows per date and the top event names in a store (read back from its Parquet files).
    Summary {
        #[command(flatten)]
        store: StoreArgs,
        /// How many of the most frequent event names to list.
        #[arg(long, default_value_t = 10)]
        top: usize,
    },
}

#[derive(Args)]
struct StoreArgs {
    /// Event data store: a local folder or s3://bucket[/prefix].
    #[arg(long)]
    store: String,
    /// Print one JSON document on stdout (and nothing else there).
    #[arg(long)]
    json: bool,
}

/// The local copy's fetch budget, shared by the work items copied at once.
#[derive(Args)]
struct FetchArgs {
    /// GETs in flight at once (sized for 50-150 ms round trips; raise it for far-away buckets).
    #[arg(long, env = trailcopy::budget::MAX_REQUESTS_ENV, default_value_t = trailcopy::budget::DEFAULT_MAX_REQUESTS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..=65536))]
    max_requests: usize,
    /// MiB of fetched log files (compressed) held at once until their events are written.
    #[arg(long, env = trailcopy::budget::MAX_FETCH_MIB_ENV, default_value_t = trailcopy::budget::DEFAULT_MAX_FETCH_BYTES >> 20,
          value_parser = clap::value_parser!(u64).range(1..=4096))]
    max_fetch_mib: u64,
}

impl FetchArgs {
    fn budget(&self) -> trailcopy::FetchBudget {
        trailcopy::FetchBudget::new(self.max_requests, self.max_fetch_mib << 20)
    }
}

/// The time range of a copy or a check (`--start/--end`, or `--last`).
#[derive(Args)]
struct RangeArgs {
    /// Start of the range (inclusive): RFC 3339 or YYYY-MM-DD (UTC midnight).
    #[arg(long, requires = "end")]
    start: Option<String>,
    /// End of the range (exclusive): RFC 3339 or YYYY-MM-DD.
    #[arg(long, requires = "start")]
    end: Option<String>,
    /// A range ending now: 5m, 30m, 1h, 6h, or any duration in s, m, h, d (24 h) or w (7 d)
    /// units (90m, 36h, 7d, 2w), or ISO 8601 (PT90M, P1DT12H).
    #[arg(long, conflicts_with_all = ["start", "end"])]
    last: Option<String>,
}

#[derive(Args)]
struct CopyArgs {
    /// Trail source: a local folder or s3://bucket[/prefix] (above the trails' AWSLogs/, or inside one to narrow).
    #[arg(long)]
    source: String,
    #[command(flatten)]
    store: StoreArgs,
    #[command(flatten)]
    range: RangeArgs,
    /// Events older than now minus this many days are not copied [default: 2557, CloudTrail
    /// Lake's seven years; `start`: the stack's RetentionDays].
    #[arg(long)]
    retention_days: Option<u32>,
    /// Name the copy (default: its UTC start time and a random suffix).
    #[arg(long)]
    copy_id: Option<String>,
    /// Archived objects: no (failure entries), bulk, standard or expedited restore.
    #[arg(long, default_value = "bulk")]
    restore: String,
    /// Days a restored copy of an archived object stays readable.
    #[arg(long, default_value_t = 7)]
    restore_days: i32,
    /// Seconds between restore checks [default: 60 for `copy`, 900 for `start`].
    #[arg(long)]
    restore_poll_seconds: Option<u64>,
    /// Give up on restores after this many seconds (the item fails; retry later). Default: by tier
    /// and storage class, above S3's documented restore times (Deep Archive Bulk: 48 h, so 60 h).
    #[arg(long)]
    restore_max_wait_seconds: Option<u64>,
    /// Work items copied at once (default: the number of cores, at least 2); an item packs a
    /// date's day prefixes by bytes.
    #[arg(long, default_value_t = default_concurrency(), value_parser = concurrency_range())]
    concurrency: usize,
    /// Encrypt the store's new objects with this KMS key (SSE-KMS; s3:// stores only).
    #[arg(long)]
    store_kms_key: Option<String>,
    /// Copy even if an earlier copy from the same source into this store overlaps the range
    /// (its events would be stored twice).
    #[arg(long)]
    allow_overlap: bool,
    /// Copy from where the last completed copy of this source into this store is complete, up
    /// to now (instead of --start/--end or --last); events it already stored are not stored again.
    #[arg(long, conflicts_with_all = ["start", "end", "last"])]
    since_last: bool,
    /// How late log files may arrive after their events (CloudTrail: about 5 minutes on average,
    /// not guaranteed). A range ending closer than this to now is complete only up to now minus
    /// it; `--since-last` goes on from there. Same units as --last.
    #[arg(long, default_value = trailcopy::plan::DEFAULT_DELIVERY_ALLOWANCE)]
    delivery_allowance: String,
    /// Check every file read against CloudTrail's signed digest files (SHA-256 of its content,
    /// signature and chain of each digest); a file that fails is copied and listed.
    #[arg(long)]
    verify_digests: bool,
    /// Leave out every file not verified (in no digest, or only in one that failed its check):
    /// it is a failure entry and its events are not copied. Implies --verify-digests.
    #[arg(long)]
    require_verified: bool,
    #[command(flatten)]
    digests: DigestArgs,
}

/// How files are checked against CloudTrail's signed digests (`copy --verify-digests`, `verify`).
#[derive(Args)]
struct DigestArgs {
    /// CloudTrail's public keys as `aws cloudtrail list-public-keys` prints them (one file per
    /// region, repeatable). Default for s3:// sources: CloudTrail ListPublicKeys.
    #[arg(long = "digest-public-keys")]
    digest_public_keys: Vec<String>,
}

impl DigestArgs {
    /// The key files' documents, for the copy request (and the state machine's execution input).
    fn key_documents(&self) -> Result<Option<Vec<serde_json::Value>>, CopyError> {
        if self.digest_public_keys.is_empty() {
            return Ok(None);
        }
        let read = |path: &String| {
            let bytes = std::fs::read(path)
                .map_err(|e| CopyError::invalid("digestPublicKeys", format!("cannot read {path}: {e}")))?;
            serde_json::from_slice(&bytes)
                .map_err(|e| CopyError::invalid("digestPublicKeys", format!("{path}: not JSON: {e}")))
        };
        self.digest_public_keys.iter().map(read).collect::<Result<Vec<_>, _>>().map(Some)
    }
}

#[derive(Args)]
struct VerifyArgs {
    /// Trail source: a local folder or s3://bucket[/prefix] (above the trails' AWSLogs/, or inside one to narrow).
    #[arg(long)]
    source: String,
    #[command(flatten)]
    range: RangeArgs,
    #[command(flatten)]
    digests: DigestArgs,
    /// Also list every file read that is not verified (in no digest, or only in one that failed
    /// its check) as a failure entry, so the check fails (exit 1) unless every file is verified.
    #[arg(long)]
    require_verified: bool,
    /// Print one JSON document on stdout (with every file's result).
    #[arg(long)]
    json: bool,
}

fn concurrency_range() -> clap::builder::RangedU64ValueParser<usize> {
    clap::builder::RangedU64ValueParser::<usize>::new().range(1..=1024)
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
        "range" => "the range (--start/--end or --last)",
        "retentionDays" => "--retention-days",
        "copyId" => "--copy-id",
        "restore" => "--restore",
        "storeKmsKey" => "--store-kms-key",
        "stateMachine" => "--state-machine",
        "digestPublicKeys" => "--digest-public-keys",
        "restore.pollSeconds" => "--restore-poll-seconds (with --restore-max-wait-seconds)",
        "sinceLast" => "--since-last",
        "deliveryAllowance" => "--delivery-allowance",
        "concurrency" => "--concurrency",
        _ => "the request",
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    trailcopy::budget::return_freed_memory();
    // The SDK's own warnings (a missing config file, each credential provider that found
    // nothing) stay quiet unless TRAILCOPY_LOG asks: the one error line says what to fix.
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("TRAILCOPY_LOG").unwrap_or_else(|_| "trailcopy=warn".into()),
        )
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let aws = AwsClients::new();
    match run(cli.command, &aws).await {
        Ok(code) => code,
        Err(e) => error_exit(&e),
    }
}

/// One line for an error: the flag it concerns, or what went wrong and how to fix it.
fn error_exit(e: &CopyError) -> ExitCode {
    match e {
        CopyError::InvalidRequest { field, reason } => {
            print_err(&format!("error: {}: {reason}\n", flag(field)));
            ExitCode::from(2)
        }
        // The message names the copy and the store's copies.
        CopyError::NoSuchCopy { message, .. } => {
            print_err(&format!("error: {message}\n"));
            ExitCode::from(2)
        }
        e => {
            print_err(&format!("error: {e}\n"));
            ExitCode::from(1)
        }
    }
}

async fn run(command: Command, aws: &AwsClients) -> Result<ExitCode, CopyError> {
    match command {
        Command::Copy { copy: a, fetch } => {
            let mut request = copy_request(&a, 60)?;
            // Named here, so a copy that fails while planning can be pointed at afterwards.
            let copy_id =
                request.copy_id.get_or_insert_with(|| trailcopy::record::new_copy_id(jiff::Timestamp::now())).clone();
            let hint = retry_command(&copy_id, &a.store.store);
            let (mut opts, display) = progress::run_options(a.concurrency, fetch.budget(), a.store.json, hint);
            opts.probe = probe(aws, &a.store.store).await;
            let result = trailcopy::run_copy(aws, &request, &opts).await;
            display.finish();
            match result {
                Ok(record) => report(&record, &a.store),
                Err(e) => Ok(planning_failed(aws, &a.store.store, &copy_id, &e).await),
            }
        }
        Command::Start { state_machine, copy } => {
            let mut request = copy_request(&copy, 900)?;
            // Checked here first: a bad flag fails now, not in the execution (a local folder is
            // refused as such before anything looks for it).
            trailcopy::plan::check_serverless(&request, false)?;
            if !request.since_last {
                trailcopy::plan::resolve_request(&request, jiff::Timestamp::now())?;
            }
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
                print_out(&format!(
                    "started copy {copy_id}\n  execution {arn}\n  status: trailcopy status {copy_id} --store {} --state-machine {state_machine}\n",
                    copy.store.store
                ));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Retry { copy_id, store, state_machine: Some(sm), .. } => {
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let record = ctx.read_record().await?;
            if record.status == CopyStatus::Completed {
                return already_complete(&record, &store);
            }
            let name = trailcopy::serverless::retry_execution_name(&copy_id, jiff::Timestamp::now());
            let input = serde_json::json!({ "copyId": copy_id, "store": store.store, "retry": true });
            let arn = sfn::start(&sfn_client(aws).await, &sm, &name, &input).await?;
            if store.json {
                print_json(&serde_json::json!({ "copyId": copy_id, "executionArn": arn }));
            } else {
                print_out(&format!("retrying copy {copy_id}: execution {arn}\n"));
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
            let note = format!(
                "stopped with `trailcopy stop`; resume with `{} --state-machine {state_machine}`",
                retry_command(&copy_id, &ctx.store_location.display())
            );
            let record = trailcopy::finalize_copy(&ctx, true, Some(note)).await?;
            report(&record, &store)
        }
        Command::List { store: Some(store), json, max, .. } => list_copies(aws, &store, json, max).await,
        Command::List { state_machine: Some(state_machine), json, max, .. } => {
            let client = sfn_client(aws).await;
            let list = sfn::executions(&client, &state_machine, None).await?;
            let mut rows: Vec<serde_json::Value> = Vec::new();
            for e in list.iter().take(max) {
                rows.push(serde_json::json!({
                    "copyId": sfn::copy_id_of(&client, e).await,
                    "name": e.name(), "status": e.status().as_str(), "executionArn": e.execution_arn(),
                    "startDate": e.start_date().to_string(), "stopDate": e.stop_date().map(|d| d.to_string()),
                }));
            }
            if json {
                print_json(&rows);
            } else {
                let mut text = String::new();
                for r in &rows {
                    let _ = writeln!(
                        text,
                        "{:<40} {:<10} {:<28} {}",
                        r["copyId"].as_str().unwrap_or("?"),
                        r["status"].as_str().unwrap_or(""),
                        r["startDate"].as_str().unwrap_or(""),
                        r["name"].as_str().unwrap_or("")
                    );
                }
                print_out(&text);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::List { .. } => Err(CopyError::invalid("store", "give --store or --state-machine")),
        Command::Status { copy_id, store, state_machine: Some(sm) } => {
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let record = trailcopy::current_record(&ctx).await?;
            let client = sfn_client(aws).await;
            // The record names the copy's executions (a scheduled run's name is not its copy id).
            let latest = match record.executions.last() {
                Some(arn) => Some(arn.clone()),
                None => {
                    sfn::executions(&client, &sm, Some(&copy_id)).await?.first().map(|e| e.execution_arn().to_string())
                }
            };
            let execution = match latest {
                Some(arn) => Some(sfn::describe(&client, &arn).await?),
                None => None,
            };
            let probe = probe(aws, &store.store).await;
            let gone = not_running(&ctx, &record, probe.as_ref()).await?;
            if store.json {
                let mut v = serde_json::to_value(&record).map_err(|e| CopyError::State(e.to_string()))?;
                v["execution"] = execution.unwrap_or(serde_json::Value::Null);
                if let Some(why) = &gone {
                    v["running"] = serde_json::Value::Bool(false);
                    v["notRunning"] = serde_json::Value::String(why.clone());
                }
                print_json(&v);
                return Ok(if gone.is_some() { ExitCode::from(1) } else { exit_code(record.status) });
            }
            if let Some(e) = &execution {
                let mut text = format!(
                    "execution {} {}\n",
                    e["status"].as_str().unwrap_or("?"),
                    e["executionArn"].as_str().unwrap_or("")
                );
                for m in e["mapRuns"].as_array().into_iter().flatten() {
                    let _ = writeln!(
                        text,
                        "  map run {}: {} of {} items succeeded, {} failed, {} running",
                        m["status"], m["succeeded"], m["total"], m["failed"], m["running"]
                    );
                }
                print_out(&text);
            }
            match gone {
                Some(why) => report_not_running(&record, &store, &why),
                None => report(&record, &store),
            }
        }
        Command::Status { copy_id, store, state_machine: None } => {
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let record = trailcopy::current_record(&ctx).await?;
            let probe = probe(aws, &store.store).await;
            match not_running(&ctx, &record, probe.as_ref()).await? {
                Some(why) => report_not_running(&record, &store, &why),
                None => report(&record, &store),
            }
        }
        Command::Retry { copy_id, store, concurrency, fetch, state_machine: None } => {
            let hint = retry_command(&copy_id, &store.store);
            let (mut opts, display) = progress::run_options(concurrency, fetch.budget(), store.json, hint);
            opts.probe = probe(aws, &store.store).await;
            let before = CopyContext::open(aws, &store.store, &copy_id).await?.read_record().await?;
            if before.status == CopyStatus::Completed {
                display.finish();
                return already_complete(&before, &store);
            }
            let record = trailcopy::retry_copy(aws, &store.store, &copy_id, &opts).await;
            display.finish();
            let record = record?;
            if !store.json
                && let Some(a) = record.attempts.last().filter(|a| a.files_reread > 0)
            {
                let still = a.files_reread - a.files_fixed;
                print_out(&format!(
                    "re-read {}: {} copied{}\n",
                    counted(a.files_reread, "failed file", "failed files"),
                    counted(a.events_copied, "event", "events"),
                    if still > 0 { format!(", {still} still failing") } else { String::new() }
                ));
            }
            report(&record, &store)
        }
        Command::Failures { copy_id, store } => {
            let ctx = CopyContext::open(aws, &store.store, &copy_id).await?;
            let (failures, skipped) = trailcopy::finalize::read_failures_and_skipped(&ctx).await?;
            if store.json {
                print_json(&serde_json::json!({ "copyId": copy_id, "failures": failures, "skipped": skipped }));
                return Ok(ExitCode::SUCCESS);
            }
            let mut text = String::new();
            if failures.is_empty() {
                let _ = writeln!(text, "copy {copy_id}: no failure entries");
            } else {
                for f in &failures {
                    let _ = writeln!(
                        text,
                        "{}  {}  {}\n    {}",
                        f.last_updated_time, f.error_type, f.location, f.error_message
                    );
                }
                let _ = writeln!(text, "{}", counted(failures.len() as u64, "failure entry", "failure entries"));
            }
            for f in &skipped {
                let _ = writeln!(text, "SKIPPED  {}  {}\n    {}", f.error_type, f.location, f.error_message);
            }
            if !skipped.is_empty() {
                let _ = writeln!(
                    text,
                    "{} skipped by name (not CloudTrail log files; not failures)",
                    counted(skipped.len() as u64, "file", "files")
                );
            }
            print_out(&text);
            Ok(ExitCode::SUCCESS)
        }
        Command::Export { store, start, end } => {
            let start = start.map(|s| trailcopy::range::parse_instant("start", &s)).transpose()?;
            let end = end.map(|s| trailcopy::range::parse_instant("end", &s)).transpose()?;
            if let (Some(s), Some(e)) = (start, end)
                && e <= s
            {
                return Err(CopyError::invalid("end", format!("{e} is at or before --start {s}: nothing to export")));
            }
            let (location, s) = trailcopy::catalog::open_existing(aws, &store).await?;
            let mut out = std::io::BufWriter::with_capacity(1 << 16, std::io::stdout().lock());
            match trailcopy::export::export_events(s.as_ref(), location.prefix(), start, end, &mut out).await {
                Ok(stats) => {
                    for (location, why) in &stats.failed_files {
                        eprintln!("error: {location}: not exported: {why}");
                    }
                    Ok(if stats.failed_files.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(1) })
                }
                // `trailcopy export ... | head`: the reader has what it wanted.
                Err(e) if e.is_closed_pipe() => Ok(ExitCode::SUCCESS),
                Err(trailcopy::export::ExportError::Store(e)) => Err(e),
                Err(e) => {
                    eprintln!("error: {e}");
                    Ok(ExitCode::from(1))
                }
            }
        }
        Command::Verify(a) => verify(a, aws).await,
        Command::Summary { store, top } => {
            let (location, s) = trailcopy::catalog::open_existing(aws, &store.store).await?;
            let summary = trailcopy::summary::summarize_store(s.as_ref(), location.prefix(), top).await?;
            if store.json {
                print_json(&summary);
            } else {
                let mut text = format!(
                    "{}: {} in {}\n",
                    location.display(),
                    counted(summary.rows, "event", "events"),
                    counted(summary.files, "Parquet file", "Parquet files")
                );
                for (date, rows) in &summary.rows_by_date {
                    let _ = writeln!(text, "  date={date}  {:>10} events", HumanCount(*rows).to_string());
                }
                text.push_str("top event names:\n");
                for (name, n) in &summary.top_event_names {
                    let _ = writeln!(text, "  {:>10}  {name}", HumanCount(*n).to_string());
                }
                print_out(&text);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `list --store`: the store's copies, newest first (CloudTrail Lake's ListImports).
async fn list_copies(aws: &AwsClients, store: &str, json: bool, max: usize) -> Result<ExitCode, CopyError> {
    let (location, s) = trailcopy::catalog::open_to_read(aws, store).await?;
    let copies = trailcopy::catalog::list_copies(s.as_ref(), location.prefix()).await?;
    let shown = &copies[..copies.len().min(max)];
    if json {
        print_json(&serde_json::json!({ "store": location.display(), "copies": shown }));
        return Ok(ExitCode::SUCCESS);
    }
    if shown.is_empty() {
        print_out(&format!("no copies in {}\n", location.display()));
        return Ok(ExitCode::SUCCESS);
    }
    let mut text = format!(
        "{:<28} {:<11} {:>12}  {:<20}  {:<41}  {}\n",
        "COPY ID", "STATUS", "EVENTS", "CREATED", "RANGE", "SOURCE"
    );
    for c in shown {
        let _ = writeln!(
            text,
            "{:<28} {:<11} {:>12}  {:<20}  {:<41}  {}",
            c.copy_id,
            c.status,
            HumanCount(c.events_copied).to_string(),
            c.created_time.to_string(),
            format!("{} .. {}", c.start, c.end),
            c.source
        );
    }
    if copies.len() > shown.len() {
        let _ = writeln!(text, "({} more: --max)", copies.len() - shown.len());
    }
    print_out(&text);
    Ok(ExitCode::SUCCESS)
}

/// A copy that failed before it ran: the error, and (if planning got as far as writing the
/// record) how to resume it once the cause is fixed.
async fn planning_failed(aws: &AwsClients, store: &str, copy_id: &str, e: &CopyError) -> ExitCode {
    let code = error_exit(e);
    if matches!(e, CopyError::InvalidRequest { .. } | CopyError::NoSuchCopy { .. }) {
        return code;
    }
    if let Ok(ctx) = CopyContext::open(aws, store, copy_id).await
        && let Ok(record) = ctx.read_record().await
        && record.status == CopyStatus::Failed
    {
        print_err(&format!(
            "copy {copy_id} is recorded FAILED; once that is fixed, `{}` resumes it\n",
            retry_command(copy_id, &record.request.store)
        ));
    }
    code
}

/// What tells whether a state machine execution still runs: only an S3 store can be shared with
/// the stack (local copies never touch AWS configuration).
async fn probe(aws: &AwsClients, store: &str) -> std::sync::Arc<dyn trailcopy::claims::ExecutionProbe> {
    match Location::parse("store", store) {
        Ok(Location::S3 { .. }) => std::sync::Arc::new(trailcopy::claims::SfnProbe::new(aws.sdk_config().await)),
        _ => std::sync::Arc::new(trailcopy::claims::NoProbe),
    }
}

/// Why an unfinished copy is not running (its holder died, or nothing holds it); `None` otherwise.
async fn not_running(
    ctx: &CopyContext,
    record: &CopyRecord,
    probe: &dyn trailcopy::claims::ExecutionProbe,
) -> Result<Option<String>, CopyError> {
    if !matches!(record.status, CopyStatus::InProgress | CopyStatus::Initializing) {
        return Ok(None);
    }
    trailcopy::claims::not_running(ctx.store.as_ref(), ctx.store_location.prefix(), &ctx.copy_id, probe).await
}

/// `status` of a copy whose run ended without finishing it: the record, what happened, the
/// command that resumes it; exit 1.
fn report_not_running(record: &CopyRecord, store: &StoreArgs, why: &str) -> Result<ExitCode, CopyError> {
    let resume = retry_command(&record.copy_id, &record.request.store);
    if store.json {
        let mut v = serde_json::to_value(record).map_err(|e| CopyError::State(e.to_string()))?;
        v["running"] = serde_json::Value::Bool(false);
        v["notRunning"] = serde_json::Value::String(format!("{why}; resume with `{resume}`"));
        print_json(&v);
    } else {
        report(record, store)?;
        print_out(&format!("  note       not running: {why}; resume with `{resume}`\n"));
    }
    Ok(ExitCode::from(1))
}

/// `retry` of a COMPLETED copy: nothing to do, and nothing is changed.
fn already_complete(record: &CopyRecord, store: &StoreArgs) -> Result<ExitCode, CopyError> {
    if !store.json {
        print_out(&format!("copy {} is already COMPLETED: nothing to retry, nothing changed\n", record.copy_id));
    }
    report(record, store)
}

/// `1 event`, `1,762 events`.
fn counted(n: u64, one: &str, many: &str) -> String {
    format!("{} {}", HumanCount(n), if n == 1 { one } else { many })
}

async fn verify(a: VerifyArgs, aws: &AwsClients) -> Result<ExitCode, CopyError> {
    use trailcopy::digest::{CloudTrailKeys, KeyFile, PublicKeySource};
    let source = Location::parse_source(&a.source)?;
    let window = trailcopy::range::resolve_window(
        a.range.start.as_deref(),
        a.range.end.as_deref(),
        a.range.last.as_deref(),
        trailcopy::range::DEFAULT_RETENTION_DAYS,
        jiff::Timestamp::now(),
    )?;
    let keys: Box<dyn PublicKeySource> = match (&source, a.digests.digest_public_keys.is_empty()) {
        (_, false) => Box::new(KeyFile::read("digestPublicKeys", &a.digests.digest_public_keys)?),
        (Location::S3 { .. }, true) => Box::new(CloudTrailKeys::new(aws.sdk_config().await.clone())),
        (Location::Local { .. }, true) => {
            return Err(CopyError::invalid(
                "digestPublicKeys",
                "a local folder needs CloudTrail's public keys: save `aws cloudtrail list-public-keys --start-time ... \
                 --end-time ... --region R` for each region and pass the files",
            ));
        }
    };
    // A local folder inside AWSLogs/ narrows the way an s3:// prefix does (Location::parse_source).
    source.check_local_source()?;
    let prefix = source.prefix().to_string();
    let store = source.open(aws).await?;
    let report =
        trailcopy::digest::verify_source(store.as_ref(), &prefix, &window, keys.as_ref(), a.require_verified).await?;
    let ok = report.failures.is_empty();
    if a.json {
        print_json(&report);
    } else {
        let s = &report.statistics;
        let mut t = String::new();
        let _ = writeln!(t, "verify {}: {}", source.display(), if ok { "OK" } else { "FAILED" });
        let _ = writeln!(t, "  range      {} .. {}", report.start, report.end);
        let _ = writeln!(
            t,
            "  files      {} read: {} verified, {} in no digest, {} only in failed digests, {} altered or damaged",
            s.files_found, s.files_verified, s.files_not_in_digest, s.files_unverified, s.files_mismatched
        );
        let _ = writeln!(t, "  missing    {} log files the digests list", s.log_files_missing);
        let _ = writeln!(
            t,
            "  digests    {} verified, {} failed ({})",
            s.digests_verified, s.digests_failed, report.public_keys
        );
        let _ = writeln!(t, "  keys       {}", report.key_fingerprints.join(", "));
        let _ = writeln!(t, "  requests   {} LIST, {} GET", s.list_requests, s.get_requests);
        for f in &report.failures {
            let _ = writeln!(t, "{}  {}\n    {}", f.error_type, f.location, f.error_message);
        }
        print_out(&t);
    }
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn copy_request(a: &CopyArgs, default_poll_seconds: u64) -> Result<CopyRequest, CopyError> {
    Ok(CopyRequest {
        source: Some(a.source.clone()),
        store: Some(a.store.store.clone()),
        start: a.range.start.clone(),
        end: a.range.end.clone(),
        last: a.range.last.clone(),
        retention_days: a.retention_days,
        copy_id: a.copy_id.clone(),
        restore: Some(RestoreRequest {
            tier: Some(a.restore.clone()),
            days: Some(a.restore_days),
            poll_seconds: Some(a.restore_poll_seconds.unwrap_or(default_poll_seconds)),
            max_wait_seconds: a.restore_max_wait_seconds,
        }),
        store_kms_key: a.store_kms_key.clone(),
        allow_overlap: a.allow_overlap,
        verify_digests: a.verify_digests,
        require_verified: a.require_verified,
        digest_public_keys: a.digests.key_documents()?,
        since_last: a.since_last,
        delivery_allowance: Some(a.delivery_allowance.clone()),
    })
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

fn print_json<T: serde::Serialize>(value: &T) {
    match serde_json::to_string_pretty(value) {
        Ok(s) => print_out(&format!("{s}\n")),
        Err(e) => print_err(&format!("error: cannot print JSON: {e}\n")),
    }
}

fn report(record: &CopyRecord, store: &StoreArgs) -> Result<ExitCode, CopyError> {
    if store.json {
        print_json(record);
        return Ok(exit_code(record.status));
    }
    let s = &record.statistics;
    let r = &record.request;
    let n = |v: u64| HumanCount(v).to_string();
    let mut t = String::new();
    let _ = writeln!(t, "copy {}: {}", record.copy_id, record.status.as_str());
    let asked = match r.requested_end {
        Some(e) => format!("; asked until {e}, clipped to now"),
        None => String::new(),
    };
    let _ = writeln!(
        t,
        "  range      {} .. {} (events before {} are past retention{asked})",
        r.start, r.end, r.retention_cutoff
    );
    if let Some(c) = r.complete_through.filter(|c| *c < r.end) {
        let _ = writeln!(
            t,
            "  complete   through {c}: later log files may still arrive (`--since-last` goes on from there)"
        );
    }
    let _ = writeln!(t, "  source     {}", r.source);
    let _ = writeln!(t, "  store      {}", r.store);
    let _ = writeln!(
        t,
        "  prefixes   {}/{} completed ({}/{} work items)",
        n(s.prefixes_completed),
        n(s.prefixes_found),
        n(s.work_items_completed),
        n(s.work_items_found)
    );
    let _ = writeln!(
        t,
        "  files      {} found, {} skipped by name, {} copied, {} failed; {} read",
        n(s.files_found),
        n(s.files_skipped),
        n(s.files_completed),
        n(s.files_failed),
        DecimalBytes(s.bytes_read)
    );
    let _ = writeln!(
        t,
        "  events     {} copied, {} out of range, {} invalid, {} duplicate{} (of {} read)",
        n(s.events_completed),
        n(s.events_out_of_range),
        n(s.events_invalid),
        n(s.events_duplicate),
        if s.events_unverified > 0 {
            format!(", {} in files not verified", n(s.events_unverified))
        } else {
            String::new()
        },
        n(s.events_read)
    );
    if s.files_not_log_files > 0 {
        let _ = writeln!(
            t,
            "  skipped    {} not named like CloudTrail log files (trailcopy failures {} --store {})",
            counted(s.files_not_log_files, "file", "files"),
            record.copy_id,
            r.store
        );
    }
    if s.restores_started + s.restores_pending > 0 {
        let _ = writeln!(
            t,
            "  restores   {} started, {} pending, {} finished",
            n(s.restores_started),
            n(s.restores_pending),
            n(s.restores_finished)
        );
    }
    if let Some(v) = &record.verification {
        let _ = writeln!(
            t,
            "  digests    {}: {} files verified, {} in no digest, {} only in failed digests, {} altered; {} \
             missing; {} digests verified, {} failed{}",
            if v.verified { "VERIFIED" } else { "NOT VERIFIED" },
            n(s.files_verified),
            n(s.files_not_in_digest),
            n(s.files_unverified),
            n(s.files_mismatched),
            n(s.log_files_missing),
            n(s.digests_verified),
            n(s.digests_failed),
            if v.require_verified { format!("; {} files not copied", n(s.files_rejected)) } else { String::new() },
        );
        let _ = writeln!(t, "  keys       {} ({})", v.key_fingerprints.join(", "), v.public_keys);
    }
    if s.failed_entries == 0 {
        t.push_str("  failures   none\n");
    } else {
        let _ = writeln!(
            t,
            "  failures   {} (trailcopy failures {} --store {})",
            n(s.failed_entries),
            record.copy_id,
            r.store
        );
    }
    if let Some(m) = &record.message {
        let _ = writeln!(t, "  note       {m}");
    }
    print_out(&t);
    Ok(exit_code(record.status))
}
