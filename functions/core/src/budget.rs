//! The fetch budget of one process: how many GETs are in flight, how many fetched bytes wait to
//! be written, and how many files are parsed at once, across every work item the process copies.
//! Reading CloudTrail logs is latency-bound (small files, one round trip each), so requests are
//! sized for round trips, not for cores; the byte budget keeps peak memory bounded whatever the
//! file sizes.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// GETs in flight by default, for the CLI and the copy Lambda alike: sized for 50–150 ms round
/// trips (a laptop or another Region to S3). By Little's law the window a parse rate needs is
/// rate × round trip: the handler path now parses ~1,500–1,700 small files/s on two cores, so at
/// 100 ms it needs ~170 in flight, which 128 (the Lambda's earlier default) no longer gave
/// (issue 13 round 7, benches/RESULTS.md). Memory does not grow with it: fetched files wait
/// compressed (the byte budget), only the next few are parsed. In the Region the function's CPU
/// sets the request rate, not the window (1,769 MB of memory is one vCPU:
/// https://docs.aws.amazon.com/lambda/latest/dg/configuration-memory.html), well under what S3
/// serves one partitioned prefix (5,500 GET/HEAD per second:
/// https://docs.aws.amazon.com/AmazonS3/latest/userguide/optimizing-performance.html).
pub const DEFAULT_MAX_REQUESTS: usize = 256;
/// Fetched (compressed) bytes held from the GET until the file's events are in the batch writer.
pub const DEFAULT_MAX_FETCH_BYTES: u64 = 64 << 20;
/// Environment variables read by the CLI (as flag defaults) and by the copy Lambda.
pub const MAX_REQUESTS_ENV: &str = "TRAILCOPY_MAX_REQUESTS";
pub const MAX_FETCH_MIB_ENV: &str = "TRAILCOPY_MAX_FETCH_MIB";

/// Shared by every item in a process: clones share the same permits.
#[derive(Clone, Debug)]
pub struct FetchBudget {
    requests: Arc<Semaphore>,
    bytes: Arc<Semaphore>,
    parsers: Arc<Semaphore>,
    max_requests: usize,
    max_bytes: u32,
    max_parsers: usize,
}

/// What one file holds while it is fetched, parsed and waits for the batch writer.
pub struct BytePermit(#[allow(dead_code)] OwnedSemaphorePermit);

impl FetchBudget {
    /// `max_requests` GETs in flight and `max_bytes` fetched bytes held (both at least 1); as
    /// many parsers at once as the machine has cores.
    pub fn new(max_requests: usize, max_bytes: u64) -> FetchBudget {
        let max_requests = max_requests.clamp(1, Semaphore::MAX_PERMITS);
        // Semaphore permits are acquired 32 bits at a time.
        let max_bytes = max_bytes.clamp(1, u32::MAX as u64) as u32;
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
        FetchBudget {
            requests: Arc::new(Semaphore::new(max_requests)),
            bytes: Arc::new(Semaphore::new(max_bytes as usize)),
            parsers: Arc::new(Semaphore::new(cores)),
            max_requests,
            max_bytes,
            max_parsers: cores,
        }
    }

    /// From TRAILCOPY_MAX_REQUESTS and TRAILCOPY_MAX_FETCH_MIB, else the defaults given.
    pub fn from_env(default_requests: usize, default_bytes: u64) -> FetchBudget {
        let num = |name: &str| std::env::var(name).ok().and_then(|v| v.trim().parse::<u64>().ok()).filter(|v| *v > 0);
        let requests = num(MAX_REQUESTS_ENV).map_or(default_requests, |v| v as usize);
        let bytes = num(MAX_FETCH_MIB_ENV).map_or(default_bytes, |mib| mib << 20);
        FetchBudget::new(requests, bytes)
    }

    /// The copy Lambda's budget: an eighth of the function's memory for fetched bytes (the rest
    /// holds the batch's Parquet buffers, the parsers and the runtime), unless the environment
    /// says otherwise. AWS_LAMBDA_FUNCTION_MEMORY_SIZE is the function's memory in MB:
    /// https://docs.aws.amazon.com/lambda/latest/dg/configuration-envvars.html#configuration-envvars-runtime
    pub fn for_lambda() -> FetchBudget {
        let memory_mb = std::env::var("AWS_LAMBDA_FUNCTION_MEMORY_SIZE").ok().and_then(|v| v.parse::<u64>().ok());
        let bytes = memory_mb.map_or(DEFAULT_MAX_FETCH_BYTES, |mb| ((mb << 20) / 8).clamp(8 << 20, 256 << 20));
        FetchBudget::from_env(DEFAULT_MAX_REQUESTS, bytes)
    }

    pub fn max_requests(&self) -> usize {
        self.max_requests
    }

    /// Files parsed at once (the cores).
    pub fn parsers(&self) -> usize {
        self.max_parsers
    }

    /// Holds `size` bytes of the budget (a file larger than the whole budget holds all of it,
    /// so it still goes, alone). Fair: files are served in the order they asked.
    pub async fn hold_bytes(&self, size: u64) -> BytePermit {
        let n = size.clamp(1, self.max_bytes as u64) as u32;
        // The semaphore is never closed.
        let permit = self.bytes.clone().acquire_many_owned(n).await.expect("fetch budget semaphore closed");
        BytePermit(permit)
    }

    /// [`hold_bytes`](Self::hold_bytes) if the budget has them now.
    pub fn try_hold_bytes(&self, size: u64) -> Option<BytePermit> {
        let n = size.clamp(1, self.max_bytes as u64) as u32;
        self.bytes.clone().try_acquire_many_owned(n).ok().map(BytePermit)
    }

    /// One request slot, held for the duration of a GET (or HEAD).
    pub async fn request(&self) -> OwnedSemaphorePermit {
        self.requests.clone().acquire_owned().await.expect("request budget semaphore closed")
    }

    /// One parser slot (a core), held while a file is inflated and scanned.
    pub async fn parser(&self) -> OwnedSemaphorePermit {
        self.parsers.clone().acquire_owned().await.expect("parser budget semaphore closed")
    }
}

/// Free heap memory glibc keeps before it gives it back to the system. Its default threshold
/// grows with the largest buffer freed (inflated log files, Parquet batches of tens of MB), so a
/// copy's peak RSS held ~50 MB of freed pages on the 1 GB benchmark trail (benches/RESULTS.md,
/// issue 13 round 3: 264–301 → 221–243 MiB, for ~6 % more CPU, all system). A fixed 1 MiB keeps the
/// peak near what is live.
///
/// Fixing the trim threshold also fixes glibc's mmap threshold at 128 KiB, so every column
/// chunk, page and inflate buffer above it was its own mmap, faulted in page by page and unmapped
/// when freed (~10 % of a one-core copy's CPU, round 8). Since a local store's batch output is
/// spooled to disk, a 4 MiB mmap threshold fits: one core 0.88× the CPU for 102 → 119 MiB, two
/// items at once 0.94× for 161 → 188 MiB (round 12). `MALLOC_TRIM_THRESHOLD_` and
/// `MALLOC_MMAP_THRESHOLD_` in the environment still win
/// (https://www.gnu.org/software/libc/manual/html_node/Memory-Allocation-Tunables.html).
pub fn return_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    {
        if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
            // SAFETY: mallopt only sets an allocator parameter; it is thread-safe in glibc.
            unsafe {
                libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 20);
            }
        }
        if std::env::var_os("MALLOC_MMAP_THRESHOLD_").is_none() {
            // SAFETY: as above.
            unsafe {
                libc::mallopt(libc::M_MMAP_THRESHOLD, 4 << 20);
            }
        }
    }
}

impl Default for FetchBudget {
    fn default() -> Self {
        FetchBudget::new(DEFAULT_MAX_REQUESTS, DEFAULT_MAX_FETCH_BYTES)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_file_larger_than_the_budget_goes_alone() {
        let b = FetchBudget::new(2, 100);
        let big = b.hold_bytes(1_000).await;
        assert_eq!(b.bytes.available_permits(), 0);
        drop(big);
        let _a = b.hold_bytes(60).await;
        let _c = b.hold_bytes(40).await;
        assert!(b.bytes.try_acquire().is_err(), "the budget is spent");
        let clone = b.clone();
        assert_eq!(clone.bytes.available_permits(), 0, "clones share the permits");
    }

    #[tokio::test]
    async fn requests_are_bounded() {
        let b = FetchBudget::new(0, 0);
        assert_eq!(b.max_requests(), 1, "at least one request");
        let held = b.request().await;
        assert!(b.requests.try_acquire().is_err());
        drop(held);
        assert!(b.requests.try_acquire().is_ok());
    }
}
