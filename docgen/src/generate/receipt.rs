//! `receipt`: a till receipt: store, address and time stamp centred at the top, item rows
//! with right-aligned amounts, subtotal, tax and total, sometimes cash and change, and a
//! footer.
//!
//! Two columns on one line and numbers that have to be read exactly: the totals really add
//! up ([`Receipt`] keeps them), so questions about them have one right answer.

use rand::seq::SliceRandom;
use rand::Rng;

use super::{money, Builder, Document, Kind};
use crate::fonts::Style;
use crate::render::Item;
use crate::words::{CITIES, ITEMS, STORES, STREETS};

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

impl<R: Rng> Builder<'_, R> {
    pub(super) fn receipt(&mut self) -> Document {
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::documents;
    use super::*;

    #[test]
    fn the_totals_add_up_and_are_printed() {
        for doc in documents(Kind::Receipt, 20) {
            let r = doc.receipt.as_ref().expect("a receipt's numbers");
            assert!((2..8).contains(&r.items.len()));
            let sum: i64 = r.items.iter().map(|(_, q, u)| q * u).sum();
            assert_eq!(r.subtotal, sum);
            assert_eq!(r.tax, (r.subtotal * r.tax_percent + 50) / 100);
            assert_eq!(r.total, r.subtotal + r.tax);
            assert!(r.total_text.ends_with(&money(r.total)), "{}", r.total_text);
            let text = doc.text();
            assert!(text.contains(&format!("TOTAL {}", r.total_text)), "{text}");
            assert_eq!(
                doc.questions[0],
                ("What is the total?".into(), r.total_text.clone())
            );
        }
    }
}
