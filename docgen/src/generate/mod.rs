//! Document content and layout: what each kind of document says and where each piece of
//! text goes, measured with the real font so the ground truth is exactly what is drawn.
//!
//! One module per document kind, each a method of [`Builder`] (the fonts to draw with and
//! the random source) that returns a [`Document`]:
//! - [`word`], [`glyph`], [`code`]: one short line in a small crop (first reading lessons,
//!   and reading without a language prior);
//! - [`line`]: one line of text (a sentence, a name and a date, an address);
//! - [`paragraph`]: wrapped paragraphs under an optional title;
//! - [`receipt`]: a till receipt whose totals add up ([`Receipt`]);
//! - [`form`]: labelled key-value fields;
//! - [`table`]: a header row over aligned columns.
//!
//! This module holds what they share: [`Kind`] and the dispatch in [`generate`], the
//! [`Document`] they return, and the builder's helpers (font choice, colours, names, dates,
//! phone numbers, sentences). The order of the random draws is part of the output: the
//! same seed must give the same document, so a change to any of them changes every data set
//! generated since.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::fonts::{LoadedFont, Style};
use crate::render::{text_width, Item, Layout, Segment};
use crate::words::{FIRST_NAMES, LAST_NAMES, WORDS};

mod code;
mod form;
mod glyph;
mod line;
mod paragraph;
mod receipt;
mod table;
mod word;

pub use receipt::Receipt;

/// What kind of document to make.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// One to three words, numbers or a date: a small crop, the easiest reading there is
    /// (the first thing a model trained from scratch learns to read).
    Word,
    /// One to three random characters, large: a glyph or two per image token and nothing
    /// else in the picture (a first reading lesson for a model trained from scratch).
    Glyph,
    /// Random characters (serial numbers, reference codes): no word list or language prior
    /// can guess them, so every token of the answer has to come from the glyphs (training on
    /// it measures reading alone).
    Code,
    Line,
    Paragraph,
    Receipt,
    Form,
    Table,
}

impl Kind {
    pub const ALL: [Kind; 8] = [
        Kind::Word,
        Kind::Glyph,
        Kind::Code,
        Kind::Line,
        Kind::Paragraph,
        Kind::Receipt,
        Kind::Form,
        Kind::Table,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Kind::Word => "word",
            Kind::Glyph => "glyph",
            Kind::Code => "code",
            Kind::Line => "line",
            Kind::Paragraph => "paragraph",
            Kind::Receipt => "receipt",
            Kind::Form => "form",
            Kind::Table => "table",
        }
    }

    pub fn parse(s: &str) -> Result<Kind> {
        Kind::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                let names: Vec<&str> = Kind::ALL.iter().map(|k| k.name()).collect();
                anyhow::anyhow!("unknown document kind {s:?} ({})", names.join(", "))
            })
    }
}

/// A generated document: its layout (and so its exact text) and questions about it.
#[derive(Debug, Clone)]
pub struct Document {
    pub kind: Kind,
    pub layout: Layout,
    /// (question, answer) pairs whose answers are printed on the document.
    pub questions: Vec<(String, String)>,
    pub receipt: Option<Receipt>,
    /// A form's fields, in order.
    pub fields: Vec<(String, String)>,
}

impl Document {
    /// A document that is only its text: no questions, receipt or fields.
    pub fn plain(kind: Kind, layout: Layout) -> Self {
        Document {
            kind,
            layout,
            questions: vec![],
            receipt: None,
            fields: vec![],
        }
    }

    /// The ground truth: lines top to bottom joined with newlines.
    pub fn text(&self) -> String {
        self.layout.text()
    }
}

/// Formats cents as `12.50`.
pub fn money(cents: i64) -> String {
    format!("{}.{:02}", cents / 100, cents % 100)
}

/// Makes a document of `kind` with fonts from `pool` (indices in the layout refer to it).
pub fn generate(kind: Kind, pool: &[LoadedFont], rng: &mut impl Rng) -> Result<Document> {
    if pool.is_empty() {
        bail!("no fonts to draw with");
    }
    let mut b = Builder::new(pool, rng);
    let doc = match kind {
        Kind::Word => b.word(),
        Kind::Glyph => b.glyph(),
        Kind::Code => b.code(),
        Kind::Line => b.line(),
        Kind::Paragraph => b.paragraph(),
        Kind::Receipt => b.receipt(),
        Kind::Form => b.form(),
        Kind::Table => b.table(),
    };
    Ok(doc)
}

/// The fonts to draw with and the random source; each kind's module adds its method.
struct Builder<'a, R: Rng> {
    pool: &'a [LoadedFont],
    rng: &'a mut R,
}

const PAPERS: &[[u8; 3]] = &[
    [255, 255, 255],
    [252, 252, 250],
    [250, 247, 238],
    [245, 240, 225],
    [238, 238, 236],
    [241, 245, 250],
    [255, 252, 232],
    [236, 242, 236],
    // Greys, and thermal till paper (cool grey-white, faint pink, faint yellow).
    [226, 226, 224],
    [212, 213, 210],
    [240, 243, 246],
    [248, 238, 240],
    [250, 248, 226],
];
/// What a code is drawn from: letters of both cases, digits, and the punctuation of codes,
/// prices and dates.
const CODE_CHARS: &[u8] =
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.,:/#%$&()+";

const INKS: &[[u8; 3]] = &[
    [0, 0, 0],
    [25, 25, 25],
    [45, 45, 50],
    [20, 30, 95],
    [60, 40, 30],
    [85, 10, 10],
    [10, 55, 35],
];

impl<'a, R: Rng> Builder<'a, R> {
    fn new(pool: &'a [LoadedFont], rng: &'a mut R) -> Self {
        Builder { pool, rng }
    }

    fn pick<'s>(&mut self, list: &[&'s str]) -> &'s str {
        list.choose(self.rng).copied().unwrap_or("")
    }

    /// A font index, preferring `style` when the pool has one; upright, or italic one time
    /// in six when the pool has italics.
    fn font(&mut self, style: Option<Style>, bold: bool) -> usize {
        let italic = self.rng.gen_bool(1.0 / 6.0);
        let fits = |i: usize, italic: bool| {
            let s = &self.pool[i].spec;
            style.is_none_or(|st| s.style == st) && s.bold == bold && s.italic == italic
        };
        let mut want: Vec<usize> = (0..self.pool.len()).filter(|&i| fits(i, italic)).collect();
        if want.is_empty() {
            want = (0..self.pool.len()).filter(|&i| fits(i, !italic)).collect();
        }
        if let Some(&i) = want.choose(self.rng) {
            return i;
        }
        // No such style: the same weight in any style, then anything.
        let weight: Vec<usize> = (0..self.pool.len())
            .filter(|&i| self.pool[i].spec.bold == bold)
            .collect();
        weight
            .choose(self.rng)
            .copied()
            .unwrap_or_else(|| self.rng.gen_range(0..self.pool.len()))
    }

    /// The bold face of `font`'s family (italic if `font` is) if the pool has it, else `font`.
    fn bold_of(&self, font: usize) -> usize {
        let spec = &self.pool[font].spec;
        if spec.bold {
            return font;
        }
        let bold = match spec.name.strip_suffix("-italic") {
            Some(family) => format!("{family}-bold-italic"),
            None => format!("{}-bold", spec.name),
        };
        self.pool
            .iter()
            .position(|f| f.spec.name == bold)
            .unwrap_or(font)
    }

    fn body_font(&mut self) -> usize {
        let style = *[
            Style::Sans,
            Style::Serif,
            Style::Sans,
            Style::Serif,
            Style::Mono,
        ]
        .choose(self.rng)
        .unwrap_or(&Style::Sans);
        self.font(Some(style), false)
    }

    fn width(&self, font: usize, size: f32, text: &str) -> f32 {
        text_width(&self.pool[font].font, size, text)
    }

    fn colours(&mut self) -> ([u8; 3], [u8; 3]) {
        let mut paper = *PAPERS.choose(self.rng).unwrap_or(&[255, 255, 255]);
        for c in &mut paper {
            *c = c.saturating_sub(self.rng.gen_range(0..6));
        }
        let ink = if self.rng.gen_bool(0.5) {
            [0, 0, 0]
        } else {
            *INKS.choose(self.rng).unwrap_or(&[0, 0, 0])
        };
        (paper, ink)
    }

    fn seg(text: impl Into<String>, font: usize, x: f32) -> Segment {
        Segment {
            text: text.into(),
            font,
            x,
        }
    }

    fn layout(&mut self, width: f32, margin: f32, items: Vec<Item>) -> Layout {
        let (paper, ink) = self.colours();
        Layout {
            width: width.ceil() as u32,
            margin,
            paper,
            ink,
            items,
        }
    }

    fn sentence(&mut self, words: usize) -> String {
        let mut out: Vec<String> = Vec::with_capacity(words);
        for i in 0..words {
            let w = if self.rng.gen_bool(0.08) {
                self.rng.gen_range(1..2000).to_string()
            } else {
                self.pick(WORDS).to_string()
            };
            out.push(if i == 0 { capitalize(&w) } else { w });
            if i + 1 < words && self.rng.gen_bool(0.07) {
                if let Some(last) = out.last_mut() {
                    last.push(',');
                }
            }
        }
        let end = *[".", ".", ".", "!", "?", ";", ":"]
            .choose(self.rng)
            .unwrap_or(&".");
        out.join(" ") + end
    }

    fn full_name(&mut self) -> String {
        format!("{} {}", self.pick(FIRST_NAMES), self.pick(LAST_NAMES))
    }

    fn date(&mut self) -> String {
        self.date_in(1950..2027)
    }

    fn date_in(&mut self, years: std::ops::Range<i32>) -> String {
        let (y, m, d) = (
            self.rng.gen_range(years),
            self.rng.gen_range(1..=12),
            self.rng.gen_range(1..=28),
        );
        match self.rng.gen_range(0..3) {
            0 => format!("{y}-{m:02}-{d:02}"),
            1 => format!("{d:02}.{m:02}.{y}"),
            _ => format!("{m:02}/{d:02}/{y}"),
        }
    }

    /// A word as written in lower case, Title case or UPPER CASE.
    fn cased(&mut self, w: &str) -> String {
        match self.rng.gen_range(0..10) {
            0..=5 => w.to_string(),
            6..=8 => capitalize(w),
            _ => w.to_uppercase(),
        }
    }

    /// A number: plain, with thousands separators, or with decimals (`12,345.67`).
    fn number(&mut self) -> String {
        let digits = self.rng.gen_range(1..8);
        let n: i64 = self.rng.gen_range(0..10i64.pow(digits));
        match self.rng.gen_range(0..4) {
            0 => n.to_string(),
            1 => thousands(n),
            2 => format!("{}.{:02}", thousands(n), self.rng.gen_range(0..100)),
            _ => format!("{}.{}", n % 1000, self.rng.gen_range(0..10)),
        }
    }

    /// A price with a currency (`$1,299.00`, `EUR 12.50`, `8.99 USD`), ASCII only.
    fn price(&mut self) -> String {
        let digits = self.rng.gen_range(3..9);
        let cents: i64 = self.rng.gen_range(1..10i64.pow(digits));
        let amount = format!("{}.{:02}", thousands(cents / 100), cents % 100);
        match self.rng.gen_range(0..5) {
            0 | 1 => format!("${amount}"),
            2 => format!("EUR {amount}"),
            3 => format!("{amount} EUR"),
            _ => format!("{} {amount}", self.pick(&["USD", "GBP", "CHF"])),
        }
    }

    /// A percentage (`12%`, `7.5%`, `-3.25%`).
    fn percent(&mut self) -> String {
        let sign = *["", "", "", "-", "+"].choose(self.rng).unwrap_or(&"");
        match self.rng.gen_range(0..3) {
            0 => format!("{sign}{}%", self.rng.gen_range(0..101)),
            1 => format!(
                "{sign}{}.{}%",
                self.rng.gen_range(0..100),
                self.rng.gen_range(0..10)
            ),
            _ => format!(
                "{sign}{}.{:02}%",
                self.rng.gen_range(0..100),
                self.rng.gen_range(0..100)
            ),
        }
    }

    /// A time of day (`14:05`, `09:41:27`, `2:05 PM`).
    fn time(&mut self) -> String {
        let (h, m, s) = (
            self.rng.gen_range(0..24),
            self.rng.gen_range(0..60),
            self.rng.gen_range(0..60),
        );
        match self.rng.gen_range(0..3) {
            0 => format!("{h:02}:{m:02}"),
            1 => format!("{h:02}:{m:02}:{s:02}"),
            _ => format!(
                "{}:{m:02} {}",
                (h + 11) % 12 + 1,
                if h < 12 { "AM" } else { "PM" }
            ),
        }
    }

    /// A date in more formats than [`Self::date`], some with spaces (`3 Mar 2024`,
    /// `March 3, 2024`, `2024/03/03`).
    fn long_date(&mut self) -> String {
        const MONTHS: [&str; 12] = [
            "January",
            "February",
            "March",
            "April",
            "May",
            "June",
            "July",
            "August",
            "September",
            "October",
            "November",
            "December",
        ];
        let (y, m, d) = (
            self.rng.gen_range(1950..2031),
            self.rng.gen_range(0..12usize),
            self.rng.gen_range(1..=28),
        );
        let month = MONTHS[m];
        match self.rng.gen_range(0..5) {
            0 => format!("{d} {} {y}", &month[..3]),
            1 => format!("{month} {d}, {y}"),
            2 => format!("{y}/{:02}/{d:02}", m + 1),
            3 => format!("{d:02}-{}-{y}", month[..3].to_uppercase()),
            _ => self.date(),
        }
    }

    /// An invoice, order or stock-keeping code (`INV-2024-00123`, `SKU 48213-BLK`, `#A1023`).
    fn ref_code(&mut self) -> String {
        let n = self.rng.gen_range(100..100_000);
        let letters: String = (0..3)
            .map(|_| (b'A' + self.rng.gen_range(0..26u8)) as char)
            .collect();
        match self.rng.gen_range(0..6) {
            0 => format!("INV-{}-{n:05}", self.rng.gen_range(2015..2031)),
            1 => format!("SKU {n}-{letters}"),
            2 => format!("PO#{n}"),
            3 => format!("ORD-{letters}{n}"),
            4 => format!("#{}{n}", &letters[..1]),
            _ => format!("{letters}/{n}/{:02}", self.rng.gen_range(1..100)),
        }
    }

    fn phone(&mut self) -> String {
        format!(
            "+{} {} {:03} {:04}",
            self.rng.gen_range(1..99),
            self.rng.gen_range(10..999),
            self.rng.gen_range(0..1000),
            self.rng.gen_range(0..10000)
        )
    }

    // ---- shared by the one-line kinds (word, glyph, code, line) ----

    /// A body font, bold one time in five.
    fn line_font(&mut self) -> usize {
        if self.rng.gen_bool(0.2) {
            self.font(None, true)
        } else {
            self.body_font()
        }
    }

    /// A document of one line of `text`, `margin` pixels all round.
    fn single_line(
        &mut self,
        kind: Kind,
        font: usize,
        size: f32,
        text: String,
        margin: f32,
    ) -> Document {
        let w = self.width(font, size, &text);
        let items = vec![Item::Line {
            segments: vec![Self::seg(text, font, margin)],
            size,
        }];
        let layout = self.layout(w + 2.0 * margin, margin, items);
        Document::plain(kind, layout)
    }

    /// `len` characters drawn from [`CODE_CHARS`].
    fn random_chars(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| CODE_CHARS[self.rng.gen_range(0..CODE_CHARS.len())] as char)
            .collect()
    }
}

/// `n` with commas between groups of three digits (`1,234,567`).
fn thousands(n: i64) -> String {
    let digits = n.abs().to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    if n < 0 {
        format!("-{out}")
    } else {
        out
    }
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}

/// What the kinds' tests share: the DejaVu pool and documents by seed.
#[cfg(test)]
mod test_support {
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    use super::{generate, Document, Kind};
    use crate::fonts::{self, LoadedFont};

    /// DejaVu, which is on every machine the project builds on (fonts-dejavu-core / -extra).
    pub fn pool() -> Vec<LoadedFont> {
        fonts::load_all(&fonts::dejavu()).expect("DejaVu fonts (apt-get install fonts-dejavu)")
    }

    /// `n` documents of `kind`, seeds `0..n`.
    pub fn documents(kind: Kind, n: u64) -> Vec<Document> {
        let pool = pool();
        (0..n)
            .map(|seed| {
                let mut rng = ChaCha8Rng::seed_from_u64(seed);
                let doc = generate(kind, &pool, &mut rng).unwrap();
                assert_eq!(doc.kind, kind);
                doc
            })
            .collect()
    }

    /// The segments of the document's lines, top to bottom (rules and spaces left out).
    pub fn lines(doc: &Document) -> Vec<Vec<String>> {
        doc.layout
            .items
            .iter()
            .filter_map(|item| match item {
                crate::render::Item::Line { segments, .. } => {
                    Some(segments.iter().map(|s| s.text.clone()).collect())
                }
                _ => None,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_names_parse_back() {
        for k in Kind::ALL {
            assert_eq!(Kind::parse(k.name()).unwrap(), k);
        }
        let err = Kind::parse("poster").unwrap_err().to_string();
        assert!(
            err.contains("\"poster\"") && err.contains("word, glyph"),
            "{err}"
        );
    }

    #[test]
    fn money_is_cents_with_two_decimals() {
        assert_eq!(money(0), "0.00");
        assert_eq!(money(7), "0.07");
        assert_eq!(money(1250), "12.50");
    }

    #[test]
    fn an_empty_pool_is_an_error() {
        let mut rng = rand::rngs::mock::StepRng::new(0, 1);
        assert!(generate(Kind::Line, &[], &mut rng).is_err());
    }
}
