//! Document content and layout: single lines, paragraphs, receipts, forms and tables.

use anyhow::{bail, Result};
use rand::seq::SliceRandom;
use rand::Rng;

use crate::fonts::{LoadedFont, Style};
use crate::render::{text_width, Item, Layout, Segment};
use crate::words::*;

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

/// A receipt's numbers, in cents: `subtotal` is the sum of the item amounts and `total` is
/// `subtotal + tax`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// (name, quantity, unit price).
    pub items: Vec<(String, i64, i64)>,
    pub subtotal: i64,
    pub tax_percent: i64,
    pub tax: i64,
    pub total: i64,
    /// The total as printed (with its currency sign, if any).
    pub total_text: String,
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

    /// A font index, preferring `style` when the pool has one.
    fn font(&mut self, style: Option<Style>, bold: bool) -> usize {
        let want: Vec<usize> = (0..self.pool.len())
            .filter(|&i| {
                let s = &self.pool[i].spec;
                style.is_none_or(|st| s.style == st) && s.bold == bold
            })
            .collect();
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

    /// The bold face of `font`'s family if the pool has it, else `font`.
    fn bold_of(&self, font: usize) -> usize {
        let name = self.pool[font].spec.name;
        if self.pool[font].spec.bold {
            return font;
        }
        let bold = format!("{name}-bold");
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

    fn phone(&mut self) -> String {
        format!(
            "+{} {} {:03} {:04}",
            self.rng.gen_range(1..99),
            self.rng.gen_range(10..999),
            self.rng.gen_range(0..1000),
            self.rng.gen_range(0..10000)
        )
    }

    // ---- kinds ----

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
        Document {
            kind,
            layout,
            questions: vec![],
            receipt: None,
            fields: vec![],
        }
    }

    fn word(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(16.0..36.0f32).round();
        let text = match self.rng.gen_range(0..6) {
            0 => self.rng.gen_range(0..100_000).to_string(),
            1 => money(self.rng.gen_range(1..100_000)),
            2 => self.date(),
            3 => self.full_name(),
            _ => {
                let n = self.rng.gen_range(1..3);
                (0..n)
                    .map(|_| self.pick(WORDS).to_string())
                    .collect::<Vec<_>>()
                    .join(" ")
            }
        };
        let margin = self.rng.gen_range(4.0..12.0f32).round();
        self.single_line(Kind::Word, font, size, text, margin)
    }

    /// `len` characters drawn from [`CODE_CHARS`].
    fn random_chars(&mut self, len: usize) -> String {
        (0..len)
            .map(|_| CODE_CHARS[self.rng.gen_range(0..CODE_CHARS.len())] as char)
            .collect()
    }

    fn glyph(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(24.0..48.0f32).round();
        let len = self.rng.gen_range(1..4);
        let text = self.random_chars(len);
        let margin = self.rng.gen_range(4.0..12.0f32).round();
        self.single_line(Kind::Glyph, font, size, text, margin)
    }

    fn code(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(16.0..36.0f32).round();
        let groups = self.rng.gen_range(1..4);
        let text = (0..groups)
            .map(|_| {
                let len = self.rng.gen_range(2..7);
                self.random_chars(len)
            })
            .collect::<Vec<_>>()
            .join(if self.rng.gen_bool(0.5) { " " } else { "-" });
        let margin = self.rng.gen_range(4.0..12.0f32).round();
        self.single_line(Kind::Code, font, size, text, margin)
    }

    fn line(&mut self) -> Document {
        let font = self.line_font();
        let size = self.rng.gen_range(18.0..44.0f32).round();
        let words = self.rng.gen_range(2..9);
        let text = match self.rng.gen_range(0..4) {
            0 => format!("{} {}", self.full_name(), self.date()),
            1 => format!(
                "{}, {} {}",
                self.pick(STREETS),
                self.rng.gen_range(1..300),
                self.pick(CITIES)
            ),
            _ => self.sentence(words),
        };
        let margin = self.rng.gen_range(8.0..24.0f32).round();
        self.single_line(Kind::Line, font, size, text, margin)
    }

    fn paragraph(&mut self) -> Document {
        let font = self.body_font();
        let bold = self.bold_of(font);
        let size = self.rng.gen_range(15.0..26.0f32).round();
        let margin = self.rng.gen_range(16.0..40.0f32).round();
        let text_w = self.rng.gen_range(18.0..34.0f32) * size;
        let mut items = Vec::new();
        if self.rng.gen_bool(0.6) {
            let title = self.pick(PARAGRAPH_TITLES).to_string();
            let tsize = (size * self.rng.gen_range(1.2..1.7f32)).round();
            items.push(Item::Line {
                segments: vec![Self::seg(title, bold, margin)],
                size: tsize,
            });
            items.push(Item::Space(size * 0.4));
        }
        let paragraphs = self.rng.gen_range(1..3);
        for p in 0..paragraphs {
            if p > 0 {
                items.push(Item::Space(size * 0.6));
            }
            let sentences = self.rng.gen_range(2..5);
            let mut words: Vec<String> = Vec::new();
            for _ in 0..sentences {
                let n = self.rng.gen_range(4..12);
                words.extend(self.sentence(n).split(' ').map(str::to_string));
            }
            // Greedy word wrap at the measured width.
            let mut line = String::new();
            for w in words {
                let candidate = if line.is_empty() {
                    w.clone()
                } else {
                    format!("{line} {w}")
                };
                if !line.is_empty() && self.width(font, size, &candidate) > text_w {
                    items.push(Item::Line {
                        segments: vec![Self::seg(std::mem::take(&mut line), font, margin)],
                        size,
                    });
                    line = w;
                } else {
                    line = candidate;
                }
            }
            if !line.is_empty() {
                items.push(Item::Line {
                    segments: vec![Self::seg(line, font, margin)],
                    size,
                });
            }
        }
        let widest = items
            .iter()
            .filter_map(|i| match i {
                Item::Line { segments, size } => {
                    Some(self.width(segments[0].font, *size, &segments[0].text))
                }
                _ => None,
            })
            .fold(0.0, f32::max);
        let layout = self.layout(widest + 2.0 * margin, margin, items);
        Document {
            kind: Kind::Paragraph,
            layout,
            questions: vec![],
            receipt: None,
            fields: vec![],
        }
    }

    fn receipt(&mut self) -> Document {
        let font = if self.rng.gen_bool(0.7) {
            self.font(Some(Style::Mono), false)
        } else {
            self.body_font()
        };
        let bold = self.bold_of(font);
        let size = self.rng.gen_range(15.0..24.0f32).round();
        let margin = self.rng.gen_range(14.0..30.0f32).round();

        let n = self.rng.gen_range(2..8);
        let mut items = Vec::new();
        let names: Vec<&str> = ITEMS.choose_multiple(self.rng, n).copied().collect();
        for name in names {
            let name = name.to_string();
            let qty = if self.rng.gen_bool(0.7) {
                1
            } else {
                self.rng.gen_range(2..5)
            };
            let unit = self.rng.gen_range(25..2500);
            items.push((name, qty, unit));
        }
        let subtotal: i64 = items.iter().map(|(_, q, u)| q * u).sum();
        let tax_percent = *[0i64, 5, 7, 8, 10, 20].choose(self.rng).unwrap_or(&0);
        // Rounded half up, in whole cents.
        let tax = (subtotal * tax_percent + 50) / 100;
        let total = subtotal + tax;
        let currency = *["", "", "$", "€", "£"].choose(self.rng).unwrap_or(&"");
        let total_text = format!("{currency}{}", money(total));

        // Rows of (left, right, bold); `None` for a rule.
        let mut rows: Vec<Option<(String, String, bool)>> = Vec::new();
        for (name, qty, unit) in &items {
            let left = if *qty > 1 {
                format!("{name} {qty} x {}", money(*unit))
            } else {
                name.clone()
            };
            rows.push(Some((left, money(qty * unit), false)));
        }
        rows.push(None);
        if tax_percent > 0 {
            rows.push(Some(("SUBTOTAL".into(), money(subtotal), false)));
            rows.push(Some((format!("TAX {tax_percent}%"), money(tax), false)));
        }
        rows.push(Some(("TOTAL".into(), total_text.clone(), true)));
        if self.rng.gen_bool(0.5) {
            let step = *[500i64, 1000, 2000, 5000].choose(self.rng).unwrap_or(&1000);
            let cash = (total / step + 1) * step;
            rows.push(Some(("CASH".into(), money(cash), false)));
            rows.push(Some(("CHANGE".into(), money(cash - total), false)));
        }

        let store = self.pick(STORES).to_string();
        let address = format!(
            "{} {}, {}",
            self.rng.gen_range(1..200),
            self.pick(STREETS),
            self.pick(CITIES)
        );
        let hh = self.rng.gen_range(7..22);
        let mm = self.rng.gen_range(0..60);
        let stamp = format!("{} {hh:02}:{mm:02}", self.date_in(2015..2027));
        let footer = *[
            "THANK YOU",
            "Thank you for shopping!",
            "Please come again",
            "Keep this receipt",
        ]
        .choose(self.rng)
        .unwrap_or(&"THANK YOU");
        let head_size = (size * 1.3).round();

        // Width: the widest row with a gap, the header, the footer.
        let gap = size * 2.0;
        let mut inner = self.width(bold, head_size, &store);
        for t in [&address, &stamp] {
            inner = inner.max(self.width(font, size, t));
        }
        inner = inner.max(self.width(font, size, footer));
        for (l, r, b) in rows.iter().flatten() {
            let f = if *b { bold } else { font };
            inner = inner.max(self.width(f, size, l) + gap + self.width(f, size, r));
        }
        let inner = inner.max(size * 14.0);
        let width = inner + 2.0 * margin;
        let right = margin + inner;
        let centre =
            |this: &Self, f: usize, s: f32, t: &str| margin + (inner - this.width(f, s, t)) / 2.0;

        let mut out = Vec::new();
        out.push(Item::Line {
            segments: vec![Self::seg(
                store.clone(),
                bold,
                centre(self, bold, head_size, &store),
            )],
            size: head_size,
        });
        for t in [address, stamp] {
            let x = centre(self, font, size, &t);
            out.push(Item::Line {
                segments: vec![Self::seg(t, font, x)],
                size,
            });
        }
        out.push(Item::Rule {
            x0: margin,
            x1: right,
            thickness: 1.5,
        });
        for row in rows {
            match row {
                None => out.push(Item::Rule {
                    x0: margin,
                    x1: right,
                    thickness: 1.0,
                }),
                Some((l, r, b)) => {
                    let f = if b { bold } else { font };
                    let rx = right - self.width(f, size, &r);
                    out.push(Item::Line {
                        segments: vec![Self::seg(l, f, margin), Self::seg(r, f, rx)],
                        size,
                    });
                }
            }
        }
        out.push(Item::Space(size * 0.5));
        let x = centre(self, font, size, footer);
        out.push(Item::Line {
            segments: vec![Self::seg(footer, font, x)],
            size,
        });
        let layout = self.layout(width, margin, out);
        let receipt = Receipt {
            items,
            subtotal,
            tax_percent,
            tax,
            total,
            total_text: total_text.clone(),
        };
        Document {
            kind: Kind::Receipt,
            layout,
            questions: vec![
                ("What is the total?".into(), total_text),
                ("What is the name of the store?".into(), store),
            ],
            receipt: Some(receipt),
            fields: vec![],
        }
    }

    fn field_value(&mut self, label: &str) -> String {
        match label {
            "Name" | "Full name" | "Contact" => self.full_name(),
            "Date of birth" => self.date_in(1940..2008),
            "Date" | "Issue date" => self.date_in(2000..2027),
            "Address" => format!("{} {}", self.rng.gen_range(1..300), self.pick(STREETS)),
            "City" => self.pick(CITIES).to_string(),
            "Country" => self.pick(COUNTRIES).to_string(),
            "Phone" => self.phone(),
            "Email" => format!(
                "{}.{}@example.com",
                self.pick(FIRST_NAMES).to_lowercase(),
                self.pick(LAST_NAMES).to_lowercase()
            )
            .replace(['é', 'ü', 'ó'], "e"),
            "Account No." | "Invoice No." | "Reference" => format!(
                "{}{}-{:05}",
                (b'A' + self.rng.gen_range(0..26u8)) as char,
                (b'A' + self.rng.gen_range(0..26u8)) as char,
                self.rng.gen_range(0..100000)
            ),
            "Amount" => money(self.rng.gen_range(100..500000)),
            "Quantity" => self.rng.gen_range(1..500).to_string(),
            _ => self.pick(WORDS).to_string(),
        }
    }

    fn form(&mut self) -> Document {
        const LABELS: &[&str] = &[
            "Name",
            "Date of birth",
            "Address",
            "City",
            "Country",
            "Phone",
            "Email",
            "Account No.",
            "Invoice No.",
            "Reference",
            "Amount",
            "Quantity",
            "Date",
        ];
        let font = self.body_font();
        let label_font = if self.rng.gen_bool(0.6) {
            self.bold_of(font)
        } else {
            font
        };
        let size = self.rng.gen_range(15.0..26.0f32).round();
        let margin = self.rng.gen_range(16.0..40.0f32).round();
        let title = self.pick(FORM_TITLES).to_string();
        let title_font = self.bold_of(font);
        let title_size = (size * 1.4).round();
        let colon = self.rng.gen_bool(0.8);

        let n = self.rng.gen_range(4..9);
        let mut labels: Vec<&str> = LABELS.to_vec();
        labels.shuffle(self.rng);
        labels.truncate(n);
        let fields: Vec<(String, String)> = labels
            .iter()
            .map(|l| (l.to_string(), self.field_value(l)))
            .collect();
        let shown = |l: &str| {
            if colon {
                format!("{l}:")
            } else {
                l.to_string()
            }
        };
        let label_w = fields
            .iter()
            .map(|(l, _)| self.width(label_font, size, &shown(l)))
            .fold(0.0, f32::max);
        let value_x = margin + label_w + size * self.rng.gen_range(0.8..3.0f32);
        let value_w = fields
            .iter()
            .map(|(_, v)| self.width(font, size, v))
            .fold(0.0, f32::max);
        let width = (value_x + value_w + margin)
            .max(self.width(title_font, title_size, &title) + 2.0 * margin);

        let mut items = vec![
            Item::Line {
                segments: vec![Self::seg(title, title_font, margin)],
                size: title_size,
            },
            Item::Rule {
                x0: margin,
                x1: width - margin,
                thickness: 2.0,
            },
        ];
        for (l, v) in &fields {
            items.push(Item::Line {
                segments: vec![
                    Self::seg(shown(l), label_font, margin),
                    Self::seg(v.clone(), font, value_x),
                ],
                size,
            });
            items.push(Item::Space(size * 0.3));
        }
        let questions = fields
            .iter()
            .map(|(l, v)| (format!("What is the value of {l}?"), v.clone()))
            .collect();
        let layout = self.layout(width, margin, items);
        Document {
            kind: Kind::Form,
            layout,
            questions,
            receipt: None,
            fields,
        }
    }

    fn table(&mut self) -> Document {
        let font = self.body_font();
        let bold = self.bold_of(font);
        let size = self.rng.gen_range(14.0..24.0f32).round();
        let margin = self.rng.gen_range(14.0..36.0f32).round();
        let rows_n = self.rng.gen_range(3..8);
        // Header and rows; `true` columns are numbers, right aligned.
        let (header, numeric, rows): (Vec<&str>, Vec<bool>, Vec<Vec<String>>) =
            match self.rng.gen_range(0..3) {
                0 => {
                    let rows = (0..rows_n)
                        .map(|_| {
                            let q = self.rng.gen_range(1..20i64);
                            let p = self.rng.gen_range(100..20000i64);
                            vec![
                                self.pick(PRODUCTS).to_string(),
                                q.to_string(),
                                money(p),
                                money(p * q),
                            ]
                        })
                        .collect();
                    (
                        vec!["Item", "Qty", "Price", "Amount"],
                        vec![false, true, true, true],
                        rows,
                    )
                }
                1 => {
                    let rows = (0..rows_n)
                        .map(|_| {
                            vec![
                                self.date(),
                                self.pick(DESCRIPTIONS).to_string(),
                                money(self.rng.gen_range(100..900000)),
                            ]
                        })
                        .collect();
                    (
                        vec!["Date", "Description", "Amount"],
                        vec![false, false, true],
                        rows,
                    )
                }
                _ => {
                    let rows = (0..rows_n)
                        .map(|_| {
                            vec![
                                self.full_name(),
                                self.pick(CITIES).to_string(),
                                self.phone(),
                            ]
                        })
                        .collect();
                    (
                        vec!["Name", "City", "Phone"],
                        vec![false, false, false],
                        rows,
                    )
                }
            };
        let gap = size * self.rng.gen_range(1.5..3.0f32);
        let cols = header.len();
        let mut col_w = vec![0.0f32; cols];
        for c in 0..cols {
            col_w[c] = self.width(bold, size, header[c]);
            for r in &rows {
                col_w[c] = col_w[c].max(self.width(font, size, &r[c]));
            }
        }
        let mut col_x = vec![margin; cols];
        for c in 1..cols {
            col_x[c] = col_x[c - 1] + col_w[c - 1] + gap;
        }
        let right = col_x[cols - 1] + col_w[cols - 1];
        let place = |this: &Self, f: usize, c: usize, t: &str| {
            if numeric[c] {
                col_x[c] + col_w[c] - this.width(f, size, t)
            } else {
                col_x[c]
            }
        };
        let mut items = Vec::new();
        if self.rng.gen_bool(0.5) {
            let titles: &[&str] = match header[0] {
                "Item" => &["Price List", "Inventory", "Order Summary"],
                "Date" => &["Statement", "Expenses", "Transactions"],
                _ => &["Contacts", "Staff Directory", "Participants"],
            };
            let title = self.pick(titles);
            items.push(Item::Line {
                segments: vec![Self::seg(title, bold, margin)],
                size: (size * 1.3).round(),
            });
        }
        items.push(Item::Line {
            segments: (0..cols)
                .map(|c| Self::seg(header[c], bold, place(self, bold, c, header[c])))
                .collect(),
            size,
        });
        items.push(Item::Rule {
            x0: margin,
            x1: right,
            thickness: 1.5,
        });
        for r in &rows {
            items.push(Item::Line {
                segments: (0..cols)
                    .map(|c| Self::seg(r[c].clone(), font, place(self, font, c, &r[c])))
                    .collect(),
                size,
            });
        }
        items.push(Item::Rule {
            x0: margin,
            x1: right,
            thickness: 1.0,
        });
        let layout = self.layout(right + margin, margin, items);
        Document {
            kind: Kind::Table,
            layout,
            questions: vec![],
            receipt: None,
            fields: vec![],
        }
    }
}

fn capitalize(w: &str) -> String {
    let mut c = w.chars();
    match c.next() {
        Some(f) => f.to_uppercase().collect::<String>() + c.as_str(),
        None => String::new(),
    }
}
