//! `vic check --format sarif`: one SARIF 2.1.0 log for all the files checked, valid
//! against the SARIF schema (tests/fixtures/sarif/sarif-2.1.0-rtm.5.json, from Microsoft's
//! MIT-licensed @microsoft/jest-sarif package, with the malformed `run.language` pattern
//! of that draft replaced by the corrected `^[a-zA-Z]{2}(-[a-zA-Z]{2})?$` of the final
//! 2.1.0 schema, so the schema compiles), with a result per diagnostic at its
//! region; GitHub annotations carry the end line and column.
#![allow(clippy::disallowed_methods, clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::vic;

fn root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

#[test]
fn sarif_output_is_valid_against_the_schema_and_locates_each_diagnostic() {
    let bad = root().join("tests/ui/e013/shear_out_of_range.vi");
    let also = root().join("tests/ui/w001/unused_param.vi");
    let clean = root().join("specs/vae.vi");
    let out = vic()
        .args(["check", "--format", "sarif"])
        .arg(&bad)
        .arg(&also)
        .arg(&clean)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let log: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let schema: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("tests/fixtures/sarif/sarif-2.1.0-rtm.5.json"))
            .unwrap(),
    )
    .unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&log)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect();
    assert!(errors.is_empty(), "{errors:#?}");
    // The schema holds, and so does what a dashboard reads.
    let results = log["runs"][0]["results"].as_array().unwrap();
    assert!(results.len() >= 2);
    let first = &results[0];
    assert_eq!(first["ruleId"], "E013");
    assert_eq!(first["level"], "error");
    let region = &first["locations"][0]["physicalLocation"]["region"];
    assert_eq!(
        (region["startLine"].as_u64(), region["startColumn"].as_u64()),
        (Some(18), Some(18))
    );
    assert_eq!(region["endColumn"].as_u64(), Some(27));
    assert!(results.iter().any(|r| r["level"] == "warning"));
    let rules = log["runs"][0]["tool"]["driver"]["rules"]
        .as_array()
        .unwrap();
    for r in results {
        let i = r["ruleIndex"].as_u64().unwrap() as usize;
        assert_eq!(rules[i]["id"], r["ruleId"]);
    }
    // Annotations for GitHub: start and end of the span.
    let out = vic()
        .args(["check", "--format", "github"])
        .arg(&bad)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("line=18,col=18,endLine=18,endColumn=27,title=E013::"),
        "{text}"
    );
}
