//! The binding tests: the exported API driven through the real foreign-language boundary.
//!
//! For each language the test generates the bindings from the `liblinli_ffi` cdylib that cargo
//! built for this run, in library mode and with `mobile-bindings/uniffi.toml` (exactly what
//! `mobile-bindings/build.sh` does for apps), starts a demo server in-process, and runs a smoke
//! script from `mobile-bindings/tests/` against it:
//!
//! - Kotlin: `kotlinc` compiles the generated Kotlin into a jar (warnings are errors) and runs
//!   `smoke_test.kts` on the JVM, where JNA loads the library;
//! - Python: `python3` runs `smoke_test.py`, where ctypes loads it.
//!
//! The scripts read the server's URL from `LINLI_SERVER_URL` and a scratch directory from
//! `LINLI_TEST_HOME`. They are smoke tests of the boundary (types, errors, callbacks, threads),
//! not a second copy of the Rust tests. A third test generates the Swift bindings (there is no
//! Swift compiler here to run them) and checks that every exported item reaches Swift and Kotlin
//! with its doc comment.
//!
//! These tests call the same generation code as `uniffi::build_foreign_language_testcases!`
//! (`uniffi_bindgen`'s library mode) but not that macro: the test functions it generates cannot
//! start a server first and hand its URL to the script (they take no setup hook, and setting
//! the environment of a running multi-threaded test process is `unsafe` in Rust 2024, which the
//! workspace denies), and its helper rebuilds the crate and its dev-dependencies with
//! `cargo test --release` from inside the test, a second full release build per CI run.
//!
//! Tools: `kotlinc` (from `KOTLINC`, `PATH`, or npm's global `kotlin-compiler` package), JNA
//! (from `CLASSPATH`, or Debian's `/usr/share/java/jna.jar`) and `python3`; `.ci/run` installs
//! them. A missing tool fails the test with the way to install it; set
//! `LINLI_SKIP_BINDING_TESTS=1` to skip these tests on purpose.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use linli_server::config::Config;
use linli_server::run::BackgroundServer;

/// Longest any one step (a compile or a script run) may take before it is killed.
const STEP_TIMEOUT: Duration = Duration::from_secs(600);

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("ffi/ has a parent")
        .to_path_buf()
}

fn script(name: &str) -> PathBuf {
    workspace_root().join("mobile-bindings/tests").join(name)
}

fn skip() -> bool {
    if std::env::var_os("LINLI_SKIP_BINDING_TESTS").is_some_and(|v| v == "1") {
        eprintln!("binding test skipped: LINLI_SKIP_BINDING_TESTS=1");
        return true;
    }
    false
}

/// The cdylib cargo built alongside this test binary: `target/<profile>/liblinli_ffi.so`.
fn cdylib() -> PathBuf {
    let name = format!(
        "{}linli_ffi{}",
        std::env::consts::DLL_PREFIX,
        std::env::consts::DLL_SUFFIX
    );
    let exe = std::env::current_exe().expect("the test binary's path");
    let deps = exe.parent().expect("target/<profile>/deps");
    [
        deps.join(&name),
        deps.parent().expect("profile dir").join(&name),
    ]
    .into_iter()
    .find(|p| p.exists())
    .unwrap_or_else(|| panic!("{name} was not built next to {}", exe.display()))
}

fn utf8(p: &Path) -> String {
    p.to_str().expect("a UTF-8 path").to_string()
}

/// Copies the library into `out` and generates `language` bindings there, in library mode.
fn generate(language: uniffi::TargetLanguage, out: &Path) {
    let lib = cdylib();
    let copy = out.join(lib.file_name().expect("a file name"));
    std::fs::copy(&lib, &copy).expect("copy the cdylib");
    uniffi::generate(uniffi::GenerateOptions {
        languages: vec![language],
        source: utf8(&copy).into(),
        out_dir: utf8(out).into(),
        config_override: Some(utf8(&workspace_root().join("mobile-bindings/uniffi.toml")).into()),
        ..Default::default()
    })
    .expect("the bindings generate");
}

/// Runs `cmd` to completion (killed after [`STEP_TIMEOUT`]), panicking with its output on
/// failure. Returns how long it took.
fn run(what: &str, cmd: &mut Command) -> Duration {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("{what}: cannot start {:?}: {e}", cmd.get_program()));
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut stderr = child.stderr.take().expect("piped stderr");
    let out = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stdout.read_to_string(&mut s);
        s
    });
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = stderr.read_to_string(&mut s);
        s
    });
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for the child") {
            break Some(status);
        }
        if start.elapsed() > STEP_TIMEOUT {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    let took = start.elapsed();
    println!("--- {what} ({:.1} s)\n{out}{err}", took.as_secs_f64());
    match status {
        Some(s) if s.success() => took,
        Some(s) => panic!("{what} failed ({s}):\n{out}\n{err}"),
        None => panic!("{what} timed out after {STEP_TIMEOUT:?}:\n{out}\n{err}"),
    }
}

fn on_path(name: &str) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// `kotlinc`: `KOTLINC`, else on `PATH`, else in npm's global `kotlin-compiler` package.
fn kotlinc() -> PathBuf {
    if let Some(k) = std::env::var_os("KOTLINC") {
        return k.into();
    }
    on_path("kotlinc")
        .or_else(|| {
            let root = Command::new("npm").args(["root", "-g"]).output().ok()?;
            let p = Path::new(String::from_utf8(root.stdout).ok()?.trim())
                .join("kotlin-compiler/bin/kotlinc");
            p.is_file().then_some(p)
        })
        .expect(
            "kotlinc not found: `npm install -g kotlin-compiler` and put its bin/ on PATH \
             (or set KOTLINC), as .ci/run does",
        )
}

/// The classpath entries JNA needs: `CLASSPATH`, else Debian's `libjna-java` jar.
fn jna_classpath() -> String {
    if let Ok(cp) = std::env::var("CLASSPATH")
        && cp.contains("jna")
    {
        return cp;
    }
    let jar = Path::new("/usr/share/java/jna.jar");
    assert!(
        jar.is_file(),
        "JNA not found: `apt-get install libjna-java` (or put jna.jar on CLASSPATH), as .ci/run does"
    );
    utf8(jar)
}

/// A demo server and a scratch directory for one script.
struct Fixture {
    server: BackgroundServer,
    dir: tempfile::TempDir,
}

impl Fixture {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("a temp dir");
        let server = BackgroundServer::start(Config::new(dir.path().join("server")).with_demo())
            .expect("the demo server starts");
        Fixture { server, dir }
    }

    fn subdir(&self, name: &str) -> PathBuf {
        let p = self.dir.path().join(name);
        std::fs::create_dir_all(&p).expect("create a subdirectory");
        p
    }

    /// The environment the scripts read.
    fn env<'a>(&'a self, cmd: &'a mut Command) -> &'a mut Command {
        cmd.env("LINLI_SERVER_URL", self.server.url())
            .env("LINLI_TEST_HOME", self.subdir("phones"))
    }
}

#[test]
fn kotlin_smoke_test_through_the_jvm() {
    if skip() {
        return;
    }
    let kotlinc = kotlinc();
    let jna = jna_classpath();
    let fx = Fixture::start();
    let out = fx.subdir("kotlin");

    let start = Instant::now();
    generate(uniffi::TargetLanguage::Kotlin, &out);
    println!("generated Kotlin in {:.1} s", start.elapsed().as_secs_f64());

    let sources: Vec<PathBuf> = walk(&out)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "kt"))
        .collect();
    assert!(!sources.is_empty(), "no Kotlin was generated");
    let jar = out.join("linli_ffi.jar");
    let compile = run(
        "kotlinc: compile the bindings",
        Command::new(&kotlinc)
            .arg("-Werror")
            .arg("-d")
            .arg(&jar)
            .arg("-classpath")
            .arg(&jna)
            .args(&sources),
    );
    let classpath = format!("{}:{}", utf8(&jar), jna);
    let script_run = run(
        "kotlinc -script smoke_test.kts",
        fx.env(
            Command::new(&kotlinc)
                .arg("-classpath")
                .arg(&classpath)
                .arg("-J-ea")
                .arg(format!("-J-Djna.library.path={}", utf8(&out)))
                .arg("-Werror")
                .arg("-script")
                .arg(script("smoke_test.kts")),
        ),
    );
    println!(
        "kotlin: compile {:.1} s, script {:.1} s, total {:.1} s",
        compile.as_secs_f64(),
        script_run.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn python_smoke_test_through_ctypes() {
    if skip() {
        return;
    }
    let fx = Fixture::start();
    let out = fx.subdir("python");
    let start = Instant::now();
    generate(uniffi::TargetLanguage::Python, &out);
    let script_run = run(
        "python3 smoke_test.py",
        fx.env(
            Command::new("python3")
                .arg(script("smoke_test.py"))
                .env("PYTHONPATH", &out)
                .current_dir(&out),
        ),
    );
    println!(
        "python: script {:.1} s, total {:.1} s",
        script_run.as_secs_f64(),
        start.elapsed().as_secs_f64()
    );
}

#[test]
fn swift_and_kotlin_bindings_generate_with_the_docs() {
    // No Swift compiler here: generating the Swift (as build.sh does) is what can be checked, and
    // that every exported item reaches Swift and Kotlin with its doc comment.
    let dir = tempfile::tempdir().expect("a temp dir");
    let (swift_dir, kotlin_dir) = (dir.path().join("swift"), dir.path().join("kotlin"));
    for (lang, out) in [
        (uniffi::TargetLanguage::Swift, &swift_dir),
        (uniffi::TargetLanguage::Kotlin, &kotlin_dir),
    ] {
        std::fs::create_dir_all(out).expect("create the output directory");
        generate(lang, out);
    }
    for file in ["Linli.swift", "LinliFFI.h", "LinliFFI.modulemap"] {
        assert!(swift_dir.join(file).is_file(), "{file} was not generated");
    }
    let swift = std::fs::read_to_string(swift_dir.join("Linli.swift")).expect("Linli.swift");
    let kotlin = std::fs::read_to_string(kotlin_dir.join("linli/ffi/linli_ffi.kt"))
        .expect("linli_ffi.kt in package linli.ffi");

    // Every method of the object and of the callback interface, every record, the error and the
    // top-level function carry a doc comment in both languages.
    let swift_items = [
        ("public protocol FieldClientProtocol", "func "),
        ("public protocol SyncListener:", "func "),
        ("public protocol SecretStore:", "func "),
        ("public protocol AppLogger:", "func "),
    ];
    let kotlin_items = [
        ("public interface FieldClientInterface", "fun "),
        ("public interface SyncListener", "fun "),
        ("public interface SecretStore", "fun "),
        ("public interface AppLogger", "fun "),
    ];
    let mut undocumented = Vec::new();
    for (text, items, decls) in [
        (
            &swift,
            &swift_items,
            [
                "public struct ",
                "enum ApiError",
                "public func recordKinds",
                "public enum RecordKind",
                "public enum RejectCode",
                "public enum Role",
                "public enum OutboxState",
                "public func installLogger",
            ],
        ),
        (
            &kotlin,
            &kotlin_items,
            [
                "data class ",
                "sealed class ApiException",
                "fun `recordKinds`",
                "enum class RecordKind",
                "enum class RejectCode",
                "enum class Role",
                "enum class OutboxState",
                "fun `installLogger`",
            ],
        ),
    ] {
        let lines: Vec<&str> = text.lines().collect();
        // A doc comment ends on the line before (or, for Kotlin's top-level functions, on the
        // declaration's own line: `*/ fun ...`).
        let documented = |i: usize| {
            lines[i].trim_start().starts_with("*/")
                || lines[..i]
                    .iter()
                    .rev()
                    .map(|l| l.trim())
                    .find(|l| !l.is_empty() && *l != "public")
                    .is_some_and(|l| l.ends_with("*/"))
        };
        for (block, member) in items {
            let start = lines
                .iter()
                .position(|l| l.starts_with(block))
                .unwrap_or_else(|| panic!("`{block}` is not in the bindings"));
            assert!(documented(start), "`{block}` has no doc comment");
            for (i, line) in lines.iter().enumerate().skip(start + 1) {
                if *line == "}" {
                    break;
                }
                if line.trim_start().starts_with(member) && !documented(i) {
                    undocumented.push(line.trim().to_string());
                }
            }
        }
        for decl in decls {
            let found: Vec<usize> = (0..lines.len())
                .filter(|&i| {
                    let line = match lines[i].trim_start().strip_prefix("*/") {
                        Some(rest) => rest.trim_start(),
                        None => lines[i],
                    };
                    line.starts_with(decl) && !line.contains("FfiConverter")
                })
                .collect();
            assert!(!found.is_empty(), "`{decl}` is not in the bindings");
            undocumented.extend(
                found
                    .into_iter()
                    .filter(|&i| !documented(i))
                    .map(|i| lines[i].to_string()),
            );
        }
    }
    assert!(undocumented.is_empty(), "undocumented: {undocumented:#?}");
    assert!(swift.contains("A phone's Linli store and its connection to the server"));
    assert!(kotlin.contains("A phone's Linli store and its connection to the server"));
}

/// Every file below `dir`.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).expect("read a directory").flatten() {
            let p = entry.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                files.push(p);
            }
        }
    }
    files
}
