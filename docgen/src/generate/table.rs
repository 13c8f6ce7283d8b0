//! `table`: a header row over three to seven rows in aligned columns (products with
//! quantities and prices, dated transactions, or contacts), with an optional title.
//!
//! Reading by columns: number columns are right aligned and the gaps between columns are
//! wide, so the model has to keep a row's cells together in reading order.

use rand::Rng;

use super::{money, Builder, Document, Kind};
use crate::render::Item;
use crate::words::{CITIES, DESCRIPTIONS, PRODUCTS};

impl<R: Rng> Builder<'_, R> {
    pub(super) fn table(&mut self) -> Document {
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
        Document::plain(Kind::Table, layout)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{documents, lines};
    use super::*;

    #[test]
    fn every_row_has_a_cell_per_header_column() {
        for doc in documents(Kind::Table, 20) {
            let lines = lines(&doc);
            let header = lines
                .iter()
                .position(|l| l.len() > 1)
                .expect("a header row");
            // Only a title may come before the header.
            assert!(header <= 1, "{lines:?}");
            let cols = lines[header].len();
            let rows = &lines[header + 1..];
            assert!((3..8).contains(&rows.len()), "{lines:?}");
            assert!(rows.iter().all(|r| r.len() == cols), "{lines:?}");
        }
    }
}
