//! Device policy: when a battery-powered device may work. Pure — the device's state comes in from
//! the platform (Android, iOS, Linux sysfs), the time is passed in — and table-tested.
//!
//! The defaults are what volunteer computing learned on phones (BOINC on Android): work only while
//! charging, with the battery at 90% or more and no warmer than 40 °C, the thermal status below
//! "moderate", on an unmetered network, while the device is idle (screen off), on at most half the
//! cores. Two things keep a phone on a weak charger or a warm shelf from flipping on and off:
//! hysteresis (once working, the node goes on until the charge is 5 points under the threshold;
//! once paused for heat, it waits until the battery is 3 °C under the limit) and a back-off (after
//! any overheating, no work for 5 minutes).
//!
//! Three answers: `run` (work and bid); `pause` (a passing condition: hold the running job between
//! fuel slices, in memory, and bid on nothing; resume when `run` comes back); `stop` (the device is
//! in trouble — severe heat, a nearly empty battery off the charger: give the job up, reported
//! honestly so the coordinator reassigns it, and free its memory).

use serde::{Deserialize, Serialize};

/// Android's thermal status names (`PowerManager.THERMAL_STATUS_*`), in order of severity. iOS's
/// `ProcessInfo.ThermalState` maps onto nominal → none, fair → light, serious → severe,
/// critical → critical.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Thermal {
    #[default]
    None,
    Light,
    Moderate,
    Severe,
    Critical,
    Emergency,
    Shutdown,
}

impl Thermal {
    pub fn name(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Light => "light",
            Self::Moderate => "moderate",
            Self::Severe => "severe",
            Self::Critical => "critical",
            Self::Emergency => "emergency",
            Self::Shutdown => "shutdown",
        }
    }
}

/// What the platform says about the device. Until told otherwise the policy assumes a phone off
/// its charger at half charge, so a node that was never fed a state waits instead of working.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DeviceState {
    pub charging: bool,
    /// 0–100.
    pub battery_percent: f64,
    pub battery_temp_c: f64,
    pub thermal: Thermal,
    pub screen_on: bool,
    pub metered: bool,
}

impl Default for DeviceState {
    fn default() -> Self {
        Self {
            charging: false,
            battery_percent: 50.0,
            battery_temp_c: 25.0,
            thermal: Thermal::None,
            screen_on: false,
            metered: false,
        }
    }
}

impl DeviceState {
    /// A mains-powered device with no battery (a Pi on a wall supply, a desktop).
    pub fn mains_powered() -> Self {
        Self { charging: true, battery_percent: 100.0, ..Self::default() }
    }
}

/// A partial update: a field left out keeps its last value. The JSON form is what the C API's
/// `icn_node_set_device_state` takes.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeviceStateUpdate {
    pub charging: Option<bool>,
    pub battery_percent: Option<f64>,
    pub battery_temp_c: Option<f64>,
    pub thermal: Option<Thermal>,
    pub screen_on: Option<bool>,
    pub metered: Option<bool>,
}

/// A field of an update that cannot be a real reading.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{field}: {why}")]
pub struct StateError {
    pub field: &'static str,
    pub why: String,
}

impl DeviceStateUpdate {
    /// Parses the JSON form, refusing unknown fields and impossible values with what to fix.
    pub fn from_json(text: &str) -> Result<Self, StateError> {
        let update: Self = serde_json::from_str(text).map_err(|e| StateError {
            field: "state_json",
            why: format!(
                "{e} (fields: charging, battery_percent, battery_temp_c, thermal, screen_on, metered)"
            ),
        })?;
        update.check()?;
        Ok(update)
    }

    pub fn check(&self) -> Result<(), StateError> {
        if let Some(p) = self.battery_percent
            && !(0.0..=100.0).contains(&p)
        {
            return Err(StateError { field: "battery_percent", why: format!("{p} is not within 0–100") });
        }
        if let Some(t) = self.battery_temp_c
            && !(-50.0..=150.0).contains(&t)
        {
            return Err(StateError {
                field: "battery_temp_c",
                why: format!("{t} °C is not a battery reading"),
            });
        }
        Ok(())
    }

    pub fn apply_to(&self, state: &mut DeviceState) {
        let Self { charging, battery_percent, battery_temp_c, thermal, screen_on, metered } = self;
        if let Some(v) = charging {
            state.charging = *v;
        }
        if let Some(v) = battery_percent {
            state.battery_percent = *v;
        }
        if let Some(v) = battery_temp_c {
            state.battery_temp_c = *v;
        }
        if let Some(v) = thermal {
            state.thermal = *v;
        }
        if let Some(v) = screen_on {
            state.screen_on = *v;
        }
        if let Some(v) = metered {
            state.metered = *v;
        }
    }
}

/// The rules; `icn node --policy FILE` reads them as TOML with these names, every one optional.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Policy {
    pub require_charging: bool,
    /// Start work only at this charge or more.
    pub min_battery_percent: f64,
    /// Once working, go on until the charge is this many points under `min_battery_percent`.
    pub battery_hysteresis_percent: f64,
    /// No work above this battery temperature.
    pub max_battery_temp_c: f64,
    /// After heat, resume only this many degrees under `max_battery_temp_c`.
    pub temp_hysteresis_c: f64,
    /// Work only while the thermal status is below this.
    pub pause_at_thermal: Thermal,
    /// Give the job up at this thermal status or worse.
    pub stop_at_thermal: Thermal,
    /// Off the charger with this little charge, give the job up.
    pub stop_below_battery_percent: f64,
    /// No work for this long after the device last overheated.
    pub overheat_backoff_secs: u64,
    pub require_unmetered: bool,
    /// Work only while the screen is off.
    pub require_idle: bool,
    /// The share of the cores a job may use.
    pub max_cpu_share: f64,
}

impl Default for Policy {
    fn default() -> Self {
        Self {
            require_charging: true,
            min_battery_percent: 90.0,
            battery_hysteresis_percent: 5.0,
            max_battery_temp_c: 40.0,
            temp_hysteresis_c: 3.0,
            pause_at_thermal: Thermal::Moderate,
            stop_at_thermal: Thermal::Severe,
            stop_below_battery_percent: 15.0,
            overheat_backoff_secs: 300,
            require_unmetered: true,
            require_idle: true,
            max_cpu_share: 0.5,
        }
    }
}

impl Policy {
    /// Reads a policy file's text (TOML); fields left out keep their defaults.
    pub fn from_toml(text: &str) -> Result<Self, String> {
        let policy: Self = toml::from_str(text).map_err(|e| e.to_string())?;
        if !(0.0..=1.0).contains(&policy.max_cpu_share) || policy.max_cpu_share == 0.0 {
            return Err(format!("max_cpu_share: {} is not within (0, 1]", policy.max_cpu_share));
        }
        Ok(policy)
    }

    /// A policy for a mains-powered device that is there to work (a Pi, a desktop): only heat
    /// stops it.
    pub fn always_on() -> Self {
        Self {
            require_charging: false,
            min_battery_percent: 0.0,
            stop_below_battery_percent: 0.0,
            require_unmetered: false,
            require_idle: false,
            max_cpu_share: 1.0,
            ..Self::default()
        }
    }

    /// How many of `cores` a job may use (at least one).
    pub fn cores_allowed(&self, cores: u32) -> u32 {
        ((f64::from(cores) * self.max_cpu_share).floor() as u32).max(1)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Run,
    Pause,
    Stop,
}

impl Decision {
    pub fn name(self) -> &'static str {
        match self {
            Self::Run => "run",
            Self::Pause => "pause",
            Self::Stop => "stop",
        }
    }
}

/// The policy's answer and why, in words a phone's settings screen can show.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Verdict {
    pub decision: Decision,
    pub reason: String,
}

impl Verdict {
    /// Whether to bid on new work (only when running).
    pub fn may_bid(&self) -> bool {
        self.decision == Decision::Run
    }
}

/// The policy with its memory: the last state, whether the device was working (for hysteresis),
/// and when it last overheated (for the back-off).
#[derive(Debug, Clone)]
pub struct PolicyEngine {
    policy: Policy,
    state: DeviceState,
    working: bool,
    overheated_at: Option<u64>,
}

impl PolicyEngine {
    pub fn new(policy: Policy, state: DeviceState) -> Self {
        Self { policy, state, working: false, overheated_at: None }
    }

    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    pub fn state(&self) -> &DeviceState {
        &self.state
    }

    /// Applies `update` and decides, at `now` (Unix seconds, or any monotonic seconds).
    pub fn update(&mut self, update: &DeviceStateUpdate, now: u64) -> Verdict {
        update.apply_to(&mut self.state);
        self.evaluate(now)
    }

    /// When the overheating back-off ends, if one was ever started.
    pub fn backoff_ends(&self) -> Option<u64> {
        self.overheated_at.map(|at| at + self.policy.overheat_backoff_secs)
    }

    /// Decides for the current state at `now` (the back-off ends with time alone).
    pub fn evaluate(&mut self, now: u64) -> Verdict {
        let verdict = self.decide(now);
        self.working = verdict.decision == Decision::Run;
        verdict
    }

    fn decide(&mut self, now: u64) -> Verdict {
        let (p, s) = (&self.policy, &self.state);
        let stop = |reason: String| Verdict { decision: Decision::Stop, reason };
        let pause = |reason: String| Verdict { decision: Decision::Pause, reason };
        // Heat first: it also starts the back-off.
        let too_hot_limit =
            if self.working { p.max_battery_temp_c } else { p.max_battery_temp_c - p.temp_hysteresis_c };
        let overheating = s.thermal >= p.pause_at_thermal || s.battery_temp_c > p.max_battery_temp_c;
        if overheating {
            self.overheated_at = Some(now);
        }
        if s.thermal >= p.stop_at_thermal {
            return stop(format!("thermal status is {}: giving the job up", s.thermal.name()));
        }
        if !s.charging && s.battery_percent < p.stop_below_battery_percent {
            return stop(format!(
                "battery at {:.0}% and not charging (under {:.0}%): giving the job up",
                s.battery_percent, p.stop_below_battery_percent
            ));
        }
        if s.thermal >= p.pause_at_thermal {
            return pause(format!(
                "thermal status is {} (work only below {})",
                s.thermal.name(),
                p.pause_at_thermal.name()
            ));
        }
        if s.battery_temp_c > too_hot_limit {
            return pause(format!(
                "battery at {:.1} °C (work only at {:.1} °C or cooler)",
                s.battery_temp_c, too_hot_limit
            ));
        }
        if let Some(at) = self.overheated_at
            && now < at + p.overheat_backoff_secs
        {
            return pause(format!(
                "cooling down after overheating: {} s left of a {} s back-off",
                at + p.overheat_backoff_secs - now,
                p.overheat_backoff_secs
            ));
        }
        if p.require_charging && !s.charging {
            return pause("not charging".into());
        }
        let battery_floor = if self.working {
            p.min_battery_percent - p.battery_hysteresis_percent
        } else {
            p.min_battery_percent
        };
        if s.battery_percent < battery_floor {
            return pause(format!(
                "battery at {:.0}% (work only at {:.0}% or more)",
                s.battery_percent, battery_floor
            ));
        }
        if p.require_unmetered && s.metered {
            return pause("on a metered network".into());
        }
        if p.require_idle && s.screen_on {
            return pause("the device is in use (screen on)".into());
        }
        Verdict { decision: Decision::Run, reason: "every condition of the policy holds".into() }
    }
}

/// Linux (a Raspberry Pi, a laptop): the device state from sysfs, where present. A machine with no
/// battery is mains-powered; the hottest thermal zone gives the thermal status.
pub mod sysfs {
    use std::path::Path;

    use super::{DeviceStateUpdate, Thermal};

    /// Reads `/sys/class/power_supply` and `/sys/class/thermal` under `root` (`/` on a real
    /// device; tests pass a directory laid out the same way).
    pub fn read(root: &Path) -> DeviceStateUpdate {
        let mut update = DeviceStateUpdate::default();
        let supplies = root.join("sys/class/power_supply");
        let mut battery = None;
        let mut mains_online = None;
        for entry in std::fs::read_dir(&supplies).into_iter().flatten().flatten() {
            let dir = entry.path();
            let read = |name: &str| std::fs::read_to_string(dir.join(name)).ok().map(|s| s.trim().to_owned());
            match read("type").as_deref() {
                Some("Battery") => battery = Some(dir.clone()),
                Some("Mains" | "USB") => {
                    mains_online =
                        Some(mains_online.unwrap_or(false) || read("online").as_deref() == Some("1"))
                }
                _ => {}
            }
        }
        match battery {
            Some(dir) => {
                let read =
                    |name: &str| std::fs::read_to_string(dir.join(name)).ok().map(|s| s.trim().to_owned());
                update.battery_percent = read("capacity").and_then(|c| c.parse().ok());
                // Tenths of a degree Celsius.
                update.battery_temp_c = read("temp").and_then(|t| t.parse::<f64>().ok()).map(|t| t / 10.0);
                let status = read("status");
                update.charging = Some(
                    matches!(status.as_deref(), Some("Charging" | "Full")) || mains_online == Some(true),
                );
            }
            None => {
                update.charging = Some(true);
                update.battery_percent = Some(100.0);
            }
        }
        let hottest = std::fs::read_dir(root.join("sys/class/thermal"))
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with("thermal_zone"))
            .filter_map(|e| std::fs::read_to_string(e.path().join("temp")).ok())
            .filter_map(|t| t.trim().parse::<f64>().ok())
            .map(|milli| milli / 1000.0)
            .fold(None, |max: Option<f64>, t| Some(max.map_or(t, |m| m.max(t))));
        update.thermal = hottest.map(thermal_of_soc);
        update
    }

    /// A SoC temperature (°C) as a thermal status. The Raspberry Pi firmware throttles from 80 °C
    /// and hard-limits at 85 °C; phones start mitigating in the 40s for the skin, later for the SoC.
    pub fn thermal_of_soc(celsius: f64) -> Thermal {
        match celsius {
            c if c < 60.0 => Thermal::None,
            c if c < 70.0 => Thermal::Light,
            c if c < 80.0 => Thermal::Moderate,
            c if c < 85.0 => Thermal::Severe,
            c if c < 90.0 => Thermal::Critical,
            c if c < 95.0 => Thermal::Emergency,
            _ => Thermal::Shutdown,
        }
    }
}
