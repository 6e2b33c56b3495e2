//! The back-office stories' browser: a real headless Chromium reads the real server, takes a
//! screenshot and saves a download (an export, as a steward would) without a prompt.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::time::Instant;

use crate::common::*;
use linli_tests::browser::Browser;

/// A CSV export as the back office serves it: UTF-8 with a BOM, so spreadsheet programs read
/// the Chinese right.
const EXPORT: &str = "\u{feff}姓名,楼栋\n张三,3栋\n";

#[test]
fn headless_chromium_reads_the_server_screenshots_and_downloads() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    let server_up = started.elapsed();

    let b = Browser::start();
    let browser_up = started.elapsed() - server_up;

    b.goto(&format!("{}/healthz", server.url));
    let body = b.text("body");
    assert!(body.contains(r#""status":"ok""#), "healthz shows {body:?}");
    assert_eq!(b.execute("return navigator.language"), "zh-CN");

    let shot = b.screenshot("smoke");
    let png = std::fs::read(&shot).unwrap();
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "{} is no PNG",
        shot.display()
    );

    // The server has no attachment yet; a tiny one serves an export page and the file.
    let files = serve_export();
    b.goto(&files);
    assert_eq!(b.text("a#export"), "导出住户名单");
    b.screenshot("smoke-export");
    b.click("a#export");
    let saved = b.wait_for_download("csv");
    assert_eq!(
        saved.file_name().unwrap().to_string_lossy(),
        "住户名单.csv",
        "the name from Content-Disposition (filename*)"
    );
    assert_eq!(std::fs::read_to_string(&saved).unwrap(), EXPORT);

    b.close();
    eprintln!(
        "browser smoke: server {server_up:?}, chromium session {browser_up:?}, whole test {:?}",
        started.elapsed()
    );
}

/// Serves `/` (a page with an export link) and `/export.csv` (an attachment) on a free loopback
/// port until the test process ends; returns the page's URL.
fn serve_export() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        // A thread per connection: Chromium opens speculative connections that never send a
        // request, which must not block the real ones.
        for stream in listener.incoming().map_while(Result::ok) {
            std::thread::spawn(move || {
                let mut reader = BufReader::new(&stream);
                let mut request_line = String::new();
                if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
                    return;
                }
                let mut line = String::new();
                while reader.read_line(&mut line).unwrap_or(0) > 2 {
                    line.clear();
                }
                let path = request_line.split_whitespace().nth(1).unwrap_or("/");
                let (head, body) = match path {
                    "/" => (
                        "Content-Type: text/html; charset=utf-8".to_string(),
                        r#"<!doctype html><meta charset="utf-8"><title>导出</title>
                        <a id="export" href="/export.csv">导出住户名单</a>"#
                            .to_string(),
                    ),
                    "/export.csv" => (
                        "Content-Type: text/csv; charset=utf-8\r\nContent-Disposition: \
                         attachment; filename=\"export.csv\"; \
                         filename*=UTF-8''%E4%BD%8F%E6%88%B7%E5%90%8D%E5%8D%95.csv"
                            .to_string(),
                        EXPORT.to_string(),
                    ),
                    _ => ("Content-Type: text/plain".to_string(), String::new()),
                };
                let status = if body.is_empty() {
                    "404 Not Found"
                } else {
                    "200 OK"
                };
                let _ = write!(
                    &stream,
                    "HTTP/1.1 {status}\r\n{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    url
}
