//! From TOML text to the file as written ([`RawConfig`]), reporting every
//! key serde refuses, not only the first.
//!
//! serde stops at the first unknown key or wrong value. So the text is
//! parsed once into a spanned tree, and deserialized from that tree again
//! and again: each refusal is recorded with its line (serde's own message)
//! and the entry it names is taken out of the tree before the next round.
//! Taking out an unknown key, or a wrong optional value, leaves a config
//! that validation can still check as a whole (its default stands in), so
//! a key typo and a missing certificate file are both reported. Taking out
//! a table or a required value would make validation report what is only a
//! consequence (a route to a backend that was taken out), so then only the
//! problems found here are reported.

use std::ops::Range;

use serde::Deserialize;
use toml::de::{DeTable, DeValue};

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
    // Keys whose wrong value was taken out, with their table's span: a
    // "missing field" for one of them next is the same problem again.
    let mut taken_out: Vec<(Range<usize>, String)> = Vec::new();
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
        let missing = message
            .strip_prefix("missing field `")
            .and_then(|m| m.strip_suffix('`'));
        let again = missing.is_some_and(|key| {
            taken_out
                .iter()
                .any(|(table, k)| *table == span && k == key)
        });
        if !again {
            found.push((Some(line_at(src, span.start)), message.clone()));
        }
        let Some(path) = locate(doc.get_ref(), &span) else {
            complete = false;
            break;
        };
        let Some((table_taken, table)) = take(doc.get_mut(), &path) else {
            complete = false;
            break;
        };
        if !message.starts_with("unknown field `") {
            // A wrong value or a missing key: what validation would see
            // is no longer the file.
            if table_taken || missing.is_some() {
                complete = false;
            } else if let Some(key) = path.iter().rev().find_map(|s| match s {
                Step::Key(k) => Some(k),
                Step::Index(_) => None,
            }) {
                taken_out.push((table, key.clone()));
            }
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
/// list takes out the array's key). Returns whether what was taken out is
/// a table (or an array of tables), and the span of the table it was in.
fn take(t: &mut DeTable<'_>, path: &[Step]) -> Option<(bool, Range<usize>)> {
    take_in(t, 0..0, path)
}

fn take_in(
    t: &mut DeTable<'_>,
    t_span: Range<usize>,
    path: &[Step],
) -> Option<(bool, Range<usize>)> {
    let (Step::Key(key), rest) = path.split_first()? else {
        return None;
    };
    // Deeper first, while the rest of the path leads to another key.
    if rest.iter().any(|s| matches!(s, Step::Key(_))) {
        let v = t.get_mut(key.as_str())?;
        let v_span = v.span();
        return match (v.get_mut(), rest) {
            (DeValue::Table(sub), _) => take_in(sub, v_span, rest),
            (DeValue::Array(a), [Step::Index(i), rest @ ..]) => {
                let e = a.get_mut(*i)?;
                let e_span = e.span();
                match e.get_mut() {
                    DeValue::Table(sub) => take_in(sub, e_span, rest),
                    _ => None,
                }
            }
            _ => None,
        };
    }
    let taken = t.remove(key.as_str())?;
    Some((is_table(taken.get_ref()), t_span))
}
