//! The event model: the 12 event types, a stored [`UsageEvent`] and its sanitized [`Metadata`].
//!
//! Producers (MQTT, the CLI) hand in a [`RawEvent`]; [`Sanitizer::sanitize`] turns it into a
//! [`UsageEvent`] or a [`RejectReason`]. Nothing else creates stored events.

mod sanitize;
/// The fixed vocabulary, shared with the aggregation server (it validates with the same words).
pub use printernizer_stats_shared::vocab;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

pub use sanitize::{
    MAX_DURATION_SECONDS, MAX_FILE_SIZE_MB, MAX_METADATA_BYTES, MAX_RAW_PAYLOAD_BYTES,
    MAX_TIMESTAMP_SKEW, RejectReason, Sanitizer, parse_metadata, printer_hash,
};
use vocab::{
    Component, DeploymentMode, ErrorType, Feature, JobOutcome, Platform, PrinterType, Version,
};

/// The seed's 12 event types; anything else is rejected.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventType {
    /// Printernizer started.
    AppStart,
    /// Printernizer stopped gracefully.
    AppShutdown,
    /// A print job was created.
    JobCreated,
    /// A print job completed successfully.
    JobCompleted,
    /// A print job failed (or was cancelled: metadata `outcome`).
    JobFailed,
    /// A file was downloaded from a printer.
    FileDownloaded,
    /// A file was uploaded to the library.
    FileUploaded,
    /// A printer connected.
    PrinterConnected,
    /// A printer disconnected.
    PrinterDisconnected,
    /// An error occurred (category only).
    ErrorOccurred,
    /// A feature was switched on.
    FeatureEnabled,
    /// A feature was switched off.
    FeatureDisabled,
}

impl EventType {
    /// All event types, in a stable order.
    pub const ALL: [EventType; 12] = [
        EventType::AppStart,
        EventType::AppShutdown,
        EventType::JobCreated,
        EventType::JobCompleted,
        EventType::JobFailed,
        EventType::FileDownloaded,
        EventType::FileUploaded,
        EventType::PrinterConnected,
        EventType::PrinterDisconnected,
        EventType::ErrorOccurred,
        EventType::FeatureEnabled,
        EventType::FeatureDisabled,
    ];

    /// The wire name (`job_completed`).
    pub fn as_str(self) -> &'static str {
        match self {
            EventType::AppStart => "app_start",
            EventType::AppShutdown => "app_shutdown",
            EventType::JobCreated => "job_created",
            EventType::JobCompleted => "job_completed",
            EventType::JobFailed => "job_failed",
            EventType::FileDownloaded => "file_downloaded",
            EventType::FileUploaded => "file_uploaded",
            EventType::PrinterConnected => "printer_connected",
            EventType::PrinterDisconnected => "printer_disconnected",
            EventType::ErrorOccurred => "error_occurred",
            EventType::FeatureEnabled => "feature_enabled",
            EventType::FeatureDisabled => "feature_disabled",
        }
    }

    /// Parses a wire name exactly (no aliases, no case folding).
    pub fn parse(name: &str) -> Result<Self, RejectReason> {
        Self::ALL
            .into_iter()
            .find(|t| t.as_str() == name)
            .ok_or_else(|| RejectReason::UnknownEventType(sanitize::excerpt(name)))
    }

    /// The metadata keys this event type may carry (besides `printer_id`, which any event may
    /// carry and which is stored only as a salted hash).
    pub fn allowed_keys(self) -> &'static [MetadataKey] {
        use MetadataKey::*;
        match self {
            EventType::AppStart => &[AppVersion, PythonVersion, Platform, DeploymentMode],
            EventType::AppShutdown => &[AppVersion, DurationSeconds],
            EventType::JobCreated => &[PrinterType],
            EventType::JobCompleted => &[PrinterType, DurationSeconds],
            EventType::JobFailed => &[PrinterType, DurationSeconds, Outcome, ErrorType],
            EventType::FileDownloaded | EventType::FileUploaded => &[PrinterType, FileSizeMb],
            EventType::PrinterConnected | EventType::PrinterDisconnected => &[PrinterType],
            EventType::ErrorOccurred => &[ErrorType, Component, PrinterType],
            EventType::FeatureEnabled | EventType::FeatureDisabled => &[Feature],
        }
    }
}

impl std::fmt::Display for EventType {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for EventType {
    type Err = RejectReason;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::parse(s)
    }
}

/// The keys sanitized metadata can have, and nothing else.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataKey {
    /// `app_version`: a [`Version`].
    AppVersion,
    /// `python_version`: a [`Version`].
    PythonVersion,
    /// `platform`: a [`Platform`].
    Platform,
    /// `deployment_mode`: a [`DeploymentMode`].
    DeploymentMode,
    /// `printer_type`: a [`PrinterType`].
    PrinterType,
    /// `duration_seconds`: an integer in `0..=MAX_DURATION_SECONDS`.
    DurationSeconds,
    /// `file_size_mb`: a number in `0..=MAX_FILE_SIZE_MB`, rounded to 0.01.
    FileSizeMb,
    /// `error_type`: an [`ErrorType`].
    ErrorType,
    /// `component`: a [`Component`].
    Component,
    /// `feature`: a [`Feature`].
    Feature,
    /// `outcome`: a [`JobOutcome`].
    Outcome,
}

impl MetadataKey {
    /// The JSON key.
    pub fn as_str(self) -> &'static str {
        match self {
            MetadataKey::AppVersion => "app_version",
            MetadataKey::PythonVersion => "python_version",
            MetadataKey::Platform => "platform",
            MetadataKey::DeploymentMode => "deployment_mode",
            MetadataKey::PrinterType => "printer_type",
            MetadataKey::DurationSeconds => "duration_seconds",
            MetadataKey::FileSizeMb => "file_size_mb",
            MetadataKey::ErrorType => "error_type",
            MetadataKey::Component => "component",
            MetadataKey::Feature => "feature",
            MetadataKey::Outcome => "outcome",
        }
    }
}

/// Sanitized metadata: typed fields from the fixed vocabulary, numbers and versions only.
///
/// This is the *only* shape metadata is ever stored, exported or aggregated in.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Metadata {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub app_version: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub python_version: Option<Version>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_mode: Option<DeploymentMode>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub printer_type: Option<PrinterType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_seconds: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_size_mb: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<ErrorType>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub component: Option<Component>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feature: Option<Feature>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<JobOutcome>,
}

/// One stored usage event.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct UsageEvent {
    /// Primary key: the producer's UUID when it supplied a valid one (redelivery is stored
    /// once), else a fresh UUID v4.
    pub id: Uuid,
    /// What happened.
    pub event_type: EventType,
    /// When it happened (UTC; the receive time when the producer's time was implausible).
    pub timestamp: DateTime<Utc>,
    /// Sanitized metadata.
    pub metadata: Metadata,
    /// Salted hash of the producer's `printer_id` (never the id itself); used for fleet size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub printer_hash: Option<String>,
    /// Whether the event was part of an accepted submission.
    pub submitted: bool,
}

/// An event as a producer hands it in, before any validation.
#[derive(Debug, Clone, PartialEq)]
pub struct RawEvent {
    /// The event type's wire name.
    pub event_type: String,
    /// The producer's id, if any (used only when it is a valid UUID).
    pub id: Option<String>,
    /// The producer's timestamp, if any (RFC 3339).
    pub timestamp: Option<String>,
    /// The producer's metadata (must be a JSON object, or null).
    pub metadata: serde_json::Value,
}

impl RawEvent {
    /// A raw event with metadata only.
    pub fn new(event_type: impl Into<String>, metadata: serde_json::Value) -> Self {
        Self {
            event_type: event_type.into(),
            id: None,
            timestamp: None,
            metadata,
        }
    }
}
