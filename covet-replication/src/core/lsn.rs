//! WAL positions.

use std::fmt;
use std::str::FromStr;

/// A PostgreSQL WAL position (`pg_lsn`): a byte offset into the write-ahead log.
///
/// Ordered like the server orders them, so "the replica has replayed my write" is
/// `replay_lsn >= write_lsn`.
///
/// ```
/// use covet_replication::Lsn;
/// let lsn: Lsn = "16/B374D848".parse().unwrap();
/// assert_eq!(lsn.to_string(), "16/B374D848");
/// assert!(lsn > "16/B374D847".parse().unwrap());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, serde::Serialize)]
#[serde(into = "String")]
pub struct Lsn(pub u64);

impl From<Lsn> for String {
    fn from(lsn: Lsn) -> String {
        lsn.to_string()
    }
}

impl Lsn {
    /// `0/0`, which the server reports for "no WAL position" (never a real one).
    pub const ZERO: Lsn = Lsn(0);

    /// The insert position `self` (`pg_current_wal_insert_lsn()`) as the end of the last record
    /// before it, which is what a standby's `pg_last_wal_replay_lsn()` reports. They differ
    /// when nothing follows a WAL page header: after a segment switch (`archive_timeout`, a
    /// backup) or a record that ended a page, the insert position is past the header (24
    /// bytes, 40 on a segment's first page), where no standby will ever be until the next
    /// write. No record ends 24 bytes into a page; one ending 40 bytes in continues from the
    /// previous page, so nothing ended at the page's start: a standby at or past the page's
    /// start has replayed everything up to `self`.
    ///
    /// ```
    /// use covet_replication::Lsn;
    /// let after_switch: Lsn = "0/4000028".parse().unwrap();
    /// assert_eq!(after_switch.record_end().to_string(), "0/4000000");
    /// let mid_page: Lsn = "0/4000A10".parse().unwrap();
    /// assert_eq!(mid_page.record_end(), mid_page);
    /// ```
    #[must_use]
    pub fn record_end(self) -> Lsn {
        const WAL_PAGE: u64 = 8192;
        const SHORT_HEADER: u64 = 24;
        const LONG_HEADER: u64 = 40;
        match self.0 % WAL_PAGE {
            SHORT_HEADER | LONG_HEADER => Lsn(self.0 - self.0 % WAL_PAGE),
            _ => self,
        }
    }

    /// Bytes from `older` to `self`, zero if `older` is ahead.
    pub fn bytes_since(self, older: Lsn) -> u64 {
        self.0.saturating_sub(older.0)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// A string that is not `XXXXXXXX/XXXXXXXX` hexadecimal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid WAL position {0:?} (expected hexadecimal `hi/lo`, e.g. `16/B374D848`)")]
pub struct ParseLsnError(String);

impl FromStr for Lsn {
    type Err = ParseLsnError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || ParseLsnError(s.chars().take(40).collect());
        let (hi, lo) = s.split_once('/').ok_or_else(err)?;
        let hi = u32::from_str_radix(hi, 16).map_err(|_| err())?;
        let lo = u32::from_str_radix(lo, 16).map_err(|_| err())?;
        Ok(Lsn((u64::from(hi) << 32) | u64::from(lo)))
    }
}

/// `pg_lsn` in both wire formats: binary is the position as a big-endian `u64`, text is `hi/lo`.
/// Queries select LSNs as they are (no `::text` casts), and bind them as `$1::pg_lsn`.
mod sql {
    use sqlx::encode::IsNull;
    use sqlx::error::BoxDynError;
    use sqlx::postgres::types::Oid;
    use sqlx::postgres::{PgArgumentBuffer, PgTypeInfo, PgValueFormat, PgValueRef};
    use sqlx::{Decode, Encode, Postgres, Type};

    use super::Lsn;

    /// `pg_lsn`'s fixed oid (catalog/pg_type.dat): no lookup by name on each connection.
    const PG_LSN: PgTypeInfo = PgTypeInfo::with_oid(Oid(3220));

    impl Type<Postgres> for Lsn {
        fn type_info() -> PgTypeInfo {
            PG_LSN
        }
    }

    impl Decode<'_, Postgres> for Lsn {
        fn decode(value: PgValueRef<'_>) -> Result<Self, BoxDynError> {
            match value.format() {
                PgValueFormat::Binary => {
                    let bytes: [u8; 8] = value.as_bytes()?.try_into()?;
                    Ok(Lsn(u64::from_be_bytes(bytes)))
                }
                PgValueFormat::Text => Ok(value.as_str()?.parse()?),
            }
        }
    }

    impl Encode<'_, Postgres> for Lsn {
        fn encode_by_ref(&self, buf: &mut PgArgumentBuffer) -> Result<IsNull, BoxDynError> {
            buf.extend(&self.0.to_be_bytes());
            Ok(IsNull::No)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn insert_positions_past_a_bare_page_header_end_at_the_page() {
        for (insert, end) in [
            ("0/4000028", "0/4000000"), // a new segment's first page: long header
            ("0/4002018", "0/4002000"), // a later page: short header
            ("1/18", "1/0"),
            ("0/4002028", "0/4002000"), // 40 bytes in, a continued record: nothing ended at the page
            ("0/4002019", "0/4002019"), // anything else is a record's end already
            ("0/4002048", "0/4002048"),
            ("0/4002000", "0/4002000"),
            ("0/0", "0/0"),
        ] {
            let insert: Lsn = insert.parse().unwrap();
            assert_eq!(insert.record_end().to_string(), end, "{insert}");
        }
    }

    #[test]
    fn parses_and_prints_like_postgres() {
        for s in ["0/0", "0/3000060", "16/B374D848", "FFFFFFFF/FFFFFFFF"] {
            assert_eq!(s.parse::<Lsn>().map(|l| l.to_string()), Ok(s.to_string()));
        }
        assert_eq!("1/0".parse::<Lsn>(), Ok(Lsn(1 << 32)));
        for bad in ["", "0", "0/", "/0", "x/0", "0/1/2", "100000000/0", " 0/0"] {
            assert!(bad.parse::<Lsn>().is_err(), "{bad:?}");
        }
    }

    #[test]
    fn orders_and_subtracts() {
        let a: Lsn = "0/FFFFFFFF".parse().unwrap();
        let b: Lsn = "1/0".parse().unwrap();
        assert!(a < b);
        assert_eq!(b.bytes_since(a), 1);
        assert_eq!(a.bytes_since(b), 0);
    }
}
