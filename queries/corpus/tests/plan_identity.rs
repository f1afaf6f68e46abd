//! A Calc is named in checkpoints by its expressions as written, not as DataFusion's simplifier
//! rewrites them to run: a pipeline checkpointed by a build that ran them unsimplified resumes
//! its state after the Calc unchanged.

use vibelux_queries::parser::parse_pipeline;
use vibelux_queries::plan::NodeKind;
use vibelux_queries::planner::Planner;

#[test]
fn a_calc_is_identified_by_its_constants_as_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut planner = Planner::new(vibelux_connectors::registry::with_audit_trail(
        &dir.path().join("audit.jsonl"),
    ));
    let input = dir.path().join("in.jsonl");
    std::fs::write(&input, "").unwrap();
    let pipeline = format!(
        "CREATE SOURCE readings (sensor_id TEXT, ts TIMESTAMP, rh DOUBLE,
           WATERMARK FOR ts AS ts) WITH (connector = 'file', path = '{}');
         CREATE VIEW humid AS SELECT sensor_id, rh * 1.8 + 32 AS f FROM readings WHERE rh BETWEEN 0 AND 100;",
        input.display()
    );
    for statement in parse_pipeline(&pipeline).unwrap() {
        planner.execute(&statement).unwrap();
    }
    let identities: Vec<String> = planner
        .plan
        .nodes
        .iter()
        .filter_map(|node| match &node.kind {
            NodeKind::Calc { calc, .. } => Some(calc.identity()),
            _ => None,
        })
        .collect();
    let filter = identities
        .iter()
        .find(|identity| identity.contains("rh@"))
        .unwrap_or_else(|| panic!("{identities:?}"));
    // As the builds before the simplifier named it: the integer constants cast to DOUBLE.
    assert!(filter.contains("CAST(0 AS Float64)"), "{filter}");
    assert!(filter.contains("CAST(32 AS Float64)"), "{filter}");
}
