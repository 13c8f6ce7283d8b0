//! `ove serve` as programs use it, on loopback: the official `openai` Python client reads
//! what `ove ocr` reads; bad input of every kind gets a JSON 4xx and the server stays up
//! with bounded memory; a full queue answers 429 at once and a client that leaves stops
//! its generation; a server killed mid-stream restarts and serves; a burst of concurrent
//! clients gets answers or 429s, nothing else.

#[path = "serve/harness.rs"]
mod harness;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use harness::{http, request, root, Server};
use serde_json::json;

const IMAGE: &str = "examples/heldout-receipt.png";
const PROMPT: &str = "Read all the text in the image.";

fn ove(args: &[&str]) -> Vec<u8> {
    let out = Command::new(env!("CARGO_BIN_EXE_ove"))
        .current_dir(root())
        .env("OVE_CACHE_DIR", harness::cache())
        .env("RUST_LOG", "warn")
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "ove {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

fn python() -> std::path::PathBuf {
    let py = root().join(".venv/bin/python");
    assert!(
        py.is_file(),
        "{} is missing: run scripts/setup (it installs the openai client)",
        py.display()
    );
    py
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

fn image_uri() -> String {
    format!(
        "data:image/png;base64,{}",
        b64(&std::fs::read(root().join(IMAGE)).unwrap())
    )
}

/// A chat request whose one message is an image at `url`.
fn image_only(url: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": url}}]}]}))
    .unwrap()
}

/// A chat request with the image and `extra` fields.
fn chat(extra: serde_json::Value) -> Vec<u8> {
    let mut body = json!({
        "model": "any",
        "messages": [{"role": "user", "content": [
            {"type": "image_url", "image_url": {"url": image_uri()}},
            {"type": "text", "text": PROMPT},
        ]}],
    });
    for (k, v) in extra.as_object().unwrap() {
        body[k] = v.clone();
    }
    serde_json::to_vec(&body).unwrap()
}

const JSON: (&str, &str) = ("Content-Type", "application/json");

#[test]
fn the_openai_client_reads_what_ove_ocr_reads() {
    let dir = tempfile::tempdir().unwrap();
    let key = dir.path().join("key");
    std::fs::write(&key, "s3cret-key\n").unwrap();
    let server = Server::start(&["--api-key-file", key.to_str().unwrap()]);
    let max_tokens = "40";
    let expect = |name: &str, args: &[&str]| {
        let path = dir.path().join(name);
        std::fs::write(&path, ove(args)).unwrap();
        path.to_str().unwrap().to_string()
    };
    let chat_text = expect(
        "chat.txt",
        &[
            "ocr",
            "--layout",
            "page",
            "--reader",
            "decoder",
            "--max-new-tokens",
            max_tokens,
            "--prompt",
            PROMPT,
            IMAGE,
        ],
    );
    let ocr_text = expect("ocr.txt", &["ocr", IMAGE]);
    let ocr_json = expect("ocr.json", &["ocr", "--json", IMAGE]);
    let out = Command::new(python())
        .current_dir(root())
        .arg("cli/tests/serve/openai_client.py")
        .args(["--base-url", &format!("{}/v1", server.url())])
        .args([
            "--api-key",
            "s3cret-key",
            "--image",
            IMAGE,
            "--prompt",
            PROMPT,
        ])
        .args(["--max-tokens", max_tokens, "--expect-chat", &chat_text])
        .args(["--expect-ocr", &ocr_text, "--expect-ocr-json", &ocr_json])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(out.status.success(), "{said}");
    assert!(said.contains("openai_client: ok"), "{said}");
    // /health needs no key; the rest does.
    assert_eq!(server.get("/health").status, 200);
    server.get("/metrics").assert_json_error(401);
    // One log line per request, with its id, status, tokens and time.
    let log = server.log.lock().unwrap().join("\n");
    let chats: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("endpoint=\"chat\"") || l.contains("endpoint=chat"))
        .collect();
    assert!(chats.len() >= 3, "{log}");
    for l in &chats {
        for field in ["id=", "status=", "tokens=", "ms="] {
            assert!(l.contains(field), "{l}");
        }
    }
}

/// A PNG whose header announces `w` x `h` pixels (no image data after it).
fn png_header(w: u32, h: u32) -> Vec<u8> {
    let mut ihdr = b"IHDR".to_vec();
    ihdr.extend(w.to_be_bytes());
    ihdr.extend(h.to_be_bytes());
    ihdr.extend([8, 2, 0, 0, 0]);
    let crc = crc32(&ihdr);
    let mut png = b"\x89PNG\r\n\x1a\n".to_vec();
    png.extend(13u32.to_be_bytes());
    png.extend(&ihdr);
    png.extend(crc.to_be_bytes());
    png
}

fn crc32(data: &[u8]) -> u32 {
    let mut c = 0xffff_ffffu32;
    for &b in data {
        c ^= u32::from(b);
        for _ in 0..8 {
            c = if c & 1 != 0 {
                0xedb8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
        }
    }
    !c
}

/// A PDF of `pages` pages of `size` x `size` points, each its own object.
fn pdf(pages: usize, size: u32) -> Vec<u8> {
    let kids: Vec<String> = (0..pages).map(|i| format!("{} 0 R", i + 3)).collect();
    let mut objs = vec![
        "<< /Type /Catalog /Pages 2 0 R >>".to_string(),
        format!(
            "<< /Type /Pages /Kids [{}] /Count {pages} >>",
            kids.join(" ")
        ),
    ];
    for _ in 0..pages {
        objs.push(format!(
            "<< /Type /Page /Parent 2 0 R /MediaBox [0 0 {size} {size}] >>"
        ));
    }
    let mut out = b"%PDF-1.4\n".to_vec();
    let mut offsets = Vec::new();
    for (i, o) in objs.iter().enumerate() {
        offsets.push(out.len());
        out.extend(format!("{} 0 obj\n{o}\nendobj\n", i + 1).bytes());
    }
    let xref = out.len();
    out.extend(format!("xref\n0 {}\n0000000000 65535 f \n", objs.len() + 1).bytes());
    for off in offsets {
        out.extend(format!("{off:010} 00000 n \n").bytes());
    }
    out.extend(
        format!(
            "trailer\n<< /Size {} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n",
            objs.len() + 1
        )
        .bytes(),
    );
    out
}

#[test]
fn bad_input_gets_json_errors_and_the_server_stays_up() {
    let server = Server::start(&["--max-body-mb", "1", "--max-pages", "5"]);
    let a = server.addr.clone();
    let post = |path: &str, headers: &[(&str, &str)], body: &[u8]| server.post(path, headers, body);
    let mut seen = Vec::new();
    let mut check = |what: &str, r: harness::Resp, status: u16, needle: &str| {
        let msg = r.assert_json_error(status);
        assert!(
            msg.to_lowercase().contains(&needle.to_lowercase()),
            "{what}: {msg:?} does not say {needle:?}"
        );
        seen.push(format!("{what}: {status} {msg}"));
    };

    let good = chat(json!({"max_tokens": 2}));
    let truncated = &good[..good.len() / 2];
    check(
        "truncated JSON",
        post("/v1/chat/completions", &[JSON], truncated),
        400,
        "EOF",
    );
    check(
        "not JSON",
        post("/v1/chat/completions", &[JSON], b"\x00\xffhello"),
        400,
        "valid",
    );
    check(
        "messages of the wrong type",
        post(
            "/v1/chat/completions",
            &[JSON],
            br#"{"messages": "read it"}"#,
        ),
        400,
        "invalid type",
    );
    check(
        "temperature of the wrong type",
        post(
            "/v1/chat/completions",
            &[JSON],
            &chat(json!({"temperature": "hot"})),
        ),
        400,
        "invalid type",
    );
    check(
        "temperature out of range",
        post(
            "/v1/chat/completions",
            &[JSON],
            &chat(json!({"temperature": 7})),
        ),
        400,
        "temperature",
    );
    check(
        "no messages",
        post("/v1/chat/completions", &[JSON], br#"{"messages": []}"#),
        400,
        "empty",
    );
    check(
        "an unknown role",
        post(
            "/v1/chat/completions",
            &[JSON],
            br#"{"messages": [{"role": "wizard", "content": "x"}]}"#,
        ),
        400,
        "role",
    );
    check(
        "n = 3",
        post("/v1/chat/completions", &[JSON], &chat(json!({"n": 3}))),
        400,
        "one choice",
    );
    check(
        "prompt plus max_tokens over the context",
        post(
            "/v1/chat/completions",
            &[JSON],
            &chat(json!({"max_tokens": 1_000_000})),
        ),
        400,
        "context",
    );
    let r = post(
        "/v1/chat/completions",
        &[JSON],
        &chat(json!({"max_tokens": 1_000_000})),
    );
    assert_eq!(r.json()["error"]["code"], "context_length_exceeded");
    check(
        "a body of the wrong type",
        post(
            "/v1/chat/completions",
            &[("Content-Type", "text/plain")],
            &good,
        ),
        415,
        "application/json",
    );
    // 10x the body limit, announced: refused before the body is sent.
    {
        let mut s = TcpStream::connect(&a).unwrap();
        let head = format!(
            "POST /v1/chat/completions HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n",
            10 << 20
        );
        s.write_all(head.as_bytes()).unwrap();
        let mut buf = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.read_to_end(&mut buf);
        check(
            "10x the body limit (announced)",
            harness::parse(&buf),
            413,
            "limit",
        );
    }
    // 10x the body limit, chunked (no length announced): cut off at the limit.
    {
        let mut s = TcpStream::connect(&a).unwrap();
        s.write_all(
            b"POST /v1/ocr HTTP/1.1\r\nHost: t\r\nContent-Type: image/png\r\n\
              Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
        )
        .unwrap();
        let chunk = vec![b'x'; 64 << 10];
        let mut sent = 0;
        while sent < 10 << 20 {
            let mut c = format!("{:x}\r\n", chunk.len()).into_bytes();
            c.extend(&chunk);
            c.extend(b"\r\n");
            if s.write_all(&c).is_err() {
                break;
            }
            sent += chunk.len();
        }
        let _ = s.write_all(b"0\r\n\r\n");
        let mut buf = Vec::new();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let _ = s.read_to_end(&mut buf);
        if !buf.is_empty() {
            check(
                "10x the body limit (chunked)",
                harness::parse(&buf),
                413,
                "limit",
            );
        } else {
            // The server closed while we were still writing: it read no more than its limit.
            println!("10x the body limit (chunked): connection closed at the limit");
        }
    }
    let bomb = png_header(100_000, 100_000);
    check(
        "a PNG announcing 10^10 pixels (upload)",
        post("/v1/ocr", &[("Content-Type", "image/png")], &bomb),
        400,
        "pixels",
    );
    let bomb_chat = serde_json::to_vec(&json!({"messages": [{"role": "user", "content": [
        {"type": "image_url", "image_url": {"url": format!("data:image/png;base64,{}", b64(&bomb))}},
        {"type": "text", "text": "Read"}]}]}))
    .unwrap();
    check(
        "a PNG announcing 10^10 pixels (chat)",
        post("/v1/chat/completions", &[JSON], &bomb_chat),
        400,
        "pixels",
    );
    check(
        "a non-image upload",
        post(
            "/v1/ocr",
            &[("Content-Type", "application/octet-stream")],
            b"just some text",
        ),
        400,
        "neither a PDF nor",
    );
    check(
        "a PDF of 2000 pages (over --max-pages)",
        post(
            "/v1/ocr",
            &[("Content-Type", "application/pdf")],
            &pdf(2000, 612),
        ),
        400,
        "pages",
    );
    // A page of 200 x 200 inches is rendered at the dpi that keeps it within the page pixel
    // limit, not at 200 dpi (1.6 gigapixels): an answer, in bounded memory.
    let r = post(
        "/v1/ocr",
        &[("Content-Type", "application/pdf")],
        &pdf(1, 14_400),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    println!(
        "a PDF page of 200 x 200 inches: {} {:?}",
        r.status,
        r.text()
    );
    check(
        "a broken PDF",
        post(
            "/v1/ocr",
            &[("Content-Type", "application/pdf")],
            &std::fs::read(root().join("cli/tests/data/broken.pdf")).unwrap(),
        ),
        400,
        "pdf",
    );
    let not_b64 = image_only("data:image/png;base64,@@@@");
    check(
        "a data URI that is not base64",
        post("/v1/chat/completions", &[JSON], &not_b64),
        400,
        "base64",
    );
    let remote = image_only("https://example.com/a.png");
    check(
        "a remote image URL",
        post("/v1/chat/completions", &[JSON], &remote),
        400,
        "offline",
    );
    let file = image_only("file:///etc/passwd");
    check(
        "a file:// URL without --allow-dir",
        post("/v1/chat/completions", &[JSON], &file),
        400,
        "allow-dir",
    );
    check(
        "an unknown route",
        server.get("/v1/nothing"),
        404,
        "no route",
    );
    check(
        "a wrong method",
        server.get("/v1/chat/completions"),
        405,
        "not allowed",
    );
    check(
        "a bad OCR format",
        post("/v1/ocr?format=xml", &[("Content-Type", "image/png")], b"x"),
        400,
        "format",
    );
    check(
        "an empty multipart body",
        post(
            "/v1/ocr",
            &[("Content-Type", "multipart/form-data; boundary=XX")],
            b"--XX--\r\n",
        ),
        400,
        "multipart",
    );

    // Unknown fields are tolerated, as OpenAI's API tolerates them.
    let r = post(
        "/v1/chat/completions",
        &[JSON],
        &chat(json!({"max_tokens": 2, "frequency_penalty": 0.5, "user": "u1", "whatever": [1]})),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["choices"][0]["message"]["role"], "assistant");

    // 1000 idle connections at once: the server still answers.
    let idle: Vec<TcpStream> = (0..1000).map(|_| TcpStream::connect(&a).unwrap()).collect();
    let r = http(&a, &request("GET", "/health", &[], b"")).unwrap();
    assert_eq!(r.status, 200);
    drop(idle);

    for s in &seen {
        println!("{s}");
    }
    assert_eq!(server.get("/health").status, 200);
    let peak = server.peak_rss();
    println!("peak RSS of the server: {} MiB", peak >> 20);
    assert!(
        peak < 1 << 30,
        "the server's peak RSS is {} MiB",
        peak >> 20
    );
}

/// A streamed chat request on its own connection; its SSE lines are read by the caller.
fn open_stream(addr: &str, body: &[u8]) -> BufReader<TcpStream> {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    s.write_all(&request("POST", "/v1/chat/completions", &[JSON], body))
        .unwrap();
    let mut r = BufReader::new(s);
    let mut status = String::new();
    r.read_line(&mut status).unwrap();
    assert!(status.contains(" 200 "), "{status}");
    r
}

/// Reads SSE data lines until one with text content.
fn first_text(r: &mut BufReader<TcpStream>) {
    let mut line = String::new();
    loop {
        line.clear();
        assert!(
            r.read_line(&mut line).unwrap() > 0,
            "the stream ended before any text"
        );
        if line.starts_with("data: ")
            && line.contains("\"content\":\"")
            && !line.contains("\"content\":\"\"")
        {
            return;
        }
    }
}

fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(60),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_full_queue_answers_429_and_a_client_that_leaves_stops_its_generation() {
    let server = Server::start(&["--max-concurrent", "1", "--queue", "1"]);
    let long = chat(json!({"stream": true, "ignore_eos": true, "max_tokens": 3000}));
    let mut a = open_stream(&server.addr, &long);
    first_text(&mut a);
    assert_eq!(server.metric("ove_requests_in_progress"), 1.0);
    // B waits in the queue's one place.
    let addr = server.addr.clone();
    let b = std::thread::spawn(move || {
        http(
            &addr,
            &request(
                "POST",
                "/v1/chat/completions",
                &[JSON],
                &chat(json!({"max_tokens": 4})),
            ),
        )
        .unwrap()
    });
    wait_for("B in the queue", || server.metric("ove_queue_depth") == 1.0);
    // C finds the queue full: 429 with Retry-After, while A is still generating.
    let c = server.post(
        "/v1/chat/completions",
        &[JSON],
        &chat(json!({"max_tokens": 4})),
    );
    c.assert_json_error(429);
    assert!(c.header("retry-after").is_some(), "{:?}", c.headers);
    assert_eq!(server.metric("ove_requests_in_progress"), 1.0);
    // A's client leaves: its generation stops and B is served.
    drop(a);
    let b = b.join().unwrap();
    assert_eq!(b.status, 200, "{}", b.text());
    wait_for("A counted as cancelled", || {
        server.metric("ove_cancelled_total") == 1.0
    });
    let generated = server.metric("ove_generated_tokens_total");
    assert!(
        generated < 3000.0,
        "A was not stopped: {generated} tokens generated"
    );
    println!("A stopped after its client left; {generated} tokens generated in all");
}

#[test]
fn a_server_killed_mid_stream_restarts_and_serves_again() {
    let body = chat(json!({"max_tokens": 12}));
    let first = {
        let mut server = Server::start(&[]);
        let want = server.post("/v1/chat/completions", &[JSON], &body);
        assert_eq!(want.status, 200);
        let mut s = open_stream(
            &server.addr,
            &chat(json!({"stream": true, "ignore_eos": true, "max_tokens": 3000})),
        );
        first_text(&mut s);
        server.child.kill().unwrap();
        server.child.wait().unwrap();
        // The stream ends without its [DONE]: nothing pretends the answer was complete.
        let mut rest = String::new();
        let _ = s.read_to_string(&mut rest);
        assert!(!rest.contains("[DONE]"), "{rest}");
        want.json()["choices"][0]["message"]["content"].clone()
    };
    let server = Server::start(&[]);
    let again = server.post("/v1/chat/completions", &[JSON], &body);
    assert_eq!(again.status, 200, "{}", again.text());
    assert_eq!(again.json()["choices"][0]["message"]["content"], first);
}

#[test]
fn concurrent_clients_get_answers_or_429s_and_nothing_else() {
    let server = Server::start(&["--queue", "2"]);
    let out = Command::new(python())
        .current_dir(root())
        .arg("bench/serve_load.py")
        .args(["--url", &server.url(), "--image", IMAGE])
        .args(["--clients", "8", "--requests", "24", "--max-tokens", "8"])
        .output()
        .unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{said}");
    assert!(out.status.success(), "{said}");
    let figures: serde_json::Value = said
        .lines()
        .find_map(|l| l.strip_prefix("LOAD "))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no LOAD line: {said}"));
    assert_eq!(figures["other_errors"], 0, "{figures}");
    assert_eq!(figures["requests"], 24);
    let ok = figures["ok"].as_u64().unwrap();
    let busy = figures["busy_429"].as_u64().unwrap();
    assert_eq!(ok + busy, 24, "{figures}");
    assert!(ok > 0, "{figures}");
    assert_eq!(server.get("/health").status, 200);
    let _ = Path::new(IMAGE);
}
