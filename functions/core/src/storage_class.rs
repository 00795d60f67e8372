//! Which objects can be read now, which need a restore first, and which cannot be read.

/// What to do with an object before reading it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readability {
    Readable,
    /// Archived: RestoreObject first. `with_days` is false for Intelligent-Tiering archive tiers,
    /// whose restore request must not carry Days.
    NeedsRestore {
        with_days: bool,
    },
    /// A restore was requested and is still running.
    Restoring,
    /// Cannot be read by trailcopy (Outposts, unknown classes); the string names the class.
    Unreadable(String),
}

/// Decides from the storage class, Intelligent-Tiering archive status and `x-amz-restore` header.
pub fn classify(storage_class: Option<&str>, archive_status: Option<&str>, restore: Option<&str>) -> Readability {
    if let Some(r) = restore {
        if r.contains("ongoing-request=\"true\"") {
            return Readability::Restoring;
        }
        if r.contains("ongoing-request=\"false\"") {
            return Readability::Readable;
        }
    }
    match storage_class.unwrap_or("STANDARD") {
        "STANDARD" | "STANDARD_IA" | "ONEZONE_IA" | "REDUCED_REDUNDANCY" | "GLACIER_IR" | "EXPRESS_ONEZONE" => {
            Readability::Readable
        }
        "INTELLIGENT_TIERING" => match archive_status {
            Some("ARCHIVE_ACCESS") | Some("DEEP_ARCHIVE_ACCESS") => Readability::NeedsRestore { with_days: false },
            _ => Readability::Readable,
        },
        "GLACIER" | "DEEP_ARCHIVE" => Readability::NeedsRestore { with_days: true },
        other => Readability::Unreadable(other.to_string()),
    }
}

/// Whether a listing alone cannot tell (Intelligent-Tiering hides its archive tiers there).
pub fn needs_head(storage_class: Option<&str>) -> bool {
    matches!(storage_class, Some("INTELLIGENT_TIERING" | "GLACIER" | "DEEP_ARCHIVE"))
}

/// Checks a restore tier against a storage class; Deep Archive has no Expedited tier.
pub fn check_tier(tier: &str, storage_class: Option<&str>) -> Result<(), String> {
    match (tier, storage_class) {
        ("Expedited", Some("DEEP_ARCHIVE")) => {
            Err("DEEP_ARCHIVE objects cannot be restored with the Expedited tier; use Standard or Bulk".into())
        }
        ("Bulk" | "Standard" | "Expedited", _) => Ok(()),
        (other, _) => Err(format!("unknown restore tier `{other}`: use Bulk, Standard or Expedited")),
    }
}

/// How long a restore can take, by S3's documented worst case for the tier and class
/// (https://docs.aws.amazon.com/AmazonS3/latest/userguide/restoring-objects-retrieval-options.html):
/// Glacier Flexible Retrieval Expedited 1-5 min, Standard 3-5 h, Bulk 5-12 h; Deep Archive
/// Standard within 12 h, Bulk within 48 h; Intelligent-Tiering Archive Access 3-5 h and Deep
/// Archive Access within 12 h (restored without a tier: Standard). An object whose restore someone
/// else started gets its class's slowest tier.
pub fn restore_seconds(tier: &str, storage_class: Option<&str>, archive_status: Option<&str>) -> u64 {
    const H: u64 = 3600;
    match (storage_class, archive_status, tier) {
        (Some("INTELLIGENT_TIERING"), Some("DEEP_ARCHIVE_ACCESS"), _) => 12 * H,
        (Some("INTELLIGENT_TIERING"), _, _) => 5 * H,
        (Some("DEEP_ARCHIVE"), _, "Standard") => 12 * H,
        (Some("DEEP_ARCHIVE"), _, _) => 48 * H,
        (Some("GLACIER"), _, "Expedited") => 5 * 60,
        (Some("GLACIER"), _, "Standard") => 5 * H,
        (Some("GLACIER"), _, _) => 12 * H,
        _ => 48 * H,
    }
}

/// The default maximum wait for restores of one class and tier: its documented worst case plus a
/// quarter (S3 states "typically within"), at least an hour.
pub fn default_max_wait(tier: &str, storage_class: Option<&str>, archive_status: Option<&str>) -> u64 {
    (restore_seconds(tier, storage_class, archive_status) * 5 / 4).max(3600)
}

/// The default maximum wait of a tier whatever the class (Bulk: Deep Archive's 48 h plus a quarter).
pub fn worst_max_wait(tier: &str) -> u64 {
    [(Some("GLACIER"), None), (Some("DEEP_ARCHIVE"), None), (Some("INTELLIGENT_TIERING"), Some("DEEP_ARCHIVE_ACCESS"))]
        .into_iter()
        .filter(|(class, _)| check_tier(tier, *class).is_ok())
        .map(|(class, status)| default_max_wait(tier, class, status))
        .max()
        .unwrap_or(3600)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_waits_exceed_the_documented_restore_times() {
        // Deep Archive Bulk takes up to 48 h: the default must wait longer.
        assert!(worst_max_wait("Bulk") > 48 * 3600);
        assert!(default_max_wait("Bulk", Some("DEEP_ARCHIVE"), None) > 48 * 3600);
        assert!(default_max_wait("Standard", Some("DEEP_ARCHIVE"), None) > 12 * 3600);
        assert!(default_max_wait("Standard", Some("DEEP_ARCHIVE"), None) < 48 * 3600);
        assert!(default_max_wait("Bulk", Some("GLACIER"), None) > 12 * 3600);
        assert_eq!(default_max_wait("Expedited", Some("GLACIER"), None), 3600);
        assert!(default_max_wait("Bulk", Some("INTELLIGENT_TIERING"), Some("DEEP_ARCHIVE_ACCESS")) > 12 * 3600);
        // Expedited cannot restore Deep Archive: its worst case is Glacier's or Intelligent-Tiering's.
        assert!(worst_max_wait("Expedited") > 12 * 3600 && worst_max_wait("Expedited") < 48 * 3600);
        assert!(worst_max_wait("Standard") < worst_max_wait("Bulk"));
    }

    #[test]
    fn readable_classes() {
        for c in ["STANDARD", "STANDARD_IA", "ONEZONE_IA", "REDUCED_REDUNDANCY", "GLACIER_IR"] {
            assert_eq!(classify(Some(c), None, None), Readability::Readable, "{c}");
        }
        assert_eq!(classify(None, None, None), Readability::Readable);
        assert_eq!(classify(Some("INTELLIGENT_TIERING"), None, None), Readability::Readable);
    }

    #[test]
    fn archived_classes() {
        assert_eq!(classify(Some("GLACIER"), None, None), Readability::NeedsRestore { with_days: true });
        assert_eq!(classify(Some("DEEP_ARCHIVE"), None, None), Readability::NeedsRestore { with_days: true });
        assert_eq!(
            classify(Some("INTELLIGENT_TIERING"), Some("DEEP_ARCHIVE_ACCESS"), None),
            Readability::NeedsRestore { with_days: false }
        );
        assert_eq!(classify(Some("GLACIER"), None, Some("ongoing-request=\"true\"")), Readability::Restoring);
        let done = "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\"";
        assert_eq!(classify(Some("GLACIER"), None, Some(done)), Readability::Readable);
    }

    #[test]
    fn unreadable_classes() {
        assert_eq!(classify(Some("OUTPOSTS"), None, None), Readability::Unreadable("OUTPOSTS".into()));
        assert_eq!(classify(Some("SNOW"), None, None), Readability::Unreadable("SNOW".into()));
    }

    #[test]
    fn tiers() {
        assert!(check_tier("Expedited", Some("DEEP_ARCHIVE")).is_err());
        assert!(check_tier("Expedited", Some("GLACIER")).is_ok());
        assert!(check_tier("Fast", Some("GLACIER")).is_err());
    }
}
