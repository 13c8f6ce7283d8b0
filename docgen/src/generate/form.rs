//! `form`: a titled key-value form: four to eight labelled fields (names, dates, addresses,
//! phone numbers, e-mail addresses, account numbers, amounts) with the values in a column.
//!
//! Key-value extraction: every field becomes a question ("What is the value of Phone?")
//! whose answer is printed beside its label.

use rand::seq::SliceRandom;
use rand::Rng;

use super::{money, Builder, Document, Kind};
use crate::render::Item;
use crate::words::{CITIES, COUNTRIES, FIRST_NAMES, FORM_TITLES, LAST_NAMES, STREETS, WORDS};

impl<R: Rng> Builder<'_, R> {
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

    pub(super) fn form(&mut self) -> Document {
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
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{documents, lines};
    use super::*;

    #[test]
    fn each_field_is_a_label_and_its_value_on_one_line() {
        for doc in documents(Kind::Form, 20) {
            assert!((4..9).contains(&doc.fields.len()), "{:?}", doc.fields);
            let lines = lines(&doc);
            // The title, then one line per field.
            assert_eq!(lines.len(), doc.fields.len() + 1, "{lines:?}");
            for ((label, value), line) in doc.fields.iter().zip(&lines[1..]) {
                assert_eq!(line.len(), 2, "{line:?}");
                assert_eq!(line[0].trim_end_matches(':'), label);
                assert_eq!(&line[1], value);
            }
            assert_eq!(doc.questions.len(), doc.fields.len());
        }
    }
}
