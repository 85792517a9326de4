//! Serde helpers for settings that can be switched off with the string `"none"`.

use std::fmt;
use std::time::Duration;

use humantime_serde::re::humantime;
use serde::de::{self, Visitor};
use serde::{Deserializer, Serializer};

/// Words accepted for "no value" by [`optional_duration`] and [`optional_u64`].
const NONE_WORDS: [&str; 4] = ["none", "never", "off", "disabled"];

fn is_none_word(s: &str) -> bool {
    NONE_WORDS.iter().any(|w| s.trim().eq_ignore_ascii_case(w))
}

/// `Option<Duration>` as a humantime string (`"10m"`), or `"none"` (also `never`, `off`, `disabled`)
/// for `None`. Used where the default is `Some` and TOML has no null to switch it off.
pub(crate) mod optional_duration {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_str("none"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        d.deserialize_str(OptionalDurationVisitor)
    }

    struct OptionalDurationVisitor;

    impl Visitor<'_> for OptionalDurationVisitor {
        type Value = Option<Duration>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a duration such as \"10m\" or \"500ms\", or \"none\"")
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if is_none_word(v) {
                return Ok(None);
            }
            humantime::parse_duration(v.trim()).map(Some).map_err(|e| {
                E::custom(format!(
                    "invalid duration {v:?}: {e} (expected e.g. \"10m\", or \"none\")"
                ))
            })
        }
    }
}

/// `Option<u64>` as an integer, or `"none"` (also `never`, `off`, `disabled`) for `None`.
pub(crate) mod optional_u64 {
    use super::*;

    pub(crate) fn serialize<S: Serializer>(value: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match value {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_str("none"),
        }
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        d.deserialize_any(OptionalU64Visitor)
    }

    struct OptionalU64Visitor;

    impl Visitor<'_> for OptionalU64Visitor {
        type Value = Option<u64>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("a non-negative integer, or \"none\"")
        }

        fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
            Ok(Some(v))
        }

        fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
            u64::try_from(v)
                .map(Some)
                .map_err(|_| E::invalid_value(de::Unexpected::Signed(v), &self))
        }

        fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
            if is_none_word(v) {
                Ok(None)
            } else {
                Err(E::invalid_value(de::Unexpected::Str(v), &self))
            }
        }
    }
}
