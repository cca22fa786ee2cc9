//! The fixed vocabulary: every string value that may ever be stored or submitted.
//!
//! Sanitization is an allowlist. A string from a producer is never copied: it is *matched*
//! against the words below (case-insensitively, with `-` and spaces read as `_`, plus a few
//! aliases) and replaced by the vocabulary's own `&'static str`. Anything that does not match
//! becomes `other` — never a normalized copy of the input, because a lowercased serial number or
//! `192_168_1_20` would still be a leak.
//!
//! | vocabulary      | words |
//! |-----------------|-------|
//! | [`PrinterType`] | bambu_lab, prusa, prusa_core, octoprint, klipper, unknown |
//! | [`Component`]   | printer_service, job_service, file_service, library_service, download_service, upload_service, camera_service, mqtt_service, api, database, scheduler, slicer, watch_folder, notification_service, usage_statistics, unknown |
//! | [`Feature`]     | library, timelapse, auto_job_creation, german_compliance, watch_folders, mqtt, camera, slicing, material_tracking, notifications, usage_statistics |
//! | [`ErrorType`]   | connection_timeout, connection_refused, connection_lost, connection_failed, authentication_failed, printer_offline, printer_error, download_failed, upload_failed, file_not_found, file_too_large, invalid_file, disk_full, permission_denied, database_error, network_error, timeout, invalid_response, parse_error, configuration_error, internal_error, unknown |
//! | [`JobOutcome`]  | completed, failed, cancelled |
//! | [`Platform`]    | linux, windows, darwin, freebsd, unknown |
//! | [`DeploymentMode`] | homeassistant, docker, standalone, pi |
//!
//! Each vocabulary also has `other` for "a value we did not recognise".
//! `docs/PRIVACY.md` repeats this table for users.

/// Longest input that is even looked at; longer strings are `other` without further work.
const MAX_MATCH_LEN: usize = 48;

/// Lowercases and maps `-`/space to `_` for *matching only*; `None` when too long or not ASCII.
fn match_key(input: &str) -> Option<String> {
    let t = input.trim();
    if t.is_empty() || t.len() > MAX_MATCH_LEN || !t.is_ascii() {
        return None;
    }
    Some(
        t.chars()
            .map(|c| match c {
                '-' | ' ' => '_',
                c => c.to_ascii_lowercase(),
            })
            .collect(),
    )
}

macro_rules! vocabulary {
    (
        $(#[$meta:meta])*
        $name:ident { $( $variant:ident = $word:literal $( | $alias:literal )* ),+ $(,)? }
    ) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum $name {
            $( #[doc = $word] $variant, )+
            /// A value that is not in the vocabulary.
            Other,
        }

        impl $name {
            /// Every word of this vocabulary, `other` last.
            pub const WORDS: &'static [&'static str] = &[ $( $word, )+ "other" ];

            /// The vocabulary word.
            pub fn as_str(self) -> &'static str {
                match self {
                    $( Self::$variant => $word, )+
                    Self::Other => "other",
                }
            }

            /// Matches producer input against the vocabulary; unknown input is [`Self::Other`].
            pub fn classify(input: &str) -> Self {
                Self::from_word(input).unwrap_or(Self::Other)
            }

            /// Matches producer input; `None` when it is not a word (or alias) of the vocabulary.
            pub fn from_word(input: &str) -> Option<Self> {
                let key = match_key(input)?;
                match key.as_str() {
                    $( $word $( | $alias )* => Some(Self::$variant), )+
                    "other" => Some(Self::Other),
                    _ => None,
                }
            }
        }

        impl std::fmt::Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                Ok(Self::classify(&s))
            }
        }
    };
}

vocabulary! {
    /// Printer families Printernizer manages.
    PrinterType {
        BambuLab = "bambu_lab" | "bambu" | "bambulab",
        Prusa = "prusa" | "prusalink" | "prusa_link",
        PrusaCore = "prusa_core" | "prusacore" | "core_one",
        Octoprint = "octoprint",
        Klipper = "klipper" | "moonraker",
        Unknown = "unknown",
    }
}

vocabulary! {
    /// Parts of Printernizer an error can come from.
    Component {
        PrinterService = "printer_service" | "printer",
        JobService = "job_service" | "job",
        FileService = "file_service" | "file",
        LibraryService = "library_service" | "library",
        DownloadService = "download_service" | "download",
        UploadService = "upload_service" | "upload",
        CameraService = "camera_service" | "camera",
        MqttService = "mqtt_service" | "mqtt",
        Api = "api",
        Database = "database",
        Scheduler = "scheduler",
        Slicer = "slicer" | "slicing",
        WatchFolder = "watch_folder" | "watch_folders",
        NotificationService = "notification_service" | "notifications",
        UsageStatistics = "usage_statistics",
        Unknown = "unknown",
    }
}

vocabulary! {
    /// Printernizer features whose on/off state is reported.
    Feature {
        Library = "library" | "library_enabled",
        Timelapse = "timelapse" | "timelapse_enabled",
        AutoJobCreation = "auto_job_creation" | "auto_job_creation_enabled",
        GermanCompliance = "german_compliance" | "german_compliance_enabled",
        WatchFolders = "watch_folders" | "watch_folders_enabled" | "watch_folder",
        Mqtt = "mqtt" | "mqtt_enabled",
        Camera = "camera" | "camera_enabled",
        Slicing = "slicing" | "slicing_enabled",
        MaterialTracking = "material_tracking" | "material_tracking_enabled",
        Notifications = "notifications" | "notifications_enabled",
        UsageStatistics = "usage_statistics" | "usage_statistics_enabled",
    }
}

vocabulary! {
    /// Error categories.
    ErrorType {
        ConnectionTimeout = "connection_timeout",
        ConnectionRefused = "connection_refused",
        ConnectionLost = "connection_lost",
        ConnectionFailed = "connection_failed",
        AuthenticationFailed = "authentication_failed" | "auth_failed",
        PrinterOffline = "printer_offline",
        PrinterError = "printer_error",
        DownloadFailed = "download_failed",
        UploadFailed = "upload_failed",
        FileNotFound = "file_not_found",
        FileTooLarge = "file_too_large",
        InvalidFile = "invalid_file",
        DiskFull = "disk_full",
        PermissionDenied = "permission_denied",
        DatabaseError = "database_error",
        NetworkError = "network_error",
        Timeout = "timeout",
        InvalidResponse = "invalid_response",
        ParseError = "parse_error",
        ConfigurationError = "configuration_error",
        InternalError = "internal_error",
        Unknown = "unknown",
    }
}

vocabulary! {
    /// How a print job ended.
    JobOutcome {
        Completed = "completed" | "success" | "finished",
        Failed = "failed" | "error",
        Cancelled = "cancelled" | "canceled" | "stopped",
    }
}

vocabulary! {
    /// Operating systems (Python's `platform.system().lower()`).
    Platform {
        Linux = "linux",
        Windows = "windows" | "win32",
        Darwin = "darwin" | "macos",
        Freebsd = "freebsd",
        Unknown = "unknown",
    }
}

vocabulary! {
    /// How Printernizer (and this service) is deployed.
    DeploymentMode {
        HomeAssistant = "homeassistant" | "home_assistant" | "hassio",
        Docker = "docker",
        Standalone = "standalone",
        Pi = "pi" | "raspberry_pi",
    }
}

/// A software version: 1–3 numeric components and an optional short pre-release suffix.
///
/// Accepted: `2`, `2.7`, `2.7.0`, `3.11.0-rc1`, `2.42.1-beta.2`. Rejected: four numeric parts
/// (`192.168.1.20` looks like an IPv4 address), components over 4 digits, any other suffix
/// than `alpha|beta|rc|dev|pre|post|a|b` followed by up to 3 digits (with an optional `.`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(transparent)]
pub struct Version(String);

impl Version {
    /// Validates a version string; `None` when it is not one.
    pub fn parse(input: &str) -> Option<Self> {
        let s = input.trim();
        let s = s.strip_prefix('v').unwrap_or(s);
        if s.is_empty() || s.len() > 24 {
            return None;
        }
        let (numbers, suffix) = match s.split_once(['-', '+']) {
            Some((n, suf)) => (n, Some(suf)),
            None => (s, None),
        };
        let parts: Vec<&str> = numbers.split('.').collect();
        if parts.is_empty() || parts.len() > 3 {
            return None;
        }
        if !parts
            .iter()
            .all(|p| !p.is_empty() && p.len() <= 4 && p.bytes().all(|b| b.is_ascii_digit()))
        {
            return None;
        }
        if suffix.is_some_and(|s| !valid_suffix(s)) {
            return None;
        }
        Some(Self(s.to_ascii_lowercase()))
    }

    /// The version text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

fn valid_suffix(suffix: &str) -> bool {
    let lower = suffix.to_ascii_lowercase();
    let word_end = lower
        .find(|c: char| !c.is_ascii_alphabetic())
        .unwrap_or(lower.len());
    let (word, rest) = lower.split_at(word_end);
    if !matches!(
        word,
        "alpha" | "beta" | "rc" | "dev" | "pre" | "post" | "a" | "b"
    ) {
        return false;
    }
    let digits = rest.strip_prefix('.').unwrap_or(rest);
    digits.len() <= 3 && digits.bytes().all(|b| b.is_ascii_digit()) && rest != "."
}

impl<'de> serde::Deserialize<'de> for Version {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Version::parse(&s).ok_or_else(|| serde::de::Error::custom("not a version"))
    }
}

/// An ISO 3166-1 alpha-2 country code: two ASCII letters (blanks around them ignored), returned
/// upper-case; anything else is `None`. The one rule for the configuration, Home Assistant's
/// country and the server's validation. (`XX`, "unknown", passes: it is two letters.)
pub fn country_code(input: &str) -> Option<String> {
    let t = input.trim();
    (t.len() == 2 && t.bytes().all(|b| b.is_ascii_alphabetic())).then(|| t.to_ascii_uppercase())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_matches_words_and_aliases_only() {
        assert_eq!(PrinterType::classify("Bambu-Lab"), PrinterType::BambuLab);
        assert_eq!(PrinterType::classify("bambu"), PrinterType::BambuLab);
        assert_eq!(PrinterType::classify("01S00A123456789"), PrinterType::Other);
        assert_eq!(PrinterType::classify("192.168.1.20"), PrinterType::Other);
        assert_eq!(
            ErrorType::classify("Connection Timeout"),
            ErrorType::ConnectionTimeout
        );
        assert_eq!(Feature::classify("library_enabled"), Feature::Library);
        assert_eq!(DeploymentMode::from_word("kubernetes"), None);
        assert_eq!(
            PrinterType::classify(&"x".repeat(10_000)),
            PrinterType::Other
        );
    }

    #[test]
    fn country_codes() {
        assert_eq!(country_code(" de "), Some("DE".into()));
        assert_eq!(country_code("XX"), Some("XX".into()));
        for bad in ["", "D", "DEU", "Germany", "d3", "ÄÖ", "de\n1"] {
            assert_eq!(country_code(bad), None, "{bad}");
        }
    }

    #[test]
    fn versions() {
        for ok in [
            "2",
            "2.7",
            "2.7.0",
            "3.11.0-rc1",
            "2.42.1-beta.2",
            "v1.2.3",
            "1.0.0-dev",
        ] {
            assert!(Version::parse(ok).is_some(), "{ok} should be a version");
        }
        for bad in [
            "192.168.1.20",
            "1.2.3.4",
            "",
            "1..2",
            "a.b",
            "1.2.3-myhostname",
            "1.2.3-rc12345",
            "12345.1",
            "1.2.3-rc.",
            "/home/user",
        ] {
            assert!(
                Version::parse(bad).is_none(),
                "{bad} should not be a version"
            );
        }
    }
}
