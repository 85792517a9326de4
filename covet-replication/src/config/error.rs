//! [`ConfigError`]: why a replication configuration could not be loaded or is invalid.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

/// Why a [`ReplicationConfig`](super::ReplicationConfig) could not be loaded, or is invalid.
///
/// Messages are lowercase and start with the path of the offending setting
/// (`replicas[1].weight: must be > 0`), the environment variable (`COVET_READ_PREFERENCE: ...`) or the
/// file. No message ever contains a password: connection URLs are never quoted, and TOML errors do
/// not quote the offending line.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A setting has an invalid value.
    #[error("{field}: {message}")]
    Invalid {
        /// Path of the setting, e.g. `replicas[1].weight`, `health.interval` or `replicas[0]`.
        field: String,
        /// What is wrong with it, e.g. `must be > 0`.
        message: String,
    },
    /// Several settings are invalid: every error found, in the order of the fields.
    ///
    /// Never empty and never nested; a single error is reported as itself, not wrapped in this.
    #[error("{}", join(.0))]
    Multiple(Vec<ConfigError>),
    /// A connection URL cannot be parsed or used. The URL itself (and so its password) is not quoted.
    #[error("{field}: {message}")]
    Url {
        /// Where the URL came from: `url` (for [`NodeConfig::from_url`](super::NodeConfig::from_url)),
        /// `primary.url`, `replicas[2].url`, `COVET_PRIMARY_URL`, `COVET_REPLICA_URLS[1]`, ...
        field: String,
        /// What is wrong with it, e.g. `invalid url: invalid port number`.
        message: String,
    },
    /// An environment variable has an invalid value, or a required one is not set.
    #[error("{var}: {message}")]
    Env {
        /// The variable's name, e.g. `COVET_READ_PREFERENCE`.
        var: String,
        /// What is wrong with it.
        message: String,
    },
    /// A configuration file could not be read.
    #[error("cannot read config file {}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying I/O error.
        #[source]
        source: std::io::Error,
    },
    /// A TOML document could not be parsed, or does not have the expected shape (unknown field,
    /// wrong type, missing `[primary]`, ...).
    #[error("{}", toml_message(.path.as_deref(), *.line, *.column, .source))]
    Toml {
        /// The file, when loaded from one.
        path: Option<PathBuf>,
        /// 1-based line of the error, when known.
        line: Option<usize>,
        /// 1-based column (in characters) of the error, when known.
        column: Option<usize>,
        /// The error of the `toml` crate (with its copy of the document removed, so that neither its
        /// `Display` nor its `Debug` can quote a password). Boxed to keep `ConfigError` small.
        #[source]
        source: Box<toml::de::Error>,
    },
    /// The configuration could not be serialized to TOML.
    #[error("cannot serialize config to toml: {0}")]
    Serialize(#[source] toml::ser::Error),
}

impl ConfigError {
    /// The setting this error is about: the field path of a validation or URL error
    /// (`replicas[1].weight`, `primary.url`), the variable of an environment error; for
    /// [`ConfigError::Multiple`], the first error's. `None` for file, TOML and serialization errors.
    ///
    /// ```rust
    /// use covet_replication::ReplicationConfig;
    ///
    /// let err = ReplicationConfig::from_urls("postgres://db1/app", &["postgres://db1/app"]).unwrap_err();
    /// assert_eq!(err.field(), Some("replicas[0]"));
    /// assert_eq!(err.to_string(), "replicas[0]: same server as the primary (db1:5432/app)");
    /// ```
    #[must_use]
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Invalid { field, .. } | Self::Url { field, .. } => Some(field),
            Self::Env { var, .. } => Some(var),
            Self::Multiple(errors) => errors.first().and_then(Self::field),
            Self::Io { .. } | Self::Toml { .. } | Self::Serialize(_) => None,
        }
    }

    /// Every individual error: the contents of [`ConfigError::Multiple`], or this error alone.
    pub fn errors(&self) -> std::slice::Iter<'_, ConfigError> {
        match self {
            Self::Multiple(errors) => errors.iter(),
            other => std::slice::from_ref(other).iter(),
        }
    }

    /// A validation error of `field`.
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }

    /// `Ok(())` for no errors, the error itself for one, [`ConfigError::Multiple`] for more
    /// (flattening nested `Multiple`s).
    pub(crate) fn from_errors(errors: Vec<ConfigError>) -> Result<(), ConfigError> {
        let mut flat: Vec<ConfigError> = Vec::with_capacity(errors.len());
        for error in errors {
            match error {
                Self::Multiple(inner) => flat.extend(inner),
                other => flat.push(other),
            }
        }
        match flat.len() {
            0 => Ok(()),
            1 => Err(flat.remove(0)),
            _ => Err(Self::Multiple(flat)),
        }
    }

    /// Builds a [`ConfigError::Toml`], removing the document from `error` so it cannot be quoted.
    pub(crate) fn toml(mut error: toml::de::Error, input: &str, path: Option<&Path>) -> Self {
        let (line, column) = match error.span() {
            Some(span) => {
                let (line, column) = line_column(input, span.start);
                (Some(line), Some(column))
            }
            None => (None, None),
        };
        error.set_input(None);
        Self::Toml {
            path: path.map(Path::to_path_buf),
            line,
            column,
            source: Box::new(error),
        }
    }
}

/// `"N configuration errors: a; b; c"`.
fn join(errors: &[ConfigError]) -> String {
    let mut out = format!("{} configuration errors: ", errors.len());
    for (i, error) in errors.iter().enumerate() {
        if i > 0 {
            out.push_str("; ");
        }
        let _ = write!(out, "{error}");
    }
    out
}

/// `"invalid toml in /etc/app.toml at line 3, column 1: unknown field `x`, expected ..."`.
fn toml_message(path: Option<&Path>, line: Option<usize>, column: Option<usize>, source: &toml::de::Error) -> String {
    let mut out = String::from("invalid toml");
    if let Some(path) = path {
        let _ = write!(out, " in {}", path.display());
    }
    match (line, column) {
        (Some(line), Some(column)) => {
            let _ = write!(out, " at line {line}, column {column}");
        }
        (Some(line), None) => {
            let _ = write!(out, " at line {line}");
        }
        _ => {}
    }
    // Without its input, the toml error's Display is its message plus an optional "in `a.b`" line.
    let detail = source.to_string();
    let detail: Vec<&str> = detail.lines().map(str::trim).filter(|l| !l.is_empty()).collect();
    let _ = write!(out, ": {}", detail.join(", "));
    out
}

/// 1-based (line, column in chars) of byte offset `offset` in `input`.
fn line_column(input: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(input.len());
    while !input.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &input[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (line, column)
}
