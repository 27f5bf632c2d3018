//! Prometheus metrics (prometheus-client): what happened, served over HTTP.
