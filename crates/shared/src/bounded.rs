//! [`Bounded`]: an integer that cannot hold a value outside its range — parse, don't validate.
//!
//! A configuration value such as `retention.days` (1–3650) is a `Bounded<1, 3650>`: reading it
//! from a file, an add-on option or an environment variable fails with "0 is out of range
//! 1–3650", and the configuration loader names the key; once it exists it is in range, so no
//! later code checks it again.

use serde::{Deserialize, Serialize};

/// An integer in `MIN..=MAX`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Bounded<const MIN: u64, const MAX: u64>(u64);

/// A value outside a [`Bounded`] range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfRange {
    /// The value given.
    pub value: u64,
    /// The smallest allowed.
    pub min: u64,
    /// The largest allowed.
    pub max: u64,
}

impl std::fmt::Display for OutOfRange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} is out of range {}–{}",
            self.value, self.min, self.max
        )
    }
}

impl std::error::Error for OutOfRange {}

impl<const MIN: u64, const MAX: u64> Bounded<MIN, MAX> {
    /// `value`, if it is in range.
    pub const fn new(value: u64) -> Result<Self, OutOfRange> {
        if value >= MIN && value <= MAX {
            Ok(Self(value))
        } else {
            Err(OutOfRange {
                value,
                min: MIN,
                max: MAX,
            })
        }
    }

    /// A value known to be in range (defaults, constants): out of range does not compile when
    /// used in a `const`, and panics otherwise.
    pub const fn of(value: u64) -> Self {
        match Self::new(value) {
            Ok(v) => v,
            Err(_) => panic!("Bounded::of: value out of range"),
        }
    }

    /// The value.
    pub const fn get(self) -> u64 {
        self.0
    }
}

impl<const MIN: u64, const MAX: u64> TryFrom<u64> for Bounded<MIN, MAX> {
    type Error = OutOfRange;

    fn try_from(value: u64) -> Result<Self, OutOfRange> {
        Self::new(value)
    }
}

impl<const MIN: u64, const MAX: u64> From<Bounded<MIN, MAX>> for u64 {
    fn from(value: Bounded<MIN, MAX>) -> u64 {
        value.0
    }
}

impl<const MIN: u64, const MAX: u64> PartialEq<u64> for Bounded<MIN, MAX> {
    fn eq(&self, other: &u64) -> bool {
        self.0 == *other
    }
}

impl<const MIN: u64, const MAX: u64> std::fmt::Display for Bounded<MIN, MAX> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    type Days = Bounded<1, 3650>;

    #[test]
    fn only_values_in_range_exist() {
        assert_eq!(Days::new(1).map(Days::get), Ok(1));
        assert_eq!(Days::new(3650).map(Days::get), Ok(3650));
        assert_eq!(
            Days::new(0).map_err(|e| e.to_string()),
            Err("0 is out of range 1–3650".into())
        );
        assert!(serde_json::from_str::<Days>("3651").is_err());
        assert!(serde_json::from_str::<Days>("-1").is_err());
        assert_eq!(serde_json::from_str::<Days>("30").expect("in range"), 30);
        assert_eq!(serde_json::to_string(&Days::of(7)).expect("json"), "7");
    }
}
