//! The UniFFI binding generator, built from the same uniffi version as the
//! library (scripts/bindings.sh runs it).

fn main() {
    uniffi::uniffi_bindgen_main();
}
