//! `[installation]`: overrides of the anonymous installation facts.

use serde::{Deserialize, Serialize};

use super::{Invalid, non_blank};
use crate::event::vocab::{DeploymentMode, country_code};

/// `[installation]`
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstallationSettings {
    /// ISO 3166-1 alpha-2 country code to report (never derived from an IP address).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country_code: Option<String>,
    /// Overrides the detected deployment mode: homeassistant, docker, standalone, pi.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deployment_mode: Option<String>,
}

impl InstallationSettings {
    /// The country-code override, upper-case (a blank value is no override; one that is not
    /// a country code is refused by [`InstallationSettings::check`]).
    pub fn country_code(&self) -> Option<String> {
        non_blank(self.country_code.as_deref()).and_then(country_code)
    }

    /// The deployment-mode override.
    pub fn deployment_mode(&self) -> Option<DeploymentMode> {
        non_blank(self.deployment_mode.as_deref()).and_then(DeploymentMode::from_word)
    }

    pub(super) fn check(&self) -> Result<(), Invalid> {
        if let Some(cc) = non_blank(self.country_code.as_deref())
            && country_code(cc).is_none()
        {
            return Err(Invalid::new(
                "installation.country_code",
                format!("`{cc}` is not a two-letter ISO 3166-1 code"),
            ));
        }
        if let Some(mode) = non_blank(self.deployment_mode.as_deref())
            && matches!(
                DeploymentMode::from_word(mode),
                None | Some(DeploymentMode::Other)
            )
        {
            return Err(Invalid::new(
                "installation.deployment_mode",
                format!("`{mode}` is not one of homeassistant, docker, standalone, pi"),
            ));
        }
        Ok(())
    }
}
