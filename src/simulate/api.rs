//! `simulate --printernizer-api PORT`: a live Printernizer REST API on 127.0.0.1, for the
//! demo and for trying the bridge without a real Printernizer.
//!
//! It answers the endpoints the bridge reads, in the shapes a real Printernizer 2.42 answers
//! (`docs/bridge.md`): `/api/v1/health`, `/usage-stats/status`, `/usage-stats/export` (its
//! log, newest first, pretty-printed), `/printers` (with names, addresses and API keys, as the
//! real one — the bridge must drop them) and `/jobs` (paginated). Meanwhile it plays a small
//! workshop: printers start prints (auto-created jobs that stay `running` for ever, as in
//! Printernizer), finish or fail them, and the user creates jobs and marks them completed,
//! failed or cancelled, uploads and downloads files. Deterministic for a given seed.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{Error, Result};

/// What to play.
#[derive(Debug, Clone, Copy)]
pub struct ApiOptions {
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Number of printers.
    pub printers: u32,
    /// Number of workshop steps.
    pub events: u64,
    /// Steps per second (0 = all at once).
    pub rate: f64,
    /// Random seed.
    pub seed: u64,
}

#[derive(Debug)]
struct Printer {
    id: String,
    name: String,
    printer_type: &'static str,
    status: &'static str,
    job: Option<usize>,
}

#[derive(Debug, Default)]
struct Workshop {
    log: Vec<Value>,
    printers: Vec<Printer>,
    jobs: Vec<Value>,
}

type Shared = Arc<Mutex<Workshop>>;

fn now() -> String {
    Utc::now()
        .naive_utc()
        .format("%Y-%m-%dT%H:%M:%S%.6f")
        .to_string()
}

fn uuid(rng: &mut StdRng) -> String {
    uuid::Builder::from_random_bytes(rng.random())
        .into_uuid()
        .to_string()
}

impl Workshop {
    fn record(&mut self, rng: &mut StdRng, kind: &str, metadata: Value) {
        let at = now();
        self.log
            .push(json!({"id": uuid(rng), "event_type": kind, "timestamp": at,
            "metadata": metadata, "submitted": 0, "created_at": at}));
    }

    fn job(&mut self, rng: &mut StdRng, printer: usize, auto: bool) -> usize {
        let (pid, ptype) = (
            self.printers[printer].id.clone(),
            self.printers[printer].printer_type,
        );
        let n = self.jobs.len() + 1;
        let at = now();
        self.jobs.push(json!({"id": uuid(rng), "printer_id": pid,
            "printer_type": if auto { ptype } else { "unknown" },
            "job_name": format!("Kundenauftrag {n} Mustermann"), "filename": format!("kunde_{n}.gcode"),
            "status": if auto { "running" } else { "pending" }, "start_time": at, "end_time": null,
            "actual_duration": null, "progress": if auto { 5.0 } else { 0.0 }, "is_business": !auto,
            "customer_name": if auto { Value::Null } else { json!("Max Mustermann") },
            "created_at": at, "updated_at": at}));
        self.record(
            rng,
            "job_created",
            json!({"printer_type": if auto { ptype } else { "unknown" }, "is_auto_created": auto}),
        );
        self.jobs.len() - 1
    }

    /// One step of the workshop.
    fn step(&mut self, rng: &mut StdRng) {
        let p = rng.random_range(0..self.printers.len());
        match rng.random_range(0..10) {
            0..=3 => match self.printers[p].status {
                "online" => {
                    let j = self.job(rng, p, true);
                    self.printers[p].status = "printing";
                    self.printers[p].job = Some(j);
                }
                "printing" => {
                    // The print ends; its auto-created job stays `running`, as in Printernizer.
                    if let Some(j) = self.printers[p].job.take() {
                        self.jobs[j]["progress"] = json!(100.0);
                        self.jobs[j]["updated_at"] = json!(now());
                    }
                    self.printers[p].status = if rng.random_bool(0.15) {
                        "error"
                    } else {
                        "online"
                    };
                }
                _ => self.printers[p].status = "online",
            },
            4 | 5 => {
                let j = self.job(rng, p, false);
                let (status, kind) = match rng.random_range(0..6) {
                    0 => ("failed", Some(("job_failed", Value::Null))),
                    1 => ("cancelled", None),
                    _ => (
                        "completed",
                        Some(("job_completed", json!({"duration_minutes": null}))),
                    ),
                };
                self.jobs[j]["status"] = json!(status);
                self.jobs[j]["end_time"] = json!(now());
                self.jobs[j]["updated_at"] = json!(now());
                if let Some((kind, meta)) = kind {
                    self.record(rng, kind, meta);
                }
            }
            6 | 7 => {
                let mb = (rng.random_range(1..5000) as f64) / 100.0;
                self.record(rng, "file_downloaded", json!({"file_size_mb": mb}));
            }
            _ => {
                let mb = (rng.random_range(1..5000) as f64) / 100.0;
                let business = rng.random_bool(0.5);
                self.record(
                    rng,
                    "file_uploaded",
                    json!({"file_size_mb": mb, "is_business": business}),
                );
            }
        }
    }
}

async fn health() -> Json<Value> {
    Json(
        json!({"status": "healthy", "timestamp": now(), "version": "2.42.0",
        "environment": "production", "uptime_seconds": null}),
    )
}

async fn status(State(w): State<Shared>) -> Json<Value> {
    let n = w.lock().unwrap_or_else(|e| e.into_inner()).log.len();
    Json(
        json!({"service_available": true, "opted_in": false, "total_events": n,
        "collection_active": true}),
    )
}

async fn export(State(w): State<Shared>) -> Response {
    let body = {
        let w = w.lock().unwrap_or_else(|e| e.into_inner());
        let events: Vec<&Value> = w.log.iter().rev().collect();
        serde_json::to_vec_pretty(&json!({"events": events,
            "settings": {"installation_id": "00000000-5153-4d55-4c41-544f52000000",
                         "opt_in_status": "disabled"},
            "exported_at": now(), "export_version": "1.0"}))
    };
    match body {
        Ok(body) => ([("content-type", "application/json")], body).into_response(),
        Err(e) => (axum::http::StatusCode::INTERNAL_SERVER_ERROR, e.to_string()).into_response(),
    }
}

async fn printers(State(w): State<Shared>) -> Json<Value> {
    let w = w.lock().unwrap_or_else(|e| e.into_inner());
    let list: Vec<Value> = w
        .printers
        .iter()
        .enumerate()
        .map(|(i, p)| {
            json!({"id": p.id, "name": p.name, "printer_type": p.printer_type, "status": p.status,
                "ip_address": format!("192.168.1.{}", 20 + i),
                "connection_config": {"ip_address": format!("192.168.1.{}", 20 + i),
                    "api_key": format!("SIMULATED-SECRET-KEY-{i}"), "serial_number": format!("SIM-SN-{i:04}")},
                "current_job": p.job.map(|_| json!({"name": "kunde.gcode"}))})
        })
        .collect();
    let n = list.len();
    Json(json!({"printers": list, "total_count": n,
        "pagination": {"page": 1, "limit": 50, "total_items": n, "total_pages": 1}}))
}

#[derive(Debug, Deserialize)]
struct Page {
    #[serde(default)]
    page: Option<usize>,
    #[serde(default)]
    limit: Option<usize>,
}

async fn jobs(State(w): State<Shared>, Query(q): Query<Page>) -> Json<Value> {
    let w = w.lock().unwrap_or_else(|e| e.into_inner());
    let limit = q.limit.unwrap_or(50).clamp(1, 100);
    let page = q.page.unwrap_or(1).max(1);
    let newest: Vec<&Value> = w.jobs.iter().rev().collect();
    let total = newest.len();
    let items: Vec<&Value> = newest
        .into_iter()
        .skip((page - 1) * limit)
        .take(limit)
        .collect();
    Json(json!({"jobs": items, "total_count": total,
        "pagination": {"page": page, "limit": limit, "total_items": total,
            "total_pages": total.div_ceil(limit).max(1)}}))
}

/// Serves the API on `127.0.0.1:<port>` and plays the workshop; returns when `shutdown`
/// resolves (the workshop stays served after its last step).
pub async fn serve(
    opts: ApiOptions,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<()> {
    let mut rng = StdRng::seed_from_u64(opts.seed);
    let types = ["bambu_lab", "prusa_core"];
    let mut workshop = Workshop::default();
    workshop.record(
        &mut rng,
        "app_start",
        json!({"app_version": "2.42.0", "python_version": "3.11.7", "platform": "linux"}),
    );
    for i in 0..opts.printers.max(1) {
        let id = uuid(&mut rng);
        workshop.printers.push(Printer {
            id,
            name: format!("Werkstatt Drucker {i} Erika"),
            printer_type: types[i as usize % types.len()],
            status: "online",
            job: None,
        });
        workshop.record(
            &mut rng,
            "printer_connected",
            json!({"printer_type": "unknown"}),
        );
    }
    let shared: Shared = Arc::new(Mutex::new(workshop));
    let app = Router::new()
        .route("/api/v1/health", get(health))
        .route("/api/v1/usage-stats/status", get(status))
        .route("/api/v1/usage-stats/export", get(export))
        .route("/api/v1/printers", get(printers))
        .route("/api/v1/jobs", get(jobs))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", opts.port))
        .await
        .map_err(|e| {
            Error::Io(std::io::Error::new(
                e.kind(),
                format!("cannot listen on 127.0.0.1:{}: {e}", opts.port),
            ))
        })?;
    let shown = listener.local_addr()?;
    tracing::info!(
        "simulated Printernizer API on http://{shown}/ (set printernizer.url to it); Ctrl-C stops it"
    );
    let player = tokio::spawn(async move {
        let pause = (opts.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / opts.rate));
        for _ in 0..opts.events {
            shared
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .step(&mut rng);
            if let Some(p) = pause {
                tokio::time::sleep(p).await;
            }
        }
        tracing::info!(
            steps = opts.events,
            "simulated workshop done; still serving"
        );
    });
    let result = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await;
    player.abort();
    result.map_err(Error::Io)?;
    tracing::info!(at = %Utc::now().to_rfc3339_opts(SecondsFormat::Secs, true), "simulated Printernizer API stopped");
    Ok(())
}
