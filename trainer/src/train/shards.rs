//! WebDataset-style tar shards: a `.tar` whose members are grouped by key, the member's
//! path up to the first dot of its file name. `KEY.json` holds the record of a JSONL line
//! without `images` (`{"prompt_ids": [...], "response_ids": [...]}`); the images are
//! `KEY.png` (one) or `KEY.0.png`, `KEY.1.jpg`, ... (several, in that order), any of
//! png, jpg, jpeg, webp, bmp, tif, tiff, gif. Other members (`KEY.txt`, ...) are ignored.
//! Samples keep the order of their keys' first members, shard after shard.
//!
//! `--data` is a shard when it ends in `.tar`, all `*.tar` of a directory (sorted by name)
//! when it is a directory, or the shards matching a file-name pattern with one `*`
//! (`data/shard-*.tar`).

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, ensure, Context, Result};

use crate::train::data::Record;

/// Image extensions recognised in a shard.
pub const IMAGE_EXTENSIONS: &[&str] = &["png", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif"];

/// One sample of a shard: its record and its images' bytes, in order.
#[derive(Debug, Clone)]
pub struct ShardSample {
    /// `SHARD.tar:KEY`, for messages.
    pub name: String,
    pub record: Record,
    /// (member name, bytes), in image order.
    pub images: Vec<(String, Vec<u8>)>,
}

/// The shards named by `--data`, or `None` when it is not a shard source (a JSONL file).
pub fn shard_paths(data: &Path) -> Result<Option<Vec<PathBuf>>> {
    let is_tar = |p: &Path| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("tar"));
    if data.is_dir() {
        let mut v: Vec<PathBuf> = std::fs::read_dir(data)
            .with_context(|| format!("listing {}", data.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.is_file() && is_tar(p))
            .collect();
        v.sort();
        ensure!(!v.is_empty(), "{}: no .tar shards", data.display());
        return Ok(Some(v));
    }
    let name = data.file_name().map(|n| n.to_string_lossy().to_string());
    if let Some(name) = name.filter(|n| n.contains('*')) {
        let (prefix, suffix) = name.split_once('*').unwrap();
        ensure!(
            !suffix.contains('*'),
            "{}: only one * is supported",
            data.display()
        );
        let dir = match data.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .with_context(|| format!("listing {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.is_file()
                    && p.file_name().is_some_and(|n| {
                        let n = n.to_string_lossy();
                        n.len() >= prefix.len() + suffix.len()
                            && n.starts_with(prefix)
                            && n.ends_with(suffix)
                    })
            })
            .collect();
        v.sort();
        ensure!(!v.is_empty(), "{}: no file matches", data.display());
        return Ok(Some(v));
    }
    Ok(is_tar(data).then(|| vec![data.to_path_buf()]))
}

/// (key, image index, extension) of a member path, or `None` for a member to ignore.
fn split_member(path: &str) -> Option<(String, Option<usize>, String)> {
    let (dir, file) = match path.rsplit_once('/') {
        Some((d, f)) => (Some(d), f),
        None => (None, path),
    };
    let (stem, rest) = file.split_once('.')?;
    if stem.is_empty() {
        return None;
    }
    let (middle, ext) = match rest.rsplit_once('.') {
        Some((m, e)) => (Some(m), e),
        None => (None, rest),
    };
    let key = match dir {
        Some(d) => format!("{d}/{stem}"),
        None => stem.to_string(),
    };
    let index = middle.and_then(|m| m.parse::<usize>().ok());
    Some((key, index, ext.to_ascii_lowercase()))
}

#[derive(Default)]
struct Group {
    json: Option<Vec<u8>>,
    images: Vec<(Option<usize>, String, Vec<u8>)>,
}

/// Reads every sample of one shard. A member that cannot be read, a key without
/// `KEY.json`, a bad record or a record listing `images` is an error naming the key;
/// image bytes are not decoded here.
pub fn read_shard(path: &Path) -> Result<Vec<ShardSample>> {
    let file = std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?;
    read_shard_from(std::io::BufReader::new(file), path)
}

/// [`read_shard`] over any reader of a tar archive; `path` names it in messages.
pub fn read_shard_from(reader: impl Read, path: &Path) -> Result<Vec<ShardSample>> {
    let mut archive = tar::Archive::new(reader);
    let mut order: Vec<String> = Vec::new();
    let mut groups: HashMap<String, Group> = HashMap::new();
    for entry in archive
        .entries()
        .with_context(|| format!("reading {}", path.display()))?
    {
        let mut entry = entry.with_context(|| format!("reading {}", path.display()))?;
        if !entry.header().entry_type().is_file() {
            continue;
        }
        let member = entry
            .path()
            .with_context(|| format!("{}: reading a member's name", path.display()))?
            .to_string_lossy()
            .to_string();
        let Some((key, index, ext)) = split_member(&member) else {
            continue;
        };
        let is_json = ext == "json";
        if !is_json && !IMAGE_EXTENSIONS.contains(&ext.as_str()) {
            continue;
        }
        // The header's size is only a claim (a corrupt shard may announce terabytes):
        // reserve no more than a large image's worth up front; the read itself stops at
        // the bytes the archive really has.
        const RESERVE_AT_MOST: u64 = 64 << 20;
        let mut bytes = Vec::with_capacity(entry.size().min(RESERVE_AT_MOST) as usize);
        entry
            .read_to_end(&mut bytes)
            .with_context(|| format!("{}: reading member {member}", path.display()))?;
        let group = groups.entry(key.clone()).or_insert_with(|| {
            order.push(key.clone());
            Group::default()
        });
        if is_json {
            ensure!(
                group.json.is_none(),
                "{}: key {key} has two .json members",
                path.display()
            );
            group.json = Some(bytes);
        } else {
            group.images.push((index, member, bytes));
        }
    }
    let mut samples = Vec::with_capacity(order.len());
    for key in order {
        let mut g = groups.remove(&key).expect("grouped key");
        let name = format!("{}:{key}", path.display());
        let Some(json) = g.json else {
            bail!("{name}: no {key}.json member");
        };
        let record: Record = serde_json::from_slice(&json).with_context(|| name.clone())?;
        ensure!(
            record.images.is_empty(),
            "{name}: a shard record takes its images from the members, not from \"images\""
        );
        if g.images.len() > 1 {
            ensure!(
                g.images.iter().all(|(i, _, _)| i.is_some()),
                "{name}: several images need numbered names (KEY.0.png, KEY.1.png, ...)"
            );
        }
        g.images.sort_by_key(|(i, _, _)| *i);
        samples.push(ShardSample {
            name,
            record,
            images: g.images.into_iter().map(|(_, m, b)| (m, b)).collect(),
        });
    }
    Ok(samples)
}
