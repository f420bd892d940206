use std::time::{Duration, SystemTime};

/// The window in which a certificate is valid.
///
/// [`Validity::days`] is what production uses; [`Validity::between`] makes any
/// window, including ones already over or not yet begun, which tests need.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Validity {
    not_before: SystemTime,
    not_after: SystemTime,
}

/// Why a [`Validity`] cannot be made.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ValidityError {
    #[error("validity must be at least one day")]
    ZeroDays,
    #[error("validity of {days} days is too long")]
    TooLong { days: u32 },
    #[error("validity window is empty: not-after is not later than not-before")]
    EmptyWindow,
}

impl Validity {
    /// How far [`Validity::days`] backdates `not_before`, so that a peer whose
    /// clock is a little behind still accepts a certificate issued just now.
    pub const BACKDATE: Duration = Duration::from_secs(3600);

    /// Longest validity accepted, 100 years: anything longer is a typo.
    pub const MAX_DAYS: u32 = 36_500;

    /// Valid from an hour ago ([`Validity::BACKDATE`]) until `days` days from now.
    pub fn days(days: u32) -> Result<Self, ValidityError> {
        if days == 0 {
            return Err(ValidityError::ZeroDays);
        }
        if days > Self::MAX_DAYS {
            return Err(ValidityError::TooLong { days });
        }
        let now = SystemTime::now();
        Self::between(
            now - Self::BACKDATE,
            now + Duration::from_secs(u64::from(days) * 86_400),
        )
    }

    /// Valid from `not_before` to `not_after` (whole seconds; X.509 has no finer
    /// resolution).
    pub fn between(not_before: SystemTime, not_after: SystemTime) -> Result<Self, ValidityError> {
        if not_after <= not_before {
            return Err(ValidityError::EmptyWindow);
        }
        Ok(Self {
            not_before,
            not_after,
        })
    }

    /// Start of the window.
    pub fn not_before(&self) -> SystemTime {
        self.not_before
    }

    /// End of the window.
    pub fn not_after(&self) -> SystemTime {
        self.not_after
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_backdates_and_spans_the_requested_days() {
        let before = SystemTime::now();
        let v = Validity::days(10).unwrap();
        assert!(v.not_before() <= before - Validity::BACKDATE + Duration::from_secs(1));
        let span = v.not_after().duration_since(before).unwrap();
        assert!(span >= Duration::from_secs(10 * 86_400 - 1), "{span:?}");
        assert!(span <= Duration::from_secs(10 * 86_400 + 60), "{span:?}");
    }

    #[test]
    fn rejects_empty_and_absurd_windows() {
        assert_eq!(Validity::days(0), Err(ValidityError::ZeroDays));
        assert_eq!(
            Validity::days(40_000),
            Err(ValidityError::TooLong { days: 40_000 })
        );
        let now = SystemTime::now();
        assert_eq!(Validity::between(now, now), Err(ValidityError::EmptyWindow));
    }
}
