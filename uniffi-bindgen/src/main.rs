//! `uniffi-bindgen`, pinned to the workspace's uniffi version so generated bindings always match
//! the scaffolding compiled into `linli-ffi`. Used by `mobile-bindings/build.sh`:
//!
//! ```sh
//! cargo run -p uniffi-bindgen -- generate --library target/release/liblinli_ffi.so \
//!     --language kotlin --out-dir mobile-bindings/build/kotlin
//! ```

fn main() {
    uniffi::uniffi_bindgen_main()
}
