//! Nothing is generated here. The build-dependency on `protoc-bin-vendored`
//! exists so cargo downloads a protoc for `scripts/protoc` (see
//! `.cargo/config.toml`), which etcd-client's build script runs.
//!
//! It also records the commit being built (`KAFSCALE_COMMIT`, "unknown"
//! outside a git checkout), which restore reports name.
fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/logs/HEAD");
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=KAFSCALE_COMMIT={commit}");
}
