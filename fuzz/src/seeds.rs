//! The seed corpus: real files of each format from the golden cases (`../shared/golden`),
//! `examples/` and the built-in model, plus small files made here for the formats the tree
//! holds no small example of (tar shards, PDFs, HTTP requests, each image container).
//! `bench/fuzz.sh` writes them once; AFL++ grows the corpus from them.

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use base64::Engine;
use image::{ImageFormat, RgbImage};

use crate::fixtures::model_dir;
use crate::{Target, MAX_INPUT_BYTES};

/// The golden reference cases beside the project.
fn golden_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/golden")
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

/// Writes every target's seeds under `out/TARGET/`; returns how many files each got.
pub fn write_all(out: &Path) -> Result<BTreeMap<&'static str, usize>> {
    let mut counts = BTreeMap::new();
    for t in Target::ALL {
        let dir = out.join(t.name());
        std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
        let mut n = 0;
        for (name, bytes) in seeds(t)? {
            if bytes.len() > MAX_INPUT_BYTES {
                continue;
            }
            let p = dir.join(name);
            std::fs::write(&p, bytes).with_context(|| format!("writing {}", p.display()))?;
            n += 1;
        }
        counts.insert(t.name(), n);
    }
    Ok(counts)
}

/// Reads `dir/name` when it exists (the golden cases may be absent on a bare checkout).
fn file(dir: &Path, name: &str) -> Option<(String, Vec<u8>)> {
    let p = dir.join(name);
    let bytes = std::fs::read(&p).ok()?;
    Some((name.replace('/', "-"), bytes))
}

/// A picture with some structure (a page crop), encoded as `format`.
fn encoded(img: &RgbImage, format: ImageFormat) -> Result<Vec<u8>> {
    let mut out = Cursor::new(Vec::new());
    img.write_to(&mut out, format)?;
    Ok(out.into_inner())
}

/// A small crop of a generated document: text strokes, a few dozen pixels a side.
fn sample_image() -> Result<RgbImage> {
    let p = examples_dir().join("docgen-date.png");
    let img = image::open(&p)
        .with_context(|| format!("reading {}", p.display()))?
        .to_rgb8();
    let (w, h) = (img.width().min(48), img.height().min(24));
    Ok(image::imageops::crop_imm(&img, 0, 0, w, h).to_image())
}

fn seeds(t: Target) -> Result<Vec<(String, Vec<u8>)>> {
    let golden = golden_dir();
    let model = model_dir();
    let examples = examples_dir();
    let img = sample_image()?;
    let mut v: Vec<(String, Vec<u8>)> = Vec::new();
    match t {
        Target::Jpeg => {
            v.extend(file(&golden, "preprocess/jpeg.jpg"));
            v.push(("small.jpg".into(), encoded(&img, ImageFormat::Jpeg)?));
            let grey = image::DynamicImage::ImageRgb8(img.clone()).to_luma8();
            let mut out = Cursor::new(Vec::new());
            grey.write_to(&mut out, ImageFormat::Jpeg)?;
            v.push(("grey.jpg".into(), out.into_inner()));
        }
        Target::Preprocess => {
            // The small ones: pixel loops run instrumented, so small images keep the
            // executions per second up (the scheduler favours fast inputs anyway).
            for name in ["tiny.png", "palette.png", "gray.png", "rgba.png"] {
                v.extend(file(&golden.join("preprocess"), name));
            }
            for (name, f) in [
                ("small.png", ImageFormat::Png),
                ("small.jpg", ImageFormat::Jpeg),
                ("small.bmp", ImageFormat::Bmp),
                ("small.tiff", ImageFormat::Tiff),
                ("small.gif", ImageFormat::Gif),
                ("small.webp", ImageFormat::WebP),
            ] {
                v.push((name.into(), encoded(&img, f)?));
            }
        }
        Target::Pdf => {
            v.push(("text.pdf".into(), pdf(&[&["Total 12.50", "Thank you"]], "")));
            v.push((
                "two-pages.pdf".into(),
                pdf(&[&["Page one"], &["Page two"]], ""),
            ));
            v.push((
                "rotated-boxed.pdf".into(),
                pdf(&[&["Invoice 2024-06"]], "/Rotate 90 /CropBox [0 0 300 200]"),
            ));
            v.push(("drawing.pdf".into(), drawing_pdf()));
            v.push(("page.png".into(), encoded(&img, ImageFormat::Png)?));
        }
        Target::Configs => {
            for case in ["one-image", "text-only", "two-images", "large-image"] {
                let dir = golden.join(case).join("checkpoint");
                for name in [
                    "config.json",
                    "preprocessor_config.json",
                    "generation_config.json",
                ] {
                    v.extend(file(&dir, name).map(|(n, b)| (format!("{case}-{n}"), b)));
                }
            }
            v.extend(file(&examples, "preprocessor_config.json"));
            v.extend(file(&model, "generation_config.json"));
        }
        Target::Safetensors => {
            v.push(("tensors.safetensors".into(), small_safetensors()?));
            v.push(("embed.safetensors".into(), embedding_table()?));
            let index = serde_json::json!({
                "metadata": {"total_size": 64},
                "weight_map": {"a": "inside.bin", "b": "sub/inner.bin"}
            });
            v.push(("index.json".into(), serde_json::to_vec_pretty(&index)?));
        }
        Target::Manifest => {
            let (name, text) = file(&model, "manifest.json").context("the built-in manifest")?;
            let mut m: serde_json::Value = serde_json::from_slice(&text)?;
            v.push((name, text));
            if let Some(files) = m["files"].as_array_mut() {
                if let Some(first) = files.first_mut() {
                    first["path"] = "escape/outside.bin".into();
                }
            }
            v.push(("escaping-link.json".into(), serde_json::to_vec(&m)?));
        }
        Target::Onnx => {
            for name in ["vision.onnx", "decoder.onnx", "lines.onnx"] {
                v.extend(file(&model, name));
            }
        }
        Target::Tokenizer => v.extend(file(&model, "tokenizer.json")),
        Target::TrainData => {
            v.push(("shard.tar".into(), shard(&img)?));
            let jsonl = "{\"prompt_ids\": [1, 2, 3], \"response_ids\": [4, 5]}\n\n\
                         {\"prompt_ids\": [7], \"response_ids\": [8], \"images\": []}\n";
            v.push(("data.jsonl".into(), jsonl.as_bytes().to_vec()));
        }
        Target::Serve => v.extend(requests(&img)?),
    }
    Ok(v)
}

/// A PDF whose pages (each a list of text lines in Helvetica) carry `page_extra` in their
/// page dictionaries. Objects: 1 catalog, 2 page tree, 3 font, then page and content
/// stream pairs.
fn pdf(pages: &[&[&str]], page_extra: &str) -> Vec<u8> {
    let mut objects: Vec<Vec<u8>> = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        Vec::new(),
        b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>".to_vec(),
    ];
    let mut kids = Vec::new();
    for (k, lines) in pages.iter().enumerate() {
        let page_obj = 4 + 2 * k;
        kids.push(format!("{page_obj} 0 R"));
        let mut content = String::from("BT /F1 18 Tf 20 TL 40 150 Td\n");
        for l in lines.iter() {
            content.push_str(&format!("({l}) Tj T*\n"));
        }
        content.push_str("ET\n");
        objects.push(
            format!(
                "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] \
                 /Resources << /Font << /F1 3 0 R >> >> /Contents {} 0 R {page_extra} >>",
                page_obj + 1
            )
            .into_bytes(),
        );
        objects.push(stream(content.as_bytes()));
    }
    objects[1] = format!(
        "<< /Type /Pages /Kids [{}] /Count {} >>",
        kids.join(" "),
        pages.len()
    )
    .into_bytes();
    pdf_file(&objects)
}

/// A page of lines and filled boxes (a form's rules), no text.
fn drawing_pdf() -> Vec<u8> {
    let content =
        b"0.5 w 20 20 m 280 20 l S 1 0 0 rg 30 40 100 30 re f 0 0 1 RG 150 40 100 60 re S";
    let objects = vec![
        b"<< /Type /Catalog /Pages 2 0 R >>".to_vec(),
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>".to_vec(),
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 300 200] /Contents 4 0 R >>".to_vec(),
        stream(content),
    ];
    pdf_file(&objects)
}

fn stream(data: &[u8]) -> Vec<u8> {
    let mut body = format!("<< /Length {} >>\nstream\n", data.len()).into_bytes();
    body.extend_from_slice(data);
    body.extend_from_slice(b"\nendstream");
    body
}

/// Header, numbered objects, a cross-reference table of their offsets, the trailer.
fn pdf_file(objects: &[Vec<u8>]) -> Vec<u8> {
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, body) in objects.iter().enumerate() {
        offsets.push(out.len());
        out.extend_from_slice(format!("{} 0 obj\n", i + 1).as_bytes());
        out.extend_from_slice(body);
        out.extend_from_slice(b"\nendobj\n");
    }
    let xref = out.len();
    out.extend_from_slice(
        format!("xref\n0 {}\n0000000000 65535 f \n", objects.len() + 1).as_bytes(),
    );
    for off in offsets {
        out.extend_from_slice(format!("{off:010} 00000 n \n").as_bytes());
    }
    out.extend_from_slice(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objects.len() + 1
        )
        .as_bytes(),
    );
    out
}

fn safetensors_bytes(
    tensors: Vec<(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Result<Vec<u8>> {
    let views = tensors
        .iter()
        .map(|(n, d, s, b)| {
            Ok((
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b)?,
            ))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(safetensors::serialize(views, metadata)?)
}

/// A few tensors of the dtypes checkpoints hold.
fn small_safetensors() -> Result<Vec<u8>> {
    use safetensors::Dtype;
    let f32s: Vec<u8> = [1.0f32, -2.0, 0.5, 3.25]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let ids: Vec<u8> = [1i64, 20, 300]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    safetensors_bytes(
        vec![
            ("model.w", Dtype::F32, vec![2, 2], f32s),
            (
                "model.b",
                Dtype::BF16,
                vec![2],
                vec![0x80, 0x3f, 0x00, 0x40],
            ),
            ("ids", Dtype::I64, vec![1, 3], ids),
            ("mask", Dtype::U8, vec![3], vec![0, 1, 1]),
        ],
        None,
    )
}

/// An embedding table as the runtime maps it: 8 rows of the built-in model's width.
fn embedding_table() -> Result<Vec<u8>> {
    let text = std::fs::read_to_string(model_dir().join("manifest.json"))?;
    let m: serde_json::Value = serde_json::from_str(&text)?;
    let hidden = m["model"]["text_config"]["hidden_size"]
        .as_u64()
        .context("the built-in manifest's hidden size")? as usize;
    let data: Vec<u8> = (0..8 * hidden)
        .flat_map(|i| (i as f32 * 0.01).to_le_bytes())
        .collect();
    safetensors_bytes(
        vec![(
            ove_runtime::embed::EMBED_TENSOR,
            safetensors::Dtype::F32,
            vec![8, hidden],
            data,
        )],
        None,
    )
}

/// A WebDataset shard: a sample with one image, one without, and a member to ignore.
fn shard(img: &RgbImage) -> Result<Vec<u8>> {
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: &str, data: &[u8]| -> Result<()> {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        h.set_cksum();
        b.append_data(&mut h, name, data)?;
        Ok(())
    };
    add(
        "a.json",
        br#"{"prompt_ids": [1, 151655, 2], "response_ids": [3]}"#,
    )?;
    add("a.png", &encoded(img, ImageFormat::Png)?)?;
    add(
        "b.json",
        br#"{"prompt_ids": [5, 6], "response_ids": [7, 8]}"#,
    )?;
    add("b.txt", b"ignored")?;
    Ok(b.into_inner()?)
}

/// HTTP/1.1 requests for every route, with the bodies clients send.
fn requests(img: &RgbImage) -> Result<Vec<(String, Vec<u8>)>> {
    let png = encoded(img, ImageFormat::Png)?;
    let data_uri = format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(&png)
    );
    let post = |path: &str, ct: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: {ct}\r\nContent-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let chat = serde_json::json!({
        "model": "any",
        "messages": [
            {"role": "system", "content": "Read the text."},
            {"role": "user", "content": [
                {"type": "text", "text": "What does it say?"},
                {"type": "image_url", "image_url": {"url": data_uri}}
            ]}
        ],
        "max_tokens": 16, "temperature": 0.5, "top_p": 0.9, "seed": 3,
        "stop": ["\n\n"], "stream": true, "stream_options": {"include_usage": true}
    });
    let allowed_url = format!(
        "file://{}",
        crate::fixtures::root().join("allowed/page.png").display()
    );
    let file_chat = serde_json::json!({
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": allowed_url}}
        ]}]
    });
    let boundary = "XyZ";
    let mut multipart = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"p.png\"\r\n\
         Content-Type: image/png\r\n\r\n"
    )
    .into_bytes();
    multipart.extend_from_slice(&png);
    multipart.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    let mut chunked =
        b"POST /v1/ocr?format=json HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nTransfer-Encoding: chunked\r\n\r\n"
            .to_vec();
    chunked.extend_from_slice(format!("{:x}\r\n", png.len()).as_bytes());
    chunked.extend_from_slice(&png);
    chunked.extend_from_slice(b"\r\n0\r\n\r\n");
    Ok(vec![
        (
            "health.http".into(),
            b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        ),
        (
            "models-metrics.http".into(),
            b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\nGET /metrics HTTP/1.1\r\nHost: x\r\n\r\n"
                .to_vec(),
        ),
        (
            "chat.http".into(),
            post(
                "/v1/chat/completions",
                "application/json",
                &serde_json::to_vec(&chat)?,
            ),
        ),
        (
            "chat-file.http".into(),
            post(
                "/v1/chat/completions",
                "application/json",
                &serde_json::to_vec(&file_chat)?,
            ),
        ),
        ("ocr-raw.http".into(), post("/v1/ocr", "image/png", &png)),
        (
            "ocr-pdf.http".into(),
            post(
                "/v1/ocr?prompt=Read",
                "application/pdf",
                &pdf(&[&["Total 3.00"]], ""),
            ),
        ),
        (
            "ocr-multipart.http".into(),
            post(
                "/v1/ocr",
                &format!("multipart/form-data; boundary={boundary}"),
                &multipart,
            ),
        ),
        ("ocr-chunked.http".into(), chunked),
    ])
}
