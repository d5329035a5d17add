//! Serde forms of settings that serde cannot derive: per-agent idle windows, each a human
//! duration (`"30days"`) or `"never"`.

/// `BTreeMap<AgentId, Option<Duration>>` as `{ "agent": "30days" | "never" }`.
pub(crate) mod idle_windows {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use lobu_core::AgentId;
    use serde::de::Error as _;
    use serde::{Deserialize, Deserializer, Serializer};

    const NEVER: &str = "never";

    pub(crate) fn serialize<S: Serializer>(
        windows: &BTreeMap<AgentId, Option<Duration>>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        serializer.collect_map(windows.iter().map(|(agent, window)| {
            let text = match window {
                Some(window) => humantime::format_duration(*window).to_string(),
                None => NEVER.to_owned(),
            };
            (agent, text)
        }))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<BTreeMap<AgentId, Option<Duration>>, D::Error> {
        let raw = BTreeMap::<AgentId, String>::deserialize(deserializer)?;
        raw.into_iter()
            .map(|(agent, text)| {
                let window = match text.trim() {
                    NEVER => None,
                    other => Some(humantime::parse_duration(other).map_err(|e| {
                        D::Error::custom(format!(
                            "idle window of agent {agent}: {e} (a duration such as \"30days\", or \"never\")"
                        ))
                    })?),
                };
                Ok((agent, window))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use lobu_core::AgentId;

    use crate::Settings;

    #[test]
    fn settings_round_trip_through_toml_with_human_durations() {
        let mut settings = Settings {
            turn_timeout: Duration::from_secs(90),
            idle_retention: Some(Duration::from_secs(30 * 24 * 3600)),
            ..Settings::default()
        };
        let bot = AgentId::new("bot").unwrap();
        let people = AgentId::new("people").unwrap();
        settings.idle_retention_by_agent.insert(bot.clone(), None);
        settings
            .idle_retention_by_agent
            .insert(people.clone(), Some(Duration::from_secs(3600)));
        let text = toml::to_string(&settings).unwrap();
        assert!(text.contains("turn_timeout = \"1m 30s\""), "{text}");
        assert!(text.contains("bot = \"never\""), "{text}");
        assert_eq!(toml::from_str::<Settings>(&text).unwrap(), settings);
    }

    #[test]
    fn the_org_label_reads_as_off_every_or_a_list() {
        use crate::OrgLabel;
        let every: Settings = toml::from_str("metrics_org_label = \"every\"").unwrap();
        assert_eq!(every.metrics_org_label, OrgLabel::Every);
        let only: Settings = toml::from_str("metrics_org_label = { only = [\"acme\"] }").unwrap();
        let acme = lobu_core::OrgId::new("acme").unwrap();
        assert_eq!(only.metrics_org_label, OrgLabel::Only([acme].into()));
        assert!(toml::from_str::<Settings>("metrics_org_label = \"some\"").is_err());
    }

    #[test]
    fn missing_fields_take_their_defaults() {
        let settings: Settings =
            toml::from_str("concurrency = 16\nretry_delay = \"500ms\"").unwrap();
        assert_eq!(settings.concurrency, 16);
        assert_eq!(settings.retry_delay, Duration::from_millis(500));
        assert_eq!(settings.claim_ttl, Settings::default().claim_ttl);
        assert_eq!(toml::from_str::<Settings>("").unwrap(), Settings::default());
    }

    #[test]
    fn unknown_fields_bad_durations_and_bad_agent_ids_are_refused() {
        for (text, named) in [
            ("concurency = 16", "unknown field `concurency`"),
            ("turn_timeout = \"soon\"", "turn_timeout"),
            ("turn_timeout = 30", "turn_timeout"),
            (
                "[idle_retention_by_agent]\nbot = \"forever\"",
                "idle window of agent bot",
            ),
            ("[idle_retention_by_agent]\n\"a b\" = \"never\"", "agent id"),
        ] {
            let error = toml::from_str::<Settings>(text)
                .expect_err(text)
                .to_string();
            assert!(error.contains(named), "{text}: {error}");
        }
    }
}
