// The icn-mesh Android library: the UniFFI Kotlin bindings (generated into ../bindings/kotlin), a
// small Kotlin wrapper, a WorkManager worker, and the native library built by build-native.sh
// (cargo-ndk) into src/main/jniLibs. Not built on the project's CI machine (no Android SDK/NDK).
plugins {
    id("com.android.library") version "8.7.3"
    id("org.jetbrains.kotlin.android") version "2.1.0"
}

android {
    namespace = "org.icnmesh"
    compileSdk = 35
    defaultConfig {
        minSdk = 26
        consumerProguardFiles("consumer-rules.pro")
    }
    sourceSets["main"].java.srcDirs("src/main/kotlin", "../bindings/kotlin")
    sourceSets["main"].jniLibs.srcDirs("src/main/jniLibs")
    compileOptions {
        sourceCompatibility = JavaVersion.VERSION_17
        targetCompatibility = JavaVersion.VERSION_17
    }
    kotlinOptions { jvmTarget = "17" }
    packaging {
        // 16 KB pages (Android 15+): keep .so files uncompressed and page-aligned in the APK.
        jniLibs.useLegacyPackaging = false
    }
}

dependencies {
    // UniFFI's Kotlin bindings load the library through JNA; the @aar variant ships its natives.
    implementation("net.java.dev.jna:jna:5.15.0@aar")
    implementation("org.jetbrains.kotlinx:kotlinx-coroutines-android:1.9.0")
    implementation("androidx.work:work-runtime-ktx:2.10.0")
}
