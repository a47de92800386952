//! The device policy, table-driven on virtual time: every condition, its hysteresis, the
//! overheating back-off, partial updates, the TOML file and the sysfs reader.

use icn_mesh_core::policy::{Decision, DeviceState, DeviceStateUpdate, Policy, PolicyEngine, Thermal, sysfs};

/// A phone that may work under the default policy: plugged in, full, cool, idle, on Wi-Fi.
fn good() -> DeviceState {
    DeviceState {
        charging: true,
        battery_percent: 95.0,
        battery_temp_c: 30.0,
        thermal: Thermal::None,
        screen_on: false,
        metered: false,
    }
}

fn json(update: &str) -> DeviceStateUpdate {
    DeviceStateUpdate::from_json(update).expect("a valid update")
}

#[test]
fn each_condition_alone_decides() {
    // (what changes from a good state, expected decision, words the reason must contain)
    let table: &[(&str, Decision, &str)] = &[
        ("{}", Decision::Run, "every condition"),
        (r#"{"charging": false}"#, Decision::Pause, "not charging"),
        (r#"{"battery_percent": 89}"#, Decision::Pause, "89%"),
        (r#"{"battery_temp_c": 41}"#, Decision::Pause, "41.0 °C"),
        (r#"{"thermal": "light"}"#, Decision::Run, "every condition"),
        (r#"{"thermal": "moderate"}"#, Decision::Pause, "moderate"),
        (r#"{"thermal": "severe"}"#, Decision::Stop, "severe"),
        (r#"{"thermal": "critical"}"#, Decision::Stop, "critical"),
        (r#"{"thermal": "emergency"}"#, Decision::Stop, "emergency"),
        (r#"{"thermal": "shutdown"}"#, Decision::Stop, "shutdown"),
        (r#"{"screen_on": true}"#, Decision::Pause, "screen on"),
        (r#"{"metered": true}"#, Decision::Pause, "metered"),
        (r#"{"charging": false, "battery_percent": 10}"#, Decision::Stop, "10%"),
        // Charging with an empty battery: not a reason to give up, a reason to wait.
        (r#"{"battery_percent": 10}"#, Decision::Pause, "10%"),
    ];
    for (change, decision, words) in table {
        let mut engine = PolicyEngine::new(Policy::default(), good());
        let verdict = engine.update(&json(change), 1_000);
        assert_eq!(verdict.decision, *decision, "{change}: {verdict:?}");
        assert!(verdict.reason.contains(words), "{change}: {:?} lacks {words:?}", verdict.reason);
        assert_eq!(verdict.may_bid(), *decision == Decision::Run, "{change}");
    }
}

#[test]
fn a_fresh_node_does_not_work_until_told_the_device_state() {
    let mut engine = PolicyEngine::new(Policy::default(), DeviceState::default());
    assert_eq!(engine.evaluate(0).decision, Decision::Pause);
    let mut pi = PolicyEngine::new(Policy::always_on(), DeviceState::mains_powered());
    assert_eq!(pi.evaluate(0).decision, Decision::Run);
}

#[test]
fn battery_hysteresis_keeps_a_weak_charger_from_flapping() {
    let mut engine = PolicyEngine::new(Policy::default(), good());
    let mut t = 0;
    let mut step = |percent: f64| {
        t += 60;
        engine.update(&DeviceStateUpdate { battery_percent: Some(percent), ..Default::default() }, t).decision
    };
    // Working at 95%; a weak charger lets the charge sink slowly: work goes on down to 85%.
    assert_eq!(step(95.0), Decision::Run);
    assert_eq!(step(89.0), Decision::Run);
    assert_eq!(step(85.0), Decision::Run);
    assert_eq!(step(84.9), Decision::Pause);
    // Paused: it charges back, but work starts again only at 90%.
    assert_eq!(step(86.0), Decision::Pause);
    assert_eq!(step(89.9), Decision::Pause);
    assert_eq!(step(90.0), Decision::Run);
}

#[test]
fn overheating_pauses_then_backs_off_five_minutes_with_temperature_hysteresis() {
    let mut engine = PolicyEngine::new(Policy::default(), good());
    assert_eq!(engine.evaluate(0).decision, Decision::Run);
    // Working, the battery may warm up to the limit itself.
    let at = |engine: &mut PolicyEngine, c: f64, t: u64| {
        engine.update(&DeviceStateUpdate { battery_temp_c: Some(c), ..Default::default() }, t)
    };
    assert_eq!(at(&mut engine, 40.0, 10).decision, Decision::Run);
    assert_eq!(at(&mut engine, 40.5, 20).decision, Decision::Pause);
    // Cooler, but not 3 °C under the limit yet.
    assert_eq!(at(&mut engine, 38.0, 30).decision, Decision::Pause);
    // Cool enough, but within 300 s of the last overheating (at t = 20).
    let v = at(&mut engine, 36.0, 60);
    assert_eq!(v.decision, Decision::Pause);
    assert!(v.reason.contains("260 s left"), "{}", v.reason);
    assert_eq!(engine.evaluate(319).decision, Decision::Pause);
    assert_eq!(engine.evaluate(320).decision, Decision::Run);
    // A thermal warning restarts the back-off even though the battery is cool.
    let v = engine.update(&json(r#"{"thermal": "moderate"}"#), 400);
    assert_eq!(v.decision, Decision::Pause);
    assert_eq!(engine.update(&json(r#"{"thermal": "none"}"#), 401).decision, Decision::Pause);
    assert_eq!(engine.evaluate(699).decision, Decision::Pause);
    assert_eq!(engine.evaluate(700).decision, Decision::Run);
}

#[test]
fn unplugging_mid_job_pauses_and_plugging_back_in_resumes() {
    let mut engine = PolicyEngine::new(Policy::default(), good());
    assert_eq!(engine.evaluate(0).decision, Decision::Run);
    assert_eq!(engine.update(&json(r#"{"charging": false}"#), 5).decision, Decision::Pause);
    // Still 94%: plugged back in, it works again at once (the charge is over 90%).
    assert_eq!(
        engine.update(&json(r#"{"charging": true, "battery_percent": 94}"#), 9).decision,
        Decision::Run
    );
}

#[test]
fn partial_updates_keep_what_they_leave_out() {
    let mut engine = PolicyEngine::new(Policy::default(), good());
    engine.update(&json(r#"{"screen_on": true}"#), 1);
    engine.update(&json(r#"{"battery_percent": 99.5}"#), 2);
    assert!(engine.state().screen_on);
    assert!(engine.state().charging);
    assert_eq!(engine.state().battery_percent, 99.5);
}

#[test]
fn bad_updates_say_what_to_fix() {
    for (text, field) in [
        (r#"{"battery_percent": 101}"#, "battery_percent"),
        (r#"{"battery_percent": -1}"#, "battery_percent"),
        (r#"{"battery_temp_c": 900}"#, "battery_temp_c"),
        (r#"{"thermal": "lukewarm"}"#, "state_json"),
        (r#"{"charging": "yes"}"#, "state_json"),
        (r#"{"plugged": true}"#, "state_json"),
        ("not json", "state_json"),
    ] {
        let e = DeviceStateUpdate::from_json(text).expect_err(text);
        assert_eq!(e.field, field, "{text}: {e}");
    }
    let e = DeviceStateUpdate::from_json(r#"{"thermal": "lukewarm"}"#).expect_err("unknown name");
    assert!(e.to_string().contains("moderate"), "the error lists the thermal names: {e}");
}

#[test]
fn the_policy_file_uses_the_same_names_and_defaults() {
    assert_eq!(Policy::from_toml("").expect("empty file"), Policy::default());
    let p = Policy::from_toml(
        "require_charging = false\nmin_battery_percent = 50\npause_at_thermal = \"severe\"\nmax_cpu_share = 0.25\n",
    )
    .expect("policy");
    assert!(!p.require_charging);
    assert_eq!(p.min_battery_percent, 50.0);
    assert_eq!(p.pause_at_thermal, Thermal::Severe);
    assert_eq!(p.cores_allowed(8), 2);
    assert_eq!(p.max_battery_temp_c, 40.0, "unnamed fields keep their defaults");
    assert_eq!(Policy::default().cores_allowed(4), 2);
    assert_eq!(Policy::default().cores_allowed(1), 1);
    assert!(Policy::from_toml("min_battery = 3").expect_err("unknown field").contains("min_battery"));
    assert!(Policy::from_toml("max_cpu_share = 2").expect_err("share").contains("max_cpu_share"));
}

#[test]
fn sysfs_gives_battery_charging_and_the_hottest_zone() {
    let root = tempfile::tempdir().expect("tempdir");
    let write = |path: &str, text: &str| {
        let p = root.path().join(path);
        std::fs::create_dir_all(p.parent().expect("parent")).expect("dirs");
        std::fs::write(p, text).expect("write");
    };
    // No power_supply at all: a Pi on a wall supply.
    write("sys/class/thermal/thermal_zone0/temp", "48312\n");
    let pi = sysfs::read(root.path());
    assert_eq!(pi.charging, Some(true));
    assert_eq!(pi.battery_percent, Some(100.0));
    assert_eq!(pi.thermal, Some(Thermal::None));
    // A laptop: a discharging battery at 77%, 31.5 °C, one zone at 81 °C.
    write("sys/class/power_supply/BAT0/type", "Battery\n");
    write("sys/class/power_supply/BAT0/capacity", "77\n");
    write("sys/class/power_supply/BAT0/status", "Discharging\n");
    write("sys/class/power_supply/BAT0/temp", "315\n");
    write("sys/class/power_supply/AC/type", "Mains\n");
    write("sys/class/power_supply/AC/online", "0\n");
    write("sys/class/thermal/thermal_zone1/temp", "81000\n");
    let laptop = sysfs::read(root.path());
    assert_eq!(laptop.charging, Some(false));
    assert_eq!(laptop.battery_percent, Some(77.0));
    assert_eq!(laptop.battery_temp_c, Some(31.5));
    assert_eq!(laptop.thermal, Some(Thermal::Severe));
    // Plugged in.
    write("sys/class/power_supply/AC/online", "1\n");
    assert_eq!(sysfs::read(root.path()).charging, Some(true));
}
