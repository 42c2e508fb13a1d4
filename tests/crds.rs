//! `crds/` must be exactly what `conclave crds` generates from the Rust types.

use std::path::Path;

#[test]
fn checked_in_crds_match_generated() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("crds");
    let mut expected_files = Vec::new();
    for crd in conclave::crd::all() {
        let name = conclave::crd::file_name(&crd);
        let generated = conclave::crd::to_yaml(&crd).expect("CRD serializes");
        let on_disk = std::fs::read_to_string(dir.join(&name))
            .unwrap_or_else(|e| panic!("crds/{name} is missing ({e}); run `cargo run -- crds --out-dir crds`"));
        assert!(
            on_disk == generated,
            "crds/{name} drifted from the Rust types; run `cargo run -- crds --out-dir crds`"
        );
        expected_files.push(name);
    }
    let mut present: Vec<String> = std::fs::read_dir(&dir)
        .expect("crds/ exists")
        .map(|e| e.expect("dir entry").file_name().to_string_lossy().into_owned())
        .collect();
    present.sort();
    expected_files.sort();
    assert_eq!(present, expected_files, "crds/ holds files that no CRD generates");
}

#[test]
fn cli_prints_every_crd() {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_conclave"))
        .arg("crds")
        .output()
        .expect("conclave runs");
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).expect("utf-8");
    let docs: Vec<&str> = text.split("\n---\n").collect();
    assert_eq!(docs.len(), 2, "two YAML documents");
    for crd in conclave::crd::all() {
        let yaml = conclave::crd::to_yaml(&crd).expect("CRD serializes");
        assert!(
            text.contains(yaml.trim_end()),
            "output carries {}",
            conclave::crd::file_name(&crd)
        );
    }
}
