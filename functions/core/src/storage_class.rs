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

#[cfg(test)]
mod tests {
    use super::*;

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
