//! Conclave: a Kubernetes operator for private, end-to-end encrypted video conferencing.

pub mod api;
pub mod api_client;
pub mod apply;
pub mod bridge;
pub mod child;
pub mod clock;
pub mod conditions;
pub mod controller;
pub mod crd;
pub mod duration;
pub mod engine;
pub mod http;
pub mod images;
pub mod labels;
pub mod meeting;
pub mod metrics;
pub mod render;
pub mod turn;
pub mod web;
