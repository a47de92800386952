package org.icnmesh

import android.content.Context
import androidx.work.Constraints
import androidx.work.CoroutineWorker
import androidx.work.ExistingWorkPolicy
import androidx.work.NetworkType
import androidx.work.OneTimeWorkRequestBuilder
import androidx.work.WorkManager
import androidx.work.WorkerParameters
import androidx.work.workDataOf
import kotlinx.coroutines.delay
import uniffi.icn_mesh.Decision
import uniffi.icn_mesh.NodeEvent
import uniffi.icn_mesh.NodeListener

/**
 * Contributes compute while the phone charges, idle, on an unmetered network. WorkManager's
 * constraints are the first gate (the system starts the worker only then, and stops it when they
 * lapse); the node's own policy is the second, finer one (battery ≥ 90%, ≤ 40 °C, thermal status,
 * hysteresis, back-off), fed every minute while the worker runs.
 */
class MeshWorker(context: Context, params: WorkerParameters) : CoroutineWorker(context, params) {
    override suspend fun doWork(): Result {
        val coordinator = inputData.getString(KEY_COORDINATOR) ?: return Result.failure()
        val price = inputData.getLong(KEY_PRICE, 100L).toULong()
        val node = IcnMesh.node(applicationContext)
        node.start(coordinator, price, object : NodeListener {
            override fun onEvent(event: NodeEvent) {
                // Hand events to the app's UI here (a flow, a notification); never block this thread.
            }
        })
        try {
            while (!isStopped) {
                if (IcnMesh.refreshDeviceState(applicationContext).decision == Decision.STOP) break
                delay(60_000)
            }
        } finally {
            node.stop()
        }
        return Result.success()
    }

    companion object {
        const val KEY_COORDINATOR = "coordinator"
        const val KEY_PRICE = "price_per_hour"
        private const val NAME = "icn-mesh-worker"

        /** Asks WorkManager to run the node whenever the phone charges, idle, on Wi-Fi. */
        fun schedule(context: Context, coordinator: String, pricePerHour: Long) {
            val constraints = Constraints.Builder()
                .setRequiresCharging(true)
                .setRequiresBatteryNotLow(true)
                .setRequiresDeviceIdle(true)
                .setRequiredNetworkType(NetworkType.UNMETERED)
                .build()
            val request = OneTimeWorkRequestBuilder<MeshWorker>()
                .setConstraints(constraints)
                .setInputData(workDataOf(KEY_COORDINATOR to coordinator, KEY_PRICE to pricePerHour))
                .build()
            WorkManager.getInstance(context).enqueueUniqueWork(NAME, ExistingWorkPolicy.KEEP, request)
        }
    }
}
