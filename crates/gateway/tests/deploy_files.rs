//! The deployment files (docker-compose.yml, Dockerfile's neighbours, deploy/) are
//! checked by `scripts/check-deploy`: YAML/JSON/TOML parse, the manifests' cross
//! references, `nginx -t`, and `docker compose config` / `promtool` / `kustomize`
//! where installed. Offline, a few seconds.

use std::path::PathBuf;
use std::process::Command;

#[test]
fn deploy_files_pass_check_deploy() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let script = root.join("scripts/check-deploy");
    let out = Command::new("bash")
        .arg(&script)
        .current_dir(&root)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "scripts/check-deploy failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Shown with --nocapture: which checks ran and which were skipped.
    print!("{stdout}");
}
