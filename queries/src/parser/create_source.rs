//! `CREATE SOURCE` and `CREATE TABLE`: the column list (with units, the watermark and the
//! primary key) and the options; a connector that defines its own columns lets the list go.

use datafusion::sql::sqlparser::keywords::Keyword;
use datafusion::sql::sqlparser::parser::Parser;
use datafusion::sql::sqlparser::tokenizer::Token;

use super::{CreateSource, WatermarkClause, expected, parse_with_options, parse_word, parsing};
use crate::error::{Position, SqlResult};

pub(super) fn parse_create_source(parser: &mut Parser, is_table: bool) -> SqlResult<CreateSource> {
    let name = parsing(parser.parse_identifier())?;
    let mut columns = Vec::new();
    let mut watermark = None;
    let mut primary_key = Vec::new();
    let mut units = Vec::new();
    // A source whose connector defines its rows (the audit trail) may leave the list out.
    let listed = parser.consume_token(&Token::LParen);
    if !listed && !parser.peek_keyword(Keyword::WITH) {
        return Err(expected("`(` and the column list", &parser.peek_token()));
    }
    if listed {
        loop {
            let here = parser.peek_token();
            if parse_word(parser, "WATERMARK") {
                if !parse_word(parser, "FOR") {
                    return Err(expected("FOR after WATERMARK", &parser.peek_token()));
                }
                let column = parsing(parser.parse_identifier())?;
                if !parse_word(parser, "AS") {
                    return Err(expected(
                        "AS and the watermark expression",
                        &parser.peek_token(),
                    ));
                }
                let expression = parsing(parser.parse_expr())?;
                watermark = Some(WatermarkClause {
                    column,
                    expression,
                    position: Position::of(here.span.start),
                });
            } else if parse_word(parser, "PRIMARY") {
                if !parse_word(parser, "KEY") {
                    return Err(expected("KEY after PRIMARY", &parser.peek_token()));
                }
                parsing(parser.expect_token(&Token::LParen))?;
                primary_key = parsing(parser.parse_comma_separated(|p| p.parse_identifier()))?;
                parsing(parser.expect_token(&Token::RParen))?;
            } else {
                let column = parsing(parser.parse_column_def())?;
                if parse_word(parser, "UNIT") {
                    let unit = parsing(parser.parse_literal_string())?;
                    units.push((column.name.clone(), unit));
                }
                columns.push(column);
            }
            if parser.consume_token(&Token::Comma) {
                continue;
            }
            let close = parser.peek_token();
            if parser.consume_token(&Token::RParen) {
                break;
            }
            return Err(expected("`,` or `)` in the column list", &close));
        }
    }
    let options = parse_with_options(parser)?;
    Ok(CreateSource {
        name,
        is_table,
        columns,
        units,
        watermark,
        primary_key,
        options,
    })
}
