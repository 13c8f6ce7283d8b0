//! The font catalogue: real fonts from Debian packages, with a train / held-out split so an
//! evaluation set can use fonts the model never saw in training.
//!
//! Every family comes in its regular face and, where the package has them, bold, italic and
//! bold italic (names `family`, `family-bold`, `family-italic`, `family-bold-italic`).
//! TrueType and OpenType (CFF) files both load.
//!
//! - **Train**: DejaVu Sans, Sans Condensed, Serif and Sans Mono; Liberation Sans, Serif and
//!   Mono; Arimo, Tinos, Cousine (croscore); Inter; Cantarell; Go and Go Mono; PT Sans, Serif
//!   and Mono; CMU Sans Serif, Serif and Typewriter; Linux Biolinum and Libertine; Karla;
//!   Manrope; Cabin; Dosis; B612 and B612 Mono; Clear Sans; EB Garamond; Gentium Plus;
//!   Quattrocento; Old Standard; Hack; JetBrains Mono; mononoki; Courier Prime.
//! - **Held out** (never trained on): every Noto family (Sans, Sans Display, Serif, Serif
//!   Display, Sans Mono), Charis SIL (serif) and Fira Code (mono).

use std::path::PathBuf;

use ab_glyph::FontVec;
use anyhow::{bail, Context, Result};

/// Where Debian puts TrueType fonts.
pub const FONT_ROOT: &str = "/usr/share/fonts/truetype";

/// Where Debian puts fonts; [`Root`] says under which folder of it a font's `dir` is.
pub const SYSTEM_FONTS: &str = "/usr/share/fonts";

/// Environment variable that moves the font root, for machines where the Debian packages
/// cannot be installed: it holds a copy of each font's `dir` folder (`dejavu/`,
/// `liberation2/`, `noto/`, `inter/`, ...), flat, whichever Debian root it came from.
pub const FONT_ROOT_ENV: &str = "OVE_FONT_ROOT";

/// The font root in use: `$OVE_FONT_ROOT` when set and not empty, else [`FONT_ROOT`].
pub fn font_root() -> PathBuf {
    env_root().unwrap_or_else(|| PathBuf::from(FONT_ROOT))
}

fn env_root() -> Option<PathBuf> {
    match std::env::var_os(FONT_ROOT_ENV) {
        Some(v) if !v.is_empty() => Some(PathBuf::from(v)),
        _ => None,
    }
}

/// The folder of [`SYSTEM_FONTS`] a package puts its font folder in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Root {
    /// `/usr/share/fonts/truetype`
    TrueType,
    /// `/usr/share/fonts/opentype`
    OpenType,
    /// `/usr/share/fonts` itself (fonts-go)
    Fonts,
}

impl Root {
    fn dir(self) -> &'static str {
        match self {
            Root::TrueType => "truetype",
            Root::OpenType => "opentype",
            Root::Fonts => "",
        }
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
    /// Which Debian font folder `dir` is in.
    pub root: Root,
    /// Directory under the root (or directly under `$OVE_FONT_ROOT`).
    pub dir: &'static str,
    pub file: &'static str,
    pub style: Style,
    pub bold: bool,
    /// Italic or oblique.
    pub italic: bool,
    pub split: Split,
}

impl FontSpec {
    pub fn path(&self) -> PathBuf {
        match env_root() {
            Some(root) => root.join(self.dir).join(self.file),
            None => PathBuf::from(SYSTEM_FONTS)
                .join(self.root.dir())
                .join(self.dir)
                .join(self.file),
        }
    }
}

macro_rules! font {
    ($name:literal, $pkg:literal, $root:ident, $dir:literal, $file:literal, $style:ident, $face:ident, $split:ident) => {
        FontSpec {
            name: $name,
            package: $pkg,
            root: Root::$root,
            dir: $dir,
            file: $file,
            style: Style::$style,
            bold: font!(@bold $face),
            italic: font!(@italic $face),
            split: Split::$split,
        }
    };
    (@bold Regular) => { false };
    (@bold Bold) => { true };
    (@bold Italic) => { false };
    (@bold BoldItalic) => { true };
    (@italic Regular) => { false };
    (@italic Bold) => { false };
    (@italic Italic) => { true };
    (@italic BoldItalic) => { true };
}

/// Every font the generator knows (the split is in the module documentation).
#[rustfmt::skip]
pub const CATALOGUE: &[FontSpec] = &[
    font!("dejavu-sans", "fonts-dejavu-core", TrueType, "dejavu", "DejaVuSans.ttf", Sans, Regular, Train),
    font!("dejavu-sans-bold", "fonts-dejavu-core", TrueType, "dejavu", "DejaVuSans-Bold.ttf", Sans, Bold, Train),
    font!("dejavu-sans-italic", "fonts-dejavu-extra", TrueType, "dejavu", "DejaVuSans-Oblique.ttf", Sans, Italic, Train),
    font!("dejavu-sans-bold-italic", "fonts-dejavu-extra", TrueType, "dejavu", "DejaVuSans-BoldOblique.ttf", Sans, BoldItalic, Train),
    font!("dejavu-sans-condensed", "fonts-dejavu-extra", TrueType, "dejavu", "DejaVuSansCondensed.ttf", Sans, Regular, Train),
    font!("dejavu-serif", "fonts-dejavu-core", TrueType, "dejavu", "DejaVuSerif.ttf", Serif, Regular, Train),
    font!("dejavu-serif-bold", "fonts-dejavu-core", TrueType, "dejavu", "DejaVuSerif-Bold.ttf", Serif, Bold, Train),
    font!("dejavu-serif-italic", "fonts-dejavu-extra", TrueType, "dejavu", "DejaVuSerif-Italic.ttf", Serif, Italic, Train),
    font!("dejavu-sans-mono", "fonts-dejavu-core", TrueType, "dejavu", "DejaVuSansMono.ttf", Mono, Regular, Train),
    font!("dejavu-sans-mono-bold", "fonts-dejavu-core", TrueType, "dejavu", "DejaVuSansMono-Bold.ttf", Mono, Bold, Train),
    font!("dejavu-sans-mono-italic", "fonts-dejavu-extra", TrueType, "dejavu", "DejaVuSansMono-Oblique.ttf", Mono, Italic, Train),
    font!("liberation-sans", "fonts-liberation2", TrueType, "liberation2", "LiberationSans-Regular.ttf", Sans, Regular, Train),
    font!("liberation-sans-bold", "fonts-liberation2", TrueType, "liberation2", "LiberationSans-Bold.ttf", Sans, Bold, Train),
    font!("liberation-sans-italic", "fonts-liberation2", TrueType, "liberation2", "LiberationSans-Italic.ttf", Sans, Italic, Train),
    font!("liberation-sans-bold-italic", "fonts-liberation2", TrueType, "liberation2", "LiberationSans-BoldItalic.ttf", Sans, BoldItalic, Train),
    font!("liberation-serif", "fonts-liberation2", TrueType, "liberation2", "LiberationSerif-Regular.ttf", Serif, Regular, Train),
    font!("liberation-serif-bold", "fonts-liberation2", TrueType, "liberation2", "LiberationSerif-Bold.ttf", Serif, Bold, Train),
    font!("liberation-serif-italic", "fonts-liberation2", TrueType, "liberation2", "LiberationSerif-Italic.ttf", Serif, Italic, Train),
    font!("liberation-serif-bold-italic", "fonts-liberation2", TrueType, "liberation2", "LiberationSerif-BoldItalic.ttf", Serif, BoldItalic, Train),
    font!("liberation-mono", "fonts-liberation2", TrueType, "liberation2", "LiberationMono-Regular.ttf", Mono, Regular, Train),
    font!("liberation-mono-bold", "fonts-liberation2", TrueType, "liberation2", "LiberationMono-Bold.ttf", Mono, Bold, Train),
    font!("liberation-mono-italic", "fonts-liberation2", TrueType, "liberation2", "LiberationMono-Italic.ttf", Mono, Italic, Train),
    font!("arimo", "fonts-croscore", TrueType, "croscore", "Arimo-Regular.ttf", Sans, Regular, Train),
    font!("arimo-bold", "fonts-croscore", TrueType, "croscore", "Arimo-Bold.ttf", Sans, Bold, Train),
    font!("arimo-italic", "fonts-croscore", TrueType, "croscore", "Arimo-Italic.ttf", Sans, Italic, Train),
    font!("tinos", "fonts-croscore", TrueType, "croscore", "Tinos-Regular.ttf", Serif, Regular, Train),
    font!("tinos-bold", "fonts-croscore", TrueType, "croscore", "Tinos-Bold.ttf", Serif, Bold, Train),
    font!("tinos-italic", "fonts-croscore", TrueType, "croscore", "Tinos-Italic.ttf", Serif, Italic, Train),
    font!("cousine", "fonts-croscore", TrueType, "croscore", "Cousine-Regular.ttf", Mono, Regular, Train),
    font!("cousine-bold", "fonts-croscore", TrueType, "croscore", "Cousine-Bold.ttf", Mono, Bold, Train),
    font!("inter", "fonts-inter", OpenType, "inter", "Inter-Regular.otf", Sans, Regular, Train),
    font!("inter-bold", "fonts-inter", OpenType, "inter", "Inter-Bold.otf", Sans, Bold, Train),
    font!("inter-italic", "fonts-inter", OpenType, "inter", "Inter-Italic.otf", Sans, Italic, Train),
    font!("inter-bold-italic", "fonts-inter", OpenType, "inter", "Inter-BoldItalic.otf", Sans, BoldItalic, Train),
    font!("cantarell", "fonts-cantarell", OpenType, "cantarell", "Cantarell-Regular.otf", Sans, Regular, Train),
    font!("cantarell-bold", "fonts-cantarell", OpenType, "cantarell", "Cantarell-Bold.otf", Sans, Bold, Train),
    font!("go", "fonts-go", Fonts, "fonts-go", "Go-Regular.ttf", Sans, Regular, Train),
    font!("go-bold", "fonts-go", Fonts, "fonts-go", "Go-Bold.ttf", Sans, Bold, Train),
    font!("go-italic", "fonts-go", Fonts, "fonts-go", "Go-Italic.ttf", Sans, Italic, Train),
    font!("go-bold-italic", "fonts-go", Fonts, "fonts-go", "Go-Bold-Italic.ttf", Sans, BoldItalic, Train),
    font!("pt-sans", "fonts-paratype", TrueType, "paratype", "PTS55F.ttf", Sans, Regular, Train),
    font!("pt-sans-bold", "fonts-paratype", TrueType, "paratype", "PTS75F.ttf", Sans, Bold, Train),
    font!("pt-sans-italic", "fonts-paratype", TrueType, "paratype", "PTS56F.ttf", Sans, Italic, Train),
    font!("pt-sans-bold-italic", "fonts-paratype", TrueType, "paratype", "PTS76F.ttf", Sans, BoldItalic, Train),
    font!("cmu-sans", "fonts-cmu", TrueType, "cmu", "cmunss.ttf", Sans, Regular, Train),
    font!("cmu-sans-bold", "fonts-cmu", TrueType, "cmu", "cmunsx.ttf", Sans, Bold, Train),
    font!("cmu-sans-italic", "fonts-cmu", TrueType, "cmu", "cmunsi.ttf", Sans, Italic, Train),
    font!("linux-biolinum", "fonts-linuxlibertine", OpenType, "linux-libertine", "LinBiolinum_R.otf", Sans, Regular, Train),
    font!("linux-biolinum-bold", "fonts-linuxlibertine", OpenType, "linux-libertine", "LinBiolinum_RB.otf", Sans, Bold, Train),
    font!("linux-biolinum-italic", "fonts-linuxlibertine", OpenType, "linux-libertine", "LinBiolinum_RI.otf", Sans, Italic, Train),
    font!("karla", "fonts-karla", TrueType, "karla", "Karla-Regular.otf", Sans, Regular, Train),
    font!("karla-bold", "fonts-karla", TrueType, "karla", "Karla-Bold.otf", Sans, Bold, Train),
    font!("karla-italic", "fonts-karla", TrueType, "karla", "Karla-Italic.otf", Sans, Italic, Train),
    font!("manrope", "fonts-manrope", TrueType, "manrope", "Manrope-Regular.ttf", Sans, Regular, Train),
    font!("manrope-bold", "fonts-manrope", TrueType, "manrope", "Manrope-Bold.ttf", Sans, Bold, Train),
    font!("cabin", "fonts-cabin", OpenType, "cabin", "Cabin-Regular.otf", Sans, Regular, Train),
    font!("cabin-bold", "fonts-cabin", OpenType, "cabin", "Cabin-Bold.otf", Sans, Bold, Train),
    font!("cabin-italic", "fonts-cabin", OpenType, "cabin", "Cabin-Italic.otf", Sans, Italic, Train),
    font!("dosis", "fonts-dosis", OpenType, "dosis", "Dosis-Book.otf", Sans, Regular, Train),
    font!("dosis-bold", "fonts-dosis", OpenType, "dosis", "Dosis-Bold.otf", Sans, Bold, Train),
    font!("b612", "fonts-b612", OpenType, "b612", "B612-Regular.otf", Sans, Regular, Train),
    font!("b612-bold", "fonts-b612", OpenType, "b612", "B612-Bold.otf", Sans, Bold, Train),
    font!("b612-italic", "fonts-b612", OpenType, "b612", "B612-Italic.otf", Sans, Italic, Train),
    font!("clear-sans", "fonts-clear-sans", TrueType, "clear-sans", "ClearSans-Regular.ttf", Sans, Regular, Train),
    font!("clear-sans-bold", "fonts-clear-sans", TrueType, "clear-sans", "ClearSans-Bold.ttf", Sans, Bold, Train),
    font!("clear-sans-italic", "fonts-clear-sans", TrueType, "clear-sans", "ClearSans-Italic.ttf", Sans, Italic, Train),
    font!("clear-sans-bold-italic", "fonts-clear-sans", TrueType, "clear-sans", "ClearSans-BoldItalic.ttf", Sans, BoldItalic, Train),
    font!("linux-libertine", "fonts-linuxlibertine", OpenType, "linux-libertine", "LinLibertine_R.otf", Serif, Regular, Train),
    font!("linux-libertine-bold", "fonts-linuxlibertine", OpenType, "linux-libertine", "LinLibertine_RB.otf", Serif, Bold, Train),
    font!("linux-libertine-italic", "fonts-linuxlibertine", OpenType, "linux-libertine", "LinLibertine_RI.otf", Serif, Italic, Train),
    font!("linux-libertine-bold-italic", "fonts-linuxlibertine", OpenType, "linux-libertine", "LinLibertine_RBI.otf", Serif, BoldItalic, Train),
    font!("eb-garamond", "fonts-ebgaramond", OpenType, "ebgaramond", "EBGaramond12-Regular.otf", Serif, Regular, Train),
    font!("eb-garamond-italic", "fonts-ebgaramond", OpenType, "ebgaramond", "EBGaramond12-Italic.otf", Serif, Italic, Train),
    font!("gentium-plus", "fonts-sil-gentiumplus", TrueType, "gentiumplus", "GentiumPlus-Regular.ttf", Serif, Regular, Train),
    font!("gentium-plus-bold", "fonts-sil-gentiumplus", TrueType, "gentiumplus", "GentiumPlus-Bold.ttf", Serif, Bold, Train),
    font!("gentium-plus-italic", "fonts-sil-gentiumplus", TrueType, "gentiumplus", "GentiumPlus-Italic.ttf", Serif, Italic, Train),
    font!("gentium-plus-bold-italic", "fonts-sil-gentiumplus", TrueType, "gentiumplus", "GentiumPlus-BoldItalic.ttf", Serif, BoldItalic, Train),
    font!("pt-serif", "fonts-paratype", TrueType, "paratype", "PTF55F.ttf", Serif, Regular, Train),
    font!("pt-serif-bold", "fonts-paratype", TrueType, "paratype", "PTF75F.ttf", Serif, Bold, Train),
    font!("pt-serif-italic", "fonts-paratype", TrueType, "paratype", "PTF56F.ttf", Serif, Italic, Train),
    font!("pt-serif-bold-italic", "fonts-paratype", TrueType, "paratype", "PTF76F.ttf", Serif, BoldItalic, Train),
    font!("cmu-serif", "fonts-cmu", TrueType, "cmu", "cmunrm.ttf", Serif, Regular, Train),
    font!("cmu-serif-bold", "fonts-cmu", TrueType, "cmu", "cmunbx.ttf", Serif, Bold, Train),
    font!("cmu-serif-italic", "fonts-cmu", TrueType, "cmu", "cmunti.ttf", Serif, Italic, Train),
    font!("cmu-serif-bold-italic", "fonts-cmu", TrueType, "cmu", "cmunbi.ttf", Serif, BoldItalic, Train),
    font!("quattrocento", "fonts-quattrocento", OpenType, "quattrocento", "Quattrocento-Regular.otf", Serif, Regular, Train),
    font!("old-standard", "fonts-oldstandard", TrueType, "fonts-oldstandard", "OldStandard-Regular.ttf", Serif, Regular, Train),
    font!("old-standard-bold", "fonts-oldstandard", TrueType, "fonts-oldstandard", "OldStandard-Bold.ttf", Serif, Bold, Train),
    font!("old-standard-italic", "fonts-oldstandard", TrueType, "fonts-oldstandard", "OldStandard-Italic.ttf", Serif, Italic, Train),
    font!("hack", "fonts-hack", TrueType, "hack", "Hack-Regular.ttf", Mono, Regular, Train),
    font!("hack-bold", "fonts-hack", TrueType, "hack", "Hack-Bold.ttf", Mono, Bold, Train),
    font!("hack-italic", "fonts-hack", TrueType, "hack", "Hack-Italic.ttf", Mono, Italic, Train),
    font!("hack-bold-italic", "fonts-hack", TrueType, "hack", "Hack-BoldItalic.ttf", Mono, BoldItalic, Train),
    font!("jetbrains-mono", "fonts-jetbrains-mono", TrueType, "jetbrains-mono", "JetBrainsMono-Regular.ttf", Mono, Regular, Train),
    font!("jetbrains-mono-bold", "fonts-jetbrains-mono", TrueType, "jetbrains-mono", "JetBrainsMono-Bold.ttf", Mono, Bold, Train),
    font!("jetbrains-mono-italic", "fonts-jetbrains-mono", TrueType, "jetbrains-mono", "JetBrainsMono-Italic.ttf", Mono, Italic, Train),
    font!("jetbrains-mono-bold-italic", "fonts-jetbrains-mono", TrueType, "jetbrains-mono", "JetBrainsMono-BoldItalic.ttf", Mono, BoldItalic, Train),
    font!("go-mono", "fonts-go", Fonts, "fonts-go", "Go-Mono.ttf", Mono, Regular, Train),
    font!("go-mono-bold", "fonts-go", Fonts, "fonts-go", "Go-Mono-Bold.ttf", Mono, Bold, Train),
    font!("go-mono-italic", "fonts-go", Fonts, "fonts-go", "Go-Mono-Italic.ttf", Mono, Italic, Train),
    font!("mononoki", "fonts-mononoki", TrueType, "mononoki", "mononoki-Regular.ttf", Mono, Regular, Train),
    font!("mononoki-bold", "fonts-mononoki", TrueType, "mononoki", "mononoki-Bold.ttf", Mono, Bold, Train),
    font!("mononoki-italic", "fonts-mononoki", TrueType, "mononoki", "mononoki-Italic.ttf", Mono, Italic, Train),
    font!("courier-prime", "fonts-courier-prime", OpenType, "courier-prime", "Courier Prime.otf", Mono, Regular, Train),
    font!("courier-prime-bold", "fonts-courier-prime", OpenType, "courier-prime", "Courier Prime Bold.otf", Mono, Bold, Train),
    font!("courier-prime-italic", "fonts-courier-prime", OpenType, "courier-prime", "Courier Prime Italic.otf", Mono, Italic, Train),
    font!("courier-prime-bold-italic", "fonts-courier-prime", OpenType, "courier-prime", "Courier Prime Bold Italic.otf", Mono, BoldItalic, Train),
    font!("pt-mono", "fonts-paratype", TrueType, "paratype", "PTM55F.ttf", Mono, Regular, Train),
    font!("pt-mono-bold", "fonts-paratype", TrueType, "paratype", "PTM75F.ttf", Mono, Bold, Train),
    font!("cmu-typewriter", "fonts-cmu", TrueType, "cmu", "cmuntt.ttf", Mono, Regular, Train),
    font!("cmu-typewriter-bold", "fonts-cmu", TrueType, "cmu", "cmuntb.ttf", Mono, Bold, Train),
    font!("cmu-typewriter-italic", "fonts-cmu", TrueType, "cmu", "cmunit.ttf", Mono, Italic, Train),
    font!("b612-mono", "fonts-b612", OpenType, "b612", "B612Mono-Regular.otf", Mono, Regular, Train),
    font!("b612-mono-bold", "fonts-b612", OpenType, "b612", "B612Mono-Bold.otf", Mono, Bold, Train),
    font!("noto-sans", "fonts-noto-core", TrueType, "noto", "NotoSans-Regular.ttf", Sans, Regular, Heldout),
    font!("noto-sans-bold", "fonts-noto-core", TrueType, "noto", "NotoSans-Bold.ttf", Sans, Bold, Heldout),
    font!("noto-sans-italic", "fonts-noto-core", TrueType, "noto", "NotoSans-Italic.ttf", Sans, Italic, Heldout),
    font!("noto-sans-bold-italic", "fonts-noto-core", TrueType, "noto", "NotoSans-BoldItalic.ttf", Sans, BoldItalic, Heldout),
    font!("noto-sans-display", "fonts-noto-core", TrueType, "noto", "NotoSansDisplay-Regular.ttf", Sans, Regular, Heldout),
    font!("noto-sans-display-italic", "fonts-noto-core", TrueType, "noto", "NotoSansDisplay-Italic.ttf", Sans, Italic, Heldout),
    font!("noto-serif", "fonts-noto-core", TrueType, "noto", "NotoSerif-Regular.ttf", Serif, Regular, Heldout),
    font!("noto-serif-bold", "fonts-noto-core", TrueType, "noto", "NotoSerif-Bold.ttf", Serif, Bold, Heldout),
    font!("noto-serif-italic", "fonts-noto-core", TrueType, "noto", "NotoSerif-Italic.ttf", Serif, Italic, Heldout),
    font!("noto-serif-bold-italic", "fonts-noto-core", TrueType, "noto", "NotoSerif-BoldItalic.ttf", Serif, BoldItalic, Heldout),
    font!("noto-serif-display", "fonts-noto-core", TrueType, "noto", "NotoSerifDisplay-Regular.ttf", Serif, Regular, Heldout),
    font!("noto-serif-display-italic", "fonts-noto-core", TrueType, "noto", "NotoSerifDisplay-Italic.ttf", Serif, Italic, Heldout),
    font!("noto-sans-mono", "fonts-noto-mono", TrueType, "noto", "NotoSansMono-Regular.ttf", Mono, Regular, Heldout),
    font!("noto-sans-mono-bold", "fonts-noto-mono", TrueType, "noto", "NotoSansMono-Bold.ttf", Mono, Bold, Heldout),
    font!("charis-sil", "fonts-sil-charis", TrueType, "charis", "CharisSIL-Regular.ttf", Serif, Regular, Heldout),
    font!("charis-sil-bold", "fonts-sil-charis", TrueType, "charis", "CharisSIL-Bold.ttf", Serif, Bold, Heldout),
    font!("charis-sil-italic", "fonts-sil-charis", TrueType, "charis", "CharisSIL-Italic.ttf", Serif, Italic, Heldout),
    font!("charis-sil-bold-italic", "fonts-sil-charis", TrueType, "charis", "CharisSIL-BoldItalic.ttf", Serif, BoldItalic, Heldout),
    font!("fira-code", "fonts-firacode", TrueType, "firacode", "FiraCode-Regular.ttf", Mono, Regular, Heldout),
    font!("fira-code-bold", "fonts-firacode", TrueType, "firacode", "FiraCode-Bold.ttf", Mono, Bold, Heldout),
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
            root: Root::TrueType,
            dir: "no-such-font-dir",
            file: "Ghost.ttf",
            style: Style::Sans,
            bold: false,
            italic: false,
            split: Split::Heldout,
        };
        let msg = format!("{:#}", load(&spec).err().unwrap());
        assert!(
            msg.contains("directory") && msg.contains("apt-get install fonts-ghost"),
            "{msg}"
        );
    }
}
