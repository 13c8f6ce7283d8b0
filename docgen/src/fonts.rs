//! The font catalogue: real fonts from Debian packages, with a train / held-out split so an
//! evaluation set can use fonts the model never saw in training.

use std::path::PathBuf;

use ab_glyph::FontVec;
use anyhow::{bail, Context, Result};

/// Where Debian puts TrueType fonts.
pub const FONT_ROOT: &str = "/usr/share/fonts/truetype";

/// Environment variable that moves the font root, for machines where the Debian packages
/// cannot be installed (copy their `dejavu/`, `liberation2/`, `noto/` folders there).
pub const FONT_ROOT_ENV: &str = "OVE_FONT_ROOT";

/// The font root in use: `$OVE_FONT_ROOT` when set and not empty, else [`FONT_ROOT`].
pub fn font_root() -> PathBuf {
    match std::env::var_os(FONT_ROOT_ENV) {
        Some(v) if !v.is_empty() => PathBuf::from(v),
        _ => PathBuf::from(FONT_ROOT),
    }
}

/// Which part of the catalogue a font belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Split {
    /// Fonts used for training data.
    Train,
    /// Fonts kept out of training, for evaluation.
    Heldout,
}

/// Broad style of a font family, so that receipts can prefer monospaced fonts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    Sans,
    Serif,
    Mono,
}

/// One font file of the catalogue.
#[derive(Debug, Clone, Copy)]
pub struct FontSpec {
    /// Short name used on the command line (`dejavu-sans-bold`).
    pub name: &'static str,
    /// Debian package that installs it.
    pub package: &'static str,
    /// Directory under the font root ([`font_root`]).
    pub dir: &'static str,
    pub file: &'static str,
    pub style: Style,
    pub bold: bool,
    pub split: Split,
}

impl FontSpec {
    pub fn path(&self) -> PathBuf {
        font_root().join(self.dir).join(self.file)
    }
}

macro_rules! font {
    ($name:literal, $pkg:literal, $dir:literal, $file:literal, $style:ident, $bold:literal, $split:ident) => {
        FontSpec {
            name: $name,
            package: $pkg,
            dir: $dir,
            file: $file,
            style: Style::$style,
            bold: $bold,
            split: Split::$split,
        }
    };
}

/// Every font the generator knows. Training: DejaVu and Liberation; held out: Noto.
pub const CATALOGUE: &[FontSpec] = &[
    font!(
        "dejavu-sans",
        "fonts-dejavu-core",
        "dejavu",
        "DejaVuSans.ttf",
        Sans,
        false,
        Train
    ),
    font!(
        "dejavu-sans-bold",
        "fonts-dejavu-core",
        "dejavu",
        "DejaVuSans-Bold.ttf",
        Sans,
        true,
        Train
    ),
    font!(
        "dejavu-sans-condensed",
        "fonts-dejavu-extra",
        "dejavu",
        "DejaVuSansCondensed.ttf",
        Sans,
        false,
        Train
    ),
    font!(
        "dejavu-serif",
        "fonts-dejavu-core",
        "dejavu",
        "DejaVuSerif.ttf",
        Serif,
        false,
        Train
    ),
    font!(
        "dejavu-serif-bold",
        "fonts-dejavu-core",
        "dejavu",
        "DejaVuSerif-Bold.ttf",
        Serif,
        true,
        Train
    ),
    font!(
        "dejavu-sans-mono",
        "fonts-dejavu-core",
        "dejavu",
        "DejaVuSansMono.ttf",
        Mono,
        false,
        Train
    ),
    font!(
        "dejavu-sans-mono-bold",
        "fonts-dejavu-core",
        "dejavu",
        "DejaVuSansMono-Bold.ttf",
        Mono,
        true,
        Train
    ),
    font!(
        "liberation-sans",
        "fonts-liberation2",
        "liberation2",
        "LiberationSans-Regular.ttf",
        Sans,
        false,
        Train
    ),
    font!(
        "liberation-sans-bold",
        "fonts-liberation2",
        "liberation2",
        "LiberationSans-Bold.ttf",
        Sans,
        true,
        Train
    ),
    font!(
        "liberation-serif",
        "fonts-liberation2",
        "liberation2",
        "LiberationSerif-Regular.ttf",
        Serif,
        false,
        Train
    ),
    font!(
        "liberation-serif-bold",
        "fonts-liberation2",
        "liberation2",
        "LiberationSerif-Bold.ttf",
        Serif,
        true,
        Train
    ),
    font!(
        "liberation-mono",
        "fonts-liberation2",
        "liberation2",
        "LiberationMono-Regular.ttf",
        Mono,
        false,
        Train
    ),
    font!(
        "liberation-mono-bold",
        "fonts-liberation2",
        "liberation2",
        "LiberationMono-Bold.ttf",
        Mono,
        true,
        Train
    ),
    font!(
        "noto-sans",
        "fonts-noto-core",
        "noto",
        "NotoSans-Regular.ttf",
        Sans,
        false,
        Heldout
    ),
    font!(
        "noto-sans-bold",
        "fonts-noto-core",
        "noto",
        "NotoSans-Bold.ttf",
        Sans,
        true,
        Heldout
    ),
    font!(
        "noto-sans-display",
        "fonts-noto-core",
        "noto",
        "NotoSansDisplay-Regular.ttf",
        Sans,
        false,
        Heldout
    ),
    font!(
        "noto-serif",
        "fonts-noto-core",
        "noto",
        "NotoSerif-Regular.ttf",
        Serif,
        false,
        Heldout
    ),
    font!(
        "noto-serif-bold",
        "fonts-noto-core",
        "noto",
        "NotoSerif-Bold.ttf",
        Serif,
        true,
        Heldout
    ),
    font!(
        "noto-serif-display",
        "fonts-noto-core",
        "noto",
        "NotoSerifDisplay-Regular.ttf",
        Serif,
        false,
        Heldout
    ),
];

/// Fonts only from the DejaVu packages, present on almost any Debian machine.
pub fn dejavu() -> Vec<FontSpec> {
    CATALOGUE
        .iter()
        .filter(|f| f.dir == "dejavu")
        .copied()
        .collect()
}

/// Resolves a font selection: `train`, `heldout`, `all`, `dejavu`, or a comma-separated
/// list of catalogue names.
pub fn select(selection: &str) -> Result<Vec<FontSpec>> {
    let fonts: Vec<FontSpec> = match selection {
        "train" => CATALOGUE
            .iter()
            .filter(|f| f.split == Split::Train)
            .copied()
            .collect(),
        "heldout" => CATALOGUE
            .iter()
            .filter(|f| f.split == Split::Heldout)
            .copied()
            .collect(),
        "all" => CATALOGUE.to_vec(),
        "dejavu" => dejavu(),
        list => list
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(|name| {
                CATALOGUE
                    .iter()
                    .find(|f| f.name == name)
                    .copied()
                    .with_context(|| {
                        let known: Vec<&str> = CATALOGUE.iter().map(|f| f.name).collect();
                        format!(
                        "unknown font {name:?}; use train, heldout, all, dejavu or names from: {}",
                        known.join(", ")
                    )
                    })
            })
            .collect::<Result<_>>()?,
    };
    if fonts.is_empty() {
        bail!("font selection {selection:?} names no fonts");
    }
    Ok(fonts)
}

/// A loaded font.
pub struct LoadedFont {
    pub spec: FontSpec,
    pub font: FontVec,
}

/// Reads a font file; a missing directory or file is an error naming the package to install.
pub fn load(spec: &FontSpec) -> Result<LoadedFont> {
    let path = spec.path();
    let root = font_root();
    let dir = path.parent().unwrap_or(&root);
    if !dir.is_dir() {
        bail!(
            "font directory {} is missing: install the Debian package {} (apt-get install {}), \
             or point {FONT_ROOT_ENV} at a copy of its folder",
            dir.display(),
            spec.package,
            spec.package
        );
    }
    if !path.is_file() {
        bail!(
            "font file {} is missing: install the Debian package {} (apt-get install {})",
            path.display(),
            spec.package,
            spec.package
        );
    }
    let bytes = std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
    let font = FontVec::try_from_vec(bytes)
        .map_err(|e| anyhow::anyhow!("{} is not a usable font: {e}", path.display()))?;
    Ok(LoadedFont { spec: *spec, font })
}

/// Loads every font of a selection.
pub fn load_all(specs: &[FontSpec]) -> Result<Vec<LoadedFont>> {
    specs.iter().map(load).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_font_names_its_package() {
        let spec = FontSpec {
            name: "ghost",
            package: "fonts-ghost",
            dir: "no-such-font-dir",
            file: "Ghost.ttf",
            style: Style::Sans,
            bold: false,
            split: Split::Heldout,
        };
        let msg = format!("{:#}", load(&spec).err().unwrap());
        assert!(
            msg.contains("directory") && msg.contains("apt-get install fonts-ghost"),
            "{msg}"
        );
    }
}
