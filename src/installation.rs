//! Where this service runs: deployment-mode detection and the platform name.
//!
//! Detection order (first match wins): `SUPERVISOR_TOKEN` set → `homeassistant`; `/.dockerenv`
//! exists → `docker`; the device-tree model names a Raspberry Pi → `pi`; else `standalone`.
//! `installation.deployment_mode` in the configuration overrides it.

use std::path::Path;

use crate::event::vocab::DeploymentMode;

/// What the detection looks at (a struct, so tests can describe any machine).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Probe {
    /// The Supervisor's token is set (we are a Home Assistant add-on).
    pub supervisor_token: bool,
    /// `/.dockerenv` exists.
    pub dockerenv: bool,
    /// Contents of the device-tree model file, if readable.
    pub device_model: Option<String>,
}

impl Probe {
    /// Looks at this machine; `addon` is whether the Supervisor started us.
    pub fn from_system(addon: bool) -> Self {
        let device_model = [
            "/proc/device-tree/model",
            "/sys/firmware/devicetree/base/model",
        ]
        .iter()
        .find_map(|p| std::fs::read_to_string(p).ok());
        Self {
            supervisor_token: addon,
            dockerenv: Path::new("/.dockerenv").exists(),
            device_model,
        }
    }

    /// The detected deployment mode.
    pub fn deployment_mode(&self) -> DeploymentMode {
        if self.supervisor_token {
            DeploymentMode::HomeAssistant
        } else if self.dockerenv {
            DeploymentMode::Docker
        } else if self
            .device_model
            .as_deref()
            .is_some_and(|m| m.contains("Raspberry Pi"))
        {
            DeploymentMode::Pi
        } else {
            DeploymentMode::Standalone
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detection_order() {
        let mut p = Probe::default();
        assert_eq!(p.deployment_mode(), DeploymentMode::Standalone);
        p.device_model = Some("Raspberry Pi 4 Model B Rev 1.4\0".into());
        assert_eq!(p.deployment_mode(), DeploymentMode::Pi);
        p.dockerenv = true;
        assert_eq!(p.deployment_mode(), DeploymentMode::Docker);
        p.supervisor_token = true;
        assert_eq!(p.deployment_mode(), DeploymentMode::HomeAssistant);
    }
}
