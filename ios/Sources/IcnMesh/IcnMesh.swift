import BackgroundTasks
import Foundation
import Network
import UIKit

/// The app's one executor node, in Application Support. The device state comes from UIKit
/// and Network (battery, charging, thermal state, expensive or constrained paths) and feeds the node's policy; nothing here
/// decides whether to work.
public enum IcnMesh {
    public static let taskIdentifier = "org.icnmesh.compute"

    /// Cellular, a personal hotspot or Low Data Mode count as metered.
    private static let network: NWPathMonitor = {
        let monitor = NWPathMonitor()
        monitor.start(queue: DispatchQueue(label: "org.icnmesh.network"))
        return monitor
    }()

    public static let node: MeshNode = {
        initLogging(level: "info")
        let dir = FileManager.default.urls(for: .applicationSupportDirectory, in: .userDomainMask)[0]
            .appendingPathComponent("icn-mesh")
        // A node that cannot open its own directory is a broken install: fail loudly.
        return try! MeshNode(dataDir: dir.path)
    }()

    /// Reads the device state now and hands it to the node's policy.
    @discardableResult
    public static func refreshDeviceState() throws -> PolicyDecision {
        let device = UIDevice.current
        device.isBatteryMonitoringEnabled = true
        let thermal: Thermal
        switch ProcessInfo.processInfo.thermalState {
        case .nominal: thermal = .none
        case .fair: thermal = .light
        case .serious: thermal = .severe
        case .critical: thermal = .critical
        @unknown default: thermal = .critical
        }
        let state = DeviceState(
            charging: device.batteryState == .charging || device.batteryState == .full,
            batteryPercent: device.batteryLevel >= 0 ? Double(device.batteryLevel) * 100 : nil,
            batteryTempC: nil,  // iOS does not expose it; the thermal state stands in.
            thermal: thermal,
            screenOn: UIApplication.shared.applicationState == .active,
            metered: network.currentPath.isExpensive || network.currentPath.isConstrained
        )
        return try node.setDeviceState(state: state)
    }

    /// Registers the background task; call from `application(_:didFinishLaunchingWithOptions:)`
    /// (the identifier must also be listed under BGTaskSchedulerPermittedIdentifiers).
    public static func register(coordinator: String, pricePerHour: UInt64) {
        BGTaskScheduler.shared.register(forTaskWithIdentifier: taskIdentifier, using: nil) { task in
            run(task: task as! BGProcessingTask, coordinator: coordinator, pricePerHour: pricePerHour)
        }
    }

    /// Asks iOS to run the node while the phone is on external power, with network.
    public static func schedule() throws {
        let request = BGProcessingTaskRequest(identifier: taskIdentifier)
        request.requiresExternalPower = true
        request.requiresNetworkConnectivity = true
        try BGTaskScheduler.shared.submit(request)
    }

    private final class Listener: NodeListener {
        func onEvent(event: NodeEvent) {}
    }

    private static func run(task: BGProcessingTask, coordinator: String, pricePerHour: UInt64) {
        let worker = Task {
            do {
                try node.start(coordinator: coordinator, pricePerHour: pricePerHour, listener: Listener())
                while !Task.isCancelled {
                    if try refreshDeviceState().decision == .stop { break }
                    try await Task.sleep(nanoseconds: 60_000_000_000)
                }
            } catch {}
            node.stop()
            task.setTaskCompleted(success: true)
            try? schedule()
        }
        task.expirationHandler = { worker.cancel() }
    }
}
