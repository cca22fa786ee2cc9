//! The Home Assistant add-on folder: `config.yaml` by the 2026 rules, its translations, the
//! images and packaging files — and the binary in add-on mode against a Supervisor stand-in
//! (a local HTTP server), a password-protected mosquitto and a flat `/data/options.json`.

use printernizer_stats_test_support::mqtt as support;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::routing::get;
use printernizer_stats::config::{ADDON_OPTIONS, HTTP_PORT, Language, MqttSettings};
use printernizer_stats::i18n::Catalog;
use printernizer_stats::mqtt::Topics;
use printernizer_stats::mqtt::discovery::{self, Context};
use serde_json::{Value, json};
use serde_norway::Value as Yaml;
use support::{App, Broker, Client};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn yaml(path: &Path) -> Yaml {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_norway::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn keys(map: &Yaml) -> BTreeSet<String> {
    map.as_mapping()
        .expect("a mapping")
        .keys()
        .filter_map(|k| k.as_str().map(str::to_owned))
        .collect()
}

fn png_size(path: &Path) -> (u32, u32) {
    let bytes = std::fs::read(path).expect("png");
    assert_eq!(
        &bytes[..8],
        b"\x89PNG\r\n\x1a\n",
        "{} is a PNG",
        path.display()
    );
    let be = |i: usize| u32::from_be_bytes([bytes[i], bytes[i + 1], bytes[i + 2], bytes[i + 3]]);
    (be(16), be(20))
}

#[test]
fn config_yaml_follows_the_rules() {
    let config = yaml(&root().join("addon/config.yaml"));
    let get = |k: &str| {
        config
            .get(k)
            .unwrap_or_else(|| panic!("config.yaml lacks `{k}`"))
    };
    for required in ["name", "version", "slug", "description", "arch"] {
        get(required);
    }
    assert_eq!(get("name").as_str(), Some("Printernizer Usage Statistics"));
    assert_eq!(
        get("version").as_str(),
        Some(env!("CARGO_PKG_VERSION")),
        "add-on version = crate version"
    );
    let slug = get("slug").as_str().expect("slug");
    assert_eq!(slug, "printernizer_usage_stats");
    assert!(
        slug.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    );
    let arch: BTreeSet<&str> = get("arch")
        .as_sequence()
        .expect("list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(
        arch,
        BTreeSet::from(["aarch64", "amd64"]),
        "only current architectures"
    );
    // The add-on linter refuses keys that only repeat the Supervisor's defaults
    // (startup: application, boot: auto, ingress_port: 8099 — our HTTP_PORT).
    assert_eq!(HTTP_PORT, 8099, "ingress_port is left at the default 8099");
    for default in ["startup", "boot", "ingress_port"] {
        assert!(
            config.get(default).is_none(),
            "`{default}` only repeats a default"
        );
    }
    assert_eq!(get("homeassistant_api").as_bool(), Some(true));
    assert_eq!(
        get("hassio_api").as_bool(),
        Some(true),
        "finds the Printernizer add-on"
    );
    assert_eq!(get("ingress").as_bool(), Some(true));
    assert_eq!(get("panel_icon").as_str(), Some("mdi:chart-box-outline"));
    assert!(get("panel_title").as_str().is_some());
    let image = get("image").as_str().expect("image");
    assert!(
        !image.contains(':'),
        "the image name carries no tag (the version is the tag): {image}"
    );
    assert_eq!(
        image, "ghcr.io/schmacka/{arch}-printernizer-stats",
        "one image per arch"
    );
    // The release workflow pushes exactly that name, per architecture, tagged with the version.
    let workflow = std::fs::read_to_string(root().join(".github/workflows/release.yml"))
        .expect("release workflow");
    assert!(
        workflow.contains(
            "ghcr.io/${{ github.repository_owner }}/${{ matrix.arch }}-printernizer-stats:${{ steps.version.outputs.version }}"
        ),
        "the workflow pushes what config.yaml names"
    );
    for arch in [
        "arch: amd64",
        "arch: aarch64",
        "BUILD_ARCH=${{ matrix.arch }}",
    ] {
        assert!(workflow.contains(arch), "the workflow lacks {arch}");
    }
    // Network descriptions only for ports that are mapped (none are: ingress only).
    let ports = config.get("ports").map(keys).unwrap_or_default();
    for lang in ["en", "de"] {
        let t = yaml(&root().join(format!("addon/translations/{lang}.yaml")));
        let described = t.get("network").map(keys).unwrap_or_default();
        assert!(
            described.is_subset(&ports),
            "{lang}.yaml describes unmapped ports {described:?}"
        );
    }
    let services: Vec<&str> = get("services")
        .as_sequence()
        .expect("list")
        .iter()
        .filter_map(Yaml::as_str)
        .collect();
    assert_eq!(services, ["mqtt:need"]);

    // Options and schema.
    let options = keys(get("options"));
    let schema = get("schema").as_mapping().expect("schema");
    let schema_keys = keys(get("schema"));
    for o in &options {
        assert!(schema_keys.contains(o), "option `{o}` has no schema entry");
    }
    let type_ok = |t: &str| {
        let t = t.trim_end_matches('?');
        ["bool", "email", "url", "port", "str", "password", "float"].contains(&t)
            || t.starts_with("int(")
            || t.starts_with("str(")
            || t.starts_with("list(")
            || t.starts_with("match(")
    };
    for (k, t) in schema {
        let (k, t) = (k.as_str().expect("key"), t.as_str().expect("a type string"));
        assert!(type_ok(t), "`{k}`: unknown schema type `{t}`");
        assert!(
            options.contains(k) || t.ends_with('?'),
            "`{k}` needs a default in options or an optional (`?`) type"
        );
        assert!(
            !k.contains("opt_in"),
            "the opt-in is the switch in HA, not an option"
        );
    }
    for required in [
        "log_level",
        "language",
        "submission_endpoint",
        "submission_api_key",
        "submission_interval_days",
        "retention_days",
        "printernizer_prefix",
        "discovery_prefix",
        "mqtt_host",
        "mqtt_port",
        "mqtt_username",
        "mqtt_password",
    ] {
        assert!(schema_keys.contains(required), "schema lacks `{required}`");
    }
    for optional in [
        "submission_endpoint",
        "submission_api_key",
        "mqtt_host",
        "mqtt_port",
        "mqtt_username",
        "mqtt_password",
    ] {
        assert!(!options.contains(optional), "`{optional}` has no default");
    }
    // The service maps exactly these options onto its configuration.
    let mapped: BTreeSet<String> = ADDON_OPTIONS.iter().map(|(o, _)| (*o).to_owned()).collect();
    assert_eq!(
        mapped, schema_keys,
        "config::ADDON_OPTIONS and the schema differ"
    );

    // Both add-on translations name and describe every option, and nothing else.
    for lang in ["en", "de"] {
        let t = yaml(&root().join(format!("addon/translations/{lang}.yaml")));
        let conf = t.get("configuration").expect("configuration");
        assert_eq!(
            keys(conf),
            schema_keys,
            "{lang}.yaml options differ from the schema"
        );
        for k in &schema_keys {
            let entry = conf.get(k.as_str()).expect("entry");
            for field in ["name", "description"] {
                assert!(
                    entry
                        .get(field)
                        .and_then(Yaml::as_str)
                        .is_some_and(|s| !s.trim().is_empty()),
                    "{lang}.yaml: `{k}` lacks a {field}"
                );
            }
        }
    }
}

#[test]
fn packaging_files_are_complete() {
    let addon = root().join("addon");
    for f in [
        "config.yaml",
        "Dockerfile",
        "DOCS.md",
        "README.md",
        "CHANGELOG.md",
        "apparmor.txt",
        "icon.png",
        "logo.png",
    ] {
        assert!(addon.join(f).is_file(), "addon/{f} missing");
    }
    assert_eq!(png_size(&addon.join("icon.png")), (128, 128));
    let (w, h) = png_size(&addon.join("logo.png"));
    assert!(
        (200..=300).contains(&w) && (80..=120).contains(&h),
        "logo {w}x{h}"
    );

    let repo = yaml(&root().join("repository.yaml"));
    for k in ["name", "url", "maintainer"] {
        assert!(
            repo.get(k).and_then(Yaml::as_str).is_some(),
            "repository.yaml lacks {k}"
        );
    }

    let apparmor = std::fs::read_to_string(addon.join("apparmor.txt")).expect("apparmor");
    assert!(
        apparmor.contains(
            "profile printernizer_usage_stats flags=(attach_disconnected,mediate_deleted)"
        )
    );
    assert!(apparmor.contains("/data/** rw,"));
    assert!(
        apparmor.contains("signal (receive) peer=unconfined,"),
        "SIGTERM from the Supervisor must reach the process"
    );
    let ignore = std::fs::read_to_string(root().join(".dockerignore")).expect(".dockerignore");
    for needle in ["target/", ".git/"] {
        assert!(
            ignore.lines().any(|l| l == needle),
            ".dockerignore lacks {needle}"
        );
    }

    let docker = std::fs::read_to_string(addon.join("Dockerfile")).expect("Dockerfile");
    for needle in [
        "ARG BUILD_ARCH",
        "io.hass.version=",
        "io.hass.type=\"app\"",
        "io.hass.arch=",
        "io.hass.name=",
        "io.hass.description=",
        "io.hass.url=",
        "ca-certificates",
        "ENTRYPOINT [\"/usr/bin/printernizer-stats\", \"run\"]",
        "HEALTHCHECK",
        "/api/v1/usage-stats/health",
        "org.opencontainers.image.source=",
        "--mount=type=cache",
    ] {
        assert!(docker.contains(needle), "Dockerfile lacks {needle}");
    }
    let instructions: String = docker
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    assert!(!instructions.contains("BUILD_FROM") && !instructions.contains("bashio"));
    assert!(
        !instructions.contains("BUILD_VERSION="),
        "no literal version: it comes from the build (tag / config version)"
    );
    assert!(
        !root().join("addon/build.yaml").exists(),
        "build.yaml is deprecated"
    );

    let changelog = std::fs::read_to_string(addon.join("CHANGELOG.md")).expect("changelog");
    assert!(changelog.contains(&format!("## [{}]", env!("CARGO_PKG_VERSION"))));
    assert!(changelog.contains("## [Unreleased]"));

    let docs = std::fs::read_to_string(addon.join("DOCS.md")).expect("docs");
    for needle in [
        "binary_sensor.printernizer_stats_submit_problem",
        "DO_NOT_TRACK",
        "docs/mqtt.md",
        "Never collected",
    ] {
        assert!(docs.contains(needle), "DOCS.md lacks {needle}");
    }

    // The Supervisor searches recursively: no other config.yaml may exist.
    let mut found = Vec::new();
    let mut stack = vec![root()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir").flatten() {
            let p = entry.path();
            let name = entry.file_name();
            if p.is_dir() {
                if name != "target" && name != ".git" {
                    stack.push(p);
                }
            } else if name == "config.yaml" {
                found.push(p);
            }
        }
    }
    assert_eq!(found, [root().join("addon/config.yaml")]);
}

#[test]
fn sensors_never_use_the_config_entity_category() {
    for lang in [Language::En, Language::De] {
        let topics = Topics::new(&MqttSettings::default());
        let catalog = Catalog::new(lang);
        for m in discovery::all(Context {
            topics: &topics,
            catalog: &catalog,
            configuration_url: None,
        }) {
            let payload: Value = serde_json::from_str(&m.payload).expect("json");
            let category = payload
                .get("entity_category")
                .or_else(|| payload.get("ent_cat"))
                .and_then(Value::as_str);
            if m.topic.contains("/sensor/") || m.topic.contains("/binary_sensor/") {
                assert_ne!(category, Some("config"), "{}", m.topic);
            }
            // The same entity id on HA 2024.3 (object_id) and on HA >= 2025.10
            // (default_entity_id; object_id is then deprecated, and dropped from 2026.4).
            let default_id = payload["default_entity_id"]
                .as_str()
                .expect("default_entity_id");
            let (_, id) = default_id.split_once('.').expect("<component>.<id>");
            assert_eq!(payload["object_id"], id, "{}", m.topic);
            assert!(
                default_id.len() < 50,
                "{default_id}: entity ids stay under 50 characters"
            );
        }
    }
}

#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<String>>>);

async fn supervisor(port: u16) -> (String, Seen) {
    let seen = Seen::default();
    let app = axum::Router::new()
        .route(
            "/services/mqtt",
            get(move |State(seen): State<Seen>, h: HeaderMap| async move {
                seen.0.lock().expect("lock").push(format!(
                    "mqtt {}",
                    h.get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                ));
                // The Supervisor sends the port as a string.
                Json(json!({"result": "ok", "data": {
                    "addon": "core_mosquitto", "host": "127.0.0.1", "port": port.to_string(),
                    "ssl": false, "username": "addon", "password": "pw-from-supervisor",
                    "protocol": "3.1.1"}}))
            }),
        )
        .route(
            "/addons/self/info",
            get(|| async {
                Json(
                    json!({"result": "ok", "data": {"slug": "local_printernizer_usage_stats",
                    "ingress": true, "ingress_url": "/api/hassio_ingress/abc/"}}),
                )
            }),
        )
        .route(
            "/core/api/config",
            get(|State(seen): State<Seen>, h: HeaderMap| async move {
                seen.0.lock().expect("lock").push(format!(
                    "config {}",
                    h.get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                ));
                Json(json!({"country": "AT", "time_zone": "Europe/Vienna", "language": "de"}))
            }),
        )
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    (url, seen)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_on_mode_uses_the_supervisors_broker_credentials_country_and_flat_options() {
    let t = Duration::from_secs(30);
    let broker = Broker::start_with_users(&[("addon", "pw-from-supervisor"), ("test", "test")]);
    let (url, seen) = supervisor(broker.port).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let options = dir.path().join("options.json");
    std::fs::write(
        &options,
        json!({"log_level": "debug", "language": "de", "submission_interval_days": 7,
               "retention_days": 365, "printernizer_prefix": "printernizer",
               "discovery_prefix": "ha_test"})
        .to_string(),
    )
    .expect("options");
    let client = Client::connect_as(
        broker.port,
        &["printernizer_stats/#", "ha_test/#"],
        Some(("test", "test")),
    )
    .await;
    let app = App::spawn(
        dir.path(),
        None,
        &[
            ("SUPERVISOR_TOKEN", "addon-token"),
            ("PRINTERNIZER_STATS_SUPERVISOR_URL", url.as_str()),
            (
                "PRINTERNIZER_STATS_OPTIONS",
                options.to_str().expect("utf8"),
            ),
        ],
    );
    // Connected with the served credentials (the broker admits no one else), discovery under
    // the option's prefix, names in the option's language.
    client
        .wait_for("printernizer_stats/availability", t, |m| {
            m.text() == "online"
        })
        .await;
    let switch = client
        .wait_for("ha_test/switch/printernizer_stats/opt_in/config", t, |_| {
            true
        })
        .await;
    assert_eq!(switch.json()["name"], "Anonym teilen");
    assert_eq!(
        switch.json()["device"]["configuration_url"],
        "homeassistant://hassio/ingress/local_printernizer_usage_stats",
        "the device links to the ingress panel"
    );
    // The country comes from Home Assistant's core config.
    let preview: Value = reqwest::get(format!("{}api/v1/usage-stats/preview", app.http_base()))
        .await
        .expect("preview")
        .json()
        .await
        .expect("json");
    assert_eq!(preview["installation"]["country_code"], "AT");
    assert_eq!(preview["installation"]["deployment_mode"], "homeassistant");
    let seen = seen.0.lock().expect("lock").clone();
    assert!(
        seen.iter().any(|r| r == "mqtt Bearer addon-token"),
        "{seen:?}"
    );
    assert!(
        seen.iter().any(|r| r == "config Bearer addon-token"),
        "{seen:?}"
    );
    assert!(
        !app.log().contains("pw-from-supervisor"),
        "the password is never logged"
    );
}

#[test]
fn entities_show_as_a_user_expects() {
    let config = yaml(&root().join("addon/config.yaml"));
    let addon_url = config.get("url").and_then(Yaml::as_str).expect("url");
    for lang in [Language::En, Language::De] {
        let topics = Topics::new(&MqttSettings::default());
        let catalog = Catalog::new(lang);
        let device_words: BTreeSet<String> = catalog
            .get("device_name")
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| !w.is_empty())
            .map(str::to_lowercase)
            .collect();
        let all: Vec<(String, Value)> = discovery::all(Context {
            topics: &topics,
            catalog: &catalog,
            configuration_url: None,
        })
        .into_iter()
        .map(|m| {
            (
                m.topic.clone(),
                serde_json::from_str(&m.payload).expect("json"),
            )
        })
        .collect();
        let find = |id: &str| {
            &all.iter()
                .find(|(t, _)| t.contains(&format!("/{id}/")))
                .unwrap_or_else(|| panic!("{id}"))
                .1
        };
        for (topic, p) in &all {
            assert_eq!(p["origin"]["support_url"], addon_url, "{topic}");
            let name = p["name"].as_str().expect("name");
            let repeated: Vec<String> = name
                .split(|c: char| !c.is_alphanumeric())
                .map(str::to_lowercase)
                .filter(|w| device_words.contains(w))
                .collect();
            assert!(
                repeated.is_empty(),
                "{lang:?} `{name}` repeats {repeated:?} of the device name"
            );
        }
        // The opt-in switch is a primary entity: dashboards show it.
        assert!(find("opt_in").get("entity_category").is_none());
        assert_eq!(find("submit_now")["entity_category"], "config");
        for technical in ["installation_id", "rejected_messages"] {
            assert_eq!(find(technical)["enabled_by_default"], false, "{technical}");
        }
        assert!(find("jobs_week").get("enabled_by_default").is_none());
        assert_eq!(find("uptime_week")["suggested_display_precision"], 1);
        for (counter, unit) in [
            ("events_total", "events"),
            ("events_pending", "events"),
            ("submissions_total", "reports"),
            ("rejected_messages", "messages"),
        ] {
            assert_eq!(find(counter)["unit_of_measurement"], unit, "{counter}");
        }
    }
}
