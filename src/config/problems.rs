//! What checking a config finds: problems (the config is refused; each
//! with its line) and warnings (it is served; the caller logs them).

use std::fmt;
use std::ops::Range;
use std::path::PathBuf;

/// One problem in a config file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigProblem {
    pub line: Option<usize>,
    pub message: String,
}

/// Every problem found in a config file.
#[derive(Debug, Clone, thiserror::Error)]
pub struct ConfigError {
    pub path: PathBuf,
    pub problems: Vec<ConfigProblem>,
}

impl ConfigError {
    /// Each problem as `FILE:LINE: message` (or `FILE: message`), the way
    /// `portcullis check` prints them and the log shows them, one event
    /// each.
    pub fn lines(&self) -> impl Iterator<Item = String> + '_ {
        self.problems.iter().map(|p| match p.line {
            Some(line) => format!("{}:{}: {}", self.path.display(), line, p.message),
            None => format!("{}: {}", self.path.display(), p.message),
        })
    }
}

/// Every problem, one per line (see [`ConfigError::lines`]).
impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, line) in self.lines().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            f.write_str(&line)?;
        }
        Ok(())
    }
}

/// Something the operator should hear about that does not make the config
/// invalid. Its `Display` is the log message; the variant's fields are the
/// log fields.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Warning {
    /// A secret file that its group or every local user can read or change.
    /// Refusing it would break deployments that share a key through a group
    /// on purpose, so it is only a warning.
    ExposedSecret {
        /// What the file holds: "TLS private key", "admin token file", ...
        what: &'static str,
        path: PathBuf,
        /// Its permission bits (the `0o7777` part of the mode).
        mode: u32,
    },
    /// A listener's `failover_target` looks like its own address.
    RedirectLoop { listener: String, target: String },
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ExposedSecret { what, path, mode } => {
                let who = if mode & 0o007 != 0 {
                    "every local user"
                } else {
                    "its group"
                };
                write!(
                    f,
                    "{what} {} can be read or changed by {who} (mode {mode:04o}); run `chmod 600 {}` and own it by the user portcullis runs as",
                    path.display(),
                    path.display(),
                )
            }
            Warning::RedirectLoop { .. } => f.write_str(
                "failover_target looks like this listener's own address: redirected clients would come back here (redirect loop)",
            ),
        }
    }
}

/// The 1-based line of byte `offset` in `src`.
pub(super) fn line_at(src: &str, offset: usize) -> usize {
    src[..offset.min(src.len())]
        .bytes()
        .filter(|&b| b == b'\n')
        .count()
        + 1
}

/// Collects problems and warnings while validating, in the order found.
pub(super) struct Problems<'a> {
    src: &'a str,
    pub(super) list: Vec<ConfigProblem>,
    pub(super) warnings: Vec<Warning>,
    /// How many of `list` parsing found (validation counts its own).
    parsed: usize,
}

impl<'a> Problems<'a> {
    pub(super) fn new(src: &'a str) -> Self {
        Problems {
            src,
            list: Vec::new(),
            warnings: Vec::new(),
            parsed: 0,
        }
    }

    /// Marks the end of parsing: the problems found so far are keys that
    /// were set aside (an unknown key, a wrong optional value), which do
    /// not keep validation from loading TLS material.
    pub(super) fn parsing_done(&mut self) {
        self.parsed = self.list.len();
    }

    /// A problem at the value (or table) spanning `span`.
    pub(super) fn at(&mut self, span: Range<usize>, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            line: Some(line_at(self.src, span.start)),
            message: message.into(),
        });
    }

    /// A problem at a line already counted (`None`: of the whole file).
    pub(super) fn at_line(&mut self, line: Option<usize>, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            line,
            message: message.into(),
        });
    }

    /// A problem of the whole file.
    pub(super) fn global(&mut self, message: impl Into<String>) {
        self.list.push(ConfigProblem {
            line: None,
            message: message.into(),
        });
    }

    pub(super) fn warn(&mut self, warning: Warning) {
        self.warnings.push(warning);
    }

    /// How many problems validation found so far.
    pub(super) fn count(&self) -> usize {
        self.list.len() - self.parsed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warnings_read_as_the_log_lines_always_have() {
        let w = Warning::ExposedSecret {
            what: "TLS private key",
            path: "/etc/p/key.pem".into(),
            mode: 0o640,
        };
        assert_eq!(
            w.to_string(),
            "TLS private key /etc/p/key.pem can be read or changed by its group (mode 0640); run `chmod 600 /etc/p/key.pem` and own it by the user portcullis runs as"
        );
        let w = Warning::ExposedSecret {
            what: "admin token file",
            path: "t".into(),
            mode: 0o604,
        };
        assert!(w.to_string().contains("by every local user (mode 0604)"));
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 99), 3);
    }
}
