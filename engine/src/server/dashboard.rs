//! The dashboard page at `/`: pick a materialized view, watch its rows change and chart a column.
//!
//! Plain HTML and JavaScript compiled into the binary (no build step, nothing fetched from a CDN):
//! `plot.js` is our small canvas line chart, `dashboard.js` speaks the live-view protocol.

use axum::http::header;
use axum::response::IntoResponse;

pub async fn page() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
        include_str!("dashboard/index.html"),
    )
}

pub async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("dashboard/dashboard.js"),
    )
}

pub async fn plot() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        include_str!("dashboard/plot.js"),
    )
}
