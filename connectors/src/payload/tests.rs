use super::*;
use datafusion::arrow::datatypes::{Field, Schema};

fn layout() -> RowLayout {
    let schema = Schema::new(vec![
        Field::new("sensor_id", DataType::Utf8, false),
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        Field::new("temp_c", DataType::Float64, true),
    ]);
    RowLayout::new(Arc::new(schema), Some(1))
}

#[test]
fn a_json_column_keeps_the_text_of_any_value_and_csv_cells_must_be_json() {
    use vibelux_interfaces::metadata::{EXTENSION_NAME, JSON_EXTENSION};
    let meta = Field::new("meta", DataType::Utf8, true)
        .with_metadata([(EXTENSION_NAME.to_string(), JSON_EXTENSION.to_string())].into());
    let schema = Schema::new(vec![
        Field::new("ts", DataType::Timestamp(TimeUnit::Nanosecond, None), true),
        meta.clone(),
    ]);
    let layout = RowLayout::new(Arc::new(schema), Some(0));
    let meta_of = |line: &str| layout.decode_json(line).map(|(row, _)| row[1].clone());
    let ts = r#""ts":"2026-06-01T00:00:01Z""#;
    for (value, kept) in [
        (
            r#"{"fw": "1.2", "tags": [1, 2]}"#,
            Some(r#"{"fw": "1.2", "tags": [1, 2]}"#),
        ),
        // A string stays a JSON string, quotes and escapes included.
        (r#""plain \"text\"""#, Some(r#""plain \"text\"""#)),
        ("42", Some("42")),
        ("null", None),
    ] {
        let expected = kept.map_or(Datum::Null, |text| Datum::Utf8(text.into()));
        assert_eq!(meta_of(&format!("{{{ts},\"meta\":{value}}}")), Ok(expected));
    }
    assert_eq!(meta_of(&format!("{{{ts}}}")), Ok(Datum::Null));
    // Read from a nested path, the value is written compact.
    let paths = vec![(1, JsonPath::parse("$.device.meta").unwrap())];
    let row = layout
        .decode_json_paths(
            r#"{"ts":"2026-06-01T00:00:01Z","device":{"meta":{"a": [1, 2]}}}"#,
            &paths,
        )
        .unwrap();
    assert_eq!(row[1], Datum::Utf8(r#"{"a":[1,2]}"#.into()));
    assert_eq!(
        parse_text(&meta, " [1, 2] "),
        Ok(Datum::Utf8("[1, 2]".into()))
    );
    let refused = parse_text(&meta, "{fw: 1}").unwrap_err();
    assert!(
        refused.starts_with("expected a JSON document, found \"{fw: 1}\""),
        "{refused}"
    );
}

#[test]
fn fields_in_another_order_than_the_last_object_still_find_their_columns() {
    let layout = layout();
    let lines = [
        r#"{"sensor_id":"s1","ts":"2026-06-01T00:00:01Z","temp_c":1.5}"#,
        r#"{"temp_c":2.5,"sensor_id":"s2","ts":"2026-06-01T00:00:02Z"}"#,
        r#"{"extra":0,"TS":"2026-06-01T00:00:03Z","sensor_id":"s3"}"#,
        r#"{"sensor_id":"s4","ts":"2026-06-01T00:00:04Z","temp_c":4.5}"#,
    ];
    let rows: Vec<Row> = lines
        .iter()
        .map(|line| layout.decode_json(line).unwrap().0)
        .collect();
    let second = 1_780_272_000_000_000_000i64;
    for (index, (sensor, temp)) in [
        ("s1", Some(1.5)),
        ("s2", Some(2.5)),
        ("s3", None),
        ("s4", Some(4.5)),
    ]
    .into_iter()
    .enumerate()
    {
        assert_eq!(rows[index][0], Datum::Utf8(sensor.into()));
        assert_eq!(
            rows[index][1],
            Datum::Timestamp(second + (index as i64 + 1) * 1_000_000_000)
        );
        assert_eq!(rows[index][2], temp.map_or(Datum::Null, Datum::Float64));
    }
}

#[test]
fn a_json_reading_decodes_in_declared_column_order() {
    let (row, ts) = layout()
        .decode_json(
            r#"{"temp_c": 21.5, "extra": [1], "ts": "2026-06-01T00:00:01Z", "sensor_id": "s1"}"#,
        )
        .unwrap();
    assert_eq!(ts, 1_780_272_001_000_000_000);
    assert_eq!(
        row,
        vec![
            Datum::Utf8("s1".into()),
            Datum::Timestamp(ts),
            Datum::Float64(21.5)
        ]
    );
}

#[test]
fn dates_read_as_iso_days_and_a_wrong_one_names_its_field() {
    let schema = Schema::new(vec![
        Field::new("zone", DataType::Utf8, false),
        Field::new("planted", DataType::Date32, true),
    ]);
    let layout = RowLayout::new(Arc::new(schema), None);
    let (row, _) = layout
        .decode_json(r#"{"zone":"z1","planted":"2026-06-01"}"#)
        .unwrap();
    assert_eq!(row[1], Datum::Date(20_605));
    let error = layout
        .decode_json(r#"{"zone":"z1","planted":"June 1st"}"#)
        .unwrap_err();
    assert!(
        error.contains("field `planted`") && error.contains("YYYY-MM-DD"),
        "{error}"
    );
}

#[test]
fn a_wrong_type_names_the_field() {
    let error = layout()
        .decode_json(r#"{"sensor_id":"s1","ts":1780272001000,"temp_c":"warm"}"#)
        .unwrap_err();
    assert!(
        error.contains("field `temp_c`") && error.contains("a number"),
        "{error}"
    );
}

#[test]
fn missing_required_fields_and_absurd_times_are_rejected() {
    let error = layout()
        .decode_json(r#"{"ts":"2026-06-01T00:00:00Z"}"#)
        .unwrap_err();
    assert!(
        error.contains("missing required field `sensor_id`"),
        "{error}"
    );
    let error = layout()
        .decode_json(r#"{"sensor_id":"s","ts":"1970-01-01T00:00:00Z"}"#)
        .unwrap_err();
    assert!(error.contains("outside"), "{error}");
    assert!(layout().decode_json("{\"sensor_id\":\"s\"").is_err());
}

#[test]
fn json_paths_reach_nested_values_and_name_the_path_on_errors() {
    let layout = layout();
    let paths = vec![
        (1, JsonPath::parse("$.meta.time").unwrap()),
        (2, JsonPath::parse("data.values[1]").unwrap()),
    ];
    let row = layout
        .decode_json_paths(
            r#"{"sensor_id":"s1","meta":{"time":"2026-06-01T00:00:01Z"},"data":{"values":[1,21.5]}}"#,
            &paths,
        )
        .unwrap();
    assert_eq!(row[2], Datum::Float64(21.5));
    let (_, ts) = layout.finish(row).unwrap();
    assert_eq!(ts, 1_780_272_001_000_000_000);
    let error = layout
        .decode_json_paths(r#"{"sensor_id":"s1","meta":{"time":"x"}}"#, &paths)
        .unwrap_err();
    assert_eq!(
        error,
        r#"field `ts` (at $.meta.time): expected an ISO 8601 timestamp, found "x""#
    );
    let missing = layout
        .decode_json_paths(r#"{"sensor_id":"s1","data":{}}"#, &paths)
        .and_then(|row| layout.finish(row))
        .unwrap_err();
    assert_eq!(missing, "missing required field `ts`");
    let truncated = layout.decode_json_fields(r#"{"ts":"2026-06-01T00:00:05Z","temp_c":2"#);
    assert_eq!(
        truncated.unwrap_err(),
        "truncated JSON: EOF while parsing an object at line 1 column 39"
    );
    assert!(JsonPath::parse("a[").is_err());
    assert!(JsonPath::parse("$").is_err());
    assert!(JsonPath::parse("a..b").is_err());
}

#[test]
fn csv_cells_reject_nan() {
    let layout = layout();
    let header = [Some(0), Some(1), Some(2)];
    let record = csv::StringRecord::from(vec!["s1", "2026-06-01 00:00:00", "NaN"]);
    let error = layout.decode_csv(&header, &record).unwrap_err();
    assert!(
        error.contains("field `temp_c`") && error.contains("finite"),
        "{error}"
    );
}
