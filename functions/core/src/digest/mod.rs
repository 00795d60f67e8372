//! Verifying log files against CloudTrail's signed digest files (log file integrity validation).
//!
//! With validation on, CloudTrail delivers an hourly digest per trail, account and region that
//! lists each log file delivered in the hour with the SHA-256 of its inflated content, signs it
//! (SHA256withRSA, a key per region) and chains it to the previous digest. A copy that checks
//! every file it reads against an authentic digest proves its events are what CloudTrail
//! delivered. Sources: the user guide's digest file structure and custom validation pages
//! (cited in [`file`] and [`signature`]) and aws-cli's `validate-logs`
//! (awscli/customizations/cloudtrail/validation.py).
//!
//! - [`file`]: digest names, bodies, and the key mapping (a copy's keys keep the `AWSLogs/` part);
//! - [`signature`]: the string to sign and the RSA check (aws-lc-rs);
//! - [`keys`]: public keys from ListPublicKeys or from `list-public-keys` JSON;
//! - [`chain`]: one chain's signatures and links;
//! - [`load`]: reading the digests that cover some log files (bounded requests);
//! - [`index`]: per log file, the verdict;
//! - [`item`]: verifying a work item's files while it is copied;
//! - [`verify`]: checking a whole source without copying (`trailcopy verify`).

pub mod chain;
pub mod file;
pub mod index;
pub mod item;
pub mod keys;
pub mod load;
pub mod signature;
pub mod verify;

pub use index::{DigestIndex, Verdict};
pub use item::ItemDigests;
pub use keys::{CloudTrailKeys, KeyFile, PublicKeySource};
pub use load::{DigestScope, LoadedDigests, Requests, load_digests};
pub use verify::{VerifyReport, VerifyStatistics, verify_source};
