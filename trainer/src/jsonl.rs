//! Reading whole JSONL files (metrics, text datasets) into typed records.

use std::path::Path;

use anyhow::{Context, Result};
use serde::de::DeserializeOwned;

/// Reads every non-blank line of a JSONL file as a `T`; errors name the file and line.
pub fn read_jsonl<T: DeserializeOwned>(path: &Path) -> Result<Vec<T>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Ok(parse_lines(path, &text)?
        .into_iter()
        .map(|(_, t)| t)
        .collect())
}

/// Every non-blank line of JSONL `text` as a `T`, with its line index (from 0); a bad line
/// is an error naming `file:line`.
pub fn parse_lines<T: DeserializeOwned>(file: &Path, text: &str) -> Result<Vec<(usize, T)>> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            let t =
                serde_json::from_str(l).with_context(|| format!("{}:{}", file.display(), i + 1))?;
            Ok((i, t))
        })
        .collect()
}
