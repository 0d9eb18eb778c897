//! From TOML text to the file as written ([`RawConfig`]), reporting every
//! key serde refuses, not only the first.
//!
//! serde stops at the first unknown key or wrong value. So the text is
//! parsed once into a spanned tree, and deserialized from that tree again
//! and again: each refusal is recorded with its line (serde's own message)
//! and the entry it names is taken out of the tree before the next round.
//! Taking out an unknown key, or a wrong optional value, leaves a config
//! that validation can still check as a whole (its default stands in), so
//! a key typo and a missing certificate file are both reported. An unknown
//! key that is a typo of a required key that is missing (`adress` for
//! `address`, at most two letters apart) stands in for it, reported once
//! as unknown. Taking out a table or a required value would make
//! validation report what is only a consequence (a route to a backend that
//! was taken out), so then only the problems found here are reported.

use std::borrow::Cow;
use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeString, DeTable, DeValue};
use toml::Spanned;

use super::problems::{line_at, Problems};
use super::raw::RawConfig;

/// More rounds than a config has keys: each round takes one entry out, so
/// this only guards against a loop that takes nothing out.
const MAX_ROUNDS: usize = 10_000;

/// Parses `src`; every problem goes to `p`, sorted by line. `Some` when the
/// config can be validated as a whole: nothing, or only keys that
/// validation does not need, had to be taken out.
pub(super) fn parse(src: &str, p: &mut Problems<'_>) -> Option<RawConfig> {
    let mut doc = match DeTable::parse(src) {
        Ok(doc) => doc,
        Err(e) => {
            p.at_line(e.span().map(|s| line_at(src, s.start)), e.message());
            return None;
        }
    };
    let mut found: Vec<(Option<usize>, String)> = Vec::new();
    // Keys taken out, with their table's span: unknown ones (a typo of a
    // required key stands in for it) and the ones whose value was wrong (a
    // "missing field" for one of those next is the same problem again).
    let mut unknown: Vec<(Range<usize>, Key<'_>, Value<'_>)> = Vec::new();
    let mut wrong: Vec<(Range<usize>, String)> = Vec::new();
    let mut complete = true;
    let mut result = None;
    for _ in 0..MAX_ROUNDS {
        let error = match RawConfig::deserialize(toml::de::Deserializer::from(doc.clone())) {
            Ok(raw) => {
                result = Some(raw);
                break;
            }
            Err(e) => e,
        };
        let message = error.message().to_string();
        let Some(span) = error.span() else {
            found.push((None, message));
            complete = false;
            break;
        };
        let Some(path) = locate(doc.get_ref(), &span) else {
            found.push((Some(line_at(src, span.start)), message));
            complete = false;
            break;
        };
        if let Some(missing) = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'))
        {
            if wrong.iter().any(|(t, k)| *t == span && k == missing) {
                // Reported as a wrong value already.
            } else if let Some(i) = typo_of(&unknown, &span, missing) {
                // `adress` for `address`: reported as unknown; its value
                // stands in, so the rest of the file is still validated.
                let (_, key, value) = unknown.remove(i);
                let key = Spanned::new(key.span(), Cow::Owned(missing.to_string()));
                if let Some((table, _)) = table_mut(&mut doc, &path) {
                    table.insert(key, value);
                    continue;
                }
                complete = false;
                break;
            } else {
                found.push((Some(line_at(src, span.start)), message));
            }
            // Nothing stands in for a missing key: take its table out.
            complete = false;
            if take(&mut doc, &path).is_none() {
                break;
            }
            continue;
        }
        found.push((Some(line_at(src, span.start)), message.clone()));
        let Some((table, key, value)) = take(&mut doc, &path) else {
            complete = false;
            break;
        };
        if message.starts_with("unknown field `") {
            unknown.push((table, key, value));
        } else if is_table(value.get_ref()) {
            // A table of the wrong kind: what validation would see is no
            // longer the file.
            complete = false;
        } else {
            wrong.push((table, key.get_ref().to_string()));
        }
    }
    if result.is_none() && found.is_empty() {
        found.push((
            None,
            "the file cannot be read as a portcullis config".into(),
        ));
    }
    found.sort_by_key(|(line, _)| *line);
    for (line, message) in found {
        p.at_line(line, message);
    }
    result.filter(|_| complete)
}

type Key<'i> = Spanned<DeString<'i>>;
type Value<'i> = Spanned<DeValue<'i>>;

/// The unknown key taken out of the table at `table` that is a typo of
/// `missing`: at most two letters apart, the closest one.
fn typo_of(
    unknown: &[(Range<usize>, Key<'_>, Value<'_>)],
    table: &Range<usize>,
    missing: &str,
) -> Option<usize> {
    unknown
        .iter()
        .enumerate()
        .filter(|(_, (t, _, _))| t == table)
        .map(|(i, (_, k, _))| (edit_distance(k.get_ref(), missing), i))
        .filter(|(d, _)| *d <= 2)
        .min()
        .map(|(_, i)| i)
}

/// Levenshtein distance: letters inserted, removed or replaced.
fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut prev = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let cur = row[j + 1];
            row[j + 1] = if ca == *cb {
                prev
            } else {
                1 + prev.min(cur).min(row[j])
            };
            prev = cur;
        }
    }
    row[b.len()]
}

fn is_table(v: &DeValue<'_>) -> bool {
    match v {
        DeValue::Table(_) => true,
        DeValue::Array(a) => a.iter().any(|e| e.get_ref().is_table()),
        _ => false,
    }
}

/// One step from a table into the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Step {
    Key(String),
    Index(usize),
}

/// The path to the entry whose key or value spans exactly `span`, the
/// deepest one first; an array element found is reported as the path to
/// it (the caller takes out the array's key).
fn locate(t: &DeTable<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    for (k, v) in t.iter() {
        let key = Step::Key(k.get_ref().to_string());
        if let Some(mut inner) = locate_value(v.get_ref(), span) {
            inner.insert(0, key);
            return Some(inner);
        }
        if k.span() == *span || v.span() == *span {
            return Some(vec![key]);
        }
    }
    None
}

fn locate_value(v: &DeValue<'_>, span: &Range<usize>) -> Option<Vec<Step>> {
    match v {
        DeValue::Table(t) => locate(t, span),
        DeValue::Array(a) => a.iter().enumerate().find_map(|(i, e)| {
            let mut inner =
                locate_value(e.get_ref(), span).or_else(|| (e.span() == *span).then(Vec::new))?;
            inner.insert(0, Step::Index(i));
            Some(inner)
        }),
        _ => None,
    }
}

/// Takes out the entry at `path`: the last key on it (an array element
/// cannot be taken out alone, so a path ending inside an array's element
/// list takes out the array's key). Returns the span of the table it was
/// in, the key and the value.
fn take<'i>(
    doc: &mut Spanned<DeTable<'i>>,
    path: &[Step],
) -> Option<(Range<usize>, Key<'i>, Value<'i>)> {
    let last_key = path.iter().rposition(|s| matches!(s, Step::Key(_)))?;
    let Step::Key(key) = &path[last_key] else {
        return None;
    };
    let (table, span) = table_mut(doc, &path[..last_key])?;
    let (k, v) = table.remove_entry(key.as_str())?;
    Some((span, k, v))
}

/// The table at `path` (the document itself when empty), and its span.
fn table_mut<'a, 'i>(
    doc: &'a mut Spanned<DeTable<'i>>,
    path: &[Step],
) -> Option<(&'a mut DeTable<'i>, Range<usize>)> {
    let span = doc.span();
    match path.split_first() {
        None => Some((doc.get_mut(), span)),
        Some((Step::Key(k), rest)) => value_table_mut(doc.get_mut().get_mut(k.as_str())?, rest),
        Some((Step::Index(_), _)) => None,
    }
}

fn value_table_mut<'a, 'i>(
    v: &'a mut Value<'i>,
    path: &[Step],
) -> Option<(&'a mut DeTable<'i>, Range<usize>)> {
    let span = v.span();
    match (v.get_mut(), path.split_first()) {
        (DeValue::Table(t), None) => Some((t, span)),
        (DeValue::Table(t), Some((Step::Key(k), rest))) => {
            value_table_mut(t.get_mut(k.as_str())?, rest)
        }
        (DeValue::Array(a), Some((Step::Index(i), rest))) => value_table_mut(a.get_mut(*i)?, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::edit_distance;

    #[test]
    fn edit_distances() {
        assert_eq!(edit_distance("adress", "address"), 1);
        assert_eq!(edit_distance("nmae", "name"), 2);
        assert_eq!(edit_distance("route", "route"), 0);
        assert_eq!(edit_distance("crt", "cert"), 1);
        assert!(edit_distance("password_file", "user") > 2);
        assert_eq!(edit_distance("", "key"), 3);
    }
}
