//! libpq `key=value` connection strings, as in a standby's `primary_conninfo`: repointing a
//! standby keeps everything it had (user, password, application_name, TLS) but the address.

use crate::error::ConninfoError;

/// `(key, value)` pairs of a libpq keyword/value connection string.
fn parse(s: &str) -> Result<Vec<(String, String)>, ConninfoError> {
    let mut out = Vec::new();
    let mut chars = s.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.peek().is_none() {
            return Ok(out);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !c.is_whitespace()) {
            key.push(c);
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        if chars.next() != Some('=') {
            return Err(ConninfoError::MissingEquals(out.len() + 1));
        }
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    Some('\\') => value.push(chars.next().ok_or(ConninfoError::UnterminatedEscape)?),
                    Some('\'') => break,
                    Some(c) => value.push(c),
                    None => return Err(ConninfoError::UnterminatedQuote(out.len() + 1)),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                if c == '\\' {
                    value.push(chars.next().ok_or(ConninfoError::UnterminatedEscape)?);
                } else {
                    value.push(c);
                }
            }
        }
        out.push((key, value));
    }
}

fn render(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}='{}'", v.replace('\\', "\\\\").replace('\'', "\\'")))
        .collect::<Vec<_>>()
        .join(" ")
}

/// `conninfo` with its address replaced by `host`/`port` (`hostaddr` dropped, since it would
/// win over `host`); every other setting kept.
pub(crate) fn repoint(conninfo: &str, host: &str, port: u16) -> Result<String, ConninfoError> {
    let mut pairs: Vec<_> = parse(conninfo)?
        .into_iter()
        .filter(|(k, _)| !matches!(k.as_str(), "host" | "hostaddr" | "port"))
        .collect();
    pairs.insert(0, ("port".into(), port.to_string()));
    pairs.insert(0, ("host".into(), host.into()));
    Ok(render(&pairs))
}

/// The name a standby with this `primary_conninfo` replicates under, as the primary's
/// `synchronous_standby_names` and `pg_stat_replication` see it: its `application_name`, else
/// the server's `cluster_name`, else libpq's `walreceiver`.
pub(crate) fn standby_name(conninfo: &str, cluster_name: &str) -> String {
    let from_conninfo = parse(conninfo)
        .ok()
        .and_then(|pairs| pairs.into_iter().rev().find(|(k, _)| k == "application_name"))
        .map(|(_, v)| v)
        .filter(|v| !v.is_empty());
    from_conninfo.unwrap_or_else(|| {
        if cluster_name.is_empty() {
            "walreceiver".to_owned()
        } else {
            cluster_name.to_owned()
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn repointing_keeps_everything_but_the_address() {
        let old = "user=postgres password='pa ss\\'wd' channel_binding=prefer host=127.0.0.1 port=5433 \
                   sslmode=disable application_name=replica2 hostaddr=10.0.0.1";
        let new = repoint(old, "10.0.0.9", 5434).unwrap();
        assert_eq!(
            parse(&new).unwrap(),
            [
                ("host", "10.0.0.9"),
                ("port", "5434"),
                ("user", "postgres"),
                ("password", "pa ss'wd"),
                ("channel_binding", "prefer"),
                ("sslmode", "disable"),
                ("application_name", "replica2"),
            ]
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
    }

    #[test]
    fn the_name_a_standby_replicates_under() {
        assert_eq!(standby_name("host=h application_name=n1 user=u", "c"), "n1");
        assert_eq!(
            standby_name("host=h application_name='a b' application_name=last", ""),
            "last"
        );
        assert_eq!(standby_name("host=h user=u", "cluster_b"), "cluster_b");
        assert_eq!(standby_name("host=h application_name=''", ""), "walreceiver");
        assert_eq!(standby_name("", ""), "walreceiver");
    }

    #[test]
    fn parses_spacing_escapes_and_empty_values() {
        assert_eq!(
            parse(" a = 1  b='' c=x\\ y d='\\\\'").unwrap(),
            [("a", "1"), ("b", ""), ("c", "x y"), ("d", "\\")].map(|(k, v)| (k.to_owned(), v.to_owned()))
        );
        assert_eq!(parse("a=1 host"), Err(ConninfoError::MissingEquals(2)));
        assert_eq!(parse("password='abc"), Err(ConninfoError::UnterminatedQuote(1)));
        assert_eq!(parse("password=abc\\"), Err(ConninfoError::UnterminatedEscape));
        assert_eq!(parse("").unwrap(), []);
    }
}
