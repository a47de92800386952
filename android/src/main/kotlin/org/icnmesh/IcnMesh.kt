package org.icnmesh

import android.content.Context
import android.content.Intent
import android.content.IntentFilter
import android.net.ConnectivityManager
import android.os.BatteryManager
import android.os.PowerManager
import uniffi.icn_mesh.DeviceState
import uniffi.icn_mesh.MeshNode
import uniffi.icn_mesh.PolicyDecision
import uniffi.icn_mesh.Thermal
import uniffi.icn_mesh.initLogging

/**
 * The app's one executor node, in the app's private files. The device state is read from Android
 * (battery, temperature, thermal status, screen, metered network) and fed to the node's policy,
 * which decides whether to work; nothing here decides anything.
 */
object IcnMesh {
    @Volatile private var node: MeshNode? = null

    fun node(context: Context): MeshNode =
        node ?: synchronized(this) {
            node ?: run {
                initLogging("info")
                MeshNode(context.filesDir.resolve("icn-mesh").path).also { node = it }
            }
        }

    /** Reads the device state now and hands it to the node's policy. */
    fun refreshDeviceState(context: Context): PolicyDecision =
        node(context).setDeviceState(readDeviceState(context))

    fun readDeviceState(context: Context): DeviceState {
        val battery = context.registerReceiver(null, IntentFilter(Intent.ACTION_BATTERY_CHANGED))
        val level = battery?.getIntExtra(BatteryManager.EXTRA_LEVEL, -1) ?: -1
        val scale = battery?.getIntExtra(BatteryManager.EXTRA_SCALE, 100) ?: 100
        val plugged = (battery?.getIntExtra(BatteryManager.EXTRA_PLUGGED, 0) ?: 0) != 0
        // Tenths of a degree Celsius.
        val temp = battery?.getIntExtra(BatteryManager.EXTRA_TEMPERATURE, -1)?.takeIf { it >= 0 }
        val power = context.getSystemService(Context.POWER_SERVICE) as PowerManager
        val connectivity = context.getSystemService(Context.CONNECTIVITY_SERVICE) as ConnectivityManager
        return DeviceState(
            charging = plugged,
            batteryPercent = if (level >= 0 && scale > 0) 100.0 * level / scale else null,
            batteryTempC = temp?.let { it / 10.0 },
            thermal = thermalOf(power.currentThermalStatus),
            screenOn = power.isInteractive,
            metered = connectivity.isActiveNetworkMetered,
        )
    }

    private fun thermalOf(status: Int): Thermal = when (status) {
        PowerManager.THERMAL_STATUS_NONE -> Thermal.NONE
        PowerManager.THERMAL_STATUS_LIGHT -> Thermal.LIGHT
        PowerManager.THERMAL_STATUS_MODERATE -> Thermal.MODERATE
        PowerManager.THERMAL_STATUS_SEVERE -> Thermal.SEVERE
        PowerManager.THERMAL_STATUS_CRITICAL -> Thermal.CRITICAL
        PowerManager.THERMAL_STATUS_EMERGENCY -> Thermal.EMERGENCY
        else -> Thermal.SHUTDOWN
    }
}
