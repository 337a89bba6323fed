//! Nothing is generated here. The build-dependency on `protoc-bin-vendored`
//! exists so cargo downloads a protoc for `scripts/protoc` (see
//! `.cargo/config.toml`), which etcd-client's build script runs.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
}
