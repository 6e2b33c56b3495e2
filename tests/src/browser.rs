//! A real headless Chromium for the back-office stories, driven over WebDriver (Debian's
//! `chromium` and `chromium-driver`; `scripts/test` installs them when missing).
//!
//! [`Browser`] is blocking, like the rest of this harness: it owns a small tokio runtime, so a
//! plain `#[test]` reads as steps. Every helper panics with context (selector, current URL and a
//! page source excerpt), and every wait is bounded. Each browser has its own `chromedriver`
//! (in its own process group), profile and download directory; dropping it, also while a test
//! panics, quits the session and kills what is left, so no process outlives the test.
//!
//! ```no_run
//! let b = linli_tests::browser::Browser::start();
//! b.goto("http://127.0.0.1:8080/admin/login");
//! b.fill("input[name=username]", "steward1");
//! b.click("button[type=submit]");
//! assert!(b.text("h1").contains("工作台"));
//! b.screenshot("dashboard");
//! ```

use std::collections::HashSet;
use std::future::Future;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub use fantoccini::cookies::Cookie;
pub use fantoccini::elements::Element;
use fantoccini::error::CmdError;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use tempfile::TempDir;

/// Debian's Chromium launcher.
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's ChromeDriver (package `chromium-driver`).
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long [`Browser::wait_for`] and the helpers built on it wait for an element.
pub const WAIT: Duration = Duration::from_secs(10);
/// How long [`Browser::wait_for_download`] waits for a finished file.
pub const DOWNLOAD_WAIT: Duration = Duration::from_secs(30);
const POLL: Duration = Duration::from_millis(50);

/// A headless Chromium session with its own chromedriver, profile and download directory.
pub struct Browser {
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    driver: Child,
    downloads: PathBuf,
    seen_downloads: Mutex<HashSet<PathBuf>>,
    // Dropped last (fields drop after `Drop::drop`), once Chromium is gone: profile, downloads
    // and the chromedriver log.
    _work: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free loopback port and opens a headless Chromium session
    /// (1366×768, zh-CN, downloads saved without a prompt into [`Browser::download_dir`]).
    pub fn start() -> Browser {
        for bin in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(bin).exists(),
                "{bin} is missing: run scripts/test, or apt-get install chromium chromium-driver"
            );
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let work = tempfile::Builder::new()
            .prefix("linli-browser-")
            .tempdir()
            .expect("browser work dir");
        let downloads = work.path().join("downloads");
        let profile = work.path().join("profile");
        std::fs::create_dir_all(&downloads).expect("download dir");
        let log = work.path().join("chromedriver.log");

        let (driver, port) = spawn_driver(&log, work.path());
        // From here on a panic must still kill chromedriver: build the value first.
        let mut this = Browser {
            rt,
            client: None,
            driver,
            downloads: downloads.clone(),
            seen_downloads: Mutex::new(HashSet::new()),
            _work: work,
        };
        let caps = json!({
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "pageLoad": 30_000, "script": 10_000, "implicit": 0 },
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-dev-shm-usage",
                    "--disable-gpu",
                    "--window-size=1366,768",
                    "--lang=zh-CN",
                    "--no-first-run",
                    "--no-default-browser-check",
                    format!("--user-data-dir={}", profile.display()),
                ],
                "prefs": {
                    "intl.accept_languages": "zh-CN,zh",
                    "download.default_directory": downloads,
                    "download.prompt_for_download": false,
                    "download.directory_upgrade": true,
                    "safebrowsing.enabled": false,
                },
            },
        });
        let Value::Object(caps) = caps else {
            unreachable!("json! of an object")
        };
        let url = format!("http://127.0.0.1:{port}");
        let connected = this.rt.block_on(async {
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps)
                .connect(&url)
                .await
        });
        match connected {
            Ok(client) => this.client = Some(client),
            Err(e) => panic!(
                "no Chromium session: {e}\nchromedriver log:\n{}",
                tail(&std::fs::read_to_string(&log).unwrap_or_default(), 3000)
            ),
        }
        this
    }

    /// The underlying fantoccini client, for anything the helpers do not cover (use with
    /// [`Browser::run`]).
    pub fn client(&self) -> &Client {
        self.client.as_ref().expect("the session is open")
    }

    /// Runs a future (e.g. a call on [`Browser::client`]) to completion.
    pub fn run<F: Future>(&self, f: F) -> F::Output {
        self.rt.block_on(f)
    }

    /// Opens `url` and waits for the page to load.
    #[track_caller]
    pub fn goto(&self, url: &str) {
        let r = self.run(self.client().goto(url));
        self.check(r, || format!("opening {url}"))
    }

    /// The current URL.
    #[track_caller]
    pub fn current_url(&self) -> String {
        let r = self.run(self.client().current_url());
        self.check(r, || "reading the URL".into()).to_string()
    }

    /// The current page's HTML.
    #[track_caller]
    pub fn source(&self) -> String {
        let r = self.run(self.client().source());
        self.check(r, || "reading the page source".into())
    }

    /// Waits up to [`WAIT`] for an element matching `css` and returns it.
    #[track_caller]
    pub fn wait_for(&self, css: &str) -> Element {
        let found = self.run(
            self.client()
                .wait()
                .at_most(WAIT)
                .every(POLL)
                .for_element(Locator::Css(css)),
        );
        match found {
            Ok(el) => el,
            Err(CmdError::WaitTimeout) => self.fail(&format!("no element `{css}` within {WAIT:?}")),
            Err(e) => self.fail(&format!("looking for `{css}`: {e}")),
        }
    }

    /// Waits up to [`WAIT`] until the text of the element matching `css` contains `needle`
    /// (for pages that update after load); returns the whole text.
    #[track_caller]
    pub fn wait_for_text(&self, css: &str, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        let mut last = None;
        while Instant::now() < deadline {
            if let Ok(el) = self.run(self.client().find(Locator::Css(css)))
                && let Ok(text) = self.run(el.text())
            {
                if text.contains(needle) {
                    return text;
                }
                last = Some(text);
            }
            std::thread::sleep(POLL);
        }
        self.fail(&format!(
            "`{css}` never contained {needle:?} within {WAIT:?}; last text: {last:?}"
        ))
    }

    /// Replaces the value of the input matching `css` with `text`, as typed keys.
    #[track_caller]
    pub fn fill(&self, css: &str, text: &str) {
        let el = self.wait_for(css);
        let r = self.run(async {
            el.clear().await?;
            el.send_keys(text).await
        });
        self.check(r, || format!("typing into `{css}`"))
    }

    /// Clicks the element matching `css` (waiting for it first).
    #[track_caller]
    pub fn click(&self, css: &str) {
        let el = self.wait_for(css);
        let r = self.run(el.click());
        self.check(r, || format!("clicking `{css}`"))
    }

    /// The rendered text of the element matching `css` (waiting for it first).
    #[track_caller]
    pub fn text(&self, css: &str) -> String {
        let el = self.wait_for(css);
        let r = self.run(el.text());
        self.check(r, || format!("reading the text of `{css}`"))
    }

    /// Runs `js` in the page (`return …` gives a value) and returns its result.
    #[track_caller]
    pub fn execute(&self, js: &str) -> Value {
        let r = self.run(self.client().execute(js, Vec::new()));
        self.check(r, || format!("running script {js:?}"))
    }

    /// Saves a PNG of the viewport as `<workspace>/target/screenshots/<name>.png`; returns it.
    #[track_caller]
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let r = self.run(self.client().screenshot());
        let png = self.check(r, || format!("taking screenshot {name}"));
        let dir = crate::workspace_root().join("target").join("screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("screenshot written");
        path
    }

    /// Where downloads land.
    pub fn download_dir(&self) -> &Path {
        &self.downloads
    }

    /// Waits up to [`DOWNLOAD_WAIT`] for a finished download ending in `.ext` that no earlier
    /// call returned, and returns its path. Chromium writes `*.crdownload` and renames it when
    /// complete, so a file with the final name is whole.
    #[track_caller]
    pub fn wait_for_download(&self, ext: &str) -> PathBuf {
        let suffix = format!(".{}", ext.trim_start_matches('.'));
        let deadline = Instant::now() + DOWNLOAD_WAIT;
        loop {
            let mut listed = Vec::new();
            if let Ok(entries) = std::fs::read_dir(&self.downloads) {
                let mut seen = self.seen_downloads.lock().expect("not poisoned");
                for entry in entries.flatten() {
                    listed.push(entry.file_name().to_string_lossy().into_owned());
                    let path = entry.path();
                    if path.to_string_lossy().ends_with(&suffix) && seen.insert(path.clone()) {
                        return path;
                    }
                }
            }
            if Instant::now() >= deadline {
                self.fail(&format!(
                    "no new *{suffix} download within {DOWNLOAD_WAIT:?}; {} holds {listed:?}",
                    self.downloads.display()
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    /// Every cookie the browser holds for the current page.
    #[track_caller]
    pub fn cookies(&self) -> Vec<Cookie<'static>> {
        let r = self.run(self.client().get_all_cookies());
        self.check(r, || "reading cookies".into())
    }

    /// The value of cookie `name` for the current page, if set.
    #[track_caller]
    pub fn cookie(&self, name: &str) -> Option<String> {
        self.cookies()
            .into_iter()
            .find(|c| c.name() == name)
            .map(|c| c.value().to_string())
    }

    /// The browser's cookies as a `Cookie:` header value, to replay its session with a plain
    /// HTTP client (e.g. a forged request without the page's CSRF token).
    #[track_caller]
    pub fn cookie_header(&self) -> String {
        self.cookies()
            .iter()
            .map(|c| format!("{}={}", c.name(), c.value()))
            .collect::<Vec<_>>()
            .join("; ")
    }

    /// Sets cookie `name` for the current page's site.
    #[track_caller]
    pub fn add_cookie(&self, name: &str, value: &str) {
        let cookie = Cookie::new(name.to_string(), value.to_string());
        let r = self.run(self.client().add_cookie(cookie));
        self.check(r, || format!("setting cookie {name}"))
    }

    /// Deletes every cookie of the current page's site (a logged-out browser).
    #[track_caller]
    pub fn delete_cookies(&self) {
        let r = self.run(self.client().delete_all_cookies());
        self.check(r, || "deleting cookies".into())
    }

    /// Quits the session and stops chromedriver (what dropping does, spelled out).
    pub fn close(self) {}

    /// The value, or a [`Browser::fail`] naming what was being done.
    #[track_caller]
    fn check<T>(&self, r: Result<T, CmdError>, doing: impl FnOnce() -> String) -> T {
        match r {
            Ok(v) => v,
            Err(e) => self.fail(&format!("{} failed: {e}", doing())),
        }
    }

    /// Panics with `what`, the current URL and the start of the page source.
    #[track_caller]
    fn fail(&self, what: &str) -> ! {
        let url = match self.run(self.client().current_url()) {
            Ok(u) => u.to_string(),
            Err(e) => format!("<unknown: {e}>"),
        };
        let source = self.run(self.client().source()).unwrap_or_default();
        let excerpt: String = source.chars().take(2000).collect();
        panic!("{what}\nat {url}\npage source (start):\n{excerpt}");
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            // Quitting lets chromedriver stop Chromium cleanly; bounded, as Chromium may hang.
            let _ = self.rt.block_on(async {
                tokio::time::timeout(Duration::from_secs(5), client.close()).await
            });
        }
        // Whatever is left of chromedriver and the Chromium it started (same process group).
        let _ = Command::new("kill")
            .args(["-KILL", "--", &format!("-{}", self.driver.id())])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// Spawns chromedriver on a free loopback port and waits until it answers `/status`.
/// Its temporary files (and Chromium's) go to `tmp`, removed with the browser even after a kill.
fn spawn_driver(log: &Path, tmp: &Path) -> (Child, u16) {
    // The port is free when we look; another process may take it before chromedriver binds it,
    // so a driver that exits early is retried on a new port.
    for _ in 0..3 {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free port")
            .port();
        let mut child = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .env("TMPDIR", tmp)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own group, so Drop can kill it and every Chromium process it started at once.
            .process_group(0)
            .spawn()
            .unwrap_or_else(|e| panic!("{CHROMEDRIVER} does not start: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = format!("http://127.0.0.1:{port}/status");
        while Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                break;
            }
            if ureq::get(&status).call().is_ok() {
                return (child, port);
            }
            std::thread::sleep(POLL);
        }
        let _ = child.kill();
        let _ = child.wait();
    }
    panic!(
        "chromedriver never answered; log:\n{}",
        tail(&std::fs::read_to_string(log).unwrap_or_default(), 3000)
    );
}

/// The last `n` bytes of `s` (on a character boundary).
fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}
