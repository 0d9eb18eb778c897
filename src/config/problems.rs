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
    /// A file that decides what portcullis trusts or does (a CA bundle, a
    /// CRL file or directory, the config file) that its group or every
    /// local user can change.
    Writable {
        /// What the file is: "CA bundle", "CRL directory", "config file".
        what: &'static str,
        /// What whoever can write it controls.
        controls: &'static str,
        path: PathBuf,
        /// Its permission bits (the `0o7777` part of the mode).
        mode: u32,
    },
    /// The config file holds the `[monitor]` password and its group or
    /// every local user can read it.
    InlinePassword { path: PathBuf, mode: u32 },
    /// A listen address is in use, maybe by this proxy already running
    /// (`portcullis check` beside a running portcullis): `run` would fail
    /// to bind it unless that is the holder and it stops first.
    AddressInUse {
        /// Whose address: `listener "public"`, `[admin]`.
        what: String,
        address: String,
        /// The process listening there, when it can be seen.
        holder: Option<String>,
    },
    /// A listener's `failover_target` looks like its own address.
    RedirectLoop { listener: String, target: String },
    /// A `[[listener.identity.rule]]` (`rule`, counted from 1) that no
    /// certificate could match, or that an earlier rule always decides
    /// first; `why` says which.
    IdentityRuleUnmatchable {
        listener: String,
        rule: usize,
        why: String,
    },
}

impl Warning {
    /// The file the warning is about, for the ones about a file's mode.
    pub fn file(&self) -> Option<&std::path::Path> {
        match self {
            Warning::ExposedSecret { path, .. }
            | Warning::Writable { path, .. }
            | Warning::InlinePassword { path, .. } => Some(path),
            Warning::AddressInUse { .. }
            | Warning::RedirectLoop { .. }
            | Warning::IdentityRuleUnmatchable { .. } => None,
        }
    }

    /// Stable name of the kind of warning, for the log's `warning` field.
    pub fn label(&self) -> &'static str {
        match self {
            Warning::ExposedSecret { .. } => "exposed_secret",
            Warning::Writable { .. } => "writable",
            Warning::InlinePassword { .. } => "inline_password",
            Warning::AddressInUse { .. } => "address_in_use",
            Warning::RedirectLoop { .. } => "redirect_loop",
            Warning::IdentityRuleUnmatchable { .. } => "identity_rule_unmatchable",
        }
    }
}

/// Who the permission bits `mode` let in besides the owner.
fn who(mode: u32) -> &'static str {
    if mode & 0o007 != 0 {
        "every local user"
    } else {
        "its group"
    }
}

impl fmt::Display for Warning {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Warning::ExposedSecret { what, path, mode } => write!(
                f,
                "{what} {} can be read or changed by {} (mode {mode:04o}); run `chmod 600 {}` and own it by the user portcullis runs as",
                path.display(),
                who(*mode),
                path.display(),
            ),
            Warning::Writable {
                what,
                controls,
                path,
                mode,
            } => write!(
                f,
                "{what} {} can be changed by {} (mode {mode:04o}), and whoever can change it decides {controls}; run `chmod go-w {}`",
                path.display(),
                who(*mode & 0o022),
                path.display(),
            ),
            Warning::InlinePassword { path, mode } => write!(
                f,
                "config file {} holds the [monitor] password and can be read by {} (mode {mode:04o}); run `chmod 600 {}`, or move the password to a password_file of mode 0600",
                path.display(),
                who(*mode & 0o044),
                path.display(),
            ),
            Warning::AddressInUse {
                what,
                address,
                holder,
            } => write!(
                f,
                "{what}: {address} is in use by {}: if that is this portcullis, already running, this is expected; otherwise `run` will fail to bind it",
                holder.as_deref().unwrap_or("a process this user cannot see"),
            ),
            Warning::RedirectLoop { .. } => f.write_str(
                "failover_target looks like this listener's own address: redirected clients would come back here (redirect loop)",
            ),
            Warning::IdentityRuleUnmatchable { listener, rule, why } => write!(
                f,
                "listener {listener:?}: [[listener.identity.rule]] number {rule} can never decide a login: {why}",
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
        let w = Warning::Writable {
            what: "CA bundle",
            controls: "which client certificates are trusted",
            path: "/etc/p/ca.pem".into(),
            mode: 0o664,
        };
        assert_eq!(
            w.to_string(),
            "CA bundle /etc/p/ca.pem can be changed by its group (mode 0664), and whoever can change it decides which client certificates are trusted; run `chmod go-w /etc/p/ca.pem`"
        );
        let w = Warning::InlinePassword {
            path: "/etc/p/p.toml".into(),
            mode: 0o644,
        };
        assert_eq!(
            w.to_string(),
            "config file /etc/p/p.toml holds the [monitor] password and can be read by every local user (mode 0644); run `chmod 600 /etc/p/p.toml`, or move the password to a password_file of mode 0600"
        );
    }

    #[test]
    fn lines_count_from_one() {
        assert_eq!(line_at("a\nb\nc", 0), 1);
        assert_eq!(line_at("a\nb\nc", 2), 2);
        assert_eq!(line_at("a\nb\nc", 99), 3);
    }
}
